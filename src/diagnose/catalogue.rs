//! The causes grantdoctor can name, as data: stable id, one-line summary, fix steps, docs.
//! Ids are a public interface (`docs/causes.md`): never renamed, never reused.

/// One entry of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CauseInfo {
    pub id: &'static str,
    pub summary: &'static str,
    pub fix: &'static [&'static str],
    pub docs: &'static [&'static str],
}

/// Every cause id, declared once: rules and the catalogue name causes through these, so a
/// misspelt id does not compile.
pub mod id {
    pub const REFRESH_APPROVAL_LIMIT_EVICTED: &str = "sf.refresh.approval_limit_evicted";
    pub const REFRESH_ROTATED_TOKEN_REUSED: &str = "sf.refresh.rotated_token_reused";
    pub const REFRESH_POLICY_IMMEDIATE_EXPIRY: &str = "sf.refresh.policy_immediate_expiry";
    pub const REFRESH_POLICY_IDLE_EXPIRY: &str = "sf.refresh.policy_idle_expiry";
    pub const REFRESH_POLICY_ABSOLUTE_EXPIRY: &str = "sf.refresh.policy_absolute_expiry";
    pub const REFRESH_MISSING_REFRESH_SCOPE: &str = "sf.refresh.missing_refresh_scope";
    pub const REFRESH_WRONG_HOST: &str = "sf.refresh.wrong_host";
    pub const REFRESH_CLIENT_MISMATCH: &str = "sf.refresh.client_mismatch";
    pub const REFRESH_ORG_REFRESHED: &str = "sf.refresh.org_refreshed";
    pub const REFRESH_REVOKED: &str = "sf.refresh.revoked";
    pub const REFRESH_CONCURRENT_REFRESH: &str = "sf.refresh.concurrent_refresh";
    pub const CODE_REUSED: &str = "sf.code.reused";
    pub const CODE_EXPIRED: &str = "sf.code.expired";
    pub const CODE_PKCE_MISMATCH: &str = "sf.code.pkce_mismatch";
    pub const CODE_REDIRECT_URI_MISMATCH: &str = "sf.code.redirect_uri_mismatch";
    pub const JWT_ASSERTION_EXPIRED: &str = "sf.jwt.assertion_expired";
    pub const JWT_AUDIENCE_INVALID: &str = "sf.jwt.audience_invalid";
    pub const JWT_EXTERNAL_CLIENT_APP_HOST: &str = "sf.jwt.external_client_app_host";
    pub const JWT_NOT_PREAUTHORIZED: &str = "sf.jwt.not_preauthorized";
    pub const JWT_INVALID_SIGNATURE: &str = "sf.jwt.invalid_signature";
    pub const JWT_UNKNOWN_ISSUER: &str = "sf.jwt.unknown_issuer";
    pub const PASSWORD_BAD_CREDENTIALS: &str = "sf.password.bad_credentials";
    pub const PASSWORD_FLOW_BLOCKED: &str = "sf.password.flow_blocked";
    pub const PASSWORD_LOCKOUT_RISK: &str = "sf.password.lockout_risk";
    pub const CC_WRONG_DOMAIN: &str = "sf.cc.wrong_domain";
    pub const CC_NO_RUN_AS_USER: &str = "sf.cc.no_run_as_user";
    pub const USER_IP_RESTRICTED: &str = "sf.user.ip_restricted";
    pub const USER_INACTIVE: &str = "sf.user.inactive";
    pub const ORG_INACTIVE: &str = "sf.org.inactive";
    pub const APP_USER_NOT_APPROVED: &str = "sf.app.user_not_approved";
    pub const USER_LOGIN_RATE_EXCEEDED: &str = "sf.user.login_rate_exceeded";
    pub const CLIENT_INVALID_SECRET: &str = "sf.client.invalid_secret";
    pub const CLIENT_UNKNOWN_CLIENT_ID: &str = "sf.client.unknown_client_id";
    pub const REQUEST_MALFORMED: &str = "sf.request.malformed";
    pub const TRANSIENT: &str = "sf.transient";
    pub const REFRESH_TOKEN_MALFORMED: &str = "sf.refresh.token_malformed";
    pub const REQUEST_SCOPE_ON_REFRESH: &str = "sf.request.scope_on_refresh";
    pub const JWT_REFRESH_SCOPE_MISSING: &str = "sf.jwt.refresh_scope_missing";
    pub const JWT_IDENTITY_PROPAGATING: &str = "sf.jwt.identity_propagating";
    pub const CC_NO_VALID_SCOPES: &str = "sf.cc.no_valid_scopes";
    pub const CLIENT_SECRET_CHANGED: &str = "sf.client.secret_changed";
    pub const GD_DEAD_TOKEN_RETRIED: &str = "gd.dead_token_retried";
    pub const GD_UPSTREAM_UNREACHABLE: &str = "gd.upstream_unreachable";
    pub const UNKNOWN: &str = "sf.unknown";
}

/// Every warning id, declared once.
pub mod warn {
    pub const APPROVAL_LIMIT_REACHED: &str = "warn.approval_limit_reached";
    pub const APPROVAL_EVICTED: &str = "warn.approval_evicted";
    pub const NO_REFRESH_TOKEN: &str = "warn.no_refresh_token";
    pub const ROTATION_ON: &str = "warn.rotation_on";
    pub const PASSWORD_FAILURES: &str = "warn.password_failures";
    pub const LOGIN_RATE: &str = "warn.login_rate";
    pub const JWT_EXP_FAR: &str = "warn.jwt_exp_far";
    pub const RETRY_STORM: &str = "warn.retry_storm";
}

const ERRORS_DOC: &str =
    "https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_flow_errors.htm";
const APPROVALS_DOC: &str = "https://help.salesforce.com/apex/HTViewSolution?id=000205876";
const POLICY_DOC: &str =
    "https://help.salesforce.com/apex/HTViewHelpDoc?id=xcloud.connected_app_limit_idle_ttl.htm";
const RTR_DOC: &str = "https://help.salesforce.com/s/articleView?id=005316711";
const JWT_DOC: &str =
    "https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_jwt_flow.htm&type=5";
const PW_FLOW_DOC: &str = "https://help.salesforce.com/apex/HTViewHelpDoc?id=xcloud.remoteaccess_disable_username_password_flow_ca.htm";

macro_rules! cause {
    ($id:expr, $summary:literal, [$($fix:literal),+ $(,)?], [$($doc:expr),* $(,)?]) => {
        CauseInfo { id: $id, summary: $summary, fix: &[$($fix),+], docs: &[$($doc),*] }
    };
}

pub const CAUSES: &[CauseInfo] = &[
    cause!(
        id::REFRESH_APPROVAL_LIMIT_EVICTED,
        "Five newer authorizations of this user for this app evicted this refresh token (Salesforce keeps five per user per app).",
        [
            "Stop re-running the authorization flow per environment or tool: reuse the stored refresh token.",
            "Give each integration its own integration user.",
            "For server-to-server access prefer the JWT bearer flow, which issues no refresh token."
        ],
        [APPROVALS_DOC]
    ),
    cause!(
        id::REFRESH_ROTATED_TOKEN_REUSED,
        "This refresh token was already exchanged and replaced (refresh token rotation is on); presenting it again revokes the whole token family.",
        [
            "Persist the newest refresh token after every refresh, atomically.",
            "Allow one refresh at a time per token (grantdoctor can coalesce concurrent ones).",
            "Re-authorize: under rotation the reuse has revoked the current token too."
        ],
        [RTR_DOC]
    ),
    cause!(
        id::REFRESH_POLICY_IMMEDIATE_EXPIRY,
        "The connected app's refresh token policy is \"Immediately expire refresh token\": the token never worked.",
        [
            "Connected app → Edit Policies → Refresh Token Policy: \"Refresh token is valid until revoked\" (or a real lifetime)."
        ],
        [POLICY_DOC]
    ),
    cause!(
        id::REFRESH_POLICY_IDLE_EXPIRY,
        "The refresh token expired after going unused longer than the app's idle limit (or the 30-day idle cap).",
        [
            "Use the token regularly (a scheduled refresh inside the idle window).",
            "Or change the app's \"Expire refresh token if not used for\" policy / the idle TTL limit."
        ],
        [POLICY_DOC]
    ),
    cause!(
        id::REFRESH_POLICY_ABSOLUTE_EXPIRY,
        "The refresh token reached the app's absolute lifetime (\"Expire refresh token after N\").",
        [
            "Change the app's \"Expire refresh token after\" policy, or re-authorize on a schedule before it."
        ],
        [POLICY_DOC]
    ),
    cause!(
        id::REFRESH_MISSING_REFRESH_SCOPE,
        "No usable refresh token exists: the authorization did not return one (scope lacked refresh_token / offline_access) or the client sent a placeholder.",
        [
            "Add refresh_token (or offline_access) to the scope of the authorization request and to the connected app's selected OAuth scopes.",
            "Re-authorize, and store the refresh_token the response carries."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::REFRESH_WRONG_HOST,
        "The refresh token was issued by another Salesforce host (sandbox vs production, or another My Domain) than the one it is sent to.",
        [
            "Refresh at the host that issued the token: keep the login host / instance_url with the token."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::REFRESH_CLIENT_MISMATCH,
        "The refresh token was issued to another connected app than the client_id presenting it.",
        ["Send the consumer key of the app that obtained the token."],
        [ERRORS_DOC]
    ),
    cause!(
        id::REFRESH_ORG_REFRESHED,
        "The org was refreshed (a sandbox refresh makes a new org): every earlier token of it is dead.",
        [
            "Re-authorize after a sandbox refresh.",
            "Re-approve JWT pre-authorization in the new org."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::REFRESH_REVOKED,
        "The refresh token was revoked: by the user, an admin, a deactivation or a session kill.",
        [
            "Check Setup → Connected Apps OAuth Usage and the user's Connected Apps page.",
            "Re-authorize."
        ],
        [APPROVALS_DOC]
    ),
    cause!(
        id::REFRESH_CONCURRENT_REFRESH,
        "Several refreshes with the same refresh token reached Salesforce at once; the losers get this error.",
        [
            "Allow one refresh at a time per token (grantdoctor coalesces concurrent ones when enabled).",
            "Retry once with the newest stored token."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::CODE_REUSED,
        "This authorization code was already exchanged; codes work once.",
        ["Exchange each code once; look for double submits and retried exchanges."],
        [ERRORS_DOC]
    ),
    cause!(
        id::CODE_EXPIRED,
        "The authorization code expired before it was exchanged.",
        ["Exchange the code right after the redirect."],
        [ERRORS_DOC]
    ),
    cause!(
        id::CODE_PKCE_MISMATCH,
        "The PKCE code_verifier is missing or does not match the challenge sent to /authorize.",
        [
            "Send the code_verifier that belongs to the code_challenge used at /authorize (S256: base64url of its SHA-256)."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::CODE_REDIRECT_URI_MISMATCH,
        "The redirect_uri of the exchange is not exactly the one used at /authorize and configured on the app.",
        [
            "Send byte for byte the callback URL configured on the app and used at /authorize (scheme, trailing slash, encoding)."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::JWT_ASSERTION_EXPIRED,
        "The JWT's exp is in the past by Salesforce's clock.",
        [
            "Set exp = now + 60…180 s, in UTC seconds.",
            "Sync the clock (NTP); sign a new assertion for every request."
        ],
        [JWT_DOC]
    ),
    cause!(
        id::JWT_AUDIENCE_INVALID,
        "The JWT's aud is not accepted for the host it was sent to.",
        [
            "aud = https://login.salesforce.com (production), https://test.salesforce.com (sandbox), or the site / My Domain URL, with no trailing slash."
        ],
        [JWT_DOC]
    ),
    cause!(
        id::JWT_EXTERNAL_CLIENT_APP_HOST,
        "An External Client App was used through login/test; such apps live only in their org's My Domain.",
        [
            "Call https://<MyDomain>.my.salesforce.com/services/oauth2/token and put the same URL in aud."
        ],
        [JWT_DOC]
    ),
    cause!(
        id::JWT_NOT_PREAUTHORIZED,
        "The user is not pre-authorized for this app and never approved it in a flow that issued a refresh token.",
        [
            "Set Permitted Users to \"Admin approved users are pre-authorized\" and assign the user's profile or a permission set.",
            "Or have the user approve once through the web-server flow with the refresh_token scope.",
            "After a sandbox refresh, redo the approval in the new org; check host and aud match the user's org."
        ],
        [JWT_DOC]
    ),
    cause!(
        id::JWT_INVALID_SIGNATURE,
        "The assertion does not verify: wrong algorithm, malformed token or claims, or a key that does not match the app's certificate.",
        [
            "Sign RS256 with the private key whose certificate is uploaded on the app (\"Use digital signatures\").",
            "Send iss, sub, aud and exp."
        ],
        [JWT_DOC]
    ),
    cause!(
        id::JWT_UNKNOWN_ISSUER,
        "The JWT's iss is not a consumer key known at this host.",
        ["iss = the connected app's consumer key, in the org (production or sandbox) you call."],
        [JWT_DOC]
    ),
    cause!(
        id::PASSWORD_BAD_CREDENTIALS,
        "Salesforce rejected the username, password or security token.",
        [
            "Check the password and append the user's current security token (reset after every password change).",
            "Or add the caller's IP to trusted ranges."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::PASSWORD_FLOW_BLOCKED,
        "The username-password OAuth flow looks blocked for this org (the default since Summer '23).",
        [
            "Move to the JWT bearer or client credentials flow.",
            "Or re-enable \"Allow OAuth Username-Password Flows\" (not recommended)."
        ],
        [PW_FLOW_DOC]
    ),
    cause!(
        id::PASSWORD_LOCKOUT_RISK,
        "Repeated password failures for this username: the user will be locked out.",
        ["Stop retrying and fix the credentials first."],
        [ERRORS_DOC]
    ),
    cause!(
        id::CC_WRONG_DOMAIN,
        "The client credentials flow was sent to login/test; it works only on the org's My Domain.",
        ["Call https://<MyDomain>.my.salesforce.com/services/oauth2/token."],
        [ERRORS_DOC]
    ),
    cause!(
        id::CC_NO_RUN_AS_USER,
        "The client credentials flow is not enabled on the app or has no Run As user.",
        [
            "Enable the client credentials flow on the app and set a Run As user (API Only for External Client Apps)."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::USER_IP_RESTRICTED,
        "The login came from an IP outside the user's profile ranges (or outside login hours).",
        [
            "Add the egress IP to the profile's Login IP Ranges or the app's IP relaxation; check login hours."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::USER_INACTIVE,
        "The user is deactivated.",
        ["Reactivate the user, or authorize as another (active) integration user."],
        [ERRORS_DOC]
    ),
    cause!(
        id::ORG_INACTIVE,
        "The org is locked, closed, suspended or expired.",
        ["Contact the org's admin or Salesforce; nothing can be retried until the org is active."],
        [ERRORS_DOC]
    ),
    cause!(
        id::APP_USER_NOT_APPROVED,
        "The app admits only admin-approved users and this user has no assigned profile or permission set.",
        [
            "Assign the user's profile or a permission set to the app (Manage → Profiles / Permission Sets)."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::USER_LOGIN_RATE_EXCEEDED,
        "This user exceeded Salesforce's login rate (3,600 per hour).",
        ["Cache access tokens instead of minting one per call."],
        [ERRORS_DOC]
    ),
    cause!(
        id::CLIENT_INVALID_SECRET,
        "The consumer secret is wrong for this app (mistyped, rotated, or another app's).",
        ["Copy the current consumer secret from the app (Manage Consumer Details)."],
        [ERRORS_DOC]
    ),
    cause!(
        id::CLIENT_UNKNOWN_CLIENT_ID,
        "Salesforce does not know this consumer key at this host or org.",
        [
            "Check the key for typos and whitespace, and that the app exists in the org you call (production vs sandbox).",
            "A new app can take up to 10 minutes to propagate."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::REQUEST_MALFORMED,
        "The request is not a valid token request: form-encoded POST over HTTPS with a correct grant_type.",
        [
            "Send Content-Type: application/x-www-form-urlencoded with a form body, by POST, with a valid grant_type."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::TRANSIENT,
        "A transient Salesforce-side failure (maintenance, outage, unknown_error).",
        ["Retry with exponential back-off."],
        [ERRORS_DOC]
    ),
    cause!(
        id::REFRESH_TOKEN_MALFORMED,
        "The value sent is not a refresh token as Salesforce issued it: an access token, or a refresh token mangled in storage (quotes, whitespace, encoded twice, cut short).",
        [
            "Send the stored refresh token exactly as Salesforce returned it: decode it once, trim it, no quotes.",
            "Check that the secret store or config templating did not alter it (an access token starts with the org id and `!`)."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::REQUEST_SCOPE_ON_REFRESH,
        "Salesforce refuses a `scope` parameter on a refresh (and on client credentials): the scope is fixed at authorization.",
        [
            "Do not send `scope` on a refresh: many OAuth libraries add it by default; turn that off."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::JWT_REFRESH_SCOPE_MISSING,
        "The connected app used for the JWT bearer flow lacks the refresh_token scope, or the user is not pre-authorized for it.",
        [
            "Add the `refresh_token, offline_access` scope to the connected app's selected OAuth scopes.",
            "Pre-authorize the user: policy \"Admin approved users are pre-authorized\" and the user's profile or a permission set on the app."
        ],
        [JWT_DOC]
    ),
    cause!(
        id::JWT_IDENTITY_PROPAGATING,
        "A user, org or pre-authorization created minutes ago has not reached every Salesforce server yet.",
        ["Retry with back-off for a few minutes before changing any setting."],
        [JWT_DOC]
    ),
    cause!(
        id::CC_NO_VALID_SCOPES,
        "The app used for client credentials has no scope Salesforce accepts for this flow.",
        ["Give the connected app the `api` scope (`full` alone is not enough)."],
        [ERRORS_DOC]
    ),
    cause!(
        id::CLIENT_SECRET_CHANGED,
        "The consumer secret this client sends is not the one that worked before: the secret was rotated or staged.",
        [
            "Deploy the current consumer secret everywhere this app runs (every replica, job and secret store)."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::GD_DEAD_TOKEN_RETRIED,
        "Salesforce already declared this refresh token dead; grantdoctor answered the retry itself instead of sending it again.",
        [
            "Stop retrying a dead refresh token: re-authorize (or let JWT bearer recovery do it).",
            "Each retry sent to Salesforce counts against the user's login rate and fills Login History."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::GD_UPSTREAM_UNREACHABLE,
        "grantdoctor could not reach Salesforce at all (DNS, connect or TLS): the answer is the proxy's own, not Salesforce's.",
        [
            "Check the proxy's own network path to Salesforce: DNS, egress, firewall, `--resolve` and `--upstream-ca`.",
            "This is not a Salesforce failure: retrying the same path will fail the same way."
        ],
        [ERRORS_DOC]
    ),
    cause!(
        id::UNKNOWN,
        "grantdoctor could not tell the cause; the event carries every fact it recorded.",
        ["Check the user's Login History in Setup for the matching failed login."],
        [ERRORS_DOC]
    ),
];

/// The catalogue entry of `id`.
pub fn info(id: &str) -> &'static CauseInfo {
    CAUSES
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("cause id {id} is in the catalogue"))
}

/// The warnings of `docs/causes.md`, by id.
pub const WARNINGS: &[&str] = &[
    warn::APPROVAL_LIMIT_REACHED,
    warn::APPROVAL_EVICTED,
    warn::NO_REFRESH_TOKEN,
    warn::ROTATION_ON,
    warn::PASSWORD_FAILURES,
    warn::LOGIN_RATE,
    warn::JWT_EXP_FAR,
    warn::RETRY_STORM,
];
