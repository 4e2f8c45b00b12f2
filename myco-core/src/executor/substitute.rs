//! Substitutes: before a box builds a flake version, it asks peers that already serve that
//! version's output from their binary cache (`docs/nix.md`, "Boxes fetch from each other").
//!
//! A version's output for one system is named by its *build key*, the hash of its GC root's name
//! `<name>-<rev12>-<system>` ([`super::root_name`]): the host offers the keys of the roots its
//! cache serves (`Node::set_offer`), and a build looks its own root's key up in its peers'
//! offers. 48 bits of revision and the service name make a collision rare, and harmless: Nix
//! would find no narinfo for its own output path there, or refuse a signature, and build.
//!
//! Which peers, at most `SUBSTITUTES_MAX`, in the order Nix tries them: alive members whose
//! status offers the key from a cache (port not 0), whatever their own architecture (the key
//! names the system the output is for: an x86_64 builder serves the aarch64 output it built for
//! a board), with a session, so with a certificate verified under the
//! current RevocationBlock (its node key is what the build trusts: a revoked node has no session,
//! so it is never asked nor trusted). Among those, the same zone first, then peers not building
//! (a box running `nix build` has its CPU and uplink busy), then by a hash of this box's id, the
//! build key and the peer's id: each box has its own order, so ten boxes that want the same
//! version do not all pull from the first peer.

use crate::config::SUBSTITUTES_MAX;
use crate::gossip::members::Member;
use crate::hash::{digest, SipHasher, DOMAIN_BUILD, DOMAIN_SUBSTITUTE};
use crate::node::Node;
use crate::schema::addr::PeerAddr;
use crate::schema::message::{MemberState, UnitState};
use heapless::Vec;

/// A peer a build may fetch from: its cache's address and the node key its narinfos are signed
/// with, as its certificate says. Serialized in `myco-priv`'s build request
/// (`crate::privileged`), which rebuilds the URL and key name from these fields alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Substitute {
    pub id: u64,
    /// The peer's gossip address with its cache's port.
    pub cache: PeerAddr,
    pub key: [u8; 32],
}

/// The peers a build asks, best first.
pub type Substitutes = Vec<Substitute, SUBSTITUTES_MAX>;

/// A peer that offers the build, with what ranks it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub peer: Substitute,
    pub same_zone: bool,
    /// Its status lists a build in progress.
    pub building: bool,
}

/// The build key of the version whose GC root is named `root` ([`super::root_name`]).
pub fn build_key(root: &str) -> u64 {
    digest(DOMAIN_BUILD, root.as_bytes())
}

/// The build key of a file in the GC root directory, if its name is a root as
/// [`super::root_name`] makes them for a system (`<name>-<12 hex digits>-<system>`); other files,
/// and roots that name no system (made for `Any`, or before roots named one), offer nothing.
pub fn offer_key(file: &str) -> Option<u64> {
    let (bare, _) = super::build::root_system(file)?;
    let (name, _) = bare.rsplit_once('-')?;
    let root = !name.is_empty() && super::is_root_of(file, name);
    root.then(|| build_key(file))
}

/// The peers of `node` to substitute the version of build key `key` from, best first.
pub fn substitutes(node: &Node, key: u64) -> Substitutes {
    let own = node.meta();
    let candidates = node.members().iter().filter_map(|m| {
        let status = node.status_of(m.id)?;
        // The key names the system the output is for, so any peer that offers it serves this
        // box's output, whatever its own architecture (a builder for boards of another).
        let usable = m.state == MemberState::Alive && status.offer.offers(key);
        if !usable {
            return None;
        }
        Some(Candidate {
            peer: Substitute {
                id: m.id,
                cache: cache_addr(m, status.offer.cache_port),
                key: *node.certified_key(m.id)?,
            },
            same_zone: m.meta.zone == own.zone,
            building: status.units.iter().any(|(_, s)| building(*s)),
        })
    });
    choose(node.id(), key, candidates)
}

/// The best `SUBSTITUTES_MAX` of `candidates` for box `own` and build key `key`, best first:
/// same zone, then not building, then by the spreading hash.
pub fn choose(own: u64, key: u64, candidates: impl Iterator<Item = Candidate>) -> Substitutes {
    let rank = |c: &Candidate| (!c.same_zone, c.building, spread(own, key, c.peer.id));
    let mut best: Vec<Candidate, SUBSTITUTES_MAX> = Vec::new();
    for c in candidates {
        if best.iter().any(|b| b.peer.id == c.peer.id) {
            continue;
        }
        let at = best.iter().position(|b| rank(&c) < rank(b));
        match at {
            Some(at) => {
                if best.is_full() {
                    best.pop();
                }
                best.insert(at, c).expect("room made above");
            }
            None => {
                let _ = best.push(c);
            }
        }
    }
    assert!(best.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
    best.iter().map(|c| c.peer).collect()
}

/// The spreading hash: every box orders the same peers differently for the same build.
fn spread(own: u64, key: u64, peer: u64) -> u64 {
    let mut h = SipHasher::new(DOMAIN_SUBSTITUTE);
    h.write_u64(own);
    h.write_u64(key);
    h.write_u64(peer);
    h.finish()
}

fn building(s: UnitState) -> bool {
    matches!(s, UnitState::Building | UnitState::FirstBuilding)
}

fn cache_addr(m: &Member, port: u16) -> PeerAddr {
    PeerAddr {
        ip: m.addr.ip,
        port,
    }
}

/// Where a finished build's output came from, as its log says ([`LogScan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// Nix built at least one derivation here.
    Built,
    /// Nix built nothing and copied paths from an `http://` binary cache: a peer's (the public
    /// cache and other configured ones are `https://`).
    FromPeers,
    /// Neither: the output was already in the store, or came from another cache.
    Neither,
}

/// Reads a build's log (`nix build -L`'s standard error) in pieces of any size, without keeping
/// it: Nix 2.8 starts a line `building '<drv>'...` for each derivation it builds and `copying path
/// '<path>' from '<cache>'...` for each path it substitutes, while the builders' own lines carry a
/// `<name>> ` prefix under `-L`, so a builder cannot print a line that counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogScan {
    /// Bytes into the current line (counted up to the longest prefix).
    col: usize,
    /// The current line still matches `building '` / `copying path '` so far.
    not_build: bool,
    not_copy: bool,
    /// The current line is a copy: how much of `' from 'http://` it has matched.
    copy_line: bool,
    matched: usize,
    built: bool,
    fetched: bool,
}

const BUILD_LINE: &[u8] = b"building '";
const COPY_LINE: &[u8] = b"copying path '";
const FROM_HTTP: &[u8] = b"' from 'http://";

/// Bytes of `FROM_HTTP` matched after `b`, given `matched` before it (Knuth-Morris-Pratt): the
/// only prefix of the needle that is also a suffix of a longer prefix is `'`, which ends the
/// prefix `' from '`, so after a mismatch there the match goes on from one byte.
fn next_match(mut matched: usize, b: u8) -> usize {
    loop {
        if FROM_HTTP[matched] == b {
            return matched + 1;
        }
        if matched == 0 {
            return 0;
        }
        matched = usize::from(matched > 1 && FROM_HTTP[matched - 1] == b'\'');
    }
}

impl LogScan {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        if b == b'\n' {
            *self = LogScan {
                built: self.built,
                fetched: self.fetched,
                ..LogScan::default()
            };
            return;
        }
        let col = self.col;
        self.not_build |= BUILD_LINE.get(col).is_some_and(|&c| c != b);
        self.not_copy |= COPY_LINE.get(col).is_some_and(|&c| c != b);
        self.built |= !self.not_build && col + 1 == BUILD_LINE.len();
        self.copy_line |= !self.not_copy && col + 1 == COPY_LINE.len();
        self.col = col.saturating_add(1);
        if self.copy_line && col >= COPY_LINE.len() {
            self.matched = next_match(self.matched, b);
            if self.matched == FROM_HTTP.len() {
                self.fetched = true;
                self.matched = 0;
            }
        }
    }

    /// What the log read so far says.
    pub fn provenance(&self) -> Provenance {
        if self.built {
            Provenance::Built
        } else if self.fetched {
            Provenance::FromPeers
        } else {
            Provenance::Neither
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn candidate(id: u64, same_zone: bool, building: bool) -> Candidate {
        Candidate {
            peer: Substitute {
                id,
                cache: PeerAddr::v4([10, 0, 0, id as u8], 7947),
                key: [id as u8; 32],
            },
            same_zone,
            building,
        }
    }

    fn ids(s: &Substitutes) -> std::vec::Vec<u64> {
        s.iter().map(|p| p.id).collect()
    }

    /// The same zone comes before another, and an idle peer before a building one, whatever the
    /// hash says; at most three are chosen.
    #[test]
    fn same_zone_and_idle_first() {
        let all = [
            candidate(1, false, false),
            candidate(2, true, true),
            candidate(3, true, false),
            candidate(4, false, true),
            candidate(5, true, false),
        ];
        for own in 0..50 {
            let chosen = choose(own, 9, all.iter().copied());
            let got = ids(&chosen);
            assert_eq!(got.len(), SUBSTITUTES_MAX);
            let mut first_two = got[..2].to_vec();
            first_two.sort_unstable();
            assert_eq!(first_two, [3, 5], "box {own}: {got:?}");
            assert_eq!(got[2], 2, "box {own}: {got:?}");
        }
    }

    /// Ten boxes that want the same build from ten equal peers do not all ask the same one
    /// first: the first choices spread over several peers.
    #[test]
    fn boxes_spread_over_equal_peers() {
        let peers: std::vec::Vec<Candidate> =
            (100..110).map(|id| candidate(id, true, false)).collect();
        let firsts: std::collections::BTreeSet<u64> = (0..10)
            .map(|own| choose(own, 77, peers.iter().copied())[0].id)
            .collect();
        assert!(firsts.len() >= 4, "first choices {firsts:?}");
        // The order is a function of (box, key): the same question gets the same answer.
        let again = choose(3, 77, peers.iter().copied());
        assert_eq!(
            ids(&again),
            ids(&choose(3, 77, peers.iter().rev().copied()))
        );
    }

    fn scan(log: &[u8]) -> Provenance {
        let mut s = LogScan::default();
        s.feed(log);
        s.provenance()
    }

    /// The lines Nix 2.8 prints: a copy from a peer, a build, a copy from the public cache, and
    /// builder output that imitates them; the answer is the same however the log is cut.
    #[test]
    fn build_logs() {
        let fetched = b"copying path '/nix/store/3r57-hello' from 'http://127.0.0.1:7947'...\n";
        let built = b"building '/nix/store/mx-hello.drv'...\nhello> building 'x'\n";
        let public = b"copying path '/nix/store/3r57-hello' from 'https://cache.nixos.org'...\n";
        let fake = b"hello> copying path 'x' from 'http://y'\n";
        assert_eq!(scan(fetched), Provenance::FromPeers);
        assert_eq!(scan(built), Provenance::Built);
        assert_eq!(scan(&[&fetched[..], built].concat()), Provenance::Built);
        assert_eq!(scan(public), Provenance::Neither);
        assert_eq!(scan(fake), Provenance::Neither);
        assert_eq!(scan(b""), Provenance::Neither);
        assert_eq!(scan(b"copying path '' from 'http:/"), Provenance::Neither);
        let restart = b"copying path 'x' from ' from 'http://peer'\n";
        assert_eq!(
            scan(restart),
            Provenance::FromPeers,
            "the match restarts at the quote"
        );
        let log = [&public[..], fake, fetched].concat();
        for cut in 0..log.len() {
            let mut s = LogScan::default();
            s.feed(&log[..cut]);
            s.feed(&log[cut..]);
            assert_eq!(s.provenance(), Provenance::FromPeers, "cut at {cut}");
        }
    }

    /// No candidate, no substitute; a peer listed twice is chosen once.
    #[test]
    fn empty_and_duplicates() {
        assert!(choose(1, 2, core::iter::empty()).is_empty());
        let twice = [candidate(7, true, false), candidate(7, true, false)];
        assert_eq!(ids(&choose(1, 2, twice.into_iter())), [7]);
    }

    /// GC root names offer their key; other files offer nothing.
    #[test]
    fn offer_keys_of_root_names() {
        for root in [
            "web-0123456789ab-x86_64-linux",
            "my-web-0123456789ab-aarch64-linux",
        ] {
            assert_eq!(offer_key(root), Some(build_key(root)));
        }
        assert_ne!(
            build_key("web-0123456789ab-x86_64-linux"),
            build_key("web-0123456789ab-aarch64-linux")
        );
        for file in [
            "web-0123456789ab",
            "my-web-0123456789ab",
            "web-0123456789ab-i686-linux",
            "-0123456789ab-x86_64-linux",
            "web",
            "web-",
            "-0123456789ab",
            "web-0123456789a",
            "web-0123456789abc",
            "web-0123456789ag",
            ".web-0123456789ab.tmp",
        ] {
            assert_eq!(offer_key(file), None, "{file}");
        }
    }
}
