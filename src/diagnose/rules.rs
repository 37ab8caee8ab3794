//! The rules, in decision order: mechanics first (certain from the
//! request), then identity errors, then the refresh-token causes from history.

use crate::ledger::{LedgerView, TokenHistory, fmt_ms};
use crate::oauth::{GrantType, ProxyFailure, RequestFacts, ResponseFacts, TokenPresence};

use super::hosts::{HostKind, same_org_family};
use super::{DeclaredPolicy, Findings, Policies};

const DAY_MS: i64 = 86_400_000;
const IDLE_CAP_MS: i64 = 30 * DAY_MS;
const NEVER_SEEN: &str = "not observed: grantdoctor never saw this refresh token issued; its issue, uses and the user's later authorizations would decide";
const NO_HISTORY: &str = "not observed: explained without history; run the traffic through grantdoctor (or give it an org connection) to decide";
/// A new user, org or pre-authorization reaches every Salesforce server within minutes.
const PROPAGATION_MS: i64 = 15 * 60_000;

pub(super) fn apply(
    req: &RequestFacts,
    resp: &ResponseFacts,
    view: &LedgerView,
    policies: &Policies,
    now: i64,
    f: &mut Findings,
) {
    match &resp.proxy_failure {
        Some(ProxyFailure::Unreachable(reason)) => {
            f.add(
                "gd.upstream_unreachable",
                0.97,
                vec![
                    format!("grantdoctor answered {} itself: {reason}", resp.status),
                    "Salesforce never saw this request: the proxy's own network path failed".into(),
                ],
            );
            return;
        }
        Some(ProxyFailure::Failed(reason)) => {
            f.add(
                "sf.transient",
                0.8,
                vec![format!(
                    "grantdoctor answered {} itself: {reason}",
                    resp.status
                )],
            );
            return;
        }
        None => {}
    }
    if resp.description_is("scope parameter not supported") {
        scope_on_refresh(req, f);
        return;
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
        f.add("sf.transient", 0.85, vec![what]);
        return;
    }
    let Some(error) = resp.error.as_deref() else {
        return;
    };
    let desc = |prefix: &str| resp.description_is(prefix);
    let grant = req.grant;
    match error {
        "invalid_grant" if desc("expired access/refresh token") => {
            refresh_expired(req, view, policies, now, f)
        }
        "invalid_grant" if desc("expired authorization code") => match grant {
            GrantType::RefreshToken => concurrent_refresh(view, f),
            GrantType::JwtBearer => assertion_expired(req, now, f),
            _ => code_expired(view, f),
        },
        "invalid_grant" if desc("invalid code verifier") => {
            let evidence = if req.has_code_verifier {
                "the code_verifier sent does not match the code_challenge given at /authorize"
            } else {
                "the exchange carried no code_verifier, but the code was issued with a PKCE challenge"
            };
            f.add(
                "sf.code.pkce_mismatch",
                if req.has_code_verifier { 0.85 } else { 0.97 },
                vec![evidence.into()],
            );
        }
        "invalid_grant" if desc("authentication failure") || desc("invalid user credentials") => {
            if grant == GrantType::Password {
                password_failure(req, view, f);
            } else {
                f.add("sf.unknown", 0.5, vec![format!(
                    "`authentication failure` on a {} exchange: the user's, org's or app's settings refused the login; Login History shows which",
                    grant_name(req)
                )]);
            }
        }
        "invalid_grant" if desc("ip restricted") => f.add(
            "sf.user.ip_restricted",
            0.95,
            vec![format!(
                "Salesforce refused the login from this network (`{}`)",
                resp.error_description.as_deref().unwrap_or("")
            )],
        ),
        "invalid_grant" if desc("inactive user") => {
            f.add("sf.user.inactive", 0.95, vec![user_line(req)])
        }
        "inactive_user" => f.add("sf.user.inactive", 0.95, vec![user_line(req)]),
        "invalid_grant" if desc("user hasn't approved this consumer") => {
            not_approved(req, view, now, f)
        }
        "invalid_grant" if desc("inactive organization") => f.add(
            "sf.org.inactive",
            0.95,
            vec![format!(
                "Salesforce answered `inactive organization` at {}: the org is locked, suspended or expired",
                req.host
            )],
        ),
        "invalid_grant" if desc("no valid scopes defined") => f.add(
            "sf.cc.no_valid_scopes",
            0.95,
            vec![format!(
                "app {}: none of its selected scopes is allowed for the client credentials flow (it needs `api`)",
                req.client_id.as_deref().unwrap_or("(unknown)")
            )],
        ),
        "invalid_request" if desc("refresh_token scope is required") => f.add(
            "sf.jwt.refresh_scope_missing",
            0.95,
            vec![format!(
                "app {}: Salesforce requires the refresh_token scope and a pre-authorized user for this JWT bearer login",
                req.client_id.as_deref().unwrap_or("(unknown)")
            )],
        ),
        "invalid_grant" if desc("invalid assertion") => invalid_assertion(req, f),
        "invalid_grant" if desc("audience is invalid") || desc("audience validation failed") => {
            audience(req, f)
        }
        "invalid_grant" if desc("request not supported on this domain") => {
            let certain = HostKind::of(&req.host).is_generic();
            f.add(
                "sf.cc.wrong_domain",
                if certain { 0.97 } else { 0.8 },
                vec![format!(
                    "the client credentials request went to {}, which is not the org's My Domain",
                    req.host
                )],
            );
        }
        "invalid_grant" if desc("no client credentials user enabled") => f.add(
            "sf.cc.no_run_as_user",
            0.95,
            vec![format!(
                "app {}: client credentials flow off or no Run As user",
                req.client_id.as_deref().unwrap_or("(unknown)")
            )],
        ),
        "invalid_grant" if desc("token validity expired") => f.add(
            "sf.refresh.policy_absolute_expiry",
            0.6,
            vec![
                "`token validity expired` is believed to mean the absolute refresh-token lifetime"
                    .into(),
            ],
        ),
        "inactive_org" => f.add(
            "sf.org.inactive",
            0.95,
            vec![format!("Salesforce answered inactive_org at {}", req.host)],
        ),
        "invalid_app_access" => f.add(
            "sf.app.user_not_approved",
            0.95,
            vec![format!(
                "{}: the app admits only admin-approved users",
                user_line(req)
            )],
        ),
        "app_not_found" => {
            let aud_generic = req.jwt.as_ref().is_some_and(|j| {
                j.aud.iter().any(|a| {
                    a == "https://login.salesforce.com" || a == "https://test.salesforce.com"
                })
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
                evidence
                    .push("External Client Apps resolve only through their org's My Domain".into());
            }
            f.add("sf.jwt.external_client_app_host", confidence, evidence);
        }
        "invalid_client" | "invalid_client_credentials" => invalid_client(req, view, f),
        "invalid_client_id" => {
            let id = req.client_id.as_deref().unwrap_or("(none)");
            if grant == GrantType::JwtBearer {
                f.add(
                    "sf.jwt.unknown_issuer",
                    0.92,
                    vec![format!(
                        "iss = {id} is not a consumer key known at {}",
                        req.host
                    )],
                );
            }
            f.add("sf.client.unknown_client_id", 0.88, vec![format!("client_id {id} is unknown at {} (a production app at a sandbox host, or the reverse?)", req.host)]);
            // A known refresh token sent to a host of another org: the host is the mistake.
            if let Some(token) = &view.token
                && let Some(line) = wrong_host(token, &req.host)
            {
                f.add(
                    "sf.refresh.wrong_host",
                    0.93,
                    vec![line, history_line(token)],
                );
            }
        }
        "unsupported_grant_type" | "invalid_request" => malformed(req, f),
        "redirect_uri_mismatch" => f.add(
            "sf.code.redirect_uri_mismatch",
            0.92,
            vec![format!(
                "redirect_uri = {}",
                req.redirect_uri.as_deref().unwrap_or("(absent)")
            )],
        ),
        "rate_limit_exceeded" => f.add("sf.user.login_rate_exceeded", 0.95, vec![user_line(req)]),
        _ => {}
    }
}

/// The grant type as the request sent it, for evidence lines.
fn grant_name(req: &RequestFacts) -> &str {
    req.grant_type.as_deref().unwrap_or("(no grant type)")
}

fn user_line(req: &RequestFacts) -> String {
    let user = req
        .username
        .clone()
        .or_else(|| req.jwt.as_ref().and_then(|j| j.sub.clone()));
    match user {
        Some(user) => format!("user {user}"),
        None => format!("the user of this {} exchange", grant_name(req)),
    }
}

fn refresh_expired(
    req: &RequestFacts,
    view: &LedgerView,
    policies: &Policies,
    now: i64,
    f: &mut Findings,
) {
    let sent = match &req.refresh_token {
        TokenPresence::Present(_) => None,
        TokenPresence::Empty => Some("an empty refresh_token"),
        TokenPresence::Placeholder => {
            Some("a placeholder refresh_token (null/undefined): the client stored none")
        }
        TokenPresence::Absent => Some("no refresh_token parameter"),
    };
    let no_refresh_authorization = view.client_authorized_without_refresh.as_ref().map(|(at, scope)| {
        format!(
            "the latest authorization of this app, at {}, returned no refresh_token (scope: {})",
            fmt_ms(*at),
            scope.as_deref().unwrap_or("none")
        )
    });
    if let Some(sent) = sent {
        let mut evidence = vec![format!("the request carried {sent}")];
        evidence.extend(no_refresh_authorization);
        f.add("sf.refresh.missing_refresh_scope", 0.95, evidence);
        return;
    }
    let Some(token) = &view.token else {
        if malformed_token(req, view, f) {
            return;
        }
        if let Some(line) = no_refresh_authorization {
            f.add(
                "sf.refresh.missing_refresh_scope",
                0.6,
                vec![line, NEVER_SEEN.into()],
            );
        }
        let unseen = if view.watched { NEVER_SEEN } else { NO_HISTORY };
        for (id, prior) in [
            ("sf.refresh.approval_limit_evicted", 0.4),
            ("sf.refresh.revoked", 0.35),
            ("sf.refresh.policy_idle_expiry", 0.3),
            ("sf.refresh.rotated_token_reused", 0.3),
            ("sf.refresh.policy_immediate_expiry", 0.25),
        ] {
            f.prior(id, prior, vec![unseen.into()]);
        }
        return;
    };
    let history = history_line(token);
    let client = req.client_id.as_deref().unwrap_or("");
    if let Some(at) = token.rotated_at {
        f.add("sf.refresh.rotated_token_reused", 0.97, vec![
            format!("this refresh token was exchanged successfully at {} and that response carried a new refresh_token: rotation is on", fmt_ms(at)),
            history.clone(),
        ]);
    }
    if !client.is_empty() && token.client_id != client {
        f.add(
            "sf.refresh.client_mismatch",
            0.95,
            vec![
                format!(
                    "the token was issued to client_id {}, and client_id {client} presented it",
                    token.client_id
                ),
                history.clone(),
            ],
        );
    }
    if let Some(line) = wrong_host(token, &req.host) {
        f.add("sf.refresh.wrong_host", 0.95, vec![line, history.clone()]);
    }
    if token.newer_approvals.len() >= view.approval_limit {
        let times: Vec<String> = token.newer_approvals.iter().map(|t| fmt_ms(*t)).collect();
        f.add(
            "sf.refresh.approval_limit_evicted",
            0.95,
            vec![
                format!(
                    "{} newer refresh tokens were issued to this user for this app: at {}",
                    times.len(),
                    times.join(", ")
                ),
                history.clone(),
            ],
        );
    }
    if let Some((old, new, at)) = &view.org_changed
        && *at > token.issued_at
    {
        f.add(
            "sf.refresh.org_refreshed",
            0.9,
            vec![format!(
                "{} answered for org {old} when the token was issued and for org {new} since {}",
                token.host,
                fmt_ms(*at)
            )],
        );
    } else if view.org_failures_recent >= 2 {
        f.add(
            "sf.refresh.org_refreshed",
            0.75,
            vec![format!(
                "{} other refresh tokens of the same org failed in the last 10 minutes",
                view.org_failures_recent
            )],
        );
    }
    if f.has_certain() {
        return;
    }
    let last = token.last_success.unwrap_or(token.issued_at);
    let idle = now - last;
    let age = now - token.issued_at;
    match policies.get(&token.client_id) {
        Some(DeclaredPolicy::Immediate) => {
            f.add(
                "sf.refresh.policy_immediate_expiry",
                0.95,
                vec![
                    "the app's refresh token policy is declared as immediate expiry".into(),
                    history.clone(),
                ],
            );
        }
        Some(DeclaredPolicy::IdleSeconds(limit)) if idle >= *limit as i64 * 1000 => {
            f.add(
                "sf.refresh.policy_idle_expiry",
                0.93,
                vec![
                    format!(
                        "unused for {} (since {}); the app's declared idle limit is {}",
                        span(idle),
                        fmt_ms(last),
                        span(*limit as i64 * 1000)
                    ),
                    history.clone(),
                ],
            );
        }
        Some(DeclaredPolicy::AbsoluteSeconds(limit)) if age >= *limit as i64 * 1000 => {
            f.add(
                "sf.refresh.policy_absolute_expiry",
                0.93,
                vec![
                    format!(
                        "issued {} ago; the app's declared lifetime is {}",
                        span(age),
                        span(*limit as i64 * 1000)
                    ),
                    history.clone(),
                ],
            );
        }
        _ => {}
    }
    if idle >= IDLE_CAP_MS {
        f.add(
            "sf.refresh.policy_idle_expiry",
            0.85,
            vec![
                format!(
                    "unused for {} (since {}): past the 30-day idle cap",
                    span(idle),
                    fmt_ms(last)
                ),
                history.clone(),
            ],
        );
    }
    if view.user_revocations_recent > 0 {
        f.add(
            "sf.refresh.revoked",
            0.9,
            vec![
                format!(
                    "{} other refresh tokens of this user for this app, which had worked, failed in the last 10 minutes: the app's access was revoked (by the user, an admin, or a deactivation)",
                    view.user_revocations_recent
                ),
                history.clone(),
            ],
        );
    }
    let first_use = token.uses == 0 && !f.has_certain();
    if first_use {
        // One unexplained first-use failure is as much a revocation as a policy; only another
        // token of the app failing the same way makes the policy near certain.
        let others = view.client_first_use_failures;
        let mut evidence = vec![
            format!(
                "issued at {} and never refreshed successfully: this is its first use",
                fmt_ms(token.issued_at)
            ),
            history.clone(),
        ];
        if others > 0 {
            evidence.push(format!(
                "{others} other refresh tokens of this app also failed on their first use, with nothing else to explain them"
            ));
        }
        f.first_use_unexplained();
        f.add(
            "sf.refresh.policy_immediate_expiry",
            if others > 0 { 0.9 } else { 0.7 },
            evidence,
        );
    }
    if first_use || !f.has_certain() {
        // A revocation is never seen on the wire, and authorizations made outside
        // grantdoctor evict silently: by elimination these are guesses, which the org's own
        // records (an org connection) can decide.
        f.prior("sf.refresh.revoked", if first_use && view.client_first_use_failures > 0 { 0.45 } else { 0.6 }, vec![
            format!(
                "not observed: a revocation by the user or an admin; known token, none of the other causes: {} newer authorizations seen ({} evict), not rotated, unused for {}",
                token.newer_approvals.len(),
                view.approval_limit,
                span(idle)
            ),
            history.clone(),
        ]);
        f.prior(
            "sf.refresh.approval_limit_evicted",
            0.4,
            vec![
                format!(
                    "not observed: authorizations of this user for this app made outside grantdoctor (another tool, a laptop, a CI job); {} seen through it",
                    token.newer_approvals.len()
                ),
                history,
            ],
        );
        if token.uses > 0 {
            f.prior(
                "sf.refresh.policy_absolute_expiry",
                0.3,
                vec![format!(
                    "issued {} ago; not observed: no absolute lifetime is declared for this app",
                    span(age)
                )],
            );
        }
    }
}

/// Why `host` is not where this token can be refreshed, if it is not.
fn wrong_host(token: &TokenHistory, host: &str) -> Option<String> {
    let instance = token.instance_host.as_deref().unwrap_or(&token.host);
    let fits = same_org_family(&token.host, host) && same_org_family(instance, host);
    (!fits).then(|| {
        format!(
            "the token was issued by {} for the org at {instance}, and sent to {host}",
            token.host
        )
    })
}

fn history_line(token: &TokenHistory) -> String {
    let used = match (token.uses, token.last_success) {
        (0, _) => "never refreshed".to_owned(),
        (n, Some(at)) => format!("refreshed {n} times, last at {}", fmt_ms(at)),
        (n, None) => format!("refreshed {n} times"),
    };
    if token.issued_by == crate::ledger::UNSEEN {
        return format!(
            "token first seen at {} at {} (issued before grantdoctor watched); {used}",
            fmt_ms(token.issued_at),
            token.host
        );
    }
    format!(
        "token issued at {} by {} via {}; {used}",
        fmt_ms(token.issued_at),
        token.host,
        token.issued_by
    )
}

fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

fn concurrent_refresh(view: &LedgerView, f: &mut Findings) {
    match &view.concurrent {
        Some(c) if c.in_flight > 0 => f.add("sf.refresh.concurrent_refresh", 0.95, vec![format!("{} other refresh requests with this token were in flight", c.in_flight)]),
        Some(c) if c.finished_ms_ago.is_some_and(|ms| ms <= 10_000) => f.add("sf.refresh.concurrent_refresh", 0.9, vec![format!(
            "another refresh with this token came back {} ms earlier",
            c.finished_ms_ago.unwrap_or_default()
        )]),
        _ => f.prior("sf.refresh.concurrent_refresh", 0.6, vec!["not observed: no other refresh with this token was seen in flight (another client, or another proxy?)".into()]),
    }
}

fn code_expired(view: &LedgerView, f: &mut Findings) {
    if !view.watched {
        f.prior("sf.code.expired", 0.5, vec![NO_HISTORY.into()]);
        f.prior("sf.code.reused", 0.4, vec![NO_HISTORY.into()]);
        return;
    }
    match view.code_redeemed_at {
        Some(at) => f.add(
            "sf.code.reused",
            0.97,
            vec![format!(
                "this authorization code was already exchanged successfully at {}",
                fmt_ms(at)
            )],
        ),
        None => {
            f.add("sf.code.expired", 0.6, vec!["the code was not seen redeemed before: it expired (or was garbled) before this exchange".into()]);
            f.prior(
                "sf.code.reused",
                0.3,
                vec![
                    "not observed: an earlier exchange of this code (by another client or proxy?)"
                        .into(),
                ],
            );
        }
    }
}

fn assertion_expired(req: &RequestFacts, now: i64, f: &mut Findings) {
    let Some(exp) = req.jwt.as_ref().and_then(|j| j.exp) else {
        f.add(
            "sf.jwt.assertion_expired",
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
        f.add("sf.jwt.assertion_expired", 0.97, evidence);
    } else {
        f.add("sf.jwt.assertion_expired", 0.6, vec![format!(
            "exp is {} s ahead of the time Salesforce sent: a clock difference, or an assertion cached and replayed?",
            -behind_s
        )]);
    }
}

fn invalid_assertion(req: &RequestFacts, f: &mut Findings) {
    if req.jwt_malformed {
        f.add("sf.jwt.invalid_signature", 0.95, vec!["the assertion is not a decodable JWT (three base64url parts, JSON header and claims)".into()]);
        return;
    }
    let Some(jwt) = &req.jwt else {
        f.add(
            "sf.jwt.invalid_signature",
            0.9,
            vec!["the request carried no assertion".into()],
        );
        return;
    };
    if jwt.alg.as_deref() != Some("RS256") {
        f.add(
            "sf.jwt.invalid_signature",
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
            "sf.jwt.invalid_signature",
            0.95,
            vec![format!(
                "missing or ill-typed claims: {}",
                missing.join(", ")
            )],
        );
        return;
    }
    f.add("sf.jwt.invalid_signature", 0.8, vec!["header and claims look right: the signature does not verify against the certificate uploaded on the app".into()]);
}

fn audience(req: &RequestFacts, f: &mut Findings) {
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
        "sf.jwt.audience_invalid",
        0.95,
        vec![format!(
            "aud = {aud}; at {} Salesforce expects {expected}",
            req.host
        )],
    );
}

fn password_failure(req: &RequestFacts, view: &LedgerView, f: &mut Findings) {
    let consecutive = view.password_failures + 1;
    let who = req.username.as_deref().unwrap_or("(no username)");
    if !view.watched {
        f.add(
            "sf.password.bad_credentials",
            0.8,
            vec![
                "Salesforce refused the username, the password or the security token appended to it"
                    .into(),
                NO_HISTORY.into(),
            ],
        );
        return;
    }
    f.add(
        "sf.password.bad_credentials",
        0.8,
        vec![format!(
            "username {who}: {consecutive} consecutive failure(s)"
        )],
    );
    if !view.password_success_at_host && view.password_failures_at_host >= 2 {
        f.add(
            "sf.password.flow_blocked",
            0.7,
            vec![format!(
                "all {} password logins seen at {} failed and none ever succeeded",
                view.password_failures_at_host + 1,
                req.host
            )],
        );
    }
    if consecutive >= super::warnings::PASSWORD_WARN_AFTER {
        f.add(
            "sf.password.lockout_risk",
            0.6,
            vec![format!("{consecutive} consecutive failures for {who}")],
        );
    }
}

fn malformed(req: &RequestFacts, f: &mut Findings) {
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
    f.add("sf.request.malformed", confidence, evidence);
}

fn scope_on_refresh(req: &RequestFacts, f: &mut Findings) {
    if req.has_scope {
        f.add(
            "sf.request.scope_on_refresh",
            0.97,
            vec![format!(
                "the {} request carried a `scope` parameter, which Salesforce refuses there",
                grant_name(req)
            )],
        );
    } else {
        f.add(
            "sf.request.scope_on_refresh",
            0.7,
            vec!["Salesforce says a scope was sent, but the request grantdoctor forwarded had no `scope` parameter (a query string?)".into()],
        );
    }
}

/// A presented refresh token that cannot be one, whatever its history.
fn malformed_token(req: &RequestFacts, view: &LedgerView, f: &mut Findings) -> bool {
    let Some(shape) = &req.refresh_shape else {
        return false;
    };
    let mut evidence = Vec::new();
    let mut confidence: f64 = 0.0;
    let mut found = |c: f64, line: String| {
        confidence = confidence.max(c);
        evidence.push(line);
    };
    if shape.access_token {
        found(
            0.97,
            "the value has the shape of an access token (a 15-character org id, then `!`): an access token was sent as the refresh token".into(),
        );
    }
    if shape.quoted {
        found(
            0.95,
            "the value is wrapped in quotes: it was stored or templated with them".into(),
        );
    }
    if shape.whitespace {
        found(
            0.95,
            "the value contains whitespace (a trailing newline from a file or secret store?)"
                .into(),
        );
    }
    if shape.double_encoded {
        found(
            0.93,
            "the value still holds a %XX escape after decoding: it was percent-encoded twice"
                .into(),
        );
    }
    if let Some((min, max)) = view.client_refresh_lengths
        && shape.len < min
    {
        found(
            0.9,
            format!(
                "the value is {} characters long; refresh tokens issued to this app were {min}–{max}: it was cut short",
                shape.len
            ),
        );
    }
    if evidence.is_empty() {
        return false;
    }
    evidence.push("grantdoctor never saw this value issued or used".into());
    f.add("sf.refresh.token_malformed", confidence, evidence);
    true
}

fn not_approved(req: &RequestFacts, view: &LedgerView, now: i64, f: &mut Findings) {
    let jwt = req.jwt.clone().unwrap_or_default();
    let sub = jwt.sub.as_deref().unwrap_or("(none)");
    let others_ok = view.jwt_other_subjects_ok;
    f.add(
        "sf.jwt.not_preauthorized",
        if others_ok > 0 { 0.6 } else { 0.9 },
        vec![format!(
            "sub = {sub} at {}: no admin pre-authorization and no earlier approval of this app that issued a refresh token",
            req.host
        )],
    );
    if others_ok > 0 {
        f.add(
            "sf.jwt.identity_propagating",
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
        f.add("sf.jwt.identity_propagating", 0.45, evidence);
    }
}

fn invalid_client(req: &RequestFacts, view: &LedgerView, f: &mut Findings) {
    let client = req.client_id.as_deref().unwrap_or("(none)");
    let evidence = if req.has_client_secret {
        format!("a client secret was sent for client_id {client}")
    } else {
        "no client secret was sent".into()
    };
    f.add("sf.client.invalid_secret", 0.9, vec![evidence]);
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
        f.add("sf.client.secret_changed", 0.93, evidence);
    }
}
