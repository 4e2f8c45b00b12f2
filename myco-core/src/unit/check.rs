//! An independent reader of rendered units: the oracle of the unit tests, the property test, the
//! fuzz target and `myco render`.
//!
//! `check` reads unit text the way systemd's parser does, for the syntax the renderer writes, and
//! accepts it only if it is exactly the expected set of directives: every line is empty, a comment,
//! a section header or `Key=value` with a known key; no line ends in a backslash (which would join
//! it to the next); each fixed directive appears as often as this spec calls for, with its value;
//! and the user's tokens come back unchanged: unquoting `ExecStart=` gives exactly the program and
//! `args`, each `ExecStartPre=` exactly its migration, each `Environment=` exactly its `KEY=value`.
//! Its table of directives is written out here, apart from the renderer's, so that a change to one
//! that the other does not expect fails the tests.
//!
//! Words are read as systemd's `extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE)` followed by
//! specifier expansion and, in command lines, variable expansion at exec time reads them, but
//! strictly: a word must be wholly double-quoted, and only the escapes the renderer writes (`\"`,
//! `\\`, `%%`, and `$$` in commands) are accepted. Anything else systemd would interpret (a bare
//! `%n`, `$X`, `\n`, an unquoted `;`) is an error here, so a unit that passes means to systemd
//! exactly what it means to this reader.

use super::{quotable, Facts, UnitContext, FLAKE_PROFILE_DIR};
use crate::schema::entry::{Limits, Protocol, ServiceSpec, Source, TASKS_MAX};
use core::fmt;

/// Why unit text is not the unit of a spec: the line (counted from 1; 0 for the whole text) and
/// what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckError {
    pub line: usize,
    pub why: &'static str,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    None,
    Unit,
    Service,
    Install,
}

/// What the lines of one key must hold.
#[derive(Clone, Copy)]
enum Rule {
    /// One line per value, in this order.
    Is(&'static [&'static str]),
    /// `yes` if the spec declares a port below 1024, else `no`.
    IfLowPort(&'static [&'static str], &'static [&'static str]),
    /// `yes` if the spec asks for a GPU, else `no`.
    IfGpu(&'static [&'static str], &'static [&'static str]),
    /// One line: prefix, then the service name.
    Named(&'static str),
    Clock,
    KeyId,
    Ports,
    Source,
    ExecStartPre,
    ExecStart,
    Environment,
    /// A resource limit: one line with the spec's value when it sets one, none otherwise;
    /// `TasksMax=` is always there, 100 unless the spec lowers it.
    Limit(Limit),
}

/// Which of the spec's [`Limits`] a line renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    Tasks,
    Memory,
    CpuWeight,
    CpuQuota,
    IoWeight,
}

impl Limit {
    /// The value the unit must give, and the unit suffix after it.
    fn expected(self, limits: &Limits) -> (Option<u64>, &'static str) {
        match self {
            Limit::Tasks => (Some(u64::from(limits.tasks_max.unwrap_or(TASKS_MAX))), ""),
            Limit::Memory => (limits.memory_max, ""),
            Limit::CpuWeight => (limits.cpu_weight.map(u64::from), ""),
            Limit::CpuQuota => (limits.cpu_quota.map(u64::from), "%"),
            Limit::IoWeight => (limits.io_weight.map(u64::from), ""),
        }
    }
}

const YES: &[&str] = &["yes"];
const NONE: &[&str] = &[];

/// Every directive a unit may hold. A key not listed here is an error.
const RULES: &[(Section, &str, Rule)] = &[
    (Section::Unit, "Description", Rule::Named("Myco service ")),
    (Section::Unit, "After", Rule::Is(&["network.target"])),
    (Section::Unit, "StartLimitIntervalSec", Rule::Is(&["10min"])),
    (Section::Unit, "StartLimitBurst", Rule::Is(&["10"])),
    (Section::Unit, "X-Myco-Clock", Rule::Clock),
    (Section::Unit, "X-Myco-KeyId", Rule::KeyId),
    (Section::Unit, "X-Myco-Source", Rule::Source),
    (Section::Unit, "X-Myco-Ports", Rule::Ports),
    (Section::Service, "Type", Rule::Is(&["exec"])),
    (Section::Service, "ExecStartPre", Rule::ExecStartPre),
    (Section::Service, "ExecStart", Rule::ExecStart),
    (Section::Service, "Environment", Rule::Environment),
    (
        Section::Service,
        "WorkingDirectory",
        Rule::Named("/var/lib/myco-"),
    ),
    (Section::Service, "SyslogIdentifier", Rule::Named("myco-")),
    (Section::Service, "StandardOutput", Rule::Is(&["journal"])),
    (Section::Service, "StandardError", Rule::Is(&["journal"])),
    (Section::Service, "Restart", Rule::Is(&["on-failure"])),
    (Section::Service, "RestartSec", Rule::Is(&["5s"])),
    (Section::Service, "TimeoutStartSec", Rule::Is(&["10min"])),
    (Section::Service, "TimeoutStopSec", Rule::Is(&["30s"])),
    (Section::Service, "KillMode", Rule::Is(&["control-group"])),
    (Section::Service, "DynamicUser", Rule::Is(YES)),
    (Section::Service, "TasksMax", Rule::Limit(Limit::Tasks)),
    (Section::Service, "MemoryMax", Rule::Limit(Limit::Memory)),
    (Section::Service, "CPUWeight", Rule::Limit(Limit::CpuWeight)),
    (Section::Service, "CPUQuota", Rule::Limit(Limit::CpuQuota)),
    (Section::Service, "IOWeight", Rule::Limit(Limit::IoWeight)),
    (Section::Service, "OOMScoreAdjust", Rule::Is(&["500"])),
    (Section::Service, "StateDirectory", Rule::Named("myco-")),
    (Section::Service, "StateDirectoryMode", Rule::Is(&["0700"])),
    (Section::Service, "RuntimeDirectory", Rule::Named("myco-")),
    (
        Section::Service,
        "RuntimeDirectoryMode",
        Rule::Is(&["0700"]),
    ),
    (Section::Service, "UMask", Rule::Is(&["0077"])),
    (
        Section::Service,
        "CapabilityBoundingSet",
        Rule::IfLowPort(&["CAP_NET_BIND_SERVICE"], &[""]),
    ),
    (
        Section::Service,
        "AmbientCapabilities",
        Rule::IfLowPort(&["CAP_NET_BIND_SERVICE"], &[""]),
    ),
    (
        Section::Service,
        "PrivateUsers",
        Rule::IfLowPort(&["no"], YES),
    ),
    (Section::Service, "NoNewPrivileges", Rule::Is(YES)),
    (Section::Service, "ProtectSystem", Rule::Is(&["strict"])),
    (Section::Service, "ProtectHome", Rule::Is(YES)),
    (Section::Service, "PrivateTmp", Rule::Is(YES)),
    (Section::Service, "PrivateDevices", Rule::Is(YES)),
    (Section::Service, "DevicePolicy", Rule::Is(&["closed"])),
    (
        Section::Service,
        "BindPaths",
        Rule::IfGpu(&["/dev/dri"], NONE),
    ),
    (
        Section::Service,
        "DeviceAllow",
        Rule::IfGpu(&["char-drm rw"], NONE),
    ),
    (
        Section::Service,
        "SupplementaryGroups",
        Rule::IfGpu(&["render video"], NONE),
    ),
    (Section::Service, "PrivateIPC", Rule::Is(YES)),
    (Section::Service, "PrivateMounts", Rule::Is(YES)),
    (Section::Service, "ProtectKernelTunables", Rule::Is(YES)),
    (Section::Service, "ProtectKernelModules", Rule::Is(YES)),
    (Section::Service, "ProtectKernelLogs", Rule::Is(YES)),
    (Section::Service, "ProtectControlGroups", Rule::Is(YES)),
    (Section::Service, "ProtectClock", Rule::Is(YES)),
    (Section::Service, "ProtectHostname", Rule::Is(YES)),
    (Section::Service, "ProtectProc", Rule::Is(&["invisible"])),
    (Section::Service, "ProcSubset", Rule::Is(&["pid"])),
    (Section::Service, "LockPersonality", Rule::Is(YES)),
    (Section::Service, "MemoryDenyWriteExecute", Rule::Is(YES)),
    (Section::Service, "RestrictRealtime", Rule::Is(YES)),
    (Section::Service, "RestrictSUIDSGID", Rule::Is(YES)),
    (Section::Service, "RemoveIPC", Rule::Is(YES)),
    (Section::Service, "RestrictNamespaces", Rule::Is(YES)),
    (
        Section::Service,
        "RestrictAddressFamilies",
        Rule::Is(&["AF_UNIX AF_INET AF_INET6"]),
    ),
    (
        Section::Service,
        "SystemCallArchitectures",
        Rule::Is(&["native"]),
    ),
    (
        Section::Service,
        "SystemCallFilter",
        Rule::Is(&["@system-service", "~@privileged @resources"]),
    ),
    (
        Section::Service,
        "SystemCallErrorNumber",
        Rule::Is(&["EPERM"]),
    ),
    (
        Section::Install,
        "WantedBy",
        Rule::Is(&["multi-user.target"]),
    ),
];

const RULES_MAX: usize = 96;
const _: () = assert!(RULES.len() <= RULES_MAX);

/// Checks that `text` is exactly the unit of service `name` running `spec` in `ctx`; see the
/// module comment.
pub fn check(
    text: &[u8],
    name: &str,
    spec: &ServiceSpec<'_>,
    ctx: &UnitContext<'_>,
) -> Result<(), CheckError> {
    let whole = |why| CheckError { line: 0, why };
    let text = core::str::from_utf8(text).map_err(|_| whole("not UTF-8"))?;
    if !text.ends_with('\n') {
        return Err(whole("does not end with a newline"));
    }
    let facts = Facts::of(spec);
    let mut counts = [0usize; RULES_MAX];
    let mut section = Section::None;
    for (i, line) in text.split_terminator('\n').enumerate() {
        let at = |why| CheckError { line: i + 1, why };
        if line.chars().any(|c| c.is_control()) {
            return Err(at("holds a control character"));
        }
        if line.ends_with('\\') {
            return Err(at("ends with a backslash, which joins the next line to it"));
        }
        if line.starts_with(char::is_whitespace) {
            return Err(at("starts with whitespace"));
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with(['#', ';']) {
            if !line.chars().all(plain) {
                return Err(at("a comment holds quoting characters"));
            }
            continue;
        }
        if line.starts_with('[') {
            section = match (section, line) {
                (Section::None, "[Unit]") => Section::Unit,
                (Section::Unit, "[Service]") => Section::Service,
                (Section::Service, "[Install]") => Section::Install,
                _ => return Err(at("unexpected section header")),
            };
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| at("not Key=value"))?;
        let index = RULES
            .iter()
            .position(|(s, k, _)| *s == section && *k == key)
            .ok_or_else(|| at("unexpected directive"))?;
        let rule = RULES[index].2;
        let n = counts[index];
        counts[index] += 1;
        check_line(rule, n, value, name, spec, ctx, &facts).map_err(at)?;
    }
    if section != Section::Install {
        return Err(whole("the [Service] or [Install] section is missing"));
    }
    for (index, (_, _, rule)) in RULES.iter().enumerate() {
        if counts[index] != expected_count(*rule, spec, &facts) {
            return Err(whole(match rule {
                Rule::ExecStart => "ExecStart= is not there exactly once",
                Rule::ExecStartPre => "not one ExecStartPre= per migration",
                Rule::Environment => "not one Environment= per variable",
                _ => "a directive is missing or repeated",
            }));
        }
    }
    Ok(())
}

fn expected_count(rule: Rule, spec: &ServiceSpec<'_>, facts: &Facts) -> usize {
    match rule {
        Rule::Is(values) => values.len(),
        Rule::IfLowPort(yes, no) => pick(facts.low_port, yes, no).len(),
        Rule::IfGpu(yes, no) => pick(facts.gpu, yes, no).len(),
        Rule::Named(_) | Rule::Clock | Rule::KeyId | Rule::ExecStart => 1,
        Rule::Ports => usize::from(!spec.ports.is_empty()),
        Rule::Source => usize::from(facts.flake),
        Rule::ExecStartPre => spec.pre.len(),
        Rule::Environment => spec.env.len(),
        Rule::Limit(limit) => usize::from(limit.expected(&spec.limits).0.is_some()),
    }
}

fn pick<T>(condition: bool, yes: T, no: T) -> T {
    if condition {
        yes
    } else {
        no
    }
}

/// Checks the `n`-th line (from 0) of a key with `rule`.
fn check_line(
    rule: Rule,
    n: usize,
    value: &str,
    name: &str,
    spec: &ServiceSpec<'_>,
    ctx: &UnitContext<'_>,
    facts: &Facts,
) -> Result<(), &'static str> {
    let exact = |values: &[&str]| match values.get(n) {
        Some(v) if *v == value => Ok(()),
        Some(_) => Err("a fixed directive has another value"),
        None => Err("a fixed directive is repeated"),
    };
    match rule {
        Rule::Is(values) => exact(values),
        Rule::IfLowPort(yes, no) => exact(pick(facts.low_port, yes, no)),
        Rule::IfGpu(yes, no) => exact(pick(facts.gpu, yes, no)),
        Rule::Named(prefix) => match value.strip_prefix(prefix) {
            Some(rest) if rest == name => Ok(()),
            _ => Err("a directive does not name the service"),
        },
        Rule::Clock => number(value, ctx.version.clock),
        Rule::KeyId => number(value, ctx.version.key_id.into()),
        Rule::Ports => ports(value, spec),
        Rule::Source => match spec.source {
            Source::Flake { uri, attr, .. } => words(
                value,
                Dollar::Keep,
                &mut [&[uri, "#", attr] as &[&str]].into_iter(),
            ),
            Source::Exec { .. } => Err("X-Myco-Source= for an exec source"),
        },
        Rule::ExecStartPre => {
            let command = spec
                .pre
                .get(n)
                .ok_or("more ExecStartPre= than migrations")?;
            let mut expected = command.iter().map(core::slice::from_ref);
            words(value, Dollar::Double, &mut expected)
        }
        Rule::ExecStart => {
            let default = [FLAKE_PROFILE_DIR, "/", name, "/bin/", name];
            let program: &[&str] = match (&spec.source, &ctx.program) {
                (Source::Exec { path }, _) => core::slice::from_ref(path),
                (Source::Flake { .. }, Some(path)) => core::slice::from_ref(path),
                (Source::Flake { .. }, None) => &default,
            };
            let mut expected =
                core::iter::once(program).chain(spec.args.iter().map(core::slice::from_ref));
            words(value, Dollar::Double, &mut expected)
        }
        Rule::Environment => {
            let (key, val) = spec.env.get(n).ok_or("more Environment= than variables")?;
            words(
                value,
                Dollar::Keep,
                &mut [&[*key, "=", *val] as &[&str]].into_iter(),
            )
        }
        Rule::Limit(limit) => {
            let (expected, unit) = limit.expected(&spec.limits);
            let expected = expected.ok_or("a resource limit the spec does not set")?;
            let digits = value
                .strip_suffix(unit)
                .ok_or("a resource limit lacks its unit")?;
            number(digits, expected).map_err(|_| "a resource limit differs from the spec")
        }
    }
}

fn number(value: &str, expected: u64) -> Result<(), &'static str> {
    match value.parse::<u64>() {
        Ok(n) if n == expected && value.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err("a version number is not the context's"),
    }
}

fn ports(value: &str, spec: &ServiceSpec<'_>) -> Result<(), &'static str> {
    let mut listed = value.split(' ');
    for port in &spec.ports {
        let item = listed.next().ok_or("X-Myco-Ports= lacks a port")?;
        let (number, protocol) = item.split_once('/').ok_or("a port is not N/protocol")?;
        let protocol = match protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err("a port's protocol is not tcp or udp"),
        };
        if number.parse::<u16>() != Ok(port.number) || protocol != port.protocol {
            return Err("X-Myco-Ports= differs from the spec");
        }
    }
    match listed.next() {
        None => Ok(()),
        Some(_) => Err("X-Myco-Ports= has more ports than the spec"),
    }
}

/// A character that a fixed value or a comment may hold: printable ASCII without the characters
/// systemd's quoting, specifiers or variables give a meaning to.
fn plain(c: char) -> bool {
    (c.is_ascii_graphic() || c == ' ') && !matches!(c, '"' | '\'' | '\\' | '%' | '$')
}

/// Whether `$$` stands for `$` (command lines) or `$` is itself (everything else).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dollar {
    Double,
    Keep,
}

/// Checks that the words of `value` unquote to exactly the `expected` words, each given as parts
/// to concatenate.
fn words<'e>(
    value: &str,
    dollar: Dollar,
    expected: &mut dyn Iterator<Item = &'e [&'e str]>,
) -> Result<(), &'static str> {
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        let Some(word_and_rest) = rest.strip_prefix('"') else {
            return match (rest.is_empty(), expected.next()) {
                (true, None) => Ok(()),
                (true, Some(_)) => Err("fewer words than expected"),
                (false, _) => Err("a word is not double-quoted"),
            };
        };
        let end = closing_quote(word_and_rest).ok_or("a word has no closing quote")?;
        let raw = &word_and_rest[..end];
        rest = &word_and_rest[end + 1..];
        if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            return Err("a word continues after its closing quote");
        }
        let parts = expected.next().ok_or("more words than expected")?;
        let mut want = parts.iter().flat_map(|p| p.chars());
        let mut got = raw.chars();
        while let Some(c) = unescape(&mut got, dollar)? {
            if want.next() != Some(c) {
                return Err("a word does not unquote to the token");
            }
        }
        if want.next().is_some() {
            return Err("a word is shorter than the token");
        }
    }
}

/// The byte offset of the quote that ends a word whose opening quote is already consumed.
fn closing_quote(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The next character of a quoted word once systemd has undone its escapes, specifiers and (in
/// command lines) variables; `None` at the end.
fn unescape(
    chars: &mut core::str::Chars<'_>,
    dollar: Dollar,
) -> Result<Option<char>, &'static str> {
    let Some(c) = chars.next() else {
        return Ok(None);
    };
    let pair = |chars: &mut core::str::Chars<'_>, allowed: &[char], why| match chars.next() {
        Some(next) if allowed.contains(&next) => Ok(Some(next)),
        _ => Err(why),
    };
    match c {
        '\\' => pair(chars, &['"', '\\'], "an escape other than \\\" or \\\\"),
        '%' => pair(chars, &['%'], "a bare % would expand a specifier"),
        '$' if dollar == Dollar::Double => pair(chars, &['$'], "a bare $ would expand a variable"),
        c if quotable(c) => Ok(Some(c)),
        _ => Err("a character systemd refuses"),
    }
}
