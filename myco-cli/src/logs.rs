//! `myco logs`: prints a service's journal from the local daemon's `GET /logs`, and with
//! `--follow` keeps printing as the journal grows. The answer is plain text with no length that
//! ends when the connection closes, so it is read here as a stream, not through `client::call`;
//! an error answer has a length and a JSON body, and is reported as every other error is.
//!
//! On a terminal each line is shown through `terminal_safe`, since a service writes what it likes
//! into its journal; into a pipe the bytes pass unchanged, so `grep` sees what journalctl wrote.

use crate::args::{Error, Flags};
use crate::client::{self, Request, QUERY_TIMEOUT, SOCKET_ENV};
use crate::output::terminal_safe;
use myco_cli::http::{self, ReadError};
use pico_args::Arguments;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub const LOGS_HELP: &str = "\
Usage: myco logs NAME [--follow] [--lines N] [--socket PATH]

Prints the journal of the service NAME (its unit myco-NAME.service) on this box, as myco-d's
GET /logs serves it from journalctl, and exits at its end. With --follow, keeps printing new
lines until interrupted. The journal is on the box that runs the service: asked elsewhere,
myco-d answers which boxes run it ('myco ls' shows them too), and myco exits 4.

Options:
  -f, --follow   Keep printing lines as they are written
  -n, --lines N  Print only the last N lines, 0 to 10000 (default: journalctl's)
  --socket PATH  myco-d's API socket (default: $MYCO_SOCKET, else /run/myco/myco.sock)
  -h, --help     Print this help

Exit status: 0 printed (or, with --follow, interrupted); 1 myco-d failed (5xx, such as 503 for
too many followers) or answered garbage; 2 bad command line; 3 cannot reach myco-d (not running,
wrong --socket, no permission); 4 myco-d refused (4xx): the service does not run on this box,
or there is no such service.
";

/// `GET /logs`'s `lines` bound (docs/api.md).
const LINES_MAX: u32 = 10_000;

/// `--follow`/`-f` and `--lines`/`-n`, as `myco logs` and `myco audit` read them; the count is
/// checked by [`lines_value`] once the command line is known to be whole.
pub fn follow_and_lines(flags: &mut Flags) -> Result<(bool, Option<String>), Error> {
    let (follow_long, follow_short) = (flags.switch("--follow"), flags.switch("-f"));
    let lines = match (flags.string("--lines")?, flags.string("-n")?) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "--lines and -n are the same flag; give it once".into(),
            ))
        }
        (lines, n) => lines.or(n),
    };
    Ok((follow_long || follow_short, lines))
}

/// A `--lines` value: a whole number up to the API's bound, `LINES_MAX`.
pub fn lines_value(text: &str) -> Result<u32, Error> {
    match text.parse::<u32>() {
        Ok(n) if n <= LINES_MAX => Ok(n),
        _ => Err(Error::Usage(format!(
            "--lines must be a whole number from 0 to {LINES_MAX}, got '{text}'"
        ))),
    }
}

pub fn logs(args: Arguments) -> Result<(), Error> {
    let mut flags = Flags::new(args, "logs");
    let (follow, lines) = follow_and_lines(&mut flags)?;
    let socket = flags.path("--socket")?;
    let name = flags.finish_with_service("NAME, the service whose journal to print")?;
    let lines = lines.as_deref().map(lines_value).transpose()?;
    let socket = client::socket_path(socket, std::env::var_os(SOCKET_ENV));
    let mut target = format!("/logs?service={name}&follow={follow}");
    if let Some(n) = lines {
        target += &format!("&lines={n}");
    }
    let stdout = io::stdout();
    let printer = Printer::new(stdout.is_terminal(), None);
    stream(&socket, &target, follow, printer, &mut stdout.lock())
}

/// Sends the request and copies the answer, through `printer`, to `out` until the daemon closes
/// the connection. `target` is a `/logs` or `/audit` request.
pub fn stream(
    socket: &Path,
    target: &str,
    follow: bool,
    mut printer: Printer,
    out: &mut impl Write,
) -> Result<(), Error> {
    let path = if target.starts_with("/audit") {
        "/audit"
    } else {
        "/logs"
    };
    let shown = socket.display();
    let mut connection = UnixStream::connect(socket).map_err(|e| {
        Error::Unreachable(format!(
            "cannot reach myco-d at '{shown}': {e}; is myco-d running? check 'systemctl status \
             myco-d' and --socket (or {SOCKET_ENV})"
        ))
    })?;
    let lost = |e: io::Error| {
        Error::Unreachable(format!(
            "the connection to myco-d at '{shown}' failed while reading {path}: {e}; check \
             'journalctl -u myco-d'"
        ))
    };
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    connection.write_all(request.as_bytes()).map_err(lost)?;
    // The head comes at once; without --follow so does the whole journal. Silence while
    // following is a quiet service, not a lost daemon.
    connection
        .set_read_timeout(Some(QUERY_TIMEOUT))
        .map_err(lost)?;
    let mut buf = Vec::new();
    match http::read_until(&mut buf, |chunk| connection.read(chunk), http::parse_head) {
        Ok(head) if head.status == 200 => drop(buf.drain(..head.len)),
        Ok(_) => {
            // An error answer has a length; the connection closes after it.
            let _ = connection.read_to_end(&mut buf);
            return Err(not_streamed(&buf, path));
        }
        Err(ReadError::Io(e)) => return Err(lost(e)),
        Err(ReadError::Closed | ReadError::Answer(_)) => return Err(not_streamed(&buf, path)),
    }
    if follow {
        connection.set_read_timeout(None).map_err(lost)?;
    }
    printer.write(&buf, out)?;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match connection.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => printer.write(&chunk[..n], out)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(lost(e)),
        }
    }
    printer.finish(out)
}

/// Copies streamed bytes to stdout: verbatim, or line by line rendered by `render` and, for a
/// terminal, made terminal-safe.
pub struct Printer {
    safe: bool,
    render: Option<fn(&str) -> String>,
    /// A line not yet ended.
    partial: Vec<u8>,
}

impl Printer {
    pub fn new(safe: bool, render: Option<fn(&str) -> String>) -> Printer {
        Printer {
            safe,
            render,
            partial: Vec::new(),
        }
    }

    fn line(&self, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        let text = match self.render {
            Some(render) => render(&text),
            None => text.into_owned(),
        };
        if self.safe {
            terminal_safe(&text)
        } else {
            text
        }
    }

    fn write(&mut self, bytes: &[u8], out: &mut impl Write) -> Result<(), Error> {
        if !self.safe && self.render.is_none() {
            return emit(out, bytes);
        }
        self.partial.extend_from_slice(bytes);
        let Some(last) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let rest = self.partial.split_off(last + 1);
        let lines = std::mem::replace(&mut self.partial, rest);
        let mut text = String::new();
        for line in lines.split(|&b| b == b'\n') {
            text += &self.line(line);
            text.push('\n');
        }
        // `split` yields an empty piece after the final newline.
        text.pop();
        emit(out, text.as_bytes())
    }

    fn finish(&mut self, out: &mut impl Write) -> Result<(), Error> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let partial = std::mem::take(&mut self.partial);
        let line = self.line(&partial);
        emit(out, format!("{line}\n").as_bytes())
    }
}

/// Writes and flushes, so followed lines appear as they come. A reader that went away
/// (`myco logs web | head`) is the end of the job, not a failure.
fn emit(out: &mut impl Write, bytes: &[u8]) -> Result<(), Error> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Error::Failed(format!(
            "cannot write to stdout: {e}; check the pipe"
        ))),
    }
}

/// The error for an answer that is not a 200 stream of `path`.
fn not_streamed(bytes: &[u8], path: &'static str) -> Error {
    let request = Request {
        method: "GET",
        path,
        body: b"",
        what: if path == "/audit" {
            "the audit log"
        } else {
            "the journal"
        },
        timeout: QUERY_TIMEOUT,
    };
    client::stream_error(bytes, &request)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bound for a terminal, lines are escaped and held until they end; for a pipe, bytes pass
    /// as they came.
    #[test]
    fn printer_escapes_only_for_terminals() {
        let mut out = Vec::new();
        let mut safe = Printer::new(true, None);
        safe.write(b"a\x1b[2Jb\nhal", &mut out).unwrap();
        assert_eq!(out, b"a\\u{1b}[2Jb\n");
        safe.write(b"f\n", &mut out).unwrap();
        safe.write(b"tail", &mut out).unwrap();
        safe.finish(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\u{1b}[2Jb\nhalf\ntail\n"
        );

        let mut out = Vec::new();
        let mut raw = Printer::new(false, None);
        raw.write(b"a\x1b[2Jb\nhal", &mut out).unwrap();
        raw.finish(&mut out).unwrap();
        assert_eq!(out, b"a\x1b[2Jb\nhal");
    }
}
