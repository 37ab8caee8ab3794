//! The registration of every family, and the order the exposition lists them in.
//!
//! Owns that order: the registry writes families in the order they were registered, and
//! scrapers, dashboards and diffs of `/metrics` have always seen this one. The families
//! themselves are described by their concern's module.
//!
//! Must never: leave a family of [`Metrics`] unregistered (it would be counted and never
//! exported), or register one twice.

use prometheus_client::registry::{Metric, Registry};

use super::{Counters, Metrics, build, outbound, proxy, store, tls, token};

/// One metric as the exposition shows it: its name (before the registry's prefix and the
/// type's suffix), its help text, and where [`Metrics`] keeps it.
pub(super) struct Described<T: 'static> {
    pub name: &'static str,
    pub help: &'static str,
    pub of: fn(&Metrics) -> &T,
}

/// The labelled counter families, first in the exposition, in their historical order:
/// concerns interleave here because the order predates the split by concern.
const COUNTER_FAMILIES: &[&Described<Counters>] = &[
    &proxy::CONNECTIONS,
    &token::EXCHANGES,
    &token::DIAGNOSES,
    &token::WARNINGS,
    &proxy::UPSTREAM_ERRORS,
    &proxy::TUNNEL_BYTES,
    &proxy::LIMITS,
    &proxy::REQUESTS,
    &token::RECOVERIES,
    &token::COALESCED,
    &token::GUARD,
    &proxy::ACCEPT_FAILURES,
    &proxy::CLIENT_ERRORS,
    &outbound::ORG_QUERIES,
    &tls::CLIENT_TLS_FAILURES,
    &outbound::WEBHOOK_DELIVERIES,
    &outbound::WEBHOOK_DROPPED,
    &store::STORE_ERRORS,
];

/// Registers every family of `metrics` in `registry`, in exposition order.
pub(super) fn register(registry: &mut Registry, metrics: &Metrics) {
    for family in COUNTER_FAMILIES {
        add(registry, metrics, family);
    }
    add(registry, metrics, &store::LEDGER_WRITE_ERRORS);
    add(registry, metrics, &store::LEDGER_SIZE);
    add(registry, metrics, &store::UPSTREAM_REQUESTS_SAVED);
    add(registry, metrics, &proxy::ACTIVE_CONNECTIONS);
    add(registry, metrics, &token::EXCHANGE_DURATION);
    add(registry, metrics, &proxy::REQUEST_DURATION);
    add(registry, metrics, &build::BUILD_INFO);
}

/// Families share their series through an `Arc`: the registry's clone is the same metric
/// the proxy counts into.
fn add<T: Metric + Clone>(registry: &mut Registry, metrics: &Metrics, described: &Described<T>) {
    registry.register(
        described.name,
        described.help,
        (described.of)(metrics).clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_once_in_the_historical_order() {
        let m = Metrics::default();
        // The two families with no series known in advance are left out until they have one.
        Metrics::count(&m.org_queries, &[("org", "acme")]);
        m.ledger_size
            .get_or_create(&vec![("kind", "families")])
            .set(0);
        let text = m.render();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP grantdoctor_"))
            .map(|l| l.split_once(' ').map_or(l, |(name, _)| name))
            .collect();
        assert_eq!(
            names,
            [
                "connections",
                "token_exchanges",
                "diagnoses",
                "warnings",
                "upstream_errors",
                "tunnel_bytes",
                "limits",
                "requests",
                "recoveries",
                "coalesced_refreshes",
                "rotation_guard",
                "accept_failures",
                "client_errors",
                "org_queries",
                "client_tls_failures",
                "webhook_deliveries",
                "webhook_dropped",
                "store_errors",
                "ledger_write_errors",
                "ledger_size",
                "upstream_requests_saved",
                "active_connections",
                "token_exchange_duration_seconds",
                "request_duration_seconds",
                "build_info",
            ]
        );
    }
}
