//! What the emulator can be told about: orgs, users and connected apps, as the control API and
//! scenario files describe them. Every field has a default so a scenario says only what matters.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrgKind {
    #[default]
    Production,
    Sandbox,
}

/// An org. Its My Domain host is `<my_domain>.my.salesforce.com`, or for a sandbox
/// `<my_domain>--<sandbox>.sandbox.my.salesforce.com`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSpec {
    /// Unique; users and apps name their org by it.
    pub name: String,
    #[serde(default)]
    pub kind: OrgKind,
    /// The My Domain name; defaults to `name`. A sandbox shares its production org's.
    #[serde(default)]
    pub my_domain: Option<String>,
    /// The sandbox name (sandboxes only); defaults to `sandbox`.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// Active orgs answer; an inactive one gives `inactive_org` (E14).
    #[serde(default = "yes")]
    pub active: bool,
    /// "Allow OAuth Username-Password Flows"; off by default for orgs since Summer '23, on
    /// here so older set-ups can be rehearsed. Off gives `authentication failure` (E6).
    #[serde(default = "yes")]
    pub password_flow: bool,
    /// Failed password logins before the user is locked out.
    #[serde(default = "default_lockout")]
    pub lockout_after: u32,
    /// Logins per user per hour before `rate_limit_exceeded` (E34).
    #[serde(default = "default_login_rate")]
    pub login_rate_per_hour: u32,
    /// Experience Cloud site URLs of this org, e.g. `https://acme.my.site.com/customers`.
    #[serde(default)]
    pub sites: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// The org's `name`.
    pub org: String,
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Appended to the password in the username-password flow.
    #[serde(default)]
    pub security_token: String,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub frozen: bool,
    /// Profile login IP ranges (CIDR); empty means unrestricted.
    #[serde(default)]
    pub ip_ranges: Vec<String>,
    /// JWT bearer logins still refused with `user hasn't approved this consumer` although the
    /// user is set up: a new user or pre-authorization that has not reached every server yet.
    #[serde(default)]
    pub propagating_logins: u32,
    /// System permissions by API name (`ManageUsers`, `CustomizeApplication`,
    /// `MonitorLoginHistory`); they decide which objects the REST query endpoint shows.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Client ids of admin-approved apps assigned to this user through a permission set: the
    /// same as naming the user in the app's `assigned_users`, from the user's side.
    #[serde(default)]
    pub assigned_apps: Vec<String>,
}

/// Refresh Token Policy of a connected app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefreshPolicy {
    #[default]
    ValidUntilRevoked,
    ImmediatelyExpire,
    /// Expire if not used for this many seconds.
    IdleExpire {
        seconds: u64,
    },
    /// Expire this many seconds after issue.
    AbsoluteExpire {
        seconds: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PermittedUsers {
    #[default]
    AllUsersMaySelfAuthorize,
    AdminApprovedPreAuthorized,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The org that owns the app.
    pub org: String,
    #[serde(default)]
    pub name: String,
    /// Consumer key; generated when absent.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Consumer secret; generated when absent.
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub callback_urls: Vec<String>,
    /// Selected OAuth scopes; a request may ask only for these.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub refresh_policy: RefreshPolicy,
    /// "Limit idle refresh token TTL": valid-until-revoked becomes a 30-day idle expiry.
    #[serde(default)]
    pub limit_idle_ttl: bool,
    /// Refresh Token Rotation.
    #[serde(default)]
    pub rotation: bool,
    #[serde(default)]
    pub permitted_users: PermittedUsers,
    /// Usernames whose profile or permission set is assigned to the app.
    #[serde(default)]
    pub assigned_users: Vec<String>,
    /// PEM certificate (or public key) for the JWT bearer flow ("Use digital signatures").
    /// In a scenario file, a value that is not PEM is a path relative to the file.
    #[serde(default)]
    pub jwt_certificate: Option<String>,
    #[serde(default)]
    pub client_credentials_enabled: bool,
    /// Run As user (username) of the client credentials flow.
    #[serde(default)]
    pub run_as: Option<String>,
    /// An External Client App: local to its org, reachable only through its My Domain.
    #[serde(default)]
    pub external_client_app: bool,
    /// Whether the refresh flow requires the consumer secret.
    #[serde(default)]
    pub require_secret_for_refresh: bool,
    /// Require PKCE at /authorize.
    #[serde(default)]
    pub require_pkce: bool,
}

/// What a test may change on an app after creating it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    pub client_secret: Option<String>,
    pub refresh_policy: Option<RefreshPolicy>,
    pub limit_idle_ttl: Option<bool>,
    pub rotation: Option<bool>,
    pub permitted_users: Option<PermittedUsers>,
    pub assigned_users: Option<Vec<String>>,
    pub jwt_certificate: Option<String>,
    pub client_credentials_enabled: Option<bool>,
    pub run_as: Option<String>,
    pub external_client_app: Option<bool>,
    pub require_secret_for_refresh: Option<bool>,
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub active: Option<bool>,
    pub frozen: Option<bool>,
    pub password: Option<String>,
    pub security_token: Option<String>,
    pub ip_ranges: Option<Vec<String>>,
    pub propagating_logins: Option<u32>,
    pub permissions: Option<Vec<String>>,
    pub assigned_apps: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    pub active: Option<bool>,
    pub password_flow: Option<bool>,
    pub lockout_after: Option<u32>,
    pub login_rate_per_hour: Option<u32>,
}

/// A scenario file: state to preload (see `config/emulator-scenario.example.toml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub settings: Option<Settings>,
    #[serde(default)]
    pub orgs: Vec<OrgSpec>,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
}

/// Emulator-wide behaviour.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Lifetime of an authorization code, seconds.
    #[serde(default = "default_code_lifetime")]
    pub code_lifetime_secs: u64,
    /// Session (access token) idle timeout, seconds.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_secs: u64,
    /// How long a refresh is "in flight"; a second refresh of the same token inside this
    /// window gets `expired authorization code` (E4). Real time, not the virtual clock.
    #[serde(default = "default_refresh_latency")]
    pub refresh_latency_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            code_lifetime_secs: default_code_lifetime(),
            session_timeout_secs: default_session_timeout(),
            refresh_latency_ms: default_refresh_latency(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_lockout() -> u32 {
    10
}
fn default_login_rate() -> u32 {
    3600
}
fn default_scopes() -> Vec<String> {
    vec![
        "api".into(),
        "refresh_token".into(),
        "offline_access".into(),
    ]
}
fn default_code_lifetime() -> u64 {
    15 * 60
}
fn default_session_timeout() -> u64 {
    2 * 3600
}
fn default_refresh_latency() -> u64 {
    20
}
