//! The systemd unit compiler: a service slot becomes the text of `myco-<name>.service`.
//!
//! `render` writes into a buffer the caller owns (`UNIT_BYTES_MAX` always suffices for a valid
//! entry). Every unit gets the same hardening (docs/units.md explains each line): the mandatory
//! `DynamicUser=yes`, `ProtectSystem=strict`, `TasksMax=100`, `OOMScoreAdjust=500`, and the rest of
//! what a network service can live with. Only two facts of the spec change the sandbox: a GPU
//! (`/dev/dri` bound into the private `/dev`, the DRM devices allowed, the `render` and `video`
//! groups) and a port below 1024 (`CAP_NET_BIND_SERVICE` as an ambient capability, without
//! `PrivateUsers=`, since a capability inside a user namespace cannot bind the host's ports).
//!
//! Invariant: no user token can add, remove or change a directive, or change a command. Text from
//! the entry appears only inside the double-quoted words of `ExecStartPre=`, `ExecStart=`,
//! `Environment=` and `X-Myco-Source=`, written by `Writer::word`: `"` and `\` are
//! backslash-escaped, `%` is doubled (no specifier expansion) and, in command lines, `$` is doubled
//! (no variable expansion). The name is a DNS label, so it needs no quoting. Whatever the entry
//! validation already promised, `check_spec` refuses again, before a byte is written, what no
//! quoting can carry: control characters (a newline would end the directive), Unicode
//! noncharacters (systemd drops a line holding one as "not UTF-8 clean") and executable paths that
//! systemd reads without its quoting rules. `check::check` reads units back the way systemd does;
//! the tests and the fuzz target run it on every unit they render.

pub mod check;
#[cfg(test)]
mod tests;

use crate::config::{ARGS_MAX, ENTRY_BYTES_MAX, ENV_MAX, NAME_BYTES_MAX, PRE_ARGS_MAX, PRE_MAX};
pub use crate::schema::entry::{quotable, valid_exec_path};
use crate::schema::entry::{
    valid_env_name, valid_name, EntryError, Limits, Protocol, ServiceSpec, Source, Version,
    TASKS_MAX,
};
use core::fmt;

/// The largest unit `render` writes for a valid entry; `out` of this size never gives `TooLong`.
pub const UNIT_BYTES_MAX: usize = 8 * 1024;
/// The longest program path a `UnitContext` may give (a Nix store path is ~100 bytes).
pub const PROGRAM_BYTES_MAX: usize = 512;
/// Where the executor links a flake's build result (`nix build --out-link DIR/<name>`), and so
/// where a flake's program is when the context names none: `DIR/<name>/bin/<name>`.
pub const FLAKE_PROFILE_DIR: &str = "/nix/var/myco/gcroots";
/// Bytes the unit holds beyond the user's tokens, at most (longest name, widest version, a flake
/// with the default program path, a GPU and four low ports). `fixed_text_bound` measures it.
pub const FIXED_BYTES_MAX: usize = 3 * 1024;
/// What quoting adds around one token at most: `Environment="` + `=` + `"` + newline for an
/// environment variable; an argument takes two quotes and a space.
const TOKEN_OVERHEAD_BYTES_MAX: usize = 16;
/// `ExecStartPre=` and the newline, per migration.
const COMMAND_OVERHEAD_BYTES: usize = 14;
const TOKENS_MAX: usize = 2 + ARGS_MAX + 2 * ENV_MAX + PRE_MAX * PRE_ARGS_MAX;

// Every byte of user text is in the entry (at most ENTRY_BYTES_MAX of them) and quoting at most
// doubles it; the program path comes from the context and is written once, escaped.
const _: () = assert!(
    FIXED_BYTES_MAX
        + 2 * ENTRY_BYTES_MAX
        + TOKENS_MAX * TOKEN_OVERHEAD_BYTES_MAX
        + PRE_MAX * COMMAND_OVERHEAD_BYTES
        + 2 * PROGRAM_BYTES_MAX
        <= UNIT_BYTES_MAX
);

/// `myco-<name>.service`: the longest a unit name can be.
pub const UNIT_NAME_BYTES_MAX: usize = "myco-".len() + NAME_BYTES_MAX + ".service".len();

/// What the host knows that the entry does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitContext<'a> {
    /// The entry's version. It is written into the unit, so a new version always changes the text
    /// and the executor, which restarts a unit whose text changed, restarts the service.
    pub version: Version,
    /// For a flake: the absolute path of the program the executor built, such as
    /// `/nix/store/<hash>-web/bin/web`. `None` means `FLAKE_PROFILE_DIR/<name>/bin/<name>`. Not used
    /// for an `Exec` source.
    pub program: Option<&'a str>,
}

/// Where in the spec a refused token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Exec,
    /// The context's program path, or the default one for a flake.
    Program,
    Flake,
    Attr,
    Arg(usize),
    EnvName(usize),
    EnvValue(usize),
    /// Word `word` of migration `command` (word 0 is the executable).
    Pre {
        command: usize,
        word: usize,
    },
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Field::Exec => f.write_str("exec"),
            Field::Program => f.write_str("program"),
            Field::Flake => f.write_str("flake"),
            Field::Attr => f.write_str("attr"),
            Field::Arg(i) => write!(f, "args[{i}]"),
            Field::EnvName(i) => write!(f, "env[{i}] name"),
            Field::EnvValue(i) => write!(f, "env[{i}] value"),
            Field::Pre { command, word } => write!(f, "migrations[{command}][{word}]"),
        }
    }
}

/// Why no unit was rendered. Rendering changes nothing but `out`, whose contents are then
/// meaningless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitError {
    /// The name is not a DNS label (`valid_name`).
    Name,
    /// An executable path systemd would not run as written: see `UnitError::message`.
    Path(Field),
    /// A token holds a control character or a Unicode noncharacter, which no quoting can carry.
    Token(Field),
    /// An environment variable name is not `[A-Za-z_][A-Za-z0-9_]*`.
    EnvName(usize),
    /// A migration has no words.
    EmptyCommand(usize),
    /// A resource limit is out of its bounds (`Limits::valid`).
    Limits,
    /// The unit does not fit `out`. Never for a valid entry and `UNIT_BYTES_MAX` bytes.
    TooLong,
}

impl UnitError {
    pub fn message(self) -> &'static str {
        match self {
            UnitError::Name => EntryError::Name.message(),
            UnitError::Path(_) => {
                "systemd cannot run this executable path as written: it must be absolute and \
                 normalized (no empty, '.' or '..' component, no trailing '/'), at most 4095 \
                 bytes with components of at most 255, and free of quotes, '\\', '$', control \
                 characters and Unicode noncharacters"
            }
            UnitError::Token(_) => {
                "a token holds a control character or a Unicode noncharacter (U+FDD0-U+FDEF, \
                 U+xFFFE, U+xFFFF), which systemd cannot take"
            }
            UnitError::EnvName(_) => "environment names must match [A-Za-z_][A-Za-z0-9_]*",
            UnitError::EmptyCommand(_) => "a migration has no executable",
            UnitError::Limits => EntryError::Limits.message(),
            UnitError::TooLong => "the unit does not fit the output buffer",
        }
    }
}

/// `myco-<name>.service`, or `Name` if `name` is not a service name.
pub fn unit_name(name: &str) -> Result<heapless::String<UNIT_NAME_BYTES_MAX>, UnitError> {
    if !valid_name(name) {
        return Err(UnitError::Name);
    }
    let mut s = heapless::String::new();
    for part in ["myco-", name, ".service"] {
        s.push_str(part).map_err(|_| UnitError::TooLong)?;
    }
    Ok(s)
}

/// The service a unit file name belongs to: `web` for `myco-web.service`; `None` for any other
/// name, so a unit that is not Myco's is never taken for one. The inverse of [`unit_name`].
pub fn service_of(unit: &str) -> Option<&str> {
    let name = unit.strip_prefix("myco-")?.strip_suffix(".service")?;
    valid_name(name).then_some(name)
}

/// Writes the unit for service `name` running `spec` into `out` and returns its length. Checks
/// every token first (see the module comment), so an error other than `TooLong` means the spec,
/// not the buffer, is at fault.
pub fn render(
    name: &str,
    spec: &ServiceSpec<'_>,
    ctx: &UnitContext<'_>,
    out: &mut [u8],
) -> Result<usize, UnitError> {
    check_spec(name, spec, ctx)?;
    let mut w = Writer { out, len: 0 };
    write_unit(&mut w, name, spec, ctx)?;
    let len = w.len;
    assert!(len <= w.out.len());
    assert_eq!(w.out[len - 1], b'\n', "a unit ends with a newline");
    Ok(len)
}

/// What a spec changes in the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub gpu: bool,
    /// A declared port below 1024, which needs `CAP_NET_BIND_SERVICE`.
    pub low_port: bool,
    pub flake: bool,
}

impl Facts {
    pub fn of(spec: &ServiceSpec<'_>) -> Facts {
        Facts {
            gpu: spec.requires.gpu,
            low_port: spec.ports.iter().any(|p| p.number < 1024),
            flake: matches!(spec.source, Source::Flake { .. }),
        }
    }
}

/// The program `ExecStart=` runs: the exec path, or for a flake the context's program or the
/// default path under `FLAKE_PROFILE_DIR`, written by `Writer::command`.
enum Program<'a> {
    Path(&'a str),
    FlakeDefault,
}

fn program<'a>(spec: &ServiceSpec<'a>, ctx: &UnitContext<'a>) -> Program<'a> {
    match (spec.source, ctx.program) {
        (Source::Exec { path }, _) => Program::Path(path),
        (Source::Flake { .. }, Some(path)) => Program::Path(path),
        (Source::Flake { .. }, None) => Program::FlakeDefault,
    }
}

/// Refuses whatever no quoting can carry; see the module comment.
fn check_spec(name: &str, spec: &ServiceSpec<'_>, ctx: &UnitContext<'_>) -> Result<(), UnitError> {
    if !valid_name(name) {
        return Err(UnitError::Name);
    }
    match spec.source {
        Source::Exec { path } if !valid_exec_path(path) => {
            return Err(UnitError::Path(Field::Exec))
        }
        Source::Exec { .. } => {}
        Source::Flake { uri, attr, .. } => {
            check_token(uri, Field::Flake)?;
            check_token(attr, Field::Attr)?;
            if let Some(path) = ctx.program {
                if path.len() > PROGRAM_BYTES_MAX || !valid_exec_path(path) {
                    return Err(UnitError::Path(Field::Program));
                }
            }
        }
    }
    for (i, arg) in spec.args.iter().enumerate() {
        check_token(arg, Field::Arg(i))?;
    }
    for (i, (key, value)) in spec.env.iter().enumerate() {
        if !valid_env_name(key) {
            return Err(UnitError::EnvName(i));
        }
        check_token(value, Field::EnvValue(i))?;
    }
    for (command, words) in spec.pre.iter().enumerate() {
        let Some(path) = words.first() else {
            return Err(UnitError::EmptyCommand(command));
        };
        if !valid_exec_path(path) {
            return Err(UnitError::Path(Field::Pre { command, word: 0 }));
        }
        for (word, arg) in words.iter().enumerate().skip(1) {
            check_token(arg, Field::Pre { command, word })?;
        }
    }
    if !spec.limits.valid() {
        return Err(UnitError::Limits);
    }
    Ok(())
}

fn check_token(token: &str, field: Field) -> Result<(), UnitError> {
    if token.chars().all(quotable) {
        Ok(())
    } else {
        Err(UnitError::Token(field))
    }
}

/// Appends to the caller's buffer; a full buffer is `TooLong`.
struct Writer<'b> {
    out: &'b mut [u8],
    len: usize,
}

/// How `Writer::word` treats `$`: doubled in command lines, where systemd expands variables, and
/// kept in `Environment=` and `X-` values, where `$` means nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dollar {
    Double,
    Keep,
}

impl Writer<'_> {
    fn text(&mut self, s: &str) -> Result<(), UnitError> {
        let end = self.len + s.len();
        let dst = self.out.get_mut(self.len..end).ok_or(UnitError::TooLong)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }

    fn number(&mut self, mut n: u64) -> Result<(), UnitError> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.text(core::str::from_utf8(&digits[i..]).expect("ascii digits"))
    }

    /// `parts`, concatenated, as one double-quoted word: the only way user text enters a unit.
    fn word(&mut self, parts: &[&str], dollar: Dollar) -> Result<(), UnitError> {
        self.text("\"")?;
        for part in parts {
            for c in part.chars() {
                assert!(quotable(c), "check_spec refuses what quoting cannot carry");
                match c {
                    '"' => self.text("\\\"")?,
                    '\\' => self.text("\\\\")?,
                    '%' => self.text("%%")?,
                    '$' if dollar == Dollar::Double => self.text("$$")?,
                    c => self.text(c.encode_utf8(&mut [0; 4]))?,
                }
            }
        }
        self.text("\"")
    }

    /// `key=` then the words of a command line, each quoted.
    fn command<'w>(
        &mut self,
        key: &str,
        program: Program<'_>,
        name: &str,
        args: impl Iterator<Item = &'w str>,
    ) -> Result<(), UnitError> {
        self.text(key)?;
        self.text("=")?;
        match program {
            Program::Path(path) => self.word(&[path], Dollar::Double)?,
            Program::FlakeDefault => self.word(
                &[FLAKE_PROFILE_DIR, "/", name, "/bin/", name],
                Dollar::Double,
            )?,
        }
        for arg in args {
            self.text(" ")?;
            self.word(&[arg], Dollar::Double)?;
        }
        self.text("\n")
    }

    /// Lines of fixed text; `{name}` stands for the service name (a DNS label, never quoted).
    fn lines(&mut self, lines: &[&str], name: &str) -> Result<(), UnitError> {
        for line in lines {
            let mut parts = line.split("{name}");
            self.text(parts.next().unwrap_or(""))?;
            for part in parts {
                self.text(name)?;
                self.text(part)?;
            }
            self.text("\n")?;
        }
        Ok(())
    }
}

fn write_unit(
    w: &mut Writer<'_>,
    name: &str,
    spec: &ServiceSpec<'_>,
    ctx: &UnitContext<'_>,
) -> Result<(), UnitError> {
    write_unit_section(w, name, spec, ctx)?;
    w.lines(&["", "[Service]", "Type=exec"], name)?;
    write_commands(w, name, spec, ctx)?;
    w.lines(SERVICE_LINES, name)?;
    write_limits(w, &spec.limits)?;
    w.lines(IDENTITY_LINES, name)?;
    write_sandbox(w, name, Facts::of(spec))?;
    w.lines(INSTALL_LINES, name)
}

/// The header comment and `[Unit]`, with the `X-Myco-*` fields a restarted executor reads back.
fn write_unit_section(
    w: &mut Writer<'_>,
    name: &str,
    spec: &ServiceSpec<'_>,
    ctx: &UnitContext<'_>,
) -> Result<(), UnitError> {
    w.lines(
        &[
            "# myco-{name}.service: generated by myco-d from the desired-state entry of service {name}.",
            "# It is rewritten whenever the entry changes; see docs/units.md.",
            "",
            "[Unit]",
            "Description=Myco service {name}",
            "After=network.target",
            "StartLimitIntervalSec=10min",
            "StartLimitBurst=10",
        ],
        name,
    )?;
    w.text("X-Myco-Clock=")?;
    w.number(ctx.version.clock)?;
    w.text("\nX-Myco-KeyId=")?;
    w.number(ctx.version.key_id.into())?;
    w.text("\n")?;
    if let Source::Flake { uri, attr, .. } = spec.source {
        w.text("X-Myco-Source=")?;
        w.word(&[uri, "#", attr], Dollar::Keep)?;
        w.text("\n")?;
    }
    if !spec.ports.is_empty() {
        w.text("X-Myco-Ports=")?;
        for (i, port) in spec.ports.iter().enumerate() {
            if i > 0 {
                w.text(" ")?;
            }
            w.number(port.number.into())?;
            w.text(match port.protocol {
                Protocol::Tcp => "/tcp",
                Protocol::Udp => "/udp",
            })?;
        }
        w.text("\n")?;
    }
    Ok(())
}

/// `ExecStartPre=` for each migration, `ExecStart=`, and the environment.
fn write_commands(
    w: &mut Writer<'_>,
    name: &str,
    spec: &ServiceSpec<'_>,
    ctx: &UnitContext<'_>,
) -> Result<(), UnitError> {
    for words in &spec.pre {
        let (path, args) = words
            .split_first()
            .expect("check_spec refuses empty migrations");
        w.command(
            "ExecStartPre",
            Program::Path(path),
            name,
            args.iter().copied(),
        )?;
    }
    w.command(
        "ExecStart",
        program(spec, ctx),
        name,
        spec.args.iter().copied(),
    )?;
    for (key, value) in &spec.env {
        w.text("Environment=")?;
        w.word(&[key, "=", value], Dollar::Keep)?;
        w.text("\n")?;
    }
    Ok(())
}

/// How the service runs and its mandatory limits and identity, up to the sandbox.
const SERVICE_LINES: &[&str] = &[
    "WorkingDirectory=/var/lib/myco-{name}",
    "SyslogIdentifier=myco-{name}",
    "StandardOutput=journal",
    "StandardError=journal",
    "Restart=on-failure",
    "RestartSec=5s",
    "TimeoutStartSec=10min",
    "TimeoutStopSec=30s",
    "KillMode=control-group",
    "",
    "# Mandatory limits and identity.",
    "DynamicUser=yes",
];

/// After the limits (`write_limits`): the identity and the directories.
const IDENTITY_LINES: &[&str] = &[
    "OOMScoreAdjust=500",
    "StateDirectory=myco-{name}",
    "StateDirectoryMode=0700",
    "RuntimeDirectory=myco-{name}",
    "RuntimeDirectoryMode=0700",
    "UMask=0077",
    "",
    "# Sandbox.",
];

/// `TasksMax=` (100 unless the spec lowers it) and each resource limit the spec sets.
fn write_limits(w: &mut Writer<'_>, limits: &Limits) -> Result<(), UnitError> {
    let tasks = limits.tasks_max.unwrap_or(TASKS_MAX);
    let lines = [
        ("TasksMax=", Some(u64::from(tasks)), ""),
        ("MemoryMax=", limits.memory_max, ""),
        ("CPUWeight=", limits.cpu_weight.map(u64::from), ""),
        ("CPUQuota=", limits.cpu_quota.map(u64::from), "%"),
        ("IOWeight=", limits.io_weight.map(u64::from), ""),
    ];
    for (key, value, unit) in lines {
        if let Some(value) = value {
            w.text(key)?;
            w.number(value)?;
            w.text(unit)?;
            w.text("\n")?;
        }
    }
    Ok(())
}

/// The sandbox: binding low ports and GPUs are the only holes, each only when the spec asks.
fn write_sandbox(w: &mut Writer<'_>, name: &str, facts: Facts) -> Result<(), UnitError> {
    let mut written = Ok(());
    sandbox_lines(facts, |lines| {
        if written.is_ok() {
            written = w.lines(lines, name);
        }
    });
    written
}

/// The sandbox's directives (none names the service), in the unit's order, a group at a time:
/// the unit and a health check's transient unit (`Command::HealthCheck`) get the same.
pub fn sandbox_lines(facts: Facts, mut f: impl FnMut(&'static [&'static str])) {
    if facts.low_port {
        f(&[
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "PrivateUsers=no",
        ]);
    } else {
        f(&[
            "CapabilityBoundingSet=",
            "AmbientCapabilities=",
            "PrivateUsers=yes",
        ]);
    }
    f(&[
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "DevicePolicy=closed",
    ]);
    if facts.gpu {
        f(&[
            "BindPaths=/dev/dri",
            "DeviceAllow=char-drm rw",
            "SupplementaryGroups=render video",
        ]);
    }
    f(SANDBOX_TAIL_LINES);
}

/// The rest of the sandbox, the same for every unit.
const SANDBOX_TAIL_LINES: &[&str] = &[
    "PrivateIPC=yes",
    "PrivateMounts=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "RemoveIPC=yes",
    "RestrictNamespaces=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
];

const INSTALL_LINES: &[&str] = &["", "[Install]", "WantedBy=multi-user.target"];
