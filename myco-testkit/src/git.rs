//! Committing a flake to a git repository: Nix locks a `git+file://` flake to a commit, so the
//! tests that build flakes make one.

use crate::run::run;
use std::path::Path;
use std::process::Command;

/// The stdout of `git ARGS` run in `repo`; panics if it fails.
#[track_caller]
fn git(repo: &Path, args: &[&str]) -> String {
    let mut command = Command::new("git");
    command.args(args).current_dir(repo);
    run(command).ok().to_owned()
}

/// Commits the `flake.nix` in `repo` with `message`, making `repo` a repository (branch
/// `master`) first if it is not one: the flake's locked reference and the commit's rev.
#[track_caller]
pub fn commit_flake(repo: &Path, message: &str) -> (String, String) {
    if !repo.join(".git").exists() {
        git(repo, &["init", "-q", "-b", "master"]);
    }
    git(repo, &["add", "flake.nix"]);
    let who = ["-c", "user.name=t", "-c", "user.email=t@t"];
    git(
        repo,
        &[who[0], who[1], who[2], who[3], "commit", "-qm", message],
    );
    let rev = git(repo, &["rev-parse", "HEAD"]).trim().to_owned();
    let uri = format!("git+file://{}?ref=master&rev={rev}", repo.display());
    (uri, rev)
}
