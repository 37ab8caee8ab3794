//! Causes certain from the mechanics alone: the proxy's own failure, a Salesforce outage, a
//! request that is not a token request, a `scope` where none may go.

use crate::diagnose::Findings;
use crate::diagnose::catalogue::id;
use crate::oauth::{GrantType, ProxyFailure, RequestFacts};

use super::Case;
use super::evidence::grant_name;

/// Decides the exchange when the mechanics explain it; then no table row applies.
pub(super) fn decided(c: &Case, f: &mut Findings) -> bool {
    let resp = c.resp;
    match &resp.proxy_failure {
        Some(ProxyFailure::Unreachable(reason)) => {
            f.add(
                id::GD_UPSTREAM_UNREACHABLE,
                0.97,
                vec![
                    format!("grantdoctor answered {} itself: {reason}", resp.status),
                    "Salesforce never saw this request: the proxy's own network path failed".into(),
                ],
            );
            return true;
        }
        Some(ProxyFailure::Failed(reason)) => {
            f.add(
                id::TRANSIENT,
                0.8,
                vec![format!(
                    "grantdoctor answered {} itself: {reason}",
                    resp.status
                )],
            );
            return true;
        }
        None => {}
    }
    if resp.description_is("scope parameter not supported") {
        scope_on_refresh(c.req, f);
        return true;
    }
    if resp.status >= 500 || !resp.json || resp.error_is("unknown_error") {
        let what = if !resp.json {
            format!("HTTP {} with a body that is not a JSON object", resp.status)
        } else {
            format!(
                "HTTP {} {}",
                resp.status,
                resp.error.as_deref().unwrap_or("")
            )
        };
        f.add(id::TRANSIENT, 0.85, vec![what]);
        return true;
    }
    false
}

/// A request that is not a token request as Salesforce takes it.
pub(super) fn malformed(c: &Case, f: &mut Findings) {
    let req = c.req;
    let mut evidence = Vec::new();
    if !req.method_post {
        evidence.push("the request was not a POST".to_owned());
    }
    if req.json_body {
        evidence.push(
            "the body is JSON; the token endpoint takes application/x-www-form-urlencoded"
                .to_owned(),
        );
    } else if !req.form_encoded {
        evidence.push(format!(
            "Content-Type is {}",
            req.content_type.as_deref().unwrap_or("absent")
        ));
    }
    match (req.grant, req.grant_type.as_deref()) {
        (GrantType::Missing, _) => evidence.push("no grant_type parameter".into()),
        (GrantType::Other, Some(g)) => {
            evidence.push(format!("grant_type `{g}` is not a Salesforce grant type"))
        }
        _ => {}
    }
    let confidence = if evidence.is_empty() { 0.6 } else { 0.95 };
    if evidence.is_empty() {
        evidence
            .push("the request looks well-formed: is the grant type enabled on this app?".into());
    }
    f.add(id::REQUEST_MALFORMED, confidence, evidence);
}

fn scope_on_refresh(req: &RequestFacts, f: &mut Findings) {
    if req.has_scope {
        f.add(
            id::REQUEST_SCOPE_ON_REFRESH,
            0.97,
            vec![format!(
                "the {} request carried a `scope` parameter, which Salesforce refuses there",
                grant_name(req)
            )],
        );
    } else {
        f.add(
            id::REQUEST_SCOPE_ON_REFRESH,
            0.7,
            vec!["Salesforce says a scope was sent, but the request grantdoctor forwarded had no `scope` parameter (a query string?)".into()],
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::diagnose::Basis;
    use crate::diagnose::catalogue::id;
    use crate::diagnose::testing::{Wire, ids};

    #[test]
    fn a_server_error_is_transient_whatever_the_error_says() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=refresh_token&refresh_token=x",
            503,
            "invalid_grant",
            "",
        );
        assert_eq!(wire.top(&d), (id::TRANSIENT, Basis::Evidence));
    }

    #[test]
    fn a_scope_sent_on_a_refresh_is_named_with_certainty() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=refresh_token&refresh_token=x&scope=api",
            400,
            "invalid_request",
            "scope parameter not supported",
        );
        assert_eq!(ids(&d), [id::REQUEST_SCOPE_ON_REFRESH]);
        assert!(d.causes[0].confidence >= 0.97);
    }

    #[test]
    fn an_unknown_grant_type_is_a_malformed_request() {
        let wire = Wire::new();
        let d = wire.diagnose(
            "grant_type=magic",
            400,
            "unsupported_grant_type",
            "grant type not supported",
        );
        assert_eq!(wire.top(&d), (id::REQUEST_MALFORMED, Basis::Evidence));
        assert!(d.causes[0].evidence.iter().any(|e| e.contains("`magic`")));
    }
}
