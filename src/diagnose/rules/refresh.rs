//! The refresh-token family, up to the token's history: a refresh with no usable token, a
//! value that cannot be a refresh token, one grantdoctor never saw issued, concurrent
//! refreshes. What a known token's history tells is in [`super::refresh_known`].

use crate::diagnose::Findings;
use crate::diagnose::catalogue::id;
use crate::ledger::fmt_ms;
use crate::oauth::TokenPresence;

use super::Case;
use super::evidence::{NEVER_SEEN, NO_HISTORY};

/// `expired access/refresh token`: Salesforce's one answer for every dead refresh token.
pub(super) fn expired(c: &Case, f: &mut Findings) {
    let no_refresh_authorization = c.view.client_authorized_without_refresh.as_ref().map(|(at, scope)| {
        format!(
            "the latest authorization of this app, at {}, returned no refresh_token (scope: {})",
            fmt_ms(*at),
            scope.as_deref().unwrap_or("none")
        )
    });
    if let Some(sent) = unusable(&c.req.refresh_token) {
        let mut evidence = vec![format!("the request carried {sent}")];
        evidence.extend(no_refresh_authorization);
        f.add(id::REFRESH_MISSING_REFRESH_SCOPE, 0.95, evidence);
        return;
    }
    match &c.view.token {
        Some(token) => super::refresh_known::known(c, token, f),
        None => unknown(c, no_refresh_authorization, f),
    }
}

/// What the request sent instead of a refresh token, if it sent none.
fn unusable(token: &TokenPresence) -> Option<&'static str> {
    match token {
        TokenPresence::Present(_) => None,
        TokenPresence::Empty => Some("an empty refresh_token"),
        TokenPresence::Placeholder => {
            Some("a placeholder refresh_token (null/undefined): the client stored none")
        }
        TokenPresence::Absent => Some("no refresh_token parameter"),
    }
}

/// A token grantdoctor never saw issued: its shape may still decide; otherwise only priors.
fn unknown(c: &Case, no_refresh_authorization: Option<String>, f: &mut Findings) {
    if malformed_token(c, f) {
        return;
    }
    if let Some(line) = no_refresh_authorization {
        f.add(
            id::REFRESH_MISSING_REFRESH_SCOPE,
            0.6,
            vec![line, NEVER_SEEN.into()],
        );
    }
    let unseen = if c.view.watched {
        NEVER_SEEN
    } else {
        NO_HISTORY
    };
    for (cause, prior) in [
        (id::REFRESH_APPROVAL_LIMIT_EVICTED, 0.4),
        (id::REFRESH_REVOKED, 0.35),
        (id::REFRESH_POLICY_IDLE_EXPIRY, 0.3),
        (id::REFRESH_ROTATED_TOKEN_REUSED, 0.3),
        (id::REFRESH_POLICY_IMMEDIATE_EXPIRY, 0.25),
    ] {
        f.prior(cause, prior, vec![unseen.into()]);
    }
}

/// A presented refresh token that cannot be one, whatever its history.
fn malformed_token(c: &Case, f: &mut Findings) -> bool {
    let (req, view) = (c.req, c.view);
    let Some(shape) = &req.refresh_shape else {
        return false;
    };
    let mut evidence = Vec::new();
    let mut confidence: f64 = 0.0;
    let mut found = |c: f64, line: String| {
        confidence = confidence.max(c);
        evidence.push(line);
    };
    if shape.access_token {
        found(
            0.97,
            "the value has the shape of an access token (a 15-character org id, then `!`): an access token was sent as the refresh token".into(),
        );
    }
    if shape.quoted {
        found(
            0.95,
            "the value is wrapped in quotes: it was stored or templated with them".into(),
        );
    }
    if shape.whitespace {
        found(
            0.95,
            "the value contains whitespace (a trailing newline from a file or secret store?)"
                .into(),
        );
    }
    if shape.double_encoded {
        found(
            0.93,
            "the value still holds a %XX escape after decoding: it was percent-encoded twice"
                .into(),
        );
    }
    if let Some((min, max)) = view.client_refresh_lengths
        && shape.len < min
    {
        found(
            0.9,
            format!(
                "the value is {} characters long; refresh tokens issued to this app were {min}–{max}: it was cut short",
                shape.len
            ),
        );
    }
    if evidence.is_empty() {
        return false;
    }
    evidence.push("grantdoctor never saw this value issued or used".into());
    f.add(id::REFRESH_TOKEN_MALFORMED, confidence, evidence);
    true
}

pub(super) fn concurrent_refresh(c: &Case, f: &mut Findings) {
    let view = c.view;
    match &view.concurrent {
        Some(c) if c.in_flight > 0 => f.add(id::REFRESH_CONCURRENT_REFRESH, 0.95, vec![format!("{} other refresh requests with this token were in flight", c.in_flight)]),
        Some(c) if c.finished_ms_ago.is_some_and(|ms| ms <= 10_000) => f.add(id::REFRESH_CONCURRENT_REFRESH, 0.9, vec![format!(
            "another refresh with this token came back {} ms earlier",
            c.finished_ms_ago.unwrap_or_default()
        )]),
        _ => f.prior(id::REFRESH_CONCURRENT_REFRESH, 0.6, vec!["not observed: no other refresh with this token was seen in flight (another client, or another proxy?)".into()]),
    }
}

pub(super) fn validity_expired(_: &Case, f: &mut Findings) {
    f.add(
        id::REFRESH_POLICY_ABSOLUTE_EXPIRY,
        0.6,
        vec![
            "`token validity expired` is believed to mean the absolute refresh-token lifetime"
                .into(),
        ],
    );
}

#[cfg(test)]
mod tests {
    use crate::diagnose::Basis;
    use crate::diagnose::catalogue::id;
    use crate::diagnose::testing::{T0, Wire, ids};

    const EXPIRED: &str = "expired access/refresh token";

    #[test]
    fn a_placeholder_token_means_the_authorization_returned_none() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=refresh_token&client_id=3MVG9x&refresh_token=undefined",
            400,
            "invalid_grant",
            EXPIRED,
        );
        assert_eq!(
            wire.top(&d),
            (id::REFRESH_MISSING_REFRESH_SCOPE, Basis::Evidence)
        );
    }

    #[test]
    fn a_token_never_seen_gets_only_priors_in_their_usual_order() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=refresh_token&client_id=3MVG9x&refresh_token=5Aep861never",
            400,
            "invalid_grant",
            EXPIRED,
        );
        assert_eq!(
            ids(&d),
            [
                id::REFRESH_APPROVAL_LIMIT_EVICTED,
                id::REFRESH_REVOKED,
                id::REFRESH_POLICY_IDLE_EXPIRY,
                id::REFRESH_ROTATED_TOKEN_REUSED,
                id::REFRESH_POLICY_IMMEDIATE_EXPIRY,
            ]
        );
        assert!(d.causes.iter().all(|c| c.basis == Basis::Prior));
    }

    #[test]
    fn an_access_token_sent_as_the_refresh_token_is_malformed() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=refresh_token&client_id=3MVG9x&refresh_token=00D000000000001!AQabc",
            400,
            "invalid_grant",
            EXPIRED,
        );
        assert_eq!(wire.top(&d), (id::REFRESH_TOKEN_MALFORMED, Basis::Evidence));
    }

    #[test]
    fn a_refresh_answered_expired_code_with_nothing_in_flight_is_a_concurrent_prior() {
        let wire = Wire::new();
        wire.succeeds(
            "grant_type=authorization_code&client_id=3MVG9x&code=c",
            Some("5Aep1"),
            T0 - 1000,
        );
        let d = wire.diagnose(
            "grant_type=refresh_token&client_id=3MVG9x&refresh_token=5Aep1",
            400,
            "invalid_grant",
            "expired authorization code",
        );
        assert_eq!(wire.top(&d), (id::REFRESH_CONCURRENT_REFRESH, Basis::Prior));
    }
}
