//! `--wait` for `myco deploy` and `myco rm`: after myco-d has stored the entry, polls
//! `GET /services/NAME` until the service runs on every box placement chose (or, for a
//! tombstone, until it shows deleted with no placement), and shows how far it got.
//!
//! The judging (`Watch`) is pure: it takes the service as the daemon reported it and the time, so
//! tests drive it without a daemon or a clock. The progress line is drawn on stderr only when
//! stderr is a terminal and `NO_COLOR` is unset or empty; otherwise nothing is written until the
//! end, so logs and pipes see one plain line and no escape codes. The line is cleared before the
//! final line or error is printed, so it never mixes with them.

use crate::answers::Service;
use crate::args::Error;
use crate::client::{self, Request, QUERY_TIMEOUT};
use crate::output::terminal_safe;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the daemon is asked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// `--timeout`'s default.
pub const WAIT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// A unit failed or restarting for this long ends the wait: systemd restarts a crashing unit
/// within a second or two, so a unit that is still not up after this is unlikely to come up.
pub const FAILING_GRACE: Duration = Duration::from_secs(5);

/// How a `--wait` waits: `--timeout`, and the failing grace, which only tests change (through
/// `--failing-grace-ms`, not in the help) so that they need not wait it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub timeout: Duration,
    pub failing_grace: Duration,
}
/// The progress line is cut to this many characters so that it never wraps, since a wrapped line
/// cannot be redrawn with `\r`.
const LINE_CHARS_MAX: usize = 79;
const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

/// What the wait waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Every placed box reports `running`.
    Running,
    /// The service shows deleted with no placement, or is gone.
    Removed,
}

/// The outcome of one look at the service.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not there yet; the summary for the progress line.
    Waiting(String),
    /// Reached; the final line.
    Done(String),
    /// It will not get there by waiting; the error message.
    Failed(String),
}

/// Judges successive answers for one service. Remembers since when each box has reported
/// `failed` or `restarting`, so that a unit that stays down ends the wait early.
pub struct Watch {
    name: String,
    goal: Goal,
    socket_shown: String,
    /// Boxes seen failing, with when they were first seen so; a box that recovers is dropped.
    failing_since: Vec<(String, Instant)>,
    /// How long a box may stay failing before the wait ends (`FAILING_GRACE` but in tests).
    failing_grace: Duration,
}

impl Watch {
    pub fn new(name: &str, goal: Goal, socket: &Path, failing_grace: Duration) -> Watch {
        Watch {
            name: name.to_string(),
            goal,
            socket_shown: socket.display().to_string(),
            failing_since: Vec::new(),
            failing_grace,
        }
    }

    /// Judges the service as the daemon reported it at `now`; `None` means it answered 404.
    pub fn handle_service(&mut self, service: Option<&Service>, now: Instant) -> Verdict {
        let name = &self.name;
        let Some(service) = service else {
            return match self.goal {
                Goal::Removed => Verdict::Done(format!("{name}: removed")),
                Goal::Running => Verdict::Failed(format!(
                    "myco-d no longer holds {name} (404); something removed it while myco waited; \
                     check 'myco ls' and 'myco events'"
                )),
            };
        };
        assert_eq!(service.name, self.name, "the caller asked for this service");
        match self.goal {
            Goal::Removed => {
                if !service.deleted {
                    // A newer deploy replaced the tombstone; waiting will not remove it.
                    return Verdict::Failed(format!(
                        "{name} is deployed again (version {}, newer than the tombstone); run \
                         'myco rm' again to remove it",
                        service.version.clock
                    ));
                }
                if service.placed_on.is_empty() {
                    Verdict::Done(format!("{name}: removed"))
                } else {
                    Verdict::Waiting(format!("removing: {}", summary(service)))
                }
            }
            Goal::Running => self.judge_running(service, now),
        }
    }

    fn judge_running(&mut self, service: &Service, now: Instant) -> Verdict {
        let name = &self.name;
        if service.deleted {
            return Verdict::Failed(format!(
                "{name} was removed while myco waited (a tombstone, version {}); deploy it again \
                 with a newer --clock",
                service.version.clock
            ));
        }
        if let Some(why) = held(name, service) {
            return Verdict::Failed(why);
        }
        if let Some(why) = fails_at_once(name, service) {
            return Verdict::Failed(why);
        }
        let failing = |state: &str| matches!(state, "failed" | "restarting" | "unhealthy");
        self.failing_since.retain(|(id, _)| {
            service
                .placed_on
                .iter()
                .any(|p| &p.id == id && failing(&p.state))
        });
        for placed in service.placed_on.iter().filter(|p| failing(&p.state)) {
            if !self.failing_since.iter().any(|(id, _)| *id == placed.id) {
                self.failing_since.push((placed.id.clone(), now));
            }
        }
        let down_too_long = self
            .failing_since
            .iter()
            .find(|(_, since)| now.saturating_duration_since(*since) >= self.failing_grace);
        if let Some((id, since)) = down_too_long {
            let state = &service
                .placed_on
                .iter()
                .find(|p| &p.id == id)
                .expect("retained ids are placed")
                .state;
            return Verdict::Failed(format!(
                "{name} is {} on {} for {} s ({}); read its journal on that box with 'myco logs \
                 {name}' or 'curl --unix-socket {} \"http://localhost/logs?service={name}\"' \
                 (the local myco-d names the box if it runs elsewhere), and see 'myco events'",
                terminal_safe(state),
                short_id(id),
                now.saturating_duration_since(*since).as_secs(),
                summary(service),
                self.socket_shown,
            ));
        }
        // A box that still runs the version before (`previous`) does not run this one yet.
        let runs_this = |p: &crate::answers::Placed| {
            p.state == "running" && p.version.as_deref() != Some("previous")
        };
        if service.placed_on.iter().all(runs_this) {
            let mut line = format!("{name}: {}", summary(service));
            if (service.placed_on.len() as u64) < service.replicas {
                line += &format!(
                    " ({} replicas asked, {} boxes eligible)",
                    service.replicas,
                    service.placed_on.len()
                );
            }
            return Verdict::Done(line);
        }
        Verdict::Waiting(summary(service))
    }
}

/// Why a held rollout ends the wait: the new version failed on a box of the first wave, which
/// went back to the version before, and the rest keep it until a newer version is deployed.
fn held(name: &str, service: &Service) -> Option<String> {
    let rollout = service.rollout.as_ref().filter(|r| r.state == "held")?;
    let at = rollout.at.as_deref().unwrap_or("?");
    let reason = rollout.reason.as_deref().unwrap_or("failed");
    Some(format!(
        "the rollout of {name} version {} is held: it failed on {} ({}), which went back to the \
         version before, and the other boxes keep that version ({}); read its journal there \
         with 'myco logs {name}', then deploy a fixed version (a newer --clock)",
        service.version.clock,
        short_id(at),
        terminal_safe(reason),
        summary(service),
    ))
}

/// Why waiting for `service` to run cannot succeed, when that shows in one answer: no box is
/// eligible, a placed box runs no executor, or a build failed.
fn fails_at_once(name: &str, service: &Service) -> Option<String> {
    if service.placed_on.is_empty() {
        return Some(format!(
            "no box is eligible to run {name}: placement is empty (no live member has the \
                 arch, zone or GPU its manifest asks for); the entry is stored and will be placed \
                 when one joins; check 'myco nodes' and the manifest's constraints"
        ));
    }
    // A box that runs no executor never runs anything: waiting cannot help.
    if let Some(placed) = service.placed_on.iter().find(|p| p.state == "no-executor") {
        return Some(format!(
            "{name} will never run on {}: that box runs no services (myco-d --executor none), \
                 yet placement counts it ({}); the entry is stored and runs on the other boxes \
                 placed; start that box's myco-d with the executor to run it there",
            short_id(&placed.id),
            summary(service),
        ));
    }
    // A failed build is retried 30 s later at the soonest, doubling: waiting will not see it
    // run, so it ends the wait at once.
    if let Some(placed) = service.placed_on.iter().find(|p| p.state == "build-failed") {
        return Some(format!(
            "{name} failed to build on {} ({}); read the build log on that box with \
                 'myco logs {name}' (the box retries the build with backoff; a version that \
                 does not build leaves the one before it running)",
            short_id(&placed.id),
            summary(service),
        ));
    }
    None
}

/// `2/3 running: 3f2a09c1 running, 11aa22bb pending`.
pub fn summary(service: &Service) -> String {
    let running = service
        .placed_on
        .iter()
        .filter(|p| p.state == "running")
        .count();
    let each: Vec<String> = service
        .placed_on
        .iter()
        .map(|p| format!("{} {}", short_id(&p.id), terminal_safe(&p.state)))
        .collect();
    format!(
        "{running}/{} running: {}",
        service.placed_on.len(),
        each.join(", ")
    )
}

/// What `unknown` in a summary means, when it is there: the box has sent no status, which is
/// also what a box started with `--executor none` looks like from elsewhere.
pub fn unknown_means(summary: &str) -> &'static str {
    if summary.contains(" unknown") {
        "; 'unknown' means that box has reported no status yet (a box whose myco-d runs with \
         --executor none never does)"
    } else {
        ""
    }
}

/// A node id cut to 8 digits, as `myco ls` shows it.
fn short_id(id: &str) -> String {
    terminal_safe(id.get(..8).unwrap_or(id))
}

/// The one-line progress display on stderr, or nothing.
pub struct Progress {
    enabled: bool,
    frame: usize,
    drawn: bool,
}

impl Progress {
    /// On when stderr is a terminal and `NO_COLOR` is unset or empty (no-color.org).
    pub fn for_stderr() -> Progress {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Progress::new(std::io::stderr().is_terminal() && !no_color)
    }

    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            frame: 0,
            drawn: false,
        }
    }

    /// The bytes that redraw the line with `text`: back to the start of the line, clear it, then
    /// the spinner and the text, cut so it does not wrap.
    pub fn poll_frame(&mut self, text: &str) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let spinner = SPINNER[self.frame % SPINNER.len()];
        self.frame += 1;
        self.drawn = true;
        let line: String = format!("{spinner} {text}")
            .chars()
            .take(LINE_CHARS_MAX)
            .collect();
        Some(format!("\r\x1b[2K{line}"))
    }

    /// The bytes that clear a drawn line, if one was drawn.
    pub fn poll_clear(&mut self) -> Option<&'static str> {
        let drawn = std::mem::replace(&mut self.drawn, false);
        (self.enabled && drawn).then_some("\r\x1b[2K")
    }

    pub fn draw(&mut self, text: &str) {
        if let Some(frame) = self.poll_frame(text) {
            write_stderr(&frame);
        }
    }

    pub fn clear(&mut self) {
        if let Some(clear) = self.poll_clear() {
            write_stderr(clear);
        }
    }
}

/// Progress is a courtesy: a stderr that cannot be written is not a reason to fail the wait.
fn write_stderr(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Polls `GET /services/NAME` until `goal` is reached (prints the final line on stderr and
/// returns Ok), cannot be reached (exit 1), or `how.timeout` passes (exit 1, naming what is
/// still not there). A daemon that cannot be asked ends the wait with that error.
pub fn wait(socket: &Path, name: &str, goal: Goal, how: Wait) -> Result<(), Error> {
    assert!(myco_core::schema::entry::valid_name(name));
    // `Request` takes a static path; the process asks for one service and then exits, so
    // leaking this one short string is the simplest honest lifetime.
    let path: &'static str = Box::leak(format!("/services/{name}").into_boxed_str());
    let request = Request {
        method: "GET",
        path,
        body: &[],
        what: "the service's state",
        timeout: QUERY_TIMEOUT,
    };
    let start = Instant::now();
    let mut watch = Watch::new(name, goal, socket, how.failing_grace);
    let mut progress = Progress::for_stderr();
    let mut last: String;
    let verdict = loop {
        let answer = match client::call(socket, &request) {
            Ok(answer) => answer,
            Err(e) => {
                progress.clear();
                return Err(e);
            }
        };
        let service: Option<Service> = match answer.status {
            200 => match client::parse_json(&answer.body, &request) {
                Ok(service) => Some(service),
                Err(e) => {
                    progress.clear();
                    return Err(e);
                }
            },
            404 => None,
            _ => {
                progress.clear();
                return Err(client::status_error(&answer, &request));
            }
        };
        let now = Instant::now();
        match watch.handle_service(service.as_ref(), now) {
            Verdict::Waiting(text) => {
                progress.draw(&format!("{name}: {text}"));
                last = text;
            }
            done_or_failed => break done_or_failed,
        }
        if now.saturating_duration_since(start) >= how.timeout {
            let what = match goal {
                Goal::Running => "running everywhere",
                Goal::Removed => "removed",
            };
            break Verdict::Failed(format!(
                "{name} is not {what} after {} s ({last}); the entry is stored and the cluster \
                 keeps working on it: follow it with 'myco ls' and 'myco events', or wait longer \
                 with --timeout{}",
                how.timeout.as_secs(),
                unknown_means(&last)
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    progress.clear();
    match verdict {
        Verdict::Done(line) => {
            write_stderr(&format!("{line}\n"));
            Ok(())
        }
        Verdict::Failed(message) => Err(Error::Failed(message)),
        Verdict::Waiting(_) => unreachable!("the loop ends only when done or failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::{Placed, Version};

    fn service(deleted: bool, replicas: u64, placed: &[(&str, &str)]) -> Service {
        Service {
            name: "web".into(),
            version: Version {
                clock: 7,
                key_id: 1,
            },
            deleted,
            replicas,
            rev: None,
            placed_on: placed
                .iter()
                .map(|(id, state)| Placed {
                    id: id.to_string(),
                    state: state.to_string(),
                    version: None,
                })
                .collect(),
            rollout: None,
        }
    }

    fn watch(goal: Goal) -> Watch {
        Watch::new("web", goal, Path::new("/run/myco/myco.sock"), FAILING_GRACE)
    }

    /// Pending boxes keep the wait going with a summary; all running is done.
    #[test]
    fn running_everywhere_is_done() {
        let mut w = watch(Goal::Running);
        let t = Instant::now();
        let s = service(
            false,
            2,
            &[
                ("3f2a09c1d4e5b6a7", "running"),
                ("11aa22bb33cc44dd", "pending"),
            ],
        );
        assert_eq!(
            w.handle_service(Some(&s), t),
            Verdict::Waiting("1/2 running: 3f2a09c1 running, 11aa22bb pending".into())
        );
        let s = service(
            false,
            3,
            &[
                ("3f2a09c1d4e5b6a7", "running"),
                ("11aa22bb33cc44dd", "running"),
            ],
        );
        let Verdict::Done(line) = w.handle_service(Some(&s), t) else {
            panic!("not done")
        };
        assert!(line.starts_with("web: 2/2 running"), "{line}");
        assert!(
            line.contains("3 replicas asked, 2 boxes eligible"),
            "{line}"
        );
    }

    /// A box without an executor ends the wait at once, and says why; `unknown` is explained.
    #[test]
    fn a_box_without_an_executor_ends_the_wait() {
        let mut w = watch(Goal::Running);
        let s = service(
            false,
            2,
            &[("aaaaaaaa11", "no-executor"), ("bbbbbbbb22", "unknown")],
        );
        match w.handle_service(Some(&s), Instant::now()) {
            Verdict::Failed(m) => {
                assert!(m.contains("will never run on aaaaaaaa"), "{m}");
                assert!(m.contains("--executor none"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(unknown_means(&summary(&s)).contains("--executor none"));
        assert_eq!(unknown_means("1/1 running: aaaaaaaa running"), "");
    }

    /// A box building keeps the wait going; one whose build failed ends it at once, naming the
    /// box and how to read the build log.
    #[test]
    fn a_failed_build_ends_the_wait() {
        let mut w = watch(Goal::Running);
        let t = Instant::now();
        let building = service(false, 1, &[("3f2a09c1d4e5b6a7", "building")]);
        let Verdict::Waiting(line) = w.handle_service(Some(&building), t) else {
            panic!("not waiting")
        };
        assert!(line.contains("3f2a09c1 building"), "{line}");
        let failed = service(false, 1, &[("3f2a09c1d4e5b6a7", "build-failed")]);
        let Verdict::Failed(message) = w.handle_service(Some(&failed), t) else {
            panic!("still waiting")
        };
        assert!(message.contains("failed to build on 3f2a09c1"), "{message}");
        assert!(message.contains("myco logs web"), "{message}");
    }

    /// A box failing, restarting or unhealthy ends the wait only once it has stayed so for the
    /// grace period; one that recovers in between starts its count again.
    #[test]
    fn failing_ends_the_wait_after_the_grace() {
        let mut w = watch(Goal::Running);
        let t = Instant::now();
        let failed = service(false, 1, &[("3f2a09c1d4e5b6a7", "failed")]);
        let starting = service(false, 1, &[("3f2a09c1d4e5b6a7", "starting")]);
        assert!(matches!(
            w.handle_service(Some(&failed), t),
            Verdict::Waiting(_)
        ));
        assert!(matches!(
            w.handle_service(Some(&starting), t + Duration::from_secs(3)),
            Verdict::Waiting(_)
        ));
        let t = t + Duration::from_secs(4);
        assert!(matches!(
            w.handle_service(Some(&failed), t),
            Verdict::Waiting(_)
        ));
        let Verdict::Failed(message) = w.handle_service(Some(&failed), t + FAILING_GRACE) else {
            panic!("still waiting")
        };
        assert!(message.contains("failed on 3f2a09c1"), "{message}");
        assert!(message.contains("logs?service=web"), "{message}");
        // A box whose health checks fail is failing too.
        let mut w = watch(Goal::Running);
        let unhealthy = service(false, 1, &[("3f2a09c1d4e5b6a7", "unhealthy")]);
        assert!(matches!(
            w.handle_service(Some(&unhealthy), t),
            Verdict::Waiting(_)
        ));
        let Verdict::Failed(message) = w.handle_service(Some(&unhealthy), t + FAILING_GRACE) else {
            panic!("still waiting")
        };
        assert!(message.contains("unhealthy on 3f2a09c1"), "{message}");
    }

    /// Empty placement, a tombstone and a 404 end a deploy's wait; a removal is done on a
    /// tombstone without placement or a 404, and fails if the service was deployed again.
    #[test]
    fn dead_ends_and_removal() {
        let t = Instant::now();
        let mut w = watch(Goal::Running);
        let Verdict::Failed(m) = w.handle_service(Some(&service(false, 2, &[])), t) else {
            panic!()
        };
        assert!(m.contains("no box is eligible"), "{m}");
        assert!(matches!(
            w.handle_service(Some(&service(true, 0, &[])), t),
            Verdict::Failed(_)
        ));
        assert!(matches!(w.handle_service(None, t), Verdict::Failed(_)));

        let mut w = watch(Goal::Removed);
        assert!(matches!(
            w.handle_service(Some(&service(true, 0, &[("3f2a09c1", "running")])), t),
            Verdict::Waiting(_)
        ));
        assert!(matches!(
            w.handle_service(Some(&service(true, 0, &[])), t),
            Verdict::Done(_)
        ));
        assert!(matches!(w.handle_service(None, t), Verdict::Done(_)));
        assert!(matches!(
            w.handle_service(Some(&service(false, 1, &[])), t),
            Verdict::Failed(_)
        ));
    }

    /// A disabled display writes nothing; an enabled one redraws from the line's start, spins,
    /// never passes 79 characters and clears only what it drew.
    #[test]
    fn progress_frames() {
        let mut off = Progress::new(false);
        assert_eq!(off.poll_frame("x"), None);
        assert_eq!(off.poll_clear(), None);

        let mut on = Progress::new(true);
        assert_eq!(on.poll_clear(), None);
        assert_eq!(on.poll_frame("web: 0/1").unwrap(), "\r\x1b[2K| web: 0/1");
        assert_eq!(on.poll_frame("web: 0/1").unwrap(), "\r\x1b[2K/ web: 0/1");
        let long = on.poll_frame(&"x".repeat(200)).unwrap();
        assert_eq!(long.chars().count(), "\r\x1b[2K".len() + LINE_CHARS_MAX);
        assert_eq!(on.poll_clear(), Some("\r\x1b[2K"));
        assert_eq!(on.poll_clear(), None);
    }
}
