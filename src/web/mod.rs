//! The operator's view on the admin port: `/` (one HTML page: failures, token families, a
//! chart over time), `/events/<event id>` (one event), `/events/stream` (server-sent events),
//! `/api/events` and `/api/families` (the JSON behind it).
//!
//! Everything is embedded in the binary (sidecars have no internet) and the page renders its
//! tables on the server, so it reads with JavaScript off.
//!
//! Must never: show or return a secret. Events are the kept log lines (which hold none) and
//! families are the ledger's fingerprints, ids, times and counts.

mod chart;
mod families;
mod page;
pub mod params;
mod stream;

use std::time::SystemTime;

use http::{Response, StatusCode, header};

use crate::body::{self, ProxyBody};
use crate::ledger::GrantLedger;
use params::{BadParameter, EventFilter};

/// Families listed unless `limit` says otherwise.
const FAMILIES_DEFAULT: usize = 100;
/// Families the page shows: enough to find a user with the filter form.
const FAMILIES_ON_PAGE: usize = 200;
/// The parameters of `/` (the filter form's fields).
const PAGE_PARAMS: &[&str] = &[
    "event",
    "cause",
    "client_id",
    "org_id",
    "user_id",
    "since",
    "limit",
];

/// The answer to a path this module serves, or `None` for a path it does not.
pub async fn route(
    path: &str,
    query: Option<&str>,
    ledger: &GrantLedger,
) -> Option<Response<ProxyBody>> {
    let now = SystemTime::now();
    let answer = match path {
        "/" => page(query, None, ledger, now).await,
        "/events/stream" => params::pairs(query, &[]).map(|_| stream::response()),
        "/api/events" => api_events(query, now),
        "/api/families" => api_families(query, ledger, now).await,
        _ => {
            let id = path
                .strip_prefix("/events/")
                .filter(|id| id.starts_with("ev_"))?;
            page(query, Some(id), ledger, now).await
        }
    };
    Some(answer.unwrap_or_else(|bad| bad_parameter(&bad)))
}

/// `/events?limit=N`: the recent kept events, the limit checked as strictly as `/api/events`
/// checks it.
pub fn recent_events(query: Option<&str>) -> Response<ProxyBody> {
    let limit = params::pairs(query, &["limit"]).and_then(|pairs| match pairs.first() {
        Some((_, value)) => params::limit(value, params::MAX_LIMIT),
        None => Ok(params::DEFAULT_LIMIT),
    });
    match limit {
        Ok(limit) => {
            json(serde_json::Value::Array(crate::telemetry::recent_events(limit)).to_string())
        }
        Err(bad) => bad_parameter(&bad),
    }
}

fn api_events(query: Option<&str>, now: SystemTime) -> Result<Response<ProxyBody>, BadParameter> {
    let filter = EventFilter::parse(query, params::EVENT_PARAMS, now)?;
    let events = filter.apply(crate::telemetry::recent_events(params::MAX_LIMIT));
    Ok(json(serde_json::Value::Array(events).to_string()))
}

async fn api_families(
    query: Option<&str>,
    ledger: &GrantLedger,
    now: SystemTime,
) -> Result<Response<ProxyBody>, BadParameter> {
    let mut limit = FAMILIES_DEFAULT;
    for (_, value) in params::pairs(query, &["limit"])? {
        limit = params::limit(&value, params::MAX_LIMIT)?;
    }
    let families = ledger.families(limit, millis(now)).await;
    Ok(json(
        serde_json::to_string(&families).expect("families serialise"),
    ))
}

async fn page(
    query: Option<&str>,
    event: Option<&str>,
    ledger: &GrantLedger,
    now: SystemTime,
) -> Result<Response<ProxyBody>, BadParameter> {
    let mut filter = EventFilter::parse(query, PAGE_PARAMS, now)?;
    if let Some(id) = event {
        filter.event_id = Some(id.to_owned());
    }
    let events = crate::telemetry::recent_events(params::MAX_LIMIT);
    let mut families = ledger.families(FAMILIES_ON_PAGE, millis(now)).await;
    families.retain(|f| {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        same(&filter.org_id, &f.org_id)
            && same(&filter.user_id, &f.user_id)
            && same(&filter.client_id, &f.client_id)
    });
    let html = page::render(&page::PageData {
        events: &events,
        filter: &filter,
        families: &families,
        now,
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        // The page runs only its own inline script and loads nothing from anywhere.
        .header(
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
        )
        .body(body::full(html))
        .expect("valid response"))
}

fn json(text: String) -> Response<ProxyBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(text))
        .expect("valid response")
}

fn bad_parameter(bad: &BadParameter) -> Response<ProxyBody> {
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(bad.body()))
        .expect("valid response")
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Text made safe for HTML content and double-quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
