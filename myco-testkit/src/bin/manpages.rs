//! `manpages OUTDIR`: writes `myco.1`, `myco-d.8`, `myco-priv.8` and `myco.json.5` into OUTDIR, made from what the
//! real binaries print for `--help` (found as the kit finds them: `MYCO_BIN_DIR`, else built) and
//! from `docs/myco-json.md`, so the pages say exactly what the help and the docs say
//! (`myco_testkit::man` describes the conversion). The binaries must run on this machine; the
//! pages do not depend on the architecture, so the aarch64 package takes the same ones.

use myco_testkit::{bins, man};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: manpages OUTDIR");
        return ExitCode::from(2);
    };
    let pages = [
        ("myco.1", myco_page()),
        ("myco-d.8", daemon_page()),
        ("myco-priv.8", helper_page()),
        ("myco.json.5", manifest_page()),
    ];
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("manpages: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    for (name, text) in pages {
        let path = out.join(name);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("manpages: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}

/// What `program args` prints; the page cannot be made without it.
fn output(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed",
        program.display()
    );
    String::from_utf8(out.stdout).expect("help text is UTF-8")
}

/// `myco --version` without the program's name.
fn version() -> String {
    output(bins::cli(), &["--version"]).trim().to_string()
}

/// A help text's first line, `program: what it is`, and the rest.
fn split_title(help: &str) -> (&str, &str) {
    let (title, body) = help.split_once('\n').expect("a help text has a title line");
    let summary = title.split_once(": ").map_or(title, |(_, s)| s);
    (summary, body)
}

/// myco(1): the top-level help, then every command's own help under its name.
fn myco_page() -> String {
    let help = output(bins::cli(), &["--help"]);
    let (summary, body) = split_title(&help);
    let mut page = man::header("myco", 1, &version(), "myco", summary);
    page += ".SH DESCRIPTION\n";
    page += &man::help_to_roff(body);
    page += ".SH COMMANDS\n";
    for command in commands(body) {
        page += &format!(".SS \"myco {}\"\n", man::literal(&command));
        page += &man::help_to_roff(&output(bins::cli(), &[&command, "--help"]));
    }
    page + ".SH \"SEE ALSO\"\n\\fBmyco\\-d\\fR(8), \\fBmyco.json\\fR(5)\n"
}

/// The command names listed under `Commands:` in the top-level help.
fn commands(body: &str) -> Vec<String> {
    let list = body
        .split_once("Commands:\n")
        .map_or("", |(_, rest)| rest.split("\n\n").next().unwrap_or(""));
    let names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "myco --help lists its commands");
    names
}

/// myco-d(8): the daemon's help, and where the package puts its configuration.
fn daemon_page() -> String {
    let help = output(bins::daemon(), &["--help"]);
    let (summary, body) = split_title(&help);
    let mut page = man::header("myco-d", 8, &version(), "myco-d", summary);
    page += ".SH DESCRIPTION\n";
    page += &man::help_to_roff(body);
    page += ".SH FILES\n";
    for (path, what) in FILES {
        page += &format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            man::literal(path),
            man::escape(what)
        );
    }
    page + ".SH \"SEE ALSO\"\n\\fBmyco\\fR(1), \\fBmyco.json\\fR(5), \\fBsystemd.service\\fR(5)\n"
}

/// myco-priv(8): the helper's help; systemd starts it, nobody runs it by hand.
fn helper_page() -> String {
    let help = output(bins::helper(), &["--help"]);
    let (summary, body) = split_title(&help);
    let mut page = man::header("myco-priv", 8, &version(), "myco-priv", summary);
    page += ".SH DESCRIPTION\n";
    page += &man::help_to_roff(body);
    page + ".SH \"SEE ALSO\"\n\\fBmyco\\-d\\fR(8), \\fBsystemd.socket\\fR(5)\n"
}

/// The files of an installed daemon (systemd/myco-d.service and its env example say the same).
const FILES: [(&str, &str); 5] = [
    (
        "/etc/myco/myco-d.env",
        "MYCO_OPERATOR and MYCO_ARGS for the unit, made from the installed examples/myco-d.env.example.",
    ),
    (
        "/etc/myco/node.key",
        "This node's key (myco keygen), mode 0600; the unit starts only once it exists.",
    ),
    (
        "/etc/myco/node.cert",
        "This node's certificate (myco cert); the unit starts only once it exists.",
    ),
    (
        "/var/lib/myco",
        "The write-ahead log, snapshots, peers, the disk reserve and the flight recorder.",
    ),
    ("/run/myco/myco.sock", "The API socket that myco talks to."),
];

/// myco.json(5): docs/myco-json.md.
fn manifest_page() -> String {
    let path = bins::workspace_root().join("docs/myco-json.md");
    let markdown = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut page = man::header(
        "myco.json",
        5,
        &version(),
        "myco.json",
        "the manifest of a Myco service",
    );
    page += ".SH DESCRIPTION\n";
    page += &man::markdown_to_roff(&markdown);
    page + ".SH \"SEE ALSO\"\n\\fBmyco\\fR(1), \\fBmyco\\-d\\fR(8)\n"
}
