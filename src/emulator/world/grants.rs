//! The token endpoint's grants other than `authorization_code` and `refresh_token`: the
//! dispatch on `grant_type`, the username-password flow (with lockout), the JWT bearer flow
//! (assertion, audience, approval) and client credentials (Run As user, My Domain only). Must
//! never: issue a refresh token — none of these grants does on Salesforce.

use super::scopes::{app_scopes_without_refresh, granted_scope};
use super::{HostCtx, TokenRequest, TokenSuccess, World};
use crate::emulator::errors::{self, OAuthError};
use crate::emulator::jwt;
use crate::emulator::model::{OrgKind, PermittedUsers};
use crate::net::constant_time_eq;

impl World {
    /// Every grant except refresh_token, which needs an in-flight window (see
    /// [`World::begin_refresh`]).
    pub fn token(&mut self, req: &TokenRequest, now: i64) -> Result<TokenSuccess, OAuthError> {
        let ctx = self.classify(&req.host);
        match req.param("grant_type") {
            Some("authorization_code") => self.authorization_code(&ctx, req, now),
            Some("password") => self.password(&ctx, req, now),
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => self.jwt_bearer(&ctx, req, now),
            Some("client_credentials") => self.client_credentials(&ctx, req, now),
            _ => Err(errors::UNSUPPORTED_GRANT_TYPE),
        }
    }

    fn password(
        &mut self,
        ctx: &HostCtx,
        req: &TokenRequest,
        now: i64,
    ) -> Result<TokenSuccess, OAuthError> {
        let app = self.visible_app(ctx, req.client_id())?;
        let client_id = app.client_id.clone();
        Self::check_secret(app, req.client_secret(), true)?;
        let username = req
            .param("username")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let Some(user) = self.users.get(&username) else {
            return Err(errors::AUTHENTICATION_FAILURE);
        };
        let org = self.org_of_user(user);
        if !self.reaches(ctx, org) || !org.spec.password_flow {
            return Err(errors::AUTHENTICATION_FAILURE);
        }
        let lockout = org.spec.lockout_after;
        let expected = format!("{}{}", user.spec.password, user.spec.security_token);
        let given = req.param("password").unwrap_or_default();
        let user = self.users.get_mut(&username).expect("exists");
        if user.failures >= lockout {
            return Err(errors::AUTHENTICATION_FAILURE);
        }
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            user.failures += 1;
            return Err(errors::AUTHENTICATION_FAILURE);
        }
        user.failures = 0;
        self.admit(&username, &client_id, req.peer, now)?;
        let scope = granted_scope(&self.apps[&client_id].spec.scopes, None);
        // The username-password flow never issues a refresh token.
        Ok(self.issue(ctx, &req.host, &username, &client_id, &scope, now, false))
    }

    fn jwt_bearer(
        &mut self,
        ctx: &HostCtx,
        req: &TokenRequest,
        now: i64,
    ) -> Result<TokenSuccess, OAuthError> {
        let assertion = jwt::decode(req.param("assertion").unwrap_or_default())?;
        if assertion.alg != "RS256" {
            return Err(errors::INVALID_ASSERTION);
        }
        let app = self.visible_app(ctx, assertion.iss.as_deref())?;
        let client_id = app.client_id.clone();
        let generic_aud = assertion
            .aud
            .iter()
            .any(|a| a == "https://login.salesforce.com" || a == "https://test.salesforce.com");
        if app.spec.external_client_app && generic_aud {
            return Err(errors::ECA_NOT_INSTALLED);
        }
        let verified = app
            .spec
            .jwt_certificate
            .as_deref()
            .is_some_and(|pem| assertion.verify(pem));
        if !verified {
            return Err(errors::INVALID_ASSERTION);
        }
        let (Some(sub), Some(exp)) = (assertion.sub.as_deref(), assertion.exp) else {
            return Err(errors::INVALID_ASSERTION);
        };
        if !self.audience_accepted(ctx, &assertion.aud) {
            return Err(errors::AUDIENCE_INVALID);
        }
        // No upper bound on `exp`: millisecond values are accepted (sfdx-core relies on it).
        if exp * 1000.0 <= now as f64 {
            return Err(errors::EXPIRED_AUTHORIZATION_CODE);
        }
        let username = sub.to_ascii_lowercase();
        let Some(user) = self.users.get(&username) else {
            return Err(errors::NOT_APPROVED);
        };
        if !self.reaches(ctx, self.org_of_user(user)) {
            return Err(errors::NOT_APPROVED);
        }
        let app = &self.apps[&client_id];
        let admin_only = app.spec.permitted_users == PermittedUsers::AdminApprovedPreAuthorized;
        let approved = self
            .approvals
            .get(&(user.id.clone(), client_id.clone()))
            .is_some_and(|f| !f.is_empty());
        if !admin_only && !approved {
            return Err(errors::NOT_APPROVED);
        }
        let has_refresh_scope = app
            .spec
            .scopes
            .iter()
            .any(|s| s == "refresh_token" || s == "offline_access");
        if !has_refresh_scope {
            return Err(errors::REFRESH_SCOPE_REQUIRED);
        }
        let user = self.users.get_mut(&username).expect("checked above");
        if user.spec.propagating_logins > 0 {
            user.spec.propagating_logins -= 1;
            return Err(errors::NOT_APPROVED);
        }
        self.admit(&username, &client_id, req.peer, now)?;
        let scope = granted_scope(
            &app_scopes_without_refresh(&self.apps[&client_id].spec.scopes),
            None,
        );
        let mut body = self.issue(ctx, &req.host, &username, &client_id, &scope, now, false);
        // Salesforce's documented JWT responses carry neither of these.
        body.signature = None;
        body.issued_at = None;
        Ok(body)
    }

    fn audience_accepted(&self, ctx: &HostCtx, aud: &[String]) -> bool {
        let accepted: Vec<String> = match ctx {
            HostCtx::Login => vec!["https://login.salesforce.com".into()],
            HostCtx::Test => vec!["https://test.salesforce.com".into()],
            HostCtx::MyDomain { org_id } => {
                let org = self.org_by_id(org_id).expect("classified from an org");
                let generic = match org.spec.kind {
                    OrgKind::Production => "https://login.salesforce.com",
                    OrgKind::Sandbox => "https://test.salesforce.com",
                };
                vec![generic.into(), format!("https://{}", org.my_domain_host())]
            }
            HostCtx::Site { url, .. } => vec![url.clone()],
            HostCtx::Unknown => Vec::new(),
        };
        aud.iter().any(|a| accepted.contains(a))
    }

    fn client_credentials(
        &mut self,
        ctx: &HostCtx,
        req: &TokenRequest,
        now: i64,
    ) -> Result<TokenSuccess, OAuthError> {
        if !matches!(ctx, HostCtx::MyDomain { .. }) {
            return Err(errors::NOT_SUPPORTED_ON_DOMAIN);
        }
        let app = self.visible_app(ctx, req.client_id())?;
        Self::check_secret(app, req.client_secret(), true)?;
        if req.param("scope").is_some() {
            return Err(errors::SCOPE_NOT_SUPPORTED);
        }
        let client_id = app.client_id.clone();
        let run_as = app
            .spec
            .run_as
            .as_deref()
            .filter(|_| app.spec.client_credentials_enabled)
            .map(str::to_ascii_lowercase)
            .filter(|u| self.users.contains_key(u))
            .ok_or(errors::NO_CC_USER)?;
        if !self.apps[&client_id].spec.scopes.iter().any(|s| s == "api") {
            return Err(errors::NO_VALID_SCOPES);
        }
        self.admit(&run_as, &client_id, req.peer, now)?;
        let scope = granted_scope(
            &app_scopes_without_refresh(&self.apps[&client_id].spec.scopes),
            None,
        );
        Ok(self.issue(ctx, &req.host, &run_as, &client_id, &scope, now, false))
    }
}
