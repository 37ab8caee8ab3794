//! The lines of evidence several families share: who the user is, a token's history, a
//! duration, a host that does not fit a token.

use crate::diagnose::hosts::same_org_family;
use crate::ledger::{TokenHistory, UNSEEN, fmt_ms};
use crate::oauth::RequestFacts;

pub(super) const NEVER_SEEN: &str = "not observed: grantdoctor never saw this refresh token issued; its issue, uses and the user's later authorizations would decide";
pub(super) const NO_HISTORY: &str = "not observed: explained without history; run the traffic through grantdoctor (or give it an org connection) to decide";

/// The grant type as the request sent it, for evidence lines.
pub(super) fn grant_name(req: &RequestFacts) -> &str {
    req.grant_type.as_deref().unwrap_or("(no grant type)")
}

/// Who tried to log in, for identity causes.
pub(super) fn user_line(req: &RequestFacts) -> String {
    let user = req
        .username
        .clone()
        .or_else(|| req.jwt.as_ref().and_then(|j| j.sub.clone()));
    match user {
        Some(user) => format!("user {user}"),
        None => format!("the user of this {} exchange", grant_name(req)),
    }
}

/// Why `host` is not where this token can be refreshed, if it is not.
pub(super) fn wrong_host(token: &TokenHistory, host: &str) -> Option<String> {
    let instance = token.instance_host.as_deref().unwrap_or(&token.host);
    let fits = same_org_family(&token.host, host) && same_org_family(instance, host);
    (!fits).then(|| {
        format!(
            "the token was issued by {} for the org at {instance}, and sent to {host}",
            token.host
        )
    })
}

/// How a token was issued and used, for the evidence of every cause that rests on it.
pub(super) fn history_line(token: &TokenHistory) -> String {
    let used = match (token.uses, token.last_success) {
        (0, _) => "never refreshed".to_owned(),
        (n, Some(at)) => format!("refreshed {n} times, last at {}", fmt_ms(at)),
        (n, None) => format!("refreshed {n} times"),
    };
    if token.issued_by == UNSEEN {
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

/// A duration as a person reads it.
pub(super) fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}
