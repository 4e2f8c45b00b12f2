//! What the executor does on this box: the difference between the units placement wants here
//! and the units installed, as a list of actions. Pure: the host reads unit files, renders unit
//! text and runs `systemctl`; this decides.
//!
//! One rule is not placement's: a box that has lost every peer keeps what it runs and starts
//! nothing new. Placement over a membership of one would hand it every service, so a box cut off
//! by a network fault would otherwise start the whole fleet's work; and a box rebooted with no
//! network keeps running what it ran (systemd restarts its enabled units at boot). A cluster of one
//! by design (no join addresses, no remembered peers) is not cut off and runs everything.

/// A unit by service name, with a digest of its text (installed) or of the text placement wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit<'a> {
    pub name: &'a str,
    /// `key_hash(name)`: compared before the name, so a round compares few names.
    pub key: u64,
    pub digest: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Write the unit and enable and start it.
    Install(&'a str),
    /// Write the new text and restart: a new version.
    Replace(&'a str),
    /// Stop and disable the unit and delete its file.
    Remove(&'a str),
}

/// Whether this box may change what it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Placement's answer is applied.
    Apply,
    /// Cut off from every peer: keep the installed units as they are.
    Keep,
}

/// `live_peers`: members not dead, this box excluded, and bridges of other zones heard
/// (`Node::peers_in_reach`); `has_peers_configured`: join addresses or
/// remembered peers exist, so being alone means being cut off.
pub fn mode(live_peers: usize, has_peers_configured: bool) -> Mode {
    if live_peers == 0 && has_peers_configured {
        Mode::Keep
    } else {
        Mode::Apply
    }
}

/// Calls `act` for each action that turns `installed` into `desired`: installs and replacements
/// in `desired`'s order from its `from`th unit on, then removals in `installed`'s order. Both
/// lists name each unit once. `from` lets a caller that plans a bounded number of actions go on
/// where its last plan stopped, so the first units cannot starve the rest.
pub fn reconcile<'a>(
    mode: Mode,
    desired: impl Iterator<Item = Unit<'a>> + Clone,
    installed: impl Iterator<Item = Unit<'a>> + Clone,
    from: usize,
    mut act: impl FnMut(Action<'a>),
) {
    if mode == Mode::Keep {
        return;
    }
    for want in desired.clone().skip(from) {
        match installed
            .clone()
            .find(|u| u.key == want.key && u.name == want.name)
        {
            None => act(Action::Install(want.name)),
            Some(have) if have.digest != want.digest => act(Action::Replace(want.name)),
            Some(_) => {}
        }
    }
    for have in installed {
        if !desired
            .clone()
            .any(|u| u.key == have.key && u.name == have.name)
        {
            act(Action::Remove(have.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapless::Vec;

    fn plan<'a>(mode: Mode, desired: &[Unit<'a>], installed: &[Unit<'a>]) -> Vec<Action<'a>, 16> {
        let mut out = Vec::new();
        reconcile(
            mode,
            desired.iter().copied(),
            installed.iter().copied(),
            0,
            |a| out.push(a).unwrap(),
        );
        out
    }

    fn u(name: &str, digest: u64) -> Unit<'_> {
        let key = crate::state::store::key_hash(name);
        Unit { name, key, digest }
    }

    #[test]
    fn installs_replaces_and_removes_only_what_differs() {
        let desired = [u("web", 1), u("db", 2), u("new", 3)];
        let installed = [u("db", 9), u("web", 1), u("old", 4)];
        assert_eq!(
            plan(Mode::Apply, &desired, &installed),
            [
                Action::Replace("db"),
                Action::Install("new"),
                Action::Remove("old")
            ]
        );
        assert!(
            plan(Mode::Apply, &desired, &desired).is_empty(),
            "at rest: nothing"
        );
    }

    #[test]
    fn a_box_cut_off_keeps_what_it_runs() {
        assert_eq!(mode(0, true), Mode::Keep);
        assert_eq!(
            mode(0, false),
            Mode::Apply,
            "a cluster of one runs everything"
        );
        assert_eq!(mode(2, true), Mode::Apply);
        let installed = [u("web", 1)];
        assert!(plan(Mode::Keep, &[u("db", 2)], &installed).is_empty());
    }
}
