//! What systemd says of a unit, and the parser of `systemctl show` output that says it.
//!
//! [`UnitHealth`] is the one health enum of Myco: the executor keeps it per installed unit, the
//! API and the metrics name it, and it maps both ways to the wire's [`UnitState`] (where running,
//! the default, is not listed). The parser is pure and never fails: a block it cannot read names
//! no unit of ours and is skipped.

use crate::schema::message::UnitState;

/// How a unit does, as systemd reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitHealth {
    /// Written, not yet started or not yet read back.
    Pending,
    Running,
    Starting,
    /// Exited and waiting to be restarted by `Restart=`: a crash loop shows as this.
    Restarting,
    Failed,
    Stopped,
    /// A flake service waiting for or running its build; no unit of this version yet.
    Building,
    /// A flake service whose last build failed.
    BuildFailed,
    /// systemd runs it, but its health check failed `failures` times in a row (`health.rs`);
    /// until a check passes (or, with no entry at hand to check it, until restarted).
    Unhealthy,
}

impl UnitHealth {
    pub const ALL: [UnitHealth; 9] = [
        UnitHealth::Pending,
        UnitHealth::Running,
        UnitHealth::Starting,
        UnitHealth::Restarting,
        UnitHealth::Failed,
        UnitHealth::Stopped,
        UnitHealth::Building,
        UnitHealth::BuildFailed,
        UnitHealth::Unhealthy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnitHealth::Pending => "pending",
            UnitHealth::Running => "running",
            UnitHealth::Starting => "starting",
            UnitHealth::Restarting => "restarting",
            UnitHealth::Failed => "failed",
            UnitHealth::Stopped => "stopped",
            UnitHealth::Building => "building",
            UnitHealth::BuildFailed => "build-failed",
            UnitHealth::Unhealthy => "unhealthy",
        }
    }

    /// Its place in [`UnitHealth::ALL`], for counting by health.
    pub fn index(self) -> usize {
        self as usize
    }

    /// How a status lists it: `None` for running, which a status leaves out.
    pub fn state(self) -> Option<UnitState> {
        match self {
            UnitHealth::Running => None,
            UnitHealth::Pending => Some(UnitState::Pending),
            UnitHealth::Starting => Some(UnitState::Starting),
            UnitHealth::Restarting => Some(UnitState::Restarting),
            UnitHealth::Failed => Some(UnitState::Failed),
            UnitHealth::Stopped => Some(UnitState::Stopped),
            UnitHealth::Building => Some(UnitState::Building),
            UnitHealth::BuildFailed => Some(UnitState::BuildFailed),
            UnitHealth::Unhealthy => Some(UnitState::Unhealthy),
        }
    }

    /// From systemd's `ActiveState` and `SubState`. A oneshot that exited cleanly counts as
    /// running: it did what it was placed here to do.
    pub fn from_states(active: &[u8], sub: &[u8]) -> UnitHealth {
        match (active, sub) {
            (b"active", b"running" | b"exited") => UnitHealth::Running,
            (b"activating", b"auto-restart") => UnitHealth::Restarting,
            (b"activating", _) | (b"reloading", _) => UnitHealth::Starting,
            (b"failed", _) => UnitHealth::Failed,
            _ => UnitHealth::Stopped,
        }
    }
}

impl From<UnitState> for UnitHealth {
    fn from(state: UnitState) -> UnitHealth {
        match state {
            // Updating is pending for the placed version; DNS tells it apart (`Names`).
            // So is a held one that serves the version before (DNS answers it, `Names`); one
            // where nothing serves is down.
            UnitState::Pending | UnitState::Updating | UnitState::Held { serving: true, .. } => {
                UnitHealth::Pending
            }
            UnitState::Held { serving: false, .. } => UnitHealth::Failed,
            // A version on trial runs.
            UnitState::Settling => UnitHealth::Running,
            UnitState::Starting => UnitHealth::Starting,
            UnitState::Restarting => UnitHealth::Restarting,
            UnitState::Failed => UnitHealth::Failed,
            UnitState::Stopped => UnitHealth::Stopped,
            UnitState::Building | UnitState::FirstBuilding => UnitHealth::Building,
            UnitState::BuildFailed | UnitState::FirstBuildFailed => UnitHealth::BuildFailed,
            UnitState::Unhealthy => UnitHealth::Unhealthy,
        }
    }
}

/// One unit's block of `systemctl show` with [`SHOW_PROPERTIES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown<'a> {
    /// The unit name, `myco-web.service`.
    pub id: &'a [u8],
    pub health: UnitHealth,
    pub restarts: u32,
    /// `UnitFileState=disabled`: the unit is installed but not enabled (a crash between a
    /// disable and the file's deletion leaves one so). Any other or no value is false.
    pub disabled: bool,
    /// `LoadState=loaded` and `NeedDaemonReload=no`: what systemd holds of the unit is its file
    /// as it is now, so starting it needs no `daemon-reload`. `show` itself loads a unit systemd
    /// did not hold (never loaded, or dropped once stopped), from the file; one it holds from an
    /// older file (a failed unit stays loaded after its file is removed and written again) says
    /// `NeedDaemonReload=yes`. Any other or no value is false.
    pub fresh: bool,
}

/// The properties the executor asks `systemctl show` for.
pub const SHOW_PROPERTIES: &str =
    "--property=Id,ActiveState,SubState,NRestarts,UnitFileState,LoadState,NeedDaemonReload";

/// Calls `f` for each block of `systemctl show` output (`Key=value` lines, blocks separated by
/// blank lines), in order. A block without `Id=` is skipped; an unreadable `NRestarts` is 0.
pub fn parse_show<'a>(text: &'a [u8], mut f: impl FnMut(Shown<'a>)) {
    let (mut id, mut active, mut sub, mut restarts): (&[u8], &[u8], &[u8], u32) =
        (b"", b"", b"", 0);
    let (mut disabled, mut loaded, mut current) = (false, false, false);
    // A blank line ends each block; one more after the text ends the last.
    let lines = text.split(|&b| b == b'\n').chain([&b""[..]]);
    for line in lines {
        if line.is_empty() {
            if !id.is_empty() {
                let health = UnitHealth::from_states(active, sub);
                f(Shown {
                    id,
                    health,
                    restarts,
                    disabled,
                    fresh: loaded && current,
                });
            }
            (id, active, sub, restarts) = (b"", b"", b"", 0);
            (disabled, loaded, current) = (false, false, false);
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
            b"UnitFileState" => disabled = value == b"disabled",
            b"LoadState" => loaded = value == b"loaded",
            b"NeedDaemonReload" => current = value == b"no",
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
