//! `myco init`: writes a skeleton service for one language into a directory: a small HTTP server
//! that listens on the port in its `PORT` variable, the `flake.nix` a node builds it with, and
//! the `myco.json` that deploys it. `myco render` accepts the manifest as written.
//!
//! The templates are embedded in the binary (templates/), so `myco init` needs no files beside
//! it. They hold `@NAME@` wherever the service's name goes; the name is a DNS label, which reads
//! the same inside a JSON string, a Nix string, a Go module path and source code, so substitution
//! needs no quoting. No file is ever replaced: every target is checked before the first is
//! written, and each is created with `create_new`.

use crate::args::{Error, Flags, NAME_RULE};
use crate::files::{self, PUBLIC_MODE};
use crate::output::{self, Value};
use myco_core::schema::entry::valid_name;
use pico_args::Arguments;
use std::path::{Path, PathBuf};

pub const INIT_HELP: &str = "\
Usage: myco init python|go|node [DIR] [--name NAME] [--json]

Writes a skeleton service into DIR (default: the current directory; created if missing): a small
HTTP server that answers GET / and GET /healthz on the port in its PORT environment variable,
the flake.nix that builds it (packages.x86_64-linux.default and packages.aarch64-linux.default),
and a myco.json that runs it with PORT=8080 on two boxes. No existing file is replaced: if any
of them exists, nothing is written.

  python  server.py (standard library http.server), flake.nix, myco.json
  go      main.go and go.mod (net/http), flake.nix, myco.json
  node    server.js and package.json (node:http), flake.nix, myco.json

Then push DIR to a git repository, set \"flake\" in myco.json to it, and check and deploy with
'myco render' and 'myco deploy'.

Options:
  --name NAME  The service's name (default: DIR's name). A DNS label: 1 to 63 of a-z, 0-9 and
               '-', not starting or ending with '-'
  --json       Print the summary as one JSON line
  -h, --help   Print this help

Exit status: 0 written; 1 a file exists or I/O failed (nothing written, or, on an I/O failure,
the files listed as written so far); 2 bad command line, including a name that is not a service
name.
";

/// One file of a skeleton: its path inside DIR and its text, with `@NAME@` for the name.
struct Template {
    path: &'static str,
    text: &'static str,
}

struct Language {
    name: &'static str,
    files: &'static [Template],
}

/// Where the name goes in a template. Nothing else in the templates looks like it.
const NAME_MARK: &str = "@NAME@";

const MANIFEST: Template = Template {
    path: "myco.json",
    text: include_str!("../templates/myco.json"),
};

/// The languages in the order the help lists them; the server file comes first in each.
const LANGUAGES: [Language; 3] = [
    Language {
        name: "python",
        files: &[
            Template {
                path: "server.py",
                text: include_str!("../templates/python/server.py"),
            },
            Template {
                path: "flake.nix",
                text: include_str!("../templates/python/flake.nix"),
            },
            MANIFEST,
        ],
    },
    Language {
        name: "go",
        files: &[
            Template {
                path: "main.go",
                text: include_str!("../templates/go/main.go"),
            },
            Template {
                path: "go.mod",
                text: include_str!("../templates/go/go.mod"),
            },
            Template {
                path: "flake.nix",
                text: include_str!("../templates/go/flake.nix"),
            },
            MANIFEST,
        ],
    },
    Language {
        name: "node",
        files: &[
            Template {
                path: "server.js",
                text: include_str!("../templates/node/server.js"),
            },
            Template {
                path: "package.json",
                text: include_str!("../templates/node/package.json"),
            },
            Template {
                path: "flake.nix",
                text: include_str!("../templates/node/flake.nix"),
            },
            MANIFEST,
        ],
    },
];

struct InitFlags {
    language: &'static Language,
    dir: PathBuf,
    name: String,
    json: bool,
}

impl InitFlags {
    fn parse(mut args: Arguments) -> Result<InitFlags, Error> {
        // The language comes first, as a command's own subcommand does (`myco init go web`), so
        // it cannot be mistaken for DIR or for a flag's value.
        let language = args.subcommand().map_err(|_| {
            Error::Usage("the language is not valid UTF-8; see 'myco init --help'".into())
        })?;
        let mut flags = Flags::new(args, "init");
        let name = flags.string("--name")?;
        let json = flags.switch("--json");
        let dir = flags.finish_with_path()?;
        let language = language.ok_or_else(|| {
            Error::Usage(
                "init needs a language first: myco init python|go|node [DIR]; see 'myco init \
                 --help'"
                    .into(),
            )
        })?;
        let language = LANGUAGES
            .iter()
            .find(|l| l.name == language)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "unknown language '{}'; pick python, go or node",
                    output::terminal_safe(&language)
                ))
            })?;
        let dir = dir.unwrap_or_else(|| PathBuf::from("."));
        let (name, from) = match name {
            Some(name) => (name, "--name".to_string()),
            None => (dir_name(&dir)?, format!("the name of '{}'", dir.display())),
        };
        if !valid_name(&name) {
            return Err(Error::Usage(format!(
                "'{}' ({from}) is not a service name: it must be {NAME_RULE}; pass one with --name",
                output::terminal_safe(&name)
            )));
        }
        Ok(InitFlags {
            language,
            dir,
            name,
            json,
        })
    }
}

/// The last component of `dir`, resolved when it is `.`, `..` or ends in one (`myco init go .`
/// names the service after the current directory).
fn dir_name(dir: &Path) -> Result<String, Error> {
    let resolved;
    let dir = match dir.file_name() {
        Some(_) => dir,
        None => {
            resolved = std::path::absolute(dir)
                .and_then(|absolute| absolute.canonicalize())
                .map_err(|e| {
                    Error::Failed(format!(
                        "cannot resolve '{}' to find its name: {e}; pass the name with --name",
                        dir.display()
                    ))
                })?;
            &resolved
        }
    };
    let name = dir.file_name().ok_or_else(|| {
        Error::Usage(format!(
            "'{}' has no name to give the service; pass one with --name",
            dir.display()
        ))
    })?;
    Ok(name.to_string_lossy().into_owned())
}

pub fn init(args: Arguments) -> Result<(), Error> {
    let flags = InitFlags::parse(args)?;
    let targets: Vec<(PathBuf, String)> = flags
        .language
        .files
        .iter()
        .map(|t| (flags.dir.join(t.path), fill(t.text, &flags.name)))
        .collect();

    // Every file is checked before any is written, so a refusal leaves DIR as it was.
    // `symlink_metadata` counts a dangling symlink as in the way, as `create_new` would.
    let existing: Vec<String> = targets
        .iter()
        .filter(|(path, _)| path.symlink_metadata().is_ok())
        .map(|(path, _)| format!("'{}'", path.display()))
        .collect();
    if !existing.is_empty() {
        return Err(Error::Failed(format!(
            "{} already exist{}; nothing was written. Remove {} or init another directory",
            existing.join(", "),
            if existing.len() == 1 { "s" } else { "" },
            if existing.len() == 1 { "it" } else { "them" },
        )));
    }
    std::fs::create_dir_all(&flags.dir).map_err(|e| {
        Error::Failed(format!(
            "cannot create directory '{}': {e}; check the path and its permissions",
            flags.dir.display()
        ))
    })?;
    let mut written = Vec::with_capacity(targets.len());
    for (path, text) in &targets {
        files::write_new(path, text.as_bytes(), PUBLIC_MODE).map_err(|e| {
            Error::Failed(format!(
                "{} (written before it: {})",
                e.message(),
                if written.is_empty() {
                    "none".to_string()
                } else {
                    written.join(" ")
                }
            ))
        })?;
        written.push(path.display().to_string());
    }
    assert_eq!(written.len(), flags.language.files.len());

    let fields = [
        ("name", Value::Text(flags.name.clone())),
        ("language", Value::Text(flags.language.name.into())),
        ("directory", Value::Text(flags.dir.display().to_string())),
        ("files", Value::Text(written.join(" "))),
    ];
    output::print(&fields, flags.json)?;
    if flags.json {
        return Ok(());
    }
    let manifest = flags.dir.join(MANIFEST.path);
    output::print_text(&format!(
        "\nNext:\n  \
         1. Run 'nix flake lock' in {dir}, push it with flake.lock to a git repository, and set\n     \
            \"flake\" in {manifest} to that repository (nodes fetch the flake from there).\n  \
         2. myco render {manifest}\n  \
         3. myco deploy {manifest} --operator-key operator.key\n",
        dir = flags.dir.display(),
        manifest = manifest.display(),
    ))
}

/// A template with the service's name in place of every mark.
fn fill(template: &str, name: &str) -> String {
    assert!(valid_name(name));
    let text = template.replace(NAME_MARK, name);
    assert!(!text.contains(NAME_MARK));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template of every language holds the mark (the name must reach each file that
    /// names the program), and filling it leaves no mark behind.
    #[test]
    fn templates_take_the_name() {
        for language in &LANGUAGES {
            for template in language.files {
                let mentions = template.text.contains(NAME_MARK);
                assert!(
                    mentions,
                    "{}/{} never names the service",
                    language.name, template.path
                );
                let text = fill(template.text, "web-1");
                assert!(!text.contains(NAME_MARK));
                assert!(text.contains("web-1"));
            }
        }
    }

    /// The server comes first, the manifest last, and no language writes the same path twice.
    #[test]
    fn file_lists_are_distinct() {
        for language in &LANGUAGES {
            let paths: Vec<_> = language.files.iter().map(|t| t.path).collect();
            let mut sorted = paths.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), paths.len(), "{}", language.name);
            assert_eq!(paths.last(), Some(&"myco.json"));
            assert!(paths.contains(&"flake.nix"));
        }
    }
}
