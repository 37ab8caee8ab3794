//! The JWT bearer family: the assertion (expired, unsigned, wrongly addressed), the user's
//! pre-authorization, and the hosts an External Client App answers at.

use crate::diagnose::Findings;
use crate::diagnose::catalogue::id;
use crate::diagnose::hosts::HostKind;
use crate::ledger::fmt_ms;

use super::Case;

/// A new user, org or pre-authorization reaches every Salesforce server within minutes.
const PROPAGATION_MS: i64 = 15 * 60_000;

pub(super) fn assertion_expired(c: &Case, f: &mut Findings) {
    let (req, now) = (c.req, c.now);
    let Some(exp) = req.jwt.as_ref().and_then(|j| j.exp) else {
        f.add(
            id::JWT_ASSERTION_EXPIRED,
            0.6,
            vec!["the assertion has no numeric exp".into()],
        );
        return;
    };
    let behind_s = (now as f64 / 1000.0 - exp).round() as i64;
    if behind_s >= 0 {
        let mut evidence = vec![format!(
            "exp = {} ({exp:.0}), {behind_s} s before Salesforce's clock",
            fmt_ms((exp * 1000.0) as i64)
        )];
        if (3600..=14 * 3600).contains(&behind_s) {
            evidence.push(format!(
                "{:.1} h behind: an exp computed from local time instead of UTC?",
                behind_s as f64 / 3600.0
            ));
        }
        f.add(id::JWT_ASSERTION_EXPIRED, 0.97, evidence);
    } else {
        f.add(id::JWT_ASSERTION_EXPIRED, 0.6, vec![format!(
            "exp is {} s ahead of the time Salesforce sent: a clock difference, or an assertion cached and replayed?",
            -behind_s
        )]);
    }
}

pub(super) fn invalid_assertion(c: &Case, f: &mut Findings) {
    let req = c.req;
    if req.jwt_malformed {
        f.add(id::JWT_INVALID_SIGNATURE, 0.95, vec!["the assertion is not a decodable JWT (three base64url parts, JSON header and claims)".into()]);
        return;
    }
    let Some(jwt) = &req.jwt else {
        f.add(
            id::JWT_INVALID_SIGNATURE,
            0.9,
            vec!["the request carried no assertion".into()],
        );
        return;
    };
    if jwt.alg.as_deref() != Some("RS256") {
        f.add(
            id::JWT_INVALID_SIGNATURE,
            0.97,
            vec![format!(
                "alg is {}, Salesforce accepts RS256 only",
                jwt.alg.as_deref().unwrap_or("(absent)")
            )],
        );
        return;
    }
    let missing: Vec<&str> = [
        ("iss", jwt.iss.is_none()),
        ("sub", jwt.sub.is_none()),
        ("aud", jwt.aud.is_empty()),
        ("exp", jwt.exp.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(n, _)| *n)
    .collect();
    if !missing.is_empty() {
        f.add(
            id::JWT_INVALID_SIGNATURE,
            0.95,
            vec![format!(
                "missing or ill-typed claims: {}",
                missing.join(", ")
            )],
        );
        return;
    }
    f.add(id::JWT_INVALID_SIGNATURE, 0.8, vec!["header and claims look right: the signature does not verify against the certificate uploaded on the app".into()]);
}

pub(super) fn audience(c: &Case, f: &mut Findings) {
    let req = c.req;
    let aud = req
        .jwt
        .as_ref()
        .map(|j| j.aud.join(", "))
        .unwrap_or_default();
    let expected = match HostKind::of(&req.host) {
        HostKind::Login => "https://login.salesforce.com".to_owned(),
        HostKind::Test => "https://test.salesforce.com".to_owned(),
        HostKind::MyDomain { sandbox: true, .. } => {
            format!("https://test.salesforce.com or https://{}", req.host)
        }
        HostKind::MyDomain { sandbox: false, .. } => {
            format!("https://login.salesforce.com or https://{}", req.host)
        }
        HostKind::Site => "the site URL (https://host/path)".to_owned(),
        HostKind::Other => "the URL of the host called".to_owned(),
    };
    f.add(
        id::JWT_AUDIENCE_INVALID,
        0.95,
        vec![format!(
            "aud = {aud}; at {} Salesforce expects {expected}",
            req.host
        )],
    );
}

pub(super) fn not_approved(c: &Case, f: &mut Findings) {
    let (req, view, now) = (c.req, c.view, c.now);
    let jwt = req.jwt.clone().unwrap_or_default();
    let sub = jwt.sub.as_deref().unwrap_or("(none)");
    let others_ok = view.jwt_other_subjects_ok;
    f.add(
        id::JWT_NOT_PREAUTHORIZED,
        if others_ok > 0 { 0.6 } else { 0.9 },
        vec![format!(
            "sub = {sub} at {}: no admin pre-authorization and no earlier approval of this app that issued a refresh token",
            req.host
        )],
    );
    if others_ok > 0 {
        f.add(
            id::JWT_IDENTITY_PROPAGATING,
            0.8,
            vec![format!(
                "the same app logged in {others_ok} other users at {} by JWT bearer: its setup works; a user or pre-authorization added minutes ago may not have reached every server",
                req.host
            )],
        );
        return;
    }
    if !view.watched {
        return;
    }
    let recent = |first: Option<i64>| first.is_none_or(|at| now - at <= PROPAGATION_MS);
    let mut evidence = Vec::new();
    if recent(view.subject_first_seen) {
        evidence.push(match view.subject_first_seen {
            Some(at) => format!("sub {sub} was first seen at {}, minutes ago", fmt_ms(at)),
            None => format!("sub {sub} is seen for the first time"),
        });
    }
    if recent(view.client_first_seen) {
        evidence.push(match view.client_first_seen {
            Some(at) => format!("this app was first seen at {}, minutes ago", fmt_ms(at)),
            None => "this app is seen for the first time".into(),
        });
    }
    if !evidence.is_empty() {
        evidence.push("a new user, org or pre-authorization can take minutes to reach every Salesforce server".into());
        f.add(id::JWT_IDENTITY_PROPAGATING, 0.45, evidence);
    }
}

pub(super) fn refresh_scope_missing(c: &Case, f: &mut Findings) {
    f.add(
        id::JWT_REFRESH_SCOPE_MISSING,
        0.95,
        vec![format!(
            "app {}: Salesforce requires the refresh_token scope and a pre-authorized user for this JWT bearer login",
            c.req.client_id.as_deref().unwrap_or("(unknown)")
        )],
    );
}

/// `app_not_found` for an External Client App called through login/test.
pub(super) fn app_not_found(c: &Case, f: &mut Findings) {
    let req = c.req;
    let aud_generic = req.jwt.as_ref().is_some_and(|j| {
        j.aud
            .iter()
            .any(|a| a == "https://login.salesforce.com" || a == "https://test.salesforce.com")
    });
    let host_generic = HostKind::of(&req.host).is_generic();
    let mut evidence = Vec::new();
    if host_generic {
        evidence.push(format!(
            "the request went to {}, not the org's My Domain",
            req.host
        ));
    }
    if aud_generic {
        evidence.push("the assertion's aud is login/test, not the My Domain URL".into());
    }
    let confidence = if evidence.is_empty() { 0.7 } else { 0.95 };
    if evidence.is_empty() {
        evidence.push("External Client Apps resolve only through their org's My Domain".into());
    }
    f.add(id::JWT_EXTERNAL_CLIENT_APP_HOST, confidence, evidence);
}

#[cfg(test)]
mod tests {
    use crate::diagnose::Basis;
    use crate::diagnose::catalogue::id;
    use crate::diagnose::testing::{T0, Wire, ids};

    const JWT: &str = "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&client_id=3MVG9x";

    #[test]
    fn a_missing_assertion_is_an_invalid_signature() {
        let wire = Wire::new();
        let d = wire.diagnose(JWT, 400, "invalid_grant", "invalid assertion");
        assert_eq!(wire.top(&d), (id::JWT_INVALID_SIGNATURE, Basis::Evidence));
        assert_eq!(d.causes[0].evidence, ["the request carried no assertion"]);
    }

    #[test]
    fn an_expired_code_answer_on_a_jwt_login_is_an_expired_assertion() {
        let wire = Wire::new();
        let d = wire.diagnose(JWT, 400, "invalid_grant", "expired authorization code");
        assert_eq!(ids(&d), [id::JWT_ASSERTION_EXPIRED]);
    }

    #[test]
    fn a_subject_never_seen_before_may_still_be_propagating() {
        let wire = Wire::new();
        let d = wire.diagnose_at(
            JWT,
            400,
            "invalid_grant",
            "user hasn't approved this consumer",
            T0,
        );
        assert_eq!(
            ids(&d),
            [id::JWT_NOT_PREAUTHORIZED, id::JWT_IDENTITY_PROPAGATING]
        );
    }

    #[test]
    fn a_wrong_audience_says_what_the_host_expects() {
        let wire = Wire::at("test.salesforce.com");
        let d = wire.diagnose(JWT, 400, "invalid_grant", "audience is invalid");
        assert_eq!(ids(&d), [id::JWT_AUDIENCE_INVALID]);
        assert!(
            d.causes[0].evidence[0].ends_with("Salesforce expects https://test.salesforce.com")
        );
    }

    #[test]
    fn an_external_client_app_at_login_names_the_host() {
        let wire = Wire::new();
        let d = wire.diagnose(JWT, 400, "app_not_found", "");
        assert_eq!(
            wire.top(&d),
            (id::JWT_EXTERNAL_CLIENT_APP_HOST, Basis::Evidence)
        );
        assert!(d.causes[0].confidence >= 0.95);
    }
}
