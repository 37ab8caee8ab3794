//! The families of the grant ledger and the shared store: what they hold, what they failed
//! to write, and the upstream calls the ledger saved.
//!
//! Must never: label by token, family or fingerprint; the ledger's contents are counted by
//! kind only.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::preset::Known;
use super::register::Described;
use super::{Counters, Labels, Metrics};

pub(super) const STORE_ERRORS: Described<Counters> = Described {
    name: "store_errors",
    help: "Failed operations of the shared store, by operation (read, write, lease, seal, sweep, prune); traffic flows on",
    of: |m| &m.store_errors,
};

pub(super) const LEDGER_WRITE_ERRORS: Described<Counter> = Described {
    name: "ledger_write_errors",
    help: "Ledger batches that failed to reach the database (kept and retried)",
    of: |m| &m.ledger_write_errors,
};

pub(super) const LEDGER_SIZE: Described<Family<Labels, Gauge>> = Described {
    name: "ledger_size",
    help: "What the ledger holds, by kind (tokens_known, families, live_approvals, dead_tokens), at the last scrape",
    of: |m| &m.ledger_size,
};

pub(super) const UPSTREAM_REQUESTS_SAVED: Described<Counter> = Described {
    name: "upstream_requests_saved",
    help: "Token requests answered by grantdoctor that Salesforce would have refused (dead-token retries)",
    of: |m| &m.upstream_requests_saved,
};

pub(super) const KNOWN: &[Known] = &[(
    &STORE_ERRORS,
    &[("op", &["read", "write", "lease", "seal", "sweep", "prune"])],
)];

impl Metrics {
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
}
