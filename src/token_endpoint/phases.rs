//! A token exchange, phase by phase, in the order they run. Read this file top to bottom to
//! follow a token request from the client's bytes to the answer it gets:
//!
//! 1. **parse**: read the request body (capped) and take its facts;
//! 2. **sync**: on a shared store, take in what other replicas recorded;
//! 3. **guard**: a refresh of a rotated-away token is replayed or refused, never forwarded;
//! 4. **breaker**: a retry of a token Salesforce declared dead is answered here;
//! 5. **coalesce**: identical concurrent refreshes share one flight (across replicas too);
//! 6. **forward** and **read**: the request goes upstream, the answer is read whole (capped,
//!    decoded), or passed on untouched when it cannot be inspected;
//! 7. **keep the rotation**: a new refresh token's answer is kept for twins before the ledger
//!    says "rotated";
//! 8. **record**: the ledger takes the exchange, the warnings it supports are raised;
//! 9. **judge** (failures): diagnose, confirm with the org, note a dead token;
//! 10. **rescue**: a JWT bearer recovery where a key is held;
//! 11. **annotate** and **log**: the answer carries the diagnosis, one line tells it all.
//!
//! The phases' mechanics live beside this file (`line`, `rescue`, `breaker`, `confirm`,
//! `fleet`); this one only says what runs when.
//!
//! Must never: forward a refresh token the guard has seen rotated away, or let a response it
//! does not annotate differ from what upstream sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response};

use super::line::{Line, not_inspected};
use super::run_to_end::RunToEnd;
use super::{
    Answer, Buffered, COMMIT_BOUND, ExchangeKey, Observed, Observer, OneshotInfallible,
    ReadResponse, RecordExchange, Unreadable, Upstream, breaker, buffer_capped, confirm,
    credentials_key, event_id, exchange_key, fleet, read_response, rescue,
};
use crate::annotate;
use crate::body::{self, ProxyBody};
use crate::diagnose::{self, Diagnosis, Warning};
use crate::finished::Finished;
use crate::ledger::LedgerView;
use crate::oauth::{self, RequestFacts};
use crate::recover::flight::Leader;
use crate::recover::{CredentialsKey, Joined, Verdict};
use crate::reply::{self, ErrorKind};
use crate::route::Route;

/// One token request, from the client's bytes to the response it gets.
pub(super) struct Exchange {
    pub route: Route,
    pub parts: http::request::Parts,
    pub bytes: Bytes,
    pub facts: RequestFacts,
    pub started: Instant,
}

/// The whole exchange: phases 1 to 5 here, the rest in [`observe`].
pub(super) async fn exchange<S: Upstream>(
    inner: S,
    observer: Arc<Observer>,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let ex = match parse(&observer, req).await {
        Ok(ex) => ex,
        Err(refused) => return Ok(refused),
    };
    let presented = (ex.facts.grant == oauth::GrantType::RefreshToken)
        .then(|| ex.facts.refresh_fp().map(crate::ledger::fp_key))
        .flatten();
    if observer.ledger.shared() {
        // What other replicas recorded decides the guard and the diagnosis here too.
        observer.ledger.sync(presented).await;
    }
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
    Ok(coalesce(inner, observer, ex, fp, credentials).await)
}

/// Phase 1: the request body, read whole within the cap, and its facts. A body over the cap
/// or unreadable is answered here.
async fn parse(
    observer: &Observer,
    req: Request<ProxyBody>,
) -> Result<Exchange, Response<ProxyBody>> {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<Route>()
        .cloned()
        .expect("only routed requests are token exchanges");
    let host = route.host.as_str();
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
            return Err(super::oversized_token_request(observer.max_request_body));
        }
        Err(e) => {
            tracing::info!(event = "not_inspected", host, reason = "client request body unreadable", detail = %reply::root_cause(&e));
            return Err(reply::error(
                ErrorKind::BadRequest,
                "the request body could not be read",
            ));
        }
    };
    let facts = RequestFacts::parse(
        host,
        parts.method == Method::POST,
        &parts.headers,
        parts.uri.query(),
        &bytes,
        &observer.fingerprints,
    );
    Ok(Exchange {
        route,
        parts,
        bytes,
        facts,
        started,
    })
}

/// Phase 3: the rotated-token guard's answer, when the presented token was rotated away.
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

/// Phase 5: one flight per identical refresh; its followers get the leader's answer.
async fn coalesce<S: Upstream>(
    inner: S,
    observer: Arc<Observer>,
    ex: Exchange,
    fp: u64,
    credentials: CredentialsKey,
) -> Response<ProxyBody> {
    let Some(flights) = &observer.coalescing else {
        return refresh_detached(inner, observer.clone(), ex, credentials, None, None).await;
    };
    let key = exchange_key(&ex.route.host, &ex.parts, &ex.bytes);
    match flights.join(key).await {
        Joined::Follow(Some(shared)) => {
            coalesced(&observer, &ex, &shared, None);
            shared.response()
        }
        // The leader's response could not be shared (not inspectable), or the guard stopped
        // it: go on our own, past the guard again.
        Joined::Follow(None) => {
            if let Some(response) = guarded(&observer, fp, &credentials, &ex).await {
                return response;
            }
            refresh_detached(inner, observer.clone(), ex, credentials, None, None).await
        }
        Joined::Lead(leader) => {
            // The flight that rotated this token may have landed since the guard looked.
            if let Some(response) = guarded(&observer, fp, &credentials, &ex).await {
                drop(leader);
                return response;
            }
            lead(inner, observer, ex, (key, fp), credentials, leader).await
        }
    }
}

/// This process leads the flight; on a shared store, one replica leads it for all.
async fn lead<S: Upstream>(
    inner: S,
    observer: Arc<Observer>,
    ex: Exchange,
    (key, fp): (ExchangeKey, u64),
    credentials: CredentialsKey,
    leader: Leader<ExchangeKey, Option<Arc<Finished>>>,
) -> Response<ProxyBody> {
    let lease = match &observer.fleet {
        Some(fleet) => match fleet::lead_or_follow(fleet, &key).await {
            fleet::FleetTurn::Answer(shared) => {
                coalesced(&observer, &ex, &shared, Some("replicas"));
                leader.land(Some(shared.clone()));
                return shared.response();
            }
            fleet::FleetTurn::Lead(lease) if lease.took_over() => {
                // Another replica's flight ended without an answer kept for this one: it may
                // have rotated the token meanwhile.
                observer.ledger.sync(Some(fp)).await;
                if let Some(response) = guarded(&observer, fp, &credentials, &ex).await {
                    lease.land(fleet, None).await;
                    drop(leader);
                    return response;
                }
                Some(lease)
            }
            fleet::FleetTurn::Lead(lease) => Some(lease),
            fleet::FleetTurn::Alone => None,
        },
        None => None,
    };
    refresh_detached(
        inner,
        observer.clone(),
        ex,
        credentials,
        Some(leader),
        lease,
    )
    .await
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

/// A refresh runs to its end even if its client goes away: once it is upstream, Salesforce
/// may rotate the token, and only reading the answer lets the ledger and the guard know, and
/// the callers waiting on this flight get it. Cancelling it would leave the next caller to
/// present the old token — and revoke the family.
async fn refresh_detached<S: Upstream>(
    inner: S,
    observer: Arc<Observer>,
    ex: Exchange,
    credentials: CredentialsKey,
    leader: Option<Leader<ExchangeKey, Option<Arc<Finished>>>>,
    lease: Option<fleet::Lease>,
) -> Response<ProxyBody> {
    RunToEnd::new(async move {
        let observed = observe(inner, &observer, ex, Some(credentials)).await;
        let shared = match &observed {
            Observed::Inspected(finished) => Some(finished.clone()),
            Observed::Passthrough(_) => None,
        };
        if let (Some(lease), Some(fleet)) = (lease, observer.fleet.clone()) {
            let shared = shared.clone();
            // Published beside the answer, not before it: the leader's client need not wait
            // for the followers' round trip.
            tokio::spawn(async move { lease.land(&fleet, shared.as_deref()).await });
        }
        if let Some(leader) = leader {
            leader.land(shared);
        }
        observed
    })
    .await
    .into_response()
}

/// Phases 6 to 11: forward, read, keep the rotation, record, and for a failure judge,
/// rescue and annotate; then log.
pub(super) async fn observe<S: Upstream>(
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
    let read = match read_response(response, observer).await {
        Ok(read) => read,
        Err(unreadable) => {
            drop(in_flight);
            return passthrough(observer, host, &facts, started, unreadable);
        }
    };
    let view = observer.ledger.view(&facts, read.now);
    let rotation = keep_rotation(observer, &facts, credentials, presented.as_deref(), &read);
    drop(in_flight);
    let warnings = record(observer, host, &facts, &read).await;
    let ReadResponse {
        answer,
        now,
        outcome,
    } = read;
    let event_id = event_id();
    let ids = super::line::Ids::of(&facts, &outcome, &view);
    let line = Line {
        event_id: &event_id,
        host,
        facts: &facts,
        outcome: &outcome,
        org_id: ids.org_id.as_deref(),
        user_id: ids.user_id.as_deref(),
        token_fp: ids.token_fp.as_deref(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    observer.count_outcome(&facts, &outcome, started, &warnings);
    if outcome.success.is_none() && answer.parts.status.as_u16() >= 400 {
        let diagnosis = judge(observer, &view, &line, &answer, now).await;
        for warning in &warnings {
            line.warn(warning);
        }
        let known_token = view.token.is_some();
        return answer_failure(
            spare,
            observer,
            &route,
            &line,
            &diagnosis,
            known_token,
            answer,
        )
        .await;
    }
    line.log(None);
    for warning in &warnings {
        line.warn(warning);
    }
    let Answer { parts, raw, .. } = answer;
    Observed::Inspected(rotation.unwrap_or_else(|| Arc::new(Finished { parts, body: raw })))
}

/// An answer that cannot be inspected goes on as it came; the log says why.
fn passthrough(
    observer: &Observer,
    host: &str,
    facts: &RequestFacts,
    started: Instant,
    unreadable: Unreadable,
) -> Observed {
    Observed::Passthrough(match unreadable {
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
    })
}

/// Phase 7: a rotation's replay is in place before the ledger says "rotated": a twin that
/// sees the rotation must find the response to replay, or it would be refused. Here the
/// guard holds it at once; the fleet's copy is queued ahead of the rotation's record and
/// commits with it.
fn keep_rotation(
    observer: &Observer,
    facts: &RequestFacts,
    credentials: Option<CredentialsKey>,
    presented: Option<&str>,
    read: &ReadResponse,
) -> Option<Arc<Finished>> {
    let issued = read
        .outcome
        .success
        .as_ref()
        .is_some_and(|s| s.refresh_token_fp.is_some());
    let (Some(guard), Some(credentials), Some(old), true) =
        (&observer.guard, credentials, facts.refresh_fp(), issued)
    else {
        return None;
    };
    let finished = Arc::new(Finished {
        parts: read.answer.parts.clone(),
        body: read.answer.raw.clone(),
    });
    guard.rotated(crate::ledger::fp_key(old), credentials, finished.clone());
    if let (Some(fleet), Some(presented)) = (&observer.fleet, presented) {
        fleet::keep_replay(fleet, presented, &credentials, &finished);
    }
    Some(finished)
}

/// Phase 8: the ledger takes the exchange; a new refresh token's record is durable before
/// the client sees it (bounded: a stuck disk must not hold the answer).
async fn record(
    observer: &Observer,
    host: &str,
    facts: &RequestFacts,
    read: &ReadResponse,
) -> Vec<Warning> {
    let (warnings, commit) = observer.ledger.record(facts, &read.outcome, read.now);
    if let Some(commit) = commit
        && !commit.wait(COMMIT_BOUND).await
    {
        tracing::debug!(
            event = "ledger_commit_late",
            host,
            reason = "the new refresh token goes out before its record is on disk"
        );
    }
    warnings
}

/// Phase 9: why it failed (diagnosed, then confirmed with the org where one is connected),
/// whether the token is now dead, and the line that says so.
async fn judge(
    observer: &Arc<Observer>,
    view: &LedgerView,
    line: &Line<'_>,
    answer: &Answer,
    now: i64,
) -> Diagnosis {
    let (facts, outcome) = (line.facts, line.outcome);
    let diagnosis = diagnose::diagnose(facts, outcome, view, &observer.policies, now);
    let diagnosis = confirm::phase(
        observer,
        facts,
        outcome,
        view,
        diagnosis,
        line.event_id,
        now,
    )
    .await;
    let dead = observer
        .dead_token_breaker
        .then(|| {
            breaker::dead_token(
                facts,
                outcome,
                &answer.parts,
                &answer.decoded,
                &diagnosis,
                line,
                now,
            )
        })
        .flatten();
    observer.ledger.judged(
        facts,
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
    diagnosis
}

/// Phases 10 and 11 of a failure: a recovery where configured, else the failure annotated.
async fn answer_failure<S: Upstream>(
    spare: S,
    observer: &Arc<Observer>,
    route: &Route,
    line: &Line<'_>,
    diagnosis: &Diagnosis,
    known_token: bool,
    answer: Answer,
) -> Observed {
    let failed = rescue::Failed {
        facts: line.facts,
        outcome: line.outcome,
        line,
        diagnosis,
        known_token,
    };
    // Boxed, and only when configured: inline, the recovery's state would make every
    // exchange's future several times larger (and every move of it a bigger copy).
    let rescued = if observer.recovery.is_some() {
        Box::pin(rescue::attempt(spare, observer, route, failed)).await
    } else {
        rescue::Rescued::Not(None)
    };
    let note = match rescued {
        rescue::Rescued::Recovered(response) => return Observed::Inspected(Arc::new(response)),
        rescue::Rescued::Not(note) => note,
    };
    let Answer {
        mut parts,
        raw,
        decoded,
    } = answer;
    let body = annotate::apply(
        &mut parts.headers,
        raw,
        &decoded,
        &annotate::Annotation {
            event_id: line.event_id,
            diagnosis,
            recovery: note.as_ref(),
        },
        observer.annotate,
        observer.append_description,
    );
    Observed::Inspected(Arc::new(Finished { parts, body }))
}
