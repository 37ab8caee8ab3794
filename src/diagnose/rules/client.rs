//! The client family: the consumer key and secret, and the client credentials flow's own
//! settings (its scopes, its My Domain, its Run As user).

use crate::diagnose::Findings;
use crate::diagnose::catalogue::id;
use crate::diagnose::hosts::HostKind;
use crate::ledger::fmt_ms;
use crate::oauth::GrantType;

use super::Case;
use super::evidence::{history_line, wrong_host};

pub(super) fn invalid_client(c: &Case, f: &mut Findings) {
    let (req, view) = (c.req, c.view);
    let client = req.client_id.as_deref().unwrap_or("(none)");
    let evidence = if req.has_client_secret {
        format!("a client secret was sent for client_id {client}")
    } else {
        "no client secret was sent".into()
    };
    f.add(id::CLIENT_INVALID_SECRET, 0.9, vec![evidence]);
    let Some(history) = &view.secret else {
        return;
    };
    let mut evidence = Vec::new();
    if let Some(at) = history.other_ok_at {
        evidence.push(format!(
            "client_id {client} last succeeded at {} with another client secret than the one sent now",
            fmt_ms(at)
        ));
    }
    if let Some(at) = history.same_ok_at {
        evidence.push(format!(
            "this same client secret worked for client_id {client} at {}: Salesforce no longer accepts it, so it was rotated",
            fmt_ms(at)
        ));
    }
    if !evidence.is_empty() {
        f.add(id::CLIENT_SECRET_CHANGED, 0.93, evidence);
    }
}

pub(super) fn unknown_client_id(c: &Case, f: &mut Findings) {
    let req = c.req;
    let key = req.client_id.as_deref().unwrap_or("(none)");
    if req.grant == GrantType::JwtBearer {
        f.add(
            id::JWT_UNKNOWN_ISSUER,
            0.92,
            vec![format!(
                "iss = {key} is not a consumer key known at {}",
                req.host
            )],
        );
    }
    f.add(id::CLIENT_UNKNOWN_CLIENT_ID, 0.88, vec![format!("client_id {key} is unknown at {} (a production app at a sandbox host, or the reverse?)", req.host)]);
    // A known refresh token sent to a host of another org: the host is the mistake.
    if let Some(token) = &c.view.token
        && let Some(line) = wrong_host(token, &req.host)
    {
        f.add(
            id::REFRESH_WRONG_HOST,
            0.93,
            vec![line, history_line(token)],
        );
    }
}

fn client_line<'a>(c: &Case<'a>) -> &'a str {
    c.req.client_id.as_deref().unwrap_or("(unknown)")
}

pub(super) fn cc_no_valid_scopes(c: &Case, f: &mut Findings) {
    f.add(
        id::CC_NO_VALID_SCOPES,
        0.95,
        vec![format!(
            "app {}: none of its selected scopes is allowed for the client credentials flow (it needs `api`)",
            client_line(c)
        )],
    );
}

pub(super) fn cc_wrong_domain(c: &Case, f: &mut Findings) {
    let certain = HostKind::of(&c.req.host).is_generic();
    f.add(
        id::CC_WRONG_DOMAIN,
        if certain { 0.97 } else { 0.8 },
        vec![format!(
            "the client credentials request went to {}, which is not the org's My Domain",
            c.req.host
        )],
    );
}

pub(super) fn cc_no_run_as_user(c: &Case, f: &mut Findings) {
    f.add(
        id::CC_NO_RUN_AS_USER,
        0.95,
        vec![format!(
            "app {}: client credentials flow off or no Run As user",
            client_line(c)
        )],
    );
}

#[cfg(test)]
mod tests {
    use crate::diagnose::Basis;
    use crate::diagnose::catalogue::id;
    use crate::diagnose::testing::{T0, Wire, ids};

    #[test]
    fn a_secret_that_worked_and_no_longer_does_was_rotated() {
        let wire = Wire::new();
        let body = "grant_type=client_credentials&client_id=3MVG9x&client_secret=old";
        wire.succeeds(body, None, T0 - 60_000);
        let d = wire.diagnose(body, 400, "invalid_client", "invalid client credentials");
        assert_eq!(
            ids(&d),
            [id::CLIENT_SECRET_CHANGED, id::CLIENT_INVALID_SECRET]
        );
    }

    #[test]
    fn an_unknown_issuer_comes_before_the_unknown_client_id_on_a_jwt_login() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&client_id=3MVG9x",
            400,
            "invalid_client_id",
            "client identifier invalid",
        );
        assert_eq!(
            ids(&d),
            [id::JWT_UNKNOWN_ISSUER, id::CLIENT_UNKNOWN_CLIENT_ID]
        );
    }

    #[test]
    fn client_credentials_at_login_is_certainly_the_wrong_domain() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=client_credentials&client_id=3MVG9x&client_secret=s",
            400,
            "invalid_grant",
            "request not supported on this domain",
        );
        assert_eq!(wire.top(&d), (id::CC_WRONG_DOMAIN, Basis::Evidence));
        assert!(d.causes[0].confidence >= 0.97);
    }
}
