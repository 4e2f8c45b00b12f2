//! `myco-sim bench`: the convergence figures recorded in docs/benchmarks.md.
//!
//! Rounds are gossip rounds (`Profile::LAN.gossip_interval_ms`) from the submission to the moment
//! every node holds the same state. Deploys are submitted all at once at random nodes, so the figure is the
//! spread time, not the submission window. Medians over `--seeds` seeds (default 20).
//! Convergence runs keep every node (`kill: false`); `rounds_to_replace` has its own table.
//! `--placement` prints only the cost of computing placement on a converged 250-node cluster;
//! `--profiles` only each network profile's traffic at rest and death-to-replaced time.
//! `--wire` only what the sealed wire alone costs of the standard scenario's time.

use crate::cluster::Cluster;
use crate::report::run;
use crate::scenario::Scenario;
use myco_core::config::{Profile, BODY_BYTES_MAX, FRAME_BYTES, HEADER_BYTES};
use myco_core::crypto::handshake::SessionKeys;
use myco_core::crypto::session::Session;
use pico_args::Arguments;
use std::time::Instant as WallClock;

const NODES: [usize; 4] = [10, 50, 100, 250];
const LOSSES: [f64; 3] = [0.0, 0.1, 0.5];

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median rounds to convergence over `seeds` seeds; `None` if any run failed.
fn rounds(nodes: usize, services: usize, loss: f64, seeds: u64) -> Option<u64> {
    let mut all = Vec::new();
    for seed in 1..=seeds {
        let mut s = Scenario::standard(seed, nodes, services, loss);
        s.ops_window_ms = 0;
        s.kill = false;
        let (r, _) = run(&s);
        if r.failure.is_some() {
            eprintln!("bench run failed; reproduce with: {}", s.command());
            return None;
        }
        all.push(r.rounds);
    }
    Some(median(all))
}

fn table(services: usize, seeds: u64) {
    println!("\nrounds until all nodes hold {services} new deploy(s), median of {seeds} seeds");
    println!("| nodes | loss 0% | loss 10% | loss 50% |\n|---|---|---|---|");
    for n in NODES {
        let cells: Vec<String> = LOSSES
            .iter()
            .map(|&l| rounds(n, services, l, seeds).map_or("FAILED".into(), |r| r.to_string()))
            .collect();
        println!("| {n} | {} |", cells.join(" | "));
    }
}

fn standard_wall_time(seeds: u64) {
    let mut walls = Vec::new();
    for seed in 1..=seeds {
        let mut s = Scenario::standard(seed, 50, 1000, 0.5);
        s.kill = false;
        let (r, wall_ms) = run(&s);
        assert!(
            r.failure.is_none(),
            "standard scenario failed for seed {seed}"
        );
        walls.push(wall_ms as u64);
    }
    println!("\nstandard scenario (50 nodes, 1000 services, 50% loss): median wall {} ms, max {} ms over {seeds} seeds",
        median(walls.clone()), walls.iter().max().expect("seeds > 0"));
}

/// Nanoseconds to seal one frame and to open one, the mean of `frames` of each.
fn frame_crypto_ns(frames: u64) -> (f64, f64) {
    let keys = |tx, rx| SessionKeys {
        tx: [tx; 32],
        rx: [rx; 32],
    };
    let mut a = Session::new(&keys(1, 2));
    let header = [7u8; HEADER_BYTES];
    let mut body = [0u8; BODY_BYTES_MAX];
    let start = WallClock::now();
    for _ in 0..frames {
        let counter = a.next_counter().expect("fresh session");
        std::hint::black_box(a.seal_in_place(counter, &header, &mut body));
    }
    let seal_ns = start.elapsed().as_nanos() as f64 / frames as f64;
    let counter = a.next_counter().expect("fresh session");
    let value = counter.value();
    let tag = a.seal_in_place(counter, &header, &mut body);
    let sealed = body;
    let start = WallClock::now();
    for _ in 0..frames {
        // A replay is refused before decryption: each pass opens with a fresh receiving session.
        let mut b = Session::new(&keys(2, 1));
        body = sealed;
        b.open_in_place(value, &header, &mut body, &tag)
            .expect("sealed above");
    }
    let open_ns = start.elapsed().as_nanos() as f64 / frames as f64;
    (seal_ns, open_ns)
}

/// How much of the standard scenario's time (seed 1, as `myco-sim run` runs it) the sealed
/// wire alone takes: every frame sent but a handshake's is sealed, every frame delivered is
/// opened (counted as if all were, so a little above the truth). A floor for any speed-up that
/// keeps every node encrypting and checking what it does.
fn wire_floor() {
    let s = Scenario::standard(1, 50, 1000, 0.5);
    let (r, wall_ms) = run(&s);
    assert!(r.failure.is_none(), "standard scenario failed");
    let (seal_ns, open_ns) = frame_crypto_ns(200_000);
    let opened = r.frames_sent - r.frames_lost - r.frames_congested;
    let floor_ms = (r.frames_sent as f64 * seal_ns + opened as f64 * open_ns) / 1e6;
    println!(
        "\nsealed wire, standard scenario seed 1: {} frames sent, sealed but the handshakes' ({seal_ns:.0} ns each), about {opened} delivered and opened ({open_ns:.0} ns each): at most {floor_ms:.0} ms of the run's {wall_ms} ms wall",
        r.frames_sent
    );
}

/// Rounds from killing a node that runs services until every live node places them elsewhere,
/// in the standard scenario (50 nodes, 1000 services) at three losses: median and max.
fn replacement(seeds: u64) {
    println!("\nrounds_to_replace, 50 nodes, 1000 services, median / max of {seeds} seeds");
    println!("| loss 0% | loss 10% | loss 50% |\n|---|---|---|");
    let cells: Vec<String> = LOSSES
        .iter()
        .map(|&loss| {
            let mut all = Vec::new();
            for seed in 1..=seeds {
                let s = Scenario::standard(seed, 50, 1000, loss);
                let (r, _) = run(&s);
                match (&r.failure, r.rounds_to_replace) {
                    (None, Some(rounds)) => all.push(rounds),
                    _ => {
                        eprintln!("bench run failed; reproduce with: {}", s.command());
                        return "FAILED".to_string();
                    }
                }
            }
            let max = *all.iter().max().expect("seeds > 0");
            format!("{} / {max}", median(all))
        })
        .collect();
    println!("| {} |", cells.join(" | "));
}

/// What computing placement costs on one node of a converged 250-node cluster holding 1000
/// services: `placed_here` (this node's share) and `placement` of every service, in turn.
fn placement_cost() {
    let mut s = Scenario::standard(1, 250, 1000, 0.0);
    s.kill = false;
    let mut c = Cluster::new(&s);
    let r = c.run();
    assert!(
        r.failure.is_none(),
        "placement setup failed: {:?}",
        r.failure
    );
    let node = c.node(0);
    let members = node.members().iter().filter(|m| m.is_live()).count();
    let passes = 20;
    let start = WallClock::now();
    let mut here = 0;
    for _ in 0..passes {
        // The node keeps its answer until the state or the membership changes; measure the
        // computation, not the kept answer.
        node.forget_placed();
        here = node.placed_here().count();
    }
    let placed_here_us = start.elapsed().as_micros() / passes;
    let start = WallClock::now();
    let mut winners = 0;
    for _ in 0..passes {
        winners = node
            .store()
            .slots()
            .iter()
            .map(|slot| node.placement(slot.key_hash).len())
            .sum::<usize>();
    }
    let placement_us = start.elapsed().as_micros() / passes;
    println!(
        "\nplacement on one node of 250 ({members} live members, {} services): placed_here {placed_here_us} us ({here} placed here); placement of every service {placement_us} us ({winners} winners); mean of {passes} passes",
        node.store().len()
    );
}

fn at_rest() {
    let mut s = Scenario::standard(1, 50, 100, 0.0);
    s.kill = false;
    let mut c = Cluster::new(&s);
    let r = c.run();
    assert!(r.failure.is_none(), "at-rest setup failed to converge");
    let written = c.disk_written_bytes();
    let frames = c.frames_at_rest(60_000);
    println!(
        "\nat rest (50 nodes, 100 services, converged, 60 s more): {frames:.2} frames = {:.0} bytes per node per second; {} bytes written to disk",
        frames * FRAME_BYTES as f64,
        c.disk_written_bytes() - written
    );
}

/// Nodes, services and seeds of the profiles table.
const PROFILE_NODES: usize = 50;
const PROFILE_SERVICES: usize = 100;
const PROFILE_SEEDS: u64 = 5;
/// Long enough for several of metered's member-sync pages (one a minute). A converged cluster runs
/// this long before the window too: the tail of convergence (anti-entropy with members whose last
/// root was seen before the last deploys, sessions still opening) is not rest.
const PROFILE_REST_MS: u64 = 300_000;

/// Per profile, in one run: bytes each box sends per second at rest (a converged cluster,
/// `PROFILE_REST_MS` more) beside the profile's own arithmetic, and seconds from killing a box
/// that runs services until every live box places them elsewhere (median and max over seeds).
fn profiles() {
    println!(
        "\nprofiles: {PROFILE_NODES} nodes, {PROFILE_SERVICES} services, no loss; at rest: {} s from {} s after convergence (seed 1); death to replaced over seeds 1 to {PROFILE_SEEDS}",
        PROFILE_REST_MS / 1000,
        PROFILE_REST_MS / 1000
    );
    println!("| profile | bytes/s per box at rest: measured (arithmetic, goal) | death to replaced, s: median / max | detection bound, s (`Profile::detection_ms`) |");
    println!("|---|---|---|---|");
    for p in Profile::ALL {
        let mut s = Scenario::standard(1, PROFILE_NODES, PROFILE_SERVICES, 0.0);
        s.kill = false;
        s.profile = p;
        let mut c = Cluster::new(&s);
        let r = c.run();
        assert!(r.failure.is_none(), "{}: {:?}", s.command(), r.failure);
        c.frames_at_rest(PROFILE_REST_MS);
        let bytes = c.frames_at_rest(PROFILE_REST_MS) * FRAME_BYTES as f64;
        let mut replaced = Vec::new();
        for seed in 1..=PROFILE_SEEDS {
            let mut s = Scenario::standard(seed, PROFILE_NODES, PROFILE_SERVICES, 0.0);
            s.profile = p;
            let (r, _) = run(&s);
            match (&r.failure, r.ms_to_replace) {
                (None, Some(ms)) => replaced.push(ms),
                _ => eprintln!("bench run failed; reproduce with: {}", s.command()),
            }
        }
        let cell = match replaced.iter().max() {
            Some(&max) if replaced.len() as u64 == PROFILE_SEEDS => format!(
                "{:.1} / {:.1}",
                median(replaced.clone()) as f64 / 1000.0,
                max as f64 / 1000.0
            ),
            _ => "FAILED".to_string(),
        };
        println!(
            "| {} | {bytes:.0} ({}, {}) | {cell} | {:.1} |",
            p.name,
            p.rest_bytes_per_s(),
            p.rest_bytes_per_s_goal,
            p.detection_ms(PROFILE_NODES) as f64 / 1000.0
        );
    }
}

pub fn command(mut args: Arguments) -> Result<u8, String> {
    let seeds: u64 = args
        .opt_value_from_str("--seeds")
        .map_err(|e| format!("--seeds: {e}"))?
        .unwrap_or(20);
    let only_placement = args.contains("--placement");
    let only_at_rest = args.contains("--at-rest");
    let only_profiles = args.contains("--profiles");
    let only_wire = args.contains("--wire");
    let rest = args.finish();
    if !rest.is_empty() || seeds == 0 {
        return Err(format!(
            "usage: myco-sim bench [--seeds N] [--placement | --at-rest | --profiles | --wire] (N > 0), got {rest:?}"
        ));
    }
    if only_placement {
        placement_cost();
        return Ok(0);
    }
    if only_at_rest {
        at_rest();
        return Ok(0);
    }
    if only_profiles {
        profiles();
        return Ok(0);
    }
    if only_wire {
        wire_floor();
        return Ok(0);
    }
    table(1, seeds);
    table(1000, seeds);
    standard_wall_time(seeds);
    wire_floor();
    replacement(seeds);
    placement_cost();
    at_rest();
    profiles();
    Ok(0)
}
