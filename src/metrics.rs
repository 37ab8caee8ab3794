//! Prometheus metrics (text format on the admin port's `/metrics`).
//!
//! Must never: carry a secret or an unbounded label. Labels are modes, grant types, outcomes,
//! cause and warning ids, error kinds: small fixed sets.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label values are static strings (modes, grant types, outcomes, ids): counting allocates
/// no strings.
type Labels = Vec<(&'static str, &'static str)>;

/// Every metric grantdoctor keeps.
pub struct Metrics {
    registry: Registry,
    pub connections: Family<Labels, Counter>,
    pub active_connections: Gauge<i64, AtomicI64>,
    pub token_exchanges: Family<Labels, Counter>,
    pub diagnoses: Family<Labels, Counter>,
    pub warnings: Family<Labels, Counter>,
    pub upstream_errors: Family<Labels, Counter>,
    pub tunnel_bytes: Family<Labels, Counter>,
    pub limits: Family<Labels, Counter>,
    pub requests: Family<Labels, Counter>,
    pub recoveries: Family<Labels, Counter>,
    pub coalesced: Family<Labels, Counter>,
    pub guard: Family<Labels, Counter>,
    pub accept_failures: Family<Labels, Counter>,
    pub client_errors: Family<Labels, Counter>,
    pub org_queries: Family<Labels, Counter>,
    pub ledger_write_errors: Counter,
    pub upstream_requests_saved: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("grantdoctor");
        let metrics = Self {
            connections: Family::default(),
            active_connections: Gauge::default(),
            token_exchanges: Family::default(),
            diagnoses: Family::default(),
            warnings: Family::default(),
            upstream_errors: Family::default(),
            tunnel_bytes: Family::default(),
            limits: Family::default(),
            requests: Family::default(),
            recoveries: Family::default(),
            coalesced: Family::default(),
            guard: Family::default(),
            accept_failures: Family::default(),
            client_errors: Family::default(),
            org_queries: Family::default(),
            ledger_write_errors: Counter::default(),
            upstream_requests_saved: Counter::default(),
            registry: Registry::default(),
        };
        let families = [
            (
                "connections",
                "Client connections by mode (tunnel, intercept, forward)",
                &metrics.connections,
            ),
            (
                "token_exchanges",
                "Token-endpoint exchanges by grant type and outcome",
                &metrics.token_exchanges,
            ),
            (
                "diagnoses",
                "Diagnosed token-endpoint failures by top cause id",
                &metrics.diagnoses,
            ),
            ("warnings", "Warnings raised, by id", &metrics.warnings),
            (
                "upstream_errors",
                "Upstream failures by kind",
                &metrics.upstream_errors,
            ),
            (
                "tunnel_bytes",
                "Bytes through blind tunnels by direction",
                &metrics.tunnel_bytes,
            ),
            (
                "limits",
                "Times a limit refused or cut a client, by limit",
                &metrics.limits,
            ),
            (
                "requests",
                "Forwarded requests by host class and response status class",
                &metrics.requests,
            ),
            (
                "recoveries",
                "JWT bearer recoveries by outcome and how the caller got it",
                &metrics.recoveries,
            ),
            (
                "coalesced_refreshes",
                "Refreshes answered with a concurrent identical refresh's response",
                &metrics.coalesced,
            ),
            (
                "rotation_guard",
                "Refreshes with a rotated-away token, by decision (replayed, blocked)",
                &metrics.guard,
            ),
            (
                "accept_failures",
                "Failed accepts on the proxy listener, by reason (fd_limit, memory, other)",
                &metrics.accept_failures,
            ),
            (
                "client_errors",
                "Requests refused as the client's fault, by kind",
                &metrics.client_errors,
            ),
            (
                "org_queries",
                "Queries of org connections, by org, object and outcome (Salesforce API limits are per day)",
                &metrics.org_queries,
            ),
        ];
        for (name, help, family) in families {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "ledger_write_errors",
            "Ledger batches that failed to reach the database (kept and retried)",
            metrics.ledger_write_errors.clone(),
        );
        registry.register(
            "upstream_requests_saved",
            "Token requests answered by grantdoctor that Salesforce would have refused (dead-token retries)",
            metrics.upstream_requests_saved.clone(),
        );
        registry.register(
            "active_connections",
            "Client connections open now",
            metrics.active_connections.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn count(family: &Family<Labels, Counter>, labels: &[(&'static str, &'static str)]) {
        Self::add(family, labels, 1);
    }

    pub fn add(family: &Family<Labels, Counter>, labels: &[(&'static str, &'static str)], n: u64) {
        family.get_or_create(&labels.to_vec()).inc_by(n);
    }

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
