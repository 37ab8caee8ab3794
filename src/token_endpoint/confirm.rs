//! The confirm phase: a refresh failure the ledger cannot decide is checked against the org's
//! own records when an org connection serves it. The application waits at most
//! `--confirm-timeout`; a confirmation that lands later is logged as a `confirmed` event with
//! the same `event_id`.
//!
//! Must never: match a never-seen token to a user by guesswork (the user comes from the
//! ledger), or hold the application's answer past the budget.

use std::sync::Arc;

use super::Observer;
use crate::diagnose::{Basis, Diagnosis};
use crate::ledger::LedgerView;
use crate::oauth::{RequestFacts, ResponseFacts};
use crate::org::{self, OrgFacts};

/// Whether the diagnosis needs the org: an E1 refresh whose causes no recorded fact decides.
fn undecided(facts: &RequestFacts, outcome: &ResponseFacts, diagnosis: &Diagnosis) -> bool {
    facts.grant == crate::oauth::GrantType::RefreshToken
        && outcome.error_is("invalid_grant")
        && outcome.description_is("expired access/refresh token")
        && !diagnosis
            .causes
            .iter()
            .any(|c| c.basis != Basis::Prior && c.confidence >= 0.9)
}

/// The diagnosis, confirmed or re-ranked by the org's records when they arrive in time.
pub(super) async fn phase(
    observer: &Arc<Observer>,
    facts: &RequestFacts,
    outcome: &ResponseFacts,
    view: &LedgerView,
    diagnosis: Diagnosis,
    event_id: &str,
    now: i64,
) -> Diagnosis {
    let Some(orgs) = observer.orgs.as_ref() else {
        return diagnosis;
    };
    if !undecided(facts, outcome, &diagnosis) {
        return diagnosis;
    }
    let Some(ask) = Ask::for_token(orgs, facts, view) else {
        return diagnosis;
    };
    let limit = view.approval_limit;
    if let Some(facts) = ask.conn.recent_facts(&ask.user_id, &ask.app) {
        return org::confirm(&diagnosis, &ask.token, &facts, limit, now);
    }
    // Approvals, User, UserLogin, LoginHistory and ConnectedApplication.
    if !ask.conn.may_query(5) {
        ask.conn.tell_once(
            "rate_limited",
            "more confirmations than the per-minute query budget: the rest are answered unconfirmed",
            "nothing to fix unless this lasts: a client is retrying failures at a high rate",
        );
        return diagnosis;
    }
    let slow = ask.conn.clone();
    let unconfirmed = diagnosis.clone();
    let mut work = tokio::spawn(ask.confirm(unconfirmed, limit, now));
    match tokio::time::timeout(observer.confirm_timeout, &mut work).await {
        Ok(Ok(confirmed)) => confirmed,
        Ok(Err(_)) => diagnosis,
        Err(_) => {
            slow.tell_once(
                "slow",
                &format!(
                    "the org's records did not arrive within the confirmation budget of {} s: the answer went unconfirmed; its confirmation follows in the log as a `confirmed` event",
                    observer.confirm_timeout.as_secs_f64()
                ),
                "raise --confirm-timeout if the org is always this slow to answer; otherwise nothing to fix",
            );
            let event_id = event_id.to_owned();
            tokio::spawn(async move {
                if let Ok(confirmed) = work.await {
                    log_late(&event_id, &confirmed);
                }
            });
            diagnosis
        }
    }
}

/// What to ask an org about: the token the ledger knows, its user, its app by name, and the
/// connection that serves its org.
struct Ask {
    conn: Arc<org::OrgConnection>,
    token: crate::ledger::TokenHistory,
    user_id: String,
    app: String,
}

impl Ask {
    fn for_token(orgs: &org::Orgs, facts: &RequestFacts, view: &LedgerView) -> Option<Self> {
        let token = view.token.clone()?;
        let user_id = token.user_id.clone()?;
        let hosts: Vec<&str> = [
            token.instance_host.as_deref(),
            Some(token.host.as_str()),
            Some(facts.host.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let conn = orgs.for_token(&hosts, token.org_id.as_deref())?;
        let Some(app) = conn.app_name(&token.client_id).map(str::to_owned) else {
            conn.tell_once(
                &format!("app:{}", token.client_id),
                &format!(
                    "no connected app name for client id {}: its OauthToken rows cannot be read",
                    crate::oauth::short_client_id(&token.client_id)
                ),
                "add the consumer key and the app's name under [orgs.apps]",
            );
            return None;
        };
        Some(Self {
            conn,
            token,
            user_id,
            app,
        })
    }

    /// Reads the org's records (keeping them for the next failure of this user and app) and
    /// confirms or re-ranks the diagnosis with them.
    async fn confirm(self, unconfirmed: Diagnosis, limit: usize, now: i64) -> Diagnosis {
        let Self {
            conn,
            token,
            user_id,
            app,
        } = self;
        let facts = OrgFacts {
            org: conn.config.host.clone(),
            approvals: read(&conn, org::records::approvals(&conn, &user_id, &app).await),
            user: read(
                &conn,
                org::records::user(&conn, org::records::UserKey::Id(&user_id)).await,
            )
            .flatten(),
            logins: read(&conn, org::records::logins(&conn, now - 3_600_000).await),
            app_policy: read(&conn, org::records::app_policies(&conn, &[&app]).await)
                .and_then(|rows| rows.into_iter().next()),
            app: app.clone(),
        };
        if facts.approvals.is_some() {
            conn.keep_facts(&user_id, &app, facts.clone());
        }
        org::confirm(&unconfirmed, &token, &facts, limit, now)
    }
}

/// A query's rows, or `None` with the connection's problem logged once.
fn read<T>(conn: &org::OrgConnection, result: Result<T, org::OrgError>) -> Option<T> {
    match result {
        Ok(rows) => Some(rows),
        Err(e) => {
            let (kind, fix) = lack(&e);
            conn.tell_once(&kind, &e.to_string(), &fix);
            None
        }
    }
}

/// What the org connection lacks, as a kind logged once and the fix of it. A kind names the
/// lack, not the query that met it: one lack fails every query alike.
fn lack(e: &org::OrgError) -> (String, String) {
    match e {
        org::OrgError::Login { cause, .. } => (
            format!("login:{cause}"),
            format!("the org connection's own login failed as {cause}: see that cause's fix"),
        ),
        // A fresh session refused: the login already was retried once for this query.
        org::OrgError::Refused { status: 401, .. } => (
            "session_refused".to_owned(),
            "the org refuses the integration user's sessions right after its login: check the user's session settings (sessions locked to an IP, high assurance) and that its profile has API Enabled".to_owned(),
        ),
        org::OrgError::Refused { status: 403, .. } => (
            "forbidden".to_owned(),
            "give the integration user's profile API Enabled and View Setup and Configuration".to_owned(),
        ),
        // Salesforce answers an object the user may not see as one that does not exist.
        org::OrgError::Refused { object, .. } => (
            format!("refused:{object}"),
            format!(
                "grant the integration user API Enabled and {} to read {object}",
                permission_for(object)
            ),
        ),
        org::OrgError::Malformed { .. } => (
            "malformed".to_owned(),
            "the org's API answered with something that is not a query answer: check that the host is the org's My Domain and that nothing between the proxy and Salesforce rewrites or cuts answers".to_owned(),
        ),
        org::OrgError::Key(_) => (
            "key".to_owned(),
            "check the org's private_key: it must be the RSA key of the app's certificate".to_owned(),
        ),
        org::OrgError::Unreachable { .. } => (
            "unavailable".to_owned(),
            "check the org's host and the proxy's network path to it".to_owned(),
        ),
    }
}

/// The system permissions that show an object, per Salesforce's object reference.
fn permission_for(object: &str) -> &'static str {
    match object {
        "LoginHistory" => "Manage Users or Monitor Login History",
        "UserLogin" => "Manage Users",
        _ => "Customize Application or Manage Users",
    }
}

fn log_late(event_id: &str, confirmed: &Diagnosis) {
    let Some(top) = confirmed.top() else {
        return;
    };
    tracing::info!(
        event = "confirmed",
        event_id,
        cause = top.id,
        basis = top.basis.as_str(),
        causes = confirmed.log_value().as_str(),
        evidence = top.evidence.join("; "),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(object: &'static str, status: u16) -> org::OrgError {
        org::OrgError::Refused {
            object,
            status,
            code: String::new(),
            message: String::new(),
        }
    }

    #[test]
    fn a_lack_that_fails_every_query_is_one_kind() {
        for status in [401, 403] {
            assert_eq!(
                lack(&refused("OauthToken", status)).0,
                lack(&refused("LoginHistory", status)).0
            );
        }
    }

    #[test]
    fn an_object_hidden_from_the_user_names_the_permission_that_shows_it() {
        let (kind, fix) = lack(&refused("LoginHistory", 400));
        assert_eq!(kind, "refused:LoginHistory");
        assert!(fix.contains("Monitor Login History"), "{fix}");
    }

    #[test]
    fn a_malformed_answer_is_not_sent_to_check_the_network() {
        let (kind, fix) = lack(&org::OrgError::Malformed {
            host: "acme.my.salesforce.com".into(),
            reason: "the OauthToken answer is not JSON".into(),
        });
        assert_eq!(kind, "malformed");
        assert!(!fix.contains("network"), "{fix}");
    }
}
