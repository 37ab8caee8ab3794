//! The proxy's own responses: every refusal or failure becomes a plain-text reason here, in
//! one place, with a `grantdoctor-error` header that names its kind. The connection code and
//! the token path both answer with them, so they live beside both rather than in either.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, ProxyBody};

/// The header naming the kind of the proxy's own answer.
pub const ERROR_HEADER: &str = "grantdoctor-error";

/// Why the proxy answered itself instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    PortNotAllowed,
    UpstreamUnreachable,
    UpstreamFailed,
    ProxyAuthRequired,
    Overloaded,
    Loop,
    UpstreamTimeout,
    /// Gateway mode: no rule serves the request.
    NoRoute,
    /// The request head is over `--max-header-bytes`.
    HeadTooLarge,
    /// The client's request body broke off or was malformed (bad chunked encoding).
    BadRequestBody,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::PortNotAllowed => "port-not-allowed",
            Self::UpstreamUnreachable => "upstream-unreachable",
            Self::UpstreamFailed => "upstream-failed",
            Self::ProxyAuthRequired => "proxy-auth-required",
            Self::Overloaded => "overloaded",
            Self::Loop => "loop",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::NoRoute => "no-route",
            Self::HeadTooLarge => "head-too-large",
            Self::BadRequestBody => "bad-request-body",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::BadRequestBody => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::PortNotAllowed | Self::Loop => StatusCode::FORBIDDEN,
            Self::UpstreamUnreachable | Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::ProxyAuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Carried by the proxy's own answers, so the token path can tell "grantdoctor could not get
/// an answer" from what Salesforce said (a header could be forged by an upstream).
#[derive(Debug, Clone)]
pub struct OwnAnswer {
    pub kind: ErrorKind,
    pub reason: String,
}

/// A plain-text response; the reason never contains secrets because callers build it from
/// hosts, ports and I/O errors only.
pub fn error(kind: ErrorKind, reason: impl std::fmt::Display) -> Response<ProxyBody> {
    let reason = reason.to_string();
    let text = format!("grantdoctor: {reason}\n");
    let mut response = Response::new(body::full(text));
    *response.status_mut() = kind.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(ERROR_HEADER, HeaderValue::from_static(kind.as_str()));
    response.extensions_mut().insert(OwnAnswer { kind, reason });
    response
}

/// The innermost cause of an error chain, which is the part a user can act on
/// ("Connection refused", "invalid peer certificate: UnknownIssuer").
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    let mut text = current.to_string();
    while let Some(next) = current.source() {
        let next_text = next.to_string();
        if !next_text.is_empty() {
            text = next_text;
        }
        current = next;
    }
    text
}

/// The client's own request body, when that is what failed (a malformed chunked encoding,
/// a body cut short): the client's fault, not the upstream's.
pub fn client_body_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(body) = e.downcast_ref::<crate::body::BodyError>() {
            return Some(root_cause(body));
        }
        current = e.source();
    }
    None
}

/// The 502 for an upstream request that failed, separating "never connected" from "broke".
pub fn upstream_error(
    authority: &str,
    err: &hyper_util::client::legacy::Error,
) -> Response<ProxyBody> {
    let cause = root_cause(err);
    if let Some(addr) = crate::upstream::loop_in(err) {
        return error(
            ErrorKind::Loop,
            format_args!("{authority} ({addr}) is grantdoctor itself: the request would loop"),
        );
    }
    if let Some(body) = client_body_error(err) {
        return error(
            ErrorKind::BadRequestBody,
            format_args!("the request body could not be read: {body}"),
        );
    }
    if err.is_connect() {
        error(
            ErrorKind::UpstreamUnreachable,
            format_args!("upstream {authority} unreachable: {cause}"),
        )
    } else {
        error(
            ErrorKind::UpstreamFailed,
            format_args!("upstream {authority} failed: {cause}"),
        )
    }
}
