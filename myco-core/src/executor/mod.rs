//! The executor: runs this box's share of the desired state as systemd units, as a sans-IO
//! machine. The host asks [`Executor::poll_command`] for the next command, runs it (writes or
//! deletes a unit file, spawns `systemctl`), and reports its outcome through
//! [`Executor::handle_command_done`]; this module decides everything else: what to change
//! (`reconcile::reconcile` over `Node::placed_here`), in which order, when to retry, when to read
//! health, and how each unit does. The simulator drives the same machine against a simulated
//! systemd, so every rule here is checked there.
//!
//! One round of changes runs in this order: write the unit files of new and changed services,
//! delete the files of units systemd has disabled, `disable --now` the units no longer placed,
//! `daemon-reload` after any file changed unless an `enable --now` is due (it reloads systemd
//! itself), `enable --now` the new, `restart` the changed; with nothing pending, `show` reads
//! health every `HEALTH_INTERVAL_MS`, a sweep of more than `UNITS_PER_COMMAND` units taking
//! several commands back to back.
//!
//! A new unit is started without any reload when systemd allows it: a reload takes 0.2 to 0.5 s
//! on a loaded box, most of a deploy's or a replacement's time on the box (docs/benchmarks.md).
//! systemd loads a unit it does not hold from its file when asked for it, so only a unit it holds
//! from an older file needs the reload. Which one it is, systemd alone knows: the executor asks
//! (`show` of `LoadState` and `NeedDaemonReload`, [`Verb::ShowLoad`]) and, from the answer,
//! decides: `enable --no-reload --now` when every unit to enable is loaded from its current file,
//! else `enable --now`. When another file change awaits a reload anyway (a new version's, a
//! deletion's), it is `enable --now` without asking. A failed `show` counts as "needs a reload",
//! never as a reason to wait.
//!
//! Invariants:
//! - At most one command is in flight; its outcome carries the command's token, and an outcome
//!   with any other token (a stale one) changes nothing.
//! - A `systemctl` in flight for `SYSTEMCTL_TIMEOUT_MS` is cancelled ([`Executor::poll_cancel`]):
//!   a hung systemd cannot stop the executor for good.
//! - The unit table, rows and todos, does not change while a command is in flight, so an outcome
//!   applies to the units the command named (`systemctl` commands name the first `count` units
//!   that match). Health checks end while a command runs: a restart their failures owe becomes a
//!   todo only between commands (`health.rs`, `owe_restarts`).
//! - A unit file is deleted only after `systemctl disable --now` of that unit succeeded: a failed
//!   disable keeps the unit and is retried after `COMMAND_RETRY_MS`, like every failed command.
//! - A unit `show` reports disabled while nothing is left to do for it (found at boot after a
//!   crash between a disable and its deletion) is enabled again.
//! - A full table is a decision: a new unit is not planned while the table is full (the next
//!   round tries again), and the oldest change gives way in the changes ring.
//! - A flake service's unit is written only with the program its build produced for the entry
//!   being written (`build.rs`, which also says why builds have a lane of their own).

mod build;
pub mod gc;
mod health;
mod names;
pub mod reconcile;
pub mod remote;
pub mod rollout;
pub mod substitute;
mod systemd;
#[cfg(test)]
mod tests;

pub use build::{
    is_root_of, out_of_program, parse_build_json, retry_delay_ms, root_name, Build, BuildState,
    Program, RootName,
};
pub use gc::{parse_freed, Freed, Gc, GcDone, GcStats};
pub use health::{check_of, CheckResult, REASON_BYTES_MAX};
pub use names::{health_on, Names};
pub use remote::{BuildMode, Refused};
pub use substitute::{build_key, offer_key, LogScan, Provenance, Substitute, Substitutes};
pub use systemd::{parse_show, Shown, UnitHealth, SHOW_PROPERTIES};

use crate::config::{
    COMMAND_RETRY_MS, HEALTH_AFTER_START_MS, HEALTH_INTERVAL_MS, NAME_BYTES_MAX, PEER_BUILDS_MAX,
    RECONCILE_INTERVAL_MS, STATUS_UNITS_MAX, SYSTEMCTL_TIMEOUT_MS, UNHEARD_LOOK_MS, UNITS_MAX,
    UNITS_PER_COMMAND, UNIT_CHANGES_MAX, UNIT_PLAN_MAX,
};
use crate::hash::{digest, DOMAIN_ENTRY};
use crate::node::{Node, PlacedDigests, PlacementInputs, Sink};
use crate::schema::entry::{Arch, Entry, Source};
use crate::schema::message::{BuildRequest, UnitState};
use crate::state::packed::EntryBytes;
use crate::state::store::{key_hash, Slot};
use crate::time::Instant;
use crate::unit::{self, UnitContext, UnitError};
use build::{BuildFlight, Builds};
use heapless::{Deque, String, Vec};
use reconcile::{Action, Unit};
use rollout::{Admit, Kept, Rollouts, Verdict};

/// A service name.
pub type Name = String<NAME_BYTES_MAX>;

/// What is left to do for an installed unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Todo {
    None,
    /// Written for the first time: enable and start it.
    Start,
    /// A new version was written: restart it.
    Restart,
    /// No longer placed here: disable and stop it.
    Disable,
    /// Disabled and stopped: delete its file.
    Delete,
}

/// What systemd holds of a unit waiting for its enable, as its `show` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    /// Not asked since the file was written.
    Unknown,
    /// Loaded from the file as it is now: it starts without a reload.
    Fresh,
    /// Held from an older file, or not known to be loaded (the `show` failed): the enable
    /// reloads first.
    Stale,
}

#[derive(Clone, Debug)]
pub struct Installed {
    pub name: Name,
    /// `key_hash(name)`, compared first when looking a unit up (DNS does it per query).
    pub key: u64,
    /// The digest of the entry the unit was rendered from ([`unit_digest`]).
    pub digest: u64,
    pub health: UnitHealth,
    /// systemd's `NRestarts`, as last read.
    pub restarts: u32,
    todo: Todo,
    /// Whether systemd holds the unit as its file is now, for an enable due (`Todo::Start`).
    load: Load,
    /// Its health checks (`health.rs`).
    probe: health::Probe,
    /// Found at boot and not yet looked at by a reconcile ([`Executor::try_again_at_boot`]).
    from_boot: bool,
}

/// A unit was placed here or removed, or its health changed (`what` is the new health's name).
#[derive(Clone, Debug)]
pub struct Change {
    pub name: Name,
    pub placement: bool,
    pub what: &'static str,
}

/// The `systemctl` verbs the executor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Disable,
    Reload,
    Enable,
    /// `enable` without the reload `enable` does first: for units systemd holds as their files
    /// are now (`ShowLoad` said so).
    EnableNoReload,
    Restart,
    Show,
    /// `show` of the units waiting for their enable, to learn whether systemd holds them as their
    /// files are now (`Shown::fresh`); the same properties as `Show`.
    ShowLoad,
}

impl Verb {
    /// The arguments after `systemctl`, before the unit names.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Verb::Disable => &["disable", "--now"],
            Verb::Reload => &["daemon-reload"],
            Verb::Enable => &["enable", "--now"],
            Verb::EnableNoReload => &["enable", "--no-reload", "--now"],
            Verb::Restart => &["restart"],
            Verb::Show | Verb::ShowLoad => &["show", SHOW_PROPERTIES],
        }
    }

    /// The command in an operator's words, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Disable => "systemctl disable --now",
            Verb::Reload => "systemctl daemon-reload",
            Verb::Enable => "systemctl enable --now",
            Verb::EnableNoReload => "systemctl enable --no-reload --now",
            Verb::Restart => "systemctl restart",
            Verb::Show => "systemctl show",
            Verb::ShowLoad => "systemctl show (load state)",
        }
    }
}

/// The units a `systemctl` command names, as unit names (`myco-web.service`), in table order.
#[derive(Clone, Debug)]
pub struct Units<'a> {
    units: &'a [Installed],
    /// Only units with this todo; every unit for `show`.
    todo: Option<Todo>,
    at: usize,
    left: usize,
}

impl Iterator for Units<'_> {
    type Item = String<{ unit::UNIT_NAME_BYTES_MAX }>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 && self.at < self.units.len() {
            let u = &self.units[self.at];
            self.at += 1;
            if self.todo.is_none_or(|t| u.todo == t) {
                self.left -= 1;
                return Some(unit::unit_name(&u.name).expect("installed names are service names"));
            }
        }
        None
    }
}

/// How a build ended ([`Executor::build_outcome`]): the signed entry it built, its digest, and
/// the output's store path (`None`: it failed).
#[derive(Clone, Debug)]
pub struct BuildOutcome<'a> {
    /// Rebuilt from the store.
    pub entry: EntryBytes,
    pub digest: u64,
    pub store_path: Option<&'a str>,
}

/// What the host is asked to do next.
///
/// Kinds of work on lanes of their own are variants too (`Build` from [`Executor::poll_build`],
/// `HealthCheck` from [`Executor::poll_check`]), each with the same token and outcome rules.
// A command is polled out one at a time and never kept in a table, so the size of its largest
// variant (a build's substitutes, about 200 bytes) costs one stack slot; there is no heap to box
// into.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Command<'a> {
    /// Render `entry` with [`render_unit`] and replace `myco-<name>.service` with it atomically,
    /// its first line recording `digest` (read back at boot with [`Executor::handle_installed`]).
    /// `start`: a new unit (else a new version); `clock`: the version's clock, for the log.
    WriteUnit {
        name: &'a str,
        entry: &'a [u8],
        digest: u64,
        start: bool,
        clock: u64,
        /// For a flake: the built program, `<out>/bin/<name>`.
        program: Option<&'a str>,
        /// The version before a held one, written back (`rollout.rs`).
        rollback: bool,
        /// The unit differs from the one running only in the version it names (scaling, or a
        /// deploy that changes nothing it runs): systemd reloads it, nothing restarts it.
        in_place: bool,
    },
    /// Build `<uri>#<attr>` (a locked reference) at the lowest priority, with the out-link (the
    /// GC root) `root` in the GC root directory; report what `nix build --json` printed.
    Build {
        name: &'a str,
        uri: &'a str,
        attr: &'a str,
        /// The system the output is for (Nix is run for it: `--option system`); `Any`: Nix's
        /// own, for a box that knows no system.
        system: Arch,
        root: RootName,
        /// Peers whose caches offer this version, best first (`substitute.rs`): Nix is to try
        /// them, trusting their certified keys only, and build itself if none serves it.
        substitutes: Substitutes,
        /// Nix may build here; false: only substitute (`--max-jobs 0`), as a box that does not
        /// build fetches what a builder built for it (`remote.rs`).
        local: bool,
    },
    /// Delete `myco-<name>.service`: systemd has disabled and stopped it.
    RemoveUnitFile { name: &'a str },
    /// Run `systemctl`, `verb.args()` then `units`; for `show`, report its standard output.
    Systemctl { verb: Verb, units: Units<'a> },
    /// Run service `name`'s health check, for at most `timeout_ms`, and report it with
    /// [`Executor::handle_check_done`] (`health.rs`).
    /// The check is the one `entry` (the unit's signed entry) declares: [`check_of`] reads it.
    HealthCheck {
        name: &'a str,
        entry: &'a [u8],
        timeout_ms: u64,
    },
}

/// A command and the token its outcome must carry.
#[derive(Clone, Debug)]
pub struct Issued<'a> {
    pub token: u64,
    pub command: Command<'a>,
}

/// How a command ended: `ok` is success (exit status 0, file written or deleted); `stdout` is
/// what a `systemctl` printed (only `show`'s is read).
#[derive(Clone, Copy, Debug)]
pub struct Outcome<'a> {
    pub ok: bool,
    pub stdout: &'a [u8],
}

impl Outcome<'_> {
    pub const OK: Outcome<'static> = Outcome {
        ok: true,
        stdout: b"",
    };
    pub const FAILED: Outcome<'static> = Outcome {
        ok: false,
        stdout: b"",
    };
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutorStats {
    pub units_written: u64,
    /// Of those, units written for a version that changes nothing they run (scaling): reloaded,
    /// not restarted.
    pub units_in_place: u64,
    pub units_removed: u64,
    pub systemctl_runs: u64,
    pub systemctl_failures: u64,
    pub builds_run: u64,
    pub build_failures: u64,
    /// Builds whose output was substituted from peers' caches rather than built here: counted by
    /// whoever runs the build (the daemon reads it from the build's log, `substitute::LogScan`).
    pub builds_from_peers: u64,
    /// Build requests sent to builders (each builder asked counts once per version).
    pub builds_requested: u64,
    /// Builds run for peers' requests (`remote.rs`), and requests refused (`Refused`).
    pub builds_for_peers: u64,
    pub build_requests_refused: u64,
    /// Times a version waited for a peer building it instead of building it too.
    pub build_waits: u64,
    /// Builds counted failed here because the builder asked said its build of the version
    /// failed (`Message::BuildFailed`), and such answers this builder sent.
    pub builds_failed_on_builders: u64,
    pub build_failed_answers: u64,
    pub checks_run: u64,
    pub checks_failed: u64,
    /// Restarts of units found unhealthy by their checks.
    pub health_restarts: u64,
}

/// The steps of one round, in the order they are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Write,
    Delete,
    /// Write back the version a held trial replaced (`rollout.rs`).
    Rollback,
    Systemctl(Verb),
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    token: u64,
    step: Step,
    /// Units the command names.
    count: usize,
    /// For a write: the digest recorded when it succeeds.
    digest: u64,
    /// For a write over a running unit: the new unit differs from the old only in the version
    /// it names (`same_unit`), so systemd reloads it and the unit is not restarted.
    in_place: bool,
    /// When it was issued, for the `systemctl` timeout.
    issued_ms: u64,
}

/// What a reconcile round did, which says when the next may run (`Executor::poll_command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// Planned an install, a replacement, a removal or a build, or found versions waiting for
    /// room or for their wave to settle.
    Moved,
    /// Nothing but versions waiting for their first wave to speak of them.
    Unheard,
    /// Nothing to do.
    Idle,
}

pub struct Executor {
    units: Vec<Installed, UNITS_MAX>,
    /// Services whose unit file is to be written this round, in order.
    writes: Vec<Name, UNIT_PLAN_MAX>,
    in_flight: Option<InFlight>,
    next_token: u64,
    /// A file systemd must read again changed since the last `daemon-reload`: a new version's,
    /// a rollback's, or a deletion. A new unit's first write does not count: whether its enable
    /// needs the reload is its `load`.
    needs_reload: bool,
    /// State or membership changed since the last reconcile.
    dirty: bool,
    /// The host said placement may have changed (`handle_placement_changed`); the next poll
    /// compares the node's placement inputs with `inputs_seen` to find out.
    placement_hint: bool,
    inputs_seen: Option<PlacementInputs>,
    /// The next reconcile may not start before this (`RECONCILE_INTERVAL_MS` after the last),
    /// unless the last one left changes for the next round.
    next_reconcile_ms: u64,
    /// `Node::statuses_heard` when last polled: a version waiting for its first wave to speak of
    /// it looks again when that moves.
    statuses_seen: u32,
    /// A unit's health or the placement changed since the node was last told
    /// (`take_health_changed`).
    health_changed: bool,
    next_health_ms: u64,
    /// Where the next `systemctl show` starts in `units`.
    show_from: usize,
    retry_at_ms: u64,
    /// Nothing can be due before this: set when a poll found nothing to do, cleared by every
    /// input. Spares the scans of the table on the many polls of a box at rest.
    idle_until_ms: u64,
    /// Join addresses or remembered peers exist: alone means cut off (`reconcile::mode`).
    has_peers_configured: bool,
    /// Placements and health changes not yet taken (`take_changes`).
    changes: Deque<Change, UNIT_CHANGES_MAX>,
    builds: Builds,
    /// How this box builds, and the requests it accepted as a builder (`remote.rs`).
    mode: BuildMode,
    peer_builds: remote::PeerBuilds,
    /// A build request to send (`take_build_request`).
    outbox: Option<(u64, BuildRequest)>,
    /// Requests refused because their version's build failed here, to be answered so
    /// (`take_build_failed`); beyond `PEER_BUILDS_MAX` between two takes, the requester's next
    /// request is answered instead.
    failed_answers: Vec<(u64, BuildRequest), PEER_BUILDS_MAX>,
    /// The units' health checks (`health.rs`).
    probes: health::Probes,
    /// Versions on trial here and the versions they may go back to (`rollout.rs`).
    rollouts: Rollouts,
    /// Where in the placed units the next reconcile begins its installs and replacements: past
    /// those the last round planned, when it planned `UNIT_PLAN_MAX` and left some out.
    plan_from: usize,
    /// The entry the last issued write or build was made from, rebuilt from the store: the
    /// command borrows it until the next poll.
    lent: Option<EntryBytes>,
    pub stats: ExecutorStats,
}

impl Executor {
    /// An executor with no unit installed yet; tell it the units an earlier run left with
    /// [`Executor::handle_installed`] before the first poll.
    pub fn new(has_peers_configured: bool) -> Executor {
        Executor {
            plan_from: 0,
            units: Vec::new(),
            writes: Vec::new(),
            in_flight: None,
            next_token: 1,
            needs_reload: false,
            dirty: true,
            placement_hint: false,
            inputs_seen: None,
            next_reconcile_ms: 0,
            statuses_seen: 0,
            health_changed: true,
            next_health_ms: 0,
            show_from: 0,
            retry_at_ms: 0,
            idle_until_ms: 0,
            has_peers_configured,
            changes: Deque::new(),
            builds: Builds::default(),
            mode: BuildMode::default(),
            peer_builds: remote::PeerBuilds::default(),
            outbox: None,
            failed_answers: Vec::new(),
            probes: health::Probes::default(),
            rollouts: Rollouts::default(),
            lent: None,
            stats: ExecutorStats::default(),
        }
    }

    /// A unit file found at boot, written by an earlier run from an entry of digest `digest`: it
    /// is neither rewritten nor lost. Returns false, changing nothing, for a name that is not a
    /// service name, one already known, or a full table.
    pub fn handle_installed(&mut self, name: &str, digest: u64) -> bool {
        let Ok(name) = Name::try_from(name) else {
            return false;
        };
        if !crate::schema::entry::valid_name(&name) || self.unit(&name).is_some() {
            return false;
        }
        let unit = Installed {
            key: key_hash(&name),
            name,
            digest,
            health: UnitHealth::Pending,
            restarts: 0,
            todo: Todo::None,
            load: Load::Unknown,
            probe: health::Probe::default(),
            from_boot: true,
        };
        self.idle_until_ms = 0;
        self.units.push(unit).is_ok()
    }

    /// The versions kept to go back to (`rollout::Kept`), which the host keeps on disk in this
    /// order (`rollout::encode_kept`) so that a restarted daemon still has them.
    pub fn kept(&self) -> &[Kept] {
        &self.rollouts.kept
    }

    /// A version kept before the daemon restarted, as the host read it back
    /// (`rollout::decode_kept`; the host has checked the entry's operator signature): kept again
    /// if it is a valid service entry of a unit found at boot (`handle_installed`), with a program
    /// only for a flake (`<out>/bin/<name>`, `out` a store path), not kept yet, and there is room.
    /// False, changing nothing, otherwise.
    pub fn restore_kept(&mut self, entry: &[u8], program: Option<&str>) -> bool {
        let Some(bytes) = EntryBytes::validated(entry) else {
            return false;
        };
        let decoded = bytes.decode();
        let (name, Some(spec)) = (decoded.body.name, decoded.body.spec) else {
            return false;
        };
        let key = key_hash(name);
        let flake = matches!(spec.source, Source::Flake { .. });
        let program = match program {
            None if !flake => None,
            // A store path, as Nix printed it when the version was built (not signed, so
            // checked: the state directory is the daemon's, but a unit runs what it names).
            Some(p) if flake => out_of_program(p, name)
                .filter(|out| crate::cache::is_store_path(out.as_bytes()))
                .and_then(|out| build::program_of(out, name)),
            _ => return false,
        };
        let digest = unit_digest(entry);
        let known = rollout::find(&self.rollouts.kept, key, digest).is_some();
        let unit = self.units.iter().any(|u| u.key == key && u.name == name);
        if known || !unit || self.rollouts.kept.is_full() || (flake && program.is_none()) {
            return false;
        }
        let version = Kept {
            key,
            digest,
            entry: bytes.clone(),
            program,
        };
        self.rollouts.kept.push(version).is_ok()
    }

    /// The desired state or the membership may have changed (an entry merged, a member event):
    /// the next poll reconciles, no sooner than `RECONCILE_INTERVAL_MS` after a round that
    /// planned a change, if what a round reads of the node did change (`look_at_placement`).
    pub fn handle_placement_changed(&mut self) {
        self.placement_hint = true;
        self.idle_until_ms = 0;
    }

    /// Acts on a placement hint: at 50% loss members are suspected and refute all the time,
    /// and a round for each such event (it changes no placement: suspects are live) was a
    /// third of the executor's rounds in the simulator.
    fn look_at_placement(&mut self, node: &Node) {
        if !core::mem::take(&mut self.placement_hint) {
            return;
        }
        let inputs = node.placement_inputs();
        if self.inputs_seen == Some(inputs) {
            return;
        }
        self.inputs_seen = Some(inputs);
        self.mark_dirty();
        // The status lists placed services without a unit as pending: it may change now,
        // before any unit does.
        self.health_changed = true;
    }

    /// Something changed that the next round must see wherever it is placed: that round
    /// starts from the first placed unit.
    fn mark_dirty(&mut self) {
        self.dirty = true;
        self.plan_from = 0;
    }

    /// A box outside a service's first wave starts a first version only once the first wave has
    /// spoken of it (`rollout::gate`): when a member's status arrives, a round refused for that
    /// alone is run again, rather than at the next periodic look a second or more later.
    fn look_at_statuses(&mut self, node: &Node) {
        let heard = node.statuses_heard();
        if heard != self.statuses_seen {
            self.statuses_seen = heard;
            if self.rollouts.unheard {
                self.mark_dirty();
                self.idle_until_ms = 0;
            }
        }
    }

    /// The next command to run, if any is due. `None` while one is in flight.
    pub fn poll_command<'a>(&'a mut self, now: Instant, node: &'a Node) -> Option<Issued<'a>> {
        self.look_at_placement(node);
        self.look_at_statuses(node);
        if self.in_flight.is_some() || now.0 < self.idle_until_ms {
            return None;
        }
        self.owe_restarts();
        // Versions that wait on what other boxes say (an unheard first wave, a failed build that
        // a first wave may have held meanwhile) are looked at again now and then.
        if self.rollouts.recheck_due(now.0, &self.builds) {
            self.mark_dirty();
        }
        // A round that goes on where the last one stopped waits for that one's writes: it
        // would drop them, and nothing plans them again before a round from the start.
        let going_on = self.plan_from > 0 && !self.writes.is_empty();
        if self.dirty && now.0 >= self.next_reconcile_ms && !going_on {
            self.dirty = false;
            // Only a round that changed something (or found versions waiting for room or for
            // their wave to settle, which it takes up again at once) holds the next one back, so
            // that a burst of changes moves units once. A round with nothing to do (a member
            // joined or became suspect, an entry placed elsewhere) holds nothing back: the deploy
            // or the death right after it is applied at once, not up to a second later. One whose
            // versions only wait for their first wave to speak of them looks again at the next
            // status heard, no sooner than `UNHEARD_LOOK_MS`.
            // (A round that left part of a full plan out has already made the next one due.)
            self.next_reconcile_ms = now.0 + RECONCILE_INTERVAL_MS;
            let wait = match self.reconcile(node) {
                Round::Moved => RECONCILE_INTERVAL_MS,
                Round::Unheard => UNHEARD_LOOK_MS,
                Round::Idle => 0,
            };
            self.next_reconcile_ms = self.next_reconcile_ms.min(now.0 + wait);
        }
        let Some(step) = self.next_step(now, node) else {
            // Waiting out a failure, work resumes at the retry; otherwise only the health read
            // or a throttled reconcile can come due without an input.
            let due = if now.0 < self.retry_at_ms {
                self.retry_at_ms
            } else {
                self.next_health_ms
            };
            let due = due.min(self.rollouts.next_recheck_ms(&self.builds));
            self.idle_until_ms = if self.dirty {
                due.min(self.next_reconcile_ms)
            } else {
                due
            };
            return None;
        };
        Some(self.issue(now, step, node))
    }

    /// The token of a `systemctl` in flight for `SYSTEMCTL_TIMEOUT_MS` or more: the host is to
    /// kill it (its whole process group) and report it failed with that token, after which the
    /// usual retry applies. Asked again until that report, so a host may poll it every step.
    /// File work is never cancelled: it does not wait on systemd.
    pub fn poll_cancel(&self, now: Instant) -> Option<u64> {
        let f = self.in_flight.as_ref()?;
        let overdue = now.0 >= f.issued_ms.saturating_add(SYSTEMCTL_TIMEOUT_MS);
        (matches!(f.step, Step::Systemctl(_)) && overdue).then_some(f.token)
    }

    /// The command with token `token` ended. Returns false, changing nothing, for a stale token.
    pub fn handle_command_done(&mut self, now: Instant, token: u64, outcome: Outcome<'_>) -> bool {
        if let Some(flight) = self.builds.in_flight.filter(|f| f.token == token) {
            self.built(now, flight, outcome);
            return true;
        }
        let Some(done) = self.in_flight.filter(|f| f.token == token) else {
            return false;
        };
        self.in_flight = None;
        self.idle_until_ms = 0;
        match done.step {
            Step::Write => self.written(outcome.ok, done.digest, done.in_place),
            Step::Delete => self.deleted(),
            Step::Rollback => self.rolled_back(now, outcome.ok, done.digest),
            Step::Systemctl(verb) => self.ran(now, verb, done.count, outcome),
        }
        assert!(self.in_flight.is_none());
        assert!(self.show_from <= self.units.len());
        true
    }

    /// The next build to run, if one is due: builds have a lane of their own (`build.rs`), so
    /// this is asked beside [`Executor::poll_command`]. `None` while a build is in flight, or when
    /// the version waits for a peer or a builder (`remote.rs`).
    pub fn poll_build<'a>(&'a mut self, now: Instant, node: &'a Node) -> Option<Issued<'a>> {
        let Some(i) = self.builds.due(now) else {
            return self.poll_peer_build(node);
        };
        let (key, digest) = (self.builds.table[i].key, self.builds.table[i].digest);
        self.lent = placed_entry(node, &self.builds.table[i].name)
            .filter(|(bytes, _)| unit_digest(bytes) == digest)
            .map(|(bytes, _)| bytes);
        let Some(rev) = self.lent.as_ref().and_then(flake_rev) else {
            // Replaced or removed since the round that recorded it: the next round records what
            // is placed now.
            self.builds.table.swap_remove(i);
            (self.dirty, self.plan_from) = (true, 0);
            self.idle_until_ms = 0;
            return None;
        };
        // A box's own builds are for its own system; the key names it, so peers of another
        // system neither offer nor wait for this output, and a builder of another arch can.
        let system = self.mode.system_of(node);
        let root = root_name(&self.builds.table[i].name, &rev, system);
        let build = substitute::build_key(&root);
        let version = remote::Version {
            key: build,
            now_ms: now.0,
            asked: &mut self.builds.table[i].remote,
        };
        let substitutes = match remote::decide(node, self.mode, version) {
            remote::Decision::Run(substitutes) => {
                if !substitutes.is_empty() {
                    self.builds.offered(i);
                }
                substitutes
            }
            remote::Decision::Failed => {
                self.failed_on_builder(i, now);
                return None;
            }
            remote::Decision::Wait(to) => {
                self.wait_for_peers(i, now, node, to);
                return None;
            }
        };
        let source = self
            .lent
            .as_ref()
            .and_then(|b| b.decode().body.spec.map(|s| s.source));
        let Some(Source::Flake { uri, attr, .. }) = source else {
            unreachable!("a flake, as its rev said above");
        };
        let b = &mut self.builds.table[i];
        let token = self.next_token;
        self.next_token += 1;
        b.state = BuildState::Building;
        self.builds.in_flight = Some(BuildFlight {
            token,
            key,
            digest,
            build,
            for_peer: false,
        });
        self.stats.builds_run += 1;
        self.health_changed = true;
        note(&mut self.changes, &b.name, false, "building");
        let command = Command::Build {
            name: b.name.as_str(),
            uri,
            attr,
            system,
            root,
            substitutes,
            local: self.mode.local,
        };
        Some(Issued { token, command })
    }

    /// The builder asked for record `i` said its build failed (`remote.rs`): a failed build here,
    /// judged as one.
    fn failed_on_builder(&mut self, i: usize, now: Instant) {
        let change = self.builds.failed_remotely(i, now);
        self.stats.build_failures += 1;
        self.stats.builds_failed_on_builders += 1;
        push_change(&mut self.changes, change);
        self.judge(now);
        self.health_changed = true;
    }

    /// Record `i` waits for a peer or a builder (`remote.rs`); `to`: the builder to ask now.
    fn wait_for_peers(&mut self, i: usize, now: Instant, node: &Node, to: Option<u64>) {
        let b = &mut self.builds.table[i];
        let first_wait = b.remote.waiting_since_ms == now.0.max(1) && to.is_none();
        let newly_asked = b.remote.builder.is_some_and(|(_, since)| since == now.0);
        b.state = BuildState::Waiting {
            check_at_ms: remote::check_at(now.0),
        };
        self.stats.build_waits += u64::from(first_wait);
        let system = self.mode.system_of(node);
        let request = self.lent.as_ref().and_then(|e| remote::request(e, system));
        if let (Some(to), Some(request)) = (to, request) {
            self.stats.builds_requested += u64::from(newly_asked);
            self.outbox = Some((to, request));
        }
    }

    /// The next build a peer asked for (`remote.rs`), once no placed service's build is due.
    fn poll_peer_build<'a>(&'a mut self, node: &'a Node) -> Option<Issued<'a>> {
        if self.builds.in_flight.is_some() {
            return None;
        }
        let i = self.peer_builds.next()?;
        let p = self.peer_builds.table[i];
        self.lent = node
            .store()
            .get(p.service)
            .filter(|e| unit_digest(e) == p.digest);
        let body = self.lent.as_ref().map(|e| e.decode().body);
        let Some((name, Some(Source::Flake { uri, attr, rev, .. }))) =
            body.map(|b| (b.name, b.spec.map(|s| s.source)))
        else {
            // The entry changed since the request: the requester asks again for the new one.
            self.peer_builds.done(p.service, p.digest, p.build);
            return None;
        };
        let token = self.next_token;
        self.next_token += 1;
        self.peer_builds.table[i].running = true;
        self.builds.in_flight = Some(BuildFlight {
            token,
            key: p.service,
            digest: p.digest,
            build: p.build,
            for_peer: true,
        });
        self.stats.builds_run += 1;
        // For the requester's system, which may not be this box's own (`extra-platforms`).
        let root = root_name(name, &rev, p.system);
        let command = Command::Build {
            name,
            uri,
            attr,
            system: p.system,
            // A version another box offers already is fetched rather than built again.
            substitutes: substitute::substitutes(node, p.build),
            root,
            local: true,
        };
        Some(Issued { token, command })
    }

    /// How this box builds (`--build`, `--builder`, what Nix builds): set before the first poll.
    pub fn set_build_mode(&mut self, mode: BuildMode) {
        self.mode = mode;
    }

    pub fn build_mode(&self) -> BuildMode {
        self.mode
    }

    /// Member `from` asks this box to build a version ([`crate::node::Event::BuildRequest`]).
    /// A refusal changes nothing but its counter; the requester asks another builder when its
    /// bound runs out.
    /// A version whose own build here failed is refused as well during its backoff: building
    /// it for a peer would only fail again. A refusal for a failed build (`Refused::Failed`) is
    /// answered (`take_build_failed`), so the requester counts the failure instead of taking
    /// the refusal for silence, which it never counts.
    pub fn handle_build_request(
        &mut self,
        now: Instant,
        node: &Node,
        (from, request): (u64, &BuildRequest),
    ) -> Result<(), Refused> {
        let backing_off = |b: &&Build| {
            let failed =
                matches!(b.state, BuildState::Failed { retry_at_ms } if now.0 < retry_at_ms);
            b.key == request.service.0 && b.digest == request.digest.0 && failed
        };
        let taken = if self.builds.table.iter().any(|b| backing_off(&b)) {
            Err(Refused::Failed)
        } else {
            self.peer_builds.accept(node, (self.mode, now.0), request)
        };
        self.stats.build_requests_refused += u64::from(taken.is_err());
        if taken == Err(Refused::Failed) {
            let fresh = !self.failed_answers.contains(&(from, *request));
            if fresh && self.failed_answers.push((from, *request)).is_ok() {
                self.stats.build_failed_answers += 1;
            }
        }
        taken
    }

    /// An answer to send: member `to`'s request, refused because its version's build failed here
    /// ([`Node::send_build_failed`]).
    pub fn take_build_failed(&mut self) -> Option<(u64, BuildRequest)> {
        self.failed_answers.pop()
    }

    /// Builder `from` answered that its build of the version this box asked it for failed
    /// ([`crate::node::Event::BuildFailed`]). It counts as a failed build here (decided at the
    /// record's next look, now) only if `from` is the builder this box is asking for that very
    /// entry; anything else (an answer to an older request, from a builder given up, for another
    /// version) is ignored and returns false.
    pub fn handle_build_failed(&mut self, now: Instant, from: u64, request: &BuildRequest) -> bool {
        let matches = |b: &&mut Build| {
            let asked = b.remote.builder.is_some_and(|(id, _)| id == from);
            let waiting = matches!(b.state, BuildState::Waiting { .. });
            b.key == request.service.0 && b.digest == request.digest.0 && asked && waiting
        };
        let Some(b) = self.builds.table.iter_mut().find(matches) else {
            return false;
        };
        b.remote.refused_failed = true;
        b.state = BuildState::Waiting { check_at_ms: now.0 };
        self.idle_until_ms = 0;
        true
    }

    /// The requests accepted as a builder, waiting or running (`remote.rs`).
    pub fn peer_builds(&self) -> &[remote::PeerBuild] {
        &self.peer_builds.table
    }

    /// A build request for the host to send ([`Node::send_build_request`]).
    pub fn take_build_request(&mut self) -> Option<(u64, BuildRequest)> {
        self.outbox.take()
    }

    /// The build key of the build in flight (0: none), for the status (`Node::set_building`).
    pub fn building_key(&self) -> u64 {
        self.builds.in_flight.map_or(0, |f| f.build)
    }

    /// How service `name`'s last build ended, with the entry it built, for the audit log: `None`
    /// while it waits or runs, or when the record moved on (a new version, no longer placed).
    pub fn build_outcome<'a>(&'a self, node: &'a Node, name: &str) -> Option<BuildOutcome<'a>> {
        let b = self.builds.get(name)?;
        let (entry, _) = placed_entry(node, name).filter(|(e, _)| unit_digest(e) == b.digest)?;
        let store_path = match b.state {
            build::BuildState::Built => Some(build::out_of_program(&b.program, name)?),
            build::BuildState::Failed { .. } => None,
            build::BuildState::Wanted
            | build::BuildState::Building
            | build::BuildState::Waiting { .. } => return None,
        };
        Some(BuildOutcome {
            entry,
            digest: b.digest,
            store_path,
        })
    }

    /// How service `name`'s build does, while one is waiting, running or failed.
    pub fn build_health(&self, name: &str) -> Option<UnitHealth> {
        Some(UnitHealth::from(self.builds.get(name)?.state.state()?))
    }

    /// The builds of flake services placed here that have no unit of that version yet.
    pub fn builds(&self) -> &[Build] {
        &self.builds.table
    }

    /// Whether a build is in flight.
    pub fn building(&self) -> bool {
        self.builds.in_flight.is_some()
    }

    /// Whether a command is in flight.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether nothing is left to do but the periodic health read: no change planned, pending
    /// or in flight (a `show` may be), no reload owed.
    pub fn at_rest(&self) -> bool {
        self.unrest().is_none()
    }

    /// What keeps the executor from rest, if anything: what a stuck run needs to be understood.
    pub fn unrest(&self) -> Option<&'static str> {
        let reading = |f: &InFlight| f.step == Step::Systemctl(Verb::Show);
        if !self.in_flight.as_ref().is_none_or(reading) {
            return Some("a command in flight");
        }
        // Before the reconcile owed: a version waiting for its wave keeps one owed.
        if !self.rollouts.at_rest() {
            return Some("a rollout not decided");
        }
        if self.dirty || self.placement_hint || self.needs_reload || !self.writes.is_empty() {
            return Some("a reconcile, reload or unit file owed");
        }
        if self
            .units
            .iter()
            .any(|u| u.todo != Todo::None || u.probe.owed)
        {
            return Some("a unit with work or a health probe owed");
        }
        if self.builds.in_flight.is_some() || !self.builds.table.is_empty() {
            return Some("a build in flight or queued");
        }
        None
    }

    /// The placements and health changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Option<Change> {
        let change = self.changes.pop_front();
        if change.is_none() {
            // Back to the first slot: a ring left to wander through all of its slots would touch
            // (and keep resident) all of its memory though it is drained every step.
            self.changes.clear();
        }
        change
    }

    /// Whether health changed since the last call: the node's status must be reported again.
    pub fn take_health_changed(&mut self) -> bool {
        core::mem::take(&mut self.health_changed)
    }

    /// The services placed here that are not running, as the node's status lists them
    /// (`Node::set_status`): a flake service on its way to a new version by its build's state
    /// (`building`, `build-failed`: the running unit is the version being replaced), an installed
    /// unit of the placed version by its health, a placed service with no unit of that version
    /// yet (not written, not restarted, or held back in `Keep` mode) as `Pending`. Peers read a placed service the status leaves out as running, so only
    /// a unit systemd reports running may be left out.
    pub fn not_running<'a>(
        &'a self,
        node: &'a Node,
    ) -> impl Iterator<Item = (u64, UnitState)> + 'a {
        self.placed_states(node)
            .filter_map(|(slot, state)| Some((slot.key_hash, state?)))
    }

    /// Each entry placed here with its state if it is not running ([`Executor::not_running`]).
    fn placed_states<'a>(
        &'a self,
        node: &'a Node,
    ) -> impl Iterator<Item = (&'a Slot, Option<UnitState>)> + 'a {
        node.placed_here().map(|slot| {
            let key = slot.key_hash;
            let unit = self.units.iter().find(|u| u.key == key);
            if let Some(state) = self.rollouts.state(key, slot.digest, unit) {
                return (slot, Some(state));
            }
            let build = self.builds.table.iter().find(|b| b.key == key);
            // A unit of any version of it that runs: what serves while a new one is on its way.
            let serving = || unit.is_some_and(|u| u.health == UnitHealth::Running);
            let state = match build.and_then(|b| b.state.state()) {
                // A build on a box where no version runs: peers must not send clients here.
                Some(UnitState::Building) if !serving() => Some(UnitState::FirstBuilding),
                Some(UnitState::BuildFailed) if !serving() => Some(UnitState::FirstBuildFailed),
                Some(state) => Some(state),
                // A unit of another version (the new one not written or not restarted yet)
                // does not run this one: peers must not read the new version as running.
                None => match unit {
                    Some(u) if u.digest == slot.digest => u.health.state(),
                    // The version before still serves until the new one is written and started.
                    Some(u) if u.health == UnitHealth::Running => Some(UnitState::Updating),
                    _ => Some(UnitState::Pending),
                },
            };
            (slot, state)
        })
    }

    /// Reports [`Executor::not_running`] as `node`'s status (`Node::set_status`, which versions
    /// only a change; `floor` as there). The list is gathered first, since the node changes.
    pub fn report_status(&self, node: &mut Node, now: Instant, floor: u32, sink: &mut impl Sink) {
        // One more than a status lists is enough for `set_status` to say `more`.
        let mut units: Vec<(u64, UnitState), { STATUS_UNITS_MAX + 1 }> = Vec::new();
        let mut placed = 0;
        // Services with a trial or a build first, so that a status cut short still tells the
        // next wave about them (`Status::trials_listed`).
        let mut first = 0;
        // Which placed entries (by their rank in `placed_here`) are not running and not on
        // trial, for the second walk: `on_trial` places the entry, so it is asked once each.
        let mut rest = [0u64; UNITS_MAX.div_ceil(64)];
        for (i, (slot, state)) in self.placed_states(node).enumerate() {
            placed ^= slot.digest;
            let Some(state) = state else { continue };
            if self.on_trial(node, slot) {
                first += 1;
                // Past one more than fits, the list is only counted into the digest.
                let _ = units.push((slot.key_hash, state));
            } else {
                rest[i / 64] |= 1 << (i % 64);
            }
        }
        for (i, (slot, state)) in self.placed_states(node).enumerate() {
            if let Some(state) = state.filter(|_| rest[i / 64] >> (i % 64) & 1 == 1) {
                let _ = units.push((slot.key_hash, state));
            }
        }
        let listing = (placed, first <= STATUS_UNITS_MAX);
        node.set_status_listing(now, floor, listing, units.into_iter(), sink);
    }

    /// Whether the placed entry of `slot` is on trial here or being built, on a box of its first
    /// wave (whose status the next wave reads).
    fn on_trial(&self, node: &Node, slot: &Slot) -> bool {
        let key = slot.key_hash;
        let trial = self.rollouts.trial(key, slot.digest).is_some()
            || self.builds.table.iter().any(|b| b.key == key);
        trial && node.in_first_wave_here(key)
    }

    /// Units by health, in `UnitHealth::ALL` order.
    pub fn census(&self) -> [u64; UnitHealth::ALL.len()] {
        let mut counts = [0; UnitHealth::ALL.len()];
        for u in self.units.iter() {
            counts[u.health.index()] += 1;
        }
        for b in self.builds.table.iter() {
            if let Some(state) = b.state.state() {
                counts[UnitHealth::from(state).index()] += 1;
            }
        }
        counts
    }

    /// Whether some version waited at the last reconcile for a first-wave box whose status does
    /// not speak of it (looked at again every health interval, so it may have spoken since).
    pub fn waits_unheard(&self) -> bool {
        self.rollouts.unheard
    }

    /// Why version `digest` (entry digest) of service `key` was held on this box, if it was.
    pub fn held(&self, key: u64, digest: u64) -> Option<crate::schema::message::HoldReason> {
        self.rollouts.trial(key, digest)?.held
    }

    /// The installed units, in table order.
    pub fn units(&self) -> &[Installed] {
        &self.units
    }

    /// The installed unit of service `name`.
    pub fn unit(&self, name: &str) -> Option<&Installed> {
        let key = key_hash(name);
        self.units.iter().find(|u| u.key == key && u.name == name)
    }

    /// Plans one round: the writes of new and changed units, the removal of units no longer
    /// placed here, at most `UNIT_PLAN_MAX` changes; a full plan leaves the rest for the next.
    /// Says whether the round moved anything (`Round`).
    fn reconcile(&mut self, node: &Node) -> Round {
        let mode = reconcile::mode(node.peers_in_reach(), self.has_peers_configured);
        // Collected once: reconcile walks the list for each installed unit.
        // The store keeps each entry's digest ([`unit_digest`]), so nothing is hashed here.
        let wanted: Vec<Unit<'_>, UNITS_MAX> = node
            .placed_here()
            .map(|slot| Unit {
                name: node.store().name(slot),
                key: slot.key_hash,
                digest: slot.digest,
            })
            .collect();
        self.writes.clear();
        let from = self.plan_from.min(wanted.len());
        let plan = self.plan(mode, &wanted, from);
        // A trial of a version no longer placed here is over (an entry's digest names it alone);
        // a build for such a version, or for one held here, is of no use.
        self.rollouts
            .retain(|_, digest| wanted.iter().any(|u| u.digest == digest));
        let rollouts = &self.rollouts;
        let placed = |key, name: &str, digest| {
            let mut w = wanted.iter();
            w.any(|u| u.digest == digest && u.key == key && u.name == name)
                && !rollouts.held_here(name, digest)
        };
        self.builds.retain(placed);
        // A round that goes on where the last stopped adds to what the rounds before it found
        // waiting: their versions are looked at again only if these flags say so.
        if from == 0 {
            (self.rollouts.waiting, self.rollouts.unheard) = (false, false);
        }
        self.try_again_at_boot(node, &wanted);
        let mut digests = None;
        let mut moved = false;
        for (name, remove) in plan {
            if remove {
                moved = true;
                self.mark_disable(&name);
            } else if !self.admit(node, &wanted, &name, &mut digests) {
                // Held, or waiting for its wave (reconciled again soon, below).
            } else if let Some(digest) = self.unbuilt(node, &wanted, &name) {
                moved = true;
                if self.reuse_program(node, &name, digest) {
                    self.writes.push(name).expect("the plan fits the writes");
                } else if !self.builds.want(&name, digest) {
                    // The builds table is full: a round after this cycle tries again.
                    self.rollouts.waiting = true;
                }
                self.health_changed = true;
            } else {
                moved = true;
                self.writes.push(name).expect("the plan fits the writes");
            }
        }
        if self.rollouts.waiting {
            self.dirty = true;
        }
        if moved || self.rollouts.waiting {
            Round::Moved
        } else if self.rollouts.unheard {
            Round::Unheard
        } else {
            Round::Idle
        }
    }

    /// The changes of one round, installs and replacements from `wanted`'s `from`th on: at most
    /// `UNIT_PLAN_MAX` of them, and installs only while the units table has room.
    fn plan(
        &mut self,
        mode: reconcile::Mode,
        wanted: &[Unit<'_>],
        from: usize,
    ) -> Vec<(Name, bool), UNIT_PLAN_MAX> {
        // A removal not yet started is planned again below if the unit is still unwanted.
        for u in self.units.iter_mut().filter(|u| u.todo == Todo::Disable) {
            u.todo = Todo::None;
        }
        // A disabled unit waiting for its file to go counts as gone: placed again, it is
        // written again and enabled (`written`).
        let installed = self.units.iter().filter(|u| u.todo != Todo::Delete);
        let installed = installed.map(|u| Unit {
            name: u.name.as_str(),
            key: u.key,
            digest: u.digest,
        });
        let mut plan: Vec<(Name, bool), UNIT_PLAN_MAX> = Vec::new();
        let mut room = UNITS_MAX - self.units.len();
        // Where in `wanted` the first action left out of this round's plan is.
        let mut left_out: Option<usize> = None;
        reconcile::reconcile(mode, wanted.iter().copied(), installed, from, |a| {
            let (name, remove) = match a {
                Action::Install(n) | Action::Replace(n) => (n, false),
                Action::Remove(n) => (n, true),
            };
            let fits = match a {
                Action::Install(_) => room > 0 && !plan.is_full(),
                _ => !plan.is_full(),
            };
            if !fits {
                let at = wanted.iter().position(|u| u.name == name);
                left_out = left_out.or(Some(at.unwrap_or(wanted.len())));
                return;
            }
            room -= usize::from(matches!(a, Action::Install(_)));
            let name = Name::try_from(name).expect("service names fit NAME_BYTES_MAX");
            plan.push((name, remove))
                .expect("checked: the plan has room");
        });
        // A full plan or table leaves the rest for the next round, which is not throttled and
        // begins where this one stopped: actions it cannot take now (a held or waiting version
        // refused below) would otherwise fill every plan, and the units after them would starve.
        self.plan_from = left_out.unwrap_or(0);
        if left_out.is_some() {
            self.dirty = true;
            self.next_reconcile_ms = 0;
        }
        plan
    }

    /// The first round after boot puts each unit found then (`handle_installed`) that runs the
    /// version placed here back on trial, on a box of the service's first wave
    /// (`Rollouts::try_again`).
    fn try_again_at_boot(&mut self, node: &Node, wanted: &[Unit<'_>]) {
        for u in self.units.iter_mut().filter(|u| u.from_boot) {
            u.from_boot = false;
            let placed = wanted
                .iter()
                .any(|w| w.digest == u.digest && w.name == u.name);
            if placed && rollout::in_first_wave(&node.placement(u.key), node.id()) {
                self.rollouts.try_again(&u.name, u.digest);
            }
        }
    }

    /// Whether the placed version of `name` (in `wanted`) may be installed or replace the
    /// unit here now (`rollout.rs`): a new trial is noted. `digests`: `Node::placed_digests`,
    /// computed on first need and kept for the round.
    fn admit(
        &mut self,
        node: &Node,
        wanted: &[Unit<'_>],
        name: &str,
        digests: &mut Option<PlacedDigests>,
    ) -> bool {
        let key = key_hash(name);
        let new = wanted
            .iter()
            .find(|u| u.key == key && u.name == name)
            .map_or(0, |u| u.digest);
        let old = self.unit(name).filter(|u| u.todo != Todo::Delete);
        let old = old.map(|u| u.digest);
        // The whole placement only for the gate of a box off the first wave (the first wave's
        // gate is open): admit runs for every planned unit each round.
        let first = node.in_first_wave_here(key);
        let gate = || {
            if first {
                return rollout::Gate::Go;
            }
            let placement = node.placement(key);
            rollout::gate(node.id(), &placement, |id| {
                let placed = digests.get_or_insert_with(|| node.placed_digests());
                rollout::said_by(node, placed, (id, key), &placement)
            })
        };
        match self.rollouts.admit((name, new, old), first, gate) {
            Admit::Go => true,
            Admit::Trial => {
                // A first version on trial is no step of a rollout here: only a replacement is.
                if old.is_some() {
                    note(&mut self.changes, name, false, "on-trial");
                }
                self.health_changed = true;
                true
            }
            Admit::No => {
                // A build waits for its version to be admitted; a held one never is.
                self.builds.forget(name);
                false
            }
        }
    }

    /// Judges the trials after a health read or a build's end (`Rollouts::judge`); a decided
    /// one changes the status, and a held one may have a unit to write back.
    fn judge(&mut self, now: Instant) {
        let changes = &mut self.changes;
        let mut decided = false;
        self.rollouts
            .judge(now.0, &self.units, &self.builds, |trial, verdict| {
                decided = true;
                // A first version that settles is no step of a rollout here.
                if trial.old.is_some() || verdict != Verdict::Settled {
                    note(changes, &trial.name, false, verdict.word());
                }
            });
        if decided {
            // A held version's build, if any, is dropped by the next round.
            self.mark_dirty();
            self.health_changed = true;
            self.idle_until_ms = 0;
        }
    }

    /// Keeps the version a unit is about to be written from, with its built program, so that
    /// the unit can go back to it (`rollout.rs`).
    fn keep(&mut self, entry: &EntryBytes) {
        let digest = unit_digest(entry);
        let name = entry.decode().body.name;
        let program = self.builds.program(name, digest);
        let program = program.and_then(|p| build::Program::try_from(p).ok());
        let version = Kept {
            key: key_hash(name),
            digest,
            entry: entry.clone(),
            program,
        };
        self.rollouts.keep(version, &self.units);
    }

    /// The version before was written back (or not: retried after `COMMAND_RETRY_MS`): the
    /// unit runs it after the restart that follows.
    fn rolled_back(&mut self, now: Instant, ok: bool, digest: u64) {
        let (trial, _) = self.rollouts.rollback().expect("a rollback was in flight");
        let name = trial.name.clone();
        self.rollouts.rolled_back(&name, ok);
        if !ok {
            self.retry_at_ms = now.0 + COMMAND_RETRY_MS;
            return;
        }
        self.stats.units_written += 1;
        note(&mut self.changes, &name, true, "rolled-back");
        self.needs_reload = true;
        self.health_changed = true;
        let key = key_hash(&name);
        let unit = self.units.iter_mut().find(|u| u.key == key);
        let unit = unit.expect("a held trial's unit is installed");
        unit.digest = digest;
        // The restart below is the one its failed checks owed, if any.
        unit.probe.owed = false;
        unit.todo = match unit.todo {
            Todo::Start | Todo::Delete => Todo::Start,
            Todo::None | Todo::Restart | Todo::Disable => Todo::Restart,
        };
        unit.load = Load::Unknown;
    }

    /// For a flake service whose entry (of digest `digest` in `wanted`) has no built program
    /// yet: that digest. `None` for an `Exec` service or a built one, whose unit can be written.
    fn unbuilt(&self, node: &Node, wanted: &[Unit<'_>], name: &str) -> Option<u64> {
        let (bytes, _) = placed_entry(node, name)?;
        let Source::Flake { .. } = bytes.decode().body.spec?.source else {
            return None;
        };
        let digest = wanted.iter().find(|u| u.name == name)?.digest;
        self.builds
            .program(name, digest)
            .is_none()
            .then_some(digest)
    }

    /// The build in flight ended: record its program or its failure, and reconcile soon so a
    /// built service's unit is written without waiting out the throttle.
    fn built(&mut self, now: Instant, flight: BuildFlight, outcome: Outcome<'_>) {
        let out = if outcome.ok {
            parse_build_json(outcome.stdout)
        } else {
            None
        };
        if flight.for_peer {
            self.builds.in_flight = None;
            self.peer_builds
                .done(flight.key, flight.digest, flight.build);
            self.peer_builds.ended(flight.build, out.is_some(), now.0);
            self.stats.builds_for_peers += u64::from(out.is_some());
            self.stats.build_failures += u64::from(out.is_none());
            self.idle_until_ms = 0;
            return;
        }
        let change = self.builds.done(now, flight, out);
        if let Some(change) = change {
            if change.what == "built" {
                self.mark_dirty();
                self.next_reconcile_ms = 0;
            } else {
                self.stats.build_failures += 1;
            }
            push_change(&mut self.changes, change);
        }
        self.judge(now);
        self.health_changed = true;
        self.idle_until_ms = 0;
        assert!(self.builds.in_flight.is_none());
    }

    fn mark_disable(&mut self, name: &str) {
        let unit = self.units.iter_mut().find(|u| u.name == name);
        let unit = unit.expect("removals name installed units");
        // A restart not yet made (owed by failed checks, or a new version's) is owed again: the
        // next round drops a removal not yet started (`plan`), and a unit placed here again
        // must still be restarted, and not checked before it (gauntlet seed 12011).
        if unit.todo == Todo::Restart {
            unit.probe.owed = true;
        }
        if unit.todo != Todo::Delete {
            unit.todo = Todo::Disable;
        }
    }

    /// The next step due: file work first, then `systemctl` in round order unless a failed
    /// command is being waited out, then a health read when due.
    fn next_step(&mut self, now: Instant, node: &Node) -> Option<Step> {
        while let Some(name) = self.writes.first() {
            if node.store().live_by_name(name).is_some() {
                return Some(Step::Write);
            }
            // Removed or turned into a tombstone since the plan: nothing to write.
            self.writes.remove(0);
        }
        if self.pending(Todo::Delete) {
            return Some(Step::Delete);
        }
        if now.0 < self.retry_at_ms {
            return None;
        }
        if self.rollouts.rollback().is_some() {
            return Some(Step::Rollback);
        }
        // `systemctl enable` reloads systemd itself before it starts anything (unless told
        // --no-reload), so a reload of our own is needed only when no unit waits for its enable:
        // a new service then starts after one reload at most (`enable_verb`).
        let verb = if self.pending(Todo::Disable) {
            Verb::Disable
        } else if self.needs_reload && !self.pending(Todo::Start) {
            Verb::Reload
        } else if self.pending(Todo::Start) {
            self.enable_verb()
        } else if self.pending(Todo::Restart) {
            Verb::Restart
        } else if !self.units.is_empty() && now.0 >= self.next_health_ms {
            self.next_health_ms = now.0 + HEALTH_INTERVAL_MS;
            Verb::Show
        } else {
            return None;
        };
        Some(Step::Systemctl(verb))
    }

    fn pending(&self, todo: Todo) -> bool {
        self.units.iter().any(|u| u.todo == todo)
    }

    /// How the units waiting for their enable (the first `UNITS_PER_COMMAND`, which the enable
    /// names) are enabled: with the reload `enable` does when another file change awaits one
    /// anyway; else first ask systemd what it holds of any not asked about since its write, then
    /// without a reload if systemd holds every one as its file is now.
    fn enable_verb(&self) -> Verb {
        if self.needs_reload {
            return Verb::Enable;
        }
        let waiting = self.units.iter().filter(|u| u.todo == Todo::Start);
        let mut fresh = true;
        for u in waiting.take(UNITS_PER_COMMAND) {
            match u.load {
                Load::Unknown => return Verb::ShowLoad,
                Load::Stale => fresh = false,
                Load::Fresh => {}
            }
        }
        if fresh {
            Verb::EnableNoReload
        } else {
            Verb::Enable
        }
    }

    fn issue<'a>(&'a mut self, now: Instant, step: Step, node: &'a Node) -> Issued<'a> {
        let token = self.next_token;
        self.next_token += 1;
        let mut in_place = false;
        let write = (step == Step::Write).then(|| {
            let (entry, clock) = placed_entry(node, &self.writes[0]).expect("checked by next_step");
            in_place = self.in_place(&self.writes[0], &entry);
            self.keep(&entry);
            self.lent = Some(entry);
            clock
        });
        let count = match step {
            Step::Systemctl(verb) => {
                self.stats.systemctl_runs += 1;
                self.units_for(verb).left
            }
            Step::Write | Step::Delete | Step::Rollback => 0,
        };
        assert!(count <= UNITS_PER_COMMAND);
        self.in_flight = Some(InFlight {
            token,
            step,
            count,
            digest: match self.rollouts.rollback() {
                Some((_, kept)) if step == Step::Rollback => kept.digest,
                _ => self
                    .lent
                    .as_ref()
                    .filter(|_| write.is_some())
                    .map_or(0, |e| unit_digest(e)),
            },
            in_place,
            issued_ms: now.0,
        });
        let command = match step {
            Step::Write => {
                let name = self.writes[0].as_str();
                let clock = write.expect("computed above");
                let entry: &[u8] = self.lent.as_ref().expect("set above");
                let start = self
                    .unit(name)
                    .is_none_or(|u| matches!(u.todo, Todo::Start | Todo::Delete));
                let digest = unit_digest(entry);
                Command::WriteUnit {
                    name,
                    entry,
                    digest,
                    start,
                    clock,
                    program: self.builds.program(name, digest),
                    rollback: false,
                    in_place,
                }
            }
            Step::Delete => {
                let unit = self.units.iter().find(|u| u.todo == Todo::Delete);
                let name = unit.expect("checked by next_step").name.as_str();
                Command::RemoveUnitFile { name }
            }
            Step::Rollback => self.rollback_command(),
            Step::Systemctl(verb) => Command::Systemctl {
                verb,
                units: self.units_for(verb),
            },
        };
        Issued { token, command }
    }

    /// The write of the kept version a held trial goes back to.
    fn rollback_command(&self) -> Command<'_> {
        let (trial, kept) = self.rollouts.rollback().expect("checked by next_step");
        Command::WriteUnit {
            name: trial.name.as_str(),
            entry: &kept.entry,
            digest: kept.digest,
            start: false,
            clock: kept.entry.decode().body.version.clock,
            program: kept.program.as_deref(),
            rollback: true,
            in_place: false,
        }
    }

    /// The units `verb` names: those with its todo, or for `show` the sweep's next ones.
    fn units_for(&self, verb: Verb) -> Units<'_> {
        let (todo, at) = match verb {
            Verb::Disable => (Some(Todo::Disable), 0),
            Verb::Enable | Verb::EnableNoReload | Verb::ShowLoad => (Some(Todo::Start), 0),
            Verb::Restart => (Some(Todo::Restart), 0),
            Verb::Show => (None, self.show_from),
            Verb::Reload => (None, self.units.len()),
        };
        let matching = self.units[at..]
            .iter()
            .filter(|u| todo.is_none_or(|t| u.todo == t))
            .count();
        Units {
            units: &self.units,
            todo,
            at,
            left: matching.min(UNITS_PER_COMMAND),
        }
    }

    /// Whether the placed flake version of `name` (digest `digest`) makes the same unit as the
    /// kept version its running unit was written from (it only scales the service): then it
    /// runs the program already built, recorded as built for it, and no build runs.
    fn reuse_program(&mut self, node: &Node, name: &str, digest: u64) -> bool {
        let Some(kept) = self.running_kept(name) else {
            return false;
        };
        let Some((entry, _)) = placed_entry(node, name) else {
            return false;
        };
        match &kept.program {
            Some(program) if same_unit(kept, &entry, Some(program)) => {
                let program = program.clone();
                self.builds.adopt(name, digest, &program)
            }
            _ => false,
        }
    }

    /// Whether the unit of `entry` may replace `name`'s running unit without a restart: the
    /// version it runs is kept and its unit differs from the new one only in the version it
    /// names (`same_unit`).
    fn in_place(&self, name: &str, entry: &EntryBytes) -> bool {
        let program = self.builds.program(name, unit_digest(entry));
        self.running_kept(name)
            .is_some_and(|kept| same_unit(kept, entry, program))
    }

    /// The kept version (`rollout::Kept`) that `name`'s unit, installed and with nothing left
    /// to do, was written from: `None` for a unit of a version not kept (a full table, a record
    /// lost in a crash).
    fn running_kept(&self, name: &str) -> Option<&Kept> {
        let unit = self.unit(name).filter(|u| u.todo == Todo::None)?;
        rollout::find(&self.rollouts.kept, unit.key, unit.digest)
    }

    /// A unit file was written (or not): record the new unit or version. `in_place`: the new
    /// unit differs from the running one only in its version, so it is not restarted.
    fn written(&mut self, ok: bool, digest: u64, in_place: bool) {
        let name = self.writes.remove(0);
        if !ok {
            return;
        }
        self.builds.forget(&name);
        self.stats.units_written += 1;
        self.stats.units_in_place += u64::from(in_place);
        note(&mut self.changes, &name, true, "placed");
        self.health_changed = true;
        let key = key_hash(&name);
        match self
            .units
            .iter_mut()
            .find(|u| u.key == key && u.name == name)
        {
            Some(u) => {
                u.digest = digest;
                // A new version's checks start over, with their grace.
                u.probe = health::Probe::default();
                // A unit not yet enabled, or already disabled, is enabled; a running one is
                // restarted, from the new file, which systemd reads only on a reload; one whose
                // unit is the same but for its version is only reloaded (scaling restarts no
                // copy that runs).
                u.todo = match u.todo {
                    Todo::Start | Todo::Delete => Todo::Start,
                    Todo::None if in_place => Todo::None,
                    Todo::None | Todo::Restart | Todo::Disable => Todo::Restart,
                };
                u.load = Load::Unknown;
                self.needs_reload |= u.todo == Todo::Restart || in_place;
            }
            None => {
                let unit = Installed {
                    key,
                    name,
                    digest,
                    health: UnitHealth::Pending,
                    restarts: 0,
                    todo: Todo::Start,
                    load: Load::Unknown,
                    probe: health::Probe::default(),
                    from_boot: false,
                };
                let full = "reconcile plans no install into a full table";
                self.units.push(unit).map_err(|_| ()).expect(full);
            }
        }
    }

    /// A disabled unit's file was deleted (or could not be, which the host reported): the unit
    /// is gone either way, since systemd no longer runs it.
    fn deleted(&mut self) {
        let i = self.units.iter().position(|u| u.todo == Todo::Delete);
        let unit = self.units.swap_remove(i.expect("a delete was in flight"));
        // The sweep may skip a unit once; the next sweep reads it.
        self.show_from = self.show_from.min(self.units.len());
        self.stats.units_removed += 1;
        note(&mut self.changes, &unit.name, true, "removed");
        self.needs_reload = true;
        self.health_changed = true;
    }

    /// A `systemctl` command ended: take note of what it did.
    fn ran(&mut self, now: Instant, verb: Verb, count: usize, outcome: Outcome<'_>) {
        if !outcome.ok {
            self.stats.systemctl_failures += 1;
            // A failed look at what systemd holds is no reason to wait: the enable reloads.
            if verb != Verb::ShowLoad {
                self.retry_at_ms = now.0 + COMMAND_RETRY_MS;
            }
        }
        match verb {
            Verb::Disable => self.settle(Todo::Disable, Todo::Delete, count, outcome.ok),
            Verb::Reload => self.needs_reload &= !outcome.ok,
            Verb::Enable => {
                self.settle(Todo::Start, Todo::None, count, outcome.ok);
                // Its reload read every file written so far: writes come before it in a round.
                self.needs_reload &= !outcome.ok;
            }
            Verb::EnableNoReload => {
                self.settle(Todo::Start, Todo::None, count, outcome.ok);
                // What systemd holds may have changed under a failed one: the retry reloads.
                if !outcome.ok {
                    self.set_loads(count, Load::Stale);
                }
            }
            Verb::ShowLoad => self.read_loads(count, outcome),
            Verb::Restart => self.settle(Todo::Restart, Todo::None, count, outcome.ok),
            Verb::Show => {
                self.read_health(now, outcome.stdout);
                self.judge(now);
                self.show_from += count;
                if self.show_from >= self.units.len() || count == 0 {
                    self.show_from = 0;
                } else {
                    // The sweep goes on with the next units now, not a health interval later.
                    self.next_health_ms = now.0;
                }
            }
        }
        if matches!(verb, Verb::Enable | Verb::EnableNoReload | Verb::Restart) {
            self.next_health_ms = now.0 + HEALTH_AFTER_START_MS;
        }
    }

    /// The first `count` units with todo `from` move on to `to`, if the command succeeded.
    fn settle(&mut self, from: Todo, to: Todo, count: usize, ok: bool) {
        if !ok {
            return;
        }
        let units = self.units.iter_mut().filter(|u| u.todo == from);
        let mut settled = 0;
        for u in units.take(count) {
            u.todo = to;
            settled += 1;
        }
        assert_eq!(settled, count, "the table did not change while in flight");
    }

    /// The first `count` units waiting for their enable (those a command named) get `load`.
    fn set_loads(&mut self, count: usize, load: Load) {
        let waiting = self.units.iter_mut().filter(|u| u.todo == Todo::Start);
        for u in waiting.take(count) {
            u.load = load;
        }
    }

    /// The `show` of the first `count` units waiting for their enable ended: each is fresh if
    /// systemd said so; one it did not report, or all after a failed `show`, need the reload.
    fn read_loads(&mut self, count: usize, outcome: Outcome<'_>) {
        self.set_loads(count, Load::Stale);
        if !outcome.ok {
            return;
        }
        parse_show(outcome.stdout, |shown| {
            let unit = shown_unit(&mut self.units, shown.id);
            if let Some(u) = unit.filter(|u| u.todo == Todo::Start && shown.fresh) {
                u.load = Load::Fresh;
            }
        });
    }

    /// Sets each unit's health from `systemctl show` output.
    fn read_health(&mut self, now: Instant, stdout: &[u8]) {
        self.probes.wake();
        let (units, changes) = (&mut self.units, &mut self.changes);
        let mut changed = false;
        parse_show(stdout, |shown| {
            let Some(u) = shown_unit(units, shown.id) else {
                return;
            };
            u.restarts = shown.restarts;
            // Installed but not enabled, though nothing is left to do for it: enable it.
            if shown.disabled && u.todo == Todo::None {
                u.todo = Todo::Start;
                u.load = Load::Unknown;
            }
            // Running but failing its checks is unhealthy until a check passes.
            u.probe.saw(now, shown.health);
            let health = u.probe.judge(shown.health);
            if u.health != health {
                u.health = health;
                note(changes, &u.name, false, u.health.name());
                changed = true;
            }
        });
        self.health_changed |= changed;
    }
}

/// The installed unit a `show` block's `Id=` names, if it is one of ours.
fn shown_unit<'u>(units: &'u mut [Installed], id: &[u8]) -> Option<&'u mut Installed> {
    let name = core::str::from_utf8(id).ok().and_then(unit::service_of)?;
    let key = key_hash(name);
    units.iter_mut().find(|u| u.key == key && u.name == name)
}

/// Renders the unit of a placed entry (as `Command::WriteUnit` carries it, with its built
/// `program` for a flake) into `out` and returns its length. An error means the unit cannot run
/// on this box (see `UnitError::message`).
pub fn render_unit(
    entry: &[u8],
    program: Option<&str>,
    out: &mut [u8],
) -> Result<usize, UnitError> {
    let entry = Entry::decode(entry).map_err(|_| UnitError::Name)?;
    let spec = entry.body.spec.as_ref().ok_or(UnitError::Name)?;
    let ctx = UnitContext {
        version: entry.body.version,
        program,
    };
    unit::render(entry.body.name, spec, &ctx, out)
}

/// Whether the unit of `new`, run from its built `program`, is the unit of the kept version
/// `old` but for the version it names: the same service and program, and a spec that makes the
/// same unit (`ServiceSpec::same_unit`: all but `replicas`).
fn same_unit(old: &Kept, new: &EntryBytes, program: Option<&str>) -> bool {
    let (old_entry, new_entry) = (old.entry.decode(), new.decode());
    let (Some(was), Some(now)) = (&old_entry.body.spec, &new_entry.body.spec) else {
        return false;
    };
    old_entry.body.name == new_entry.body.name
        && old.program.as_deref() == program
        && was.same_unit(now)
}

/// The digest a unit is compared by: of the entry it was rendered from (the text is a function
/// of it).
pub fn unit_digest(entry: &[u8]) -> u64 {
    digest(DOMAIN_ENTRY, entry)
}

/// The locked revision of a flake entry; `None` for any other.
fn flake_rev(entry: &EntryBytes) -> Option<[u8; crate::config::FLAKE_REV_BYTES]> {
    match entry.decode().body.spec?.source {
        Source::Flake { rev, .. } => Some(rev),
        Source::Exec { .. } => None,
    }
}

/// Service `name`'s live entry in `node`'s store, rebuilt, and its version's clock; `None` for a
/// removed (tombstoned) or unknown service. Whether it is removed and the clock come from the
/// index record, which keeps both, not from decoding the entry.
fn placed_entry(node: &Node, name: &str) -> Option<(EntryBytes, u64)> {
    let slot = node.store().live_by_name(name)?;
    Some((node.store().entry(slot), slot.version.clock))
}

fn note(
    changes: &mut Deque<Change, UNIT_CHANGES_MAX>,
    name: &str,
    placement: bool,
    what: &'static str,
) {
    let name = Name::try_from(name).expect("service names fit NAME_BYTES_MAX");
    let change = Change {
        name,
        placement,
        what,
    };
    push_change(changes, change);
}

/// Adds a change; the oldest gives way when the ring is full.
fn push_change(changes: &mut Deque<Change, UNIT_CHANGES_MAX>, change: Change) {
    if changes.is_full() {
        changes.pop_front();
    }
    changes
        .push_back(change)
        .map_err(|_| ())
        .expect("room was made");
}
