//! Runs `myco render` as an operator would, and reads what it prints with myco-core's own unit
//! checker: the text must be exactly the unit of the manifest, not merely look like one. The
//! corpus in tests/units (which `make units-check` also feeds to systemd-analyze) is rendered too.

mod common;

use common::*;
use myco_cli::manifest::Manifest;
use myco_core::schema::entry::Version;
use myco_core::unit::check::check;
use myco_core::unit::UnitContext;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Checks that `text` is the unit of the manifest `manifest` at `clock`, with `program`.
fn assert_unit_of(manifest: &[u8], text: &str, clock: u64, program: Option<&str>) {
    let manifest = Manifest::parse(manifest).unwrap();
    let body = manifest.service(Version { clock, key_id: 0 });
    let ctx = UnitContext {
        version: body.version,
        program,
    };
    if let Err(e) = check(
        text.as_bytes(),
        body.name,
        body.spec.as_ref().unwrap(),
        &ctx,
    ) {
        panic!("{e}\n{text}");
    }
}

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/units")
        .join(kind);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// The unit of a full manifest, printed to stdout, is exactly that manifest's unit: the flake's
/// program at its default path with the arguments quoted, the migrations, the environment, and
/// the GPU's and low port's lines. `--clock` and `--program` change exactly what they name.
#[test]
fn render_prints_the_manifests_unit() {
    let dir = TempDir::new("render");
    fs::write(dir.join("web.json"), FULL_MANIFEST).unwrap();
    let text = myco_ok(&dir, &["render", "web.json"]);
    assert_unit_of(FULL_MANIFEST.as_bytes(), &text, 0, None);
    assert!(text.starts_with("# myco-web.service: "), "{text}");
    for line in [
        "ExecStart=\"/nix/var/myco/gcroots/web/bin/web\" \"--port\" \"8080\"\n",
        "ExecStartPre=\"/bin/migrate\" \"--up\"\n",
        "Environment=\"LEVEL=info\"\nEnvironment=\"MODE=prod\"\n",
        "X-Myco-Source=\"git+https://host/repo?ref=main#server\"\n",
        "X-Myco-Clock=0\n",
        "DynamicUser=yes\n",
        "ProtectSystem=strict\n",
        "TasksMax=100\n",
        "OOMScoreAdjust=500\n",
        "BindPaths=/dev/dri\n",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
    ] {
        assert!(text.contains(line), "lacks {line}");
    }

    let program = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-web-1.0/bin/web-server";
    let text = myco_ok(
        &dir,
        &[
            "render",
            "web.json",
            "--clock",
            "1700000000000",
            "--program",
            program,
        ],
    );
    assert_unit_of(
        FULL_MANIFEST.as_bytes(),
        &text,
        1_700_000_000_000,
        Some(program),
    );
    assert!(text.contains("X-Myco-Clock=1700000000000\n"));
    assert!(text.contains(&format!("ExecStart=\"{program}\" \"--port\"")));

    // Without a path, myco.json in the working directory.
    fs::write(dir.join("myco.json"), FULL_MANIFEST).unwrap();
    assert_eq!(
        myco_ok(&dir, &["render"]),
        myco_ok(&dir, &["render", "web.json"])
    );
}

/// `--json` prints one line whose text is the unit; `--out` writes the unit (0644), prints a
/// summary, and never replaces a file.
#[test]
fn render_json_and_out() {
    let dir = TempDir::new("render-out");
    fs::write(dir.join("web.json"), FULL_MANIFEST).unwrap();
    let plain = myco_ok(&dir, &["render", "web.json"]);
    let json = myco_ok(&dir, &["render", "web.json", "--json"]);
    assert_eq!(json.lines().count(), 1);
    assert_eq!(json_field(&json, "name"), "web");
    assert_eq!(json_field(&json, "unit"), "myco-web.service");
    assert_eq!(json_field(&json, "size_bytes"), plain.len().to_string());
    let escaped = plain
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    assert!(
        json.contains(&format!("\"text\":\"{escaped}\"}}")),
        "{json}"
    );

    let summary = myco_ok(&dir, &["render", "web.json", "--out", "myco-web.service"]);
    assert_eq!(text_field(&summary, "unit"), "myco-web.service");
    assert_eq!(text_field(&summary, "path"), "myco-web.service");
    let path = dir.join("myco-web.service");
    assert_eq!(fs::read_to_string(&path).unwrap(), plain);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let again = myco(
        &dir,
        &["render", "web.json", "--out", "myco-web.service", "--json"],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), plain);
}

/// Every manifest of the corpus's ok/ renders to exactly its unit; every manifest of refused/
/// exits 1 naming the field at fault, and prints no unit.
#[test]
fn render_corpus() {
    let dir = TempDir::new("render-corpus");
    let ok = corpus("ok");
    assert!(ok.len() >= 10, "{ok:?}");
    for path in ok {
        let shown = path.to_str().unwrap();
        let text = myco_ok(&dir, &["render", shown]);
        assert_unit_of(&fs::read(&path).unwrap(), &text, 0, None);
    }
    let expected = [
        (
            "bad-name.json",
            "is refused: name \"web.service\\nUser=root\": ",
        ),
        ("carriage-return-flake.json", "is refused: flake: "),
        ("env-name.json", "is refused: env \"A=B C\": "),
        // Refused by entry validation itself: no entry the cluster accepts fails to render.
        ("exec-backslash.json", "is refused: exec: "),
        ("exec-dollar.json", "is refused: exec: "),
        ("exec-quote.json", "is refused: exec: "),
        ("exec-relative.json", "is refused: exec: "),
        ("exec-trailing-slash.json", "is refused: exec: "),
        ("migration-double-quote.json", "is refused: migrations[0]: "),
        ("newline-arg.json", "is refused: args[1]: "),
        ("newline-env.json", "is refused: env \"V\": "),
        ("noncharacter-arg.json", "is refused: args[0]: "),
        ("noncharacter-env.json", "is refused: env \"V\": "),
        ("nul-migration.json", "is refused: migrations[0]: "),
    ];
    let refused = corpus("refused");
    assert_eq!(refused.len(), expected.len(), "{refused:?}");
    for (path, (file, needle)) in refused.iter().zip(expected) {
        assert!(path.ends_with(file), "{path:?} is not {file}");
        let shown = path.to_str().unwrap();
        let out = myco(&dir, &["render", shown]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert!(out.stdout.is_empty(), "{file}");
        assert!(
            err.starts_with(&format!("myco: manifest '{shown}' {needle}")),
            "{file}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// A bad command line exits 2 naming the flag; `--program` for an exec manifest exits 1; nothing
/// is written either way.
#[test]
fn render_refusals() {
    let dir = TempDir::new("render-refusals");
    fs::write(dir.join("web.json"), FULL_MANIFEST).unwrap();
    fs::write(
        dir.join("db.json"),
        r#"{"name": "db", "exec": "/usr/bin/postgres"}"#,
    )
    .unwrap();
    let usage: [(&[&str], &str); 6] = [
        (&["render", "web.json", "--clock", "soon"], "--clock"),
        (&["render", "web.json", "--program", "bin/web"], "--program"),
        (
            &["render", "web.json", "--program", "/nix/store/x/bin/$web"],
            "--program",
        ),
        (&["render", "web.json", "--colour", "red"], "--colour"),
        (&["render", "web.json", "db.json"], "db.json"),
        (&["render", "web.json", "--out"], "--out"),
    ];
    for (args, flag) in usage {
        let out = myco(&dir, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("myco: ") && err.contains(flag),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
    let out = myco(
        &dir,
        &["render", "db.json", "--program", "/nix/store/x/bin/db"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("runs exec; remove --program"),
        "{}",
        stderr(&out)
    );
    let out = myco(&dir, &["render", "missing.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read manifest 'missing.json'"));
    let mut left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["db.json", "web.json"]);
}
