//! The username-password family: bad credentials, a flow the org blocks, a lockout coming.

use crate::diagnose::Findings;
use crate::diagnose::catalogue::id;
use crate::diagnose::warnings::PASSWORD_WARN_AFTER;
use crate::oauth::GrantType;

use super::Case;
use super::evidence::{NO_HISTORY, grant_name};

/// `authentication failure` means a refused password only on a password grant; elsewhere
/// the user's, org's or app's settings refused the login and Login History tells which.
pub(super) fn authentication_failure(c: &Case, f: &mut Findings) {
    if c.req.grant == GrantType::Password {
        password_failure(c, f);
        return;
    }
    f.add(id::UNKNOWN, 0.5, vec![format!(
        "`authentication failure` on a {} exchange: the user's, org's or app's settings refused the login; Login History shows which",
        grant_name(c.req)
    )]);
}

fn password_failure(c: &Case, f: &mut Findings) {
    let (req, view) = (c.req, c.view);
    let consecutive = view.password_failures + 1;
    let who = req.username.as_deref().unwrap_or("(no username)");
    if !view.watched {
        f.add(
            id::PASSWORD_BAD_CREDENTIALS,
            0.8,
            vec![
                "Salesforce refused the username, the password or the security token appended to it"
                    .into(),
                NO_HISTORY.into(),
            ],
        );
        return;
    }
    f.add(
        id::PASSWORD_BAD_CREDENTIALS,
        0.8,
        vec![format!(
            "username {who}: {consecutive} consecutive failure(s)"
        )],
    );
    if !view.password_success_at_host && view.password_failures_at_host >= 2 {
        f.add(
            id::PASSWORD_FLOW_BLOCKED,
            0.7,
            vec![format!(
                "all {} password logins seen at {} failed and none ever succeeded",
                view.password_failures_at_host + 1,
                req.host
            )],
        );
    }
    if consecutive >= PASSWORD_WARN_AFTER {
        f.add(
            id::PASSWORD_LOCKOUT_RISK,
            0.6,
            vec![format!("{consecutive} consecutive failures for {who}")],
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::diagnose::Basis;
    use crate::diagnose::catalogue::id;
    use crate::diagnose::testing::{T0, Wire, ids};

    const LOGIN: &str = "grant_type=password&client_id=3MVG9x&username=ann@example.com&password=p";

    #[test]
    fn a_third_failure_in_a_row_risks_a_lockout() {
        let wire = Wire::new();
        for i in 0..2 {
            wire.fails(
                LOGIN,
                "invalid_grant",
                "authentication failure",
                T0 - 10_000 + i,
            );
        }
        let d = wire.diagnose(LOGIN, 400, "invalid_grant", "authentication failure");
        assert_eq!(
            ids(&d),
            [
                id::PASSWORD_BAD_CREDENTIALS,
                id::PASSWORD_FLOW_BLOCKED,
                id::PASSWORD_LOCKOUT_RISK
            ]
        );
    }

    #[test]
    fn an_authentication_failure_on_another_grant_is_not_a_password() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&client_id=3MVG9x",
            400,
            "invalid_grant",
            "authentication failure",
        );
        assert_eq!(wire.top(&d), (id::UNKNOWN, Basis::Evidence));
    }
}
