use super::*;
use crate::config::EXECUTOR_BUDGET_BYTES;

/// The executor fits the memory budget written in `config.rs`.
#[test]
fn executor_fits_its_budget() {
    assert!(core::mem::size_of::<Executor>() <= EXECUTOR_BUDGET_BYTES);
}

/// `systemctl show` blocks map to health: running, crash loop, failure, and a block without an
/// `Id=` or a final blank line.
#[test]
fn show_output_is_read_block_by_block() {
    let text = b"Id=myco-a.service\nActiveState=active\nSubState=running\nNRestarts=0\n\n\
Id=myco-b.service\nActiveState=activating\nSubState=auto-restart\nNRestarts=4\nUnitFileState=disabled\n\n\
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
