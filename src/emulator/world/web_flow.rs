//! The web-server flow in both halves: the browser half ([`World::authorize`], played by the
//! control API) that turns a login and approval into a code, and the `authorization_code`
//! grant that trades the code, once, for tokens — redirect URI and PKCE checked. Must never:
//! accept a code twice or past its lifetime, or skip the secret when no PKCE stands in for it.

use super::scopes::granted_scope;
use super::{CodeRecord, ControlError, HostCtx, TokenRequest, TokenSuccess, World, control};
use crate::emulator::errors::{self, OAuthError};
use crate::emulator::ids;
use crate::emulator::jwt;

impl World {
    /// The browser half of the web-server flow: the user logs in and approves; a code.
    pub fn authorize(
        &mut self,
        now: i64,
        client_id: &str,
        username: &str,
        scope: Option<&str>,
        redirect_uri: &str,
        challenge: Option<(String, String)>,
    ) -> Result<String, ControlError> {
        let Some(app) = self.apps.get(client_id) else {
            return control(format!("no app {client_id}"));
        };
        if !self.users.contains_key(&username.to_ascii_lowercase()) {
            return control(format!("no user {username}"));
        }
        if !app.spec.callback_urls.is_empty()
            && !app.spec.callback_urls.iter().any(|u| u == redirect_uri)
        {
            return control(
                "redirect_uri is not a callback URL of the app (the authorize page would refuse it)",
            );
        }
        if app.spec.require_pkce && challenge.is_none() {
            return control("the app requires PKCE: give code_challenge");
        }
        if let Some((_, method)) = &challenge
            && method != "S256"
            && method != "plain"
        {
            return control("code_challenge_method must be S256 or plain");
        }
        let scope = granted_scope(&app.spec.scopes, scope);
        let code = ids::authorization_code();
        self.codes.insert(
            code.clone(),
            CodeRecord {
                username: username.to_ascii_lowercase(),
                client_id: client_id.to_owned(),
                scope,
                redirect_uri: redirect_uri.to_owned(),
                challenge,
                issued_at: now,
                used: false,
            },
        );
        Ok(code)
    }

    pub(super) fn authorization_code(
        &mut self,
        ctx: &HostCtx,
        req: &TokenRequest,
        now: i64,
    ) -> Result<TokenSuccess, OAuthError> {
        let app = self.visible_app(ctx, req.client_id())?;
        let client_id = app.client_id.clone();
        let code = req
            .param("code")
            .ok_or(errors::EXPIRED_AUTHORIZATION_CODE)?;
        let lifetime = self.settings.code_lifetime_secs as i64 * 1000;
        let record = self
            .codes
            .get(code)
            .filter(|c| c.client_id == client_id)
            .ok_or(errors::EXPIRED_AUTHORIZATION_CODE)?;
        if record.used || now - record.issued_at > lifetime {
            return Err(errors::EXPIRED_AUTHORIZATION_CODE);
        }
        if req.param("redirect_uri") != Some(record.redirect_uri.as_str()) {
            return Err(errors::REDIRECT_URI_MISMATCH);
        }
        let verifier = req.param("code_verifier");
        match (&record.challenge, verifier) {
            (Some((challenge, method)), Some(verifier)) => {
                if !pkce_matches(challenge, method, verifier) {
                    return Err(errors::INVALID_CODE_VERIFIER);
                }
            }
            (Some(_), None) => return Err(errors::INVALID_CODE_VERIFIER),
            (None, _) => {}
        }
        // With PKCE a public client may omit the secret; without it the secret is required.
        Self::check_secret(
            &self.apps[&client_id],
            req.client_secret(),
            record.challenge.is_none(),
        )?;
        let username = record.username.clone();
        let scope = record.scope.clone();
        if let Some(c) = self.codes.get_mut(code) {
            c.used = true;
        }
        let org = self.org_of_user(&self.users[&username]);
        if !self.reaches(ctx, org) {
            return Err(errors::AUTHENTICATION_FAILURE);
        }
        self.admit(&username, &client_id, req.peer, now)?;
        Ok(self.issue(ctx, &req.host, &username, &client_id, &scope, now, true))
    }
}

fn pkce_matches(challenge: &str, method: &str, verifier: &str) -> bool {
    match method {
        "plain" => challenge == verifier,
        _ => {
            let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
            jwt::b64url(digest.as_ref()) == challenge
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_is_base64url_of_the_sha256_of_the_verifier() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_matches(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "S256",
            verifier
        ));
        assert!(!pkce_matches(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "S256",
            "other"
        ));
    }
}
