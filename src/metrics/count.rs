//! Counting into a labelled counter family, the one call sites across the proxy use.
//!
//! Must never: build a label value from request data; callers pass `'static` strings so the
//! label sets stay the small fixed ones the families were described with.

use super::{Counters, Metrics};

impl Metrics {
    pub fn count(family: &Counters, labels: &[(&'static str, &'static str)]) {
        Self::add(family, labels, 1);
    }

    pub fn add(family: &Counters, labels: &[(&'static str, &'static str)], n: u64) {
        family.get_or_create(&labels.to_vec()).inc_by(n);
    }
}
