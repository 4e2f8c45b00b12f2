//! quickwit's chitchat (scuttlebutt gossip, phi-accrual failure detection) with NODES nodes in one
//! process on loopback, each on its own `127.NET.(i+1):7946` over chitchat's UDP transport,
//! measured as `bench/peers/run.sh` measures every system (run.sh installs the nftables loss and
//! counts the bytes):
//!
//! - `JOIN s=..`: from the first node's start until every node lists every node live (each has
//!   node 0 as its seed);
//! - `KV s=..`: node 0 sets a new key in its own state, until every node reads it there;
//! - `REST begin` / `REST end`: after `--settle-seconds`, `--rest-seconds` with nothing to spread;
//! - `DETECT s=..`: the last node's server shuts down (no goodbye), until no live node lists it
//!   live;
//! - `FALSE n=..`: distinct members other than the killed one that some node held dead when
//!   polled (every 20 ms while waiting), from the join on.
//!
//! chitchat's settings are its defaults (phi threshold 8) with quickwit's 1 s gossip interval and
//! the compressed (V1) protocol, as a cluster of one version runs it.

use chitchat::transport::UdpTransport;
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion,
};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Generous, for a loaded two-core machine; `-` is printed when a figure is not reached.
const LIMIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);
const KEY: &str = "key";

struct Args {
    net: String,
    nodes: usize,
    settle: Duration,
    rest: Duration,
}

fn args() -> Result<Args, String> {
    let mut args = pico_args::Arguments::from_env();
    let net: String = args
        .value_from_str("--net")
        .map_err(|e| format!("--net: {e}"))?;
    let mut number = |name: &'static str, default: f64| -> Result<f64, String> {
        let v = args
            .opt_value_from_str(name)
            .map_err(|e| format!("{name}: {e}"));
        Ok(v?.unwrap_or(default))
    };
    let nodes = number("--nodes", 50.0)? as usize;
    let (settle, rest) = (
        number("--settle-seconds", 10.0)?,
        number("--rest-seconds", 20.0)?,
    );
    if !(2..250).contains(&nodes) || settle < 0.0 || rest <= 0.0 || !args.finish().is_empty() {
        return Err("--net A.B.C --nodes 2..250 --settle-seconds S --rest-seconds R".into());
    }
    Ok(Args {
        net,
        nodes,
        settle: Duration::from_secs_f64(settle),
        rest: Duration::from_secs_f64(rest),
    })
}

fn config(net: &str, i: usize) -> ChitchatConfig {
    let addr: SocketAddr = format!("{net}.{}:7946", i + 1).parse().expect("an address");
    ChitchatConfig {
        chitchat_id: ChitchatId::new(format!("n{i}"), 1, addr),
        cluster_id: "peers".to_string(),
        gossip_interval: Duration::from_secs(1),
        listen_addr: addr,
        seed_nodes: vec![format!("{net}.1:7946")],
        failure_detector_config: FailureDetectorConfig::default(),
        marked_for_deletion_grace_period: Duration::from_secs(3_600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V1,
    }
}

/// The nodes, and the members other than `killed` that some node has held dead once joined.
struct Cluster {
    handles: Vec<ChitchatHandle>,
    /// chitchat holds a member it has just learned of dead until it has heard its heartbeats:
    /// deaths count from the moment everyone listed everyone live.
    joined: bool,
    wrongly_dead: HashSet<String>,
    killed: Option<String>,
}

impl Cluster {
    /// Polls `ok` on every node until it holds for all; seconds since `start`, `-` if never.
    async fn wait(&mut self, start: Instant, ok: impl Fn(&chitchat::Chitchat) -> bool) -> String {
        while start.elapsed() < LIMIT {
            let mut all = true;
            for h in &self.handles {
                let c = h.chitchat();
                let c = c.lock().await;
                for dead in c.dead_nodes().filter(|_| self.joined) {
                    if Some(&*dead.node_id) != self.killed.as_deref() {
                        self.wrongly_dead.insert(dead.node_id.to_string());
                    }
                }
                all &= ok(&c);
            }
            if all {
                return format!("{:.2}", start.elapsed().as_secs_f64());
            }
            tokio::time::sleep(POLL).await;
        }
        "-".to_string()
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chitchat-loopback: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let start = Instant::now();
    let mut handles = Vec::with_capacity(a.nodes);
    for i in 0..a.nodes {
        let handle = spawn_chitchat(config(&a.net, i), Vec::new(), &UdpTransport).await;
        handles.push(handle.expect("chitchat starts"));
    }
    let mut c = Cluster {
        handles,
        joined: false,
        wrongly_dead: HashSet::new(),
        killed: None,
    };
    let n = a.nodes;
    println!(
        "JOIN s={}",
        c.wait(start, |c| c.live_nodes().count() == n).await
    );
    c.joined = true;

    let first = c.handles[0].chitchat_id().clone();
    let start = Instant::now();
    c.handles[0]
        .chitchat()
        .lock()
        .await
        .self_node_state()
        .set(KEY, "value");
    let sees = |c: &chitchat::Chitchat| c.node_state(&first).and_then(|s| s.get(KEY)).is_some();
    println!("KV s={}", c.wait(start, sees).await);

    tokio::time::sleep(a.settle).await;
    println!("REST begin");
    tokio::time::sleep(a.rest).await;
    println!("REST end");

    let last = c.handles.pop().expect("nodes > 1");
    let gone = last.chitchat_id().clone();
    c.killed = Some(gone.node_id.to_string());
    last.shutdown().await.expect("the server stops");
    let start = Instant::now();
    let detected = c
        .wait(start, |c| c.live_nodes().all(|id| *id != gone))
        .await;
    println!("DETECT s={detected}");
    println!("FALSE n={}", c.wrongly_dead.len());
    std::process::ExitCode::SUCCESS
}
