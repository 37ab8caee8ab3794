//! The token-endpoint path: the one place where bodies are buffered instead of streamed.
//!
//! Requests to `POST /services/oauth2/token` on intercepted hosts come through here: the
//! request (capped) and the response (capped, decoded for inspection) are read, the exchange
//! is recorded in the ledger, a failure is diagnosed and the response annotated, and one log
//! line tells what happened. Anything over a cap or undecodable is forwarded unchanged, and
//! the log says why it was not inspected. Everything else passes straight to the inner service.
//!
//! Must never: log, count or keep a parameter value other than `grant_type`, the client id,
//! the username and the JWT's claims; secrets appear only as fingerprints.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, header};
use http_body_util::BodyExt;

use crate::annotate::{self, AnnotateMode};
use crate::body::{self, ProxyBody};
use crate::diagnose::{self, Diagnosis, Policies};
use crate::ledger::{GrantLedger, Warning};
use crate::oauth::{self, Fingerprinter, RequestFacts, ResponseFacts, short_client_id};
use crate::proxy::Route;
use crate::proxy::reply::{self, ErrorKind};

pub const TOKEN_PATH: &str = "/services/oauth2/token";

/// What the token path knows and how it behaves; shared by every connection.
#[derive(Debug)]
pub struct Observer {
    pub metrics: Arc<crate::metrics::Metrics>,
    pub fingerprints: Fingerprinter,
    pub ledger: GrantLedger,
    pub policies: Policies,
    pub annotate: AnnotateMode,
    pub append_description: bool,
    pub max_request_body: usize,
    pub max_response_body: usize,
}

impl Observer {
    pub fn new(fingerprints: Fingerprinter) -> Self {
        Self {
            metrics: Arc::default(),
            fingerprints,
            ledger: GrantLedger::new(),
            policies: Policies::new(),
            annotate: AnnotateMode::All,
            append_description: false,
            max_request_body: 64 * 1024,
            max_response_body: 256 * 1024,
        }
    }
}

impl Observer {
    fn count_exchange(&self, grant_type: &str, outcome: &str) {
        // Grant types are a small known set; anything else is one label value.
        let grant = match grant_type {
            "authorization_code"
            | "refresh_token"
            | "password"
            | "client_credentials"
            | oauth::JWT_BEARER => grant_type,
            "" => "none",
            _ => "other",
        };
        crate::metrics::Metrics::count(
            &self.metrics.token_exchanges,
            &[("grant_type", grant), ("outcome", outcome)],
        );
    }
}

/// Wraps a service with token-endpoint observation.
#[derive(Debug, Clone)]
pub struct TokenEndpointLayer {
    observer: Arc<Observer>,
}

impl TokenEndpointLayer {
    pub fn new(observer: Arc<Observer>) -> Self {
        Self { observer }
    }
}

impl<S> tower::Layer<S> for TokenEndpointLayer {
    type Service = TokenEndpoint<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TokenEndpoint {
            inner,
            observer: self.observer.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenEndpoint<S> {
    inner: S,
    observer: Arc<Observer>,
}

/// Whether a request is a token exchange we observe.
pub fn is_token_exchange<B>(req: &Request<B>) -> bool {
    req.uri().path() == TOKEN_PATH && req.extensions().get::<Route>().is_some_and(|r| r.observed)
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<Request<ProxyBody>> for TokenEndpoint<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        if !is_token_exchange(&req) {
            return Box::pin(self.inner.call(req));
        }
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(exchange(inner, self.observer.clone(), req))
    }
}

async fn exchange<S>(
    mut inner: S,
    observer: Arc<Observer>,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, S::Error>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>>,
{
    let started = Instant::now();
    let host = req
        .extensions()
        .get::<Route>()
        .map(|r| r.host.clone())
        .unwrap_or_default();
    let (parts, incoming) = req.into_parts();
    let bytes = match buffer_capped(incoming, observer.max_request_body).await {
        Ok(Buffered::Complete(bytes)) => bytes,
        Ok(Buffered::TooLarge(rest)) => {
            let response = inner.call(Request::from_parts(parts, rest)).await?;
            observer.count_exchange("", "not_inspected");
            not_inspected(
                &host,
                "request body over the cap",
                response.status().as_u16(),
                started,
            );
            return Ok(response);
        }
        Err(e) => {
            tracing::info!(event = "not_inspected", host, reason = "client request body unreadable", detail = %reply::root_cause(&e));
            return Ok(reply::error(
                ErrorKind::BadRequest,
                "the request body could not be read",
            ));
        }
    };
    let facts = RequestFacts::parse(
        &host,
        parts.method == Method::POST,
        &parts.headers,
        parts.uri.query(),
        &bytes,
        &observer.fingerprints,
    );
    let in_flight = observer.ledger.begin(&facts);
    let response = inner
        .call(Request::from_parts(parts, body::full(bytes)))
        .await?;
    let (mut parts, incoming) = response.into_parts();
    let status = parts.status.as_u16();
    let raw = match buffer_capped(incoming, observer.max_response_body).await {
        Ok(Buffered::Complete(raw)) => raw,
        Ok(Buffered::TooLarge(rest)) => {
            drop(in_flight);
            observer.count_exchange(facts.grant(), "not_inspected");
            not_inspected(&host, "response body over the cap", status, started);
            return Ok(Response::from_parts(parts, rest));
        }
        Err(e) => {
            drop(in_flight);
            tracing::warn!(event = "upstream_error", host, reason = %reply::root_cause(&e), outcome = "response body broke off");
            return Ok(reply::error(
                ErrorKind::UpstreamFailed,
                format_args!("upstream {host} broke off the token response"),
            ));
        }
    };
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let decoded = match oauth::decode_body(encoding.as_deref(), &raw, observer.max_response_body) {
        Ok(decoded) => decoded,
        Err(reason) => {
            drop(in_flight);
            observer.count_exchange(facts.grant(), "not_inspected");
            not_inspected(&host, reason, status, started);
            return Ok(Response::from_parts(parts, body::full(raw)));
        }
    };
    let now = upstream_now(&parts.headers);
    let outcome = ResponseFacts::parse(status, &decoded, &observer.fingerprints);
    let view = observer.ledger.view(&facts, now);
    drop(in_flight);
    let warnings = observer.ledger.record(&facts, &outcome, now);
    let event_id = event_id();
    let mut body = raw;
    let diagnosis = if outcome.success.is_none() && status >= 400 {
        let diagnosis = diagnose::diagnose(&facts, &outcome, &view, &observer.policies, now);
        body = annotate::apply(
            &mut parts.headers,
            body,
            &decoded,
            &event_id,
            &diagnosis,
            observer.annotate,
            observer.append_description,
        );
        Some(diagnosis)
    } else {
        None
    };
    let token_fp = outcome
        .success
        .as_ref()
        .and_then(|s| s.refresh_token_fp.clone())
        .or_else(|| facts.refresh_fp().map(str::to_owned));
    let known = view.token.as_ref();
    let org_id = outcome
        .success
        .as_ref()
        .and_then(|s| s.org_id.clone())
        .or_else(|| known.and_then(|t| t.org_id.clone()));
    let user_id = outcome
        .success
        .as_ref()
        .and_then(|s| s.user_id.clone())
        .or_else(|| known.and_then(|t| t.user_id.clone()));
    let line = Line {
        event_id: &event_id,
        host: &host,
        facts: &facts,
        outcome: &outcome,
        org_id: org_id.as_deref(),
        user_id: user_id.as_deref(),
        token_fp: token_fp.as_deref(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    line.log(diagnosis.as_ref());
    let outcome_label = if outcome.success.is_some() {
        "success"
    } else {
        "error"
    };
    observer.count_exchange(facts.grant(), outcome_label);
    if let Some(top) = diagnosis.as_ref().and_then(|d| d.top()) {
        crate::metrics::Metrics::count(&observer.metrics.diagnoses, &[("cause", top.id)]);
    }
    for warning in &warnings {
        crate::metrics::Metrics::count(&observer.metrics.warnings, &[("id", warning.id)]);
        line.warn(warning);
    }
    Ok(Response::from_parts(parts, body::full(body)))
}

/// The fields every token-exchange line carries (schema in DESIGN.md).
struct Line<'a> {
    event_id: &'a str,
    host: &'a str,
    facts: &'a RequestFacts,
    outcome: &'a ResponseFacts,
    org_id: Option<&'a str>,
    user_id: Option<&'a str>,
    token_fp: Option<&'a str>,
    latency_ms: f64,
}

impl Line<'_> {
    fn log(&self, diagnosis: Option<&Diagnosis>) {
        let client_id = self
            .facts
            .client_id
            .as_deref()
            .map(short_client_id)
            .unwrap_or_default();
        let grant_type = self.facts.grant();
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
                let top = diagnosis.top().map(|c| c.id).unwrap_or("sf.unknown");
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
                    causes = %diagnosis.header_value(),
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

    fn warn(&self, warning: &Warning) {
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

fn not_inspected(host: &str, reason: &str, status: u16, started: Instant) {
    tracing::info!(
        event = "not_inspected",
        host,
        reason,
        status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0
    );
}

/// Salesforce's time from its `Date` header, else ours: ages are measured on its clock.
fn upstream_now(headers: &http::HeaderMap) -> i64 {
    headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or_else(SystemTime::now)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn event_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    format!(
        "ev_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

enum Buffered {
    Complete(Bytes),
    /// Over the cap: the bytes read so far followed by the rest, to forward unchanged.
    TooLarge(ProxyBody),
}

async fn buffer_capped(mut body: ProxyBody, cap: usize) -> Result<Buffered, body::BodyError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > cap {
                return Ok(Buffered::TooLarge(body::prefixed(buf.freeze(), body)));
            }
        }
        // Trailers on a token exchange are meaningless to Salesforce; they are not forwarded.
    }
    Ok(Buffered::Complete(buf.freeze()))
}
