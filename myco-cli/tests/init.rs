//! Runs `myco init` and `myco completions` as an operator would and checks that what they write
//! works: each manifest is accepted by `myco render`, each server parses with its language's own
//! tool and, where the runtime is installed, answers HTTP on the port in PORT, and each flake.nix
//! parses with `nix-instantiate --parse` when nix is installed. Nix cannot evaluate nixpkgs here
//! (no network), so the flakes are checked for their structure, not built.
//!
//! A check whose tool is missing is skipped with a line starting `SKIPPED:` on stderr, written
//! past the harness's capture so it shows in every run, never passed silently.

mod common;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const LANGUAGES: [(&str, &[&str]); 3] = [
    ("python", &["server.py", "flake.nix", "myco.json"]),
    ("go", &["main.go", "go.mod", "flake.nix", "myco.json"]),
    (
        "node",
        &["server.js", "package.json", "flake.nix", "myco.json"],
    ),
];

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Says that a check did not run. Written to stderr directly rather than with `eprintln!`, which
/// the test harness captures, so the skip shows in every `cargo test` run.
fn skipped(what: &str, tool: &str) {
    let line = format!("SKIPPED: {what}: '{tool}' is not installed\n");
    std::io::stderr().write_all(line.as_bytes()).unwrap();
}

/// Runs `program args` in `dir` and fails the test with its output unless it exits 0.
fn run_ok(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// For each language, `myco init LANG DIR` writes exactly the listed files into a new DIR, names
/// the service after DIR, and `myco render` accepts its manifest: a unit that runs the flake's
/// program with PORT set.
#[test]
fn init_writes_a_manifest_render_accepts() {
    let dir = TempDir::new("init-render");
    for (language, files) in LANGUAGES {
        let service = format!("hello-{language}");
        let out = myco_ok(&dir, &["init", language, &service]);
        assert_eq!(text_field(&out, "name"), service);
        assert!(
            out.contains(&format!("myco render {service}/myco.json")),
            "{out}"
        );
        let mut written: Vec<_> = fs::read_dir(dir.join(&service))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        written.sort();
        let mut expected: Vec<_> = files.iter().map(|f| f.to_string()).collect();
        expected.sort();
        assert_eq!(written, expected, "{language}");
        for file in files {
            let text = fs::read_to_string(dir.join(&service).join(file)).unwrap();
            assert!(!text.contains("@NAME@"), "{language}/{file}");
        }

        let unit = myco_ok(&dir, &["render", &format!("{service}/myco.json")]);
        assert!(
            unit.contains(&format!(
                "ExecStart=\"/nix/var/myco/gcroots/{service}/bin/{service}\"\n"
            )),
            "{unit}"
        );
        assert!(unit.contains("Environment=\"PORT=8080\"\n"), "{unit}");
    }
}

/// `--name` overrides DIR's name, and `--json` prints one line naming every file written.
#[test]
fn init_takes_name_and_json() {
    let dir = TempDir::new("init-name");
    let json = myco_ok(
        &dir,
        &["init", "go", "src/Service", "--name", "api", "--json"],
    );
    assert_eq!(json.lines().count(), 1);
    assert_eq!(json_field(&json, "name"), "api");
    assert_eq!(
        json_field(&json, "files"),
        "src/Service/main.go src/Service/go.mod src/Service/flake.nix src/Service/myco.json"
    );
    let go_mod = fs::read_to_string(dir.join("src/Service/go.mod")).unwrap();
    assert!(go_mod.starts_with("module api\n"), "{go_mod}");
    let manifest = fs::read_to_string(dir.join("src/Service/myco.json")).unwrap();
    assert!(manifest.contains("\"name\": \"api\""), "{manifest}");
}

/// A name that is not a service name, from DIR or --name, and a missing or unknown language are
/// usage errors (exit 2) that write nothing.
#[test]
fn init_refuses_bad_names_and_languages() {
    let dir = TempDir::new("init-usage");
    let cases: [&[&str]; 6] = [
        &["init", "python", "My_Service"],
        &["init", "python", "ok", "--name", "-bad"],
        &["init", "python", "ok", "--name", &"a".repeat(64)],
        &["init", "rust", "ok"],
        &["init"],
        &["init", "--name", "ok", "python"],
    ];
    for args in cases {
        let out = myco(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("myco: "), "{}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "something was written"
    );
    let out = myco(&dir, &["init", "python", "My_Service"]);
    assert!(stderr(&out).contains("--name"), "{}", stderr(&out));
}

/// If any target file exists, init exits 1 naming it, and writes nothing: the existing file is
/// untouched and the other files are not created.
#[test]
fn init_refuses_to_overwrite() {
    let dir = TempDir::new("init-overwrite");
    fs::create_dir(dir.join("web")).unwrap();
    fs::write(dir.join("web/flake.nix"), "mine\n").unwrap();
    for language in ["python", "go", "node"] {
        let out = myco(&dir, &["init", language, "web"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("'web/flake.nix' already exists"),
            "{}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty());
        assert_eq!(
            fs::read_to_string(dir.join("web/flake.nix")).unwrap(),
            "mine\n"
        );
        assert_eq!(fs::read_dir(dir.join("web")).unwrap().count(), 1);
    }

    // A second init over a complete skeleton names every file and changes none.
    myco_ok(&dir, &["init", "node", "app"]);
    let before = fs::read_to_string(dir.join("app/server.js")).unwrap();
    fs::write(dir.join("app/server.js"), "edited\n").unwrap();
    let out = myco(&dir, &["init", "node", "app"]);
    assert_eq!(out.status.code(), Some(1));
    for file in ["server.js", "package.json", "flake.nix", "myco.json"] {
        assert!(
            stderr(&out).contains(&format!("'app/{file}'")),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        fs::read_to_string(dir.join("app/server.js")).unwrap(),
        "edited\n"
    );
    assert_ne!(before, "edited\n");
}

/// Each server parses with its language's own tool: Python's ast, `node --check`, `gofmt -l`
/// (which also requires gofmt's layout).
#[test]
fn servers_parse() {
    let dir = TempDir::new("init-parse");
    for (language, _) in LANGUAGES {
        myco_ok(&dir, &["init", language, language]);
    }
    run_ok(
        &dir.join("python"),
        "python3",
        &["-c", "import ast; ast.parse(open('server.py').read())"],
    );
    if installed("node") {
        run_ok(&dir.join("node"), "node", &["--check", "server.js"]);
    } else {
        skipped("node --check server.js", "node");
    }
    if installed("gofmt") {
        let unformatted = run_ok(&dir.join("go"), "gofmt", &["-l", "main.go"]);
        assert_eq!(unformatted, "", "gofmt would change main.go");
    } else {
        skipped("gofmt -l main.go", "gofmt");
    }
}

/// A port no one listens on now. Another process could take it before the server does; the
/// server would then fail to start and the test fail loudly, never pass wrongly.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> String {
    get_at("127.0.0.1", port, path).unwrap()
}

/// An error rather than a panic, so that the caller stops its server before it fails.
fn get_at(host: &str, port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect((host, port))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// How a template's server runs: language, the tool it needs, that tool's build arguments (none:
/// no build), the program and its arguments.
type ServerRun = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static [&'static str],
);

/// Each server whose runtime is installed listens on the port in PORT once it says so, answers
/// GET / with its name and GET /healthz with "ok", on IPv4 and on IPv6 (peers on links that carry
/// only IPv6 reach it at its IPv6 address; python's used to listen on IPv4 only), and refuses to
/// start without PORT.
#[test]
fn servers_answer_on_port() {
    let dir = TempDir::new("init-serve");
    // Go's server is built first and run as itself: killing `go run` would leave its child
    // listening after the test.
    let runs: [ServerRun; 3] = [
        ("python", "python3", &[], "python3", &["server.py"]),
        ("node", "node", &[], "node", &["server.js"]),
        ("go", "go", &["build", "-o", "server", "."], "server", &[]),
    ];
    for (language, tool, build, program, args) in runs {
        if !installed(tool) {
            skipped(&format!("running the {language} server"), tool);
            continue;
        }
        let service = format!("svc-{language}");
        myco_ok(&dir, &["init", language, &service]);
        let cwd = dir.join(&service);
        if !build.is_empty() {
            let built = Command::new(tool)
                .args(build)
                .current_dir(&cwd)
                .output()
                .unwrap();
            assert!(built.status.success(), "{}", stderr(&built));
        }
        let program = if build.is_empty() {
            PathBuf::from(program)
        } else {
            cwd.join(program)
        };

        let without = Command::new(&program)
            .args(args)
            .current_dir(&cwd)
            .env_remove("PORT")
            .output()
            .unwrap();
        assert!(!without.status.success(), "{language} started without PORT");
        assert!(stderr(&without).contains("PORT"), "{}", stderr(&without));

        let port = free_port();
        let mut server = Command::new(&program)
            .args(args)
            .current_dir(&cwd)
            .env("PORT", port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains(&format!("listening on port {port}")),
            "{line}"
        );
        let root = get(port, "/");
        let root_v6 = get_at("::1", port, "/");
        let health = get(port, "/healthz");
        let missing = get(port, "/nope");
        server.kill().unwrap();
        server.wait().unwrap();
        assert!(root.starts_with("HTTP/1."), "{root}");
        assert!(root.contains(" 200 "), "{root}");
        assert!(root.ends_with(&format!("hello from {service}\n")), "{root}");
        assert!(
            root_v6.as_ref().is_ok_and(|r| r.contains(" 200 ")),
            "{language} over IPv6: {root_v6:?}"
        );
        assert!(
            health.contains(" 200 ") && health.ends_with("ok\n"),
            "{health}"
        );
        assert!(missing.contains(" 404 "), "{missing}");
    }
}

/// Balanced braces, brackets and parentheses, comments left out: a structural check that needs
/// no nix. (No template holds `#` inside a string.)
fn balanced(text: &str) -> bool {
    let mut open = Vec::new();
    for line in text.lines() {
        for c in line.split('#').next().unwrap().chars() {
            let opener = match c {
                '{' | '[' | '(' => {
                    open.push(c);
                    continue;
                }
                '}' => '{',
                ']' => '[',
                ')' => '(',
                _ => continue,
            };
            if open.pop() != Some(opener) {
                return false;
            }
        }
    }
    open.is_empty()
}

/// Each flake.nix has the outputs nodes build (packages.x86_64-linux.default and
/// packages.aarch64-linux.default) and balanced delimiters, and, where nix is installed, parses
/// with `nix-instantiate --parse`, which reads the file without fetching or evaluating nixpkgs.
#[test]
fn flakes_have_the_outputs_nodes_build() {
    let dir = TempDir::new("init-flake");
    let nix = installed("nix-instantiate");
    if !nix {
        skipped("nix-instantiate --parse flake.nix", "nix-instantiate");
    }
    for (language, _) in LANGUAGES {
        myco_ok(&dir, &["init", language, language]);
        let flake = fs::read_to_string(dir.join(language).join("flake.nix")).unwrap();
        assert!(balanced(&flake), "{language}/flake.nix is unbalanced");
        for word in [
            "inputs.nixpkgs.url = \"github:NixOS/nixpkgs/",
            "outputs = { self, nixpkgs }:",
            "packages = forAllSystems",
            "\"x86_64-linux\"",
            "\"aarch64-linux\"",
            "default = pkgs.",
            &format!("\"{language}\""),
        ] {
            assert!(flake.contains(word), "{language}/flake.nix lacks {word}");
        }
        if nix {
            let parsed = run_ok(
                &dir.join(language),
                "nix-instantiate",
                &["--parse", "flake.nix"],
            );
            for word in ["outputs", "packages", "default", "forAllSystems"] {
                assert!(parsed.contains(word), "{language}: {parsed}");
            }
        }
    }
    assert!(!balanced("{ a = [ 1 ; }"));
    assert!(!balanced("{ a = 1; }}"));
    assert!(balanced("{ a = [ (f 1) ]; } # }"));
}

/// The bash script is valid bash and completes commands, a command's flags and init's languages
/// when sourced; the zsh script is valid zsh where zsh is installed. Both list every command.
#[test]
fn completions_are_valid_scripts() {
    let dir = TempDir::new("completions");
    let bash = myco_ok(&dir, &["completions", "bash"]);
    let zsh = myco_ok(&dir, &["completions", "zsh"]);
    fs::write(dir.join("myco.bash"), &bash).unwrap();
    fs::write(dir.join("_myco"), &zsh).unwrap();
    run_ok(dir.path(), "bash", &["-n", "myco.bash"]);
    let complete = |words: &str, cword: u32| {
        run_ok(
            dir.path(),
            "bash",
            &[
                "-c",
                &format!(
                    "source ./myco.bash; COMP_WORDS=({words}); COMP_CWORD={cword}; _myco; \
                     echo \"${{COMPREPLY[*]}}\""
                ),
            ],
        )
    };
    assert_eq!(complete("myco in", 1), "init\n");
    assert_eq!(complete("myco init ''", 2), "python go node\n");
    assert_eq!(complete("myco render --p", 2), "--program\n");
    assert_eq!(complete("myco completions ''", 2), "bash zsh\n");
    assert_eq!(complete("myco keygen --out ''", 3), "\n");

    let help = myco_ok(&dir, &["--help"]);
    let commands = help.split("Commands:\n").nth(1).unwrap();
    for command in commands.lines().take_while(|l| !l.is_empty()) {
        let name = command.split_whitespace().next().unwrap();
        assert!(
            bash.contains(&format!("        {name}) flags=")),
            "bash lacks {name}"
        );
        assert!(
            zsh.contains(&format!("        ({name}) flags=")),
            "zsh lacks {name}"
        );
    }
    if installed("zsh") {
        run_ok(dir.path(), "zsh", &["-n", "_myco"]);
    } else {
        skipped("zsh -n on the zsh completion script", "zsh");
    }

    for args in [
        &["completions"][..],
        &["completions", "fish"],
        &["completions", "bash", "x"],
    ] {
        let out = myco(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
