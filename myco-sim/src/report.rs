//! `myco-sim run`: parse a scenario from flags, run it, print a summary or JSON.

use crate::cluster::{Cluster, Report};
use crate::scenario::Scenario;
use myco_core::crypto::Refusal;
use pico_args::Arguments;
use std::time::Instant as WallClock;

fn opt<T: std::str::FromStr>(
    args: &mut Arguments,
    name: &'static str,
    default: T,
) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    args.opt_value_from_str(name)
        .map(|v| v.unwrap_or(default))
        .map_err(|e| format!("{name}: {e}"))
}

fn probability(name: &str, p: f64) -> Result<u64, String> {
    if (0.0..=1.0).contains(&p) {
        Ok((p * 1e6).round() as u64)
    } else {
        Err(format!("{name} must be between 0 and 1, got {p}"))
    }
}

pub fn parse_scenario(args: &mut Arguments) -> Result<Scenario, String> {
    let seed = opt(args, "--seed", 1u64)?;
    let nodes = opt(args, "--nodes", 50usize)?;
    let services = opt(args, "--services", 1000usize)?;
    let loss = opt(args, "--loss", 0.5f64)?;
    let mut s = Scenario::standard(seed, nodes, services, 0.0);
    s.loss_ppm = probability("--loss", loss)?;
    s.duplicate_ppm = probability("--duplicate", opt(args, "--duplicate", 0.0f64)?)?;
    s.updates = opt(args, "--updates", 0usize)?;
    s.deletes = opt(args, "--deletes", 0usize)?;
    s.latency_ms_max = opt(args, "--latency-max", 20u64)?;
    s.partitions = opt(args, "--partitions", false)?;
    s.crashes = opt(args, "--crashes", 0usize)?;
    s.kill = opt(args, "--kill", true)?;
    s.unit_fault_ppm = probability("--unit-faults", opt(args, "--unit-faults", 0.0f64)?)?;
    s.systemctl_fault_ppm = probability(
        "--systemctl-faults",
        opt(args, "--systemctl-faults", 0.0f64)?,
    )?;
    s.bad_update_ppm = probability("--bad-updates", opt(args, "--bad-updates", 0.0f64)?)?;
    s.ops_window_ms = opt(args, "--ops-window", s.ops_window_ms)?;
    s.adversary = args.contains("--adversary");
    s.profile = crate::scenario::profile_arg(args)?;
    s.zones = opt(args, "--zones", 1u8)?;
    s.kill_bridges = args.contains("--kill-bridges");
    s.nat = opt(args, "--nat", 0usize)?;
    s.nat_detect = args.contains("--nat-detect");
    if !(1..=64).contains(&s.zones) {
        return Err(format!("--zones must be 1..=64, got {}", s.zones));
    }
    match args
        .opt_value_from_str::<_, String>("--scenario")
        .map_err(|e| format!("--scenario: {e}"))?
    {
        None => {}
        Some(name) if name == "rotate" => s.rotate = true,
        Some(name) => {
            return Err(format!(
                "unknown scenario '{name}'; the only one is 'rotate'"
            ))
        }
    }
    if s.adversary && s.nodes < 3 {
        return Err("--adversary needs at least 3 nodes (one is the stolen box)".to_string());
    }
    s.wal_checkpoint_bytes = opt(args, "--wal-checkpoint-bytes", s.wal_checkpoint_bytes)?;
    if s.wal_checkpoint_bytes < 1024 {
        return Err("--wal-checkpoint-bytes must be at least 1024".to_string());
    }
    // Each zone is a cluster of its own for membership, so the bound is per zone.
    let nodes_max = 250 * usize::from(s.zones);
    if !(1..=nodes_max).contains(&s.nodes) {
        return Err(format!(
            "--nodes must be 1..={nodes_max} (250 a zone), got {}",
            s.nodes
        ));
    }
    check_nat(&s)?;
    if s.services > 1000 {
        return Err(format!(
            "--services must be at most 1000, got {}",
            s.services
        ));
    }
    if s.latency_ms_max == 0 || s.latency_ms_max > 1000 {
        return Err("--latency-max must be 1..=1000 ms".to_string());
    }
    Ok(s)
}

/// `--nat` must leave `RELAYS_PER_ZONE` nodes per zone to relay, besides the adversary.
fn check_nat(s: &Scenario) -> Result<(), String> {
    let relays = crate::scenario::RELAYS_PER_ZONE * usize::from(s.zones);
    if s.nat > 0 && s.nat + relays + usize::from(s.adversary) > s.nodes {
        return Err(format!(
            "--nat {} leaves fewer than {relays} nodes to relay ({} a zone)",
            s.nat,
            crate::scenario::RELAYS_PER_ZONE
        ));
    }
    Ok(())
}

/// Runs `s` and returns its report with the wall time it took.
pub fn run(s: &Scenario) -> (Report, u128) {
    let start = WallClock::now();
    let report = Cluster::new(s).run();
    (report, start.elapsed().as_millis())
}

fn refusals(r: &Report) -> String {
    let pairs = Refusal::ALL
        .iter()
        .map(|x| format!("\"{}\":{}", x.name(), r.refusals[x.index()]));
    pairs.collect::<Vec<_>>().join(",")
}

fn null_or<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

pub fn json(s: &Scenario, r: &Report, wall_ms: u128) -> String {
    let failure = match &r.failure {
        None => "null".to_string(),
        Some(f) => format!("{:?}", format!("{f:?}")),
    };
    format!(
        concat!(
            "{{\"seed\":{},\"nodes\":{},\"services\":{},\"loss\":{},\"converged\":{},\"rounds\":{},",
            "\"ticks\":{},\"sim_time_ms\":{},\"frames_sent\":{},\"bytes_sent\":{},\"frames_lost\":{},",
            "\"frames_congested\":{},\"rumor_frames_dropped\":{},\"distinct_state_hashes\":{},",
            "\"entries\":{},\"node_state_bytes\":{},\"heap_allocations_after_boot\":{},",
            "\"acknowledged_deploys\":{},\"acknowledged_deploys_lost\":{},\"wal_truncations\":{},\"checkpoints\":{},",
            "\"adversary_frames_sent\":{},\"adversary_frames_accepted\":{},\"forged_slots_accepted\":{},",
            "\"refused_frames\":{},\"revocation_block\":{},\"refused_by_reason\":{{{}}},",
            "\"placement_checks\":{},\"executor_checks\":{},\"executor_commands\":{},\"health_checks\":{},\"health_restarts\":{},\"units_in_place\":{},\"builds_local\":{},\"builds_fetched\":{},\"builds_local_held_by_peer\":{},\"builds_remote\":{},\"builds_for_peers\":{},\"builds_for_other_systems\":{},\"remote_canary_holds\":{},\"killed_node\":{},\"services_replaced\":{},\"rounds_to_replace\":{},\"ms_to_replace\":{},\"profile\":\"{}\",",
            "{}{}",
            "\"trace_hash\":\"{:016x}\",\"wall_ms\":{},\"failure\":{}}}"
        ),
        s.seed,
        s.nodes,
        s.services,
        s.loss_ppm as f64 / 1e6,
        r.converged,
        r.rounds,
        r.ticks,
        r.time_ms,
        r.frames_sent,
        r.bytes_sent,
        r.frames_lost,
        r.frames_congested,
        r.rumor_frames_dropped,
        r.distinct_state_hashes,
        r.entries,
        r.node_state_bytes,
        r.heap_allocations_after_boot,
        r.acknowledged_deploys,
        r.acknowledged_deploys_lost,
        r.wal_truncations,
        r.checkpoints,
        r.adversary_frames_sent,
        r.adversary_frames_accepted,
        r.forged_slots_accepted,
        r.refused_frames,
        r.revocation_block,
        refusals(r),
        r.placement_checks,
        r.executor_checks,
        r.executor_commands,
        r.health_checks,
        r.health_restarts,
        r.units_in_place,
        r.builds_local,
        r.builds_fetched,
        r.builds_local_held_by_peer,
        r.builds_remote,
        r.builds_for_peers,
        r.builds_for_other_systems,
        r.remote_canary_holds,
        null_or(r.killed),
        r.services_replaced,
        null_or(r.rounds_to_replace),
        null_or(r.ms_to_replace),
        s.profile.name,
        zones_json(s, r),
        nat_json(s, r),
        r.trace_hash,
        wall_ms,
        failure
    )
}

/// The zone fields of the JSON report: zones, member records that crossed one (must be 0), and
/// the bridges' work.
fn zones_json(s: &Scenario, r: &Report) -> String {
    format!(
        "\"zones\":{},\"member_records_crossing_zones\":{},\"bridge_sessions\":{},\"bridge_entries\":{},\"bridges_killed\":{},\"replacement_bridge_syncs\":{},",
        s.zones,
        r.member_records_crossing_zones,
        r.bridge_sessions,
        r.bridge_entries,
        r.bridges_killed,
        r.replacement_bridge_syncs
    )
}

/// The NAT fields of the JSON report: boxes behind NAT, frames the NAT model dropped, frames
/// relays forwarded.
fn nat_json(s: &Scenario, r: &Report) -> String {
    format!(
        "\"nat\":{},\"nat_detect\":{},\"nat_dropped\":{},\"relayed_frames\":{},\"nat_detected\":{},",
        s.nat, s.nat_detect, r.nat_dropped, r.relayed_frames, r.nat_detected
    )
}

fn replacement(r: &Report) -> String {
    match (r.killed, r.rounds_to_replace, r.ms_to_replace) {
        (None, ..) => "no node killed".to_string(),
        (Some(k), Some(rounds), Some(ms)) => format!(
            "node {k} killed, its {} services placed elsewhere in {rounds} rounds (rounds_to_replace), {:.1} s",
            r.services_replaced,
            ms as f64 / 1000.0
        ),
        (Some(k), ..) => format!(
            "node {k} killed, its {} services NOT placed elsewhere",
            r.services_replaced
        ),
    }
}

fn summary(s: &Scenario, r: &Report, wall_ms: u128) -> String {
    let verdict = match &r.failure {
        None => "converged".to_string(),
        Some(f) => format!("FAILED: {f:?}\nreproduce with: {}", s.command()),
    };
    format!(
        "{verdict}\n  {} nodes, {} services, loss {:.0}%: converged {} gossip rounds ({} ms each, profile {}) after the first deploy; {} ms simulated in all, boot and joins included; {} distinct state hash(es)\n  frames sent {} ({} bytes), lost {}, rumor frames dropped {}\n  placement: {} invariant check(s), {}\n  executors: {} commands, {} settle check(s) of enabled units and DNS answers, {} health checks, {} unhealthy units restarted, {} units written for a scaled version without a restart\n  builds: {} made here, {} fetched from peers, {} made here while an up peer held the version\n  node state {} bytes, heap allocations after boot {}, trace hash {:016x}, wall {} ms",
        s.nodes,
        s.services,
        s.loss_ppm as f64 / 1e4,
        r.rounds,
        s.profile.gossip_interval_ms,
        s.profile.name,
        r.time_ms,
        r.distinct_state_hashes,
        r.frames_sent,
        r.bytes_sent,
        r.frames_lost,
        r.rumor_frames_dropped,
        r.placement_checks,
        replacement(r),
        r.executor_commands,
        r.executor_checks,
        r.health_checks,
        r.health_restarts,
        r.units_in_place,
        r.builds_local,
        r.builds_fetched,
        r.builds_local_held_by_peer,
        r.node_state_bytes,
        r.heap_allocations_after_boot,
        r.trace_hash,
        wall_ms
    )
}

pub fn run_command(mut args: Arguments) -> Result<u8, String> {
    let as_json = args.contains("--json");
    let s = parse_scenario(&mut args)?;
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unexpected arguments: {rest:?}"));
    }
    let (r, wall_ms) = run(&s);
    if as_json {
        println!("{}", json(&s, &r, wall_ms));
    } else {
        println!("{}", summary(&s, &r, wall_ms));
    }
    if let Some(f) = &r.failure {
        eprintln!("reproduce with: {}", s.command());
        return Ok(f.exit_code() as u8);
    }
    Ok(0)
}
