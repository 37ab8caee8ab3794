//! Query parameters of the page and its JSON: parsed strictly, so a typo (`limt=5`) or a bad
//! value is answered `400` naming the parameter instead of being quietly ignored.

use std::time::SystemTime;

use serde_json::Value;

use crate::logs::Since;

/// A parameter that was refused, and why: the body of the `400`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParameter {
    pub parameter: String,
    pub reason: String,
}

impl BadParameter {
    fn new(parameter: &str, reason: impl Into<String>) -> Self {
        Self {
            parameter: parameter.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn body(&self) -> String {
        serde_json::json!({
            "error": "bad_parameter",
            "parameter": self.parameter,
            "reason": self.reason,
        })
        .to_string()
    }
}

/// The query's pairs, each name among `allowed` and given at most once.
pub fn pairs(query: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, BadParameter> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            return Err(BadParameter::new(
                &name,
                format!("unknown parameter; known: {}", allowed.join(", ")),
            ));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(BadParameter::new(&name, "given more than once"));
        }
        out.push((name.into_owned(), value.into_owned()));
    }
    Ok(out)
}

/// `limit`: a whole number in `1..=max`.
pub fn limit(value: &str, max: usize) -> Result<usize, BadParameter> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(BadParameter::new(
            "limit",
            format!("expected a whole number from 1 to {max}"),
        )),
    }
}

/// Which kept events to show. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub cause: Option<String>,
    /// Shortened as the log shortens it, so a whole consumer key matches too.
    pub client_id: Option<String>,
    pub org_id: Option<String>,
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub since: Option<SystemTime>,
    pub limit: usize,
}

/// The kinds the page calls failures.
pub const FAILURE_KINDS: &[&str] = &["invalid_grant", "token_error", "blocked", "recovery_failed"];

pub const DEFAULT_LIMIT: usize = 100;
/// As many as the in-memory ring keeps.
pub const MAX_LIMIT: usize = 1000;

/// The parameters of `/api/events`.
pub const EVENT_PARAMS: &[&str] = &[
    "cause",
    "client_id",
    "org_id",
    "user_id",
    "event_id",
    "since",
    "limit",
];

impl EventFilter {
    pub fn parse(
        query: Option<&str>,
        allowed: &[&str],
        now: SystemTime,
    ) -> Result<Self, BadParameter> {
        let mut filter = Self {
            limit: DEFAULT_LIMIT,
            ..Self::default()
        };
        for (name, value) in pairs(query, allowed)? {
            let value = value.trim().to_owned();
            // An empty field of the page's filter form means "any".
            if value.is_empty() && name != "limit" {
                continue;
            }
            match name.as_str() {
                "cause" => filter.cause = Some(value),
                "client_id" => filter.client_id = Some(crate::oauth::short_client_id(&value)),
                "org_id" => filter.org_id = Some(value),
                "user_id" => filter.user_id = Some(value),
                "event_id" | "event" => filter.event_id = Some(value),
                "since" => filter.since = Some(since(&value, now)?),
                "limit" => filter.limit = limit(&value, MAX_LIMIT)?,
                _ => {}
            }
        }
        Ok(filter)
    }

    /// Whether nothing but the limit is set.
    pub fn is_empty(&self) -> bool {
        self.cause.is_none()
            && self.client_id.is_none()
            && self.org_id.is_none()
            && self.user_id.is_none()
            && self.event_id.is_none()
            && self.since.is_none()
    }

    pub fn keeps(&self, event: &Value) -> bool {
        let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("");
        let same =
            |want: &Option<String>, field: &str| want.as_deref().is_none_or(|w| s(field) == w);
        if let Some(cause) = &self.cause
            && !names_cause(event, cause)
        {
            return false;
        }
        if let Some(since) = self.since
            && humantime::parse_rfc3339_weak(s("ts")).map_or(true, |at| at < since)
        {
            return false;
        }
        same(&self.client_id, "client_id")
            && same(&self.org_id, "org_id")
            && same(&self.user_id, "user_id")
            && same(&self.event_id, "event_id")
    }

    /// The kept events this filter keeps, newest first, at most `limit`.
    pub fn apply(&self, events: Vec<Value>) -> Vec<Value> {
        events
            .into_iter()
            .filter(|e| self.keeps(e))
            .take(self.limit)
            .collect()
    }
}

fn since(value: &str, now: SystemTime) -> Result<SystemTime, BadParameter> {
    match crate::logs::parse_since(value).map_err(|reason| BadParameter::new("since", reason))? {
        Since::Ago(span) => Ok(now.checked_sub(span).unwrap_or(SystemTime::UNIX_EPOCH)),
        Since::At(at) => Ok(at),
    }
}

/// As `grantdoctor logs --cause` matches: the top cause, any ranked cause or a warning's id.
fn names_cause(event: &Value, id: &str) -> bool {
    event
        .as_object()
        .is_some_and(|event| crate::logs::names_cause(event, id))
}

/// Whether the page lists this event among failures.
pub fn is_failure(event: &Value) -> bool {
    event
        .get("event")
        .and_then(Value::as_str)
        .is_some_and(|kind| FAILURE_KINDS.contains(&kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bad_limit_names_the_parameter() {
        let err =
            EventFilter::parse(Some("limit=abc"), EVENT_PARAMS, SystemTime::now()).unwrap_err();
        assert_eq!(err.parameter, "limit");
        for bad in ["0", "1001", "-1"] {
            let q = format!("limit={bad}");
            assert!(EventFilter::parse(Some(&q), EVENT_PARAMS, SystemTime::now()).is_err());
        }
        let body: Value = serde_json::from_str(&err.body()).unwrap();
        assert_eq!(body["error"], "bad_parameter");
        assert_eq!(body["parameter"], "limit");
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let err = EventFilter::parse(Some("limt=5"), EVENT_PARAMS, SystemTime::now()).unwrap_err();
        assert_eq!(err.parameter, "limt");
        let err = EventFilter::parse(Some("limit=5&limit=6"), EVENT_PARAMS, SystemTime::now())
            .unwrap_err();
        assert_eq!(err.parameter, "limit");
        let err = EventFilter::parse(Some("since=yesterday"), EVENT_PARAMS, SystemTime::now())
            .unwrap_err();
        assert_eq!(err.parameter, "since");
    }

    #[test]
    fn filters_match_ranked_causes_shortened_client_ids_and_times() {
        let now = SystemTime::now();
        let ts = humantime::format_rfc3339_millis(now).to_string();
        let event = json!({"ts": ts, "event": "invalid_grant", "client_id": "3MVG9abc…wxyz",
            "cause": "sf.refresh.revoked", "causes": "sf.refresh.revoked;q=0.60;basis=prior, sf.refresh.approval_limit_evicted;q=0.30;basis=evidence"});
        let q =
            "cause=sf.refresh.approval_limit_evicted&client_id=3MVG9abcdefghijklmnopwxyz&since=10m";
        let filter = EventFilter::parse(Some(q), EVENT_PARAMS, now).unwrap();
        assert!(filter.keeps(&event));
        let filter = EventFilter::parse(Some("cause=sf.other"), EVENT_PARAMS, now).unwrap();
        assert!(!filter.keeps(&event));
        let later = now + std::time::Duration::from_secs(60);
        let filter = EventFilter::parse(Some("since=10s"), EVENT_PARAMS, later).unwrap();
        assert!(!filter.keeps(&event));
    }
}
