//! Prometheus metrics (text format on the admin port's `/metrics`).
//!
//! Must never: carry a secret or an unbounded label. Labels are modes, grant types, outcomes,
//! cause and warning ids, error kinds: small fixed sets.
//!
//! Every label set known in advance is created at zero when the metrics are (see
//! [`KNOWN_LABELS`]): an alert on `rate()` or `absent()` then works from the first scrape,
//! not only after the first failure of its kind.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label values are static strings (modes, grant types, outcomes, ids): counting allocates
/// no strings.
type Labels = Vec<(&'static str, &'static str)>;

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
            ledger_size: Family::default(),
            token_exchange_duration: Family::new_with_constructor(latency_histogram),
            request_duration: Family::new_with_constructor(latency_histogram),
            client_tls_failures: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_dropped: Family::default(),
            store_errors: Family::default(),
            build_info: Family::default(),
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
            (
                "client_tls_failures",
                "Intercepted connections whose TLS handshake with the client failed, by reason",
                &metrics.client_tls_failures,
            ),
            (
                "webhook_deliveries",
                "Webhook delivery attempts by outcome (delivered, retried, failed)",
                &metrics.webhook_deliveries,
            ),
            (
                "webhook_dropped",
                "Webhook alerts dropped, by reason (queue_full, gave_up)",
                &metrics.webhook_dropped,
            ),
            (
                "store_errors",
                "Failed operations of the shared store, by operation (read, write, lease, seal, sweep, prune); traffic flows on",
                &metrics.store_errors,
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
            "ledger_size",
            "What the ledger holds, by kind (tokens_known, families, live_approvals, dead_tokens), at the last scrape",
            metrics.ledger_size.clone(),
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
        registry.register(
            "token_exchange_duration_seconds",
            "Token exchanges read from upstream, by grant type and outcome: request in to response out",
            metrics.token_exchange_duration.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Forwarded non-token requests by host class, until the response headers",
            metrics.request_duration.clone(),
        );
        registry.register(
            "build_info",
            "Always 1; the labels say which build is running",
            metrics.build_info.clone(),
        );
        metrics
            .build_info
            .get_or_create(&vec![("version", VERSION), ("commit", COMMIT)])
            .set(1);
        let metrics = Self {
            registry,
            ..metrics
        };
        metrics.preset();
        metrics
    }
}

/// The crate version this binary was built from.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source commit, when the build script could tell it.
const COMMIT: &str = match option_env!("GRANTDOCTOR_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Grant types as the token path labels them: the known ones, `none` and `other`.
const GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "password",
    "client_credentials",
    crate::oauth::JWT_BEARER,
    "none",
    "other",
];

/// Client TLS failure reasons, as [`tls_failure_reason`] names them.
pub const TLS_FAILURE_REASONS: &[&str] = &[
    "no_sni",
    "unknown_ca",
    "bad_certificate",
    "protocol",
    "timeout",
    "eof",
    "other",
];

/// Host classes of forwarded requests.
const HOST_CLASSES: &[&str] = &["login", "my_domain", "site", "salesforce_other", "other"];

/// Cause and warning ids that `deploy/prometheus/alerts.yml` alerts on, created at zero
/// even where the catalogue does not list them: an alert rule must never wait on a
/// series that has not been born.
pub const ALERTED_CAUSES: &[&str] = &[
    "sf.refresh.approval_limit_evicted",
    "gd.upstream_unreachable",
];
pub const ALERTED_WARNINGS: &[&str] = &["warn.approval_evicted", "warn.retry_storm"];

/// A label's name and every value it takes.
type LabelValues = (&'static str, &'static [&'static str]);

/// The label values each counter family is known to take, per label; every combination is
/// created at zero. Families whose values come from the catalogue are added in `preset`.
const KNOWN_LABELS: &[(&str, &[LabelValues])] = &[
    (
        "connections",
        &[("mode", &["tunnel", "intercept", "forward", "gateway"])],
    ),
    (
        "token_exchanges",
        &[
            ("grant_type", GRANT_TYPES),
            (
                "outcome",
                &["success", "error", "not_inspected", "refused", "blocked"],
            ),
        ],
    ),
    ("upstream_errors", &[("kind", &["connect", "request"])]),
    ("tunnel_bytes", &[("direction", &["up", "down"])]),
    (
        "limits",
        &[(
            "limit",
            &[
                "client_cancels",
                "header_timeout",
                "idle_timeout",
                "intercept_idle",
                "max_connections",
                "max_header_bytes",
                "per_origin",
                "response_timeout",
            ],
        )],
    ),
    (
        "requests",
        &[
            ("host_class", HOST_CLASSES),
            ("status", &["1xx", "2xx", "3xx", "4xx", "5xx"]),
        ],
    ),
    (
        "recoveries",
        &[
            ("outcome", &["recovered", "failed"]),
            ("how", &["exchanged", "shared", "reused", "cooling_down"]),
        ],
    ),
    (
        "recoveries",
        &[
            ("outcome", &["skipped"]),
            ("how", &["no_subject", "unknown_token"]),
        ],
    ),
    ("rotation_guard", &[("decision", &["replayed", "blocked"])]),
    (
        "accept_failures",
        &[("reason", &["fd_limit", "memory", "other"])],
    ),
    (
        "client_errors",
        &[("kind", &["request_body", "token_request_too_large"])],
    ),
    ("client_tls_failures", &[("reason", TLS_FAILURE_REASONS)]),
    (
        "webhook_deliveries",
        &[("outcome", &["delivered", "retried", "failed"])],
    ),
    ("webhook_dropped", &[("reason", &["queue_full", "gave_up"])]),
    (
        "store_errors",
        &[("op", &["read", "write", "lease", "seal", "sweep", "prune"])],
    ),
];

/// Creates a series at zero, if it is not there yet.
fn touch<M, C: MetricConstructor<M>>(family: &Family<Labels, M, C>, labels: &Labels) {
    drop(family.get_or_create(labels));
}

/// Every combination of one value per label, in the labels' order.
fn combinations(labels: &[LabelValues]) -> Vec<Labels> {
    labels
        .iter()
        .fold(vec![Vec::new()], |sets, (name, values)| {
            sets.iter()
                .flat_map(|set| {
                    values.iter().map(move |value| {
                        let mut set = set.clone();
                        set.push((*name, *value));
                        set
                    })
                })
                .collect()
        })
}

impl Metrics {
    /// Creates every known label set at zero.
    fn preset(&self) {
        for (name, labels) in KNOWN_LABELS {
            let Some(family) = self.counter_family(name) else {
                continue;
            };
            for set in combinations(labels) {
                touch(family, &set);
            }
        }
        let causes = crate::diagnose::catalogue::CAUSES.iter().map(|c| c.id);
        for cause in causes.chain(ALERTED_CAUSES.iter().copied()) {
            touch(&self.diagnoses, &vec![("cause", cause)]);
        }
        let warnings = crate::diagnose::catalogue::WARNINGS.iter();
        for id in warnings.chain(ALERTED_WARNINGS).copied() {
            touch(&self.warnings, &vec![("id", id)]);
        }
        for set in combinations(&[
            ("grant_type", GRANT_TYPES),
            ("outcome", &["success", "error"]),
        ]) {
            touch(&self.token_exchange_duration, &set);
        }
        touch(&self.coalesced, &Vec::new());
        for class in HOST_CLASSES {
            touch(&self.request_duration, &vec![("host_class", *class)]);
        }
    }

    fn counter_family(&self, name: &str) -> Option<&Family<Labels, Counter>> {
        Some(match name {
            "connections" => &self.connections,
            "token_exchanges" => &self.token_exchanges,
            "upstream_errors" => &self.upstream_errors,
            "tunnel_bytes" => &self.tunnel_bytes,
            "limits" => &self.limits,
            "requests" => &self.requests,
            "recoveries" => &self.recoveries,
            "rotation_guard" => &self.guard,
            "accept_failures" => &self.accept_failures,
            "client_errors" => &self.client_errors,
            "client_tls_failures" => &self.client_tls_failures,
            "webhook_deliveries" => &self.webhook_deliveries,
            "webhook_dropped" => &self.webhook_dropped,
            "store_errors" => &self.store_errors,
            _ => return None,
        })
    }

    /// One token exchange read from upstream, `grant_type` as the request said it.
    pub fn token_exchange_took(
        &self,
        grant: crate::oauth::GrantType,
        outcome: &'static str,
        took: Duration,
    ) {
        self.token_exchange_duration
            .get_or_create(&vec![("grant_type", grant.label()), ("outcome", outcome)])
            .observe(took.as_secs_f64());
    }

    /// The ledger's sizes, read at scrape time.
    pub fn set_ledger_sizes(&self, sizes: crate::ledger::LedgerSizes) {
        for (kind, value) in [
            ("tokens_known", sizes.tokens_known),
            ("families", sizes.families),
            ("live_approvals", sizes.live_approvals),
            ("dead_tokens", sizes.dead_tokens),
        ] {
            self.ledger_size
                .get_or_create(&vec![("kind", kind)])
                .set(value as i64);
        }
    }

    /// One forwarded request's wait for its response headers.
    pub fn request_took(&self, host_class: &'static str, took: Duration) {
        self.request_duration
            .get_or_create(&vec![("host_class", host_class)])
            .observe(took.as_secs_f64());
    }

    /// One client TLS handshake that failed, classified from the acceptor's error.
    pub fn client_tls_failed(&self, error: &std::io::Error) {
        Self::count(
            &self.client_tls_failures,
            &[("reason", tls_failure_reason(error))],
        );
    }

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

/// The grant type label: the known ones by name, anything else one value, so a client
/// cannot grow the label set.
/// Why a client's TLS handshake failed, from the error the acceptor returned. Alerts the
/// client sent name the usual culprit: it does not trust grantdoctor's CA.
pub fn tls_failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, Error as Tls};
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::TimedOut => return "timeout",
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            return "eof";
        }
        _ => {}
    }
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Tls>()) else {
        return "other";
    };
    match tls {
        Tls::AlertReceived(Alert::UnknownCA) => "unknown_ca",
        Tls::AlertReceived(
            Alert::BadCertificate
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            // rustls clients say this when a CA of the same name signed someone else's leaf.
            | Alert::DecryptError,
        ) => "bad_certificate",
        // The certificate resolvers answer nothing only for a hello without a usable name.
        Tls::General(message) if message.contains("no server certificate") => "no_sni",
        Tls::InvalidMessage(_)
        | Tls::InappropriateMessage { .. }
        | Tls::InappropriateHandshakeMessage { .. }
        | Tls::PeerIncompatible(_)
        | Tls::PeerMisbehaved(_)
        | Tls::NoApplicationProtocol
        | Tls::DecryptError => "protocol",
        _ => "other",
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

    #[test]
    fn build_info_names_the_version_and_a_commit() {
        let text = Metrics::default().render();
        let line = text
            .lines()
            .find(|l| l.starts_with("grantdoctor_build_info{"))
            .expect("build_info exported");
        assert!(line.contains(&format!("version=\"{VERSION}\"")), "{line}");
        assert!(line.contains("commit=\""), "{line}");
        assert!(line.ends_with(" 1"), "{line}");
    }

    #[test]
    fn a_token_exchange_lands_in_its_bucket_and_an_odd_grant_type_is_other() {
        let m = Metrics::default();
        m.token_exchange_took(
            crate::oauth::GrantType::RefreshToken,
            "success",
            Duration::from_millis(40),
        );
        m.token_exchange_took(
            crate::oauth::GrantType::parse(Some("urn:made:up")),
            "error",
            Duration::from_millis(3),
        );
        let text = m.render();
        for line in [
            "grantdoctor_token_exchange_duration_seconds_bucket{le=\"0.025\",grant_type=\"refresh_token\",outcome=\"success\"} 0",
            "grantdoctor_token_exchange_duration_seconds_bucket{le=\"0.05\",grant_type=\"refresh_token\",outcome=\"success\"} 1",
            "grantdoctor_token_exchange_duration_seconds_count{grant_type=\"other\",outcome=\"error\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("made:up"));
    }

    #[test]
    fn tls_failures_are_classified_from_the_acceptor_error() {
        use std::io::{Error, ErrorKind};
        let tls = |e: rustls::Error| Error::new(ErrorKind::InvalidData, e);
        let alert = |a| tls(rustls::Error::AlertReceived(a));
        assert_eq!(
            tls_failure_reason(&alert(rustls::AlertDescription::UnknownCA)),
            "unknown_ca"
        );
        assert_eq!(
            tls_failure_reason(&alert(rustls::AlertDescription::BadCertificate)),
            "bad_certificate"
        );
        assert_eq!(
            tls_failure_reason(&alert(rustls::AlertDescription::DecryptError)),
            "bad_certificate"
        );
        assert_eq!(
            tls_failure_reason(&tls(rustls::Error::General(
                "no server certificate chain resolved".into()
            ))),
            "no_sni"
        );
        assert_eq!(
            tls_failure_reason(&tls(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))),
            "protocol"
        );
        assert_eq!(
            tls_failure_reason(&Error::from(ErrorKind::UnexpectedEof)),
            "eof"
        );
        assert_eq!(
            tls_failure_reason(&Error::from(ErrorKind::TimedOut)),
            "timeout"
        );
        assert_eq!(tls_failure_reason(&Error::other("odd")), "other");
        for reason in [
            "unknown_ca",
            "bad_certificate",
            "no_sni",
            "protocol",
            "eof",
            "timeout",
            "other",
        ] {
            assert!(TLS_FAILURE_REASONS.contains(&reason));
        }
    }
}
