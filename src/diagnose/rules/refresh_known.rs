//! The refresh-token family once the ledger knows the token: what its history proves
//! (rotation, another app or host, evictions, an org refresh), what the app's declared policy
//! and the token's age make likely, and by elimination what is left.

use crate::diagnose::catalogue::id;
use crate::diagnose::{DeclaredPolicy, Findings};
use crate::ledger::{TokenHistory, fmt_ms};

use super::Case;
use super::evidence::{history_line, span, wrong_host};

const DAY_MS: i64 = 86_400_000;
const IDLE_CAP_MS: i64 = 30 * DAY_MS;

/// How long ago the token was issued and last used, at the time of the answer.
struct Ages {
    last: i64,
    idle: i64,
    age: i64,
}

pub(super) fn known(c: &Case, token: &TokenHistory, f: &mut Findings) {
    let history = history_line(token);
    proven(c, token, &history, f);
    if f.has_certain() {
        return;
    }
    let last = token.last_success.unwrap_or(token.issued_at);
    let ages = Ages {
        last,
        idle: c.now - last,
        age: c.now - token.issued_at,
    };
    declared_policy(c, token, &ages, &history, f);
    unused_or_revoked(c, &ages, &history, f);
    let first_use = first_use(c, token, &history, f);
    if first_use || !f.has_certain() {
        by_elimination(c, token, &ages, first_use, &history, f);
    }
}

/// Causes the recorded history proves on its own.
fn proven(c: &Case, token: &TokenHistory, history: &str, f: &mut Findings) {
    let (req, view) = (c.req, c.view);
    let client = req.client_id.as_deref().unwrap_or("");
    if let Some(at) = token.rotated_at {
        f.add(id::REFRESH_ROTATED_TOKEN_REUSED, 0.97, vec![
            format!("this refresh token was exchanged successfully at {} and that response carried a new refresh_token: rotation is on", fmt_ms(at)),
            history.to_owned(),
        ]);
    }
    if !client.is_empty() && token.client_id != client {
        f.add(
            id::REFRESH_CLIENT_MISMATCH,
            0.95,
            vec![
                format!(
                    "the token was issued to client_id {}, and client_id {client} presented it",
                    token.client_id
                ),
                history.to_owned(),
            ],
        );
    }
    if let Some(line) = wrong_host(token, &req.host) {
        f.add(id::REFRESH_WRONG_HOST, 0.95, vec![line, history.to_owned()]);
    }
    if token.newer_approvals.len() >= view.approval_limit {
        let times: Vec<String> = token.newer_approvals.iter().map(|t| fmt_ms(*t)).collect();
        f.add(
            id::REFRESH_APPROVAL_LIMIT_EVICTED,
            0.95,
            vec![
                format!(
                    "{} newer refresh tokens were issued to this user for this app: at {}",
                    times.len(),
                    times.join(", ")
                ),
                history.to_owned(),
            ],
        );
    }
    if let Some((old, new, at)) = &view.org_changed
        && *at > token.issued_at
    {
        f.add(
            id::REFRESH_ORG_REFRESHED,
            0.9,
            vec![format!(
                "{} answered for org {old} when the token was issued and for org {new} since {}",
                token.host,
                fmt_ms(*at)
            )],
        );
    } else if view.org_failures_recent >= 2 {
        f.add(
            id::REFRESH_ORG_REFRESHED,
            0.75,
            vec![format!(
                "{} other refresh tokens of the same org failed in the last 10 minutes",
                view.org_failures_recent
            )],
        );
    }
}

/// A refresh-token policy the operator declared for this app, against the token's ages.
fn declared_policy(c: &Case, token: &TokenHistory, ages: &Ages, history: &str, f: &mut Findings) {
    let Ages { last, idle, age } = *ages;
    match c.policies.get(&token.client_id) {
        Some(DeclaredPolicy::Immediate) => {
            f.add(
                id::REFRESH_POLICY_IMMEDIATE_EXPIRY,
                0.95,
                vec![
                    "the app's refresh token policy is declared as immediate expiry".into(),
                    history.to_owned(),
                ],
            );
        }
        Some(DeclaredPolicy::IdleSeconds(limit)) if idle >= *limit as i64 * 1000 => {
            f.add(
                id::REFRESH_POLICY_IDLE_EXPIRY,
                0.93,
                vec![
                    format!(
                        "unused for {} (since {}); the app's declared idle limit is {}",
                        span(idle),
                        fmt_ms(last),
                        span(*limit as i64 * 1000)
                    ),
                    history.to_owned(),
                ],
            );
        }
        Some(DeclaredPolicy::AbsoluteSeconds(limit)) if age >= *limit as i64 * 1000 => {
            f.add(
                id::REFRESH_POLICY_ABSOLUTE_EXPIRY,
                0.93,
                vec![
                    format!(
                        "issued {} ago; the app's declared lifetime is {}",
                        span(age),
                        span(*limit as i64 * 1000)
                    ),
                    history.to_owned(),
                ],
            );
        }
        _ => {}
    }
}

/// Salesforce's own idle cap, and other tokens of the same user and app failing together.
fn unused_or_revoked(c: &Case, ages: &Ages, history: &str, f: &mut Findings) {
    let Ages { last, idle, .. } = *ages;
    let view = c.view;
    if idle >= IDLE_CAP_MS {
        f.add(
            id::REFRESH_POLICY_IDLE_EXPIRY,
            0.85,
            vec![
                format!(
                    "unused for {} (since {}): past the 30-day idle cap",
                    span(idle),
                    fmt_ms(last)
                ),
                history.to_owned(),
            ],
        );
    }
    if view.user_revocations_recent > 0 {
        f.add(
            id::REFRESH_REVOKED,
            0.9,
            vec![
                format!(
                    "{} other refresh tokens of this user for this app, which had worked, failed in the last 10 minutes: the app's access was revoked (by the user, an admin, or a deactivation)",
                    view.user_revocations_recent
                ),
                history.to_owned(),
            ],
        );
    }
}

/// A token failing on its first use, nothing else explaining it: the app's policy, or a
/// revocation. Returns whether it is one.
fn first_use(c: &Case, token: &TokenHistory, history: &str, f: &mut Findings) -> bool {
    let view = c.view;
    let first_use = token.uses == 0 && !f.has_certain();
    if first_use {
        // One unexplained first-use failure is as much a revocation as a policy; only another
        // token of the app failing the same way makes the policy near certain.
        let others = view.client_first_use_failures;
        let mut evidence = vec![
            format!(
                "issued at {} and never refreshed successfully: this is its first use",
                fmt_ms(token.issued_at)
            ),
            history.to_owned(),
        ];
        if others > 0 {
            evidence.push(format!(
                "{others} other refresh tokens of this app also failed on their first use, with nothing else to explain them"
            ));
        }
        f.first_use_unexplained();
        f.add(
            id::REFRESH_POLICY_IMMEDIATE_EXPIRY,
            if others > 0 { 0.9 } else { 0.7 },
            evidence,
        );
    }
    first_use
}

fn by_elimination(
    c: &Case,
    token: &TokenHistory,
    ages: &Ages,
    first_use: bool,
    history: &str,
    f: &mut Findings,
) {
    let Ages { idle, age, .. } = *ages;
    let view = c.view;
    // A revocation is never seen on the wire, and authorizations made outside
    // grantdoctor evict silently: by elimination these are guesses, which the org's own
    // records (an org connection) can decide.
    f.prior(id::REFRESH_REVOKED, if first_use && view.client_first_use_failures > 0 { 0.45 } else { 0.6 }, vec![
        format!(
            "not observed: a revocation by the user or an admin; known token, none of the other causes: {} newer authorizations seen ({} evict), not rotated, unused for {}",
            token.newer_approvals.len(),
            view.approval_limit,
            span(idle)
        ),
        history.to_owned(),
    ]);
    f.prior(
        id::REFRESH_APPROVAL_LIMIT_EVICTED,
        0.4,
        vec![
            format!(
                "not observed: authorizations of this user for this app made outside grantdoctor (another tool, a laptop, a CI job); {} seen through it",
                token.newer_approvals.len()
            ),
            history.to_owned(),
        ],
    );
    if token.uses > 0 {
        f.prior(
            id::REFRESH_POLICY_ABSOLUTE_EXPIRY,
            0.3,
            vec![format!(
                "issued {} ago; not observed: no absolute lifetime is declared for this app",
                span(age)
            )],
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::diagnose::catalogue::id;
    use crate::diagnose::testing::{DAY_MS, T0, Wire, ids};
    use crate::diagnose::{Basis, DeclaredPolicy};

    const CODE: &str = "grant_type=authorization_code&client_id=3MVG9x&code=c";
    const REFRESH: &str = "grant_type=refresh_token&client_id=3MVG9x&refresh_token=5Aep1";
    const EXPIRED: &str = "expired access/refresh token";

    #[test]
    fn a_token_exchanged_for_a_new_one_was_rotated_away() {
        let wire = Wire::new();
        wire.succeeds(CODE, Some("5Aep1"), T0 - 2000);
        wire.succeeds(REFRESH, Some("5Aep2"), T0 - 1000);
        let d = wire.diagnose(REFRESH, 400, "invalid_grant", EXPIRED);
        assert_eq!(
            wire.top(&d),
            (id::REFRESH_ROTATED_TOKEN_REUSED, Basis::Evidence)
        );
    }

    #[test]
    fn five_newer_authorizations_evict_the_token() {
        let wire = Wire::new();
        for i in 1..=6 {
            wire.succeeds(
                &format!("{CODE}{i}"),
                Some(&format!("5Aep{i}")),
                T0 - 10_000 + i,
            );
        }
        let d = wire.diagnose(REFRESH, 400, "invalid_grant", EXPIRED);
        assert_eq!(
            wire.top(&d),
            (id::REFRESH_APPROVAL_LIMIT_EVICTED, Basis::Evidence)
        );
    }

    #[test]
    fn a_declared_idle_limit_turns_the_token_age_into_evidence() {
        let mut wire = Wire::new();
        wire.policies
            .insert("3MVG9x".into(), DeclaredPolicy::IdleSeconds(86_400));
        wire.succeeds(CODE, Some("5Aep1"), T0 - 3 * DAY_MS);
        wire.succeeds(REFRESH, None, T0 - 2 * DAY_MS);
        let d = wire.diagnose(REFRESH, 400, "invalid_grant", EXPIRED);
        assert_eq!(
            wire.top(&d),
            (id::REFRESH_POLICY_IDLE_EXPIRY, Basis::Evidence)
        );
    }

    #[test]
    fn a_known_token_nothing_explains_leaves_revocation_and_eviction_as_priors() {
        let wire = Wire::new();
        wire.succeeds(CODE, Some("5Aep1"), T0 - 2 * DAY_MS);
        wire.succeeds(REFRESH, None, T0 - DAY_MS);
        let d = wire.diagnose(REFRESH, 400, "invalid_grant", EXPIRED);
        assert_eq!(
            ids(&d),
            [
                id::REFRESH_REVOKED,
                id::REFRESH_APPROVAL_LIMIT_EVICTED,
                id::REFRESH_POLICY_ABSOLUTE_EXPIRY
            ]
        );
        assert!(!d.decided());
    }

    #[test]
    fn a_first_use_failure_names_the_immediate_expiry_policy() {
        let wire = Wire::new();
        wire.succeeds(CODE, Some("5Aep1"), T0 - 1000);
        let d = wire.diagnose(REFRESH, 400, "invalid_grant", EXPIRED);
        assert_eq!(
            wire.top(&d),
            (id::REFRESH_POLICY_IMMEDIATE_EXPIRY, Basis::Evidence)
        );
        assert!(d.unexplained_first_use);
    }
}
