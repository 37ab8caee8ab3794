//! Creating every label set known in advance at zero, so alerts see a series from the first
//! scrape.
//!
//! Owns the mechanism (every combination of the known values); each concern's module lists
//! its own known labels. Must never: create a series for a value the proxy cannot count, or
//! it would sit at zero forever and hide a renamed label.

use prometheus_client::metrics::family::{Family, MetricConstructor};

use super::register::Described;
use super::{Counters, Labels, Metrics, outbound, proxy, store, tls, token};

/// A label's name and every value it takes.
pub(super) type LabelValues = (&'static str, &'static [&'static str]);

/// A counter family and the values each of its labels is known to take; every combination
/// is created at zero. A family may be listed more than once when some values only go
/// together with others.
pub(super) type Known = (&'static Described<Counters>, &'static [LabelValues]);

impl Metrics {
    /// Creates every known label set at zero.
    pub(super) fn preset(&self) {
        for known in [
            proxy::KNOWN,
            token::KNOWN,
            tls::KNOWN,
            outbound::KNOWN,
            store::KNOWN,
        ] {
            for (described, labels) in known {
                let family = (described.of)(self);
                for set in combinations(labels) {
                    touch(family, &set);
                }
            }
        }
        token::preset(self);
        proxy::preset(self);
    }
}

/// Creates a series at zero, if it is not there yet.
pub(super) fn touch<M, C: MetricConstructor<M>>(family: &Family<Labels, M, C>, labels: &Labels) {
    drop(family.get_or_create(labels));
}

/// Every combination of one value per label, in the labels' order.
pub(super) fn combinations(labels: &[LabelValues]) -> Vec<Labels> {
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
