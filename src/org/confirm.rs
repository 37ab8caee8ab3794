//! Re-ranking a refresh failure with the org's own records: a pure function, so every reading
//! of `OauthToken`, `User` and `UserLogin` rows is a unit test.
//!
//! Salesforce keeps one `OauthToken` row per live approval of (user, app). The failing token's
//! approval was made at or before the time the ledger first knew the token; if no row is that
//! old, the approval is gone: evicted when the limit's worth of newer approvals live, revoked
//! otherwise.
//!
//! Evidence names records by date and the user by id, never by record id or username: a
//! confirmed diagnosis is kept in the ledger by the dead-token breaker.

use crate::diagnose::catalogue::id;
use crate::diagnose::{Basis, Diagnosis, Finding};
use crate::ledger::{TokenHistory, UNSEEN, fmt_ms};

use super::{Approval, UserRecord};

/// Slack between the issue time Salesforce returned and the `CreatedDate` of its approval.
const SAME_APPROVAL_MS: i64 = 2_000;
/// A token first seen in use was first seen at the `Date` of that answer, which has whole
/// seconds: its approval may carry a `CreatedDate` up to a second later.
const DATE_GRANULARITY_MS: i64 = 1_000;
const IDLE_CAP_MS: i64 = 30 * 86_400_000;

/// What the org's records say about one failing token's user and app.
#[derive(Debug, Clone, Default)]
pub struct OrgFacts {
    /// The org connection's host, for the evidence.
    pub org: String,
    pub app: String,
    /// The user's live approvals for the app, when they could be read.
    pub approvals: Option<Vec<Approval>>,
    pub user: Option<UserRecord>,
    /// The user's OAuth logins of the last hour, when they could be read.
    pub logins: Option<Vec<super::LoginRow>>,
    /// The app's `ConnectedApplication` row (policy fields), when it could be read.
    pub app_policy: Option<serde_json::Value>,
}

/// The diagnosis with what the records confirm marked `confirmed` and ranked first.
pub fn confirm(
    diagnosis: &Diagnosis,
    token: &TokenHistory,
    facts: &OrgFacts,
    limit: usize,
    now: i64,
) -> Diagnosis {
    let mut out = diagnosis.clone();
    if let Some(user) = &facts.user {
        user_state(&mut out, user, &facts.org);
    }
    if let Some(rows) = &facts.approvals {
        approvals(&mut out, token, rows, facts, limit, now);
    }
    if let Some(app) = &facts.app_policy {
        policy(&mut out, app, facts);
    }
    out.causes
        .sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    if let (Some(logins), Some(top)) = (&facts.logins, out.causes.first_mut()) {
        top.evidence.extend(login_lines(logins, token));
    }
    out
}

/// The user's failed logins as text: LoginHistory's statuses map to token errors only
/// loosely, so they are shown, never counted as certain.
fn login_lines(logins: &[super::LoginRow], token: &TokenHistory) -> Vec<String> {
    let user = token.user_id.as_deref().unwrap_or("");
    let mut by_status: std::collections::BTreeMap<&str, (usize, i64)> = Default::default();
    for row in logins
        .iter()
        .filter(|r| r.status != "Success" && r.user_id.get(..15) == user.get(..15))
    {
        let entry = by_status.entry(row.status.as_str()).or_insert((0, row.at));
        entry.0 += 1;
        entry.1 = entry.1.max(row.at);
    }
    by_status
        .into_iter()
        .map(|(status, (count, last))| {
            let line = format!(
                "LoginHistory: {count} login(s) of this user with status `{status}` in the last hour, last at {}",
                fmt_ms(last)
            );
            match documented_cause(status) {
                Some(cause) => format!("{line} (Salesforce's LOGIN_STATUS list relates this status to `{cause}`)"),
                None => line,
            }
        })
        .collect()
}

/// The statuses whose meaning Salesforce's LOGIN_STATUS list documents, and the cause each
/// describes. A status whose wording or mapping is unconfirmed (a lockout, a frozen user,
/// one that fits two causes) maps to nothing and is shown as its text alone.
fn documented_cause(status: &str) -> Option<&'static str> {
    match status {
        "Invalid password" => Some(id::PASSWORD_BAD_CREDENTIALS),
        "Restricted IP" => Some(id::USER_IP_RESTRICTED),
        "User is inactive" => Some(id::USER_INACTIVE),
        "Login rate exceeded" => Some(id::USER_LOGIN_RATE_EXCEEDED),
        "Failed: Not approved for access" => Some(id::APP_USER_NOT_APPROVED),
        "Failed: Invalid Code Verifier" => Some(id::CODE_PKCE_MISMATCH),
        s if s.starts_with("Organization ") => Some(id::ORG_INACTIVE),
        _ => None,
    }
}

fn user_state(out: &mut Diagnosis, user: &UserRecord, org: &str) {
    let mut lines = user.problems();
    if !lines.is_empty() {
        lines.push(format!("read from {org}"));
        mark(out, id::USER_INACTIVE, 0.97, lines);
    }
}

fn approvals(
    out: &mut Diagnosis,
    token: &TokenHistory,
    rows: &[Approval],
    facts: &OrgFacts,
    limit: usize,
    now: i64,
) {
    let first_known = token.issued_at;
    let slack = if token.issued_by == UNSEEN {
        DATE_GRANULARITY_MS
    } else {
        SAME_APPROVAL_MS
    };
    let old_enough: Vec<&Approval> = rows
        .iter()
        .filter(|a| a.created <= first_known + slack)
        .collect();
    if old_enough.is_empty() {
        approval_gone(out, token, rows, facts, limit);
        return;
    }
    let own = (token.issued_by != UNSEEN)
        .then(|| {
            old_enough
                .iter()
                .find(|a| (a.created - token.issued_at).abs() <= SAME_APPROVAL_MS)
        })
        .flatten();
    let Some(own) = own else {
        return;
    };
    // The approval lives: neither evicted nor revoked.
    demote(out, id::REFRESH_APPROVAL_LIMIT_EVICTED);
    demote(out, id::REFRESH_REVOKED);
    let last = own.last_used.unwrap_or(own.created);
    if now - last >= IDLE_CAP_MS {
        mark(
            out,
            id::REFRESH_POLICY_IDLE_EXPIRY,
            0.95,
            vec![format!(
                "this token's approval (the OauthToken row created at {}) is live but last used at {}, {} days ago",
                fmt_ms(own.created),
                fmt_ms(last),
                (now - last) / 86_400_000
            )],
        );
    }
    for finding in out
        .causes
        .iter_mut()
        .filter(|f| f.id.starts_with("sf.refresh.policy_"))
    {
        finding.evidence.push(format!(
            "this token's approval (the OauthToken row created at {}) is still live in {}: the token expired, the approval did not",
            fmt_ms(own.created),
            facts.org
        ));
    }
}

/// No live approval as old as the token: evicted by newer ones if the user is at the limit,
/// else revoked.
fn approval_gone(
    out: &mut Diagnosis,
    token: &TokenHistory,
    rows: &[Approval],
    facts: &OrgFacts,
    limit: usize,
) {
    let first_known = token.issued_at;
    let app = &facts.app;
    let when = if token.issued_by == UNSEEN {
        "first seen"
    } else {
        "issued"
    };
    let dates: Vec<String> = rows.iter().map(|a| fmt_ms(a.created)).collect();
    if rows.len() >= limit {
        mark(
            out,
            id::REFRESH_APPROVAL_LIMIT_EVICTED,
            0.98,
            vec![
                format!(
                    "OauthToken in {} holds {} approvals of this user for {app}, all created after this token was {when} ({}): {}",
                    facts.org,
                    rows.len(),
                    fmt_ms(first_known),
                    dates.join(", ")
                ),
                "none of them is this token's approval: the newer ones evicted it".into(),
            ],
        );
        demote(out, id::REFRESH_REVOKED);
    } else {
        mark(
            out,
            id::REFRESH_REVOKED,
            0.95,
            vec![format!(
                "OauthToken in {} has no approval of this user for {app} as old as this token ({when} {}): its approval is gone, with {} newer ones live",
                facts.org,
                fmt_ms(first_known),
                rows.len()
            )],
        );
        demote(out, id::REFRESH_APPROVAL_LIMIT_EVICTED);
    }
}

/// The app's refresh token policy fields: a validity period of 0 expires every refresh token
/// at once; another period is shown on the policy causes (whether it is idle or absolute is
/// not in these fields).
fn policy(out: &mut Diagnosis, app: &serde_json::Value, facts: &OrgFacts) {
    let timed = app["OptionsRefreshTokenValidityMetric"].as_bool() == Some(true);
    let period = app["RefreshTokenValidityPeriod"].as_i64();
    let id = app["Id"].as_str().unwrap_or("");
    match (timed, period) {
        (true, Some(0)) => mark(
            out,
            id::REFRESH_POLICY_IMMEDIATE_EXPIRY,
            0.97,
            vec![format!(
                "ConnectedApplication {id} ({}) in {}: refresh token validity period 0, every refresh token expires at once",
                facts.app, facts.org
            )],
        ),
        (true, Some(hours)) => {
            for finding in out.causes.iter_mut().filter(|f| {
                matches!(
                    f.id,
                    id::REFRESH_POLICY_IDLE_EXPIRY | id::REFRESH_POLICY_ABSOLUTE_EXPIRY
                )
            }) {
                finding.evidence.push(format!(
                    "ConnectedApplication {id} ({}): refresh tokens expire after {hours} h (idle or absolute)",
                    facts.app
                ));
            }
        }
        _ => {}
    }
}

/// Makes `id` a confirmed cause (added if absent), with the records first in its evidence.
fn mark(out: &mut Diagnosis, id: &'static str, confidence: f64, records: Vec<String>) {
    match out.causes.iter_mut().find(|f| f.id == id) {
        Some(found) => {
            found.confidence = found.confidence.max(confidence);
            found.basis = Basis::Confirmed;
            let mut evidence = records;
            evidence.append(&mut found.evidence);
            found.evidence = evidence;
        }
        None => out.causes.push(Finding {
            id,
            confidence,
            basis: Basis::Confirmed,
            evidence: records,
        }),
    }
}

/// The records refute `id`: it stays listed, far down.
fn demote(out: &mut Diagnosis, id: &str) {
    if let Some(found) = out.causes.iter_mut().find(|f| f.id == id) {
        found.confidence = found.confidence.min(0.1);
        found
            .evidence
            .push("the org's OauthToken records do not bear this out".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_000_000_000;
    const DAY: i64 = 86_400_000;

    fn token(issued_by: &str) -> TokenHistory {
        TokenHistory {
            host: "login.salesforce.com".into(),
            instance_host: None,
            client_id: "3MVG9web".into(),
            org_id: Some("00D000000000001".into()),
            user_id: Some("005000000000001".into()),
            scope: None,
            issued_at: T,
            issued_by: issued_by.into(),
            uses: 1,
            last_success: Some(T),
            rotated_at: None,
            newer_approvals: Vec::new(),
        }
    }

    fn approval(i: i64, created: i64) -> Approval {
        Approval {
            id: format!("0CQ00000000000{i}"),
            user_id: "005000000000001".into(),
            app: "Acme Sync".into(),
            created,
            last_used: None,
            use_count: 0,
        }
    }

    fn priors() -> Diagnosis {
        let prior = |id, confidence| Finding {
            id,
            confidence,
            basis: Basis::Prior,
            evidence: vec!["not observed: ...".into()],
        };
        Diagnosis {
            causes: vec![
                prior("sf.refresh.approval_limit_evicted", 0.4),
                prior("sf.refresh.revoked", 0.35),
            ],
            ..Diagnosis::default()
        }
    }

    fn facts(rows: Vec<Approval>) -> OrgFacts {
        OrgFacts {
            org: "acme.my.salesforce.com".into(),
            app: "Acme Sync".into(),
            approvals: Some(rows),
            user: None,
            logins: None,
            app_policy: None,
        }
    }

    #[test]
    fn five_newer_approvals_confirm_an_eviction_with_their_dates() {
        let rows: Vec<Approval> = (1..=5).map(|i| approval(i, T + i * DAY)).collect();
        let d = confirm(&priors(), &token(UNSEEN), &facts(rows), 5, T + 6 * DAY);
        let top = d.top().unwrap();
        assert_eq!(top.id, "sf.refresh.approval_limit_evicted");
        assert_eq!(top.basis, Basis::Confirmed);
        assert!(
            top.evidence[0].contains(&fmt_ms(T + 5 * DAY)),
            "{:?}",
            top.evidence
        );
        assert!(
            d.causes
                .iter()
                .any(|c| c.id == "sf.refresh.revoked" && c.confidence <= 0.1)
        );
    }

    #[test]
    fn no_approval_as_old_as_the_token_and_few_newer_is_a_revocation() {
        let d = confirm(
            &priors(),
            &token("authorization_code"),
            &facts(vec![]),
            5,
            T,
        );
        assert_eq!(d.top().unwrap().id, "sf.refresh.revoked");
        assert_eq!(d.top().unwrap().basis, Basis::Confirmed);
    }

    #[test]
    fn the_tokens_own_approval_still_live_refutes_eviction_and_revocation() {
        let rows = vec![approval(1, T + 500)];
        let d = confirm(
            &priors(),
            &token("authorization_code"),
            &facts(rows),
            5,
            T + 40 * DAY,
        );
        assert_eq!(d.top().unwrap().id, "sf.refresh.policy_idle_expiry");
        assert!(
            d.causes
                .iter()
                .filter(|c| c.id != "sf.refresh.policy_idle_expiry")
                .all(|c| c.confidence <= 0.1)
        );
    }

    #[test]
    fn an_older_row_of_an_unseen_token_decides_nothing() {
        let rows = vec![approval(1, T - DAY)];
        let before = priors();
        let d = confirm(&before, &token(UNSEEN), &facts(rows), 5, T);
        assert_eq!(d, before);
    }

    #[test]
    fn failed_logins_of_the_user_are_shown_on_the_top_cause() {
        let login = |user: &str, status: &str| super::super::LoginRow {
            user_id: user.into(),
            at: T,
            status: status.into(),
            application: "Acme Sync".into(),
        };
        let facts = OrgFacts {
            logins: Some(vec![
                login("005000000000001", "Failed: Not approved for access"),
                login("005000000000001", "Success"),
                login("005000000000001", "User is frozen"),
                login("005000000000999", "Invalid password"),
            ]),
            ..facts(vec![])
        };
        let d = confirm(&priors(), &token("authorization_code"), &facts, 5, T);
        let top = d.top().unwrap();
        let evidence = top.evidence.join("\n");
        assert!(
            evidence.contains("`Failed: Not approved for access` in the last hour, last at 2025-11-24T16:00:00Z (Salesforce's LOGIN_STATUS list relates this status to `sf.app.user_not_approved`)"),
            "{evidence}"
        );
        // Unconfirmed: its text only.
        assert!(
            evidence.contains("`User is frozen` in the last hour, last at 2025-11-24T16:00:00Z\n")
                || evidence
                    .ends_with("`User is frozen` in the last hour, last at 2025-11-24T16:00:00Z"),
            "{evidence}"
        );
        assert!(!evidence.contains("Invalid password"), "{evidence}");
        assert!(!evidence.contains("Success"), "{evidence}");
        // Shown, never counted: the ranking is the one without logins.
        assert_eq!(top.basis, Basis::Confirmed);
        assert!(d.causes.iter().all(|c| c.id != "sf.app.user_not_approved"));
    }

    #[test]
    fn an_app_that_expires_tokens_at_once_is_confirmed_from_its_policy_fields() {
        let facts = OrgFacts {
            app_policy: Some(serde_json::json!({
                "Id": "0H4000000000001AAA",
                "OptionsRefreshTokenValidityMetric": true,
                "RefreshTokenValidityPeriod": 0
            })),
            ..facts(vec![approval(1, T)])
        };
        let d = confirm(&priors(), &token("authorization_code"), &facts, 5, T);
        assert_eq!(d.top().unwrap().id, "sf.refresh.policy_immediate_expiry");
        assert_eq!(d.top().unwrap().basis, Basis::Confirmed);
    }

    #[test]
    fn an_inactive_user_is_confirmed() {
        let facts = OrgFacts {
            user: Some(UserRecord {
                id: "005000000000001".into(),
                username: "alice@acme.com".into(),
                active: false,
                ..UserRecord::default()
            }),
            ..OrgFacts::default()
        };
        let d = confirm(&priors(), &token(UNSEEN), &facts, 5, T);
        assert_eq!(d.top().unwrap().id, "sf.user.inactive");
        assert_eq!(d.top().unwrap().basis, Basis::Confirmed);
    }
}
