//! Manual pages in roff, made from the text users already read: `--help` of `myco` and `myco-d`
//! and `docs/myco-json.md`. There is one source for each fact, so a man page cannot disagree with
//! the help or the docs; the `manpages` binary of this kit writes the pages, and `make man`, `make
//! install` and `make deb` call it.
//!
//! Two converters:
//! - `help_to_roff` reads the house's help layout: blocks separated by blank lines; a block whose
//!   first line ends with `:` and whose other lines are indented is a list of terms (`  --flag ARG
//!   description`, continued on deeper-indented lines); a `Usage:` block or an indented block is
//!   kept as written; anything else is a paragraph.
//! - `markdown_to_roff` reads the subset the docs use: `#`/`##`/`###` headings, paragraphs,
//!   `- ` bullets, fenced code, pipe tables (each row becomes a tagged paragraph) and the inline
//!   forms `` `code` ``, `**bold**` and `[text](link)` (the link target is dropped: the files it
//!   names are not installed).
//!
//! Invariant: every line written is either a roff request the converters chose or text passed
//! through `escape`, so no help or doc text can start a request or an escape of its own.

/// Text made safe for roff: backslashes written as `\e`, characters outside ASCII as `\[uXXXX]`,
/// and a leading `.` or `'` (which would start a request) guarded with `\&`.
pub fn escape(text: &str) -> String {
    guard_line_start(escape_chars(text))
}

/// The character escapes of `escape`, for text in the middle of a line.
fn escape_chars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("\\[u{:04X}]", c as u32)),
        }
    }
    out
}

/// A line that would start with `.` or `'` (a request) starts with the invisible `\&` instead.
fn guard_line_start(mut line: String) -> String {
    if line.starts_with('.') || line.starts_with('\'') {
        line.insert_str(0, "\\&");
    }
    line
}

/// A literal that users type (a flag, a path, a command): escaped, with every `-` a real minus so
/// that it pastes into a shell as written.
pub fn literal(text: &str) -> String {
    escape(text).replace('-', "\\-")
}

/// The `.TH` line and the NAME section every page starts with.
pub fn header(title: &str, section: u8, version: &str, name: &str, summary: &str) -> String {
    format!(
        ".TH \"{}\" {section} \"\" \"{}\" \"Myco\"\n.SH NAME\n{} \\- {}\n",
        escape(&title.to_uppercase()),
        escape(version),
        literal(name),
        escape(summary)
    )
}

/// The body of a help text (everything after a first line that names the program) as roff.
pub fn help_to_roff(help: &str) -> String {
    let mut out = String::new();
    for block in help.split("\n\n").map(|b| b.trim_matches('\n')) {
        if block.trim().is_empty() {
            continue;
        }
        let first = block.lines().next().unwrap_or("");
        let rest: Vec<&str> = block.lines().skip(1).collect();
        if first.starts_with("Usage:") || block.lines().all(|l| l.starts_with("  ")) {
            out += &preformatted(block.lines());
        } else if first.ends_with(':')
            && !rest.is_empty()
            && rest.iter().all(|l| l.starts_with("  "))
        {
            out += &format!(".PP\n\\fB{}\\fR\n", escape(first.trim_end_matches(':')));
            out += &terms(&rest);
        } else {
            out += &format!(".PP\n{}\n", escape(&joined(block.lines())));
        }
    }
    out
}

/// Lines kept as written, indented, with real minus signs (they are commands and usage).
fn preformatted<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from(".PP\n.RS 4\n.nf\n");
    for line in lines {
        out += &literal(line);
        out.push('\n');
    }
    out + ".fi\n.RE\n"
}

fn joined<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    lines.map(str::trim).collect::<Vec<_>>().join(" ")
}

/// `  TERM  description` items, each continued on deeper-indented lines, as tagged paragraphs.
fn terms(lines: &[&str]) -> String {
    let mut items: Vec<(String, String)> = Vec::new();
    for line in lines {
        let starts_item = line.len() > 2 && !line[2..].starts_with(' ');
        match items.last_mut() {
            Some((_, description)) if !starts_item => {
                if !description.is_empty() {
                    description.push(' ');
                }
                description.push_str(line.trim());
            }
            _ => {
                let body = line.trim();
                let (term, description) = body.split_once("  ").unwrap_or((body, ""));
                items.push((term.to_string(), description.trim().to_string()));
            }
        }
    }
    let mut out = String::new();
    for (term, description) in items {
        out += &format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            literal(&term),
            escape(&description)
        );
    }
    out
}

/// A Markdown document as the body of a page: `#` (the title) is dropped, `##` becomes a section
/// and `###` a subsection.
pub fn markdown_to_roff(markdown: &str) -> String {
    let mut out = String::new();
    let mut lines = markdown.lines().peekable();
    // Whether the next text line opens a paragraph (after a blank line, a heading or a block).
    let mut fresh = true;
    while let Some(line) = lines.next() {
        if line.starts_with("```") {
            let mut code = Vec::new();
            for code_line in lines.by_ref().take_while(|l| !l.starts_with("```")) {
                code.push(code_line);
            }
            out += &preformatted(code.into_iter());
            fresh = true;
        } else if let Some(title) = line.strip_prefix("## ") {
            out += &format!(".SH \"{}\"\n", escape(&title.to_uppercase()));
            fresh = true;
        } else if let Some(title) = line.strip_prefix("### ") {
            out += &format!(".SS \"{}\"\n", escape(title));
            fresh = true;
        } else if line.starts_with("# ") || line.trim().is_empty() {
            fresh = true;
        } else if line.starts_with('|') {
            let mut rows = vec![line];
            while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
                rows.push(row);
            }
            out += &table(&rows);
            fresh = true;
        } else if let Some(item) = line.strip_prefix("- ") {
            let mut text = item.to_string();
            while let Some(more) = lines.next_if(|l| l.starts_with("  ") && !l.trim().is_empty()) {
                text = format!("{text} {}", more.trim());
            }
            out += &format!(".IP \\(bu 2\n{}\n", inline(&text));
            fresh = false;
        } else {
            if fresh {
                out += ".PP\n";
            }
            out += &inline(line.trim());
            out.push('\n');
            fresh = false;
        }
    }
    out
}

/// A pipe table: each body row becomes a tagged paragraph whose tag is its first cell; the other
/// cells follow as `header: value` (the last one, the widest, as the text itself).
fn table(rows: &[&str]) -> String {
    let cells = |row: &str| -> Vec<String> {
        let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_string()).collect()
    };
    let header = cells(rows[0]);
    let mut out = String::new();
    for row in rows.iter().skip(1).map(|r| cells(r)) {
        if row
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue;
        }
        let mut parts: Vec<String> = Vec::new();
        for (i, cell) in row.iter().enumerate().skip(1) {
            let last = i + 1 == row.len();
            let name = header.get(i).map_or("", String::as_str);
            parts.push(if last || name.is_empty() {
                cell.clone()
            } else {
                format!("{name}: {cell}.")
            });
        }
        let first = row.first().map_or("", String::as_str);
        out += &format!(".TP\n{}\n{}\n", inline(first), inline(&parts.join(" ")));
    }
    out
}

/// Inline Markdown: code in bold with real minus signs, `**bold**`, and links as their text.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('`') {
            let end = after.find('`').unwrap_or(after.len());
            // A long URL may break after `?` and `&` (`\\:` is an invisible break point).
            let code = literal(&after[..end])
                .replace('?', "?\\:")
                .replace('&', "&\\:");
            out += &format!("\\fB{code}\\fR");
            rest = after.get(end + 1..).unwrap_or("");
        } else if let Some(after) = rest.strip_prefix("**") {
            let end = after.find("**").unwrap_or(after.len());
            out += &format!("\\fB{}\\fR", escape(&after[..end]));
            rest = after.get(end + 2..).unwrap_or("");
        } else if let Some((label, after)) = link(rest) {
            out += &inline(label);
            rest = after;
        } else {
            let next = rest[1..]
                .find(['`', '*', '['])
                .map_or(rest.len(), |i| i + 1);
            out += &escape_chars(&rest[..next]);
            rest = &rest[next..];
        }
    }
    guard_line_start(out)
}

/// `[label](target)` at the start of `text`: the label and what follows the link.
fn link(text: &str) -> Option<(&str, &str)> {
    let after = text.strip_prefix('[')?;
    let close = after.find(']')?;
    let target = after[close + 1..].strip_prefix('(')?;
    let end = target.find(')')?;
    Some((&after[..close], &target[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text cannot start a request or an escape: a leading dot is guarded, backslashes and
    /// non-ASCII characters become roff escapes.
    #[test]
    fn escape_guards_requests_and_escapes() {
        assert_eq!(escape(".SH x"), "\\&.SH x");
        assert_eq!(escape("a\\b — c"), "a\\eb \\[u2014] c");
        assert_eq!(literal("--help"), "\\-\\-help");
    }

    /// A help text's option list becomes tagged paragraphs, continuation lines joined to their
    /// item, and the usage block stays as written.
    #[test]
    fn help_options_become_tagged_paragraphs() {
        let help = "Usage: x [--out FILE]\n\nDoes a thing\nwell.\n\nOptions:\n  --out FILE  \
                    Write it\n              there\n  --executor a|b\n              Pick one\n  \
                    -h, --help  Print this help\n";
        let roff = help_to_roff(help);
        assert!(
            roff.contains(".nf\nUsage: x [\\-\\-out FILE]\n.fi"),
            "{roff}"
        );
        assert!(roff.contains(".PP\nDoes a thing well.\n"), "{roff}");
        assert!(
            roff.contains(".TP\n\\fB\\-\\-out FILE\\fR\nWrite it there\n"),
            "{roff}"
        );
        assert!(
            roff.contains(".TP\n\\fB\\-\\-executor a|b\\fR\nPick one\n"),
            "{roff}"
        );
        assert!(
            roff.contains(".TP\n\\fB\\-h, \\-\\-help\\fR\nPrint this help\n"),
            "{roff}"
        );
    }

    /// Headings, code, bullets, tables and inline forms of the docs' Markdown each become
    /// their roff counterpart.
    #[test]
    fn markdown_subset_becomes_roff() {
        let md = "# T\n\n## Fields\n\nSee `a-b` and **this**, [units](units.md).\n\n\
                  ```json\n{\"x\": 1}\n```\n\n- one\n  more\n\n| f | type | meaning |\n\
                  |---|---|---|\n| `name` | string | The name. |\n";
        let roff = markdown_to_roff(md);
        assert!(roff.starts_with(".SH \"FIELDS\"\n.PP\n"), "{roff}");
        assert!(
            roff.contains("See \\fBa\\-b\\fR and \\fBthis\\fR, units.\n"),
            "{roff}"
        );
        assert!(roff.contains(".nf\n{\"x\": 1}\n.fi"), "{roff}");
        assert!(roff.contains(".IP \\(bu 2\none more\n"), "{roff}");
        assert!(
            roff.contains(".TP\n\\fBname\\fR\ntype: string. The name.\n"),
            "{roff}"
        );
    }
}
