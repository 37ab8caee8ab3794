//! The `/metrics` exposition: the registry written out as OpenMetrics text.
//!
//! Must never: change what a scrape reads, which is the registry's own encoding; the admin
//! port serves this string as it is.

use super::Metrics;

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_in_the_exposition() {
        let m = Metrics::default();
        Metrics::count(&m.diagnoses, &[("cause", "sf.refresh.revoked")]);
        Metrics::count(&m.diagnoses, &[("cause", "sf.refresh.revoked")]);
        let text = m.render();
        assert!(
            text.contains("grantdoctor_diagnoses_total{cause=\"sf.refresh.revoked\"} 2"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
