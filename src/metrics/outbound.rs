//! The families of traffic grantdoctor starts on its own: webhook alerts and queries of
//! configured org connections.
//!
//! Must never: label by webhook URL or query text; org names come from the configuration,
//! a fixed set.

use super::Counters;
use super::preset::Known;
use super::register::Described;

pub(super) const ORG_QUERIES: Described<Counters> = Described {
    name: "org_queries",
    help: "Queries of org connections, by org, object and outcome (Salesforce API limits are per day)",
    of: |m| &m.org_queries,
};

pub(super) const WEBHOOK_DELIVERIES: Described<Counters> = Described {
    name: "webhook_deliveries",
    help: "Webhook delivery attempts by outcome (delivered, retried, failed)",
    of: |m| &m.webhook_deliveries,
};

pub(super) const WEBHOOK_DROPPED: Described<Counters> = Described {
    name: "webhook_dropped",
    help: "Webhook alerts dropped, by reason (queue_full, gave_up)",
    of: |m| &m.webhook_dropped,
};

pub(super) const KNOWN: &[Known] = &[
    (
        &WEBHOOK_DELIVERIES,
        &[("outcome", &["delivered", "retried", "failed"])],
    ),
    (&WEBHOOK_DROPPED, &[("reason", &["queue_full", "gave_up"])]),
];
