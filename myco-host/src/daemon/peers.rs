//! `<state-dir>/peers`: the addresses of live peers, so a node that restarts finds the cluster
//! again without its `--join` flags. Written only when the set changes, so a cluster at rest
//! writes nothing.

use super::net::{display_addr, peer_addr};
use myco_core::PeerAddr;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const PEERS_FILE_NAME: &str = "peers";
/// Addresses kept; the core contacts at most `JOIN_MAX` of them at start.
const PEERS_MAX: usize = 64;

pub struct PeersFile {
    path: PathBuf,
    /// Order-independent digest of the set last written (or read).
    saved: u64,
}

impl PeersFile {
    /// Reads the remembered peers. A missing file is an empty list; a line that does not parse
    /// is skipped (the file is only a hint; the log says how many were skipped).
    pub fn load(dir: &Path) -> (PeersFile, Vec<SocketAddr>, usize) {
        let path = dir.join(PEERS_FILE_NAME);
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut skipped = 0;
        let mut addrs = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(PEERS_MAX)
        {
            match line.trim().parse::<SocketAddr>() {
                Ok(a) => addrs.push(a),
                Err(_) => skipped += 1,
            }
        }
        let saved = digest(addrs.iter().map(|&a| peer_addr(a)));
        (PeersFile { path, saved }, addrs, skipped)
    }

    /// Writes `peers` if the set differs from what the file holds: to a temporary file, synced,
    /// then renamed over the old one, so a crash leaves the old list or the new one.
    pub fn save(&mut self, peers: impl Iterator<Item = PeerAddr> + Clone) -> io::Result<bool> {
        let d = digest(peers.clone());
        if d == self.saved {
            return Ok(false);
        }
        crate::atomic::replace_file(&self.path, |file| {
            for p in peers.take(PEERS_MAX) {
                writeln!(file, "{}", display_addr(p))?;
            }
            Ok(())
        })?;
        self.saved = d;
        Ok(true)
    }
}

/// A digest that does not depend on order: membership tables reorder as members come and go.
fn digest(peers: impl Iterator<Item = PeerAddr>) -> u64 {
    peers
        .map(|p| {
            let mut bytes = [0u8; 18];
            bytes[..16].copy_from_slice(&p.ip);
            bytes[16..].copy_from_slice(&p.port.to_le_bytes());
            myco_core::hash::digest(myco_core::hash::DOMAIN_KEY, &bytes)
        })
        .fold(0, |acc, h| acc ^ h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_only_changes_and_loads_what_it_saved() {
        let temp = myco_testkit::TempDir::new("peers");
        let dir = temp.path();
        let (mut file, loaded, _) = PeersFile::load(dir);
        assert!(loaded.is_empty());
        let a = peer_addr("127.0.0.1:7001".parse().unwrap());
        let b = peer_addr("[fd00::1]:7002".parse().unwrap());
        assert!(file.save([a, b].into_iter()).unwrap());
        assert!(
            !file.save([b, a].into_iter()).unwrap(),
            "same set, no write"
        );
        fs::write(
            dir.join(PEERS_FILE_NAME),
            "127.0.0.1:7001\nnot an address\n[fd00::1]:7002\n",
        )
        .unwrap();
        let (_, loaded, skipped) = PeersFile::load(dir);
        assert_eq!(
            loaded.iter().map(|&s| peer_addr(s)).collect::<Vec<_>>(),
            [a, b]
        );
        assert_eq!(skipped, 1);
    }
}
