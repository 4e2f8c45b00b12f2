//! Reading a Prometheus text exposition, as the daemon's `/metrics` writes it.

/// The value of one series: `series` is the name and labels as the daemon writes them, e.g.
/// `myco_crypto_refusals_total{kind="unknown_key"}`, or a bare name for an unlabelled sample.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.rsplit_once(' ')
            .filter(|(s, _)| *s == series)?
            .1
            .parse()
            .ok()
    })
}

/// The sum of every sample of the family `name`, unlabelled or labelled (`name{...} value`);
/// `None` if there is none.
pub fn family_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with(' ') {
            rest.trim()
        } else if rest.starts_with('{') {
            rest.rsplit_once('}')?.1.trim()
        } else {
            continue;
        };
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// `promtool check metrics` on `text`. Without promtool the test fails, unless
/// MYCO_TESTS_ALLOW_MISSING_TOOLS=1 says to skip this check (`make tools` installs it).
pub fn promtool_check(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && allow_missing_tools() => {
            eprintln!("\n!!! myco-tests: promtool is not installed: /metrics NOT checked (MYCO_TESTS_ALLOW_MISSING_TOOLS=1) !!!\n");
            return;
        }
        Err(e) => panic!(
            "cannot run promtool ({e}); install it with 'make tools' (Debian: apt-get install prometheus), or set MYCO_TESTS_ALLOW_MISSING_TOOLS=1 to skip this check"
        ),
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .expect("promtool reads stdin");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- /metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn allow_missing_tools() -> bool {
    std::env::var("MYCO_TESTS_ALLOW_MISSING_TOOLS").is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP myco_members Members by state.\n\
                        myco_members{state=\"alive\"} 4\n\
                        myco_members{state=\"dead\"} 1\n\
                        myco_members_total 9\n\
                        myco_sessions 3\n";

    /// A series is found by its exact name and labels; a family sums its samples, and a longer
    /// name that starts with the family's is not part of it.
    #[test]
    fn series_and_families() {
        assert_eq!(metric(TEXT, "myco_members{state=\"dead\"}"), Some(1.0));
        assert_eq!(metric(TEXT, "myco_sessions"), Some(3.0));
        assert_eq!(metric(TEXT, "myco_members"), None);
        assert_eq!(family_sum(TEXT, "myco_members"), Some(5.0));
        assert_eq!(family_sum(TEXT, "myco_nothing"), None);
    }
}
