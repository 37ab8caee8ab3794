//! The dead-token breaker (`--dead-token-breaker`): once Salesforce answered E1 for a (host,
//! client id, refresh token) and the diagnosis rests on evidence, retries of that triple are
//! answered here with Salesforce's own status and body, annotated with the first diagnosis,
//! and never forwarded. Each forwarded retry would count against the user's login rate and
//! fill Login History, for an answer known in advance.
//!
//! Must never: forward an absorbed retry, or keep anything of the request but fingerprints.

use crate::diagnose::catalogue::id;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::rescue::{self, Rescued};
use super::{Exchange, Line, Observer, Upstream, event_id};
use crate::annotate;
use crate::body::ProxyBody;
use crate::diagnose::{self, Basis, Diagnosis, Finding};
use crate::ledger::{Absorbed, BODY_KEPT_MAX, DeadToken, KeptCause, fmt_ms};
use crate::metrics::Metrics;
use crate::oauth::{ResponseFacts, short_client_id};

/// The breaker's record of a refresh that just died, when it is one the breaker keeps:
/// Salesforce's E1 on a refresh, diagnosed on evidence (a prior decides nothing).
pub(super) fn dead_token(
    facts: &crate::oauth::RequestFacts,
    outcome: &ResponseFacts,
    parts: &http::response::Parts,
    decoded: &[u8],
    diagnosis: &Diagnosis,
    line: &Line<'_>,
    now: i64,
) -> Option<DeadToken> {
    let dies = facts.grant == crate::oauth::GrantType::RefreshToken
        && facts.refresh_fp().is_some()
        && outcome.error_is("invalid_grant")
        && outcome.description_is("expired access/refresh token")
        && diagnosis.decided()
        && decoded.len() <= BODY_KEPT_MAX;
    if !dies {
        return None;
    }
    let body = std::str::from_utf8(decoded).ok()?.to_owned();
    Some(DeadToken {
        died_at: now,
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        event_id: line.event_id.to_owned(),
        causes: diagnosis
            .causes
            .iter()
            .map(|c| KeptCause {
                id: c.id.to_owned(),
                confidence: c.confidence,
                basis: c.basis.as_str().to_owned(),
                evidence: c.evidence.clone(),
            })
            .collect(),
        org_id: line.org_id.map(str::to_owned),
        user_id: line.user_id.map(str::to_owned),
        absorbed: 0,
        storm_warned_at: None,
        recent: Default::default(),
    })
}

/// Answers a retry of a dead refresh token, if this one is.
pub(super) async fn answer<S: Upstream>(
    inner: S,
    observer: &Arc<Observer>,
    ex: &Exchange,
) -> Option<Response<ProxyBody>> {
    if !observer.dead_token_breaker {
        return None;
    }
    let now = super::wall_now();
    let Absorbed { token, storm } = observer.ledger.absorb_dead(&ex.facts, now)?;
    observer.metrics.upstream_requests_saved.inc();
    let diagnosis = diagnosis_of(&token);
    let outcome = ResponseFacts::parse(token.status, token.body.as_bytes(), &observer.fingerprints);
    let event = event_id();
    let line = Line {
        event_id: &event,
        host: &ex.route.host,
        facts: &ex.facts,
        outcome: &outcome,
        org_id: token.org_id.as_deref(),
        user_id: token.user_id.as_deref(),
        token_fp: ex.facts.refresh_fp(),
        latency_ms: ex.started.elapsed().as_secs_f64() * 1000.0,
    };
    observer.count_exchange(crate::oauth::GrantType::RefreshToken, "blocked");
    Metrics::count(
        &observer.metrics.diagnoses,
        &[("cause", "gd.dead_token_retried")],
    );
    log_absorbed(&line, &token, &diagnosis);
    if let Some(count) = storm {
        warn_storm(observer, &line, &token, count);
    }
    let mut note = None;
    if observer.recovery.is_some() {
        let failed = rescue::Failed {
            facts: &ex.facts,
            outcome: &outcome,
            line: &line,
            diagnosis: &diagnosis,
            // Declared dead only after it was seen failing through grantdoctor.
            known_token: true,
        };
        match Box::pin(rescue::attempt(inner, observer, &ex.route, failed)).await {
            Rescued::Recovered(finished) => return Some(finished.response()),
            Rescued::Not(not) => note = not,
        }
    }
    Some(response(
        observer,
        &token,
        &diagnosis,
        &event,
        note.as_ref(),
    ))
}

/// `gd.dead_token_retried` first, then what Salesforce's answer was diagnosed as.
fn diagnosis_of(token: &DeadToken) -> Diagnosis {
    let first = token.causes.first().map_or(id::UNKNOWN, |c| c.id.as_str());
    let mut causes = vec![Finding {
        id: "gd.dead_token_retried",
        confidence: 0.99,
        basis: Basis::Evidence,
        evidence: vec![
            format!(
                "Salesforce answered {} for this refresh token, client id and host at {} (event {}), diagnosed {first}",
                token.status,
                fmt_ms(token.died_at),
                token.event_id
            ),
            format!(
                "grantdoctor answered this retry itself, without sending it to Salesforce: {} retries absorbed so far",
                token.absorbed
            ),
        ],
    }];
    causes.extend(token.causes.iter().map(|c| Finding {
        id: diagnose::info(&c.id).id,
        confidence: c.confidence,
        basis: match c.basis.as_str() {
            "confirmed" => Basis::Confirmed,
            "prior" => Basis::Prior,
            _ => Basis::Evidence,
        },
        evidence: c.evidence.clone(),
    }));
    Diagnosis {
        causes,
        ..Diagnosis::default()
    }
}

fn response(
    observer: &Observer,
    token: &DeadToken,
    diagnosis: &Diagnosis,
    event: &str,
    note: Option<&annotate::RecoveryNote>,
) -> Response<ProxyBody> {
    let mut headers = HeaderMap::new();
    let content_type = token
        .content_type
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
        .unwrap_or(HeaderValue::from_static("application/json;charset=UTF-8"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache,no-store"),
    );
    headers.insert(
        crate::annotate::headers::BLOCKED,
        HeaderValue::from_static("dead-refresh-token"),
    );
    let raw = Bytes::from(token.body.clone());
    let body = annotate::apply(
        &mut headers,
        raw.clone(),
        &raw,
        &annotate::Annotation {
            event_id: event,
            diagnosis,
            recovery: note,
        },
        observer.annotate,
        observer.append_description,
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let status = StatusCode::from_u16(token.status).unwrap_or(StatusCode::BAD_REQUEST);
    crate::finished::Finished::new(status, headers, body).response()
}

fn log_absorbed(line: &Line<'_>, token: &DeadToken, diagnosis: &Diagnosis) {
    let original = token.causes.first().map_or("", |c| c.id.as_str());
    tracing::info!(
        event = "blocked",
        event_id = line.event_id,
        host = line.host,
        grant_type = "refresh_token",
        client_id = short_client_id(line.facts.client_id.as_deref().unwrap_or("")),
        org_id = line.org_id.unwrap_or(""),
        user_id = line.user_id.unwrap_or(""),
        token_fp = line.token_fp.unwrap_or(""),
        status = token.status,
        error = line.outcome.error.as_deref().unwrap_or(""),
        error_description = line.outcome.error_description.as_deref().unwrap_or(""),
        cause = "gd.dead_token_retried",
        basis = "evidence",
        causes = diagnosis.log_value().as_str(),
        died_as = original,
        died_at = fmt_ms(token.died_at).as_str(),
        first_event = token.event_id.as_str(),
        absorbed = token.absorbed,
        reason = "Salesforce already declared this refresh token dead; the retry was answered without forwarding it",
        latency_ms = line.latency_ms,
    );
}

fn warn_storm(observer: &Observer, line: &Line<'_>, token: &DeadToken, count: usize) {
    let warning = diagnose::warnings::dead_token_storm(
        count,
        &short_client_id(line.facts.client_id.as_deref().unwrap_or("")),
        line.user_id.unwrap_or("(unknown user)"),
        token.absorbed,
        token.died_at,
    );
    Metrics::count(&observer.metrics.warnings, &[("id", warning.id)]);
    line.warn(&warning);
}
