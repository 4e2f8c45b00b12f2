//! Myco's daemons (`myco-d`, release build, `MYCO_BIN_DIR`) on loopback, NODES of them on
//! `127.A.B.0/24` (`--net A.B`), measured as `bench/peers/run.sh` measures memberlist and chitchat
//! (run.sh installs the nftables loss on that network and counts its bytes):
//!
//! - `JOIN s=..`: from the first spawn until every node lists every other alive (each node joins
//!   the first three, as `myco-testkit`'s clusters do), and `after_ready_s` from the moment
//!   the last of them answered on its API socket (spawning 50 processes and opening their logs
//!   is in the first figure, not in memberlist's or chitchat's, whose nodes share one process);
//! - `KV s=..`: the key/value is a deploy, one operator-signed entry submitted to node 0 with
//!   `myco deploy`, until every node lists it;
//! - `REST begin` / `REST end`: after `--settle-seconds`, `--rest-seconds` with nothing to
//!   spread;
//! - `DETECT s=..`: the last node is killed (SIGKILL), until every live node lists it dead;
//! - `FALSE n=..`: distinct members other than the killed one some node logged dead.

use myco_testkit::lossy::declared_dead_besides;
use myco_testkit::{poll_until, Cluster, NodeOptions};
use std::time::{Duration, Instant};

/// Generous, for a loaded two-core machine; a figure not reached by then is printed as `-` and
/// the run goes on, so one missed figure leaves the others measured.
const LIMIT: Duration = Duration::from_secs(120);

struct Args {
    net: [u8; 2],
    nodes: usize,
    settle: Duration,
    rest: Duration,
}

fn args() -> Result<Args, String> {
    let mut args = pico_args::Arguments::from_env();
    let net: String = args
        .value_from_str("--net")
        .map_err(|e| format!("--net A.B: {e}"))?;
    let mut octets = net.split('.').map(str::parse::<u8>);
    let (Some(Ok(a)), Some(Ok(b)), None) = (octets.next(), octets.next(), octets.next()) else {
        return Err(format!("--net A.B, not {net}"));
    };
    let nodes: usize = args
        .opt_value_from_str("--nodes")
        .map_err(|e| e.to_string())?
        .unwrap_or(50);
    let mut seconds = |name: &'static str, default: f64| -> Result<f64, String> {
        let v = args
            .opt_value_from_str(name)
            .map_err(|e| format!("{name}: {e}"));
        Ok(v?.unwrap_or(default))
    };
    let (settle, rest) = (
        seconds("--settle-seconds", 10.0)?,
        seconds("--rest-seconds", 20.0)?,
    );
    if !(2..250).contains(&nodes) || settle < 0.0 || rest <= 0.0 || !args.finish().is_empty() {
        return Err("--nodes 2..250, --settle-seconds >= 0, --rest-seconds > 0".into());
    }
    Ok(Args {
        net: [a, b],
        nodes,
        settle: Duration::from_secs_f64(settle),
        rest: Duration::from_secs_f64(rest),
    })
}

/// Seconds with two decimals, `-` for a figure not reached within `LIMIT`.
fn secs(took: Option<Duration>) -> String {
    took.map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64()))
}

/// Starts every node; prints JOIN.
fn join(c: &mut Cluster, nodes: usize) {
    let start = Instant::now();
    c.start_all();
    let ready = start.elapsed();
    let after_ready = poll_until(LIMIT, || {
        c.daemons.iter().all(|d| {
            let listed = d.nodes();
            let alive = listed.iter().skip(1).filter(|(_, s)| s == "alive").count();
            alive + 1 == nodes
        })
    });
    let all = after_ready.map(|took| ready + took);
    println!("JOIN s={} after_ready_s={}", secs(all), secs(after_ready));
}

/// Deploys one service through node 0; prints KV.
fn key_value(c: &Cluster) {
    let manifest = c.write("kv.json", r#"{"name": "kv", "exec": "/usr/bin/true"}"#);
    let start = Instant::now();
    let answer = c.deploy(0, &manifest);
    assert_eq!(answer["outcome"], "applied", "deploy: {answer}");
    let everywhere = poll_until(LIMIT.saturating_sub(start.elapsed()), || {
        c.daemons.iter().all(|d| d.services().len() == 1)
    });
    println!("KV s={}", secs(everywhere.map(|_| start.elapsed())));
}

/// Kills the last node; prints DETECT and FALSE.
fn kill_last(c: &mut Cluster) {
    let last = c.daemons.len() - 1;
    let victim = c.daemons[last].key.node_id.clone();
    c.daemons[last].kill();
    let live = &c.daemons[..last];
    let took = poll_until(LIMIT, || {
        live.iter()
            .all(|d| d.state_of(&victim).as_deref() == Some("dead"))
    });
    println!("DETECT s={}", secs(took));
    println!("FALSE n={}", declared_dead_besides(c, &victim));
}

fn main() -> std::process::ExitCode {
    let Args {
        net,
        nodes,
        settle,
        rest,
    } = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("myco-loopback: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let mut c = Cluster::on_network("peers", net);
    for _ in 0..nodes {
        c.add(NodeOptions::default());
    }
    join(&mut c, nodes);
    key_value(&c);
    std::thread::sleep(settle);
    println!("REST begin");
    std::thread::sleep(rest);
    println!("REST end");
    kill_last(&mut c);
    std::process::ExitCode::SUCCESS
}
