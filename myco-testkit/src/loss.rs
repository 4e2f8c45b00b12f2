//! Real packet loss on this machine's network path: an nftables table that drops a share of the
//! UDP datagrams addressed to one test cluster's loopback network, on the input hook, so that
//! every datagram between two of its daemons is dropped with that probability once (the sender's
//! output is not filtered). Other traffic, the other clusters' included, is untouched: the rule
//! matches the cluster's own 127.A.B.0/24. Needs root and `nft` (the `nftables` package, which
//! `make tools` installs), so the tests that use it are in the root-only group (`ROOT_TESTS` in
//! the Makefile).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// An nftables table dropping `percent`% of the UDP datagrams to a network; deleted on drop.
pub struct Loss {
    table: String,
}

impl Loss {
    /// Drops `percent`% (1..=99) of UDP datagrams to `network` (`127.A.B.0/24`). Panics if `nft`
    /// cannot install the rule (not root, no `nft`).
    pub fn udp_to(network: &str, percent: u8) -> Loss {
        assert!((1..100).contains(&percent), "a loss of 1 to 99 percent");
        static TABLES: AtomicU32 = AtomicU32::new(0);
        let n = TABLES.fetch_add(1, Ordering::Relaxed);
        let table = format!("myco_loss_{}_{n}", std::process::id());
        let loss = Loss { table };
        // `numgen random mod 100` draws 0..99 per packet: `< percent` drops that share.
        let script = format!(
            "add table inet {t}\n\
             add chain inet {t} input {{ type filter hook input priority 0; policy accept; }}\n\
             add rule inet {t} input ip daddr {network} meta l4proto udp numgen random mod 100 < {percent} counter drop\n",
            t = loss.table
        );
        let status = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("piped")
                    .write_all(script.as_bytes())?;
                child.wait()
            })
            .unwrap_or_else(|e| panic!("cannot run nft (apt-get install nftables): {e}"));
        assert!(
            status.success(),
            "nft refused the loss table (it needs root: `make test-root`)"
        );
        loss
    }

    /// Datagrams the rule has dropped so far (its counter), so a run can show the loss was real.
    pub fn dropped(&self) -> u64 {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .output()
            .expect("nft runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("counter packets ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in nft's listing:\n{text}"))
    }
}

impl Drop for Loss {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}
