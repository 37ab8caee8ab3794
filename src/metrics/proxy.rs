//! The families of the proxy itself: connections, forwarded requests, tunnels, limits and
//! the listener.
//!
//! Must never: label by host name or client address; a host is only ever its class
//! ([`HOST_CLASSES`]), or one client could grow the label set without bound.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use super::preset::{Known, touch};
use super::register::Described;
use super::{Counters, Histograms, Metrics};

/// Host classes of forwarded requests.
pub(super) const HOST_CLASSES: &[&str] =
    &["login", "my_domain", "site", "salesforce_other", "other"];

pub(super) const CONNECTIONS: Described<Counters> = Described {
    name: "connections",
    help: "Client connections by mode (tunnel, intercept, forward)",
    of: |m| &m.connections,
};

pub(super) const UPSTREAM_ERRORS: Described<Counters> = Described {
    name: "upstream_errors",
    help: "Upstream failures by kind",
    of: |m| &m.upstream_errors,
};

pub(super) const TUNNEL_BYTES: Described<Counters> = Described {
    name: "tunnel_bytes",
    help: "Bytes through blind tunnels by direction",
    of: |m| &m.tunnel_bytes,
};

pub(super) const LIMITS: Described<Counters> = Described {
    name: "limits",
    help: "Times a limit refused or cut a client, by limit",
    of: |m| &m.limits,
};

pub(super) const REQUESTS: Described<Counters> = Described {
    name: "requests",
    help: "Forwarded requests by host class and response status class",
    of: |m| &m.requests,
};

pub(super) const ACCEPT_FAILURES: Described<Counters> = Described {
    name: "accept_failures",
    help: "Failed accepts on the proxy listener, by reason (fd_limit, memory, other)",
    of: |m| &m.accept_failures,
};

pub(super) const CLIENT_ERRORS: Described<Counters> = Described {
    name: "client_errors",
    help: "Requests refused as the client's fault, by kind",
    of: |m| &m.client_errors,
};

pub(super) const ACTIVE_CONNECTIONS: Described<Gauge<i64, AtomicI64>> = Described {
    name: "active_connections",
    help: "Client connections open now",
    of: |m| &m.active_connections,
};

pub(super) const REQUEST_DURATION: Described<Histograms> = Described {
    name: "request_duration_seconds",
    help: "Forwarded non-token requests by host class, until the response headers",
    of: |m| &m.request_duration,
};

pub(super) const KNOWN: &[Known] = &[
    (
        &CONNECTIONS,
        &[("mode", &["tunnel", "intercept", "forward", "gateway"])],
    ),
    (&UPSTREAM_ERRORS, &[("kind", &["connect", "request"])]),
    (&TUNNEL_BYTES, &[("direction", &["up", "down"])]),
    (
        &LIMITS,
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
        &REQUESTS,
        &[
            ("host_class", HOST_CLASSES),
            ("status", &["1xx", "2xx", "3xx", "4xx", "5xx"]),
        ],
    ),
    (
        &ACCEPT_FAILURES,
        &[("reason", &["fd_limit", "memory", "other"])],
    ),
    (
        &CLIENT_ERRORS,
        &[("kind", &["request_body", "token_request_too_large"])],
    ),
];

/// The latency series no counter table covers: one per host class.
pub(super) fn preset(metrics: &Metrics) {
    for class in HOST_CLASSES {
        touch(&metrics.request_duration, &vec![("host_class", *class)]);
    }
}

impl Metrics {
    /// One forwarded request's wait for its response headers.
    pub fn request_took(&self, host_class: &'static str, took: Duration) {
        self.request_duration
            .get_or_create(&vec![("host_class", host_class)])
            .observe(took.as_secs_f64());
    }
}
