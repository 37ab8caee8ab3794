//! The emulator's state and Salesforce's rules over it: who may get a token, which tokens are
//! alive, what the 5-approval limit, refresh policies and rotation do. No I/O: the server
//! calls in with a parsed request and the (virtual) time, and gets a body or an error back.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde::Serialize;

use super::errors::{self, OAuthError};
use super::ids;
use super::jwt;
use super::model::*;
use crate::net::{constant_time_eq, parse_cidr};

/// Approvals kept per (user, app): the sixth evicts the oldest.
pub const APPROVAL_LIMIT: usize = 5;
/// The idle cap of "Limit idle refresh token TTL".
const IDLE_TTL_CAP_MS: i64 = 30 * 24 * 3600 * 1000;

#[derive(Debug)]
pub struct Org {
    pub spec: OrgSpec,
    pub id: String,
}

impl Org {
    pub fn my_domain_host(&self) -> String {
        let name = self.spec.my_domain.as_deref().unwrap_or(&self.spec.name);
        match self.spec.kind {
            OrgKind::Production => format!("{name}.my.salesforce.com"),
            OrgKind::Sandbox => format!(
                "{name}--{}.sandbox.my.salesforce.com",
                self.spec.sandbox.as_deref().unwrap_or("sandbox")
            ),
        }
    }
}

#[derive(Debug)]
pub struct User {
    pub spec: UserSpec,
    pub id: String,
    /// The id of the user's `UserLogin` record (key prefix `060`).
    pub login_id: String,
    /// The last successful login of any grant, for `User.LastLoginDate`.
    pub last_login: Option<i64>,
    failures: u32,
    logins: VecDeque<i64>,
}

impl User {
    /// Consecutive failed password logins; at the org's lockout threshold the user is locked.
    pub fn password_failures(&self) -> u32 {
        self.failures
    }
}

#[derive(Debug)]
pub struct App {
    pub spec: AppSpec,
    pub client_id: String,
    pub secret: String,
    /// The id of the app's `ConnectedApplication` record (key prefix `0H4`).
    pub record_id: String,
}

/// One approval: the chain of refresh tokens that rotation produces from one authorization.
#[derive(Debug)]
struct Family {
    username: String,
    client_id: String,
    org_id: String,
    issued_at: i64,
    scope: String,
    revoked: bool,
    /// The id of the approval's `OauthToken` record (key prefix `0CQ`).
    record_id: String,
    /// Successful refreshes of any token of the family, and the last one.
    use_count: u64,
    last_used: i64,
}

/// One live approval as the `OauthToken` object shows it: never a token value.
#[derive(Debug, Clone)]
pub struct ApprovalRecord {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub created: i64,
    pub last_used: i64,
    pub use_count: u64,
}

#[derive(Debug)]
struct RefreshRecord {
    family: u64,
    last_used: i64,
    /// Superseded by rotation: presenting it again revokes the family.
    rotated: bool,
    in_flight: bool,
}

#[derive(Debug)]
struct AccessRecord {
    username: String,
    org_id: String,
    family: Option<u64>,
    last_used: i64,
}

#[derive(Debug)]
struct CodeRecord {
    username: String,
    client_id: String,
    scope: String,
    redirect_uri: String,
    challenge: Option<(String, String)>,
    issued_at: i64,
    used: bool,
}

/// Which Salesforce front door a request came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCtx {
    Login,
    Test,
    MyDomain { org_id: String },
    Site { org_id: String, url: String },
    Unknown,
}

impl HostCtx {
    fn is_generic(&self) -> bool {
        matches!(self, Self::Login | Self::Test)
    }
}

/// A token request as the server parsed it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub host: String,
    pub params: HashMap<String, String>,
    /// Client id and secret from HTTP Basic.
    pub basic: Option<(String, String)>,
    pub peer: IpAddr,
}

impl TokenRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    fn client_id(&self) -> Option<&str> {
        self.param("client_id")
            .or(self.basic.as_ref().map(|b| b.0.as_str()))
    }
    fn client_secret(&self) -> Option<&str> {
        self.param("client_secret")
            .or(self.basic.as_ref().map(|b| b.1.as_str()))
    }
}

/// A successful token response, fields in Salesforce's order.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenSuccess {
    pub access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub scope: String,
    pub instance_url: String,
    pub id: String,
    pub token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
}

/// A refresh that passed its checks and is now in flight.
#[derive(Debug)]
pub struct RefreshTicket {
    token: String,
    host: String,
}

/// One line of the request log: never a secret.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub at_ms: i64,
    pub host: String,
    pub grant_type: String,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub status: u16,
    pub error: Option<String>,
}

/// Injected failures for the next token requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// `unknown_error` / `retry your request` (E35).
    UnknownError,
    /// A 503 HTML maintenance page (E37).
    Maintenance,
}

#[derive(Debug, Default)]
pub struct World {
    pub settings: Settings,
    pub(crate) orgs: Vec<Org>,
    pub(crate) users: HashMap<String, User>,
    pub(crate) apps: HashMap<String, App>,
    families: HashMap<u64, Family>,
    refresh: HashMap<String, RefreshRecord>,
    access: HashMap<String, AccessRecord>,
    codes: HashMap<String, CodeRecord>,
    approvals: HashMap<(String, String), VecDeque<u64>>,
    next_family: u64,
    pub log: Vec<LoggedRequest>,
    pub faults: VecDeque<Fault>,
    /// Injected failures for the next REST queries (see [`super::query::QueryFault`]).
    pub query_faults: VecDeque<super::query::QueryFault>,
    /// Login attempts of known users, oldest first, for `LoginHistory` (see [`super::logins`]).
    pub(crate) login_history: VecDeque<super::logins::LoginEvent>,
}

/// An error of the control API: which input was wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ControlError(pub String);

fn control<T>(msg: impl Into<String>) -> Result<T, ControlError> {
    Err(ControlError(msg.into()))
}

impl World {
    // ---- control ------------------------------------------------------------------------

    pub fn add_org(&mut self, spec: OrgSpec) -> Result<&Org, ControlError> {
        if spec.name.is_empty()
            || !spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return control(format!(
                "org name `{}`: letters, digits and dashes only",
                spec.name
            ));
        }
        if self.orgs.iter().any(|o| o.spec.name == spec.name) {
            return control(format!("org `{}` exists", spec.name));
        }
        let org = Org {
            spec,
            id: ids::new_id("00D"),
        };
        if self
            .orgs
            .iter()
            .any(|o| o.my_domain_host() == org.my_domain_host())
        {
            return control(format!("My Domain {} is taken", org.my_domain_host()));
        }
        self.orgs.push(org);
        Ok(self.orgs.last().expect("just pushed"))
    }

    pub fn add_user(&mut self, spec: UserSpec) -> Result<&User, ControlError> {
        if self.org_by_name(&spec.org).is_none() {
            return control(format!("user {}: no org `{}`", spec.username, spec.org));
        }
        for range in &spec.ip_ranges {
            parse_cidr(range).ok_or_else(|| {
                ControlError(format!(
                    "ip range `{range}`: expected CIDR, e.g. 10.0.0.0/8"
                ))
            })?;
        }
        let key = spec.username.to_ascii_lowercase();
        if self.users.contains_key(&key) {
            return control(format!("user {} exists", spec.username));
        }
        self.users.insert(
            key.clone(),
            User {
                spec,
                id: ids::new_id("005"),
                login_id: ids::new_id("060"),
                last_login: None,
                failures: 0,
                logins: VecDeque::new(),
            },
        );
        Ok(&self.users[&key])
    }

    pub fn add_app(&mut self, spec: AppSpec) -> Result<&App, ControlError> {
        if self.org_by_name(&spec.org).is_none() {
            return control(format!("app: no org `{}`", spec.org));
        }
        let client_id = spec.client_id.clone().unwrap_or_else(ids::consumer_key);
        if self.apps.contains_key(&client_id) {
            return control("an app with this client_id exists");
        }
        let secret = spec
            .client_secret
            .clone()
            .unwrap_or_else(ids::consumer_secret);
        self.apps.insert(
            client_id.clone(),
            App {
                spec,
                client_id: client_id.clone(),
                secret,
                record_id: ids::new_id("0H4"),
            },
        );
        Ok(&self.apps[&client_id])
    }

    pub fn patch_app(&mut self, client_id: &str, patch: AppPatch) -> Result<(), ControlError> {
        let Some(app) = self.apps.get_mut(client_id) else {
            return control(format!("no app {client_id}"));
        };
        let s = &mut app.spec;
        if let Some(v) = patch.client_secret {
            app.secret = v;
        }
        if let Some(v) = patch.refresh_policy {
            s.refresh_policy = v;
        }
        if let Some(v) = patch.limit_idle_ttl {
            s.limit_idle_ttl = v;
        }
        if let Some(v) = patch.rotation {
            s.rotation = v;
        }
        if let Some(v) = patch.permitted_users {
            s.permitted_users = v;
        }
        if let Some(v) = patch.assigned_users {
            s.assigned_users = v;
        }
        if let Some(v) = patch.jwt_certificate {
            s.jwt_certificate = Some(v);
        }
        if let Some(v) = patch.client_credentials_enabled {
            s.client_credentials_enabled = v;
        }
        if let Some(v) = patch.run_as {
            s.run_as = Some(v);
        }
        if let Some(v) = patch.external_client_app {
            s.external_client_app = v;
        }
        if let Some(v) = patch.require_secret_for_refresh {
            s.require_secret_for_refresh = v;
        }
        if let Some(v) = patch.scopes {
            s.scopes = v;
        }
        Ok(())
    }

    pub fn patch_user(&mut self, username: &str, patch: UserPatch) -> Result<(), ControlError> {
        let Some(user) = self.users.get_mut(&username.to_ascii_lowercase()) else {
            return control(format!("no user {username}"));
        };
        if let Some(v) = patch.active {
            user.spec.active = v;
        }
        if let Some(v) = patch.frozen {
            user.spec.frozen = v;
        }
        if let Some(v) = patch.password {
            user.spec.password = v;
            user.failures = 0;
        }
        if let Some(v) = patch.security_token {
            user.spec.security_token = v;
        }
        if let Some(v) = patch.ip_ranges {
            user.spec.ip_ranges = v;
        }
        if let Some(v) = patch.propagating_logins {
            user.spec.propagating_logins = v;
        }
        if let Some(v) = patch.permissions {
            user.spec.permissions = v;
        }
        if let Some(v) = patch.assigned_apps {
            user.spec.assigned_apps = v;
        }
        Ok(())
    }

    pub fn patch_org(&mut self, name: &str, patch: OrgPatch) -> Result<(), ControlError> {
        let Some(org) = self.orgs.iter_mut().find(|o| o.spec.name == name) else {
            return control(format!("no org {name}"));
        };
        if let Some(v) = patch.active {
            org.spec.active = v;
        }
        if let Some(v) = patch.password_flow {
            org.spec.password_flow = v;
        }
        if let Some(v) = patch.lockout_after {
            org.spec.lockout_after = v;
        }
        if let Some(v) = patch.login_rate_per_hour {
            org.spec.login_rate_per_hour = v;
        }
        Ok(())
    }

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

    /// Revokes a user's approvals (for one app, or all), as the user or an admin would.
    pub fn revoke(
        &mut self,
        username: &str,
        client_id: Option<&str>,
    ) -> Result<usize, ControlError> {
        let username = username.to_ascii_lowercase();
        let Some(user) = self.users.get(&username) else {
            return control(format!("no user {username}"));
        };
        let user_id = user.id.clone();
        let keys: Vec<_> = self
            .approvals
            .keys()
            .filter(|(u, c)| *u == user_id && client_id.is_none_or(|id| id == c))
            .cloned()
            .collect();
        let mut count = 0;
        for key in keys {
            for family in self.approvals.remove(&key).unwrap_or_default() {
                self.revoke_family(family);
                count += 1;
            }
        }
        Ok(count)
    }

    /// A sandbox refresh: a new org id, every token and approval of the old org gone.
    pub fn refresh_sandbox(&mut self, name: &str) -> Result<String, ControlError> {
        let Some(org) = self
            .orgs
            .iter_mut()
            .find(|o| o.spec.name == name && o.spec.kind == OrgKind::Sandbox)
        else {
            return control(format!("no sandbox org {name}"));
        };
        let old = std::mem::replace(&mut org.id, ids::new_id("00D"));
        let new = org.id.clone();
        let dead: Vec<u64> = self
            .families
            .iter()
            .filter(|(_, f)| f.org_id == old)
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.revoke_family(*id);
        }
        self.refresh.retain(|_, r| !dead.contains(&r.family));
        self.access.retain(|_, a| a.org_id != old);
        let org_users: Vec<String> = self
            .users
            .values()
            .filter(|u| u.spec.org == name)
            .map(|u| u.id.clone())
            .collect();
        self.approvals.retain(|(u, _), _| !org_users.contains(u));
        self.codes.retain(|_, c| {
            self.users
                .get(&c.username)
                .is_none_or(|u| u.spec.org != name)
        });
        Ok(new)
    }

    // ---- lookups ------------------------------------------------------------------------

    pub(crate) fn org_by_name(&self, name: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.spec.name == name)
    }

    fn org_of_user(&self, user: &User) -> &Org {
        self.org_by_name(&user.spec.org)
            .expect("users belong to existing orgs")
    }

    fn org_by_id(&self, id: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.id == id)
    }

    pub fn classify(&self, host: &str) -> HostCtx {
        let host = host.to_ascii_lowercase();
        match host.as_str() {
            "login.salesforce.com" => return HostCtx::Login,
            "test.salesforce.com" => return HostCtx::Test,
            _ => {}
        }
        for org in &self.orgs {
            if org.my_domain_host() == host {
                return HostCtx::MyDomain {
                    org_id: org.id.clone(),
                };
            }
            for site in &org.spec.sites {
                let site_host = site
                    .trim_start_matches("https://")
                    .split('/')
                    .next()
                    .unwrap_or_default();
                if site_host.eq_ignore_ascii_case(&host) {
                    return HostCtx::Site {
                        org_id: org.id.clone(),
                        url: site.trim_end_matches('/').to_owned(),
                    };
                }
            }
        }
        HostCtx::Unknown
    }

    fn reaches(&self, ctx: &HostCtx, org: &Org) -> bool {
        match ctx {
            HostCtx::Login => org.spec.kind == OrgKind::Production,
            HostCtx::Test => org.spec.kind == OrgKind::Sandbox,
            HostCtx::MyDomain { org_id } | HostCtx::Site { org_id, .. } => *org_id == org.id,
            HostCtx::Unknown => false,
        }
    }

    /// The app behind a client id, as visible from this host: External Client Apps only
    /// through their own org's My Domain, classic apps from hosts of the same org kind.
    fn visible_app(&self, ctx: &HostCtx, client_id: Option<&str>) -> Result<&App, OAuthError> {
        let app = client_id
            .and_then(|id| self.apps.get(id))
            .ok_or(errors::CLIENT_ID_INVALID)?;
        let owner = self
            .org_by_name(&app.spec.org)
            .ok_or(errors::CLIENT_ID_INVALID)?;
        if app.spec.external_client_app {
            if ctx.is_generic() {
                return Err(errors::ECA_NOT_INSTALLED);
            }
            return if self.reaches(ctx, owner) {
                Ok(app)
            } else {
                Err(errors::CLIENT_ID_INVALID)
            };
        }
        // A production app's key is unknown at sandbox hosts and the other way round.
        let same_kind = self
            .orgs
            .iter()
            .any(|o| o.spec.kind == owner.spec.kind && self.reaches(ctx, o));
        if same_kind {
            Ok(app)
        } else {
            Err(errors::CLIENT_ID_INVALID)
        }
    }

    fn check_secret(app: &App, secret: Option<&str>, required: bool) -> Result<(), OAuthError> {
        match secret {
            Some(s) if !constant_time_eq(s.as_bytes(), app.secret.as_bytes()) => {
                Err(errors::INVALID_CLIENT_CREDENTIALS)
            }
            None if required => Err(errors::INVALID_CLIENT_CREDENTIALS),
            _ => Ok(()),
        }
    }

    /// The checks every user-bound login shares, in the order Salesforce is believed to apply
    /// them: org, user, network, rate, app access. A passing check counts as a login.
    fn admit(
        &mut self,
        username: &str,
        client_id: &str,
        peer: IpAddr,
        now: i64,
    ) -> Result<(), OAuthError> {
        let user = &self.users[username];
        let org = self.org_of_user(user);
        if !org.spec.active {
            return Err(errors::INACTIVE_ORG);
        }
        if !user.spec.active {
            return Err(errors::INACTIVE_USER);
        }
        if user.spec.frozen {
            return Err(errors::AUTHENTICATION_FAILURE);
        }
        if !user.spec.ip_ranges.is_empty()
            && !user
                .spec
                .ip_ranges
                .iter()
                .filter_map(|r| parse_cidr(r))
                .any(|c| c.contains(peer))
        {
            return Err(errors::IP_RESTRICTED);
        }
        let limit = org.spec.login_rate_per_hour as usize;
        let app = &self.apps[client_id];
        let assigned = app
            .spec
            .assigned_users
            .iter()
            .any(|u| u.eq_ignore_ascii_case(username))
            || user.spec.assigned_apps.iter().any(|c| c == client_id);
        let admin_only = app.spec.permitted_users == PermittedUsers::AdminApprovedPreAuthorized;
        let user = self.users.get_mut(username).expect("checked above");
        while user.logins.front().is_some_and(|t| now - t >= 3_600_000) {
            user.logins.pop_front();
        }
        if user.logins.len() >= limit {
            return Err(errors::RATE_LIMIT_EXCEEDED);
        }
        user.logins.push_back(now);
        if admin_only && !assigned {
            return Err(errors::NOT_ADMIN_APPROVED);
        }
        Ok(())
    }

    // ---- grants -------------------------------------------------------------------------

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

    fn authorization_code(
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

    /// First half of a refresh: every check, then the token is marked in flight.
    pub fn begin_refresh(
        &mut self,
        req: &TokenRequest,
        now: i64,
    ) -> Result<RefreshTicket, OAuthError> {
        let ctx = self.classify(&req.host);
        let app = self.visible_app(&ctx, req.client_id())?;
        let client_id = app.client_id.clone();
        Self::check_secret(
            app,
            req.client_secret(),
            app.spec.require_secret_for_refresh,
        )?;
        if req.param("scope").is_some() {
            return Err(errors::SCOPE_NOT_SUPPORTED);
        }
        let token = req
            .param("refresh_token")
            .ok_or(errors::EXPIRED_REFRESH_TOKEN)?
            .to_owned();
        let record = self
            .refresh
            .get(&token)
            .ok_or(errors::EXPIRED_REFRESH_TOKEN)?;
        let family_id = record.family;
        let family = &self.families[&family_id];
        if family.client_id != client_id || family.revoked {
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        let org = self
            .org_by_id(&family.org_id)
            .ok_or(errors::EXPIRED_REFRESH_TOKEN)?;
        if !self.reaches(&ctx, org) {
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        if record.rotated {
            // Reuse of a superseded token: Salesforce revokes the whole family.
            self.revoke_family(family_id);
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        if record.in_flight {
            return Err(errors::EXPIRED_AUTHORIZATION_CODE);
        }
        let spec = &self.apps[&client_id].spec;
        let idle = now - record.last_used;
        let expired = match spec.refresh_policy {
            RefreshPolicy::ImmediatelyExpire => true,
            RefreshPolicy::IdleExpire { seconds } => idle > seconds as i64 * 1000,
            RefreshPolicy::AbsoluteExpire { seconds } => {
                now - family.issued_at > seconds as i64 * 1000
            }
            RefreshPolicy::ValidUntilRevoked => spec.limit_idle_ttl && idle > IDLE_TTL_CAP_MS,
        };
        if expired {
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        let username = family.username.clone();
        // On a refresh the inactive org is worded as a grant error (seen in client logs).
        self.admit(&username, &client_id, req.peer, now)
            .map_err(|e| {
                if e == errors::INACTIVE_ORG {
                    errors::INACTIVE_ORGANIZATION
                } else {
                    e
                }
            })?;
        self.refresh.get_mut(&token).expect("exists").in_flight = true;
        Ok(RefreshTicket {
            token,
            host: req.host.clone(),
        })
    }

    /// A refresh whose client went away before its answer: nothing changes but the mark.
    pub fn abandon_refresh(&mut self, ticket: RefreshTicket) {
        if let Some(record) = self.refresh.get_mut(&ticket.token) {
            record.in_flight = false;
        }
    }

    /// Second half of a refresh: a new access token, and under rotation a new refresh token.
    pub fn finish_refresh(
        &mut self,
        ticket: RefreshTicket,
        now: i64,
    ) -> Result<TokenSuccess, OAuthError> {
        let record = self
            .refresh
            .get_mut(&ticket.token)
            .ok_or(errors::EXPIRED_REFRESH_TOKEN)?;
        record.in_flight = false;
        let family_id = record.family;
        let family = &self.families[&family_id];
        if family.revoked || record.rotated {
            return Err(errors::EXPIRED_REFRESH_TOKEN);
        }
        record.last_used = now;
        let family = self.families.get_mut(&family_id).expect("checked above");
        family.use_count += 1;
        family.last_used = now;
        let (username, client_id, scope) = (
            family.username.clone(),
            family.client_id.clone(),
            family.scope.clone(),
        );
        let rotation = self.apps[&client_id].spec.rotation;
        let ctx = self.classify(&ticket.host);
        let mut body = self.issue_access(
            &ctx,
            &ticket.host,
            &username,
            &client_id,
            &scope,
            now,
            Some(family_id),
        );
        if rotation {
            self.refresh.get_mut(&ticket.token).expect("exists").rotated = true;
            let next = ids::refresh_token();
            self.refresh.insert(
                next.clone(),
                RefreshRecord {
                    family: family_id,
                    last_used: now,
                    rotated: false,
                    in_flight: false,
                },
            );
            body.refresh_token = Some(next);
        }
        Ok(body)
    }

    /// Issues an access token and, when the scope allows and the grant may, a refresh token
    /// (a new approval, evicting the oldest beyond the limit).
    #[allow(clippy::too_many_arguments)]
    fn issue(
        &mut self,
        ctx: &HostCtx,
        host: &str,
        username: &str,
        client_id: &str,
        scope: &str,
        now: i64,
        may_refresh: bool,
    ) -> TokenSuccess {
        let wants_refresh = scope
            .split(' ')
            .any(|s| s == "refresh_token" || s == "offline_access");
        if !(may_refresh && wants_refresh) {
            return self.issue_access(ctx, host, username, client_id, scope, now, None);
        }
        let user_id = self.users[username].id.clone();
        let org_id = self.org_of_user(&self.users[username]).id.clone();
        self.next_family += 1;
        let family_id = self.next_family;
        self.families.insert(
            family_id,
            Family {
                username: username.to_owned(),
                client_id: client_id.to_owned(),
                org_id,
                issued_at: now,
                scope: scope.to_owned(),
                revoked: false,
                record_id: ids::new_id("0CQ"),
                use_count: 0,
                last_used: now,
            },
        );
        let approvals = self
            .approvals
            .entry((user_id, client_id.to_owned()))
            .or_default();
        approvals.push_back(family_id);
        let evicted = if approvals.len() > APPROVAL_LIMIT {
            approvals.pop_front()
        } else {
            None
        };
        if let Some(oldest) = evicted {
            self.revoke_family(oldest);
        }
        let token = ids::refresh_token();
        self.refresh.insert(
            token.clone(),
            RefreshRecord {
                family: family_id,
                last_used: now,
                rotated: false,
                in_flight: false,
            },
        );
        let mut body =
            self.issue_access(ctx, host, username, client_id, scope, now, Some(family_id));
        body.refresh_token = Some(token);
        body
    }

    #[allow(clippy::too_many_arguments)]
    fn issue_access(
        &mut self,
        ctx: &HostCtx,
        host: &str,
        username: &str,
        client_id: &str,
        scope: &str,
        now: i64,
        family: Option<u64>,
    ) -> TokenSuccess {
        let user = &self.users[username];
        let org = self.org_of_user(user);
        let access_token = ids::access_token(&org.id);
        let id = format!(
            "https://{}/id/{}/{}",
            host.to_ascii_lowercase(),
            org.id,
            user.id
        );
        let issued_at = now.to_string();
        let signature = hmac_signature(&self.apps[client_id].secret, &id, &issued_at);
        let instance_url = match ctx {
            HostCtx::Site { url, .. } => url.clone(),
            _ => format!("https://{}", org.my_domain_host()),
        };
        let org_id = org.id.clone();
        self.access.insert(
            access_token.clone(),
            AccessRecord {
                username: username.to_owned(),
                org_id,
                family,
                last_used: now,
            },
        );
        TokenSuccess {
            access_token,
            refresh_token: None,
            signature: Some(signature),
            scope: scope.to_owned(),
            instance_url,
            id,
            token_type: "Bearer",
            issued_at: Some(issued_at),
        }
    }

    fn revoke_family(&mut self, family_id: u64) {
        if let Some(family) = self.families.get_mut(&family_id) {
            family.revoked = true;
        }
        self.access.retain(|_, a| a.family != Some(family_id));
    }

    /// The user behind a live access token (sliding session timeout), for the REST surface.
    pub fn session(&mut self, token: &str, now: i64) -> Option<(String, String, String)> {
        let timeout = self.settings.session_timeout_secs as i64 * 1000;
        let record = self.access.get(token)?;
        let user = self.users.get(&record.username)?;
        let org = self.org_of_user(user);
        let family_ok = record
            .family
            .is_none_or(|f| self.families.get(&f).is_some_and(|f| !f.revoked));
        if now - record.last_used > timeout
            || !user.spec.active
            || !org.spec.active
            || org.id != record.org_id
            || !family_ok
        {
            return None;
        }
        let found = (org.id.clone(), user.id.clone(), user.spec.username.clone());
        self.access.get_mut(token)?.last_used = now;
        Some(found)
    }

    /// Every live approval (not revoked, not evicted), oldest first per (user, app).
    pub fn live_approvals(&self) -> Vec<ApprovalRecord> {
        let mut rows: Vec<ApprovalRecord> = self
            .approvals
            .iter()
            .flat_map(|((user_id, client_id), families)| {
                families.iter().filter_map(move |id| {
                    let f = self.families.get(id).filter(|f| !f.revoked)?;
                    Some(ApprovalRecord {
                        id: f.record_id.clone(),
                        user_id: user_id.clone(),
                        client_id: client_id.clone(),
                        created: f.issued_at,
                        last_used: f.last_used,
                        use_count: f.use_count,
                    })
                })
            })
            .collect();
        // The map's order is random; creation order keeps answers stable between queries.
        rows.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        rows
    }

    /// The (username, client id) a token request logs in as, when both are known: from the
    /// code, the refresh token, the username, the assertion or the Run As user.
    pub fn login_subject(&self, req: &TokenRequest) -> Option<(String, String)> {
        let (username, client_id) = match req.param("grant_type")? {
            "authorization_code" => {
                let code = self.codes.get(req.param("code")?)?;
                (code.username.clone(), code.client_id.clone())
            }
            "refresh_token" => {
                let record = self.refresh.get(req.param("refresh_token")?)?;
                let family = self.families.get(&record.family)?;
                (family.username.clone(), family.client_id.clone())
            }
            "password" => (
                req.param("username")?.to_owned(),
                req.client_id()?.to_owned(),
            ),
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
                let assertion = jwt::decode(req.param("assertion")?).ok()?;
                (assertion.sub?, assertion.iss?)
            }
            "client_credentials" => {
                let app = self.apps.get(req.client_id()?)?;
                (app.spec.run_as.clone()?, app.client_id.clone())
            }
            _ => return None,
        };
        let username = username.to_ascii_lowercase();
        (self.users.contains_key(&username) && self.apps.contains_key(&client_id))
            .then_some((username, client_id))
    }

    /// Live refresh tokens of a user for an app, oldest first (for the control API).
    pub fn approvals_of(&self, username: &str, client_id: &str) -> usize {
        self.users
            .get(&username.to_ascii_lowercase())
            .and_then(|u| self.approvals.get(&(u.id.clone(), client_id.to_owned())))
            .map_or(0, |f| f.len())
    }
}

fn granted_scope(allowed: &[String], requested: Option<&str>) -> String {
    match requested {
        Some(req) if !req.trim().is_empty() => req
            .split_whitespace()
            .filter(|s| allowed.iter().any(|a| a == s))
            .collect::<Vec<_>>()
            .join(" "),
        _ => allowed.join(" "),
    }
}

fn app_scopes_without_refresh(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter(|s| *s != "refresh_token" && *s != "offline_access")
        .cloned()
        .collect()
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

/// `signature`: base64 HMAC-SHA256 keyed with the consumer secret over `id + issued_at`.
pub fn hmac_signature(secret: &str, id: &str, issued_at: &str) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{id}{issued_at}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
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
