//! foca (a sans-IO SWIM) on MycoSim's network model, run the way `myco-sim formation --kill`
//! runs Myco's nodes: NODES nodes started 50 ms apart, each announcing itself to node 0 and two
//! random earlier nodes; once every node lists every other (or after `--seconds`),
//! `--settle-seconds` (3) to settle and `--rest-seconds` counting the bytes sent; then the last node dies for good and the
//! run goes on until every live node has declared it down. Every datagram goes through
//! `myco_sim::net::Net` built as Myco's simulated world builds it, so loss, latency (1 to 20 ms)
//! and the network's seed are the ones Myco's nodes see.
//!
//! Prints one line: `FOCA nodes=.. loss=.. last_start_to_all_alive_s=.. false_down=..
//! rest_bytes_per_node_s=.. first_detect_s=.. all_detect_s=..`.

use foca::{Config, Foca, Identity, OwnedNotification, PostcardCodec, Timer};
use myco_core::config::FRAME_BYTES;
use myco_core::random::Prng;
use myco_sim::net::{Faults, Net};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::convert::Infallible;
use std::num::{NonZeroU32, NonZeroUsize};

/// A frame on `Net` is Myco's fixed size; foca's datagram rides in it behind a 2-byte length,
/// and only that length is counted as sent.
const LEN_BYTES: usize = 2;
/// Node `i` starts at `i * STAGGER_MS`, as in `myco-sim formation`.
const STAGGER_MS: u64 = 50;
/// Random earlier nodes each node announces itself to besides node 0, as Myco's nodes join.
const JOINS_RANDOM: u64 = 2;
/// The standard scenario's one-way latency (`Scenario::standard`): 1 to 20 ms.
const LATENCY_MS_MAX: u64 = 20;
/// Frames in flight at once, as `myco-sim formation` sizes its network.
const NET_SLOTS: usize = 1 << 16;

/// A member: its index in the simulation and a bump, so a member wrongly declared down rejoins
/// under a new identity (foca's `renew`) instead of staying defunct for the rest of the run.
#[derive(Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
struct Id {
    idx: u16,
    bump: u16,
}

impl Identity for Id {
    type Addr = u16;

    fn renew(&self) -> Option<Self> {
        Some(Id {
            idx: self.idx,
            bump: self.bump.wrapping_add(1),
        })
    }

    fn addr(&self) -> u16 {
        self.idx
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// foca's randomness from Myco's seeded PRNG, so a seed replays the whole run.
struct SeededRng(Prng);

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u64() as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            chunk.copy_from_slice(&self.0.next_u64().to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

type Node = Foca<Id, PostcardCodec, SeededRng, foca::NoCustomBroadcast>;

#[derive(Clone, Debug)]
struct Params {
    seed: u64,
    nodes: usize,
    loss: f64,
    run_ms: u64,
    rest_ms: u64,
    settle_ms: u64,
}

#[derive(Debug, Default)]
struct Outcome {
    all_alive_ms: Option<u64>,
    /// (declaring node, member) downs of members that were up.
    false_down: u64,
    rest_bytes_per_node_s: f64,
    first_detect_ms: Option<u64>,
    all_detect_ms: Option<u64>,
}

struct Run {
    p: Params,
    net: Net,
    nodes: Vec<Option<Node>>,
    runtime: foca::AccumulatingRuntime<Id>,
    /// Due time, sequence, node; the timer itself is in `timer_of`.
    timers: BinaryHeap<Reverse<(u64, u64, usize)>>,
    timer_of: HashMap<u64, Timer<Id>>,
    seq: u64,
    rng: Prng,
    now: u64,
    bytes_sent: u64,
    killed: Option<u16>,
    /// Live nodes that have declared the killed node down.
    detected: HashSet<usize>,
    out: Outcome,
}

fn config(nodes: usize) -> Config {
    // foca's LAN defaults (memberlist's), with datagrams that fit Myco's frame.
    let mut c = Config::new_lan(NonZeroU32::new(nodes as u32).expect("nodes > 0"));
    c.max_packet_size = NonZeroUsize::new(FRAME_BYTES - LEN_BYTES).expect("frame > len");
    c
}

impl Run {
    fn new(p: &Params) -> Run {
        let faults = Faults {
            loss_ppm: (p.loss * 1e6) as u64,
            duplicate_ppm: 0,
            latency_ms_min: 1,
            latency_ms_max: LATENCY_MS_MAX,
        };
        Run {
            // Seeded as `World::new` seeds Myco's network.
            net: Net::new(p.nodes + 1, faults, p.seed ^ 0x004e_4554, NET_SLOTS),
            nodes: (0..p.nodes).map(|_| None).collect(),
            runtime: foca::AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            timer_of: HashMap::new(),
            seq: 0,
            rng: Prng::new(p.seed ^ 0x464f_524d),
            now: 0,
            bytes_sent: 0,
            killed: None,
            detected: HashSet::new(),
            out: Outcome::default(),
            p: p.clone(),
        }
    }

    /// Sends, schedules and notes what node `i` asked for in its last call.
    fn drain(&mut self, i: usize) {
        while let Some((to, data)) = self.runtime.to_send() {
            let mut frame = [0u8; FRAME_BYTES];
            let n = data.len();
            frame[..LEN_BYTES].copy_from_slice(&(n as u16).to_le_bytes());
            frame[LEN_BYTES..LEN_BYTES + n].copy_from_slice(&data);
            self.bytes_sent += n as u64;
            self.net.send(self.now, i as u16, to.idx, &frame);
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.seq += 1;
            let due = self.now + after.as_millis() as u64;
            self.timers.push(Reverse((due, self.seq, i)));
            self.timer_of.insert(self.seq, timer);
        }
        while let Some(note) = self.runtime.to_notify() {
            if let OwnedNotification::MemberDown(id) = note {
                if Some(id.idx) == self.killed {
                    self.detected.insert(i);
                } else {
                    self.out.false_down += 1;
                }
            }
        }
    }

    fn start_due(&mut self) {
        for i in 0..self.p.nodes {
            if self.nodes[i].is_some() || i as u64 * STAGGER_MS > self.now {
                continue;
            }
            let rng = SeededRng(Prng::new(self.p.seed ^ (i as u64) << 20));
            let id = Id {
                idx: i as u16,
                bump: 0,
            };
            let mut node = Foca::new(id, config(self.p.nodes), rng, PostcardCodec);
            let mut join = vec![0];
            for _ in 0..JOINS_RANDOM.min(i.saturating_sub(1) as u64) {
                join.push(1 + self.rng.below(i as u64 - 1) as u16);
            }
            if i > 0 {
                for idx in join {
                    let to = Id { idx, bump: 0 };
                    node.announce(to, &mut self.runtime).expect("announce");
                }
            }
            self.nodes[i] = Some(node);
            self.drain(i);
        }
    }

    /// One millisecond: due datagrams, then due timers. A node that is not up loses both.
    fn step(&mut self) {
        while let Some(d) = self.net.pop(self.now) {
            let (to, frame) = (usize::from(d.to), *self.net.frame(&d));
            self.net.release(d);
            let n = usize::from(u16::from_le_bytes([frame[0], frame[1]]));
            if let Some(node) = self.nodes.get_mut(to).and_then(Option::as_mut) {
                // A datagram foca refuses (a stale probe, say) changes nothing.
                let _ = node.handle_data(&frame[LEN_BYTES..LEN_BYTES + n], &mut self.runtime);
                self.drain(to);
            }
        }
        while let Some(&Reverse((due, seq, i))) = self.timers.peek() {
            if due > self.now {
                break;
            }
            self.timers.pop();
            let timer = self.timer_of.remove(&seq).expect("scheduled");
            if let Some(node) = self.nodes[i].as_mut() {
                node.handle_timer(timer, &mut self.runtime).expect("timer");
                self.drain(i);
            }
        }
        self.now += 1;
    }

    fn all_alive(&self) -> bool {
        let n = self.p.nodes;
        self.nodes
            .iter()
            .all(|node| node.as_ref().is_some_and(|f| f.num_members() == n - 1))
    }

    fn form(&mut self) {
        let last_start = (self.p.nodes as u64 - 1) * STAGGER_MS;
        while self.now <= last_start + self.p.run_ms {
            self.start_due();
            self.step();
            if self.now >= last_start && self.now.is_multiple_of(10) && self.all_alive() {
                self.out.all_alive_ms = Some(self.now - last_start);
                return;
            }
        }
    }

    fn rest(&mut self) {
        let settled = self.now + self.p.settle_ms;
        while self.now < settled {
            self.step();
        }
        let before = self.bytes_sent;
        while self.now < settled + self.p.rest_ms {
            self.step();
        }
        let bytes = (self.bytes_sent - before) as f64;
        let seconds = self.p.rest_ms as f64 / 1000.0;
        self.out.rest_bytes_per_node_s = bytes / self.p.nodes as f64 / seconds;
    }

    fn kill_last(&mut self) {
        let last = self.p.nodes - 1;
        self.nodes[last] = None;
        self.killed = Some(last as u16);
        let killed_at = self.now;
        while self.now < killed_at + self.p.run_ms {
            self.step();
            if self.out.first_detect_ms.is_none() && !self.detected.is_empty() {
                self.out.first_detect_ms = Some(self.now - killed_at);
            }
            if self.detected.len() == last {
                self.out.all_detect_ms = Some(self.now - killed_at);
                return;
            }
        }
    }
}

fn seconds(ms: Option<u64>) -> String {
    ms.map_or("-".to_string(), |ms| format!("{:.2}", ms as f64 / 1000.0))
}

fn params() -> Result<Params, String> {
    let mut args = pico_args::Arguments::from_env();
    let mut get = |name: &'static str, default: f64| -> Result<f64, String> {
        let v = args.opt_value_from_str(name);
        Ok(v.map_err(|e| format!("{name}: {e}"))?.unwrap_or(default))
    };
    let p = Params {
        seed: get("--seed", 1.0)? as u64,
        nodes: get("--nodes", 50.0)? as usize,
        loss: get("--loss", 0.1)?,
        run_ms: (get("--seconds", 60.0)? * 1000.0) as u64,
        rest_ms: (get("--rest-seconds", 30.0)? * 1000.0) as u64,
        settle_ms: (get("--settle-seconds", 3.0)? * 1000.0) as u64,
    };
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unexpected arguments: {rest:?}"));
    }
    let ok = (2..=250).contains(&p.nodes) && (0.0..1.0).contains(&p.loss);
    if !ok || p.run_ms == 0 || p.rest_ms == 0 {
        return Err("--nodes 2..=250, --loss 0..1, --seconds and --rest-seconds > 0".into());
    }
    Ok(p)
}

fn main() -> std::process::ExitCode {
    let p = match params() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("foca-sim: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let mut r = Run::new(&p);
    r.form();
    r.rest();
    r.kill_last();
    let o = &r.out;
    println!(
        "FOCA nodes={} loss={} last_start_to_all_alive_s={} false_down={} rest_bytes_per_node_s={:.0} first_detect_s={} all_detect_s={} (simulated on myco-sim's Net, seed {}; foca {:?} probe period)",
        p.nodes,
        p.loss,
        seconds(o.all_alive_ms),
        o.false_down,
        o.rest_bytes_per_node_s,
        seconds(o.first_detect_ms),
        seconds(o.all_detect_ms),
        p.seed,
        config(p.nodes).probe_period,
    );
    std::process::ExitCode::SUCCESS
}
