//! MycoSim: many myco-core nodes in one thread, a seeded lossy network, discrete time.
//!
//! `myco-sim run` runs one scenario and prints a summary (or one JSON object with `--json`);
//! `myco-sim gauntlet` runs seed after seed with swarm parameters drawn from each seed;
//! `myco-sim bench` prints the convergence figures recorded in docs/benchmarks.md, and
//! `myco-sim capacity` how many services of realistic size one node's store holds.

mod adversary;
mod alloc;
mod bench;
mod capacity;
mod cluster;
mod disk;
mod executors;
mod fleet;
mod formation;
mod gauntlet;
mod ids;
mod invariants;
mod report;
mod scenario;
mod uniform;
mod world;

// The network model is the library's, so harnesses outside the simulator share it.
use myco_sim::net;

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

const HELP: &str = "\
myco-sim: MycoSim, the deterministic simulator of a Myco cluster

USAGE:
  myco-sim run [--seed S] [--nodes N] [--services K] [--loss P] [--json] [FAULTS] [--adversary]
               [--scenario rotate] [--profile lan|wan|metered]
  myco-sim gauntlet --seconds T [--seed S] [--jobs J]
  myco-sim bench [--seeds N] [--placement | --at-rest | --profiles | --wire]
  myco-sim capacity [--seed S]
  myco-sim formation [--seed S] [--nodes N] [--loss P] [--stagger-ms MS] [--slow-ms MS]
                     [--seconds T] [--rest-seconds R] [--profile lan|wan|metered] [--kill]
                     [--settle-seconds S]

RUN OPTIONS:
  --seed S          seed for everything (default 1)
  --nodes N         nodes, 1..=250 (default 50)
  --services K      deploys, 0..=1000 (default 1000)
  --loss P          packet loss probability, 0..=1 (default 0.5)
  --updates U       extra new versions of deployed services (default 0)
  --deletes D       deletes of deployed services (default 0)
  --duplicate P     duplication probability (default 0)
  --latency-max MS  maximum one-way latency (default 20)
  --partitions B    true: a random partition that heals (default false)
  --crashes C       nodes crashed (power loss: unsynced writes lost or torn) and restarted
                    from their disks during the safety phase (default 0)
  --ops-window MS   operations are spread over this window; 0 submits all at once (default 4000)
  --kill B          true: once converged, a node that runs services dies for good, and the run
                    reports rounds_to_replace, the gossip rounds until every live node places its
                    services elsewhere (default true)
  --wal-checkpoint-bytes B  log size that triggers a checkpoint (default 1048576)
  --adversary       an attacker replays, flips bits, sends self-signed, revoked and foreign-zone
                    handshakes and frames; a stolen box gossips forged slots and tombstones
  --scenario rotate the operator raises the RevocationBlock and re-certifies every node mid-run
  --profile NAME    every node's network profile: lan (default), wan or metered (docs/daemon.md)
  --zones Z         nodes spread round-robin over Z zones (default 1), the first 4 of each
                    bridge-capable; deploys go to random nodes and a fifth name a random zone.
                    Membership must stay in each zone (member_records_crossing_zones, exit 2
                    otherwise); --nodes may then be up to 250 a zone
  --kill-bridges    with --zones: zone 1's elected bridges die for good mid-deploys; the later
                    deploys must still reach zone 1 through the next bridges in rendezvous order
  --nat N           the last N nodes are behind NAT (a box receives only from addresses it sent to
                    within 30 s) and the first 3 of each zone relay for them; the invariants hold
                    for them like any box (nat_dropped, relayed_frames); the gauntlet draws it
  --nat-detect      with --nat: the boxes behind NAT start without --behind-nat and must find
                    it out (nat_detected counts those that did; the gauntlet draws it)
  --json            print one JSON object instead of a summary

INVARIANTS:
  whenever every live node holds the same state and sees the same members alive, each places
  every service on the same min(replicas, eligible live) members (a violation is exit 2)

GAUNTLET OPTIONS:
  --seconds T       start seeds for T seconds of wall time, then wait for those running
  --seed S          the first seed (default 1); each next seed is one more
  --jobs J          seeds run at once, one per thread, 1..=64 (default: one per core); a seed's
                    result is the same on any thread and beside any other

FORMATION OPTIONS:
  nodes (default 250) start STAGGER ms apart (default 50), each joining node 0 and two random
  earlier nodes, until every node lists every other alive (at most T seconds after the last
  start, default 60); prints FORMED with the simulated time from the last start. --slow-ms
  delays every frame to the middle node (a stalled box) and runs the whole T seconds; exit 1 if
  the cluster did not form (no slow node) or a healthy member was declared dead. With
  --rest-seconds R, a formed cluster (or one not formed in T) runs S s more (--settle-seconds,
  default 3) and then R s, and prints the frames each node sent per second in those R s
  (rest_frames_per_node_s; rest_member_frames_per_node_s: those of membership news sent on
  their own, which loss multiplies). With --kill, the last node then dies for good and KILLED prints the
  seconds until the first and until every live node listed it dead (at most T seconds; its death
  is not counted in false_dead).

EXIT CODES:
  0 converged; 1 liveness failure (incl. membership not converging or services not replaced);
  2 safety failure (incl. a lost acknowledged deploy or a placement disagreement);
  3 heap allocation after boot; 64 usage
";

fn main() -> ExitCode {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let result = match args.subcommand() {
        Ok(Some(cmd)) if cmd == "run" => report::run_command(args),
        Ok(Some(cmd)) if cmd == "gauntlet" => gauntlet::command(args),
        Ok(Some(cmd)) if cmd == "bench" => bench::command(args),
        Ok(Some(cmd)) if cmd == "capacity" => capacity::command(args),
        Ok(Some(cmd)) if cmd == "formation" => formation::command(args),
        Ok(Some(cmd)) => Err(format!("unknown command '{cmd}'; see 'myco-sim --help'")),
        Ok(None) => Err("missing command; see 'myco-sim --help'".to_string()),
        Err(e) => Err(format!("{e}; see 'myco-sim --help'")),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("myco-sim: {message}");
            ExitCode::from(64)
        }
    }
}
