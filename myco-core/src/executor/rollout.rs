//! Progressive rollout with automatic hold: a new version of a service reaches its placed boxes
//! in waves that every node works out alike from placement and gossip, with no coordinator.
//!
//! - The waves are placement's order (`Node::placement`, rendezvous, best first): the first
//!   [`first_wave`] boxes (one per `ROLLOUT_WAVE_EVERY` placed boxes, so one for ten or fewer)
//!   take a new version at once; every other box that runs a unit of an earlier version keeps
//!   it ([`gate`]: `Wait`, reported `updating`, so DNS keeps answering it) until every box of
//!   the first wave reports, in a status that speaks of the new entry (`Node::status_covers`),
//!   that it runs it and has run it for `ROLLOUT_SETTLE_MS` (it lists nothing for the service).
//!   A box with no unit of the service has nothing to keep serving and takes the new version at
//!   once, so a first deploy starts everywhere together, as before.
//! - Every box that takes a version puts it on trial ([`Trial`]): it lists it `settling` while
//!   it runs and has not run for `ROLLOUT_SETTLE_MS`, and [`fails`] judges each health read. A
//!   version that fails before it settles is held: a box whose unit ran the version before goes
//!   back to it (the entry it was written from and its built program are kept here, [`Kept`]),
//!   one whose build failed never left it, and the box lists the service `held` with the
//!   reason until a newer entry is placed there. A held box of the first wave holds the rest
//!   ([`gate`]: `Held`): they keep the version they run, and a box with none does not start
//!   the held one. The operator's signed entries are never rewritten: going back only rewrites
//!   this box's unit.
//!
//! Bounds: `TRIALS_MAX` trials and `KEPT_MAX` kept versions per box. A full trial table is a
//! decision: a new version that finds no room waits for the next round (the oldest trials
//! settle or are held meanwhile). A full kept table keeps no more versions; a unit whose version
//! was not kept cannot go back, and its box holds the rollout on the failing version.

use super::build::{Build, BuildState, Builds, Program};
use super::{Installed, Name, UnitHealth};
use crate::config::{
    ENTRY_BYTES_MAX, HEALTH_INTERVAL_MS, KEPT_MAX, ROLLOUT_BUILD_FAILURES, ROLLOUT_SETTLE_MS,
    ROLLOUT_WAVE_EVERY, TRIALS_MAX,
};
use crate::node::{Node, PlacedDigests};
use crate::schema::message::{HoldReason, UnitState};
use crate::state::packed::EntryBytes;
use crate::state::store::key_hash;
use heapless::Vec;

/// Whether a new version's state on a box means it fails there. The one place that says what
/// failing is: a build that failed (`ROLLOUT_BUILD_FAILURES` times in a row), a unit that failed or is waiting to be restarted after a
/// crash (a crash loop), a failed health check.
pub fn fails(state: UnitState) -> Option<HoldReason> {
    match state {
        UnitState::BuildFailed | UnitState::FirstBuildFailed => Some(HoldReason::BuildFailed),
        UnitState::Failed => Some(HoldReason::UnitFailed),
        UnitState::Restarting => Some(HoldReason::CrashLoop),
        UnitState::Unhealthy => Some(HoldReason::Unhealthy),
        UnitState::Held { reason, .. } => Some(reason),
        _ => None,
    }
}

/// Whether box `id` is in the first wave of `placement`.
pub fn in_first_wave(placement: &[u64], id: u64) -> bool {
    placement[..first_wave(placement.len())].contains(&id)
}

/// How many of `placed` boxes (in placement order) form the first wave: one per
/// `ROLLOUT_WAVE_EVERY`, rounded up.
pub fn first_wave(placed: usize) -> usize {
    placed.div_ceil(ROLLOUT_WAVE_EVERY)
}

/// What a box that runs an earlier version does about the placed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Take it: this box is in the first wave, or the first wave runs it settled.
    Go,
    /// Keep the version it runs: the first wave has not settled yet. `heard`: every box of the
    /// first wave has spoken of the new version (it is on its way there); otherwise some status
    /// does not speak of it (not arrived yet, or cut short by too much trouble on its box), and
    /// nothing may change here until it does.
    Wait { heard: bool },
    /// Keep the version it runs: first-wave box `at` held the rollout for `reason`.
    Held { at: u64, reason: HoldReason },
}

/// The gate of box `me` for a service placed on `placement` (best first). `said(id)` is what
/// first-wave box `id` reports of the service for the placed entry: `None` when that is not
/// known (no status, or one that does not speak of the placed entry), `Some(None)` when it runs
/// it settled, `Some(Some(state))` otherwise. A held box holds the rest even while another box
/// of the wave has not spoken.
pub fn gate(
    me: u64,
    placement: &[u64],
    mut said: impl FnMut(u64) -> Option<Option<UnitState>>,
) -> Gate {
    if in_first_wave(placement, me) {
        return Gate::Go;
    }
    let wave = &placement[..first_wave(placement.len())];
    let (mut go, mut heard) = (true, true);
    for &id in wave {
        match said(id) {
            Some(Some(UnitState::Held { reason, .. })) => return Gate::Held { at: id, reason },
            Some(None) => {}
            Some(Some(_)) => go = false,
            None => (go, heard) = (false, false),
        }
    }
    if go {
        Gate::Go
    } else {
        Gate::Wait { heard }
    }
}

/// What box `id` (this node or a peer) reports of service `key` (placed on `placement`) for the
/// entries this node places on it (`placed`, `Node::placed_digests`), in [`gate`]'s terms.
pub fn said_by(
    node: &Node,
    placed: &PlacedDigests,
    (id, key): (u64, u64),
    placement: &[u64],
) -> Option<Option<UnitState>> {
    let status = if id == node.id() {
        Some(node.own_status()).filter(|s| s.version > 0)
    } else {
        node.status_of(id)
    }?;
    let mine = placed.iter().find(|(m, _)| *m == id).map(|(_, d)| *d);
    if Some(status.placed.0) != mine {
        return None;
    }
    match status.units.iter().find(|(k, _)| k.0 == key) {
        Some((_, state)) => Some(Some(*state)),
        // A status cut short lists first the trials of the services whose first wave its owner
        // is in: a first-wave box that leaves one out has no trial of it (it settled).
        None if status.more && !(status.trials_listed && in_first_wave(placement, id)) => None,
        None => Some(None),
    }
}

/// How a service's rollout does, as this node sees the cluster (`/services`, `myco ls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every placed box runs the placed version, settled (or reports trouble of its own that
    /// is no rollout's: a unit that failed after it settled).
    Done,
    /// Some placed box has not taken, started or settled the placed version, or has not spoken
    /// of it yet.
    Rolling,
    /// Box `at` held it for `reason`, until the operator deploys again.
    Held { at: u64, reason: HoldReason },
}

impl Progress {
    pub fn name(self) -> &'static str {
        match self {
            Progress::Done => "done",
            Progress::Rolling => "rolling",
            Progress::Held { .. } => "held",
        }
    }
}

/// The rollout of service `key` over `placement`, from what each box reports ([`said_by`]).
pub fn progress(node: &Node, placed: &PlacedDigests, key: u64, placement: &[u64]) -> Progress {
    let mut rolling = false;
    for &id in placement {
        match said_by(node, placed, (id, key), placement) {
            Some(Some(UnitState::Held { reason, .. })) => return Progress::Held { at: id, reason },
            Some(None) => {}
            Some(Some(state)) => rolling |= on_its_way(state),
            None => rolling = true,
        }
    }
    if rolling {
        Progress::Rolling
    } else {
        Progress::Done
    }
}

/// Whether a box that lists `state` is on its way to the placed version.
fn on_its_way(state: UnitState) -> bool {
    use UnitState::*;
    matches!(
        state,
        Pending | Starting | Building | FirstBuilding | BuildFailed | Updating | Settling
    )
}

/// Which version a box runs, by what it reports ([`said_by`]): `Some(true)` the placed one,
/// `Some(false)` the one before (waiting for its wave, building, or held), `None` neither or
/// not known. `myco ls` shows both where both run.
pub fn runs_placed(said: Option<Option<UnitState>>) -> Option<bool> {
    match said? {
        None | Some(UnitState::Settling) => Some(true),
        Some(
            UnitState::Updating
            | UnitState::Building
            | UnitState::BuildFailed
            | UnitState::Held { serving: true, .. },
        ) => Some(false),
        Some(_) => None,
    }
}

/// A version this box took, until it settles or a newer one is placed.
#[derive(Clone, Debug)]
pub struct Trial {
    pub name: Name,
    pub key: u64,
    /// The digest of the entry on trial.
    pub new: u64,
    /// The digest of the unit it replaces; `None` when no unit of the service was installed.
    pub old: Option<u64>,
    /// Why it was held, once it was.
    pub held: Option<HoldReason>,
    /// Held while the unit runs the new version, and the old one is kept: write it back.
    pub rollback_due: bool,
    /// Since when the new version's unit has been read running, without a read in between that
    /// found it otherwise.
    running_since_ms: Option<u64>,
    /// systemd's `NRestarts` at the first read of the new unit: a restart since is a crash.
    restarts_base: Option<u32>,
    /// How long it must run to settle: `ROLLOUT_SETTLE_MS`, or longer when its health checks
    /// need longer to find it unhealthy (`settle_ms`).
    settle_ms: u64,
}

/// A version a unit was written from, so that the unit can be written again after a newer
/// version failed: the entry (rebuilt from the store when it was written) and, for a flake, the
/// program its build produced (its store path stays rooted, `gc.rs`).
#[derive(Clone, Debug)]
pub struct Kept {
    pub key: u64,
    pub digest: u64,
    pub entry: EntryBytes,
    pub program: Option<Program>,
}

/// What happened to a trial at a health read or a build's end, for `/stream` and the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Settled,
    Held(HoldReason),
}

/// Whether an executor change (`Change::what`) is a step of a rollout on this box: a version put
/// on trial, settled or held (a rollback is a unit written, audited as such).
pub fn is_step(what: &str) -> bool {
    what == "on-trial" || what == "settled" || what.starts_with("held-")
}

impl Trial {
    fn new(name: &str, key: u64, new: u64, old: Option<u64>) -> Trial {
        Trial {
            name: Name::try_from(name).expect("service names fit NAME_BYTES_MAX"),
            key,
            new,
            old,
            held: None,
            rollback_due: false,
            running_since_ms: None,
            restarts_base: None,
            settle_ms: ROLLOUT_SETTLE_MS,
        }
    }
}

impl Verdict {
    /// The word `/stream` and the audit log show.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Settled => "settled",
            Verdict::Held(HoldReason::BuildFailed) => "held-build-failed",
            Verdict::Held(HoldReason::UnitFailed) => "held-unit-failed",
            Verdict::Held(HoldReason::CrashLoop) => "held-crash-loop",
            Verdict::Held(HoldReason::Unhealthy) => "held-unhealthy",
        }
    }
}

/// What [`Rollouts::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Take the version: already on trial, or with no trial.
    Go,
    /// Take the version, on a trial made now.
    Trial,
    /// Not now: held, or waiting for the first wave or for room.
    No,
}

/// This box's trials and kept versions.
#[derive(Default)]
pub(super) struct Rollouts {
    pub trials: Vec<Trial, TRIALS_MAX>,
    pub kept: Vec<Kept, KEPT_MAX>,
    /// Some version waited at the last reconcile for a first wave on its way: reconcile again
    /// soon.
    pub waiting: bool,
    /// Some version waited at the last reconcile for a first-wave box whose status does not
    /// speak of it: look again at the next health read (a box cut short by trouble may stay so
    /// for long, and waiting on it is the rest this box can reach).
    pub unheard: bool,
    /// When versions waiting on what other boxes say are next looked at again.
    recheck_ms: u64,
}

impl Rollouts {
    /// The trial of version `new` (entry digest) of service `key` on this box, if any.
    pub fn trial(&self, key: u64, new: u64) -> Option<&Trial> {
        self.trials.iter().find(|t| t.key == key && t.new == new)
    }

    /// Whether version `new` of `name` was held on this box.
    pub fn held_here(&self, name: &str, new: u64) -> bool {
        self.trial(key_hash(name), new)
            .is_some_and(|t| t.held.is_some())
    }

    /// Drops the trials of versions no longer placed here (`placed(key, digest)`): a newer entry
    /// ends a hold.
    pub fn retain(&mut self, mut placed: impl FnMut(u64, u64) -> bool) {
        self.trials.retain(|t| placed(t.key, t.new));
    }

    /// This box is to take version `new` of `name` over its unit of digest `old` (`None`: no
    /// unit), with `gate` (asked only for a version not on trial yet) answering for the rest of
    /// the fleet. Returns whether to plan it: a version on trial here already, or admitted now
    /// with room for its trial, is; one held here, held by the first wave, waiting for it, or
    /// without room, is not.
    pub fn admit(
        &mut self,
        (name, new, old): (&str, u64, Option<u64>),
        first_wave: bool,
        gate: impl FnOnce() -> Gate,
    ) -> Admit {
        let key = key_hash(name);
        if let Some(t) = self.trial(key, new) {
            return if t.held.is_none() {
                Admit::Go
            } else {
                Admit::No
            };
        }
        // A version that must wait for room waits before asking the fleet.
        if old.is_some() && self.trials.is_full() {
            self.waiting = true;
            return Admit::No;
        }
        match (gate(), old) {
            (Gate::Held { .. }, _) => return Admit::No,
            (Gate::Wait { heard }, Some(_)) => {
                self.waiting |= heard;
                self.unheard |= !heard;
                return Admit::No;
            }
            // A box with nothing of the service has nothing to protect: outside the first wave
            // (which the next wave reads) it takes the version with no trial once the first
            // wave has spoken of it (so not a version the first wave holds).
            (Gate::Wait { heard: false }, None) if !first_wave => {
                self.unheard = true;
                return Admit::No;
            }
            (_, None) if !first_wave => return Admit::Go,
            (Gate::Wait { .. } | Gate::Go, _) => {}
        }
        self.trials.retain(|t| t.key != key);
        match self.trials.push(Trial::new(name, key, new, old)) {
            Ok(()) => Admit::Trial,
            // No room for a first-wave box's first version: it goes without a trial (its
            // settling and a hold go unreported), as before rollouts.
            Err(_) => Admit::Go,
        }
    }

    /// A unit of version `new` of `name` found at boot on a box of the service's first wave goes
    /// on trial again: trials live in memory, so a restarted box cannot tell a version that had
    /// settled from one it was trying (or had held) when it stopped. Tried anew with nothing to
    /// go back to, a version that fails here is held again rather than read as settled by the
    /// next wave; one that runs settles again. Nothing is done with no room, as in `admit`.
    pub fn try_again(&mut self, name: &str, new: u64) {
        let key = key_hash(name);
        if self.trials.iter().all(|t| t.key != key) {
            let old = self.version_before(key, new);
            let _ = self.trials.push(Trial::new(name, key, new, old));
        }
    }

    /// The kept version of service `key` older than `new` with the highest clock: the version
    /// its unit ran before `new`, for a trial after a restart of the daemon (kept versions
    /// restored from the host's disk, `Executor::restore_kept`). `None` when none is kept.
    fn version_before(&self, key: u64, new: u64) -> Option<u64> {
        let clock = |k: &Kept| k.entry.decode().body.version.clock;
        let new_clock = find(&self.kept, key, new).map_or(u64::MAX, clock);
        let older = self.kept.iter().filter(|k| k.key == key && k.digest != new);
        older
            .filter(|k| clock(k) < new_clock)
            .max_by_key(|k| clock(k))
            .map(|k| k.digest)
    }

    /// Judges every trial not yet decided at `now`, by its build (`builds`) and its unit
    /// (`units`, as last read); calls `verdict` for each one decided. Settled trials are dropped.
    pub fn judge(
        &mut self,
        now: u64,
        units: &[Installed],
        builds: &Builds,
        mut verdict: impl FnMut(&Trial, Verdict),
    ) {
        let kept = &self.kept;
        for t in self.trials.iter_mut().filter(|t| t.held.is_none()) {
            let build = builds
                .table
                .iter()
                .find(|b| b.key == t.key && b.digest == t.new);
            let failed = |b: &&Build| matches!(b.state, BuildState::Failed { .. });
            // One failure may be the network's: the build is retried once before it holds.
            if build
                .filter(failed)
                .is_some_and(|b| b.failures >= ROLLOUT_BUILD_FAILURES)
            {
                t.held = Some(HoldReason::BuildFailed);
                verdict(t, Verdict::Held(HoldReason::BuildFailed));
                continue;
            }
            let unit = units.iter().find(|u| u.key == t.key && u.digest == t.new);
            let Some(unit) = unit.filter(|u| u.health != UnitHealth::Pending) else {
                continue;
            };
            match t.read(now, unit) {
                Some(Verdict::Held(reason)) => {
                    t.held = Some(reason);
                    t.rollback_due = t.old.is_some_and(|old| find(kept, t.key, old).is_some());
                    verdict(t, Verdict::Held(reason));
                }
                Some(Verdict::Settled) => verdict(t, Verdict::Settled),
                None => {}
            }
        }
        self.trials.retain(|t| t.held.is_some() || !t.settled(now));
    }

    /// When a reconcile is next due to look again at versions that wait on what other boxes say:
    /// one waiting on an unheard first wave, or a build that failed (the first wave may have held
    /// its version meanwhile, and then it is dropped). `u64::MAX`: none.
    pub fn next_recheck_ms(&self, builds: &Builds) -> u64 {
        let failed = |b: &Build| matches!(b.state, BuildState::Failed { .. });
        if self.unheard || builds.table.iter().any(failed) {
            self.recheck_ms
        } else {
            u64::MAX
        }
    }

    /// Whether that look is due at `now`; the next one is `HEALTH_INTERVAL_MS` later.
    pub fn recheck_due(&mut self, now: u64, builds: &Builds) -> bool {
        if now < self.next_recheck_ms(builds) {
            return false;
        }
        self.recheck_ms = now + HEALTH_INTERVAL_MS;
        true
    }

    /// Whether every trial is decided: nothing settles or waits for a wave.
    pub fn at_rest(&self) -> bool {
        !self.waiting && self.trials.iter().all(|t| t.held.is_some())
    }

    /// The state the status lists for a service placed here with entry digest `digest` while
    /// its unit is `unit`, if a trial decides it: `held`, or `settling` for a new version that
    /// runs and has not settled.
    pub fn state(&self, key: u64, digest: u64, unit: Option<&Installed>) -> Option<UnitState> {
        let t = self.trial(key, digest)?;
        let running = unit.is_some_and(|u| u.health == UnitHealth::Running);
        match t.held {
            Some(reason) => Some(UnitState::Held {
                reason,
                serving: running && unit.is_some_and(|u| u.digest != digest),
            }),
            None if running && unit.is_some_and(|u| u.digest == digest) => {
                Some(UnitState::Settling)
            }
            None => None,
        }
    }

    /// Records the version a unit was just written from: the first kept version of a unit that
    /// no trial and no unit needs any more gives way; a full table of needed ones keeps none.
    pub fn keep(&mut self, version: Kept, units: &[Installed]) {
        if let Some(k) = self
            .kept
            .iter_mut()
            .find(|k| k.key == version.key && k.digest == version.digest)
        {
            *k = version;
            return;
        }
        let trials = &self.trials;
        let needed = |k: &Kept| {
            units.iter().any(|u| u.key == k.key && u.digest == k.digest)
                || trials
                    .iter()
                    .any(|t| t.key == k.key && t.old == Some(k.digest))
        };
        if self.kept.is_full() {
            if let Some(i) = self.kept.iter().position(|k| !needed(k)) {
                self.kept.swap_remove(i);
            }
        }
        let _ = self.kept.push(version);
    }

    /// The kept version a held trial of `name` goes back to, if one is due.
    pub fn rollback(&self) -> Option<(&Trial, &Kept)> {
        let t = self.trials.iter().find(|t| t.rollback_due)?;
        let old = t.old.expect("a rollback is due only with a version before");
        Some((t, find(&self.kept, t.key, old)?))
    }

    /// The rollback of `name` was written (or failed: it is retried, like any failed command).
    pub fn rolled_back(&mut self, name: &str, ok: bool) {
        let key = key_hash(name);
        if let Some(t) = self
            .trials
            .iter_mut()
            .find(|t| t.key == key && t.rollback_due)
        {
            t.rollback_due = !ok;
        }
    }
}

impl Trial {
    /// One health read of the new version's unit at `now`.
    fn read(&mut self, now: u64, unit: &Installed) -> Option<Verdict> {
        let base = *self.restarts_base.get_or_insert(unit.restarts);
        let state = unit.health.state();
        if let Some(reason) = state.and_then(fails) {
            // A first version has nothing to go back to: when its checks fail, health restarts
            // it and DNS leaves it out until a check passes, where a hold would keep it out
            // until the next deploy. It settles once it has run healthy for its settle time.
            if reason == HoldReason::Unhealthy && self.old.is_none() {
                self.running_since_ms = None;
                return None;
            }
            return Some(Verdict::Held(reason));
        }
        // A crash between two reads shows only in the restart count.
        if unit.restarts > base {
            return Some(Verdict::Held(HoldReason::CrashLoop));
        }
        if unit.health != UnitHealth::Running {
            self.running_since_ms = None;
            return None;
        }
        self.settle_ms = settle_ms(unit);
        self.running_since_ms.get_or_insert(now);
        self.settled(now).then_some(Verdict::Settled)
    }

    fn settled(&self, now: u64) -> bool {
        self.running_since_ms
            .is_some_and(|since| now >= since + self.settle_ms)
    }
}

/// How long a version on trial must run before it settles: `ROLLOUT_SETTLE_MS`, and at least
/// as long as its health checks take to find it unhealthy (`Probe::verdict_ms`), or a version that
/// runs but fails its checks would settle and spread before they could say so.
fn settle_ms(unit: &Installed) -> u64 {
    ROLLOUT_SETTLE_MS.max(unit.probe.verdict_ms())
}

/// The first byte of a kept record: its format.
const KEPT_RECORD_FORMAT: u8 = 1;
/// The longest kept record ([`encode_kept`]).
pub const KEPT_RECORD_BYTES_MAX: usize = 3 + PROGRAM_BYTES_MAX + ENTRY_BYTES_MAX;
const PROGRAM_BYTES_MAX: usize = super::build::PROGRAM_BYTES_MAX;

/// A kept version as the host keeps it on disk, so that a restarted daemon can still go back to
/// it: the format byte, the program's length (two bytes, little-endian; 0 for none), the
/// program, then the signed entry. Its length in `out`, `None` if `out` is too short.
pub fn encode_kept(kept: &Kept, out: &mut [u8]) -> Option<usize> {
    let program = kept.program.as_deref().unwrap_or("").as_bytes();
    let entry: &[u8] = &kept.entry;
    let len = 3 + program.len() + entry.len();
    let out = out.get_mut(..len)?;
    out[0] = KEPT_RECORD_FORMAT;
    let program_len = u16::try_from(program.len()).ok()?;
    out[1..3].copy_from_slice(&program_len.to_le_bytes());
    out[3..3 + program.len()].copy_from_slice(program);
    out[3 + program.len()..].copy_from_slice(entry);
    Some(len)
}

/// The program (if any) and the entry bytes of a kept record ([`encode_kept`]); `None` for
/// anything else. Neither is checked further here: `Executor::restore_kept` does, and the host
/// checks the entry's signature. Never panics on any input.
pub fn decode_kept(bytes: &[u8]) -> Option<(Option<&str>, &[u8])> {
    let (&format, rest) = bytes.split_first()?;
    if format != KEPT_RECORD_FORMAT || rest.len() < 2 {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
    if len > PROGRAM_BYTES_MAX {
        return None;
    }
    let (program, entry) = rest[2..].split_at_checked(len)?;
    if entry.is_empty() || entry.len() > ENTRY_BYTES_MAX {
        return None;
    }
    let program = core::str::from_utf8(program).ok()?;
    Some(((!program.is_empty()).then_some(program), entry))
}

pub(super) fn find(kept: &[Kept], key: u64, digest: u64) -> Option<&Kept> {
    kept.iter().find(|k| k.key == key && k.digest == digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 1;
    const B: u64 = 2;
    const C: u64 = 3;

    fn held(reason: HoldReason) -> Option<Option<UnitState>> {
        Some(Some(UnitState::Held {
            reason,
            serving: true,
        }))
    }

    #[test]
    fn the_first_box_goes_and_the_rest_wait_for_it_to_settle() {
        let placement = [A, B, C];
        // The canary goes whatever the others say.
        assert_eq!(gate(A, &placement, |_| None), Gate::Go);
        // The rest wait while the canary has not spoken of the new entry, is on its way, or
        // settles.
        assert_eq!(gate(B, &placement, |_| None), Gate::Wait { heard: false });
        for said in [
            Some(Some(UnitState::Updating)),
            Some(Some(UnitState::Settling)),
        ] {
            let g = gate(B, &placement, |_| said);
            assert_eq!(g, Gate::Wait { heard: true }, "{said:?}");
        }
        // The canary runs it settled: the rest go, without asking each other.
        let mut asked = Vec::<u64, 4>::new();
        let g = gate(C, &placement, |id| {
            asked.push(id).unwrap();
            Some(None)
        });
        assert_eq!(g, Gate::Go);
        assert_eq!(asked, [A], "only the first wave is asked");
    }

    #[test]
    fn a_held_canary_holds_the_rest_with_its_reason() {
        let g = gate(C, &[A, B, C], |_| held(HoldReason::CrashLoop));
        assert_eq!(
            g,
            Gate::Held {
                at: A,
                reason: HoldReason::CrashLoop
            }
        );
    }

    #[test]
    fn large_placements_have_a_first_wave_of_one_in_ten() {
        assert_eq!(first_wave(0), 0);
        assert_eq!(first_wave(1), 1);
        assert_eq!(first_wave(10), 1);
        assert_eq!(first_wave(11), 2);
        assert_eq!(first_wave(64), 7);
        let placement: [u64; 20] = core::array::from_fn(|i| i as u64 + 1);
        assert_eq!(gate(2, &placement, |_| None), Gate::Go, "second canary");
        // One canary settled, the other held: held, even though the first has spoken.
        let g = gate(5, &placement, |id| {
            if id == 1 {
                Some(None)
            } else {
                held(HoldReason::UnitFailed)
            }
        });
        assert_eq!(
            g,
            Gate::Held {
                at: 2,
                reason: HoldReason::UnitFailed
            }
        );
        // Both must settle.
        let g = gate(5, &placement, |id| (id == 1).then_some(None));
        assert_eq!(g, Gate::Wait { heard: false });
    }

    #[test]
    fn failing_is_a_failed_build_or_unit_or_a_crash() {
        assert_eq!(fails(UnitState::BuildFailed), Some(HoldReason::BuildFailed));
        assert_eq!(
            fails(UnitState::FirstBuildFailed),
            Some(HoldReason::BuildFailed)
        );
        assert_eq!(fails(UnitState::Failed), Some(HoldReason::UnitFailed));
        assert_eq!(fails(UnitState::Restarting), Some(HoldReason::CrashLoop));
        assert_eq!(fails(UnitState::Unhealthy), Some(HoldReason::Unhealthy));
        for fine in [
            UnitState::Pending,
            UnitState::Starting,
            UnitState::Building,
            UnitState::Settling,
            UnitState::Updating,
        ] {
            assert_eq!(fails(fine), None, "{fine:?}");
        }
    }
}
