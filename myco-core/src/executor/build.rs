//! Builds: a placed flake service runs the program of its built store path, so before its unit is
//! written the box builds the entry's locked reference (`Command::Build`). This module keeps the
//! table of flake services on their way to a program, decides which build runs next and when a
//! failed one is retried, and parses what `nix build --json` printed.
//!
//! Builds run on a lane of their own beside the systemd commands: at most one build is in flight,
//! and at most one `systemctl` or file command, each with its own token. A build can take
//! minutes; with a single lane it would hold back the health reads of every running unit and the
//! removal of units no longer placed here. The two lanes touch different tables (a build's outcome
//! changes only this table and asks for a reconcile, which runs when the systemd lane is free), so
//! the rule that the unit table does not change while a command is in flight still holds.
//!
//! A service's unit is written only once its build succeeded for the digest of the entry now
//! placed; the record is dropped when that unit is written, when the service is no longer placed
//! here, or when a new version replaces it (a build in flight for the old version then ends
//! without effect). A failed build waits `BUILD_RETRY_FIRST_MS`, doubling per failure up to
//! `BUILD_RETRY_MAX_MS`, before the next attempt: a flake that never builds costs one build per
//! ten minutes, not a loop. The unit's `ExecStart` is `<out>/bin/<name>`: `meta.mainProgram` would
//! cost an evaluation per build, so a flake's program is named after the service, as the
//! `myco init` templates do.
//!
//! Invariants:
//! - A record's program is set exactly when its state is `Built`.
//! - A full table is a decision: a service that finds no room is not recorded and the next round
//!   tries again.

use super::{Change, Name};
use crate::config::{
    BUILDS_MAX, BUILD_RETRY_FIRST_MS, BUILD_RETRY_MAX_MS, FLAKE_REV_BYTES, NAME_BYTES_MAX,
    STORE_PATH_BYTES_MAX,
};
use crate::schema::entry::{valid_exec_path, Arch};
use crate::schema::message::UnitState;
use crate::state::store::key_hash;
use crate::time::Instant;
use heapless::{String, Vec};

/// Hex digits of the revision in a GC root's name.
pub const ROOT_REV_DIGITS: usize = 12;
/// The longest system a root names (`aarch64-linux`, [`Arch::nix_system`]).
const ROOT_SYSTEM_BYTES_MAX: usize = 13;
/// `<name>-<rev12>-<system>`: the name of a version's GC root (and out-link) in the GC root
/// directory, for the output of one system.
pub type RootName = String<{ NAME_BYTES_MAX + 1 + ROOT_REV_DIGITS + 1 + ROOT_SYSTEM_BYTES_MAX }>;
/// `<out>/bin/<name>`.
pub type Program = String<PROGRAM_BYTES_MAX>;
/// The longest [`Program`].
pub const PROGRAM_BYTES_MAX: usize = STORE_PATH_BYTES_MAX + "/bin/".len() + NAME_BYTES_MAX;

impl BuildState {
    /// How a status lists it: waiting and building are both `building`; a built service is
    /// reported by its unit, written next.
    pub fn state(self) -> Option<UnitState> {
        match self {
            BuildState::Wanted | BuildState::Building | BuildState::Waiting { .. } => {
                Some(UnitState::Building)
            }
            BuildState::Failed { .. } => Some(UnitState::BuildFailed),
            BuildState::Built => None,
        }
    }
}

/// Where a flake service is on its way to a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildState {
    /// Placed here, no build started yet.
    Wanted,
    Building,
    /// Waiting for a peer or a builder (`remote.rs`): decided again at `check_at_ms`.
    Waiting {
        check_at_ms: u64,
    },
    /// The last attempt failed; the next is due at `retry_at_ms`.
    Failed {
        retry_at_ms: u64,
    },
    /// Built: its unit is written next.
    Built,
}

#[derive(Clone, Debug)]
pub struct Build {
    pub name: Name,
    pub key: u64,
    /// The digest of the entry being built ([`super::unit_digest`]).
    pub digest: u64,
    pub state: BuildState,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Set when built.
    pub program: Program,
    /// What asking builders and waiting for peers has done so far (`remote.rs`).
    pub remote: super::remote::Asked,
}

/// The build in flight: its outcome applies only to a record still naming this digest.
#[derive(Clone, Copy, Debug)]
pub(super) struct BuildFlight {
    pub token: u64,
    pub key: u64,
    pub digest: u64,
    /// The version's build key, which the status names while it runs (`Offer::building`).
    pub build: u64,
    /// Built for a peer's request (`remote.rs`), not for a service placed here.
    pub for_peer: bool,
}

/// The flake services on their way to a program.
#[derive(Default)]
pub(super) struct Builds {
    pub table: Vec<Build, BUILDS_MAX>,
    pub in_flight: Option<BuildFlight>,
}

impl Builds {
    pub fn get(&self, name: &str) -> Option<&Build> {
        let key = key_hash(name);
        self.table.iter().find(|b| b.key == key && b.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Build> {
        let key = key_hash(name);
        self.table
            .iter_mut()
            .find(|b| b.key == key && b.name == name)
    }

    /// The program of `name` built from the entry of digest `digest`, if it is built.
    pub fn program(&self, name: &str, digest: u64) -> Option<&str> {
        let b = self.get(name).filter(|b| b.digest == digest)?;
        (b.state == BuildState::Built).then_some(b.program.as_str())
    }

    /// Service `name` is to run the entry of digest `digest`, not built yet: record it (a new
    /// version starts over). False if the table is full, which the next round retries.
    pub fn want(&mut self, name: &str, digest: u64) -> bool {
        if let Some(b) = self.get_mut(name) {
            if b.digest != digest {
                b.digest = digest;
                b.state = BuildState::Wanted;
                b.failures = 0;
                b.program.clear();
                b.remote = super::remote::Asked::default();
            }
            return true;
        }
        let build = Build {
            name: Name::try_from(name).expect("service names fit NAME_BYTES_MAX"),
            key: key_hash(name),
            digest,
            state: BuildState::Wanted,
            failures: 0,
            program: Program::new(),
            remote: super::remote::Asked::default(),
        };
        self.table.push(build).is_ok()
    }

    /// Service `name` is to run the entry of digest `digest` with `program`, already built for
    /// the version its unit runs (a version that only scales it): recorded as built, with no
    /// build. False if the table is full.
    pub fn adopt(&mut self, name: &str, digest: u64, program: &Program) -> bool {
        if !self.want(name, digest) {
            return false;
        }
        let b = self.get_mut(name).expect("just recorded");
        b.state = BuildState::Built;
        b.program.clone_from(program);
        true
    }

    /// Keeps only the records `wanted(key, name, digest)` still asks for.
    pub fn retain(&mut self, mut wanted: impl FnMut(u64, &str, u64) -> bool) {
        self.table.retain(|b| wanted(b.key, &b.name, b.digest));
    }

    /// Drops the record of `name` (its unit was written).
    pub fn forget(&mut self, name: &str) {
        let key = key_hash(name);
        self.table.retain(|b| !(b.key == key && b.name == name));
    }

    /// The record whose build is due next: waiting, or failed and past its retry.
    pub fn due(&self, now: Instant) -> Option<usize> {
        if self.in_flight.is_some() {
            return None;
        }
        self.table.iter().position(|b| match b.state {
            BuildState::Wanted => true,
            BuildState::Failed { retry_at_ms } => now.0 >= retry_at_ms,
            BuildState::Waiting { check_at_ms } => now.0 >= check_at_ms,
            BuildState::Building | BuildState::Built => false,
        })
    }

    /// The build in flight ended: `out` is the store path it printed, `None` if it failed.
    /// Returns the change to report, or `None` when the record moved on (a new version, or no
    /// longer placed here) and the outcome applies to nothing.
    pub fn done(&mut self, now: Instant, flight: BuildFlight, out: Option<&str>) -> Option<Change> {
        self.in_flight = None;
        // A record dropped and made again while the build ran is waiting for a build of its own.
        let b = self.table.iter_mut().find(|b| {
            b.key == flight.key && b.digest == flight.digest && b.state == BuildState::Building
        })?;
        let program = out.and_then(|out| program_of(out, &b.name));
        let what = match program {
            Some(p) => {
                b.program = p;
                b.state = BuildState::Built;
                b.failures = 0;
                "built"
            }
            None => {
                failed(b, now);
                "build-failed"
            }
        };
        assert_eq!(b.state == BuildState::Built, !b.program.is_empty());
        Some(Change {
            name: b.name.clone(),
            placement: false,
            what,
        })
    }
}

/// Record `b`'s attempt as failed at `now`: the next waits its backoff.
fn failed(b: &mut Build, now: Instant) {
    b.failures = b.failures.saturating_add(1);
    let retry_at_ms = now.0 + retry_delay_ms(b.failures);
    b.state = BuildState::Failed { retry_at_ms };
}

impl Builds {
    /// The builder asked for record `i` said its build of the version failed (`remote.rs`): a failed
    /// attempt, as if it had failed here. Returns the change to report.
    ///
    /// Failures in a row not yet a builder's are failed fetches (only a box that does not build
    /// asks builders, and it only fetches), of a version a peer offered, so one that builds:
    /// they are forgotten, as [`Builds::offered`] forgets a builder's, so that one failed fetch
    /// and one builder's failure, in either order, cannot hold a good version.
    pub fn failed_remotely(&mut self, i: usize, now: Instant) -> Change {
        let b = &mut self.table[i];
        if !b.remote.failed_on_builder {
            b.failures = 0;
        }
        failed(b, now);
        b.remote.failed_on_builder = true;
        Change {
            name: b.name.clone(),
            placement: false,
            what: "build-failed",
        }
    }
}

impl Builds {
    /// A peer offers record `i`'s version, which is fetched next: it builds, so the failures a
    /// builder reported are forgotten (as that builder forgets them at a success), and only
    /// failed fetches from here on count toward a rollout's hold.
    pub fn offered(&mut self, i: usize) {
        let b = &mut self.table[i];
        if core::mem::take(&mut b.remote.failed_on_builder) {
            b.failures = 0;
        }
    }
}

/// The wait before the next attempt after `failures` failures in a row.
pub fn retry_delay_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(16);
    (BUILD_RETRY_FIRST_MS << doublings).min(BUILD_RETRY_MAX_MS)
}

/// `<name>-<first 12 hex digits of rev>-<system>`: one GC root per version and system, so a new
/// version is a new root and the one before it stays until it is pruned, and the outputs of one
/// version for two systems (a builder builds for boards of another, `remote.rs`) are two roots
/// with two build keys. A root for `Any` (a box that knows no system of its own) names none:
/// it is offered to no peer ([`super::offer_key`]), as nobody could tell which output it holds.
pub fn root_name(name: &str, rev: &[u8; FLAKE_REV_BYTES], system: Arch) -> RootName {
    let mut root = RootName::new();
    let fits = "service names fit NAME_BYTES_MAX";
    root.push_str(name).expect(fits);
    root.push('-').expect(fits);
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in &rev[..ROOT_REV_DIGITS / 2] {
        for nibble in [byte >> 4, byte & 0xf] {
            root.push(char::from(DIGITS[usize::from(nibble)]))
                .expect(fits);
        }
    }
    if let Some(system) = system.nix_system() {
        root.push('-').expect(fits);
        root.push_str(system).expect(fits);
    }
    root
}

/// The system a root's name ends in, and the name without it; `None` for a name that ends in
/// none (a root of `Any`, or one made before roots named their system).
pub fn root_system(file: &str) -> Option<(&str, Arch)> {
    [Arch::X86_64, Arch::Aarch64].into_iter().find_map(|arch| {
        let system = arch.nix_system()?;
        let rest = file.strip_suffix(system)?.strip_suffix('-')?;
        Some((rest, arch))
    })
}

/// Whether `file` is a GC root of service `name` as [`root_name`] names them, for any system or
/// none. Another service's name cannot match: what follows `name-` must be exactly the
/// revision's hex digits, then a system or nothing.
pub fn is_root_of(file: &str, name: &str) -> bool {
    let bare = root_system(file).map_or(file, |(rest, _)| rest);
    bare.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rev| {
            rev.len() == ROOT_REV_DIGITS && rev.bytes().all(|c| c.is_ascii_hexdigit())
        })
}

/// `<out>/bin/<name>`, if `out` is a store path a unit can run from.
pub(super) fn program_of(out: &str, name: &str) -> Option<Program> {
    if out.len() > STORE_PATH_BYTES_MAX || !valid_exec_path(out) || out.contains(' ') {
        return None;
    }
    let mut p = Program::new();
    p.push_str(out).ok()?;
    p.push_str("/bin/").ok()?;
    p.push_str(name).ok()?;
    Some(p)
}

/// The output store path a program `<out>/bin/<name>` (as [`program_of`] made it) runs from.
pub fn out_of_program<'a>(program: &'a str, name: &str) -> Option<&'a str> {
    program.strip_suffix(name)?.strip_suffix("/bin/")
}

/// The `out` store path from what `nix build --json` printed for one installable:
/// `[{"drvPath":"/nix/store/…drv","outputs":{"out":"/nix/store/…"}}]` (Nix 2.8 has no
/// `--print-out-paths`). `None` for anything else: no output named `out`, a path with an escape,
/// more than one installable, or text that is not this shape. Never panics on any input.
pub fn parse_build_json(text: &[u8]) -> Option<&str> {
    let mut p = Parser { text, at: 0 };
    p.expect(b'[')?;
    p.expect(b'{')?;
    let mut out = None;
    loop {
        let key = p.string()?;
        p.expect(b':')?;
        if key == "outputs" {
            out = p.outputs()?;
        } else {
            p.string()?;
        }
        if !p.comma_or(b'}')? {
            break;
        }
    }
    p.expect(b']')?;
    p.skip_space();
    (p.at == text.len()).then_some(())?;
    out
}

/// A reader of the small JSON shape above: strings without escapes, objects, one array.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn skip_space(&mut self) {
        while self
            .text
            .get(self.at)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.skip_space();
        (self.text.get(self.at) == Some(&c)).then_some(())?;
        self.at += 1;
        Some(())
    }

    /// After a member: true on `,` (another follows), false on `close`.
    fn comma_or(&mut self, close: u8) -> Option<bool> {
        self.skip_space();
        let c = *self.text.get(self.at)?;
        self.at += 1;
        match c {
            b',' => Some(true),
            c if c == close => Some(false),
            _ => None,
        }
    }

    /// A string without escapes (store paths and Nix's keys have none).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let rest = &self.text[self.at..];
        let len = rest.iter().position(|&c| c == b'"')?;
        let s = &rest[..len];
        if s.contains(&b'\\') || s.iter().any(|c| c.is_ascii_control()) {
            return None;
        }
        self.at += len + 1;
        core::str::from_utf8(s).ok()
    }

    /// `{"name":"path",...}`: the path of `out`, if there is one.
    fn outputs(&mut self) -> Option<Option<&'a str>> {
        self.expect(b'{')?;
        let mut out = None;
        loop {
            let name = self.string()?;
            self.expect(b':')?;
            let path = self.string()?;
            if name == "out" {
                out = Some(path);
            }
            if !self.comma_or(b'}')? {
                return Some(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nix 2.8's answer is read; every other shape, and garbage, is no output.
    #[test]
    fn parses_what_nix_build_json_prints() {
        let nix = br#"[{"drvPath":"/nix/store/abc-web.drv","outputs":{"out":"/nix/store/xyz-web"}}]
"#;
        assert_eq!(parse_build_json(nix), Some("/nix/store/xyz-web"));
        let two =
            br#"[ {"outputs": {"bin":"/nix/store/b", "out":"/nix/store/o"}, "drvPath":"/d"} ]"#;
        assert_eq!(parse_build_json(two), Some("/nix/store/o"));
        for bad in [
            &b""[..],
            b"error: flake has no attribute",
            br#"[{"drvPath":"/d","outputs":{"bin":"/nix/store/b"}}]"#,
            br#"[{"outputs":{"out":"/nix/store/a\"b"}}]"#,
            br#"[{"outputs":{"out":"/nix/store/o"}},{"outputs":{"out":"/o2"}}]"#,
            br#"[{"outputs":{"out":"/nix/store/o"}}] trailing"#,
            br#"[{"outputs":{"out":"/nix/store/o""#,
        ] {
            assert_eq!(parse_build_json(bad), None);
        }
    }

    /// Roots are per version and name only their own service's versions; retries back off to the
    /// cap.
    #[test]
    fn roots_and_backoff() {
        let root = root_name("web", &[0xab; FLAKE_REV_BYTES], Arch::Aarch64);
        assert_eq!(root, "web-abababababab-aarch64-linux");
        assert_eq!(
            root_system(&root),
            Some(("web-abababababab", Arch::Aarch64))
        );
        let any = root_name("web", &[0xab; FLAKE_REV_BYTES], Arch::Any);
        assert_eq!(any, "web-abababababab");
        assert_eq!(root_system(&any), None);
        let x86 = root_name(
            &"w".repeat(NAME_BYTES_MAX),
            &[0xab; FLAKE_REV_BYTES],
            Arch::X86_64,
        );
        assert!(x86.ends_with("-abababababab-x86_64-linux"));
        for root in [&root, &any, &x86[..]] {
            let name = if root.starts_with("web") {
                "web"
            } else {
                &x86[..NAME_BYTES_MAX]
            };
            assert!(is_root_of(root, name), "{root}");
        }
        assert!(!is_root_of("web-api-abababababab", "web"));
        assert!(!is_root_of("web-abababababab", "we"));
        assert!(!is_root_of("web-abababababab-x86_64-linux", "we"));
        assert!(!is_root_of("web-abababababab-i686-linux", "web"));
        assert!(!is_root_of(
            "web-abababababab-abababababab-x86_64-linux",
            "web"
        ));
        assert_eq!(retry_delay_ms(1), BUILD_RETRY_FIRST_MS);
        assert_eq!(retry_delay_ms(2), 2 * BUILD_RETRY_FIRST_MS);
        assert_eq!(retry_delay_ms(40), BUILD_RETRY_MAX_MS);
    }

    /// A failed build waits out its backoff; a success sets the program; an outcome for a
    /// version replaced meanwhile changes nothing.
    #[test]
    fn build_outcomes() {
        let mut b = Builds::default();
        assert!(b.want("web", 1));
        let start = |b: &mut Builds, now| {
            let i = b.due(Instant(now)).expect("due");
            b.table[i].state = BuildState::Building;
            let flight = BuildFlight {
                token: 1,
                key: b.table[i].key,
                digest: b.table[i].digest,
                build: 9,
                for_peer: false,
            };
            b.in_flight = Some(flight);
            flight
        };
        let f = start(&mut b, 0);
        assert_eq!(b.done(Instant(10), f, None).unwrap().what, "build-failed");
        assert_eq!(b.due(Instant(10 + BUILD_RETRY_FIRST_MS - 1)), None);
        let f = start(&mut b, 10 + BUILD_RETRY_FIRST_MS);
        assert_eq!(
            b.done(Instant(0), f, Some("/nix/store/x-web"))
                .unwrap()
                .what,
            "built"
        );
        assert_eq!(b.program("web", 1), Some("/nix/store/x-web/bin/web"));
        assert_eq!(b.program("web", 2), None);
        assert!(b.want("web", 2));
        let f = start(&mut b, 0);
        assert!(b.want("web", 3));
        assert!(b.done(Instant(0), f, Some("/nix/store/y-web")).is_none());
        assert_eq!(b.get("web").unwrap().state, BuildState::Wanted);
    }
}
