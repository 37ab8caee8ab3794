//! The token endpoint's error answers, word for word as Salesforce sends them. Each constant
//! names its row (E1–E39) in the error catalogue of `docs/emulator.md`, which gives the
//! sources; tests pin the strings.

/// An OAuth error body with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: &'static str,
}

const fn grant(description: &'static str) -> OAuthError {
    OAuthError {
        status: 400,
        error: "invalid_grant",
        description,
    }
}

const fn other(error: &'static str, description: &'static str) -> OAuthError {
    OAuthError {
        status: 400,
        error,
        description,
    }
}

/// E1: refresh token revoked, evicted, expired by policy, rotated away, or from a refreshed org.
pub const EXPIRED_REFRESH_TOKEN: OAuthError = grant("expired access/refresh token");
/// E2 / E3 / E4: a used or expired code; a JWT whose `exp` has passed; a concurrent refresh.
pub const EXPIRED_AUTHORIZATION_CODE: OAuthError = grant("expired authorization code");
/// E6 / E7: wrong password or security token, flow blocked, locked or frozen user.
pub const AUTHENTICATION_FAILURE: OAuthError = grant("authentication failure");
/// E9: outside the profile's login IP ranges.
pub const IP_RESTRICTED: OAuthError = grant("ip restricted");
/// E12: the user is deactivated.
pub const INACTIVE_USER: OAuthError = grant("inactive user");
/// E14: the org is locked, closed, suspended or expired.
pub const INACTIVE_ORG: OAuthError = other("inactive_org", "Org is locked, closed, or suspended");
/// E15: no pre-authorization and no earlier approval for a bearer flow.
pub const NOT_APPROVED: OAuthError = grant("user hasn't approved this consumer");
/// E16: admin-approved app, user not assigned.
pub const NOT_ADMIN_APPROVED: OAuthError = other(
    "invalid_app_access",
    "user is not admin approved to access this app",
);
/// E17: bad signature, wrong algorithm, malformed JWT.
pub const INVALID_ASSERTION: OAuthError = grant("invalid assertion");
/// E18: `aud` not accepted for this host.
pub const AUDIENCE_INVALID: OAuthError = grant("audience is invalid");
/// E20: an External Client App used through login/test.
pub const ECA_NOT_INSTALLED: OAuthError = other(
    "app_not_found",
    "External client app is not installed in this org",
);
/// E21: client credentials sent to login/test.
pub const NOT_SUPPORTED_ON_DOMAIN: OAuthError = grant("request not supported on this domain");
/// E22: client credentials not enabled or no Run As user.
pub const NO_CC_USER: OAuthError = grant("no client credentials user enabled");
/// E23: PKCE verifier missing or not matching (the observed answer; see docs/emulator.md on E24).
pub const INVALID_CODE_VERIFIER: OAuthError = grant("invalid code verifier");
/// E27: wrong consumer secret.
pub const INVALID_CLIENT_CREDENTIALS: OAuthError =
    other("invalid_client", "invalid client credentials");
/// E28: unknown consumer key at this host.
pub const CLIENT_ID_INVALID: OAuthError = other("invalid_client_id", "client identifier invalid");
/// E30: not a form post, unknown or missing grant type.
pub const UNSUPPORTED_GRANT_TYPE: OAuthError =
    other("unsupported_grant_type", "grant type not supported");
/// E31: redirect_uri differs from the one used at /authorize.
pub const REDIRECT_URI_MISMATCH: OAuthError = other(
    "redirect_uri_mismatch",
    "redirect_uri must match configuration",
);
/// E14 as seen on a refresh in client logs: the inactive org worded as a grant error.
pub const INACTIVE_ORGANIZATION: OAuthError = grant("inactive organization");
/// A `scope` parameter on a refresh or a client credentials request (reported by client
/// projects; the error code is not confirmed, the description is what they match).
pub const SCOPE_NOT_SUPPORTED: OAuthError =
    other("invalid_request", "scope parameter not supported");
/// JWT bearer with an app that lacks the refresh_token scope.
pub const REFRESH_SCOPE_REQUIRED: OAuthError = other(
    "invalid_request",
    "refresh_token scope is required and the connected app should be installed and preauthorized",
);
/// Client credentials with an app that has no `api` scope.
pub const NO_VALID_SCOPES: OAuthError = grant("no valid scopes defined");
/// E34: more than the login rate limit for one user in an hour.
pub const RATE_LIMIT_EXCEEDED: OAuthError =
    other("rate_limit_exceeded", "Number of logins exceeded");
/// E35: a transient failure (injected through the control API).
pub const UNKNOWN_ERROR: OAuthError = other("unknown_error", "retry your request");

impl OAuthError {
    pub fn body(&self) -> String {
        serde_json::json!({"error": self.error, "error_description": self.description}).to_string()
    }
}
