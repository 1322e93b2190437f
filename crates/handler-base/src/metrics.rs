//! Prometheus exposition shared by daemons that serve `/metrics`.
//!
//! `prometheus-client` encodes OpenMetrics, where a counter family `x` has samples
//! `x_total` and a final `# EOF`. Scrapers asking for `text/plain; version=0.0.4` (and
//! `promtool check metrics`) expect the family named `x_total` and no `# EOF`; this
//! rewrites the one into the other so both agree.

/// Content type of [`to_text_format`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text (as `prometheus_client::encoding::text::encode` writes it) to the
/// Prometheus text format 0.0.4.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_families_get_their_total_name_and_eof_goes() {
        let om = "# HELP a_events Events.\n# TYPE a_events counter\na_events_total 3\n# HELP b Up.\n# TYPE b gauge\nb 1\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP a_events_total Events.\n# TYPE a_events_total counter\na_events_total 3\n# HELP b Up.\n# TYPE b gauge\nb 1\n"
        );
    }
}
