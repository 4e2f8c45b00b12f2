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
