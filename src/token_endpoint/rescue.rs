//! What the token path does beyond annotating: a JWT bearer recovery of a failed refresh, and
//! the answer the rotated-token guard gives instead of forwarding.
//!
//! Must never: send the client's refresh token anywhere, or log the assertion.

use crate::diagnose::catalogue::id;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};

use super::{
    Answer, Exchange, Line, Observer, OneshotInfallible, ReadResponse, RecordExchange, TOKEN_PATH,
    Upstream, event_id, read_response,
};
use crate::annotate::{self, RecoveryNote};
use crate::body;
use crate::diagnose::{self, Diagnosis};
use crate::finished::Finished;
use crate::metrics::Metrics;
use crate::oauth::{self, RequestFacts, ResponseFacts, short_client_id};
use crate::recover::{Failure, How, Outcome, Plan};
use crate::route::Route;

/// Salesforce's answer to a rotated-away refresh token (E1).
const EXPIRED_BODY: &str =
    r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#;

pub(super) enum Rescued {
    /// A token for the client instead of the failure.
    Recovered(Finished),
    /// The failure stands; what recovery did, if it applied, goes into the annotation.
    Not(Option<RecoveryNote>),
}

/// The failed exchange a recovery is asked to rescue.
pub(super) struct Failed<'a> {
    pub facts: &'a RequestFacts,
    pub outcome: &'a ResponseFacts,
    pub line: &'a Line<'a>,
    pub diagnosis: &'a Diagnosis,
    /// Whether the ledger saw the presented refresh token issued or used.
    pub known_token: bool,
}

/// Rescues a failed refresh with a JWT bearer exchange when a key for its app is held.
pub(super) async fn attempt<S: Upstream>(
    inner: S,
    observer: &Arc<Observer>,
    route: &Route,
    failed: Failed<'_>,
) -> Rescued {
    let Some(recovery) = &observer.recovery else {
        return Rescued::Not(None);
    };
    let Failed {
        facts,
        outcome,
        line,
        diagnosis,
        known_token,
    } = failed;
    if facts.grant != oauth::GrantType::RefreshToken || !outcome.error_is("invalid_grant") {
        return Rescued::Not(None);
    }
    let started = Instant::now();
    let (key, audience) = match plan(recovery, route, facts, line, known_token) {
        Plan::NotConfigured => return Rescued::Not(None),
        Plan::Skip(reason) => return skipped(observer, route, line, known_token, &reason),
        Plan::Attempt { key, audience } => (key, audience),
    };
    let (result, how) = recovery
        .run(&key, || async {
            // One JWT exchange at a time per (host, app, user) across the fleet too; the
            // recovered token itself stays in this replica's memory.
            let turn = match &observer.fleet {
                Some(fleet) => super::fleet::one_at_a_time(fleet, &key).await,
                None => None,
            };
            let outcome = jwt_exchange(inner, observer, route, &key, &audience).await;
            if let (Some(turn), Some(fleet)) = (turn, &observer.fleet) {
                turn.land(fleet, None).await;
            }
            outcome
        })
        .await;
    let told = Told {
        observer,
        route,
        line,
        how,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    match result {
        Outcome::Recovered(token) => told.recovered(&token, diagnosis),
        Outcome::Failed(failure) => told.failed(&failure),
    }
}

/// Whether to try: a key for the app and user, and a token grantdoctor has seen.
fn plan(
    recovery: &crate::recover::Recovery,
    route: &Route,
    facts: &RequestFacts,
    line: &Line<'_>,
    known_token: bool,
) -> Plan {
    match recovery.plan(&route.host, facts.client_id.as_deref(), line.user_id) {
        // Anyone who can reach the proxy can send a made-up refresh token with a client id
        // (not a secret); only a token grantdoctor saw issued or used earns a rescue.
        Plan::Attempt { .. } if !known_token => Plan::Skip(
            "the failed refresh token was never seen issued or used through grantdoctor; only such tokens are rescued".into(),
        ),
        plan => plan,
    }
}

fn skipped(
    observer: &Observer,
    route: &Route,
    line: &Line<'_>,
    known_token: bool,
    reason: &str,
) -> Rescued {
    let how = if known_token {
        "no_subject"
    } else {
        "unknown_token"
    };
    Metrics::count(
        &observer.metrics.recoveries,
        &[("outcome", "skipped"), ("how", how)],
    );
    tracing::warn!(
        event = "recovery_skipped",
        recovers = line.event_id,
        host = route.host,
        client_id = short_client_id(line.facts.client_id.as_deref().unwrap_or("")),
        user_id = line.user_id.unwrap_or(""),
        reason
    );
    Rescued::Not(Some(RecoveryNote::skipped(reason)))
}

/// What a recovery that ran is told with: its metrics, its line, its answer.
struct Told<'a> {
    observer: &'a Observer,
    route: &'a Route,
    line: &'a Line<'a>,
    how: How,
    latency_ms: f64,
}

impl Told<'_> {
    fn client_id(&self) -> String {
        short_client_id(self.line.facts.client_id.as_deref().unwrap_or(""))
    }

    fn recovered(&self, token: &Finished, diagnosis: &Diagnosis) -> Rescued {
        Metrics::count(
            &self.observer.metrics.recoveries,
            &[("outcome", "recovered"), ("how", self.how.label())],
        );
        let event = event_id();
        tracing::info!(
            event = "recovered",
            event_id = event,
            recovers = self.line.event_id,
            host = self.route.host,
            grant_type = oauth::JWT_BEARER,
            client_id = self.client_id(),
            user_id = self.line.user_id.unwrap_or(""),
            how = self.how.label(),
            cause = diagnosis.top().map(|c| c.id).unwrap_or(""),
            latency_ms = self.latency_ms
        );
        let mut response = token.clone();
        let headers = &mut response.parts.headers;
        headers.insert(
            crate::annotate::headers::RECOVERED,
            HeaderValue::from_static("jwt-bearer"),
        );
        // Annotations follow `--annotate` like every other; the recovery itself is not
        // an annotation and is always said.
        annotate::set_headers(
            headers,
            &annotate::Annotation {
                event_id: self.line.event_id,
                diagnosis,
                recovery: None,
            },
            self.observer.annotate,
        );
        Rescued::Recovered(response)
    }

    fn failed(&self, failure: &Failure) -> Rescued {
        Metrics::count(
            &self.observer.metrics.recoveries,
            &[("outcome", "failed"), ("how", self.how.label())],
        );
        let top = failure.diagnosis.top().map(|c| c.id).unwrap_or("");
        tracing::warn!(event = "recovery_failed", recovers = self.line.event_id, host = self.route.host, grant_type = oauth::JWT_BEARER, client_id = self.client_id(), user_id = self.line.user_id.unwrap_or(""), how = self.how.label(), status = failure.status, error = failure.error.as_deref().unwrap_or(""), error_description = failure.error_description.as_deref().unwrap_or(""), cause = top, causes = %failure.diagnosis.log_value(), reason = failure.reason.as_deref().unwrap_or(""), latency_ms = self.latency_ms);
        Rescued::Not(Some(RecoveryNote::failed(failure, self.how)))
    }
}

/// One JWT bearer exchange at the host the refresh went to, through the same upstream client.
async fn jwt_exchange<S: Upstream>(
    inner: S,
    observer: &Observer,
    route: &Route,
    key: &crate::recover::Key,
    audience: &str,
) -> Outcome {
    let failed = |reason: String| {
        Outcome::Failed(Arc::new(Failure {
            reason: Some(reason),
            ..Failure::default()
        }))
    };
    let recovery = observer
        .recovery
        .as_ref()
        .expect("only called when configured");
    let form = match recovery.form(key, audience) {
        Ok(form) => form,
        Err(reason) => return failed(reason.to_string()),
    };
    let (facts, request) = match jwt_request(observer, route, form) {
        Ok(built) => built,
        Err(reason) => return failed(reason),
    };
    let response = inner.oneshot_infallible(request).await;
    let ReadResponse {
        answer: Answer { parts, raw, .. },
        now,
        outcome,
    } = match read_response(response, observer).await {
        Ok(read) => read,
        Err(unreadable) => {
            return failed(format!("the JWT bearer response: {}", unreadable.reason()));
        }
    };
    let status = parts.status.as_u16();
    let view = observer.ledger.view(&facts, now);
    // A JWT bearer exchange issues no refresh token: nothing to wait for.
    let (warnings, _) = observer.ledger.record(&facts, &outcome, now);
    for warning in &warnings {
        Metrics::count(&observer.metrics.warnings, &[("id", warning.id)]);
        tracing::warn!(event = "warning", id = warning.id, message = %warning.message, host = route.host, grant_type = oauth::JWT_BEARER, client_id = short_client_id(&key.client_id));
    }
    if outcome.success.is_some() {
        observer.count_exchange(oauth::GrantType::JwtBearer, "success");
        return Outcome::Recovered(Arc::new(Finished { parts, body: raw }));
    }
    observer.count_exchange(oauth::GrantType::JwtBearer, "error");
    let diagnosis = diagnose::diagnose(&facts, &outcome, &view, &observer.policies, now);
    let reason = (!outcome.json).then(|| format!("HTTP {status} without a JSON error body"));
    Outcome::Failed(Arc::new(Failure {
        status,
        error: outcome.error,
        error_description: outcome.error_description,
        diagnosis,
        reason,
    }))
}

/// The JWT bearer token request, and its facts as the ledger records them.
fn jwt_request(
    observer: &Observer,
    route: &Route,
    form: String,
) -> Result<(RequestFacts, Request<body::ProxyBody>), String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let facts = RequestFacts::parse(
        &route.host,
        true,
        &headers,
        None,
        form.as_bytes(),
        &observer.fingerprints,
    );
    let mut request = Request::new(body::full(Bytes::from(form)));
    *request.method_mut() = Method::POST;
    *request.headers_mut() = headers;
    *request.uri_mut() = format!("https://{}{TOKEN_PATH}", route.authority)
        .parse()
        .map_err(|e| format!("no token endpoint URI for {}: {e}", route.authority))?;
    request.extensions_mut().insert(route.clone());
    Ok((facts, request))
}

/// The guard's refusal: Salesforce's own error, diagnosed as the reuse it is, never forwarded.
pub(super) fn blocked(
    observer: &Observer,
    ex: &Exchange,
) -> http::Response<crate::body::ProxyBody> {
    let now = super::wall_now();
    let outcome = ResponseFacts::parse(400, EXPIRED_BODY.as_bytes(), &observer.fingerprints);
    let view = observer.ledger.view(&ex.facts, now);
    let mut diagnosis = diagnose::diagnose(&ex.facts, &outcome, &view, &observer.policies, now);
    if let Some(top) = diagnosis
        .causes
        .iter_mut()
        .find(|c| c.id == id::REFRESH_ROTATED_TOKEN_REUSED)
    {
        top.evidence.push("grantdoctor did not forward this refresh: presenting a rotated-away token makes Salesforce revoke the whole token family, the newest token included".into());
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache,no-store"),
    );
    headers.insert(
        crate::annotate::headers::BLOCKED,
        HeaderValue::from_static("rotated-refresh-token"),
    );
    let event = event_id();
    let body = annotate::apply(
        &mut headers,
        Bytes::from_static(EXPIRED_BODY.as_bytes()),
        EXPIRED_BODY.as_bytes(),
        &annotate::Annotation {
            event_id: &event,
            diagnosis: &diagnosis,
            recovery: None,
        },
        observer.annotate,
        observer.append_description,
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Metrics::count(&observer.metrics.guard, &[("decision", "blocked")]);
    if let Some(top) = diagnosis.top() {
        Metrics::count(&observer.metrics.diagnoses, &[("cause", top.id)]);
    }
    tracing::warn!(
        event = "blocked",
        event_id = event,
        host = ex.route.host,
        grant_type = "refresh_token",
        client_id = short_client_id(ex.facts.client_id.as_deref().unwrap_or("")),
        user_id = view.token.as_ref().and_then(|t| t.user_id.as_deref()).unwrap_or(""),
        token_fp = ex.facts.refresh_fp().unwrap_or(""),
        status = 400,
        error = "invalid_grant",
        error_description = "expired access/refresh token",
        cause = diagnosis.top().map(|c| c.id).unwrap_or(""),
        basis = diagnosis.top().map_or("prior", |c| c.basis.as_str()),
        causes = %diagnosis.log_value(),
        reason = "the refresh token was rotated away; forwarding it would revoke the token family",
        latency_ms = ex.started.elapsed().as_secs_f64() * 1000.0,
    );
    Finished::new(StatusCode::BAD_REQUEST, headers, body).response()
}
