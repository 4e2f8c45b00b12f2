//! `myco render`: the systemd unit a node would install for a myco.json manifest, for review and
//! for `systemd-analyze`. No key is needed and nothing is signed or sent.
//!
//! The unit comes from the core's compiler (`myco_core::unit::render`), the same code `myco-d`
//! runs, and is read back by the core's checker before it is shown: a unit that does not mean
//! exactly the manifest is never printed. Three lines differ from the node's unit: the version
//! (`--clock`, default 0, and key id 0, since a preview is not signed) and, for a flake, the
//! program, which a node knows only after building it (`--program`, default the path under the
//! executor's GC-root directory; docs/units.md), and the source, which shows the flake reference
//! as the manifest writes it: a preview runs no Nix and needs no network, while a node's unit
//! names the reference `myco sign` locked to one commit.

use crate::args::{self, Error, Flags};
use crate::files::{self, PUBLIC_MODE};
use crate::output::{self, Value};
use myco_cli::manifest::Manifest;
use myco_core::schema::entry::{ServiceSpec, Source, Version};
use myco_core::unit::{
    self, check::check, unit_name, Field, UnitContext, UnitError, PROGRAM_BYTES_MAX, UNIT_BYTES_MAX,
};
use pico_args::Arguments;
use std::path::{Path, PathBuf};

pub const RENDER_HELP: &str = "\
Usage: myco render [MANIFEST] [--out FILE] [--clock MS] [--program PATH] [--json]

Prints the systemd unit (myco-NAME.service) that a node placing the service of MANIFEST
(default: myco.json) would install: the program with its arguments, environment and migrations
quoted for systemd, and the hardening every Myco service runs under. Check it with
'systemd-analyze verify' and 'systemd-analyze security --offline=yes'. The unit is described
line by line in docs/units.md. A flake reference is shown as written (X-Myco-Source); a node's
unit shows it locked to the commit 'myco sign' and 'myco deploy' resolve it to.

Options:
  --out FILE      Write the unit to FILE (must not exist) and print a summary instead
  --clock MS      The version written into the unit (default: 0). A node writes the signed
                  entry's version there, with its key id (0 here)
  --program PATH  For a flake: the built program's absolute path, as the node would run it
                  (default: /nix/var/myco/gcroots/NAME/bin/NAME)
  --json          Print one JSON line: the name, unit name, size and the unit's text (or, with
                  --out, its path)
  -h, --help      Print this help

Exit status: 0 printed or written; 1 failed (manifest refused, a token systemd cannot take,
file exists, I/O; nothing written); 2 bad command line.
";

struct RenderFlags {
    manifest: PathBuf,
    out: Option<PathBuf>,
    clock: u64,
    program: Option<String>,
    json: bool,
}

impl RenderFlags {
    fn parse(args: Arguments) -> Result<RenderFlags, Error> {
        let mut flags = Flags::new(args, "render");
        let out = flags.path("--out")?;
        let clock = flags.string("--clock")?;
        let program = flags.string("--program")?;
        let json = flags.switch("--json");
        let manifest = flags.finish_with_path()?;
        if let Some(path) = &program {
            if path.len() > PROGRAM_BYTES_MAX || !unit::valid_exec_path(path) {
                return Err(Error::Usage(format!(
                    "--program must be an absolute path of at most {PROGRAM_BYTES_MAX} bytes \
                     that systemd can run as written, got '{}'; {}",
                    output::terminal_safe(path),
                    UnitError::Path(Field::Program).message()
                )));
            }
        }
        Ok(RenderFlags {
            manifest: manifest.unwrap_or_else(|| PathBuf::from("myco.json")),
            out,
            clock: match clock.as_deref() {
                Some(text) => args::parse_clock(text)?,
                None => 0,
            },
            program,
            json,
        })
    }
}

pub fn render(args: Arguments) -> Result<(), Error> {
    let flags = RenderFlags::parse(args)?;
    let text = files::read_manifest(&flags.manifest)?;
    let manifest = Manifest::parse(&text).map_err(|e| {
        Error::Failed(format!(
            "manifest '{}' is refused: {e}; fix it (the format is in docs/myco-json.md)",
            flags.manifest.display()
        ))
    })?;
    let body = manifest.service(Version {
        clock: flags.clock,
        key_id: 0,
    });
    let spec = body.spec.as_ref().expect("a manifest's service has a spec");
    if flags.program.is_some() && matches!(spec.source, Source::Exec { .. }) {
        return Err(Error::Failed(format!(
            "--program names a flake's built program, but manifest '{}' runs exec; remove \
             --program",
            flags.manifest.display()
        )));
    }
    let ctx = UnitContext {
        version: body.version,
        program: flags.program.as_deref(),
    };
    let mut unit = [0u8; UNIT_BYTES_MAX];
    let n = unit::render(body.name, spec, &ctx, &mut unit)
        .map_err(|e| refusal(&flags.manifest, spec, e))?;
    let unit = &unit[..n];
    // The core's own reader: a unit that does not mean exactly the manifest is a compiler bug, and
    // is never shown as if it were the manifest's unit.
    check(unit, body.name, spec, &ctx).map_err(|e| {
        Error::Failed(format!(
            "internal error: the unit rendered for '{}' does not read back as its manifest \
             ({e}); please report this with the manifest",
            flags.manifest.display()
        ))
    })?;
    let unit_text = std::str::from_utf8(unit).expect("check accepts only UTF-8");
    let unit_file = unit_name(body.name).expect("a parsed manifest's name is a service name");

    let mut fields = vec![
        ("name", Value::Text(body.name.into())),
        ("unit", Value::Text(unit_file.as_str().into())),
        ("size_bytes", Value::Number(n as u64)),
    ];
    match &flags.out {
        Some(path) => {
            files::write_new(path, unit, PUBLIC_MODE)?;
            fields.push(("path", Value::Text(path.display().to_string())));
            output::print(&fields, flags.json)
        }
        None if flags.json => {
            fields.push(("text", Value::Text(unit_text.into())));
            output::print(&fields, true)
        }
        None => output::print_text(unit_text),
    }
}

/// The compiler's refusal in the manifest's terms: the field at fault and why.
fn refusal(manifest: &Path, spec: &ServiceSpec<'_>, e: UnitError) -> Error {
    let field = match e {
        UnitError::Path(field) | UnitError::Token(field) => match field {
            Field::EnvName(i) | Field::EnvValue(i) => env_field(spec, i),
            Field::Pre { command, word } => format!("migrations[{command}][{word}]"),
            Field::Program => "--program".into(),
            field => field.to_string(),
        },
        UnitError::EnvName(i) => env_field(spec, i),
        UnitError::EmptyCommand(i) => format!("migrations[{i}]"),
        UnitError::Name => "name".into(),
        UnitError::Limits => "limits".into(),
        UnitError::TooLong => unreachable!("UNIT_BYTES_MAX holds the unit of any valid entry"),
    };
    Error::Failed(format!(
        "manifest '{}' cannot become a systemd unit: {field}: {}; fix it (docs/units.md)",
        manifest.display(),
        e.message()
    ))
}

fn env_field(spec: &ServiceSpec<'_>, i: usize) -> String {
    match spec.env.get(i) {
        Some((name, _)) => format!("env {name:?}"),
        None => format!("env[{i}]"),
    }
}
