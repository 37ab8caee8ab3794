//! The warnings of `docs/causes.md`: raised the moment the wire shows a risk, before anything
//! fails. The ledger reports what it counted ([`Observation`]); this module decides which of
//! those facts, and of the exchange itself, deserve a warning, and words it.
//!
//! Must never: read the ledger or a clock; like the rules, a pure function of plain data.

use serde::Serialize;

use crate::ledger::{Observation, fmt_ms};
use crate::oauth::{GrantType, RequestFacts, ResponseFacts, SuccessFacts, short_client_id};

use super::catalogue::warn;

/// Consecutive password failures that raise `warn.password_failures`.
pub const PASSWORD_WARN_AFTER: u32 = 3;
/// Salesforce's login limit per user per hour.
pub const LOGIN_RATE_LIMIT: usize = 3600;
/// `warn.login_rate` fires when a user passes this many token requests in an hour (80 % of
/// the limit), and again every hundred after: often enough to be seen, not one per request.
const LOGIN_RATE_WARN_AT: usize = LOGIN_RATE_LIMIT * 4 / 5;
/// Salesforce documents an assertion's exp at most this far ahead.
const JWT_EXP_MAX_AHEAD_MS: f64 = 180_000.0;

/// A warning of `docs/causes.md`, raised the moment the wire shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub id: &'static str,
    pub message: String,
}

impl Warning {
    fn new(id: &'static str, message: String) -> Self {
        Self { id, message }
    }
}

/// The warnings of one recorded exchange: what `observed` (from the ledger) and the exchange
/// itself show. `now` is upstream milliseconds since the epoch.
pub fn judge(
    req: &RequestFacts,
    resp: &ResponseFacts,
    observed: &[Observation],
    now: i64,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for fact in observed {
        if let Observation::UserRequestsLastHour { before, count } = *fact {
            warnings.extend(login_rate(before, count));
        }
    }
    if let Some(success) = &resp.success {
        warnings.extend(refresh_token_returned(req, success));
    }
    for fact in observed {
        match *fact {
            Observation::LiveApprovals {
                count,
                limit,
                oldest_at,
                evicted_at,
            } => warnings.extend(approvals(count, limit, oldest_at, evicted_at)),
            Observation::PasswordFailures(n) => warnings.extend(password_failures(n)),
            Observation::JwtFailureStorm(n) => warnings.push(jwt_storm(req, n)),
            Observation::UserRequestsLastHour { .. } => {}
        }
    }
    if resp.success.is_some() {
        warnings.extend(jwt_exp_far(req, now));
    }
    warnings
}

/// Due when the count passed a mark (80 % of the limit, and every hundred after) since the
/// last request this replica saw: one at a time in one process, in steps when other
/// replicas' requests arrive.
fn login_rate(before: usize, requests: usize) -> Option<Warning> {
    let first = LOGIN_RATE_WARN_AT + 1;
    let mark = requests
        .checked_sub(first)
        .map(|past| first + past / 100 * 100);
    let due = mark.is_some_and(|mark| mark > before);
    due.then(|| {
        Warning::new(
            warn::LOGIN_RATE,
            format!(
                "{requests} token requests for this user in the last hour; Salesforce refuses logins past {LOGIN_RATE_LIMIT}"
            ),
        )
    })
}

/// What a success's refresh token (or its absence) says: rotation on a refresh, a missing
/// scope on an interactive authorization.
fn refresh_token_returned(req: &RequestFacts, success: &SuccessFacts) -> Option<Warning> {
    let returned = success.refresh_token_fp.is_some();
    match req.grant {
        GrantType::RefreshToken if returned => Some(Warning::new(
            warn::ROTATION_ON,
            "the refresh returned a new refresh_token: rotation is on and the token just used is dead; persist the new one before the next refresh".into(),
        )),
        GrantType::AuthorizationCode if !returned => Some(Warning::new(
            warn::NO_REFRESH_TOKEN,
            format!(
                "the authorization succeeded without a refresh_token (scope: {}); add refresh_token or offline_access to the requested and the app's scopes",
                success.scope.as_deref().unwrap_or("none")
            ),
        )),
        _ => None,
    }
}

fn approvals(
    count: usize,
    limit: usize,
    oldest_at: i64,
    evicted_at: Option<i64>,
) -> Option<Warning> {
    if count == limit {
        return Some(Warning::new(
            warn::APPROVAL_LIMIT_REACHED,
            format!(
                "this is live refresh token number {limit} for this user and app; the next authorization revokes the oldest, issued at {}",
                fmt_ms(oldest_at)
            ),
        ));
    }
    let evicted_at = evicted_at.filter(|_| count > limit)?;
    Some(Warning::new(
        warn::APPROVAL_EVICTED,
        format!(
            "authorization number {count} for this user and app: Salesforce keeps {limit}, so the refresh token issued at {} is now revoked",
            fmt_ms(evicted_at)
        ),
    ))
}

fn password_failures(consecutive: u32) -> Option<Warning> {
    (consecutive >= PASSWORD_WARN_AFTER).then(|| {
        Warning::new(
            warn::PASSWORD_FAILURES,
            format!(
                "{consecutive} consecutive password-grant failures for this username; Salesforce locks the user out after a few more (10 by default)"
            ),
        )
    })
}

fn jwt_storm(req: &RequestFacts, failures: usize) -> Warning {
    let sub = req
        .jwt
        .as_ref()
        .and_then(|j| j.sub.as_deref())
        .unwrap_or("");
    Warning::new(
        warn::RETRY_STORM,
        format!(
            "{failures} failing JWT bearer logins in the last minute for sub {sub} with client_id {}: each counts against the user's login rate; fix the cause before retrying",
            short_client_id(req.client_id.as_deref().unwrap_or(""))
        ),
    )
}

fn jwt_exp_far(req: &RequestFacts, now: i64) -> Option<Warning> {
    if req.grant != GrantType::JwtBearer {
        return None;
    }
    let exp = req.jwt.as_ref()?.exp?;
    (exp * 1000.0 - now as f64 > JWT_EXP_MAX_AHEAD_MS).then(|| {
        Warning::new(
            warn::JWT_EXP_FAR,
            format!(
                "the assertion's exp is {:.0} s ahead; Salesforce documents at most 3 minutes",
                exp - now as f64 / 1000.0
            ),
        )
    })
}

/// The breaker's warning: a client retrying a refresh token Salesforce declared dead.
pub fn dead_token_storm(
    retries: usize,
    client: &str,
    user: &str,
    absorbed: u64,
    died_at: i64,
) -> Warning {
    Warning::new(
        warn::RETRY_STORM,
        format!(
            "{retries} refreshes of one dead refresh token in the last minute (client_id {client}, user {user}); {absorbed} absorbed by grantdoctor since it died at {}: the client retries a grant that will never work again",
            fmt_ms(died_at)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::testing::{T0, Wire};

    fn ids(warnings: &[Warning]) -> Vec<&'static str> {
        warnings.iter().map(|w| w.id).collect()
    }

    #[test]
    fn the_login_rate_warns_past_eighty_percent_and_every_hundred_after() {
        let one_more = |n: usize| login_rate(n - 1, n);
        assert!(one_more(LOGIN_RATE_WARN_AT).is_none());
        assert!(one_more(LOGIN_RATE_WARN_AT + 1).is_some());
        assert!(one_more(LOGIN_RATE_WARN_AT + 2).is_none());
        assert!(one_more(LOGIN_RATE_WARN_AT + 101).is_some());
    }

    #[test]
    fn the_login_rate_warns_once_when_other_replicas_requests_carry_it_past_a_mark() {
        assert!(login_rate(2_000, LOGIN_RATE_WARN_AT + 40).is_some());
        assert!(login_rate(LOGIN_RATE_WARN_AT + 40, LOGIN_RATE_WARN_AT + 41).is_none());
        assert!(login_rate(LOGIN_RATE_WARN_AT + 41, LOGIN_RATE_WARN_AT + 160).is_some());
        // The hour slid on: the count fell, and came back to a mark already passed.
        assert!(login_rate(LOGIN_RATE_WARN_AT, LOGIN_RATE_WARN_AT + 1).is_some());
        assert!(login_rate(LOGIN_RATE_WARN_AT + 1, LOGIN_RATE_WARN_AT + 1).is_none());
    }

    #[test]
    fn the_limit_reached_warns_and_one_past_it_names_the_evicted_token() {
        let reached = approvals(5, 5, 1_000, None).unwrap();
        assert_eq!(reached.id, warn::APPROVAL_LIMIT_REACHED);
        let evicted = approvals(6, 5, 1_000, Some(2_000)).unwrap();
        assert_eq!(evicted.id, warn::APPROVAL_EVICTED);
        assert!(
            evicted.message.contains("1970-01-01T00:00:02Z"),
            "{evicted:?}"
        );
        assert!(approvals(4, 5, 1_000, None).is_none());
    }

    #[test]
    fn password_failures_warn_from_the_third_in_a_row() {
        let wire = Wire::new();
        let login = "grant_type=password&client_id=3MVG9x&username=ann@example.com&password=p";
        let raised: Vec<Vec<&str>> = (0..3)
            .map(|i| ids(&wire.fails(login, "invalid_grant", "authentication failure", T0 + i)))
            .collect();
        assert_eq!(raised, [vec![], vec![], vec![warn::PASSWORD_FAILURES]]);
    }

    #[test]
    fn a_refresh_that_returns_a_refresh_token_says_rotation_is_on() {
        let wire = Wire::new();
        wire.succeeds(
            "grant_type=authorization_code&client_id=3MVG9x&code=c",
            Some("5Aep1"),
            T0,
        );
        let refresh = "grant_type=refresh_token&client_id=3MVG9x&refresh_token=5Aep1";
        let raised = wire.succeeds(refresh, Some("5Aep2"), T0 + 1000);
        assert_eq!(ids(&raised), [warn::ROTATION_ON]);
    }

    #[test]
    fn an_authorization_without_a_refresh_token_says_which_scope_it_had() {
        let wire = Wire::new();
        let raised = wire.succeeds(
            "grant_type=authorization_code&client_id=3MVG9x&code=c",
            None,
            T0,
        );
        assert_eq!(ids(&raised), [warn::NO_REFRESH_TOKEN]);
        assert!(raised[0].message.contains("scope: api refresh_token"));
    }
}
