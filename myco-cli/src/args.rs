//! Reading and checking the command line: the error type that picks the exit code, flag values,
//! and the parsers for hex keys, zones, heights, clocks and arch names.
//!
//! Every flag is taken out of the argument list before any is checked, so an unknown or misspelt
//! flag is reported as such rather than as the required flag it was meant to be.

use crate::output::terminal_safe;
use myco_core::schema::entry::{valid_name, Arch};
use pico_args::Arguments;
use std::convert::Infallible;
use std::ffi::OsString;
use std::path::PathBuf;

/// A bad command line exits with 2, as in grep, bash builtins and clap, so that scripts can tell a
/// usage mistake from a failure (1). 3 and 4 tell a daemon that cannot be reached (retry, or start
/// it) from one that answered no (do not retry the same request).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_REFUSED: u8 = 4;

/// What a service name is, for the errors that refuse one: the core's text, shared with myco-d.
pub use myco_core::schema::entry::NAME_RULE;

/// Why a command stopped. The message reads "what happened; what to do" and is printed after
/// `myco: ` on stderr. Nothing is written to disk or sent to a daemon before a usage error is
/// found.
#[derive(Debug)]
pub enum Error {
    /// The command line itself is wrong (unknown flag, missing or bad value): exit 2.
    Usage(String),
    /// The command line was fine but the work failed (I/O, a file in the way, a bad key file, a
    /// daemon that answered 5xx or garbage): exit 1.
    Failed(String),
    /// The daemon's socket cannot be reached: missing, refused, not permitted, or no answer in
    /// time: exit 3.
    Unreachable(String),
    /// The daemon answered and refused the request (4xx); the message carries its reason: exit 4.
    Refused(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Failed(_) => EXIT_FAILED,
            Error::Unreachable(_) => EXIT_UNREACHABLE,
            Error::Refused(_) => EXIT_REFUSED,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Usage(m) | Error::Failed(m) | Error::Unreachable(m) | Error::Refused(m) => m,
        }
    }
}

/// One command's flags. Take every flag out, then `finish`, then check the values: that order
/// reports a misspelt flag as unknown rather than the flag it was meant to be as missing.
pub struct Flags {
    args: Arguments,
    command: &'static str,
}

impl Flags {
    pub fn new(args: Arguments, command: &'static str) -> Flags {
        Flags { args, command }
    }

    /// The string value of `flag`, if given.
    pub fn string(&mut self, flag: &'static str) -> Result<Option<String>, Error> {
        let value = self.os_string(flag)?;
        let utf8 = |v: OsString| {
            v.into_string()
                .map_err(|_| Error::Usage(format!("{flag} is not valid UTF-8; pass plain text")))
        };
        value.map(utf8).transpose()
    }

    /// The path value of `flag`, if given. Paths need not be UTF-8.
    pub fn path(&mut self, flag: &'static str) -> Result<Option<PathBuf>, Error> {
        Ok(self.os_string(flag)?.map(PathBuf::from))
    }

    /// Whether the switch `flag` (a flag without a value) is given.
    pub fn switch(&mut self, flag: &'static str) -> bool {
        self.args.contains(flag)
    }

    fn os_string(&mut self, flag: &'static str) -> Result<Option<OsString>, Error> {
        let command = self.command;
        let missing = || Error::Usage(format!("{flag} needs a value; see 'myco {command} --help'"));
        let value = self
            .args
            .opt_value_from_os_str(flag, |s| Ok::<_, Infallible>(s.to_owned()))
            .map_err(|_| missing())?;
        // pico-args takes the next argument whatever it is, so `--out --json` would name a file
        // "--json". A value that looks like a flag is almost surely a forgotten value.
        match value {
            Some(v) if v.to_string_lossy().starts_with('-') => Err(missing()),
            value => Ok(value),
        }
    }

    /// Refuses whatever flags or arguments the command did not take out.
    pub fn finish(&mut self) -> Result<(), Error> {
        match self.take_rest().first() {
            None => Ok(()),
            Some(arg) => Err(self.unknown(arg)),
        }
    }

    /// The one optional positional argument, a path, and `finish` in the same step: call it after
    /// taking every flag. A leftover that looks like a flag is reported as an unknown flag, not
    /// taken for the path, and so is a second positional argument.
    pub fn finish_with_path(&mut self) -> Result<Option<PathBuf>, Error> {
        Ok(self.finish_with_arg()?.map(PathBuf::from))
    }

    /// The one optional positional argument, as `finish_with_path` takes it, as text.
    pub fn finish_with_string(&mut self, what: &str) -> Result<Option<String>, Error> {
        let command = self.command;
        let utf8 = |v: OsString| {
            v.into_string().map_err(|_| {
                Error::Usage(format!(
                    "{what} is not valid UTF-8; see 'myco {command} --help'"
                ))
            })
        };
        self.finish_with_arg()?.map(utf8).transpose()
    }

    fn finish_with_arg(&mut self) -> Result<Option<OsString>, Error> {
        let rest = self.take_rest();
        if let Some(flag) = rest.iter().find(|a| a.to_string_lossy().starts_with('-')) {
            return Err(self.unknown(flag));
        }
        match rest.as_slice() {
            [] => Ok(None),
            [arg] => Ok(Some(arg.clone())),
            [_, extra, ..] => Err(self.unknown(extra)),
        }
    }

    fn take_rest(&mut self) -> Vec<OsString> {
        std::mem::replace(&mut self.args, Arguments::from_vec(Vec::new())).finish()
    }

    fn unknown(&self, arg: &OsString) -> Error {
        Error::Usage(format!(
            "unknown argument '{}' for {}; see 'myco {} --help'",
            arg.to_string_lossy(),
            self.command,
            self.command
        ))
    }

    /// The value of a flag the command cannot do without.
    /// The positional NAME of a command about one service (`what` says which), checked as a
    /// service name.
    pub fn finish_with_service(&mut self, what: &str) -> Result<String, Error> {
        let name = self.finish_with_string("NAME")?;
        let name = self.required(name, what)?;
        if !valid_name(&name) {
            return Err(Error::Usage(format!(
                "'{}' is not a service name: it must be {NAME_RULE}; see 'myco ls' for the services",
                terminal_safe(&name)
            )));
        }
        Ok(name)
    }

    pub fn required<T>(&self, value: Option<T>, flag: &str) -> Result<T, Error> {
        let command = self.command;
        value.ok_or_else(|| {
            Error::Usage(format!(
                "{command} needs {flag}; see 'myco {command} --help'"
            ))
        })
    }
}

/// A zone: 0 to 255, as in a node certificate.
pub fn parse_zone(value: &str) -> Result<u8, Error> {
    value.parse().map_err(|_| {
        Error::Usage(format!(
            "--zone must be a number from 0 to 255, got '{value}'"
        ))
    })
}

/// `--bridge`: `all`, or a comma-separated list of zones 0 to 63 (the scope a certificate can
/// name one by one; zones from 64 on are bridged with `all`).
pub fn parse_bridge(value: &str) -> Result<myco_core::crypto::BridgeScope, Error> {
    use myco_core::crypto::BridgeScope;
    if value == "all" {
        return Ok(BridgeScope::All);
    }
    let mut bits = 0u64;
    for z in value.split(',') {
        match z.trim().parse::<u8>() {
            Ok(z) if z < 64 => bits |= 1 << z,
            _ => {
                return Err(Error::Usage(format!(
                    "--bridge must be 'all' or zones 0 to 63 separated by commas (e.g. 0,3), got \
                     '{value}'; use 'all' to bridge zones from 64 on"
                )))
            }
        }
    }
    Ok(BridgeScope::Zones(bits))
}

/// A RevocationBlock height, at least `min`.
pub fn parse_height(value: &str, flag: &str, min: u64) -> Result<u64, Error> {
    match value.parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(Error::Usage(format!(
            "{flag} must be a whole number, {min} or more, got '{value}'"
        ))),
    }
}

/// An entry's version clock: milliseconds since the Unix epoch, 1 or more.
pub fn parse_clock(value: &str) -> Result<u64, Error> {
    match value.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Error::Usage(format!(
            "--clock must be milliseconds since the Unix epoch (a whole number, 1 or more), \
             got '{value}'"
        ))),
    }
}

/// Arches in the order the help lists them. Names come from the core (`Arch::name`), which the
/// daemon's API prints too, so parsing and printing cannot disagree.
const ARCHES: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Any];

pub fn parse_arch(value: &str) -> Result<Arch, Error> {
    ARCHES
        .into_iter()
        .find(|a| a.name() == value)
        .ok_or_else(|| {
            Error::Usage(format!(
                "--arch must be x86_64, aarch64 or any, got '{value}'"
            ))
        })
}

pub fn arch_name(arch: Arch) -> &'static str {
    arch.name()
}

// Key text is parsed by the core, so `myco` and `myco-d` accept exactly the same spellings.
pub use myco_core::hex::parse_hex32;

/// Lowercase hex, the form `myco` prints and writes: the core's encoder, as myco-d prints it.
pub fn hex(bytes: &[u8]) -> String {
    myco_core::hex::Hex(bytes).to_string()
}

#[cfg(test)]
mod tests {
    /// `--bridge` takes `all` or a list of zones below 64, and refuses anything else.
    #[test]
    fn bridge_scopes_parse() {
        use myco_core::crypto::BridgeScope;
        assert_eq!(super::parse_bridge("all").ok(), Some(BridgeScope::All));
        let scope = super::parse_bridge("0,3, 5").ok();
        assert_eq!(scope, Some(BridgeScope::Zones(0b10_1001)));
        for bad in ["", "64", "1,,2", "x", "-1", "ALL"] {
            assert!(super::parse_bridge(bad).is_err(), "{bad}");
        }
    }

    use super::*;
    use myco_core::hex::HexError;

    /// Hex round-trips through `hex` and `parse_hex32`, in either case.
    #[test]
    fn hex_round_trip() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(37));
        let text = hex(&bytes);
        assert_eq!(text.len(), 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(parse_hex32(text.as_bytes()), Ok(bytes));
        assert_eq!(parse_hex32(text.to_uppercase().as_bytes()), Ok(bytes));
    }

    /// Wrong lengths, a trailing newline and every kind of non-digit are refused, and the error
    /// names the position, counted from 1.
    #[test]
    fn hex_refusals() {
        let good = "0f".repeat(32);
        assert_eq!(parse_hex32(b""), Err(HexError::Length(0)));
        assert_eq!(
            parse_hex32(&good.as_bytes()[..63]),
            Err(HexError::Length(63))
        );
        assert_eq!(
            parse_hex32(format!("{good}\n").as_bytes()),
            Err(HexError::Length(65))
        );
        for (bad, at) in [(b'g', 1), (b' ', 64), (b'-', 7), (b':', 2), (0xc3, 40)] {
            let mut text = good.clone().into_bytes();
            text[at - 1] = bad;
            assert_eq!(parse_hex32(&text), Err(HexError::Digit(at)));
        }
    }

    /// Arch names parse to the arch they print as, and nothing else parses.
    #[test]
    fn arch_names_round_trip() {
        for arch in [Arch::Any, Arch::X86_64, Arch::Aarch64] {
            assert_eq!(parse_arch(arch_name(arch)).unwrap(), arch);
        }
        for bad in ["", "X86_64", "amd64", "arm64", "x86-64"] {
            assert!(parse_arch(bad).is_err(), "{bad} parsed");
        }
    }

    /// Zones stop at 255 and heights respect their minimum.
    #[test]
    fn numbers_in_range() {
        assert_eq!(parse_zone("0").unwrap(), 0);
        assert_eq!(parse_zone("255").unwrap(), 255);
        for bad in ["256", "-1", "", "1.0", "0x1"] {
            assert!(parse_zone(bad).is_err(), "zone {bad} parsed");
        }
        assert_eq!(parse_height("1", "--height", 1).unwrap(), 1);
        assert!(parse_height("0", "--height", 1).is_err());
        assert_eq!(parse_height("0", "--issued-at", 0).unwrap(), 0);
        assert_eq!(parse_clock("1").unwrap(), 1);
        assert_eq!(parse_clock(&u64::MAX.to_string()).unwrap(), u64::MAX);
        for bad in ["0", "-1", "", "1.5", "18446744073709551616", "now"] {
            assert!(parse_clock(bad).is_err(), "clock {bad} parsed");
        }
    }
}
