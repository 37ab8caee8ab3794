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
mod record;
mod rescue;
mod run_to_end;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::annotate::{self, AnnotateMode};
use crate::body::{self, ProxyBody};
use crate::diagnose::{self, Policies};
use crate::finished::Finished;
use crate::ledger::GrantLedger;
use crate::oauth::{self, Fingerprinter, RequestFacts, ResponseFacts};
use crate::recover::{CredentialsKey, Flights, Joined, Recovery, RotationGuard, Verdict};
use crate::reply::{self, ErrorKind};
use crate::route::Route;

use line::{Line, not_inspected};
pub use record::RecordExchange;
use run_to_end::RunToEnd;

pub const TOKEN_PATH: &str = "/services/oauth2/token";

/// Default replay window of the rotated-token guard.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(5);

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
            guard: Some(RotationGuard::new(REPLAY_WINDOW)),
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
        Box::pin(exchange(inner, self.observer.clone(), req))
    }
}

/// One token request, from the client's bytes to the response it gets.
struct Exchange {
    route: Route,
    parts: http::request::Parts,
    bytes: Bytes,
    facts: RequestFacts,
    started: Instant,
}

async fn exchange<S: Upstream>(
    inner: S,
    observer: Arc<Observer>,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<Route>()
        .cloned()
        .expect("only routed requests are token exchanges");
    let host = route.host.clone();
    let (parts, incoming) = req.into_parts();
    let bytes = match buffer_capped(incoming, observer.max_request_body).await {
        Ok(Buffered::Complete(bytes)) => bytes,
        Ok(Buffered::TooLarge(_)) => {
            // Forwarded unread, a padded refresh of a rotated token would pass the guard and
            // revoke its family. Salesforce's own token requests are a few hundred bytes.
            observer.count_exchange(oauth::GrantType::Missing, "refused");
            crate::metrics::Metrics::count(
                &observer.metrics.client_errors,
                &[("kind", "token_request_too_large")],
            );
            tracing::warn!(
                event = "token_request_refused",
                host,
                reason = "token request body over the cap: not forwarded, since the refresh token in it could not be checked",
                cap_bytes = observer.max_request_body,
            );
            return Ok(oversized_token_request(observer.max_request_body));
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
    if observer.ledger.shared() {
        // What other replicas recorded decides the guard and the diagnosis here too.
        observer.ledger.sync().await;
    }
    let presented = (facts.grant == oauth::GrantType::RefreshToken)
        .then(|| facts.refresh_fp().map(crate::ledger::fp_key))
        .flatten();
    let ex = Exchange {
        route,
        parts,
        bytes,
        facts,
        started,
    };
    let Some(fp) = presented else {
        return Ok(observe(inner, &observer, ex, None).await.into_response());
    };
    let credentials = credentials_key(&ex.parts.headers, ex.parts.uri.query(), &ex.bytes);
    if let Some(response) = guarded(&observer, fp, &credentials, &ex).await {
        return Ok(response);
    }
    if let Some(response) = breaker::answer(inner.clone(), &observer, &ex).await {
        return Ok(response);
    }
    let Some(flights) = &observer.coalescing else {
        return Ok(refresh_detached(inner, observer.clone(), ex, credentials, None, None).await);
    };
    match flights
        .join(exchange_key(&host, &ex.parts, &ex.bytes))
        .await
    {
        Joined::Follow(Some(shared)) => {
            coalesced(&observer, &ex, &shared, None);
            Ok(shared.response())
        }
        // The leader's response could not be shared (not inspectable): go on our own.
        Joined::Follow(None) => {
            Ok(refresh_detached(inner, observer.clone(), ex, credentials, None, None).await)
        }
        Joined::Lead(leader) => {
            // The flight that rotated this token may have landed since the guard looked.
            if let Some(response) = guarded(&observer, fp, &credentials, &ex).await {
                drop(leader);
                return Ok(response);
            }
            let lease = match &observer.fleet {
                Some(fleet) => {
                    let key = exchange_key(&host, &ex.parts, &ex.bytes);
                    match fleet::lead_or_follow(fleet, &key).await {
                        fleet::FleetTurn::Answer(shared) => {
                            coalesced(&observer, &ex, &shared, Some("replicas"));
                            leader.land(Some(shared.clone()));
                            return Ok(shared.response());
                        }
                        fleet::FleetTurn::Lead(lease) => Some(lease),
                        fleet::FleetTurn::Alone => None,
                    }
                }
                None => None,
            };
            Ok(refresh_detached(
                inner,
                observer.clone(),
                ex,
                credentials,
                Some(leader),
                lease,
            )
            .await)
        }
    }
}

/// Counts and logs a refresh answered with an identical concurrent refresh's response
/// (`across`: `replicas` when another replica led it).
fn coalesced(observer: &Observer, ex: &Exchange, shared: &Finished, across: Option<&str>) {
    crate::metrics::Metrics::count(&observer.metrics.coalesced, &[]);
    tracing::info!(
        event = "coalesced",
        host = ex.route.host,
        client_id = oauth::short_client_id(ex.facts.client_id.as_deref().unwrap_or("")),
        token_fp = ex.facts.refresh_fp().unwrap_or(""),
        status = shared.parts.status.as_u16(),
        across,
        latency_ms = ex.started.elapsed().as_secs_f64() * 1000.0,
    );
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

/// A refresh runs to its end even if its client goes away: once it is upstream, Salesforce
/// may rotate the token, and only reading the answer lets the ledger and the guard know, and
/// the callers waiting on this flight get it. Cancelling it would leave the next caller to
/// present the old token — and revoke the family.
async fn refresh_detached<S: Upstream>(
    inner: S,
    observer: Arc<Observer>,
    ex: Exchange,
    credentials: CredentialsKey,
    leader: Option<crate::recover::flight::Leader<ExchangeKey, Option<Arc<Finished>>>>,
    lease: Option<fleet::Lease>,
) -> Response<ProxyBody> {
    RunToEnd::new(async move {
        let observed = observe(inner, &observer, ex, Some(credentials)).await;
        if let (Some(lease), Some(fleet)) = (lease, observer.fleet.clone()) {
            let shared = match &observed {
                Observed::Inspected(finished) => Some(finished.clone()),
                Observed::Passthrough(_) => None,
            };
            // Published beside the answer, not before it: the leader's client need not wait
            // for the followers' round trip.
            tokio::spawn(async move { lease.land(&fleet, shared.as_deref()).await });
        }
        if let Some(leader) = leader {
            leader.land(match &observed {
                Observed::Inspected(finished) => Some(finished.clone()),
                Observed::Passthrough(_) => None,
            });
        }
        observed
    })
    .await
    .into_response()
}

/// The rotated-token guard's answer, when the presented token was rotated away.
async fn guarded(
    observer: &Observer,
    fp: u64,
    credentials: &CredentialsKey,
    ex: &Exchange,
) -> Option<Response<ProxyBody>> {
    let guard = observer.guard.as_ref()?;
    if !observer.ledger.rotated(fp) {
        return None;
    }
    let mut verdict = guard.verdict(fp, credentials);
    if let (Verdict::Block, Some(fleet)) = (&verdict, &observer.fleet)
        && let Some(old) = fleet::presented_refresh_token(&ex.bytes)
        && let Some(kept) = fleet::replay(fleet, &old, credentials).await
    {
        // The rotation went through another replica, which kept its answer for twins.
        verdict = Verdict::Replay(kept);
    }
    Some(match verdict {
        Verdict::Replay(finished) => {
            crate::metrics::Metrics::count(&observer.metrics.guard, &[("decision", "replayed")]);
            tracing::info!(
                event = "replayed",
                host = ex.route.host,
                client_id = oauth::short_client_id(ex.facts.client_id.as_deref().unwrap_or("")),
                token_fp = ex.facts.refresh_fp().unwrap_or(""),
                reason = "a twin of the refresh that rotated this token, within the replay window",
            );
            finished.response()
        }
        Verdict::Block => rescue::blocked(observer, ex),
    })
}

/// Forwards the exchange, reads and records what came back, diagnoses a failure, tries a
/// recovery where configured, and annotates.
async fn observe<S: Upstream>(
    inner: S,
    observer: &Arc<Observer>,
    ex: Exchange,
    credentials: Option<CredentialsKey>,
) -> Observed {
    let Exchange {
        route,
        parts,
        bytes,
        facts,
        started,
    } = ex;
    let host = route.host.as_str();
    let spare = inner.clone();
    // Read before the body goes upstream: a rotation's answer is sealed under it for twins
    // on other replicas.
    let presented = observer
        .fleet
        .as_ref()
        .and(credentials)
        .and_then(|_| fleet::presented_refresh_token(&bytes));
    let in_flight = observer.ledger.begin(&facts);
    let response = inner
        .oneshot_infallible(Request::from_parts(parts, body::full(bytes)))
        .await;
    let ReadResponse {
        mut parts,
        raw,
        decoded,
        now,
        outcome,
    } = match read_response(response, observer).await {
        Ok(read) => read,
        Err(unreadable) => {
            drop(in_flight);
            return Observed::Passthrough(match unreadable {
                Unreadable::TooLarge(parts, rest) => {
                    observer.count_exchange(facts.grant, "not_inspected");
                    not_inspected(
                        host,
                        "response body over the cap",
                        parts.status.as_u16(),
                        started,
                    );
                    Response::from_parts(parts, rest)
                }
                Unreadable::Undecodable(parts, raw, reason) => {
                    observer.count_exchange(facts.grant, "not_inspected");
                    not_inspected(host, reason, parts.status.as_u16(), started);
                    Response::from_parts(parts, body::full(raw))
                }
                Unreadable::BrokeOff(e) => {
                    tracing::warn!(event = "upstream_error", host, reason = %reply::root_cause(&e), outcome = "response body broke off");
                    reply::error(
                        ErrorKind::UpstreamFailed,
                        format_args!("upstream {host} broke off the token response"),
                    )
                }
            });
        }
    };
    let status = parts.status.as_u16();
    let view = observer.ledger.view(&facts, now);
    // A rotation's replay is in place before the ledger says "rotated": a twin that sees the
    // rotation must find the response to replay, or it would be refused.
    let rotation = match (&observer.guard, credentials, facts.refresh_fp()) {
        (Some(guard), Some(credentials), Some(old))
            if outcome
                .success
                .as_ref()
                .is_some_and(|s| s.refresh_token_fp.is_some()) =>
        {
            let finished = Arc::new(Finished {
                parts: parts.clone(),
                body: raw.clone(),
            });
            guard.rotated(crate::ledger::fp_key(old), credentials, finished.clone());
            if let (Some(fleet), Some(presented)) = (&observer.fleet, &presented) {
                fleet::keep_replay(fleet, presented, &credentials, &finished).await;
            }
            Some(finished)
        }
        _ => None,
    };
    drop(in_flight);
    let (warnings, commit) = observer.ledger.record(&facts, &outcome, now);
    if let Some(commit) = commit
        && !commit.wait(COMMIT_BOUND).await
    {
        tracing::debug!(
            event = "ledger_commit_late",
            host,
            reason = "the new refresh token goes out before its record is on disk"
        );
    }
    let event_id = event_id();
    let mut body = raw;
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
    let token_fp = outcome
        .success
        .as_ref()
        .and_then(|s| s.refresh_token_fp.clone())
        .or_else(|| facts.refresh_fp().map(str::to_owned));
    let line = Line {
        event_id: &event_id,
        host,
        facts: &facts,
        outcome: &outcome,
        org_id: org_id.as_deref(),
        user_id: user_id.as_deref(),
        token_fp: token_fp.as_deref(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    let outcome_label = if outcome.success.is_some() {
        "success"
    } else {
        "error"
    };
    observer.count_exchange(facts.grant, outcome_label);
    observer
        .metrics
        .token_exchange_took(facts.grant, outcome_label, started.elapsed());
    for warning in &warnings {
        crate::metrics::Metrics::count(&observer.metrics.warnings, &[("id", warning.id)]);
    }
    if outcome.success.is_none() && status >= 400 {
        let diagnosis = diagnose::diagnose(&facts, &outcome, &view, &observer.policies, now);
        let diagnosis =
            confirm::phase(observer, &facts, &outcome, &view, diagnosis, &event_id, now).await;
        let dead = observer
            .dead_token_breaker
            .then(|| {
                breaker::dead_token(&facts, &outcome, &parts, &decoded, &diagnosis, &line, now)
            })
            .flatten();
        observer.ledger.judged(
            &facts,
            crate::ledger::Judgement {
                first_use_unexplained: diagnosis.unexplained_first_use,
                dead,
            },
            now,
        );
        line.log(Some(&diagnosis));
        if let Some(top) = diagnosis.top() {
            crate::metrics::Metrics::count(&observer.metrics.diagnoses, &[("cause", top.id)]);
        }
        for warning in &warnings {
            line.warn(warning);
        }
        let failed = rescue::Failed {
            facts: &facts,
            outcome: &outcome,
            line: &line,
            diagnosis: &diagnosis,
            known_token: view.token.is_some(),
        };
        // Boxed, and only when configured: inline, the recovery's state would make every
        // exchange's future several times larger (and every move of it a bigger copy).
        let rescued = if observer.recovery.is_some() {
            Box::pin(rescue::attempt(spare, observer, &route, failed)).await
        } else {
            rescue::Rescued::Not(None)
        };
        let note = match rescued {
            rescue::Rescued::Recovered(response) => return Observed::Inspected(Arc::new(response)),
            rescue::Rescued::Not(note) => note,
        };
        body = annotate::apply(
            &mut parts.headers,
            body,
            &decoded,
            &annotate::Annotation {
                event_id: &event_id,
                diagnosis: &diagnosis,
                recovery: note.as_ref(),
            },
            observer.annotate,
            observer.append_description,
        );
        return Observed::Inspected(Arc::new(Finished { parts, body }));
    }
    line.log(None);
    for warning in &warnings {
        line.warn(warning);
    }
    Observed::Inspected(rotation.unwrap_or_else(|| Arc::new(Finished { parts, body })))
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
    parts: http::response::Parts,
    /// As upstream sent it.
    raw: Bytes,
    /// Without its Content-Encoding.
    decoded: Vec<u8>,
    /// Salesforce's time of the response.
    now: i64,
    outcome: ResponseFacts,
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
        parts,
        raw,
        decoded,
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
