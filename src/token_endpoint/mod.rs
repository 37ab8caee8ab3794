//! The token-endpoint path: the one place where bodies are buffered instead of streamed.
//!
//! Requests to `POST /services/oauth2/token` on intercepted hosts come through here: the
//! request (capped) and the response (capped, decoded for inspection) are read, the exchange
//! is recorded in the ledger, a failure is diagnosed (and, where a JWT bearer key is held,
//! recovered) and the response annotated, and one log line tells what happened. Refreshes
//! first pass the rotated-token guard and are coalesced with identical concurrent ones.
//! Anything over a cap or undecodable is forwarded unchanged, and the log says why it was not
//! inspected. Everything else passes straight to the inner service.
//!
//! Must never: log, count or keep a parameter value other than `grant_type`, the client id,
//! the username and the JWT's claims; secrets appear only as fingerprints. Token responses
//! kept for coalesced or replayed callers live in memory only, for seconds.

mod breaker;
mod confirm;
mod fleet;
mod line;
mod phases;
mod record;
mod rescue;
mod run_to_end;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::annotate::AnnotateMode;
use crate::body::{self, ProxyBody};
use crate::diagnose::Policies;
use crate::finished::Finished;
use crate::ledger::GrantLedger;
use crate::oauth::{self, Fingerprinter, ResponseFacts};
use crate::recover::{CredentialsKey, Flights, Recovery, RotationGuard};
use crate::reply::{self, ErrorKind};
use crate::route::Route;

use line::Line;
use phases::Exchange;
pub use record::RecordExchange;

pub const TOKEN_PATH: &str = "/services/oauth2/token";

/// How long a new refresh token waits for its record to reach the disk before it goes out
/// anyway (a stuck disk must not hold the client's answer; the row stays queued).
const COMMIT_BOUND: Duration = Duration::from_secs(2);

/// A digest of a whole token request (host, body, credentials): identical requests, and only
/// they, share a key.
type ExchangeKey = [u8; 32];

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
    /// `None` when `--rotation-guard off`.
    pub guard: Option<RotationGuard>,
    /// Refreshes in flight, for coalescing; `None` when `--coalesce-refresh off`.
    pub coalescing: Option<Flights<ExchangeKey, Option<Arc<Finished>>>>,
    /// `None` when no JWT bearer key is configured.
    pub recovery: Option<Recovery>,
    /// `--dead-token-breaker`: answer retries of refresh tokens Salesforce declared dead.
    pub dead_token_breaker: bool,
    /// `[[orgs]]`: connections that confirm diagnoses from the org's own records.
    pub orgs: Option<Arc<crate::org::Orgs>>,
    /// `--confirm-timeout`: how long an answer waits for the org's records.
    pub confirm_timeout: Duration,
    /// `--store postgres://…`: leases and sealed replays shared with other replicas.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// The token path's bounds, from `run`'s arguments: their defaults live there alone.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `--max-token-request-bytes`.
    pub max_request_body: usize,
    /// `--max-token-response-bytes`.
    pub max_response_body: usize,
    /// `--replay-window` of the rotated-token guard.
    pub replay_window: Duration,
}

impl Observer {
    pub fn new(fingerprints: Fingerprinter, limits: Limits) -> Self {
        Self {
            metrics: Arc::default(),
            fingerprints,
            ledger: GrantLedger::new(),
            policies: Policies::new(),
            annotate: AnnotateMode::All,
            append_description: false,
            max_request_body: limits.max_request_body,
            max_response_body: limits.max_response_body,
            guard: Some(RotationGuard::new(limits.replay_window)),
            coalescing: Some(Flights::default()),
            recovery: None,
            dead_token_breaker: true,
            orgs: None,
            confirm_timeout: Duration::from_millis(1500),
            fleet: None,
        }
    }
}

impl Observer {
    /// The exchange's counters: outcome, latency, warnings raised.
    fn count_outcome(
        &self,
        facts: &oauth::RequestFacts,
        outcome: &ResponseFacts,
        started: std::time::Instant,
        warnings: &[crate::diagnose::Warning],
    ) {
        let label = if outcome.success.is_some() {
            "success"
        } else {
            "error"
        };
        self.count_exchange(facts.grant, label);
        self.metrics
            .token_exchange_took(facts.grant, label, started.elapsed());
        for warning in warnings {
            crate::metrics::Metrics::count(&self.metrics.warnings, &[("id", warning.id)]);
        }
    }

    fn count_exchange(&self, grant: oauth::GrantType, outcome: &'static str) {
        crate::metrics::Metrics::count(
            &self.metrics.token_exchanges,
            &[("grant_type", grant.label()), ("outcome", outcome)],
        );
    }
}

/// What observing an exchange produced.
enum Observed {
    /// Read, inspected and (maybe) annotated or recovered.
    Inspected(Arc<Finished>),
    /// Not inspectable (over a cap, undecodable, broken off): passed on as it came.
    Passthrough(Response<ProxyBody>),
}

impl Observed {
    fn into_response(self) -> Response<ProxyBody> {
        match self {
            Self::Inspected(finished) => finished.into_response(),
            Self::Passthrough(response) => response,
        }
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

/// What the token path needs of the service it wraps: an upstream that always answers.
pub trait Upstream:
    tower::Service<
        Request<ProxyBody>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Upstream for S where
    S: tower::Service<
            Request<ProxyBody>,
            Response = Response<ProxyBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

impl<S: Upstream> tower::Service<Request<ProxyBody>> for TokenEndpoint<S> {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        if !is_token_exchange(&req) {
            return Box::pin(self.inner.call(req));
        }
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(phases::exchange(inner, self.observer.clone(), req))
    }
}

/// The answer to a token request too large to inspect, in Salesforce's error shape so that
/// clients handle it as any other refusal.
fn oversized_token_request(cap: usize) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": "invalid_request",
        "error_description": format!(
            "grantdoctor: token request body over {cap} bytes, refused unread (token requests are a few hundred bytes)"
        ),
    })
    .to_string();
    let mut response = Response::new(body::full(body));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    headers.insert(
        reply::ERROR_HEADER,
        http::HeaderValue::from_static("token-request-too-large"),
    );
    response
}

/// `ServiceExt::oneshot` for a service that cannot fail.
trait OneshotInfallible: Upstream {
    fn oneshot_infallible(
        self,
        req: Request<ProxyBody>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        let sent = tower::ServiceExt::oneshot(self, req);
        async move {
            match sent.await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    }
}

impl<S: Upstream> OneshotInfallible for S {}

/// How the client authenticated: client id and secret from the query and form, and the
/// `Authorization` header. A replay goes only to the same credentials.
fn credentials_key(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> CredentialsKey {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let params = query
        .map(|q| form_urlencoded::parse(q.as_bytes()))
        .into_iter()
        .flatten()
        .chain(form_urlencoded::parse(body));
    let (mut id, mut secret) = (None, None);
    for (name, value) in params {
        match name.as_ref() {
            "client_id" => id = Some(value),
            "client_secret" => secret = Some(value),
            _ => {}
        }
    }
    for part in [
        id.as_deref().unwrap_or(""),
        secret.as_deref().unwrap_or(""),
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Identical token requests share this: host, query, body and `Authorization`.
fn exchange_key(host: &str, parts: &http::request::Parts, body: &[u8]) -> ExchangeKey {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        host.as_bytes(),
        parts.uri.query().unwrap_or("").as_bytes(),
        parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or(b""),
        body,
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A token response read whole and decoded for inspection.
struct ReadResponse {
    answer: Answer,
    /// Salesforce's time of the response.
    now: i64,
    outcome: ResponseFacts,
}

/// The upstream's answer as read: what is passed on (or annotated), and what was inspected.
struct Answer {
    parts: http::response::Parts,
    /// As upstream sent it.
    raw: Bytes,
    /// Without its Content-Encoding.
    decoded: Vec<u8>,
}

/// Why a token response cannot be inspected; what was read goes back to be passed on.
enum Unreadable {
    /// Over the cap: the bytes read so far followed by the rest.
    TooLarge(http::response::Parts, ProxyBody),
    Undecodable(http::response::Parts, Bytes, &'static str),
    BrokeOff(body::BodyError),
}

impl Unreadable {
    fn reason(&self) -> String {
        match self {
            Self::TooLarge(..) => "the response body is over the cap".into(),
            Self::Undecodable(_, _, reason) => (*reason).into(),
            Self::BrokeOff(e) => format!("the response broke off: {}", reply::root_cause(e)),
        }
    }
}

/// Reads a token response (capped), decodes it and takes its facts.
async fn read_response(
    response: Response<ProxyBody>,
    observer: &Observer,
) -> Result<ReadResponse, Unreadable> {
    let (parts, incoming) = response.into_parts();
    let raw = match buffer_capped(incoming, observer.max_response_body).await {
        Ok(Buffered::Complete(raw)) => raw,
        Ok(Buffered::TooLarge(rest)) => return Err(Unreadable::TooLarge(parts, rest)),
        Err(e) => return Err(Unreadable::BrokeOff(e)),
    };
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let decoded = match oauth::decode_body(encoding, &raw, observer.max_response_body) {
        Ok(decoded) => decoded,
        Err(reason) => return Err(Unreadable::Undecodable(parts, raw, reason)),
    };
    let mut outcome = ResponseFacts::parse(parts.status.as_u16(), &decoded, &observer.fingerprints);
    outcome.proxy_failure =
        parts
            .extensions
            .get::<reply::OwnAnswer>()
            .and_then(|own| match own.kind {
                ErrorKind::UpstreamUnreachable => {
                    Some(oauth::ProxyFailure::Unreachable(own.reason.clone()))
                }
                ErrorKind::UpstreamFailed | ErrorKind::UpstreamTimeout => {
                    Some(oauth::ProxyFailure::Failed(own.reason.clone()))
                }
                _ => None,
            });
    if !outcome.json && oauth::nested_too_deep(&decoded) {
        return Err(Unreadable::Undecodable(
            parts,
            raw,
            "the JSON body is nested deeper than the parser's limit: not a Salesforce token response",
        ));
    }
    Ok(ReadResponse {
        now: upstream_now(&parts.headers),
        answer: Answer {
            parts,
            raw,
            decoded,
        },
        outcome,
    })
}

/// This host's clock in milliseconds, for answers given without asking Salesforce.
fn wall_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
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
    // Unique, not secret: a random per-process prefix and a counter, instead of asking the
    // kernel for randomness on every exchange.
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let prefix = PREFIX.get_or_init(|| {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 4];
        let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
        u32::from_be_bytes(bytes)
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("ev_{prefix:08x}{n:08x}")
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
