//! The token path across replicas (`--store postgres://…`): identical refreshes anywhere in
//! the fleet share one upstream request, and a twin of a rotating refresh gets its answer on
//! whichever replica it lands. Both go through sealed answers ([`crate::fleet::seal`]):
//! the database never holds a usable token.
//!
//! Whenever the store fails, each function says so by returning "alone" or nothing, and the
//! caller goes on as a single process would.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{ExchangeKey, Finished};
use crate::fleet::Fleet;
use crate::fleet::batch::Failed;
use crate::fleet::lease::{End, Landed, Turn};
use crate::fleet::seal::{Sealer, StoredAnswer};
use crate::recover::CredentialsKey;

/// How long a leader's answer stays for followers still polling.
const FLIGHT_KEEP_MS: i64 = 2_000;
/// How often a follower looks for the leader's answer.
const POLL: Duration = Duration::from_millis(20);

/// What this replica does with a refresh after the fleet was asked.
pub(super) enum FleetTurn {
    /// Another replica led it: its answer.
    Answer(Arc<Finished>),
    /// This replica leads: publish the answer through the lease when it is in.
    Lead(Lease),
    /// The store could not be asked: go on as a single process.
    Alone,
}

/// The lease of a refresh this replica leads.
pub(super) struct Lease {
    /// Boxed: its key schedule is large, and a lease lives across the leader's awaits.
    sealer: Box<Sealer>,
    generation: i64,
    /// The name it was taken under.
    holder: String,
    /// Taken after waiting on another replica's lease.
    took_over: bool,
}

/// Leads the refresh, or follows the replica that does until its answer lands (or its
/// lease expires, when this replica tries to take over).
pub(super) async fn lead_or_follow(fleet: &Fleet, key: &ExchangeKey) -> FleetTurn {
    let sealer = Box::new(Sealer::derive("flight", &[key]));
    let mut took_over = false;
    loop {
        let left = match fleet.take(sealer.id()).await {
            None => return FleetTurn::Alone,
            Some((Turn::Lead(generation), holder)) => {
                return FleetTurn::Lead(Lease {
                    sealer,
                    generation,
                    holder,
                    took_over,
                });
            }
            Some((Turn::Landed(sealed), _)) => return answer(&sealer, &sealed),
            Some((Turn::Wait(left), _)) => left,
        };
        took_over = true;
        let until = tokio::time::Instant::now() + Duration::from_millis(left as u64);
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(POLL).await;
            match fleet.look(sealer.id()).await {
                // No connection up: the store is down, and waiting on it cannot help.
                Err(Failed::Unsent) => return FleetTurn::Alone,
                // That connection did not answer and is being replaced; while the lease
                // lives, the token is the leader's to send, so ask again.
                Err(Failed::Lost) => {}
                Ok(Turn::Landed(sealed)) => return answer(&sealer, &sealed),
                // Freed without an answer (the leader's could not be shared): take it now.
                Ok(Turn::Wait(0)) => break,
                Ok(Turn::Wait(_) | Turn::Lead(_)) => {}
            }
        }
    }
}

/// Waits until this replica holds the fleet's lease for a JWT bearer exchange of `key`
/// (host, app, user); `None` when the store cannot be asked. The lease is freed with
/// [`Lease::land`] and no answer: the next replica then runs its own exchange.
pub(super) async fn one_at_a_time(fleet: &Fleet, key: &crate::recover::Key) -> Option<Lease> {
    let sealer = Box::new(Sealer::derive(
        "jwt",
        &[
            key.host.as_bytes(),
            key.client_id.as_bytes(),
            key.subject.as_bytes(),
        ],
    ));
    loop {
        match fleet.take(sealer.id()).await? {
            (Turn::Lead(generation), holder) => {
                return Some(Lease {
                    sealer,
                    generation,
                    holder,
                    took_over: false,
                });
            }
            (Turn::Wait(_) | Turn::Landed(_), _) => tokio::time::sleep(POLL).await,
        }
    }
}

fn answer(sealer: &Sealer, sealed: &[u8]) -> FleetTurn {
    match sealer.open(sealed).as_deref().and_then(finished_from) {
        Some(finished) => FleetTurn::Answer(Arc::new(finished)),
        None => FleetTurn::Alone,
    }
}

impl Lease {
    /// Whether this replica waited on another's lease before it took this one.
    pub(super) fn took_over(&self) -> bool {
        self.took_over
    }

    /// Publishes the leader's answer to the fleet's followers, or frees the lease when it
    /// cannot be shared (followers then go upstream themselves, one at a time). A success is
    /// published whether or not a follower waited: it may carry a rotated token, which a
    /// twin arriving after it landed must get rather than send again. A failure is sealed
    /// and published only when a follower waited on it; otherwise the lease is just freed (a
    /// later twin asking Salesforce again finds the token as dead).
    pub(super) async fn land(self, fleet: &Fleet, answer: Option<&Finished>) {
        let publish = |f: &Finished| End::Publish(self.sealer.seal(&stored(f).to_bytes()));
        let (id, held) = (self.sealer.id(), (self.generation, self.holder.as_str()));
        let mut landed = match answer {
            Some(f) if f.parts.status.is_success() => {
                fleet.land(id, held, publish(f), FLIGHT_KEEP_MS).await
            }
            Some(_) => {
                fleet
                    .land(id, held, End::UnlessWanted, FLIGHT_KEEP_MS)
                    .await
            }
            None => fleet.land(id, held, End::Free, FLIGHT_KEEP_MS).await,
        };
        if let (Some(Landed::Wanted), Some(f)) = (landed, answer) {
            landed = fleet.land(id, held, publish(f), FLIGHT_KEEP_MS).await;
        }
        if landed == Some(Landed::Lost) {
            tracing::warn!(
                event = "lease_lost",
                reason = "another replica took this refresh's lease over before its answer landed"
            );
        }
    }
}

/// Keeps the answer of a refresh that rotated `old_token` away for its twins on other
/// replicas, sealed under the old token and the client's credentials. Queued ahead of the
/// rotation's record, it commits with it: no replica reads the rotation without it.
pub(super) fn keep_replay(
    fleet: &Fleet,
    old_token: &str,
    credentials: &CredentialsKey,
    finished: &Finished,
) {
    let sealer = Sealer::derive("replay", &[old_token.as_bytes(), credentials]);
    let sealed = sealer.seal(&stored(finished).to_bytes());
    fleet.keep_replay(sealer.id().to_vec(), sealed);
}

/// The answer another replica kept for a twin presenting `old_token` with these
/// credentials, within the replay window.
pub(super) async fn replay(
    fleet: &Fleet,
    old_token: &str,
    credentials: &CredentialsKey,
) -> Option<Arc<Finished>> {
    let sealer = Sealer::derive("replay", &[old_token.as_bytes(), credentials]);
    let sealed = fleet.get_sealed(sealer.id()).await??;
    sealer
        .open(&sealed)
        .as_deref()
        .and_then(finished_from)
        .map(Arc::new)
}

/// The refresh token of a token request's form, as presented.
pub(super) fn presented_refresh_token(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(name, _)| name == "refresh_token")
        .map(|(_, value)| value.into_owned())
}

fn stored(finished: &Finished) -> StoredAnswer {
    StoredAnswer {
        status: finished.parts.status.as_u16(),
        headers: finished
            .parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
        body: finished.body.to_vec(),
    }
}

fn finished_from(bytes: &[u8]) -> Option<Finished> {
    let stored = StoredAnswer::from_bytes(bytes)?;
    let mut headers = HeaderMap::new();
    for (name, value) in stored.headers {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_bytes(&value).ok()?,
        );
    }
    Some(Finished::new(
        StatusCode::from_u16(stored.status).ok()?,
        headers,
        Bytes::from(stored.body),
    ))
}
