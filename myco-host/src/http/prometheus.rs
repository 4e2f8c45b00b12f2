//! A writer for the Prometheus text exposition format (version 0.0.4), the body of `GET /metrics`,
//! over a `Cursor` and without allocating.
//!
//! Each family is a `# HELP` and a `# TYPE` line followed by its samples, which must follow it
//! directly (promtool refuses a family split in two). Metric and label names are the daemon's own
//! constants, so a bad one is a bug and asserts; label values and help text may hold anything (a
//! service's name, a reason) and are escaped as the format requires.

use super::response::{Cursor, Full};
use core::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up; its name ends in `_total`, as Prometheus's conventions (and promtool) ask.
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
            MetricKind::Untyped => "untyped",
        }
    }
}

/// A sample's value: counters and most gauges are integers; latencies and ratios are floats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    U64(u64),
    F64(f64),
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::U64(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::F64(value)
    }
}

pub struct Prometheus<'c, 'b> {
    out: &'c mut Cursor<'b>,
    /// The family whose samples may follow.
    family: Option<&'static str>,
}

impl<'c, 'b> Prometheus<'c, 'b> {
    pub fn new(out: &'c mut Cursor<'b>) -> Self {
        Prometheus { out, family: None }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &'static str, kind: MetricKind, help: &str) -> Result<(), Full> {
        assert!(valid_metric_name(name), "bad metric name {name:?}");
        assert!(kind != MetricKind::Counter || name.ends_with("_total"));
        self.family = Some(name);
        self.out.put(b"# HELP ")?;
        self.out.put(name.as_bytes())?;
        self.out.put(b" ")?;
        put_escaped(self.out, help, false)?;
        self.out.put(b"\n# TYPE ")?;
        self.out.put(name.as_bytes())?;
        self.out.put(b" ")?;
        self.out.put(kind.as_str().as_bytes())?;
        self.out.put(b"\n")
    }

    /// One sample of the current family: `name{label="value",...} value`. A histogram's or a
    /// summary's samples add a suffix (`_bucket`, `_sum`, `_count`) to the family's name.
    pub fn sample(
        &mut self,
        name: &'static str,
        labels: &[(&str, &str)],
        value: impl Into<Value>,
    ) -> Result<(), Full> {
        let family = self
            .family
            .expect("a sample follows its family's HELP and TYPE");
        assert!(
            name.starts_with(family) && valid_metric_name(name),
            "bad sample name {name:?}"
        );
        self.out.put(name.as_bytes())?;
        self.put_labels(labels)?;
        self.out.put(b" ")?;
        self.put_value(value.into())?;
        self.out.put(b"\n")
    }

    fn put_labels(&mut self, labels: &[(&str, &str)]) -> Result<(), Full> {
        if labels.is_empty() {
            return Ok(());
        }
        for (at, (name, value)) in labels.iter().enumerate() {
            assert!(valid_label_name(name), "bad label name {name:?}");
            self.out.put(if at == 0 { b"{" } else { b"," })?;
            self.out.put(name.as_bytes())?;
            self.out.put(b"=\"")?;
            put_escaped(self.out, value, true)?;
            self.out.put(b"\"")?;
        }
        self.out.put(b"}")
    }

    /// Integers in decimal; floats as Rust's shortest round-trip decimal, which Prometheus parses,
    /// with the format's own spelling of the non-finite values.
    fn put_value(&mut self, value: Value) -> Result<(), Full> {
        match value {
            Value::U64(n) => self.out.put_u64(n),
            Value::F64(x) if x.is_nan() => self.out.put(b"NaN"),
            Value::F64(x) if x == f64::INFINITY => self.out.put(b"+Inf"),
            Value::F64(x) if x == f64::NEG_INFINITY => self.out.put(b"-Inf"),
            Value::F64(x) => write!(self.out, "{x}").map_err(|_| Full),
        }
    }
}

/// Escapes `\` and newline (help text), and `"` too in a label value.
fn put_escaped(out: &mut Cursor<'_>, text: &str, quote: bool) -> Result<(), Full> {
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'"' if quote => b"\\\"",
            _ => continue,
        };
        out.put(&bytes[plain_from..at])?;
        out.put(escape)?;
        plain_from = at + 1;
    }
    out.put(&bytes[plain_from..])
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_metric_name(name: &str) -> bool {
    let starts = |b: u8| b.is_ascii_alphabetic() || b == b'_' || b == b':';
    name.bytes().next().is_some_and(starts) && name.bytes().all(|b| starts(b) || b.is_ascii_digit())
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, and not starting with `__`, which Prometheus reserves.
fn valid_label_name(name: &str) -> bool {
    let starts = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    name.bytes().next().is_some_and(starts)
        && name.bytes().all(|b| starts(b) || b.is_ascii_digit())
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins the exact bytes of two families: HELP and TYPE lines, samples with and without
    // labels, label values and help text escaped, integer and float values.
    #[test]
    fn families_are_exact() {
        let mut buf = [0u8; 1024];
        let mut out = Cursor::new(&mut buf);
        let mut metrics = Prometheus::new(&mut out);
        metrics
            .family(
                "myco_frames_refused_total",
                MetricKind::Counter,
                "Frames refused.\nBy reason \\ kind.",
            )
            .unwrap();
        metrics
            .sample("myco_frames_refused_total", &[("reason", "replay")], 3u64)
            .unwrap();
        metrics
            .sample(
                "myco_frames_refused_total",
                &[("reason", "a\"b\\c\nd"), ("peer", "n1")],
                0u64,
            )
            .unwrap();
        metrics
            .family(
                "myco_wal_fsync_seconds",
                MetricKind::Gauge,
                "Last fsync \"latency\".",
            )
            .unwrap();
        metrics
            .sample("myco_wal_fsync_seconds", &[], 0.0025)
            .unwrap();
        assert_eq!(
            core::str::from_utf8(out.written()).unwrap(),
            "# HELP myco_frames_refused_total Frames refused.\\nBy reason \\\\ kind.\n\
             # TYPE myco_frames_refused_total counter\n\
             myco_frames_refused_total{reason=\"replay\"} 3\n\
             myco_frames_refused_total{reason=\"a\\\"b\\\\c\\nd\",peer=\"n1\"} 0\n\
             # HELP myco_wal_fsync_seconds Last fsync \"latency\".\n\
             # TYPE myco_wal_fsync_seconds gauge\n\
             myco_wal_fsync_seconds 0.0025\n"
        );
    }

    // Pins float values: non-finite ones in the format's spelling, large and small ones without
    // an exponent, whole ones without a fraction.
    #[test]
    fn float_values() {
        let cases = [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1.0, "1"),
            (-0.5, "-0.5"),
            (1e-7, "0.0000001"),
            (u64::MAX as f64, "18446744073709552000"),
        ];
        for (value, text) in cases {
            let mut buf = [0u8; 128];
            let mut out = Cursor::new(&mut buf);
            let mut metrics = Prometheus::new(&mut out);
            metrics.family("m", MetricKind::Gauge, "h").unwrap();
            metrics.sample("m", &[], value).unwrap();
            let expected = format!("# HELP m h\n# TYPE m gauge\nm {text}\n");
            assert_eq!(out.written(), expected.as_bytes(), "{value}");
        }
    }

    // Proves a histogram's suffixed samples belong to its family.
    #[test]
    fn histogram_suffixes() {
        let mut buf = [0u8; 256];
        let mut out = Cursor::new(&mut buf);
        let mut metrics = Prometheus::new(&mut out);
        metrics
            .family("lat_seconds", MetricKind::Histogram, "h")
            .unwrap();
        metrics
            .sample("lat_seconds_bucket", &[("le", "+Inf")], 2u64)
            .unwrap();
        metrics.sample("lat_seconds_count", &[], 2u64).unwrap();
        assert!(out
            .written()
            .ends_with(b"lat_seconds_bucket{le=\"+Inf\"} 2\nlat_seconds_count 2\n"));
    }

    // Proves a counter must be named `_total`, as promtool requires.
    #[test]
    #[should_panic]
    fn counter_without_total_asserts() {
        let mut buf = [0u8; 128];
        let mut out = Cursor::new(&mut buf);
        let _ = Prometheus::new(&mut out).family("myco_frames", MetricKind::Counter, "h");
    }

    // Proves a sample outside its family asserts rather than splitting a family.
    #[test]
    #[should_panic(expected = "bad sample name")]
    fn sample_of_another_family_asserts() {
        let mut buf = [0u8; 128];
        let mut out = Cursor::new(&mut buf);
        let mut metrics = Prometheus::new(&mut out);
        metrics.family("a", MetricKind::Gauge, "h").unwrap();
        let _ = metrics.sample("b", &[], 1u64);
    }

    // Pins the name rules: what Prometheus accepts for metric and label names.
    #[test]
    fn name_rules() {
        assert!(valid_metric_name("myco:up_2"));
        assert!(!valid_metric_name("2up") && !valid_metric_name("") && !valid_metric_name("a-b"));
        assert!(valid_label_name("reason") && valid_label_name("_x1"));
        assert!(!valid_label_name("__name__") && !valid_label_name("a:b") && !valid_label_name(""));
    }
}
