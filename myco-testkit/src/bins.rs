//! Finding the binaries under test. Cargo exposes `CARGO_BIN_EXE_*` only to the tests of the crate
//! that defines the binary, so the kit looks for `myco-d` and `myco` next to the running test or
//! bench executable (`target/<profile>/deps/..`), where `cargo build`, `cargo test` and `cargo
//! nextest run` put them. If one is missing, or older than the sources it is built from (as after
//! `cargo test -p myco-tests` following an edit), the kit runs `cargo build -p <its package>` once
//! per process, in the same profile. `MYCO_BIN_DIR` names another directory (release binaries, an
//! install) and turns that build off.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The daemon, `myco-d`, found (and if need be built) once per process.
pub fn daemon() -> &'static Path {
    static DAEMON: OnceLock<PathBuf> = OnceLock::new();
    DAEMON.get_or_init(|| find("myco-d", "myco-host", &["myco-core", "myco-host"]))
}

/// The privileged helper, `myco-priv`, found (and if need be built) once per process.
pub fn helper() -> &'static Path {
    static HELPER: OnceLock<PathBuf> = OnceLock::new();
    HELPER.get_or_init(|| find("myco-priv", "myco-host", &["myco-core", "myco-host"]))
}

/// The operator's tool, `myco`, found (and if need be built) once per process.
pub fn cli() -> &'static Path {
    static CLI: OnceLock<PathBuf> = OnceLock::new();
    CLI.get_or_init(|| find("myco", "myco-cli", &["myco-core", "myco-cli"]))
}

/// The workspace's top directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("myco-testkit is inside the workspace")
        .to_path_buf()
}

/// `target/<profile>`: where the running executable's binaries are.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the executable knows its own path");
    let dir = exe.parent().expect("an executable lives in a directory");
    // Tests and benches live in target/<profile>/deps, binaries in target/<profile>.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .expect("deps is inside the profile")
            .to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn find(name: &str, package: &str, sources: &[&str]) -> PathBuf {
    if let Some(dir) = std::env::var_os("MYCO_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(path.is_file(), "MYCO_BIN_DIR has no {}", path.display());
        return path;
    }
    let profile_dir = profile_dir();
    let path = profile_dir.join(name);
    if let Some(why) = needs_build(&path, sources) {
        build(&profile_dir, package, &why);
    }
    assert!(
        path.is_file(),
        "{} is missing after building; run 'cargo build -p {package}' or set MYCO_BIN_DIR",
        path.display()
    );
    path
}

/// Why the binary at `path` must be (re)built, if it must.
fn needs_build(path: &Path, sources: &[&str]) -> Option<String> {
    let Ok(built) = fs::metadata(path).and_then(|m| m.modified()) else {
        return Some(format!("{} is missing", path.display()));
    };
    let root = workspace_root();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for krate in sources {
        newest_file(&root.join(krate).join("src"), &mut newest);
        newest_file(&root.join(krate).join("Cargo.toml"), &mut newest);
    }
    newest_file(&root.join("Cargo.lock"), &mut newest);
    match newest {
        Some((time, source)) if time > built => Some(format!(
            "{} is newer than {}",
            source.display(),
            path.display()
        )),
        _ => None,
    }
}

fn newest_file(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(meta) = fs::metadata(path) else { return };
    if meta.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            newest_file(&entry.path(), newest);
        }
        return;
    }
    if let Ok(time) = meta.modified() {
        if newest.as_ref().is_none_or(|(t, _)| time > *t) {
            *newest = Some((time, path.to_path_buf()));
        }
    }
}

fn build(profile_dir: &Path, package: &str, why: &str) {
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let profile = if profile == "debug" { "dev" } else { profile };
    eprintln!("myco-testkit: {why}; running cargo build -p {package} --bins --profile {profile}");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", package, "--bins", "--profile", profile])
        .current_dir(workspace_root())
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "cargo build -p {package} failed: {status}"
    );
}
