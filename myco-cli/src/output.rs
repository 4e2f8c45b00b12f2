//! What a command reports on success: `name: value` lines for people, or one JSON object on one
//! line for scripts (`--json`). Both render the same list of fields, so they cannot drift apart,
//! and the field names are the JSON keys. Lists from the daemon print as aligned tables.
//!
//! Text that comes from the daemon is shown through `terminal_safe`: a daemon, or whoever wrote
//! to its socket, must not be able to move the cursor or rewrite the operator's screen.

use crate::args::Error;
use std::io::Write;

pub enum Value {
    Text(String),
    Number(u64),
    Bool(bool),
}

pub type Field = (&'static str, Value);

/// Prints `fields` to stdout.
pub fn print(fields: &[Field], json: bool) -> Result<(), Error> {
    print_text(&if json {
        to_json(fields)
    } else {
        to_text(fields)
    })
}

/// Prints `text` to stdout. A closed stdout is an error, not a panic (`print!` would panic, and
/// the release build aborts): scripts pipe `myco`.
pub fn print_text(text: &str) -> Result<(), Error> {
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| Error::Failed(format!("cannot write to stdout: {e}; check the pipe")))
}

/// Rows under a header, each column padded to its widest cell and two spaces from the next; the
/// last column is not padded, so no line ends in spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    assert!(rows.iter().all(|row| row.len() == header.len()));
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.iter().map(|h| h.to_string()).collect::<Vec<_>>();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len() - 1;
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out += cell;
            } else {
                out += &format!("{cell:width$}  ");
            }
        }
        out.push('\n');
    }
    out
}

/// `text` with every control character (escape, CR, newline, C1 ...) written as a Rust escape
/// such as `\u{1b}`, and everything else as it is.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn to_text(fields: &[Field]) -> String {
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in fields {
        let value = match value {
            Value::Text(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
        };
        out += &format!("{name:width$}  {value}\n");
    }
    out
}

fn to_json(fields: &[Field]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out += &json_string(name);
        out.push(':');
        match value {
            Value::Text(s) => out += &json_string(s),
            Value::Number(n) => out += &n.to_string(),
            Value::Bool(b) => out += &b.to_string(),
        }
    }
    out + "}\n"
}

/// A JSON string literal. Paths may hold quotes, backslashes and control characters.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\n' => out += "\\n",
            c if u32::from(c) < 0x20 => out += &format!("\\u{:04x}", u32::from(c)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON output is one line with every kind of value, and strings that need escaping are
    /// escaped.
    #[test]
    fn json_escapes_and_types() {
        let fields = [
            ("path", Value::Text("a\"b\\c\nd\u{1}é".into())),
            ("key_id", Value::Number(u64::MAX)),
            ("gpu", Value::Bool(true)),
        ];
        assert_eq!(
            to_json(&fields),
            "{\"path\":\"a\\\"b\\\\c\\nd\\u0001é\",\"key_id\":18446744073709551615,\"gpu\":true}\n"
        );
    }

    /// Tables align every column to its widest cell, header included, with no trailing spaces.
    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["web".to_string(), "7".to_string(), "deployed".to_string()],
            vec![
                "database".to_string(),
                "12".to_string(),
                "deleted".to_string(),
            ],
        ];
        assert_eq!(
            table(&["NAME", "VERSION", "STATUS"], &rows),
            "NAME      VERSION  STATUS\n\
             web       7        deployed\n\
             database  12       deleted\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
    }

    /// Control characters from the daemon cannot reach the terminal raw; other text is unchanged.
    #[test]
    fn terminal_safe_escapes_controls() {
        assert_eq!(terminal_safe("web-1 é ✓"), "web-1 é ✓");
        assert_eq!(
            terminal_safe("a\u{1b}[2Jb\r\nc\u{9b}d"),
            "a\\u{1b}[2Jb\\r\\nc\\u{9b}d"
        );
    }

    /// Text output aligns values after the longest name.
    #[test]
    fn text_aligns_values() {
        let fields = [("zone", Value::Number(3)), ("issued_at", Value::Number(0))];
        assert_eq!(to_text(&fields), "zone       3\nissued_at  0\n");
    }
}
