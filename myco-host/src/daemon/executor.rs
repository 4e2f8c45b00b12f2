//! The executor: runs this box's share of the desired state as systemd units. It writes
//! `myco-<name>.service` files atomically into the unit directory, then drives `systemctl` one
//! command at a time from the loop (disable the removed, reload, enable the new, restart the
//! changed), and every few seconds asks `systemctl show` how the units are doing. What to change
//! is decided by `myco_core::engine`; the unit text by `myco_core::unit`.

use crate::flight::{Level, Logger};
use crate::spawn::{self, Argv, Child, Output};
use myco_core::engine::{self, Action, Mode, Unit};
use myco_core::hash::{digest, DOMAIN_ENTRY};
use myco_core::schema::entry::Entry;
use myco_core::schema::message::UnitState;
use myco_core::state::store::key_hash;
use myco_core::unit::{render, UnitContext, UNIT_BYTES_MAX};
use myco_core::Node;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Units one box can run: every service, if placement hands it all of them.
pub const UNITS_MAX: usize = myco_core::config::SERVICES_MAX;
/// How often unit health is read while units are installed.
pub const HEALTH_INTERVAL_MS: u64 = 5_000;
/// After a failed `systemctl`, wait this long before trying again.
const RETRY_MS: u64 = 5_000;
/// First line of every unit the executor writes: the digest it compares to decide a rewrite.
const HEADER: &str = "# myco: ";
/// Units per `systemctl` command line; more are done in several commands.
const UNITS_PER_COMMAND: usize = 200;
/// Changes applied per reconcile round; the rest wait for the next round.
const PLAN_MAX: usize = 64;
const ENV: [&CStr; 2] = [c"PATH=/usr/sbin:/usr/bin:/sbin:/bin", c"SYSTEMD_COLORS=0"];

/// What systemd says of a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Written, not yet started or not yet read back.
    Pending,
    Running,
    Starting,
    /// Exited and waiting to be restarted by `Restart=`: a crash loop shows as this.
    Restarting,
    Failed,
    Stopped,
}

impl Health {
    pub const ALL: [Health; 6] = [
        Health::Pending,
        Health::Running,
        Health::Starting,
        Health::Restarting,
        Health::Failed,
        Health::Stopped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Health::Pending => "pending",
            Health::Running => "running",
            Health::Starting => "starting",
            Health::Restarting => "restarting",
            Health::Failed => "failed",
            Health::Stopped => "stopped",
        }
    }
}

impl From<UnitState> for Health {
    fn from(state: UnitState) -> Health {
        match state {
            UnitState::Pending => Health::Pending,
            UnitState::Starting => Health::Starting,
            UnitState::Restarting => Health::Restarting,
            UnitState::Failed => Health::Failed,
            UnitState::Stopped => Health::Stopped,
        }
    }
}

/// How service `name` (key hash `key`) does on node `id`, as this node knows it: its own unit as
/// systemd reports it (`Pending` until written and read back); a peer's from its gossiped status,
/// where a placed service it does not list is running. `None` when unknown: no executor here, or
/// a peer that has reported nothing or listed too many to say. `/services` and DNS both read it.
pub fn health_on(
    node: &Node,
    executor: Option<&Executor>,
    id: u64,
    key: u64,
    name: &str,
) -> Option<Health> {
    if id == node.id() {
        return Some(
            executor?
                .health_of(name)
                .map_or(Health::Pending, |u| u.health),
        );
    }
    let status = node.status_of(id)?;
    match status.units.iter().find(|(k, _)| k.0 == key) {
        Some((_, state)) => Some(Health::from(*state)),
        None if status.more => None,
        None => Some(Health::Running),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Todo {
    None,
    Start,
    Restart,
    Remove,
}

#[derive(Clone, Debug)]
pub struct Installed {
    pub name: heapless::String<63>,
    /// `key_hash(name)`, compared first when looking a unit up (DNS does it per query).
    pub key: u64,
    pub digest: u64,
    pub health: Health,
    pub restarts: u32,
    todo: Todo,
}

/// Changes kept between two steps: one per installed unit, twice over.
const CHANGES_MAX: usize = 2 * UNITS_MAX;

/// A unit was placed here or removed, or its health changed (`what` is the new health's name).
#[derive(Clone, Debug)]
pub struct Change {
    pub name: heapless::String<63>,
    pub placement: bool,
    pub what: &'static str,
}

fn note(
    changes: &mut heapless::Deque<Change, CHANGES_MAX>,
    name: &str,
    placement: bool,
    what: &'static str,
) {
    if changes.is_full() {
        changes.pop_front();
    }
    let name = heapless::String::try_from(name).expect("service names fit 63 bytes");
    let _ = changes.push_back(Change {
        name,
        placement,
        what,
    });
}

/// The `systemctl` steps of one round of changes, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Disable,
    Reload,
    Enable,
    Restart,
    Show,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ExecutorStats {
    pub units_written: u64,
    pub units_removed: u64,
    pub systemctl_runs: u64,
    pub systemctl_failures: u64,
}

pub struct Executor {
    unit_dir: PathBuf,
    systemctl: Vec<u8>,
    journalctl: Vec<u8>,
    /// `/logs` commands, built here so the systemctl job's arguments are untouched.
    logs_argv: Argv,
    /// Boxed, like `changes`, so the executor itself is small and these tables' pages are only
    /// touched as they fill.
    pub installed: Box<heapless::Vec<Installed, UNITS_MAX>>,
    text: Box<[u8]>,
    argv: Argv,
    output: Output,
    /// The running command, its step, and how many units it names.
    job: Option<(Child, Step, usize)>,
    /// A unit file was written or deleted since the last `daemon-reload`.
    needs_reload: bool,
    /// State or membership changed since the last reconcile.
    pub dirty: bool,
    /// A unit's health changed since the node was last told (`take_health_changed`).
    health_changed: bool,
    next_health_ms: u64,
    /// Where the next `systemctl show` starts in `installed`: one command names at most
    /// `UNITS_PER_COMMAND` units, so a sweep of more takes several, back to back.
    show_from: usize,
    retry_at_ms: u64,
    /// Placements and health changes not yet taken for `/stream` (`take_changes`); when full,
    /// the oldest is dropped, since the daemon takes them every step.
    changes: Box<heapless::Deque<Change, CHANGES_MAX>>,
    pub stats: ExecutorStats,
    log: Logger,
}

impl Executor {
    /// Reads the units an earlier run wrote (`myco-*.service` with our header), so a restart
    /// neither rewrites nor loses them.
    pub fn new(
        unit_dir: PathBuf,
        systemctl: &str,
        journalctl: &str,
        log: Logger,
    ) -> io::Result<Executor> {
        fs::create_dir_all(&unit_dir)?;
        let mut installed = Box::new(heapless::Vec::new());
        for e in fs::read_dir(&unit_dir)? {
            let e = e?;
            let file = e.file_name();
            let Some(name) = file
                .to_str()
                .and_then(|f| f.strip_prefix("myco-")?.strip_suffix(".service"))
            else {
                continue;
            };
            let Some(digest) = read_header(&e.path()) else {
                continue;
            };
            let unit = Installed {
                name: heapless::String::try_from(name).unwrap_or_default(),
                key: key_hash(name),
                digest,
                health: Health::Pending,
                restarts: 0,
                todo: Todo::None,
            };
            if installed.push(unit).is_err() {
                break;
            }
        }
        Ok(Executor {
            unit_dir,
            systemctl: systemctl.as_bytes().to_vec(),
            journalctl: journalctl.as_bytes().to_vec(),
            logs_argv: Argv::new(),
            installed,
            text: vec![0; UNIT_BYTES_MAX].into_boxed_slice(),
            argv: Argv::new(),
            output: Output::new(),
            job: None,
            needs_reload: false,
            dirty: true,
            health_changed: true,
            next_health_ms: 0,
            show_from: 0,
            changes: Box::new(heapless::Deque::new()),
            retry_at_ms: 0,
            stats: ExecutorStats::default(),
            log,
        })
    }

    /// The pipe of the running `systemctl`, for the loop to watch.
    pub fn job_fd(&self) -> Option<std::os::fd::RawFd> {
        self.job.as_ref().map(|(c, _, _)| c.stdout_fd())
    }

    /// The placements and health changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Option<Change> {
        let change = self.changes.pop_front();
        if change.is_none() {
            // Back to the first slot: a ring left to wander through all of its 2048 slots
            // would touch (and keep resident) all 190 KiB though it is drained every step.
            self.changes.clear();
        }
        change
    }

    /// Units by health, in `Health::ALL` order.
    pub fn census(&self) -> [u64; Health::ALL.len()] {
        let mut counts = [0; Health::ALL.len()];
        for u in self.installed.iter() {
            counts[Health::ALL
                .iter()
                .position(|&h| h == u.health)
                .expect("listed")] += 1;
        }
        counts
    }

    /// Starts `journalctl` on a unit this box runs, for `/logs`: the last `lines` lines (journalctl's
    /// default when `None`), and with `follow` everything after, until the client goes away.
    pub fn spawn_logs(
        &mut self,
        name: &str,
        follow: bool,
        lines: Option<u32>,
    ) -> io::Result<Child> {
        let argv = &mut self.logs_argv;
        argv.clear();
        let full = "the journalctl argument list is fixed and fits";
        argv.push(&[&self.journalctl]).expect(full);
        argv.push(&[b"--unit=myco-", name.as_bytes(), b".service"])
            .expect(full);
        argv.push(&[b"--no-pager"]).expect(full);
        argv.push(&[b"--output=short-iso"]).expect(full);
        if let Some(n) = lines {
            let mut digits = heapless::String::<10>::new();
            write!(digits, "{n}").expect("a u32 fits 10 digits");
            argv.push(&[b"--lines=", digits.as_bytes()]).expect(full);
        }
        if follow {
            argv.push(&[b"--follow"]).expect(full);
        }
        spawn::spawn(argv, &ENV)
    }

    /// Whether health changed since the last call: the node's status must be reported again.
    pub fn take_health_changed(&mut self) -> bool {
        std::mem::take(&mut self.health_changed)
    }

    /// The units not running, as the node's status lists them.
    pub fn not_running(&self) -> impl Iterator<Item = (u64, UnitState)> + '_ {
        self.installed.iter().filter_map(|u| {
            let state = match u.health {
                Health::Running => return None,
                Health::Pending => UnitState::Pending,
                Health::Starting => UnitState::Starting,
                Health::Restarting => UnitState::Restarting,
                Health::Failed => UnitState::Failed,
                Health::Stopped => UnitState::Stopped,
            };
            Some((key_hash(&u.name), state))
        })
    }

    pub fn health_of(&self, name: &str) -> Option<&Installed> {
        let key = key_hash(name);
        self.installed
            .iter()
            .find(|u| u.key == key && u.name == name)
    }

    /// One step of work: reap the running `systemctl`, reconcile if something changed, start the
    /// next command. Cheap when there is nothing to do.
    pub fn step(&mut self, node: &Node, now_ms: u64, mode: Mode) {
        if let Some((child, step, count)) = self.job.as_mut() {
            let Some(exit) = child.poll(&mut self.output) else {
                return;
            };
            let (step, count) = (*step, *count);
            self.job = None;
            self.finished(step, count, exit.success(), now_ms);
        }
        if self.dirty {
            self.dirty = false;
            self.reconcile(node, mode);
        }
        if now_ms >= self.retry_at_ms {
            self.start_next(now_ms);
        }
    }

    /// Applies `engine::reconcile`: writes new and changed units, marks removed ones.
    fn reconcile(&mut self, node: &Node, mode: Mode) {
        // Collected once: the engine walks the list for each installed unit.
        let wanted: heapless::Vec<Unit<'_>, UNITS_MAX> = node
            .placed_here()
            .filter_map(|(_, bytes)| {
                let e = Entry::decode(bytes).ok()?;
                Some(Unit {
                    name: e.body.name,
                    digest: unit_digest(bytes),
                })
            })
            .collect();
        let installed = self.installed.iter().map(|u| Unit {
            name: u.name.as_str(),
            digest: u.digest,
        });
        let mut plan: heapless::Vec<(heapless::String<63>, bool), PLAN_MAX> = heapless::Vec::new();
        engine::reconcile(mode, wanted.iter().copied(), installed, |a| {
            let (name, remove) = match a {
                Action::Install(n) | Action::Replace(n) => (n, false),
                Action::Remove(n) => (n, true),
            };
            let name = heapless::String::try_from(name).expect("service names fit 63 bytes");
            // A full plan leaves the rest for the next round.
            let _ = plan.push((name, remove));
        });
        self.dirty |= plan.is_full();
        for (name, remove) in &plan {
            if *remove {
                self.mark(name, Todo::Remove);
            } else if let Some(bytes) = node.store().get(key_hash(name)) {
                self.write_unit(name, bytes);
            }
        }
    }

    fn mark(&mut self, name: &str, todo: Todo) {
        if let Some(u) = self.installed.iter_mut().find(|u| u.name == name) {
            u.todo = todo;
        }
    }

    /// Renders and writes one unit; records it as to start (new) or restart (changed).
    fn write_unit(&mut self, name: &str, bytes: &[u8]) {
        let entry = Entry::decode(bytes).expect("stored entries decode");
        let Some(spec) = entry.body.spec.as_ref() else {
            return;
        };
        let ctx = UnitContext {
            version: entry.body.version,
            program: None,
        };
        let len = match render(name, spec, &ctx, &mut self.text) {
            Ok(len) => len,
            Err(e) => {
                let why = e.message();
                self.log.log(
                    Level::Warning,
                    format_args!("service {name} cannot run here: {why}"),
                );
                return;
            }
        };
        let digest = unit_digest(bytes);
        if let Err(e) = write_atomically(&self.unit_dir, name, digest, &self.text[..len]) {
            self.log.log(
                Level::Error,
                format_args!("cannot write the unit of {name}: {e}"),
            );
            return;
        }
        self.stats.units_written += 1;
        note(&mut self.changes, name, true, "placed");
        self.needs_reload = true;
        self.health_changed = true;
        let todo = match self.installed.iter_mut().find(|u| u.name == name) {
            Some(u) => {
                u.digest = digest;
                u.todo = if u.todo == Todo::Start {
                    Todo::Start
                } else {
                    Todo::Restart
                };
                u.todo
            }
            None => {
                let name = heapless::String::try_from(name).expect("service names fit 63 bytes");
                let unit = Installed {
                    key: key_hash(&name),
                    name,
                    digest,
                    health: Health::Pending,
                    restarts: 0,
                    todo: Todo::Start,
                };
                let _ = self.installed.push(unit);
                Todo::Start
            }
        };
        let clock = entry.body.version.clock;
        let what = if todo == Todo::Start {
            "starting"
        } else {
            "restarting for"
        };
        self.log.log(
            Level::Info,
            format_args!("service {name}: unit written, {what} version {clock}"),
        );
    }

    /// Starts the next command: disable what goes, reload after any file changed, enable what
    /// is new, restart what changed; or, with nothing pending and when due, read health.
    fn start_next(&mut self, now_ms: u64) {
        if self.job.is_some() {
            return;
        }
        let pending = |t: Todo| self.installed.iter().any(|u| u.todo == t);
        let step = if pending(Todo::Remove) {
            Step::Disable
        } else if self.needs_reload {
            Step::Reload
        } else if pending(Todo::Start) {
            Step::Enable
        } else if pending(Todo::Restart) {
            Step::Restart
        } else if !self.installed.is_empty() && now_ms >= self.next_health_ms {
            self.next_health_ms = now_ms + HEALTH_INTERVAL_MS;
            Step::Show
        } else {
            return;
        };
        self.run(step);
    }

    fn run(&mut self, step: Step) {
        self.argv.clear();
        let _ = self.argv.push(&[&self.systemctl]);
        let (verb, todo): (&[&[u8]], Option<Todo>) = match step {
            Step::Disable => (&[b"disable", b"--now"], Some(Todo::Remove)),
            Step::Reload => (&[b"daemon-reload"], None),
            Step::Enable => (&[b"enable", b"--now"], Some(Todo::Start)),
            Step::Restart => (&[b"restart"], Some(Todo::Restart)),
            Step::Show => (
                &[b"show", b"--property=Id,ActiveState,SubState,NRestarts"],
                None,
            ),
        };
        for v in verb {
            let _ = self.argv.push(&[v]);
        }
        let mut count = 0;
        if step != Step::Reload {
            let skip = if step == Step::Show {
                self.show_from
            } else {
                0
            };
            let units = self
                .installed
                .iter()
                .skip(skip)
                .filter(|u| step == Step::Show || Some(u.todo) == todo);
            for u in units.take(UNITS_PER_COMMAND) {
                if self
                    .argv
                    .push(&[b"myco-", u.name.as_bytes(), b".service"])
                    .is_err()
                {
                    break;
                }
                count += 1;
            }
        }
        self.output.clear();
        self.stats.systemctl_runs += 1;
        match spawn::spawn(&self.argv, &ENV) {
            Ok(child) => self.job = Some((child, step, count)),
            Err(e) => {
                self.stats.systemctl_failures += 1;
                self.log
                    .log(Level::Error, format_args!("cannot run systemctl: {e}"));
            }
        }
    }

    /// A command finished: take note of what it did.
    fn finished(&mut self, step: Step, count: usize, ok: bool, now_ms: u64) {
        if !ok {
            self.stats.systemctl_failures += 1;
            let out = String::from_utf8_lossy(self.output.bytes());
            self.log.log(
                Level::Warning,
                format_args!("systemctl {step:?} failed; retrying in {RETRY_MS} ms {out}"),
            );
        }
        match step {
            // A unit systemd does not know fails to disable, and goes all the same.
            Step::Disable => self.delete_removed(count),
            Step::Reload => self.needs_reload &= !ok,
            Step::Enable => self.settle(Todo::Start, count, ok),
            Step::Restart => self.settle(Todo::Restart, count, ok),
            Step::Show => {
                self.read_health();
                self.show_from += count;
                if self.show_from >= self.installed.len() || count == 0 {
                    self.show_from = 0;
                } else {
                    // The sweep goes on with the next units now, not a health interval later.
                    self.next_health_ms = now_ms;
                }
            }
        }
        if !ok {
            self.retry_at_ms = now_ms + RETRY_MS;
        }
        // Read health soon after a change, to report a unit that fails at once.
        if matches!(step, Step::Enable | Step::Restart) {
            self.next_health_ms = now_ms + 1_000;
        }
    }

    fn settle(&mut self, todo: Todo, count: usize, ok: bool) {
        if !ok {
            return;
        }
        for u in self
            .installed
            .iter_mut()
            .filter(|u| u.todo == todo)
            .take(count)
        {
            u.todo = Todo::None;
        }
    }

    fn delete_removed(&mut self, count: usize) {
        let mut i = 0;
        let mut done = 0;
        while i < self.installed.len() && done < count {
            if self.installed[i].todo != Todo::Remove {
                i += 1;
                continue;
            }
            let u = self.installed.swap_remove(i);
            let path = self.unit_dir.join(format!("myco-{}.service", u.name));
            if let Err(e) = fs::remove_file(&path) {
                self.log.log(
                    Level::Error,
                    format_args!("cannot delete {}: {e}", path.display()),
                );
            }
            self.log.log(
                Level::Info,
                format_args!(
                    "service {}: no longer placed here, stopped and removed",
                    u.name
                ),
            );
            self.stats.units_removed += 1;
            note(&mut self.changes, &u.name, true, "removed");
            self.needs_reload = true;
            self.health_changed = true;
            done += 1;
        }
    }

    /// Parses `systemctl show` blocks (`Id=`, `ActiveState=`, `SubState=`, `NRestarts=`,
    /// separated by blank lines) into each unit's health.
    fn read_health(&mut self) {
        let text = self.output.bytes();
        let mut id: &[u8] = b"";
        let (mut active, mut sub, mut restarts): (&[u8], &[u8], u32) = (b"", b"", 0);
        // A blank line ends each block; one more after the text ends the last.
        let lines = text.split(|&b| b == b'\n').chain([&b""[..]]);
        for line in lines {
            if line.is_empty() {
                self.health_changed |= apply_health(
                    &mut self.installed,
                    &mut self.changes,
                    id,
                    active,
                    sub,
                    restarts,
                );
                (id, active, sub, restarts) = (b"", b"", b"", 0);
                continue;
            }
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (key, value) = (&line[..eq], &line[eq + 1..]);
            match key {
                b"Id" => id = value,
                b"ActiveState" => active = value,
                b"SubState" => sub = value,
                b"NRestarts" => {
                    restarts = core::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                }
                _ => {}
            }
        }
    }
}

/// Sets a unit's health from one `systemctl show` block; true if it changed.
fn apply_health(
    units: &mut [Installed],
    changes: &mut heapless::Deque<Change, CHANGES_MAX>,
    id: &[u8],
    active: &[u8],
    sub: &[u8],
    restarts: u32,
) -> bool {
    let Some(name) = id
        .strip_prefix(b"myco-")
        .and_then(|n| n.strip_suffix(b".service"))
    else {
        return false;
    };
    let Some(u) = units.iter_mut().find(|u| u.name.as_bytes() == name) else {
        return false;
    };
    u.restarts = restarts;
    let before = u.health;
    u.health = match (active, sub) {
        (b"active", b"running" | b"exited") => Health::Running,
        (b"activating", b"auto-restart") => Health::Restarting,
        (b"activating", _) | (b"reloading", _) => Health::Starting,
        (b"failed", _) => Health::Failed,
        _ => Health::Stopped,
    };
    if u.health != before {
        note(changes, &u.name, false, u.health.name());
    }
    u.health != before
}

/// The digest a unit is compared by: of the entry it was rendered from (the text is a function
/// of it).
fn unit_digest(entry: &[u8]) -> u64 {
    digest(DOMAIN_ENTRY, entry)
}

fn read_header(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let first = text.lines().next()?.strip_prefix(HEADER)?;
    u64::from_str_radix(first, 16).ok()
}

/// Writes `myco-<name>.service` through a temporary file, synced and renamed, then syncs the
/// directory: systemd never reads half a unit, and a crash leaves the old one or the new one.
fn write_atomically(dir: &Path, name: &str, digest: u64, text: &[u8]) -> io::Result<()> {
    let path = dir.join(format!("myco-{name}.service"));
    let tmp = dir.join(format!(".myco-{name}.service.tmp"));
    let mut f = File::create(&tmp)?;
    writeln!(f, "{HEADER}{digest:016x}")?;
    f.write_all(text)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}
