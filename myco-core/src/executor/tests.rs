extern crate std;
use super::*;
use crate::config::EXECUTOR_BUDGET_BYTES;
use core::fmt::Write as _;

/// The executor fits the memory budget written in `config.rs`.
#[test]
fn executor_fits_its_budget() {
    assert!(core::mem::size_of::<Executor>() <= EXECUTOR_BUDGET_BYTES);
}

/// `systemctl show` blocks map to health: running, crash loop, failure, and a block without an
/// `Id=` or a final blank line; a unit is fresh only if loaded and needing no reload.
#[test]
fn show_output_is_read_block_by_block() {
    let text = b"Id=myco-a.service\nActiveState=active\nSubState=running\nNRestarts=0\nLoadState=loaded\nNeedDaemonReload=no\n\n\
Id=myco-b.service\nActiveState=activating\nSubState=auto-restart\nNRestarts=4\nUnitFileState=disabled\nLoadState=loaded\nNeedDaemonReload=yes\n\n\
ActiveState=failed\n\n\
Id=myco-c.service\nActiveState=failed\nSubState=failed\nNRestarts=x";
    let mut seen: heapless::Vec<Shown<'_>, 4> = heapless::Vec::new();
    parse_show(text, |s| seen.push(s).unwrap());
    assert_eq!(seen.len(), 3, "the block without Id is skipped");
    assert_eq!(
        (seen[0].id, seen[0].health),
        (&b"myco-a.service"[..], UnitHealth::Running)
    );
    assert_eq!(
        (seen[1].health, seen[1].restarts),
        (UnitHealth::Restarting, 4)
    );
    assert_eq!((seen[2].health, seen[2].restarts), (UnitHealth::Failed, 0));
    let fresh: std::vec::Vec<bool> = seen.iter().map(|s| s.fresh).collect();
    assert_eq!(
        fresh,
        [true, false, false],
        "loaded from the current file, stale, not said"
    );
}

/// Health maps to the wire's unit state and back; running is the state a status leaves out.
#[test]
fn health_maps_to_the_wire_and_back() {
    for h in UnitHealth::ALL {
        match h.state() {
            None => assert_eq!(h, UnitHealth::Running),
            Some(state) => assert_eq!(UnitHealth::from(state), h),
        }
        assert_eq!(UnitHealth::ALL[h.index()], h);
    }
}

/// An outcome without a command in flight, or with another token, changes nothing; units found
/// at boot are known once and start pending, and one not placed here is not in the status.
#[test]
fn stale_outcomes_and_boot_units() {
    let mut e = Executor::new(false);
    assert!(e.handle_installed("web", 7));
    assert!(!e.handle_installed("web", 8), "known once");
    assert!(!e.handle_installed("Not A Name", 1));
    assert!(!e.handle_command_done(Instant(0), 1, Outcome::OK));
    assert_eq!(
        e.unit("web").map(|u| (u.digest, u.health)),
        Some((7, UnitHealth::Pending))
    );
    assert_eq!(e.census()[UnitHealth::Pending.index()], 1);
    let node = crate::node::tests::node(crate::config::WAL_CHECKPOINT_BYTES);
    assert_eq!(e.not_running(&node).count(), 0);
}

/// A `systemctl` in flight for `SYSTEMCTL_TIMEOUT_MS` is to be cancelled, and asked again until
/// its outcome arrives; the failure then waits out the usual retry.
#[test]
fn a_hung_systemctl_is_cancelled() {
    use crate::config::{COMMAND_RETRY_MS, SYSTEMCTL_TIMEOUT_MS, WAL_CHECKPOINT_BYTES};
    let node = crate::node::tests::node(WAL_CHECKPOINT_BYTES);
    let mut e = Executor::new(false);
    // A unit left from an earlier run and placed nowhere now: it is to be disabled.
    assert!(e.handle_installed("web", 7));
    let issued = e.poll_command(Instant(0), &node).expect("a disable is due");
    let token = issued.token;
    assert!(matches!(
        issued.command,
        Command::Systemctl {
            verb: Verb::Disable,
            ..
        }
    ));
    assert_eq!(e.poll_cancel(Instant(SYSTEMCTL_TIMEOUT_MS - 1)), None);
    assert_eq!(e.poll_cancel(Instant(SYSTEMCTL_TIMEOUT_MS)), Some(token));
    assert_eq!(
        e.poll_cancel(Instant(SYSTEMCTL_TIMEOUT_MS + 10)),
        Some(token)
    );
    let killed_at = Instant(SYSTEMCTL_TIMEOUT_MS + 10);
    assert!(e.handle_command_done(killed_at, token, Outcome::FAILED));
    assert_eq!(e.poll_cancel(killed_at), None);
    assert_eq!(e.stats.systemctl_failures, 1);
    assert!(
        e.poll_command(killed_at, &node).is_none(),
        "waits out the retry"
    );
    let retry = Instant(killed_at.0 + COMMAND_RETRY_MS);
    assert!(e
        .poll_command(retry, &node)
        .is_some_and(|i| i.token != token));
}

/// A box with a stand-in systemd: a unit runs unless it was written from a version in `bad`, which
/// fails as soon as it starts.
struct Bench {
    node: std::boxed::Box<crate::node::Node>,
    e: Executor,
    now: u64,
    /// The digests of the unit files written, in order.
    written: std::vec::Vec<u64>,
    /// Each service's unit file: its digest, and whether systemd has (re)started it since it was
    /// written.
    files: std::collections::BTreeMap<std::string::String, (u64, bool)>,
    /// The digest of each unit as systemd last loaded it: `daemon-reload`, and `enable` and
    /// `disable` (which reload by themselves), load every file; `show` or a start of a unit it
    /// does not hold loads that one; a start uses what is loaded.
    loaded: std::collections::BTreeMap<std::string::String, u64>,
    /// The `systemctl` verbs run, in order.
    verbs: std::vec::Vec<Verb>,
    /// The builds run: service and reference.
    builds: std::vec::Vec<std::string::String>,
    /// Verbs that fail (exit non-zero, change nothing).
    failing: std::vec::Vec<Verb>,
    bad: std::vec::Vec<u64>,
}

impl Bench {
    fn new() -> Bench {
        let node = crate::node::tests::node(crate::config::WAL_CHECKPOINT_BYTES);
        Bench {
            node,
            e: Executor::new(false),
            now: 1_000,
            written: std::vec::Vec::new(),
            files: std::collections::BTreeMap::new(),
            loaded: std::collections::BTreeMap::new(),
            verbs: std::vec::Vec::new(),
            builds: std::vec::Vec::new(),
            failing: std::vec::Vec::new(),
            bad: std::vec::Vec::new(),
        }
    }

    /// Signs and submits `web` at `clock`, running `path`; returns its digest.
    fn deploy(&mut self, clock: u64, path: &'static str) -> u64 {
        self.deploy_named("web", clock, path)
    }

    /// Signs and submits service `name` at `clock`, running `path`; returns its digest.
    fn deploy_named(&mut self, name: &str, clock: u64, path: &'static str) -> u64 {
        self.deploy_replicas(name, clock, path, 1)
    }

    /// `deploy_named` with `replicas` copies.
    fn deploy_replicas(&mut self, name: &str, clock: u64, path: &'static str, replicas: u8) -> u64 {
        use crate::schema::entry::Source;
        self.deploy_source(name, clock, Source::Exec { path }, replicas)
    }

    /// Signs and submits service `name` at `clock` with a flake locked to a commit of `rev`
    /// bytes, `replicas` copies; returns its digest.
    fn deploy_flake(&mut self, name: &str, clock: u64, rev: u8, replicas: u8) -> u64 {
        use crate::config::{FLAKE_REV_BYTES, NAR_HASH_BYTES};
        use crate::schema::entry::Source;
        let hex = std::format!("{rev:02x}").repeat(FLAKE_REV_BYTES);
        let uri = std::format!("git+file:///srv/{name}?rev={hex}");
        let source = Source::Flake {
            uri: &uri,
            attr: "default",
            rev: [rev; FLAKE_REV_BYTES],
            nar_hash: [0x5c; NAR_HASH_BYTES],
        };
        self.deploy_source(name, clock, source, replicas)
    }

    fn deploy_source(
        &mut self,
        name: &str,
        clock: u64,
        source: crate::schema::entry::Source<'_>,
        replicas: u8,
    ) -> u64 {
        use crate::schema::entry::{EntryBody, ServiceSpec, Version};
        let op = crate::node::tests::operator();
        let mut spec = ServiceSpec::minimal(source);
        spec.replicas = replicas;
        let body = EntryBody {
            name,
            version: Version {
                clock,
                key_id: op.public_key().key_id(),
            },
            spec: Some(spec),
        };
        let mut bytes = [0u8; 512];
        let len = crate::crypto::sign_entry(&op, &body, &mut bytes).unwrap();
        let mut sink = crate::node::tests::Recorder::default();
        self.node
            .submit(Instant(self.now), &bytes[..len], &mut sink)
            .unwrap();
        self.e.handle_placement_changed();
        unit_digest(&bytes[..len])
    }

    /// Runs every command due, as systemd would, for `ms` of time in steps of 100 ms.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 100;
            self.build();
            while let Some(issued) = self.e.poll_command(Instant(self.now), &self.node) {
                let token = issued.token;
                let (mut stdout, mut ok) = (std::string::String::new(), true);
                match issued.command {
                    Command::WriteUnit { name, digest, .. } => {
                        self.written.push(digest);
                        self.files.insert(name.into(), (digest, false));
                    }
                    Command::Systemctl { verb, units } => {
                        self.verbs.push(verb);
                        if self.failing.contains(&verb) {
                            ok = false;
                        } else {
                            let units: std::vec::Vec<_> = units.collect();
                            self.systemd(verb, &units, &mut stdout);
                        }
                    }
                    Command::RemoveUnitFile { .. }
                    | Command::Build { .. }
                    | Command::HealthCheck { .. } => {
                        unreachable!("services placed for good, with no health check; builds have a lane of their own")
                    }
                }
                let outcome = Outcome {
                    ok,
                    stdout: stdout.as_bytes(),
                };
                assert!(self
                    .e
                    .handle_command_done(Instant(self.now), token, outcome));
            }
            if self.e.take_health_changed() {
                let mut sink = crate::node::tests::Recorder::default();
                let now = Instant(self.now);
                self.e.report_status(&mut self.node, now, 0, &mut sink);
            }
        }
    }

    /// Runs the build due, if any, at once: Nix prints one output per commit (`rev` byte in the
    /// reference), whose program the unit then runs.
    fn build(&mut self) {
        let Some(issued) = self.e.poll_build(Instant(self.now), &self.node) else {
            return;
        };
        let Command::Build { name, uri, .. } = issued.command else {
            unreachable!("the build lane issues builds")
        };
        self.builds.push(std::format!("{name} {uri}"));
        let rev = &uri[uri.len() - 2..];
        let out = std::format!("/nix/store/{rev}23456789abcdfghijklmnpqrsvwxyz-{name}");
        let stdout = std::format!(r#"[{{"drvPath":"{out}.drv","outputs":{{"out":"{out}"}}}}]"#);
        let outcome = Outcome {
            ok: true,
            stdout: stdout.as_bytes(),
        };
        let token = issued.token;
        assert!(self
            .e
            .handle_command_done(Instant(self.now), token, outcome));
    }

    /// What the stand-in systemd does for `verb` on `units`, as systemd 252 does (checked on the
    /// testbed, docs/benchmarks.md): it asserts that nothing starts from a definition older than
    /// its file.
    fn systemd<S: AsRef<str>>(
        &mut self,
        verb: Verb,
        units: &[S],
        stdout: &mut std::string::String,
    ) {
        if matches!(verb, Verb::Reload | Verb::Enable | Verb::Disable) {
            let files = self.files.iter().map(|(n, f)| (n.clone(), f.0));
            self.loaded = files.collect();
        }
        for unit in units {
            let unit = unit.as_ref();
            let name = unit.trim_start_matches("myco-");
            let name = name.trim_end_matches(".service");
            let file = self.files.get(name).map(|f| f.0);
            if let (Some(file), Verb::ShowLoad | Verb::EnableNoReload) = (file, verb) {
                // A unit systemd does not hold is loaded from its file when named.
                self.loaded.entry(name.into()).or_insert(file);
            }
            if matches!(verb, Verb::Enable | Verb::EnableNoReload | Verb::Restart) {
                assert_eq!(
                    self.loaded.get(name).copied(),
                    file,
                    "{name} started from a definition systemd had not reloaded"
                );
            }
            systemctl(&mut self.files, &self.bad, (verb, unit), stdout);
            if verb == Verb::ShowLoad {
                let stale = if self.loaded.get(name).copied() == file {
                    "no"
                } else {
                    "yes"
                };
                writeln!(
                    stdout,
                    "Id={unit}\nLoadState=loaded\nNeedDaemonReload={stale}\n"
                )
                .unwrap();
            }
        }
    }

    /// The digest of the entry of `name` in the store.
    fn digest_of(&self, name: &str) -> u64 {
        let entry = self.node.store().get_by_name(name).unwrap();
        unit_digest(&entry)
    }

    /// What this box's status lists for `web`.
    fn listed(&self) -> Option<UnitState> {
        self.listed_as("web")
    }

    /// What this box's status lists for service `name`.
    fn listed_as(&self, name: &str) -> Option<UnitState> {
        let key = key_hash(name);
        let status = self.node.own_status();
        status
            .units
            .iter()
            .find(|(k, _)| k.0 == key)
            .map(|(_, s)| *s)
    }
}

/// What the stand-in systemd does with `unit` (`myco-<name>.service`) for `verb`, over the unit
/// `files` (a unit written from a version in `bad` fails once started).
fn systemctl(
    files: &mut std::collections::BTreeMap<std::string::String, (u64, bool)>,
    bad: &[u64],
    (verb, unit): (Verb, &str),
    stdout: &mut std::string::String,
) {
    use core::fmt::Write;
    let name = unit
        .trim_start_matches("myco-")
        .trim_end_matches(".service");
    let Some((digest, started)) = files.get_mut(name) else {
        return;
    };
    match verb {
        Verb::Enable | Verb::EnableNoReload | Verb::Restart => *started = true,
        Verb::Show => {
            let failed = *started && bad.contains(digest);
            let (active, sub) = if failed {
                ("failed", "failed")
            } else {
                ("active", "running")
            };
            write!(
                    stdout,
                    "Id={unit}\nActiveState={active}\nSubState={sub}\nNRestarts=0\nUnitFileState=enabled\n\n"
                )
                .unwrap();
        }
        Verb::Disable | Verb::Reload | Verb::ShowLoad => {}
    }
}

/// A new version that fails on the first wave (this box, alone in its cluster) goes back to the
/// version before, which the box kept: the unit file is written again from it and restarted,
/// the status says `held` with the reason while the old version serves, the operator's entry
/// stays as signed, and a newer entry ends the hold and rolls out.
#[test]
fn a_failing_version_goes_back_and_holds_until_the_next_deploy() {
    use crate::config::ROLLOUT_SETTLE_MS;
    use crate::schema::message::HoldReason;
    let mut b = Bench::new();
    let v1 = b.deploy(10, "/bin/v1");
    b.run(2_000);
    assert_eq!(b.listed(), Some(UnitState::Settling), "on trial");
    b.run(ROLLOUT_SETTLE_MS + crate::config::HEALTH_INTERVAL_MS);
    assert_eq!(b.listed(), None, "settled: running, not listed");
    assert!(b.e.at_rest());

    let v2 = b.deploy(20, "/bin/v2");
    b.bad.push(v2);
    b.run(5_000);
    assert_eq!(b.written, [v1, v2, v1], "back to the kept version");
    let held = UnitState::Held {
        reason: HoldReason::UnitFailed,
        serving: true,
    };
    assert_eq!(b.listed(), Some(held));
    assert_eq!(b.e.unit("web").map(|u| u.digest), Some(v1));
    let stored = b.node.store().get_by_name("web").map(|e| unit_digest(&e));
    assert_eq!(stored, Some(v2), "the operator's entry is never rewritten");
    b.run(ROLLOUT_SETTLE_MS * 2);
    assert_eq!(
        b.written.len(),
        3,
        "held: the failing version is not tried again"
    );
    assert!(b.e.at_rest(), "a held rollout is at rest");

    let v3 = b.deploy(30, "/bin/v3");
    b.run(2_000 + ROLLOUT_SETTLE_MS + crate::config::HEALTH_INTERVAL_MS);
    assert_eq!(b.written, [v1, v2, v1, v3]);
    assert_eq!(b.listed(), None, "the next deploy rolls out and settles");
}

/// A box of the first wave that restarts finds its units on disk, but its trials were in
/// memory: a version it held (or was trying) when it stopped is tried again, so the status says
/// `held` once more, not a bare `failed` that the next wave would read as settled and take (MycoSim
/// found a box left waiting for ever on such a first wave); a version that runs settles again.
#[test]
fn a_restarted_first_wave_box_tries_its_units_again() {
    use crate::config::{HEALTH_INTERVAL_MS, ROLLOUT_SETTLE_MS};
    use crate::schema::message::HoldReason;
    let mut b = Bench::new();
    let bad = b.deploy_named("web", 10, "/bin/v1");
    let good = b.deploy_named("api", 10, "/bin/api");
    b.bad.push(bad);
    b.run(2_000);
    let held = UnitState::Held {
        reason: HoldReason::UnitFailed,
        serving: false,
    };
    assert_eq!(b.listed(), Some(held), "held before the restart");

    b.e = Executor::new(false);
    assert!(b.e.handle_installed("web", bad) && b.e.handle_installed("api", good));
    b.run(2_000);
    assert_eq!(b.listed(), Some(held), "held again after it");
    assert_eq!(
        b.listed_as("api"),
        Some(UnitState::Settling),
        "on trial again"
    );
    b.run(ROLLOUT_SETTLE_MS + HEALTH_INTERVAL_MS);
    assert_eq!(
        b.listed_as("api"),
        None,
        "settled again: running, not listed"
    );
    assert!(b.e.at_rest());
}

/// More held rollouts than one reconcile plans (`UNIT_PLAN_MAX`) do not starve the services after
/// them: a new service placed behind them in the placement order is still installed. (MycoSim
/// found boxes whose plan was filled, round after round, by the same refused replacements.)
#[test]
fn held_rollouts_do_not_starve_the_services_after_them() {
    use crate::config::{ROLLOUT_SETTLE_MS, UNIT_PLAN_MAX};
    let mut b = Bench::new();
    let names: std::vec::Vec<std::string::String> = (0..UNIT_PLAN_MAX + 16)
        .map(|i| std::format!("svc-{i}"))
        .collect();
    for name in &names {
        b.deploy_named(name, 10, "/bin/v1");
    }
    b.run(1_000);
    assert_eq!(
        b.files.len(),
        names.len(),
        "more than one plan's units, written at once"
    );
    b.run(3 * ROLLOUT_SETTLE_MS);
    assert!(b.e.at_rest(), "every first version settled");
    for name in &names {
        let v2 = b.deploy_named(name, 20, "/bin/v2");
        b.bad.push(v2);
    }
    b.run(3 * ROLLOUT_SETTLE_MS);
    let held = names
        .iter()
        .filter(|n| b.e.rollouts.held_here(n, b.digest_of(n)));
    assert_eq!(held.count(), names.len(), "every bad version held");
    // A service placed after every held one in the order reconcile walks.
    let last = b.node.placed_here().last().map(|s| s.key_hash);
    let mut late = (0..).map(|i| std::format!("late-{i}"));
    let late = late
        .find(|n| key_hash(n) > last.unwrap())
        .expect("some name sorts last");
    let digest = b.deploy_named(&late, 30, "/bin/late");
    b.run(2_000);
    assert_eq!(b.files.get(late.as_str()).map(|f| f.0), Some(digest));
}

/// A new service that systemd has never held starts with no reload at all: the executor asks
/// what systemd holds of it (`show`, which loads it from its file) and enables it with
/// `--no-reload`. A new service beside a new version starts after one reload, its `enable`'s own
/// (and no `show` first), which the version's restart needs anyway. A new version, which has no
/// enable, is reloaded before its restart. (The stand-in systemd asserts that nothing starts from
/// a definition older than its file.)
#[test]
fn a_new_service_is_enabled_without_a_reload() {
    use crate::config::{HEALTH_INTERVAL_MS, ROLLOUT_SETTLE_MS};
    let mut b = Bench::new();
    b.deploy(10, "/bin/v1");
    b.run(500);
    assert_eq!(
        b.verbs,
        [Verb::ShowLoad, Verb::EnableNoReload],
        "no reload of its own, and none by the enable"
    );
    b.run(ROLLOUT_SETTLE_MS + HEALTH_INTERVAL_MS);
    b.verbs.clear();
    b.deploy(20, "/bin/v2");
    b.deploy_named("api", 20, "/bin/api");
    b.run(500);
    let started: std::vec::Vec<Verb> = b
        .verbs
        .iter()
        .copied()
        .filter(|v| *v != Verb::Show)
        .collect();
    assert_eq!(
        started,
        [Verb::Enable, Verb::Restart],
        "the new service's enable reloads for the new version's restart too"
    );
    b.verbs.clear();
    b.run(ROLLOUT_SETTLE_MS + HEALTH_INTERVAL_MS);
    b.verbs.clear();
    b.deploy(30, "/bin/v3");
    b.run(500);
    assert_eq!(
        b.verbs[..2],
        [Verb::Reload, Verb::Restart],
        "no enable: a reload"
    );
}

/// A new unit systemd still holds from an older file (a failed unit stays loaded after it is
/// removed, and its name is deployed again) is enabled with the reload: `show` says
/// `NeedDaemonReload=yes`. Without the reload the stand-in systemd would start the old definition
/// and fail the run.
#[test]
fn a_unit_systemd_holds_from_an_older_file_is_enabled_with_the_reload() {
    let mut b = Bench::new();
    b.loaded.insert("web".into(), 1);
    b.deploy(10, "/bin/v1");
    b.run(500);
    assert_eq!(b.verbs, [Verb::ShowLoad, Verb::Enable]);
    assert!(b.e.unit("web").is_some_and(|u| u.todo == Todo::None));
}

/// A `show` of the load state that fails (an older `myco-priv` that refuses it, say) costs no
/// retry wait: the unit is enabled at once, with the reload.
#[test]
fn a_failed_look_at_the_load_state_enables_with_the_reload_at_once() {
    let mut b = Bench::new();
    b.failing.push(Verb::ShowLoad);
    b.deploy(10, "/bin/v1");
    b.run(500);
    assert_eq!(b.verbs, [Verb::ShowLoad, Verb::Enable]);
    assert!(b.e.unit("web").is_some_and(|u| u.todo == Todo::None));
}

/// A placement change right after a round that had nothing to do is applied at once: the
/// throttle (`RECONCILE_INTERVAL_MS`) holds back only the round after one that planned a
/// change. (On the testbed a deploy that came within a second of the members joining, or a
/// death within a second of a suspicion, waited for the throttle.)
#[test]
fn a_deploy_after_a_round_with_nothing_to_do_is_applied_at_once() {
    use crate::config::RECONCILE_INTERVAL_MS;
    let mut b = Bench::new();
    // A member joined, say: a round that finds nothing to change.
    b.e.handle_placement_changed();
    b.run(100);
    assert!(b.files.is_empty());
    b.deploy(10, "/bin/v1");
    b.run(100);
    assert_eq!(
        b.files.len(),
        1,
        "written in the next step, not a second later"
    );
    // A round that changed something holds the next one back.
    b.deploy_named("api", 10, "/bin/api");
    b.run(RECONCILE_INTERVAL_MS - 200);
    assert!(
        !b.files.contains_key("api"),
        "throttled after a round that acted"
    );
    b.run(200);
    assert!(
        b.files.contains_key("api"),
        "applied once the throttle ends"
    );
}

/// A box with no version to go back to (here its first) keeps running the version it held. Once
/// that unit runs again, the box still does not serve it: it leaves itself out of DNS, as its
/// peers do from its status (`Held`, not serving). MycoSim found a box answering itself while
/// every peer left it out.
#[test]
fn a_held_version_with_nothing_to_go_back_to_is_not_served_here() {
    use crate::config::HEALTH_INTERVAL_MS;
    use crate::dns::Directory;
    use crate::schema::message::HoldReason;
    let mut b = Bench::new();
    let v1 = b.deploy(10, "/bin/v1");
    b.bad.push(v1);
    b.run(2_000);
    let held = UnitState::Held {
        reason: HoldReason::UnitFailed,
        serving: false,
    };
    assert_eq!(b.listed(), Some(held));
    b.bad.clear();
    b.run(2 * HEALTH_INTERVAL_MS);
    let health = b.e.unit("web").map(|u| u.health);
    assert_eq!(health, Some(UnitHealth::Running), "systemd runs it again");
    assert_eq!(b.listed(), Some(held), "still held");
    let here = (b.node.id(), key_hash("web"));
    let served = health_on(&b.node, Some(&b.e), here, "web", None);
    assert_eq!(served, Some(UnitHealth::Failed), "not served here");
    let names = Names {
        node: &b.node,
        executor: Some(&b.e),
        own: crate::schema::addr::PeerAddr::v4([10, 0, 0, 1], 0),
    };
    let mut answered = 0;
    assert!(names.instances("web", &mut |_| answered += 1));
    assert_eq!(answered, 0, "DNS leaves this box out");
}

/// A hint that placement may have changed is looked at, not obeyed: when what a round reads of
/// the node is as it was (a member event that moved nothing placed), the executor plans no round
/// and reports no new status; a deploy after it is planned at once.
#[test]
fn a_placement_hint_that_changed_nothing_costs_no_round() {
    let mut b = Bench::new();
    b.deploy(1, "/bin/web");
    b.run(crate::config::ROLLOUT_SETTLE_MS + 2_000);
    assert_eq!(b.listed(), None, "web runs, settled");
    let _ = b.e.take_health_changed();
    b.e.handle_placement_changed();
    assert!(!b.e.at_rest(), "a hint not yet looked at is owed");
    assert!(b.e.poll_command(Instant(b.now), &b.node).is_none());
    assert!(b.e.at_rest());
    assert!(!b.e.take_health_changed(), "nothing placed moved");
    b.deploy_named("db", 1, "/bin/db");
    let issued = b.e.poll_command(Instant(b.now), &b.node);
    assert!(issued.is_some_and(|i| matches!(i.command, Command::WriteUnit { name: "db", .. })));
    assert!(b.e.take_health_changed(), "db is pending");
}

/// Scaling restarts no copy that runs: a version that differs from the running one only in
/// `replicas` is written (its unit names the new version), systemd reloads it, and the unit is
/// not restarted; a version that changes anything else is restarted as before. A unit found at
/// boot runs a version this executor did not keep, so it cannot tell: restarted.
#[test]
fn a_version_that_only_scales_is_reloaded_not_restarted() {
    use crate::config::{HEALTH_INTERVAL_MS, ROLLOUT_SETTLE_MS};
    let settle = ROLLOUT_SETTLE_MS + 2 * HEALTH_INTERVAL_MS;
    let mut b = Bench::new();
    b.deploy(10, "/bin/v1");
    b.run(settle);
    assert_eq!(b.listed(), None, "runs, settled");
    b.verbs.clear();
    let scaled = b.deploy_replicas("web", 20, "/bin/v1", 3);
    b.run(1_000);
    assert_eq!(b.files["web"].0, scaled, "the unit names the new version");
    assert!(b.verbs.contains(&Verb::Reload), "{:?}", b.verbs);
    assert!(!b.verbs.contains(&Verb::Restart), "{:?}", b.verbs);
    b.run(settle);
    assert_eq!(b.listed(), None, "the scaled version runs, settled");
    assert!(!b.verbs.contains(&Verb::Restart), "{:?}", b.verbs);

    b.verbs.clear();
    let changed = b.deploy_replicas("web", 30, "/bin/v3", 3);
    b.run(1_000);
    assert_eq!(b.files["web"].0, changed);
    assert!(
        b.verbs.contains(&Verb::Restart),
        "a new program restarts: {:?}",
        b.verbs
    );
    b.run(settle);

    b.e = Executor::new(false);
    assert!(b.e.handle_installed("web", changed));
    b.run(settle);
    b.verbs.clear();
    b.deploy_replicas("web", 40, "/bin/v3", 2);
    b.run(1_000);
    assert!(
        b.verbs.contains(&Verb::Restart),
        "not kept: restarted: {:?}",
        b.verbs
    );
}

/// A flake version that only scales its service runs the program already built for the version
/// its unit runs: no build, no restart. A new commit is built and restarted.
#[test]
fn a_flake_version_that_only_scales_is_not_built_again() {
    use crate::config::{HEALTH_INTERVAL_MS, ROLLOUT_SETTLE_MS};
    let settle = ROLLOUT_SETTLE_MS + 2 * HEALTH_INTERVAL_MS;
    let mut b = Bench::new();
    b.deploy_flake("web", 10, 0x11, 1);
    b.run(settle);
    assert_eq!(b.builds.len(), 1, "{:?}", b.builds);
    assert_eq!(b.listed(), None, "runs, settled");
    b.verbs.clear();
    let scaled = b.deploy_flake("web", 20, 0x11, 3);
    b.run(1_000);
    assert_eq!(b.builds.len(), 1, "not built again: {:?}", b.builds);
    assert_eq!(b.files["web"].0, scaled);
    assert!(!b.verbs.contains(&Verb::Restart), "{:?}", b.verbs);
    assert_eq!(b.e.stats.units_in_place, 1);
    b.run(settle);
    b.verbs.clear();
    let next = b.deploy_flake("web", 30, 0x22, 3);
    b.run(1_000);
    assert_eq!(b.builds.len(), 2, "a new commit is built: {:?}", b.builds);
    assert_eq!(b.files["web"].0, next);
    assert!(b.verbs.contains(&Verb::Restart), "{:?}", b.verbs);
}

/// The versions kept to go back to outlive a restart of the daemon when the host keeps them
/// (`rollout::encode_kept`, read back with `restore_kept`): a box whose running version starts
/// failing after the restart goes back to the version before and serves it, where a box that
/// kept nothing would hold the failing version and serve nothing.
#[test]
fn kept_versions_restored_after_a_restart_are_gone_back_to() {
    use crate::config::{HEALTH_INTERVAL_MS, ROLLOUT_SETTLE_MS};
    use crate::schema::message::HoldReason;
    let settle = ROLLOUT_SETTLE_MS + 2 * HEALTH_INTERVAL_MS;
    let mut b = Bench::new();
    let v1 = b.deploy(10, "/bin/v1");
    b.run(settle);
    let v2 = b.deploy(20, "/bin/v2");
    b.run(settle);
    assert_eq!(
        (b.files["web"].0, b.listed()),
        (v2, None),
        "v2 runs, settled"
    );
    let records: std::vec::Vec<std::vec::Vec<u8>> =
        b.e.kept()
            .iter()
            .map(|k| {
                let mut out = [0u8; rollout::KEPT_RECORD_BYTES_MAX];
                let n = rollout::encode_kept(k, &mut out).unwrap();
                out[..n].to_vec()
            })
            .collect();
    assert_eq!(records.len(), 2, "both versions kept");

    b.e = Executor::new(false);
    // A record of a service with no unit here, or garbage, is not kept.
    let (_, entry) = rollout::decode_kept(&records[0]).unwrap();
    assert!(!b.e.restore_kept(entry, None), "no unit found yet");
    assert!(b.e.handle_installed("web", v2));
    for r in &records {
        let (program, entry) = rollout::decode_kept(r).unwrap();
        assert!(b.e.restore_kept(entry, program));
        assert!(!b.e.restore_kept(entry, program), "kept once");
    }
    assert!(!b.e.restore_kept(&records[0][..10], None));
    assert!(
        !b.e.restore_kept(entry, Some("/nix/store/x/bin/web")),
        "an exec has no program"
    );
    // Version 2 now fails (the stand-in systemd reports its unit failed).
    b.bad.push(v2);
    b.run(2_000);
    assert_eq!(b.files["web"].0, v1, "the version before is written back");
    let held = UnitState::Held {
        reason: HoldReason::UnitFailed,
        serving: true,
    };
    assert_eq!(
        b.listed(),
        Some(held),
        "held, and the version before serves"
    );
}

/// A kept record reads back as written, and nothing else reads as one.
#[test]
fn kept_records_round_trip_and_garbage_is_refused() {
    let mut b = Bench::new();
    b.deploy(10, "/bin/v1");
    b.run(1_000);
    let kept = &b.e.kept()[0];
    let mut out = [0u8; rollout::KEPT_RECORD_BYTES_MAX];
    let n = rollout::encode_kept(kept, &mut out).unwrap();
    assert_eq!(
        rollout::decode_kept(&out[..n]),
        Some((None, &kept.entry[..]))
    );
    let mut flake = kept.clone();
    flake.program = Some(build::Program::try_from("/nix/store/abc-web/bin/web").unwrap());
    let n = rollout::encode_kept(&flake, &mut out).unwrap();
    let (program, entry) = rollout::decode_kept(&out[..n]).unwrap();
    assert_eq!(
        (program, entry),
        (Some("/nix/store/abc-web/bin/web"), &kept.entry[..])
    );
    assert!(
        rollout::encode_kept(kept, &mut out[..10]).is_none(),
        "too short"
    );
    for garbage in [
        &b""[..],
        b"\x01",
        b"\x02\x00\x00x",
        b"\x01\x00\x00",
        b"\x01\xff\xffx",
        b"\x01\x03\x00\xff\xfe\xfdx",
    ] {
        assert_eq!(rollout::decode_kept(garbage), None, "{garbage:?}");
    }
}

/// A flake version read back is kept only with a program in the Nix store (`<out>/bin/<name>`,
/// `out` a store path): the program is not signed, and a unit written back runs it.
#[test]
fn a_flake_version_read_back_needs_a_store_program() {
    let mut b = Bench::new();
    let digest = b.deploy_flake("web", 10, 0x11, 1);
    b.run(1_000);
    let kept = b.e.kept()[0].clone();
    let program = kept.program.as_deref().unwrap();
    assert!(program.starts_with("/nix/store/"), "{program}");
    b.e = Executor::new(false);
    assert!(b.e.handle_installed("web", digest));
    for bad in [
        None,
        Some("/etc/evil-web/bin/web"),
        Some("/nix/store/short-web/bin/web"),
    ] {
        assert!(!b.e.restore_kept(&kept.entry, bad), "{bad:?}");
    }
    assert!(b.e.restore_kept(&kept.entry, Some(program)));
}
