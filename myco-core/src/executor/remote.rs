//! Remote builders (`docs/nix.md`, "Remote builders"): what a box does with a flake version it
//! is to run, decided from gossip facts each time the version's build record comes due.
//!
//! A version is looked at under its build key for this box's own system (`BuildMode::system_of`:
//! the key names the system, `substitute.rs`), so whatever a peer's own architecture, its offer
//! or its build of that key is this box's output. In order: fetch it from peers whose caches
//! offer it (`substitute.rs`); else wait while a live peer is building that very key (its
//! status names it in `Offer::building`), up to `BUILD_WAIT_MAX_MS` for a box that may build
//! itself; else build here if this box builds (`BuildMode::local`); else ask a builder (a live
//! member whose offer says it builds for this box's system, whatever its own, with a session:
//! its cache is what the result is fetched from, under its certified key). The builder is chosen
//! as substitutes are: the same zone, then idle, then by a hash of (this box, build key,
//! builder), so requesters spread over equal builders.
//! The request is sent again every `REMOTE_CHECK_MS` while unanswered; a builder that neither
//! builds nor offers the version for `REQUEST_ANSWER_MS`, or is not done within
//! `REMOTE_BUILD_MAX_MS`, or that died, is left for the next one (at most `BUILDERS_TRIED_MAX`
//! remembered, then all are tried again). Silence is never a failed build, whatever the
//! builder was seen doing: under loss a good version's builder may not be heard in time, and
//! counting that held good rollouts. A failure is counted only when the builder asked says so
//! (`Message::BuildFailed`, its answer to a request it refuses because its own last build of
//! that version failed): then it is a failed build here, with its backoff, and a rollout's
//! failure, as a build that failed here. Once a peer offers the version, the failures builders
//! reported are forgotten (it builds), as the builder forgets its own at a success; and a
//! builder's failure forgets the failed fetches before it (`Builds::failed_remotely`), so the
//! failures in a row that hold a rollout are all fetches or all builders'.
//! A box that does not build never builds: its build command carries `local: false`, and the
//! host runs Nix with `--max-jobs 0`, so Nix may only substitute.
//!
//! The builder's side: a request is accepted only for an entry the builder holds with the same
//! digest and the build key of that entry for the system the request names, by a builder whose
//! Nix builds that system (`extra-platforms` included; the build runs Nix for it); at most
//! `PEER_BUILDS_MAX` wait at once (the rest are refused and counted: a flood of requests cannot
//! queue unbounded builds), and
//! they run on the build lane after the builds of services placed here. A request for a
//! version whose build failed here, within its backoff, is refused and answered so.

use super::build::{retry_delay_ms, root_name};
use super::substitute::{self, build_key, Candidate, Substitute, Substitutes};
use super::unit_digest;
use crate::config::{
    BUILDERS_TRIED_MAX, BUILD_WAIT_MAX_MS, PEER_BUILDS_MAX, PEER_FAILURES_MAX, REMOTE_BUILD_MAX_MS,
    REMOTE_CHECK_MS, REQUEST_ANSWER_MS,
};
use crate::node::Node;
use crate::schema::entry::{Arch, Source};
use crate::schema::message::{system_bit, BuildRequest, Digest, MemberState};
use crate::state::packed::EntryBytes;
use heapless::Vec;

/// How this box builds: set once by the host from its flags and `nix show-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildMode {
    /// It may build here (not `--build remote`, and Nix builds this box's own system).
    pub local: bool,
    /// The systems it builds for peers (`--builder`), `system_bit`s; 0: none. Every system its
    /// Nix builds (`system` and `extra-platforms`), whatever its certificate's arch.
    pub builds: u8,
    /// The system this box's own outputs are for: its certificate's arch, or Nix's `system` if
    /// the certificate says `any`. `Any`: this box's certificate arch ([`BuildMode::system_of`]).
    pub system: Arch,
}

impl Default for BuildMode {
    fn default() -> Self {
        BuildMode {
            local: true,
            builds: 0,
            system: Arch::Any,
        }
    }
}

/// What the operator says of builds on this box: `--build local|remote`, `--builder` and
/// `--allow-root-builds`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildFlags {
    /// `--build local` (the default): Nix may build here.
    pub local: bool,
    /// `--builder`: build for peers that ask.
    pub builder: bool,
    /// `--allow-root-builds`: build even where Nix runs builders as root outside a sandbox.
    pub allow_root_builds: bool,
}

impl BuildFlags {
    /// Whether this box may run builders at all with a Nix that isolates them as `isolation`
    /// says: where Nix would run them as root, only if the operator allowed it.
    pub fn may_build(self, isolation: Isolation) -> bool {
        self.allow_root_builds || !isolation.builders_run_as_root()
    }
}

impl BuildMode {
    /// How a box builds, from its flags, its certificate's arch (`own`) and what `nix
    /// show-config` printed (`shown`; empty if it could not run). The box's own outputs are for
    /// `own`, or Nix's `system` if that is `Any`; a box whose own system is not among Nix's
    /// builds nothing itself. A builder builds for every system its Nix builds, whatever its
    /// certificate says (docs/nix.md, "Which systems"). Where Nix would run builders as root
    /// with the whole box in view ([`Isolation::builders_run_as_root`], which an output that
    /// names neither setting also is) and the operator did not allow it, the box builds nothing,
    /// for itself or for peers: it only fetches, and asks builders (docs/nix.md, "Builders as
    /// root").
    pub fn decide(flags: BuildFlags, own: Arch, shown: &[u8]) -> BuildMode {
        let systems = parse_systems(shown);
        let system = match own {
            Arch::Any => parse_native_system(shown),
            own => own,
        };
        let own_bit = system_bit(system);
        let runs_own = systems == 0 || own_bit == 0 || systems & own_bit != 0;
        let may_build = flags.may_build(Isolation::parse(shown));
        BuildMode {
            local: flags.local && runs_own && may_build,
            builds: if flags.builder && may_build {
                systems
            } else {
                0
            },
            system,
        }
    }

    /// The system `node`'s own builds are for: the one the host set, else its certificate's.
    pub fn system_of(self, node: &Node) -> Arch {
        match self.system {
            Arch::Any => node.meta().arch,
            system => system,
        }
    }
}

/// A build record's dealings with builders and building peers.
#[derive(Clone, Debug, Default)]
pub struct Asked {
    /// The builder asked, and when it was first asked.
    pub builder: Option<(u64, u64)>,
    /// Builders given up on, oldest first.
    pub tried: Vec<u64, BUILDERS_TRIED_MAX>,
    /// When this box began waiting for a peer building the same version (0: not waiting).
    pub waiting_since_ms: u64,
    /// When the builder asked was last seen building the version (0: not seen).
    pub seen_building_ms: u64,
    /// The builder asked answered that its build of the version failed (`Message::BuildFailed`),
    /// not yet counted.
    pub refused_failed: bool,
    /// The failures in a row counted so far include one a builder reported.
    pub failed_on_builder: bool,
}

/// What to do with a version now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run the build: with substitutes, a fetch; without, a build here (only if `local`).
    Run(Substitutes),
    /// Check again later: a peer builds it, or a builder was asked (`Some`: send it this).
    Wait(Option<u64>),
    /// The builder asked said its build of the version failed: a failed build, with its backoff.
    Failed,
}

/// The facts `decide` reads about one version.
pub struct Version<'a> {
    /// Its build key, for this box's system.
    pub key: u64,
    pub now_ms: u64,
    pub asked: &'a mut Asked,
}

/// What `node` does with the version of build key `v.key` now; updates `v.asked`.
pub fn decide(node: &Node, mode: BuildMode, v: Version<'_>) -> Decision {
    let Version { key, now_ms, asked } = v;
    let offered = substitute::substitutes(node, key);
    if !offered.is_empty() {
        return Decision::Run(offered);
    }
    if let Some((builder, since)) = asked.builder {
        if core::mem::take(&mut asked.refused_failed) {
            // The builder's build failed, as it would here: a version that fails to build fails
            // on every box. Given up, so after this box's backoff the other builders are asked
            // first (this one refuses the version during a backoff of its own).
            give_up(asked, builder);
            return Decision::Failed;
        }
        if peer_building(node, builder, key) {
            asked.seen_building_ms = now_ms;
        }
        // The builder has `REQUEST_ANSWER_MS` from the request, or from when it was last seen
        // building the version, to offer it (its cache lists a new root a moment after the
        // build), and `REMOTE_BUILD_MAX_MS` in all.
        let last = since.max(asked.seen_building_ms);
        let live = candidates(node, mode).any(|c| c.peer.id == builder);
        let in_time = now_ms < last.saturating_add(REQUEST_ANSWER_MS)
            && now_ms < since.saturating_add(REMOTE_BUILD_MAX_MS);
        if live && in_time {
            return Decision::Wait(Some(builder));
        }
        // Silent, slow, or dead: not a failure, even if it was seen building (its offer may be
        // what was lost). A builder whose build failed says so when asked.
        give_up(asked, builder);
    }
    let waiting = asked.waiting_since_ms;
    let patient = !mode.local || waiting == 0 || now_ms < waiting + BUILD_WAIT_MAX_MS;
    if patient && someone_building(node, key) {
        if waiting == 0 {
            asked.waiting_since_ms = now_ms.max(1);
        }
        return Decision::Wait(None);
    }
    if mode.local {
        return Decision::Run(Substitutes::new());
    }
    let tried = &asked.tried;
    let fresh = candidates(node, mode).filter(|c| !tried.contains(&c.peer.id));
    match substitute::choose(node.id(), key, fresh).first() {
        Some(b) => {
            asked.builder = Some((b.id, now_ms));
            Decision::Wait(Some(b.id))
        }
        None => {
            // Every builder was tried: they may have come back, or built meanwhile. Silence is
            // not a failed build: under loss or a partition a builder of a good version may not
            // answer in time, and counting it failed would hold a good rollout. A builder whose
            // build of this version failed answers so (`Message::BuildFailed`), which counts.
            asked.tried.clear();
            Decision::Wait(None)
        }
    }
}

/// When a waiting record is decided again.
pub fn check_at(now_ms: u64) -> u64 {
    now_ms + REMOTE_CHECK_MS
}

fn give_up(asked: &mut Asked, builder: u64) {
    asked.builder = None;
    asked.seen_building_ms = 0;
    asked.refused_failed = false;
    if asked.tried.is_full() {
        asked.tried.remove(0);
    }
    asked.tried.push(builder).expect("room made above");
}

/// Live builders for this box's system that it has a session with, as substitute candidates:
/// of any architecture, as long as their Nix builds this one (`extra-platforms`).
fn candidates(node: &Node, mode: BuildMode) -> impl Iterator<Item = Candidate> + '_ {
    let own = node.meta();
    let system = mode.system_of(node);
    node.members().iter().filter_map(move |m| {
        let status = node.status_of(m.id)?;
        let usable = m.state == MemberState::Alive && status.offer.builds_for(system);
        if !usable {
            return None;
        }
        Some(Candidate {
            peer: Substitute {
                id: m.id,
                cache: crate::schema::addr::PeerAddr {
                    ip: m.addr.ip,
                    port: status.offer.cache_port,
                },
                key: *node.certified_key(m.id)?,
            },
            same_zone: m.meta.zone == own.zone,
            building: status.offer.building != Digest(0),
        })
    })
}

fn peer_building(node: &Node, peer: u64, key: u64) -> bool {
    node.status_of(peer)
        .is_some_and(|s| s.offer.building == Digest(key))
}

/// A live member is building the version of `key`: the key names this box's system, so whatever
/// the member's own architecture, what it builds is this box's output.
fn someone_building(node: &Node, key: u64) -> bool {
    node.members()
        .iter()
        .any(|m| m.state == MemberState::Alive && peer_building(node, m.id, key))
}

/// The request for the version of `entry` (its digest, and the build key of its output for
/// `system`), from a box whose own builds are for `system`.
pub fn request(entry: &EntryBytes, system: Arch) -> Option<BuildRequest> {
    let body = entry.decode().body;
    let Source::Flake { rev, .. } = body.spec?.source else {
        return None;
    };
    Some(BuildRequest {
        service: Digest(crate::state::store::key_hash(body.name)),
        digest: Digest(unit_digest(entry)),
        build: Digest(build_key(&root_name(body.name, &rev, system))),
        system,
    })
}

/// Why a builder did not take a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// This box does not build for that system (or the request names none).
    NotBuilder,
    /// No entry here with that key, digest and build key, or not a flake.
    Unknown,
    /// `PEER_BUILDS_MAX` requests wait already.
    Full,
    /// This box's last build of that version failed and its backoff has not run out.
    Failed,
}

/// A request accepted, waiting for or on the build lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerBuild {
    pub service: u64,
    pub digest: u64,
    /// The build key: of the version's output for `system`.
    pub build: u64,
    /// The system the requester's output is for: what Nix builds for.
    pub system: Arch,
    pub running: bool,
}

/// A version this builder failed to build for peers: refused until `retry_at_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerFailure {
    pub build: u64,
    /// Failed builds in a row.
    pub failures: u32,
    pub retry_at_ms: u64,
}

/// The requests this builder accepted, and the versions it failed to build for them.
#[derive(Default)]
pub struct PeerBuilds {
    pub table: Vec<PeerBuild, PEER_BUILDS_MAX>,
    /// Versions built for peers, and when, until the offer lists them or `REQUEST_ANSWER_MS`
    /// passed (the time a requester gives the builder to offer): the cache lists a new root a
    /// moment after the build, and a request meanwhile would build the version again. Oldest
    /// first; a full table forgets the oldest.
    pub built: Vec<(u64, u64), PEER_BUILDS_MAX>,
    /// Oldest first; a full table forgets the oldest failure (it is then built once more).
    pub failed: Vec<PeerFailure, PEER_FAILURES_MAX>,
}

impl PeerBuilds {
    /// Takes `r` at `now_ms` if this box builds for its system (a request for `Any` names no
    /// output: refused), holds that very version and build key for that system, did
    /// not fail to build it within its backoff, and has room; a request already taken, whose
    /// result this box already offers, or that it built for peers less than
    /// `REQUEST_ANSWER_MS` ago (its cache lists it a moment later), is accepted again and
    /// changes nothing.
    pub fn accept(
        &mut self,
        node: &Node,
        (mode, now_ms): (BuildMode, u64),
        r: &BuildRequest,
    ) -> Result<(), Refused> {
        if mode.builds & system_bit(r.system) == 0 {
            return Err(Refused::NotBuilder);
        }
        let entry = node.store().get(r.service.0).ok_or(Refused::Unknown)?;
        if request(&entry, r.system).as_ref() != Some(r) {
            return Err(Refused::Unknown);
        }
        let same =
            |p: &PeerBuild| (p.service, p.digest, p.build) == (r.service.0, r.digest.0, r.build.0);
        let offered = node.own_status().offer.offers(r.build.0);
        self.built
            .retain(|&(k, at)| !offered_or_old(k, at, (r.build.0, offered), now_ms));
        let just_built = self.built.iter().any(|&(k, _)| k == r.build.0);
        if self.table.iter().any(same) || offered || just_built {
            return Ok(());
        }
        if self.backing_off(r.build.0, now_ms) {
            return Err(Refused::Failed);
        }
        let build = PeerBuild {
            service: r.service.0,
            digest: r.digest.0,
            build: r.build.0,
            system: r.system,
            running: false,
        };
        self.table.push(build).map_err(|_| Refused::Full)
    }

    /// The next accepted request to build, if none runs.
    pub fn next(&self) -> Option<usize> {
        self.table.iter().position(|p| !p.running)
    }

    /// The build of `service`'s entry of digest `digest` for peers, build key `build`, ended
    /// (either way): the requester fetches the result or asks elsewhere.
    pub fn done(&mut self, service: u64, digest: u64, build: u64) {
        self.table
            .retain(|p| (p.service, p.digest, p.build) != (service, digest, build));
    }

    /// The build of version `build` for peers ended at `now_ms`: a failure is refused for its
    /// backoff (doubling, as a build here), so requesters that keep asking for a version that
    /// never builds do not make this box build it for every request; a success forgets it.
    pub fn ended(&mut self, build: u64, ok: bool, now_ms: u64) {
        let at = self.failed.iter().position(|f| f.build == build);
        let before = at.map(|i| self.failed.remove(i));
        if ok {
            self.built.retain(|&(k, _)| k != build);
            if self.built.is_full() {
                self.built.remove(0);
            }
            self.built.push((build, now_ms)).expect("room made above");
            return;
        }
        let failures = before.map_or(0, |f| f.failures).saturating_add(1);
        if self.failed.is_full() {
            self.failed.remove(0);
        }
        let failure = PeerFailure {
            build,
            failures,
            retry_at_ms: now_ms.saturating_add(retry_delay_ms(failures)),
        };
        self.failed.push(failure).expect("room made above");
    }

    /// Whether this box's last build of `build` for peers failed and its backoff runs at `now_ms`.
    pub fn backing_off(&self, build: u64, now_ms: u64) -> bool {
        let failed = self.failed.iter().find(|f| f.build == build);
        failed.is_some_and(|f| now_ms < f.retry_at_ms)
    }
}

/// Whether a version built for peers at `at_ms` (build key `key`) no longer needs guarding at
/// `now_ms`: the offer lists it (`asked`: the key asked for, and whether it is offered), or the
/// requester's bound for the offer ran out.
fn offered_or_old(key: u64, at_ms: u64, (asked, offered): (u64, bool), now_ms: u64) -> bool {
    (key == asked && offered) || now_ms >= at_ms.saturating_add(REQUEST_ANSWER_MS)
}

/// The systems a Nix builds for, as `system_bit`s, from what `nix show-config` prints: the
/// words of its `system = ...` and `extra-platforms = ...` lines that are `x86_64-linux` or
/// `aarch64-linux` (others, such as `i686-linux`, no box of a fleet runs). Anything else is
/// ignored, so a garbled output builds for nothing rather than for a wrong system.
pub fn parse_systems(text: &[u8]) -> u8 {
    let mut bits = 0;
    for_config_words(text, |_, system| bits |= system_bit(system));
    bits
}

/// Nix's own system (the `system = ...` line of `nix show-config`), `Any` if it names none of
/// the fleet's, as [`parse_systems`] reads it.
pub fn parse_native_system(text: &[u8]) -> Arch {
    let mut native = Arch::Any;
    for_config_words(text, |native_line, system| {
        if native_line {
            native = system;
        }
    });
    native
}

/// Calls `f(is the system line, system)` for each fleet system on the `system` and
/// `extra-platforms` lines of `text`.
fn for_config_words(text: &[u8], mut f: impl FnMut(bool, Arch)) {
    for_config_lines(text, |key, words| {
        if key != b"system" && key != b"extra-platforms" {
            return;
        }
        for word in words.split(|&b| b == b' ' || b == b'\t') {
            let system = match trim(word) {
                b"x86_64-linux" => Arch::X86_64,
                b"aarch64-linux" => Arch::Aarch64,
                _ => continue,
            };
            f(key == b"system", system);
        }
    });
}

/// Calls `f(key, value)`, both trimmed, for each `key = value` line of `text`.
fn for_config_lines(text: &[u8], mut f: impl FnMut(&[u8], &[u8])) {
    for line in text.split(|&b| b == b'\n') {
        let Some(at) = line.iter().position(|&b| b == b'=') else {
            continue;
        };
        f(trim(&line[..at]), trim(&line[at + 1..]));
    }
}

/// How Nix on a box keeps the builders it runs from the box, as `nix show-config` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    /// `sandbox = true` (or `relaxed`): a builder runs in namespaces that hold only its inputs.
    pub sandbox: bool,
    /// `build-users-group` names a group: a builder runs as one of its unprivileged users.
    pub build_users: bool,
}

impl Isolation {
    /// Reads the `sandbox` and `build-users-group` lines of `nix show-config`'s output; a line
    /// missing or garbled reads as the setting off, so an output that cannot be read (Nix did
    /// not run, or printed something else) is the unisolated case, never the isolated one.
    pub fn parse(text: &[u8]) -> Isolation {
        let mut isolation = Isolation::default();
        for_config_lines(text, |key, value| match key {
            b"sandbox" => isolation.sandbox = matches!(value, b"true" | b"relaxed"),
            b"build-users-group" => isolation.build_users = !value.is_empty(),
            _ => {}
        });
        isolation
    }

    /// Nix runs a builder as root with the whole filesystem in view: neither a sandbox nor
    /// build users. A flake built there could write `/etc` or read the node key.
    pub fn builders_run_as_root(self) -> bool {
        !self.sandbox && !self.build_users
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nix 2.8's lines on an x86_64 box, an aarch64 box that emulates x86_64, and lines that
    /// only look alike.
    #[test]
    fn systems_from_show_config() {
        let x86 = b"extra-platforms = i686-linux x86_64-v1-linux x86_64-v2-linux\n\
fallback = false\nsystem = x86_64-linux\nsystem-features = benchmark big-parallel kvm\n";
        assert_eq!(parse_systems(x86), system_bit(Arch::X86_64));
        assert_eq!(parse_native_system(x86), Arch::X86_64);
        let arm = b"system = aarch64-linux\nextra-platforms = x86_64-linux\n";
        assert_eq!(parse_systems(arm), 3);
        assert_eq!(parse_native_system(arm), Arch::Aarch64);
        let builder = b"extra-platforms = aarch64-linux i686-linux\nsystem = x86_64-linux\n";
        assert_eq!(parse_systems(builder), 3);
        assert_eq!(parse_native_system(builder), Arch::X86_64);
        for nothing in [
            &b""[..],
            b"system-features = x86_64-linux\n",
            b"system x86_64-linux\n",
            b"system = x86_64-linuxx\n",
            b"systems = aarch64-linux\n",
        ] {
            assert_eq!(parse_systems(nothing), 0);
            assert_eq!(parse_native_system(nothing), Arch::Any);
        }
        assert_eq!(parse_systems(b" system\t=  aarch64-linux\r\n"), 2);
    }

    /// Debian's `nix-bin` as the tests configure it, Nix's multi-user install, a sandbox
    /// without build users, and outputs that do not say.
    #[test]
    fn isolation_from_show_config() {
        let root =
            Isolation::parse(b"sandbox = false\nbuild-users-group = \nsystem = x86_64-linux\n");
        assert!(root.builders_run_as_root());
        let multi = Isolation::parse(b"build-users-group = nixbld\nsandbox = true\n");
        assert_eq!(
            multi,
            Isolation {
                sandbox: true,
                build_users: true
            }
        );
        let sandboxed = Isolation::parse(b"build-users-group =\r\nsandbox = relaxed\r\n");
        assert!(sandboxed.sandbox && !sandboxed.build_users);
        assert!(!sandboxed.builders_run_as_root());
        let users = Isolation::parse(b"sandbox = false\nbuild-users-group = nixbld\n");
        assert!(!users.builders_run_as_root());
        for unsaid in [
            &b""[..],
            b"[]\n",
            b"sandbox-fallback = true\n",
            b"sandbox true\nbuild-users-group\n",
            b"sandbox = truee\nsandboxes = true\nbuild-users-groups = nixbld\n",
        ] {
            assert!(
                Isolation::parse(unsaid).builders_run_as_root(),
                "{unsaid:?}"
            );
        }
    }

    /// Where Nix runs builders as root, a box builds nothing, for itself or for peers, unless
    /// the operator allows it; elsewhere its flags decide.
    #[test]
    fn builders_as_root_build_only_where_allowed() {
        let root = b"sandbox = false\nbuild-users-group =\nsystem = x86_64-linux\n\
extra-platforms = aarch64-linux\n";
        let isolated = b"sandbox = true\nbuild-users-group = nixbld\nsystem = x86_64-linux\n\
extra-platforms = aarch64-linux\n";
        let flags = |allow_root_builds| BuildFlags {
            local: true,
            builder: true,
            allow_root_builds,
        };
        let refused = BuildMode::decide(flags(false), Arch::X86_64, root);
        assert_eq!((refused.local, refused.builds), (false, 0));
        let allowed = BuildMode::decide(flags(true), Arch::X86_64, root);
        assert_eq!((allowed.local, allowed.builds), (true, 3));
        let isolated_mode = BuildMode::decide(flags(false), Arch::Any, isolated);
        assert_eq!(
            isolated_mode,
            BuildMode {
                local: true,
                builds: 3,
                system: Arch::X86_64
            }
        );
        let unanswered = BuildMode::decide(flags(false), Arch::Aarch64, b"");
        assert_eq!((unanswered.local, unanswered.builds), (false, 0));
        let remote = BuildFlags {
            local: false,
            builder: false,
            allow_root_builds: true,
        };
        let remote_mode = BuildMode::decide(remote, Arch::X86_64, isolated);
        assert_eq!((remote_mode.local, remote_mode.builds), (false, 0));
        // A box whose own system its Nix does not build builds nothing itself, as before.
        let arm_box = BuildMode::decide(
            flags(false),
            Arch::Aarch64,
            b"sandbox = true\nsystem = x86_64-linux\n",
        );
        assert_eq!((arm_box.local, arm_box.builds), (false, 1));
    }
}
