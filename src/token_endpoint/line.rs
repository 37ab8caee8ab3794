//! One log line per token exchange, in the schema the README documents, and the
//! lines of what the exchange led to (a recovery, a coalesced or guarded refresh).
//!
//! Must never: log a parameter value other than `grant_type`, the client id and the user's
//! ids; tokens appear only as fingerprints.

use crate::diagnose::catalogue::id;
use std::time::Instant;

use crate::diagnose::Warning;
use crate::diagnose::{self, Diagnosis};
use crate::ledger::LedgerView;
use crate::oauth::{RequestFacts, ResponseFacts, short_client_id};

/// Whom the exchange was for: from the answer when it says, else from what the ledger knew.
pub(super) struct Ids {
    pub org_id: Option<String>,
    pub user_id: Option<String>,
    pub token_fp: Option<String>,
}

impl Ids {
    pub fn of(facts: &RequestFacts, outcome: &ResponseFacts, view: &LedgerView) -> Self {
        let success = outcome.success.as_ref();
        let known = view.token.as_ref();
        Self {
            org_id: success
                .and_then(|s| s.org_id.clone())
                .or_else(|| known.and_then(|t| t.org_id.clone())),
            user_id: success
                .and_then(|s| s.user_id.clone())
                .or_else(|| known.and_then(|t| t.user_id.clone())),
            token_fp: success
                .and_then(|s| s.refresh_token_fp.clone())
                .or_else(|| facts.refresh_fp().map(str::to_owned)),
        }
    }
}

/// The fields every token-exchange line carries (schema in the README's log section).
pub(super) struct Line<'a> {
    pub event_id: &'a str,
    pub host: &'a str,
    pub facts: &'a RequestFacts,
    pub outcome: &'a ResponseFacts,
    pub org_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub token_fp: Option<&'a str>,
    pub latency_ms: f64,
}

impl Line<'_> {
    pub fn log(&self, diagnosis: Option<&Diagnosis>) {
        let client_id = self
            .facts
            .client_id
            .as_deref()
            .map(short_client_id)
            .unwrap_or_default();
        let grant_type = self.facts.grant_type.as_deref().unwrap_or("");
        let (org_id, user_id, token_fp) = (
            self.org_id.unwrap_or(""),
            self.user_id.unwrap_or(""),
            self.token_fp.unwrap_or(""),
        );
        let status = self.outcome.status;
        match diagnosis {
            Some(diagnosis) => {
                let event = if self.outcome.error_is("invalid_grant") {
                    "invalid_grant"
                } else {
                    "token_error"
                };
                let top = diagnosis.top().map(|c| c.id).unwrap_or(id::UNKNOWN);
                let basis = diagnosis.top().map_or("prior", |c| c.basis.as_str());
                let evidence = diagnosis
                    .top()
                    .map(|c| c.evidence.join("; "))
                    .unwrap_or_default();
                let fix = diagnosis
                    .top()
                    .map(|c| diagnose::info(c.id).fix.join(" "))
                    .unwrap_or_default();
                tracing::warn!(
                    event,
                    event_id = self.event_id,
                    host = self.host,
                    grant_type,
                    client_id,
                    org_id,
                    user_id,
                    token_fp,
                    status,
                    error = self.outcome.error.as_deref().unwrap_or(""),
                    error_description = self.outcome.error_description.as_deref().unwrap_or(""),
                    cause = top,
                    basis,
                    causes = diagnosis.log_value().as_str(),
                    evidence,
                    fix,
                    latency_ms = self.latency_ms,
                );
            }
            None => {
                let event = match (grant_type, self.outcome.success.is_some()) {
                    ("refresh_token", true) => "token_refreshed",
                    (_, true) => "token_issued",
                    _ => "token_exchange",
                };
                tracing::info!(
                    event,
                    event_id = self.event_id,
                    host = self.host,
                    grant_type,
                    client_id,
                    org_id,
                    user_id,
                    token_fp,
                    status,
                    latency_ms = self.latency_ms,
                );
            }
        }
    }

    pub fn warn(&self, warning: &Warning) {
        tracing::warn!(
            event = "warning",
            id = warning.id,
            message = %warning.message,
            event_id = self.event_id,
            host = self.host,
            client_id = self.facts.client_id.as_deref().map(short_client_id).unwrap_or_default(),
            org_id = self.org_id.unwrap_or(""),
            user_id = self.user_id.unwrap_or(""),
        );
    }
}

pub(super) fn not_inspected(host: &str, reason: &str, status: u16, started: Instant) {
    tracing::info!(
        event = "not_inspected",
        host,
        reason,
        status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0
    );
}
