//! Health checks: when each running unit whose entry declares a check (`schema::entry::Health`)
//! is due, what a result means, and when the service is unhealthy and restarted.
//!
//! systemd says whether a unit's process runs; a check says whether it answers. The host asks
//! [`Executor::poll_check`] for the next check due (beside `poll_command` and `poll_build`, as
//! many at a time as it has check slots), runs it without blocking, and reports how it went with
//! [`Executor::handle_check_done`]. The host only runs checks; every rule is here, so the
//! simulator checks them.
//!
//! Rules:
//! - A unit is checked only while systemd reports it running (or it is unhealthy) and nothing
//!   is left to do for it. Its first check comes one interval after it was first read running:
//!   a service in its first seconds is given that long to start answering (its grace).
//! - A check of one unit is never issued while another of it is in flight; the next is due one
//!   interval after the last was issued (the timeout is at most the interval).
//! - `failures` failed checks in a row make the unit unhealthy: it is restarted through the
//!   command lane (`Todo::Restart`), its count starts again, and the next check comes one
//!   interval later (the grace again). It stays unhealthy, whatever systemd says, until a check
//!   passes; meanwhile the status lists it `Unhealthy` and DNS leaves the box out.
//! - A probe belongs to one version of a unit: a new version or a removal forgets it, and a
//!   result for a forgotten probe (a stale token) changes nothing.

use super::{note, placed_entry, Command, Executor, Issued, Todo, UnitHealth};
use crate::node::Node;
use crate::schema::entry::{Check, Entry, Health};
use crate::state::packed::EntryBytes;
use crate::time::Instant;
use crate::unit::Facts;
use heapless::String;

/// The longest failure reason kept per unit (longer ones are cut at a character boundary).
pub const REASON_BYTES_MAX: usize = 40;

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult<'a> {
    Passed,
    /// Failed, with a short reason for the log and the API ("status 500", "timed out").
    Failed(&'a str),
}

/// One unit's checks: its schedule, read once from its entry, and its count of failures. Kept
/// in the unit's row (`Installed::probe`); a new version starts a new one.
#[derive(Clone, Debug, Default)]
pub(super) struct Probe {
    /// The schedule was read from the unit's entry.
    known: bool,
    /// The entry declares a check.
    checked: bool,
    interval_ms: u32,
    timeout_ms: u32,
    failures_max: u8,
    /// Failed checks in a row.
    failed: u8,
    pub(super) unhealthy: bool,
    next_ms: u64,
    in_flight: Option<u64>,
    reason: String<REASON_BYTES_MAX>,
}

/// The probes' idle time, and the entry the check in hand borrows.
#[derive(Default)]
pub(super) struct Probes {
    /// No check can be due before this: set when a poll found none, cleared by every input.
    idle_until_ms: u64,
    lent: Option<EntryBytes>,
}

impl Probes {
    /// Something changed (health read, a check ended): look again at the next poll.
    pub(super) fn wake(&mut self) {
        self.idle_until_ms = 0;
    }
}

impl Probe {
    /// What systemd's word `shown` means for this unit: a running unit that is unhealthy stays
    /// so until a check passes.
    pub(super) fn judge(&self, shown: UnitHealth) -> UnitHealth {
        if self.unhealthy && shown == UnitHealth::Running {
            UnitHealth::Unhealthy
        } else {
            shown
        }
    }

    /// Reads the schedule of `health` (the unit's entry's), the first check one interval from
    /// now.
    fn learn(&mut self, now: Instant, health: Option<&Health<'_>>) {
        let (interval_s, timeout_s, failures) =
            health.map_or((0, 0, 0), |h| (h.interval_s, h.timeout_s, h.failures));
        self.known = true;
        self.checked = health.is_some();
        self.interval_ms = u32::from(interval_s) * 1000;
        self.timeout_ms = u32::from(timeout_s) * 1000;
        self.failures_max = failures;
        self.next_ms = now.0 + u64::from(self.interval_ms);
    }

    fn due(&self, now: Instant) -> bool {
        self.checked && self.in_flight.is_none() && now.0 >= self.next_ms
    }

    /// When this probe's next check can come due, if it can without an input.
    fn next(&self) -> Option<u64> {
        (self.checked && self.in_flight.is_none()).then_some(self.next_ms)
    }
}

/// Whether a unit of this health can answer a check.
fn checkable(health: UnitHealth) -> bool {
    matches!(health, UnitHealth::Running | UnitHealth::Unhealthy)
}

impl Executor {
    /// The next health check due, if any: the host runs it (at most `timeout_ms`) and reports
    /// it with [`Executor::handle_check_done`]. Asked while the host has a free check slot;
    /// several may be in flight, at most one per unit.
    pub fn poll_check<'a>(&'a mut self, now: Instant, node: &'a Node) -> Option<Issued<'a>> {
        if now.0 < self.probes.idle_until_ms {
            return None;
        }
        let Some(i) = self.due_unit(now, node) else {
            let units = self.units.iter().filter(|u| ready(u.health, u.todo));
            let next = units.filter_map(|u| u.probe.next()).min();
            self.probes.idle_until_ms = next.unwrap_or(u64::MAX);
            return None;
        };
        let token = self.next_token;
        self.next_token += 1;
        self.stats.checks_run += 1;
        let u = &mut self.units[i];
        u.probe.in_flight = Some(token);
        u.probe.next_ms = now.0 + u64::from(u.probe.interval_ms);
        let timeout_ms = u64::from(u.probe.timeout_ms);
        let name = self.units[i].name.as_str();
        self.probes.lent = placed_entry(node, name).map(|(bytes, _)| bytes);
        let entry = self
            .probes
            .lent
            .as_deref()
            .expect("due_unit found it placed");
        let command = Command::HealthCheck {
            name,
            entry,
            timeout_ms,
        };
        Some(Issued { token, command })
    }

    /// The check with token `token` ended. Returns false, changing nothing, for a stale token
    /// (the unit was replaced or removed since).
    pub fn handle_check_done(&mut self, now: Instant, token: u64, result: CheckResult<'_>) -> bool {
        let Some(u) = self
            .units
            .iter_mut()
            .find(|u| u.probe.in_flight == Some(token))
        else {
            return false;
        };
        self.probes.wake();
        let p = &mut u.probe;
        p.in_flight = None;
        let was = u.health;
        match result {
            CheckResult::Passed => {
                p.failed = 0;
                p.unhealthy = false;
                if u.health == UnitHealth::Unhealthy {
                    u.health = UnitHealth::Running;
                }
            }
            CheckResult::Failed(why) => {
                self.stats.checks_failed += 1;
                p.reason = cut(why);
                p.failed += 1;
                if p.failed >= p.failures_max {
                    p.unhealthy = true;
                    p.failed = 0;
                    // The restarted unit's grace: one interval from now.
                    p.next_ms = now.0 + u64::from(p.interval_ms);
                    if u.health == UnitHealth::Running {
                        u.health = UnitHealth::Unhealthy;
                    }
                    if u.todo == Todo::None {
                        u.todo = Todo::Restart;
                        self.stats.health_restarts += 1;
                        self.idle_until_ms = 0;
                    }
                }
            }
        }
        if u.health != was {
            note(&mut self.changes, &u.name, false, u.health.name());
            self.health_changed = true;
        }
        true
    }

    /// Why the last failed check of service `name`'s unit failed, while failures are counted or
    /// it is unhealthy; `None` when its last check passed or it has none.
    pub fn check_failure(&self, name: &str) -> Option<&str> {
        let p = &self.unit(name)?.probe;
        (p.failed > 0 || p.unhealthy).then_some(p.reason.as_str())
    }

    /// The first unit whose check is due, reading the schedule of a unit seen for the first time
    /// from its placed entry (a unit of a version no longer placed is left alone: its
    /// replacement is on its way).
    fn due_unit(&mut self, now: Instant, node: &Node) -> Option<usize> {
        for (i, u) in self.units.iter_mut().enumerate() {
            if !ready(u.health, u.todo) {
                continue;
            }
            if !u.probe.known {
                let Some((bytes, _)) = placed_entry(node, &u.name) else {
                    continue;
                };
                if super::unit_digest(&bytes) != u.digest {
                    continue;
                }
                let spec = bytes.decode().body.spec;
                u.probe.learn(now, spec.and_then(|s| s.health).as_ref());
            }
            if u.probe.due(now) {
                return Some(i);
            }
        }
        None
    }
}

/// The check a `Command::HealthCheck`'s entry declares, and what the service's sandbox holds
/// (`unit::sandbox_lines`: an `Exec` check runs in it).
pub fn check_of(entry: &[u8]) -> Option<(Check<'_>, Facts)> {
    let spec = Entry::decode(entry).ok()?.body.spec?;
    let facts = Facts::of(&spec);
    Some((spec.health?.check, facts))
}

/// Whether a unit can be checked now: systemd runs it (healthy or not) and nothing is left to
/// do for it.
fn ready(health: UnitHealth, todo: Todo) -> bool {
    checkable(health) && todo == Todo::None
}

/// `why`, cut to `REASON_BYTES_MAX` bytes at a character boundary.
fn cut(why: &str) -> String<REASON_BYTES_MAX> {
    let mut end = why.len().min(REASON_BYTES_MAX);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    String::try_from(&why[..end]).expect("cut to fit")
}
