//! The families of the token path: exchanges and their latency, diagnoses and warnings,
//! JWT bearer recoveries, coalesced refreshes and the rotation guard.
//!
//! Must never: label by client id, username or token; a grant type outside [`GRANT_TYPES`]
//! is counted as `other`, and causes and warnings are the catalogue's ids.

use crate::diagnose::catalogue::{id, warn};
use std::time::Duration;

use super::preset::{Known, combinations, touch};
use super::register::Described;
use super::{Counters, Histograms, Metrics};

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

/// Cause and warning ids that `deploy/prometheus/alerts.yml` alerts on, created at zero
/// even where the catalogue does not list them: an alert rule must never wait on a
/// series that has not been born.
pub const ALERTED_CAUSES: &[&str] = &[
    id::REFRESH_APPROVAL_LIMIT_EVICTED,
    "gd.upstream_unreachable",
];
pub const ALERTED_WARNINGS: &[&str] = &[warn::APPROVAL_EVICTED, warn::RETRY_STORM];

pub(super) const EXCHANGES: Described<Counters> = Described {
    name: "token_exchanges",
    help: "Token-endpoint exchanges by grant type and outcome",
    of: |m| &m.token_exchanges,
};

pub(super) const DIAGNOSES: Described<Counters> = Described {
    name: "diagnoses",
    help: "Diagnosed token-endpoint failures by top cause id",
    of: |m| &m.diagnoses,
};

pub(super) const WARNINGS: Described<Counters> = Described {
    name: "warnings",
    help: "Warnings raised, by id",
    of: |m| &m.warnings,
};

pub(super) const RECOVERIES: Described<Counters> = Described {
    name: "recoveries",
    help: "JWT bearer recoveries by outcome and how the caller got it",
    of: |m| &m.recoveries,
};

pub(super) const COALESCED: Described<Counters> = Described {
    name: "coalesced_refreshes",
    help: "Refreshes answered with a concurrent identical refresh's response",
    of: |m| &m.coalesced,
};

pub(super) const GUARD: Described<Counters> = Described {
    name: "rotation_guard",
    help: "Refreshes with a rotated-away token, by decision (replayed, blocked)",
    of: |m| &m.guard,
};

pub(super) const EXCHANGE_DURATION: Described<Histograms> = Described {
    name: "token_exchange_duration_seconds",
    help: "Token exchanges read from upstream, by grant type and outcome: request in to response out",
    of: |m| &m.token_exchange_duration,
};

pub(super) const KNOWN: &[Known] = &[
    (
        &EXCHANGES,
        &[
            ("grant_type", GRANT_TYPES),
            (
                "outcome",
                &["success", "error", "not_inspected", "refused", "blocked"],
            ),
        ],
    ),
    (
        &RECOVERIES,
        &[
            ("outcome", &["recovered", "failed"]),
            ("how", &["exchanged", "shared", "reused", "cooling_down"]),
        ],
    ),
    // A skipped recovery never reached an exchange: its `how` says why, not how.
    (
        &RECOVERIES,
        &[
            ("outcome", &["skipped"]),
            ("how", &["no_subject", "unknown_token"]),
        ],
    ),
    (&GUARD, &[("decision", &["replayed", "blocked"])]),
];

/// The series whose values come from the catalogue, not from a fixed table, and the
/// unlabelled and histogram ones.
pub(super) fn preset(metrics: &Metrics) {
    let causes = crate::diagnose::catalogue::CAUSES.iter().map(|c| c.id);
    for cause in causes.chain(ALERTED_CAUSES.iter().copied()) {
        touch(&metrics.diagnoses, &vec![("cause", cause)]);
    }
    let warnings = crate::diagnose::catalogue::WARNINGS.iter();
    for id in warnings.chain(ALERTED_WARNINGS).copied() {
        touch(&metrics.warnings, &vec![("id", id)]);
    }
    for set in combinations(&[
        ("grant_type", GRANT_TYPES),
        ("outcome", &["success", "error"]),
    ]) {
        touch(&metrics.token_exchange_duration, &set);
    }
    touch(&metrics.coalesced, &Vec::new());
}

impl Metrics {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
