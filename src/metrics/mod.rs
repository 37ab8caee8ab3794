//! Prometheus metrics (text format on the admin port's `/metrics`).
//!
//! Owns the [`Metrics`] struct every part of the proxy counts into, and its construction:
//! each family registered once, in a fixed order, with its known label sets at zero.
//!
//! Must never: carry a secret or an unbounded label. Labels are modes, grant types, outcomes,
//! cause and warning ids, error kinds: small fixed sets.
//!
//! Every label set known in advance is created at zero when the metrics are (see
//! `preset`): an alert on `rate()` or `absent()` then works from the first scrape, not only
//! after the first failure of its kind.
//!
//! The families' names, help texts and known labels live with their concern: `proxy`,
//! `tls`, `token`, `store`, `outbound`, `build`; `register` alone decides the order the
//! exposition lists them in.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod build;
mod count;
mod outbound;
mod preset;
mod proxy;
mod register;
mod render;
mod store;
mod tls;
mod token;

pub use tls::{TLS_FAILURE_REASONS, tls_failure_reason};
pub use token::{ALERTED_CAUSES, ALERTED_WARNINGS};

/// Label values are static strings (modes, grant types, outcomes, ids): counting allocates
/// no strings.
type Labels = Vec<(&'static str, &'static str)>;

/// A labelled counter family, the kind most metrics are.
type Counters = Family<Labels, Counter>;

/// A histogram family whose members share one bucket layout.
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Seconds, from a pooled connection's millisecond answer to the 30 s an upstream may take
/// before the response timeout gives up; dense around the 50–500 ms of a real token exchange.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

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
    /// What the ledger holds, set at each scrape: `kind` = tokens_known, families,
    /// live_approvals, dead_tokens.
    pub ledger_size: Family<Labels, Gauge>,
    /// Token exchanges that reached upstream and were read, by grant type and outcome.
    pub token_exchange_duration: Histograms,
    /// Forwarded (non-token) requests until the response headers, by host class: the body
    /// streams afterwards and is the client's pace, not ours.
    pub request_duration: Histograms,
    pub client_tls_failures: Family<Labels, Counter>,
    pub webhook_deliveries: Family<Labels, Counter>,
    pub webhook_dropped: Family<Labels, Counter>,
    /// Failed operations of the shared store (`--store postgres://…`), by operation.
    pub store_errors: Family<Labels, Counter>,
    build_info: Family<Labels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self::unregistered();
        let mut registry = Registry::with_prefix("grantdoctor");
        register::register(&mut registry, &metrics);
        metrics.registry = registry;
        build::stamp(&metrics);
        metrics.preset();
        metrics
    }
}

impl Metrics {
    /// Every family empty, in a registry that exports nothing: only [`Default`] may hand one
    /// out, after registering them, or a scrape would miss families that are being counted.
    fn unregistered() -> Self {
        Self {
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
            ledger_size: Family::default(),
            token_exchange_duration: Family::new_with_constructor(latency_histogram),
            request_duration: Family::new_with_constructor(latency_histogram),
            client_tls_failures: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_dropped: Family::default(),
            store_errors: Family::default(),
            build_info: Family::default(),
            registry: Registry::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_label_sets_are_exported_at_zero_before_any_traffic() {
        let text = Metrics::default().render();
        for line in [
            "grantdoctor_diagnoses_total{cause=\"sf.refresh.approval_limit_evicted\"} 0",
            "grantdoctor_diagnoses_total{cause=\"gd.upstream_unreachable\"} 0",
            "grantdoctor_warnings_total{id=\"warn.retry_storm\"} 0",
            "grantdoctor_recoveries_total{outcome=\"failed\",how=\"exchanged\"} 0",
            "grantdoctor_client_tls_failures_total{reason=\"unknown_ca\"} 0",
            "grantdoctor_token_exchange_duration_seconds_count{grant_type=\"refresh_token\",outcome=\"error\"} 0",
            "grantdoctor_request_duration_seconds_count{host_class=\"login\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        for cause in crate::diagnose::catalogue::CAUSES {
            assert!(
                text.contains(&format!("cause=\"{}\"", cause.id)),
                "{}",
                cause.id
            );
        }
    }
}
