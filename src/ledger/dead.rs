//! Refresh tokens Salesforce declared dead (E1, diagnosed on evidence), by (host, client id,
//! token): the dead-token breaker answers their retries without forwarding them. Real clients
//! retry a dead grant for hours (one sync sent 1,600+ rejected refreshes in 38 minutes), and
//! every retry still counts against the user's login rate and fills Login History.
//!
//! Only the triple is dead: the same token at another host or with another client id is a
//! different question (wrong-host and client-mismatch failures are not final for the token).
//!
//! Must never: hold a secret. Salesforce's error body and the diagnosis text hold none.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{Fp, State, Sym};

/// A retry storm: more than this many requests for one dead token (or one failing JWT
/// subject) in a minute.
pub const STORM_PER_MINUTE: usize = 10;
/// One `warn.retry_storm` per token per this long, however long the storm lasts.
const STORM_WARN_EVERY_MS: i64 = 600_000;
/// Salesforce's E1 body is under 100 bytes; anything far larger is not kept to replay.
pub const BODY_KEPT_MAX: usize = 4096;

/// (host, client id, refresh token fingerprint).
pub(crate) type DeadKey = (Sym, Sym, Fp);

/// One cause of the first diagnosis, as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptCause {
    pub id: String,
    pub confidence: f64,
    pub basis: String,
    pub evidence: Vec<String>,
}

/// What Salesforce answered when the token died, and what grantdoctor made of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadToken {
    /// Upstream milliseconds of the answer that declared it dead.
    pub died_at: i64,
    pub status: u16,
    pub content_type: Option<String>,
    /// Salesforce's body, decoded, replayed byte for byte.
    pub body: String,
    pub event_id: String,
    pub causes: Vec<KeptCause>,
    pub org_id: Option<String>,
    pub user_id: Option<String>,
    /// Retries answered since.
    pub absorbed: u64,
    #[serde(default)]
    pub storm_warned_at: Option<i64>,
    /// Arrival times of the last minute's retries (not kept on disk).
    #[serde(skip)]
    pub recent: VecDeque<i64>,
}

/// One retry of a dead token, answered here.
#[derive(Debug, Clone)]
pub struct Absorbed {
    pub token: DeadToken,
    /// Requests for this token in the last minute, when that just made a storm.
    pub storm: Option<usize>,
}

/// Records a token as dead (a later death of the same triple keeps the first diagnosis).
pub(super) fn declare(state: &mut State, key: DeadKey, token: DeadToken) {
    state.dead.entry(key).or_insert(token);
}

/// Counts a retry of a dead token, if the triple is dead.
pub(super) fn absorb(state: &mut State, key: &DeadKey, now: i64) -> Option<Absorbed> {
    let token = state.dead.get_mut(key)?;
    token.absorbed += 1;
    let storm = tick(&mut token.recent, &mut token.storm_warned_at, now);
    Some(Absorbed {
        token: token.clone(),
        storm,
    })
}

/// Notes one request in a per-minute window; returns the count when it just became a storm
/// worth warning about.
pub(super) fn tick(
    recent: &mut VecDeque<i64>,
    warned_at: &mut Option<i64>,
    now: i64,
) -> Option<usize> {
    recent.push_back(now);
    while recent.front().is_some_and(|t| now - t >= 60_000) {
        recent.pop_front();
    }
    let storming = recent.len() > STORM_PER_MINUTE;
    let quiet_since_warning = warned_at.is_none_or(|at| now - at >= STORM_WARN_EVERY_MS);
    (storming && quiet_since_warning).then(|| {
        *warned_at = Some(now);
        recent.len()
    })
}

/// The stored key of a dead triple.
pub(super) fn row_key(key: &DeadKey) -> String {
    format!("{}|{}|fp_{:016x}", key.0, key.1, key.2)
}

/// The triple back from a stored key.
pub(super) fn parse_row_key(state: &mut State, text: &str) -> Option<DeadKey> {
    let mut parts = text.rsplitn(3, '|');
    let fp = parts.next()?;
    let client = parts.next()?;
    let host = parts.next()?;
    Some((state.intern(host), state.intern(client), super::fp_key(fp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_warned_once_past_ten_a_minute_and_again_only_after_quiet() {
        let mut recent = VecDeque::new();
        let mut warned = None;
        let fired: Vec<usize> = (0..100)
            .filter_map(|i| tick(&mut recent, &mut warned, 1_000 + i * 100))
            .collect();
        assert_eq!(fired, vec![STORM_PER_MINUTE + 1]);
        // Ten minutes on, still storming: one more warning.
        let later = 1_000 + STORM_WARN_EVERY_MS + 60_000;
        let again: Vec<usize> = (0..20)
            .filter_map(|i| tick(&mut recent, &mut warned, later + i * 100))
            .collect();
        assert_eq!(again, vec![STORM_PER_MINUTE + 1]);
    }

    #[test]
    fn slow_retries_are_no_storm() {
        let mut recent = VecDeque::new();
        let mut warned = None;
        assert!((0..50).all(|i| tick(&mut recent, &mut warned, i * 7_000).is_none()));
    }

    #[test]
    fn row_keys_round_trip_hosts_and_client_ids() {
        let mut state = State::default();
        let key: DeadKey = ("login.salesforce.com".into(), "3MVG9web".into(), 0xabc);
        let text = row_key(&key);
        assert_eq!(parse_row_key(&mut state, &text), Some(key));
    }
}
