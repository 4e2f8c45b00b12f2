//! Scenarios: the named parameters of one simulated run, and the operations it submits.
//!
//! Everything is drawn from the seed: which node receives each deploy, update or delete, and when,
//! and what each service runs (`fleet`: entries of realistic size, with the texts a fleet
//! repeats). Entries are encoded at boot so the run itself allocates nothing.

use crate::fleet;
use myco_core::config::{Profile, ENTRY_BYTES_MAX, REPLICAS_MAX, WAL_CHECKPOINT_BYTES};
use myco_core::crypto::{sign_entry, SigningKey};
use myco_core::random::Prng;
use myco_core::schema::entry::{Arch, Entry, EntryBody, Requirements, Version};

#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub nodes: usize,
    pub services: usize,
    /// Extra operations on existing services: new versions and deletes.
    pub updates: usize,
    pub deletes: usize,
    pub loss_ppm: u64,
    pub duplicate_ppm: u64,
    pub latency_ms_max: u64,
    /// Partitions that later heal.
    pub partitions: bool,
    /// Nodes crashed during the safety phase; they restart empty in the liveness phase.
    pub crashes: usize,
    /// Simulated milliseconds before the run gives up, on `lan` (times `cluster::slowness` of
    /// the profile).
    pub time_ms_max: u64,
    /// Operations are spread over this window; 0 submits them all at once.
    pub ops_window_ms: u64,
    /// Log size that triggers a checkpoint; the gauntlet often draws a small one so compaction
    /// and recovery from snapshots run under crashes.
    pub wal_checkpoint_bytes: u64,
    /// An attacker on the network and a stolen box with forged entries on its disk.
    pub adversary: bool,
    /// The operator raises the RevocationBlock and re-certifies every node mid-run.
    pub rotate: bool,
    /// Once the cluster has converged, one node that runs services dies for good; the run then
    /// measures how long its services take to be placed elsewhere (`rounds_to_replace`).
    pub kill: bool,
    /// Units that fail to start or crash-loop, per million (half each).
    pub unit_fault_ppm: u64,
    /// `systemctl` commands that fail or hang and then fail, per million (half each).
    pub systemctl_fault_ppm: u64,
    /// New versions (updates) that are bad, per million: their unit fails or crash-loops, and
    /// a flake's build fails, on every box (`executors.rs`), so their rollout must hold.
    pub bad_update_ppm: u64,
    /// Every node's network profile (`--profile`). The gauntlet keeps `lan`, whose timings its
    /// time limits were set for.
    pub profile: Profile,
    /// Zones the nodes are spread over, round-robin (`--zones`); each has a few bridge-capable
    /// boxes (`ids::bridge_capable`). 1: one zone, no bridges.
    pub zones: u8,
    /// In the middle of the deploys, zone 1's elected bridges die for good (`--kill-bridges`).
    pub kill_bridges: bool,
    /// Boxes behind NAT (`--nat N`): the last `nat` honest nodes, with the first
    /// `RELAYS_PER_ZONE` nodes of each zone started `--relay` (`Scenario::roles`).
    pub nat: usize,
    /// The boxes behind NAT are started without `--behind-nat` and must find it out by
    /// themselves (`--nat-detect`; `node::natobs` in myco-core).
    pub nat_detect: bool,
}

/// Relays per zone when a scenario has boxes behind NAT: three, so one dying leaves each box two.
pub const RELAYS_PER_ZONE: usize = 3;

/// `--profile NAME` from a command line: `lan` when absent, a usage error for an unknown name.
pub fn profile_arg(args: &mut pico_args::Arguments) -> Result<Profile, String> {
    let name: Option<String> = args
        .opt_value_from_str("--profile")
        .map_err(|e| format!("--profile: {e}"))?;
    name.map_or(Ok(Profile::LAN), |name| {
        Profile::named(&name)
            .ok_or_else(|| format!("--profile '{name}' is not one of {}", Profile::NAMES))
    })
}

impl Scenario {
    pub fn standard(seed: u64, nodes: usize, services: usize, loss: f64) -> Scenario {
        Scenario {
            seed,
            nodes,
            services,
            updates: 0,
            deletes: 0,
            loss_ppm: (loss * 1e6) as u64,
            duplicate_ppm: 0,
            latency_ms_max: 20,
            partitions: false,
            crashes: 0,
            time_ms_max: 300_000,
            ops_window_ms: OPS_WINDOW_MS,
            wal_checkpoint_bytes: WAL_CHECKPOINT_BYTES,
            adversary: false,
            rotate: false,
            kill: true,
            unit_fault_ppm: 0,
            systemctl_fault_ppm: 0,
            bad_update_ppm: 0,
            profile: Profile::LAN,
            zones: 1,
            kill_bridges: false,
            nat: 0,
            nat_detect: false,
        }
    }

    /// Swarm parameters for the gauntlet: every dimension drawn from the seed.
    pub fn swarm(seed: u64) -> Scenario {
        let mut r = Prng::new(seed ^ 0x5741_524d);
        let nodes = 3 + r.below(98) as usize;
        let services = r.below(1001) as usize;
        let mut s = Scenario {
            seed,
            nodes,
            services,
            updates: r.below(services as u64 / 4 + 1) as usize,
            deletes: r.below(services as u64 / 4 + 1) as usize,
            loss_ppm: r.below(600_001),
            duplicate_ppm: r.below(100_001),
            latency_ms_max: 1 + r.below(100),
            partitions: r.chance(1, 3),
            crashes: if r.chance(1, 2) {
                r.below(nodes as u64 / 3 + 1) as usize
            } else {
                0
            },
            time_ms_max: 300_000,
            ops_window_ms: OPS_WINDOW_MS,
            wal_checkpoint_bytes: if r.chance(1, 2) {
                4096 + r.below(60_000)
            } else {
                WAL_CHECKPOINT_BYTES
            },
            adversary: r.chance(1, 3),
            rotate: r.chance(1, 4),
            // Every seed checks placement once converged; half also kill a node, which doubles
            // the simulated time after convergence.
            kill: r.chance(1, 2),
            // Drawn last, so every earlier dimension of a seed stays what it was.
            unit_fault_ppm: r.below(100_001),
            systemctl_fault_ppm: r.below(100_001),
            bad_update_ppm: r.below(500_001),
            profile: Profile::LAN, // drawn below
            // Mostly one zone; a quarter of the seeds spread over 2 to 4, small so runs stay fast.
            zones: if r.chance(1, 4) {
                2 + r.below(3) as u8
            } else {
                1
            },
            kill_bridges: false,
            nat: 0,
            nat_detect: false,
        };
        // Drawn after everything else, so every other dimension of a seed stays what it was: a
        // quarter of the seeds put up to a quarter of the boxes behind NAT, leaving each zone its
        // relays.
        let room = s.nodes - usize::from(s.adversary);
        let room = room.saturating_sub(RELAYS_PER_ZONE * usize::from(s.zones));
        if r.chance(1, 4) && room > 0 {
            s.nat = 1 + r.below((room.min(s.nodes / 4).max(1)) as u64) as usize;
            // Half of those start them without `--behind-nat`: they must find it out.
            s.nat_detect = r.chance(1, 2);
        }
        // Drawn last, as NAT was: one seed in eight runs `wan` and one in eight `metered`, whose
        // slower probes and pushes the liveness deadlines allow for (`cluster::slowness`).
        s.profile = match r.below(8) {
            0 => Profile::WAN,
            1 => Profile::METERED,
            _ => Profile::LAN,
        };
        s
    }

    /// Node `i`'s `(relay, behind_nat)`: with boxes behind NAT, the first `RELAYS_PER_ZONE` of
    /// each zone (zones are round-robin) relay, and the last `nat` honest nodes are behind NAT.
    pub fn roles(&self, i: usize) -> (bool, bool) {
        let end = self.nodes - usize::from(self.adversary);
        let relay = self.nat > 0 && i / usize::from(self.zones) < RELAYS_PER_ZONE;
        (relay, i < end && i + self.nat >= end)
    }

    /// Whether node `i` is started `--behind-nat`: a box behind NAT unless it must find it out.
    pub fn behind_nat_flag(&self, i: usize) -> bool {
        self.roles(i).1 && !self.nat_detect
    }

    /// The command line that reproduces this scenario.
    pub fn command(&self) -> String {
        format!(
            "myco-sim run --seed {} --nodes {} --services {} --updates {} --deletes {} --loss {} --duplicate {} --latency-max {} --partitions {} --crashes {}",
            self.seed,
            self.nodes,
            self.services,
            self.updates,
            self.deletes,
            self.loss_ppm as f64 / 1e6,
            self.duplicate_ppm as f64 / 1e6,
            self.latency_ms_max,
            self.partitions,
            self.crashes,
        ) + &format!(
            " --ops-window {} --wal-checkpoint-bytes {} --unit-faults {} --systemctl-faults {} --bad-updates {}{}{}{}",
            self.ops_window_ms,
            self.wal_checkpoint_bytes,
            self.unit_fault_ppm as f64 / 1e6,
            self.systemctl_fault_ppm as f64 / 1e6,
            self.bad_update_ppm as f64 / 1e6,
            if self.adversary { " --adversary" } else { "" },
            if self.rotate { " --scenario rotate" } else { "" },
            if self.kill { "" } else { " --kill false" },
        ) + &if self.profile == Profile::LAN {
            String::new()
        } else {
            format!(" --profile {}", self.profile.name)
        } + &if self.zones > 1 {
            format!(" --zones {}", self.zones)
        } else {
            String::new()
        } + if self.kill_bridges {
            " --kill-bridges"
        } else {
            ""
        } + &if self.nat > 0 {
            format!(
                " --nat {}{}",
                self.nat,
                if self.nat_detect { " --nat-detect" } else { "" }
            )
        } else {
            String::new()
        }
    }
}

/// One operator action: an encoded entry submitted at `node` at `at_ms`.
pub struct Op {
    pub at_ms: u64,
    pub node: usize,
    pub entry: Vec<u8>,
    /// A bad new version (`Scenario::bad_update_ppm`).
    pub bad: bool,
}

/// Operations start once membership has formed and are spread over this window.
pub const OPS_START_MS: u64 = 5_000;
pub const OPS_WINDOW_MS: u64 = 4_000;

/// Where a simulated service may run: mostly anywhere; some need aarch64, x86_64 or a GPU, some
/// name a zone that has boxes (zone 0 with one zone, a random one of `zones` with more), and a few
/// name zone `zones`, where no box is, so they run nowhere.
fn requirements(r: &mut Prng, zones: u8) -> Requirements {
    let arch = match r.below(10) {
        0 => Arch::X86_64,
        1 | 2 => Arch::Aarch64,
        _ => Arch::Any,
    };
    let zone = match r.below(50) {
        0 => Some(zones),
        // One zone draws nothing more, so its runs are what they were before zones.
        1..=5 if zones > 1 => Some(r.below(u64::from(zones)) as u8),
        1..=5 => Some(0),
        // With zones, a fifth of the services name one: the bridges must carry them there.
        6..=15 if zones > 1 => Some(r.below(u64::from(zones)) as u8),
        _ => None,
    };
    Requirements {
        arch,
        gpu: r.chance(1, 8),
        zone,
    }
}

/// A valid entry for service `index` (named `name`) of the fleet of `seed`, signed by `operator`
/// (or by any key: the adversary forges with its own): a realistic spec (`fleet`).
pub fn encode(
    (seed, index, name): (u64, u64, &str),
    (clock, zones): (u64, u8),
    tombstone: bool,
    r: &mut Prng,
    operator: &SigningKey,
) -> Vec<u8> {
    let requires = requirements(r, zones);
    // Mostly 1 to 3; now and then more than a small cluster has eligible boxes.
    let replicas = if r.chance(1, 20) {
        4 + r.below(u64::from(REPLICAS_MAX) - 3) as u8
    } else {
        1 + r.below(3) as u8
    };
    let texts = fleet::texts(seed, index, name, &requires, false, r);
    let spec = texts.spec(requires, replicas);
    let body = EntryBody {
        name,
        version: Version {
            clock,
            key_id: operator.public_key().key_id(),
        },
        spec: (!tombstone).then_some(spec),
    };
    let mut out = [0u8; ENTRY_BYTES_MAX];
    let n = sign_entry(operator, &body, &mut out).expect("simulated entries are valid");
    out[..n].to_vec()
}

/// `earlier` (a signed entry) signed again by `operator` at `clock` with other replicas.
fn scaled(earlier: &[u8], clock: u64, r: &mut Prng, operator: &SigningKey) -> Vec<u8> {
    let mut body = Entry::decode(earlier).expect("the run's own entries").body;
    let spec = body
        .spec
        .as_mut()
        .expect("an update's earlier versions are services");
    // One to four copies, as deploys mostly have, and never as many as before.
    let other = 1 + r.below(4) as u8;
    spec.replicas = if other == spec.replicas {
        other % 4 + 1
    } else {
        other
    };
    body.version = Version {
        clock,
        key_id: operator.public_key().key_id(),
    };
    let mut out = [0u8; ENTRY_BYTES_MAX];
    let n = sign_entry(operator, &body, &mut out).expect("simulated entries are valid");
    out[..n].to_vec()
}

/// Whether two signed service entries make the same unit (`ServiceSpec::same_unit`).
fn same_unit(a: &[u8], b: &[u8]) -> bool {
    let (Ok(a), Ok(b)) = (Entry::decode(a), Entry::decode(b)) else {
        return false;
    };
    match (a.body.spec, b.body.spec) {
        (Some(a), Some(b)) => a.same_unit(&b),
        _ => false,
    }
}

/// The operations of `s`, sorted by time. Updates and deletes come after their service's deploy,
/// and every version is unique, so the final state is the same whatever order nodes see them in.
pub fn operations(s: &Scenario, operator: &SigningKey) -> Vec<Op> {
    let mut r = Prng::new(s.seed ^ 0x4f50_5321);
    let window = s.ops_window_ms.max(1);
    let mut deployed_at = Vec::with_capacity(s.services);
    let mut ops = Vec::with_capacity(s.services + s.updates + s.deletes);
    for i in 0..s.services {
        let at_ms = OPS_START_MS + r.below(window);
        deployed_at.push(at_ms);
        let entry = encode(
            (s.seed, i as u64, &format!("svc-{i}")),
            (at_ms * 1000 + 1, s.zones),
            false,
            &mut r,
            operator,
        );
        ops.push(Op {
            at_ms,
            node: r.below(s.nodes as u64) as usize,
            entry,
            bad: false,
        });
    }
    // Drawn apart, so the operations of a seed are what they were before bad versions existed.
    let mut badness = Prng::new(s.seed ^ 0x4241_4456);
    // Drawn apart too: one update in eight only scales its service (an earlier version of it,
    // signed again with other replicas), which boxes running that version apply without a
    // restart (`ServiceSpec::same_unit`).
    let mut scaling = Prng::new(s.seed ^ 0x5343_414c);
    // Each service's versions so far, and whether each is bad.
    let mut versions: Vec<Vec<(Vec<u8>, bool)>> =
        ops.iter().map(|o| vec![(o.entry.clone(), false)]).collect();
    for k in 0..(s.updates + s.deletes) {
        if s.services == 0 {
            break;
        }
        let i = r.below(s.services as u64) as usize;
        let at_ms = deployed_at[i] + 1 + r.below(window);
        // The op index keeps clocks unique when two ops on one service share a millisecond.
        let clock = at_ms * 1000 + 2 + k as u64 % 997;
        let name = format!("svc-{i}");
        let mut entry = encode(
            (s.seed, i as u64, &name),
            (clock, s.zones),
            k >= s.updates,
            &mut r,
            operator,
        );
        let update = k < s.updates;
        if update && scaling.chance(1, 8) {
            let earlier = &versions[i][scaling.below(versions[i].len() as u64) as usize];
            entry = scaled(&earlier.0, clock, &mut scaling, operator);
        }
        // A version is bad because what it runs fails: one that runs what an earlier version ran
        // (as a scaled one does) is bad exactly when that one was.
        let drawn_bad = update && badness.below(1_000_000) < s.bad_update_ppm;
        let same = versions[i].iter().find(|v| same_unit(&v.0, &entry));
        let bad = same.map_or(drawn_bad, |v| v.1);
        if update {
            versions[i].push((entry.clone(), bad));
        }
        ops.push(Op {
            at_ms,
            node: r.below(s.nodes as u64) as usize,
            entry,
            bad,
        });
    }
    ops.sort_by_key(|o| o.at_ms);
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gauntlet puts boxes behind NAT in some seeds, never so many that a zone lacks its
    /// relays, and never the adversary.
    #[test]
    fn swarms_draw_nat_and_leave_each_zone_its_relays() {
        let swarms: Vec<Scenario> = (0..400).map(Scenario::swarm).collect();
        let with_nat = swarms.iter().filter(|s| s.nat > 0).count();
        assert!((50..150).contains(&with_nat), "{with_nat} of 400");
        for s in swarms.iter().filter(|s| s.nat > 0) {
            let roles: Vec<(bool, bool)> = (0..s.nodes).map(|i| s.roles(i)).collect();
            assert_eq!(
                roles.iter().filter(|r| r.1).count(),
                s.nat,
                "{}",
                s.command()
            );
            assert!(roles.iter().all(|&(relay, nat)| !(relay && nat)));
            let relays = roles.iter().filter(|r| r.0).count();
            assert!(relays >= RELAYS_PER_ZONE * usize::from(s.zones).min(s.nodes));
            if s.adversary {
                assert!(!roles[s.nodes - 1].1);
            }
        }
    }

    /// The gauntlet runs every profile, `lan` most, and a reproduction names the profile drawn.
    #[test]
    fn swarms_draw_every_profile() {
        let swarms: Vec<Scenario> = (0..400).map(Scenario::swarm).collect();
        let drawn = |p: Profile| swarms.iter().filter(|s| s.profile == p).count();
        let (wan, metered) = (drawn(Profile::WAN), drawn(Profile::METERED));
        assert!((25..75).contains(&wan), "{wan} of 400 on wan");
        assert!((25..75).contains(&metered), "{metered} of 400 on metered");
        assert_eq!(drawn(Profile::LAN) + wan + metered, 400);
        let slow = swarms.iter().find(|s| s.profile == Profile::METERED);
        assert!(slow
            .expect("drawn above")
            .command()
            .contains(" --profile metered"));
    }
}
