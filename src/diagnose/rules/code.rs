//! The authorization-code family: a code expired or reused, a PKCE verifier that does not
//! match, a redirect URI that differs from the one used at `/authorize`.

use crate::diagnose::Findings;
use crate::diagnose::catalogue::id;
use crate::ledger::fmt_ms;
use crate::oauth::GrantType;

use super::Case;
use super::evidence::NO_HISTORY;

/// Salesforce answers `expired authorization code` for three grants; each means another thing.
pub(super) fn expired_by_grant(c: &Case, f: &mut Findings) {
    match c.req.grant {
        GrantType::RefreshToken => super::refresh::concurrent_refresh(c, f),
        GrantType::JwtBearer => super::jwt::assertion_expired(c, f),
        _ => code_expired(c, f),
    }
}

fn code_expired(c: &Case, f: &mut Findings) {
    let view = c.view;
    if !view.watched {
        f.prior(id::CODE_EXPIRED, 0.5, vec![NO_HISTORY.into()]);
        f.prior(id::CODE_REUSED, 0.4, vec![NO_HISTORY.into()]);
        return;
    }
    match view.code_redeemed_at {
        Some(at) => f.add(
            id::CODE_REUSED,
            0.97,
            vec![format!(
                "this authorization code was already exchanged successfully at {}",
                fmt_ms(at)
            )],
        ),
        None => {
            f.add(id::CODE_EXPIRED, 0.6, vec!["the code was not seen redeemed before: it expired (or was garbled) before this exchange".into()]);
            f.prior(
                id::CODE_REUSED,
                0.3,
                vec![
                    "not observed: an earlier exchange of this code (by another client or proxy?)"
                        .into(),
                ],
            );
        }
    }
}

pub(super) fn pkce_mismatch(c: &Case, f: &mut Findings) {
    let sent = c.req.has_code_verifier;
    let evidence = if sent {
        "the code_verifier sent does not match the code_challenge given at /authorize"
    } else {
        "the exchange carried no code_verifier, but the code was issued with a PKCE challenge"
    };
    f.add(
        id::CODE_PKCE_MISMATCH,
        if sent { 0.85 } else { 0.97 },
        vec![evidence.into()],
    );
}

pub(super) fn redirect_uri_mismatch(c: &Case, f: &mut Findings) {
    f.add(
        id::CODE_REDIRECT_URI_MISMATCH,
        0.92,
        vec![format!(
            "redirect_uri = {}",
            c.req.redirect_uri.as_deref().unwrap_or("(absent)")
        )],
    );
}

#[cfg(test)]
mod tests {
    use crate::diagnose::Basis;
    use crate::diagnose::catalogue::id;
    use crate::diagnose::testing::{T0, Wire, ids};

    const EXCHANGE: &str = "grant_type=authorization_code&client_id=3MVG9x&code=c1";

    #[test]
    fn a_code_seen_redeemed_before_is_reused() {
        let wire = Wire::new();
        wire.succeeds(EXCHANGE, Some("5Aep1"), T0 - 1000);
        let d = wire.diagnose(EXCHANGE, 400, "invalid_grant", "expired authorization code");
        assert_eq!(wire.top(&d), (id::CODE_REUSED, Basis::Evidence));
    }

    #[test]
    fn a_code_never_redeemed_expired_and_a_reuse_stays_a_prior() {
        let wire = Wire::new();
        let d = wire.diagnose(EXCHANGE, 400, "invalid_grant", "expired authorization code");
        assert_eq!(ids(&d), [id::CODE_EXPIRED, id::CODE_REUSED]);
        assert_eq!(d.causes[1].basis, Basis::Prior);
    }

    #[test]
    fn a_missing_verifier_is_a_certain_pkce_mismatch() {
        let wire = Wire::new();
        let d = wire.diagnose(EXCHANGE, 400, "invalid_grant", "invalid code verifier");
        assert_eq!(wire.top(&d), (id::CODE_PKCE_MISMATCH, Basis::Evidence));
        assert!(d.causes[0].confidence >= 0.97);
    }
}
