//! What a webhook is sent: which kept events it admits (its `events` filter), the key they
//! are deduplicated by, and the body in its format (`json` or `slack`).
//!
//! Must never: add a field the log line does not carry. The line holds fingerprints and
//! shortened ids only, so a body built from it holds no secret either.

use serde_json::{Map, Value};

/// What a webhook receives without an `events` filter: every diagnosed failure, warning,
/// recovery (or failed one) and block. `confirmed` and the successful exchanges only when
/// named.
pub const DEFAULT_EVENTS: &[&str] = &[
    "invalid_grant",
    "token_error",
    "warning",
    "recovered",
    "recovery_failed",
    "blocked",
];

/// One kept event as the dispatcher sees it: the few fields that decide whether it is
/// sent, read from its log line without building the rest; the whole line is parsed only
/// for a delivery (most failures are repeats that dedup holds back).
#[derive(Debug, Clone)]
pub struct Alert {
    line: std::sync::Arc<str>,
    glance: Glance,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
struct Glance {
    #[serde(deserialize_with = "text_or_empty")]
    event: String,
    #[serde(deserialize_with = "text_or_empty")]
    id: String,
    #[serde(deserialize_with = "text_or_empty")]
    cause: String,
    #[serde(deserialize_with = "text_or_empty")]
    event_id: String,
    #[serde(deserialize_with = "text_or_empty")]
    org_id: String,
    #[serde(deserialize_with = "text_or_empty")]
    user_id: String,
    #[serde(deserialize_with = "text_or_empty")]
    client_id: String,
}

/// A field that is not a string reads as absent, as it does in the body.
fn text_or_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::Deserialize;
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        _ => String::new(),
    })
}

impl Alert {
    /// The log line as an alert; `None` for a line that is not a JSON object.
    pub fn parse(line: std::sync::Arc<str>) -> Option<Self> {
        if !line.trim_start().starts_with('{') {
            return None;
        }
        let glance = serde_json::from_str(&line).ok()?;
        Some(Self { line, glance })
    }

    /// The event kind: `invalid_grant`, `warning`, `blocked`...
    pub fn kind(&self) -> &str {
        &self.glance.event
    }

    /// The warning id of a warning, else the (top) cause id.
    pub fn id(&self) -> &str {
        match self.kind() {
            "warning" => &self.glance.id,
            _ => &self.glance.cause,
        }
    }

    pub fn event_id(&self) -> &str {
        &self.glance.event_id
    }

    /// What makes two alerts "the same" for deduplication: the event kind (a recovery is not
    /// a repeat of the failure it recovered), the cause or warning id, and the token family
    /// (org, user, client id).
    pub fn dedup_key(&self) -> String {
        [
            self.kind(),
            self.id(),
            &self.glance.org_id,
            &self.glance.user_id,
            &self.glance.client_id,
        ]
        .join("\u{1f}")
    }

    /// Every field of the line, for the body.
    fn fields(&self) -> Map<String, Value> {
        match serde_json::from_str(&self.line) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        }
    }
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> &'a str {
    fields.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The `event` of a log line without parsing the rest: the telemetry writes it first, after
/// `ts` and `level`. Lets the feed skip the lines no webhook wants (every successful token
/// exchange) for the price of a substring search.
pub fn kind_of(line: &str) -> &str {
    let Some(start) = line.find("\"event\":\"").map(|i| i + 9) else {
        return "";
    };
    let rest = &line[start..];
    rest.find('"').map_or("", |end| &rest[..end])
}

/// A webhook's `events`: event kinds and cause or warning ids, exact or as a prefix ending in
/// `*` (`sf.refresh.*`, `warn.*`).
#[derive(Debug, Clone, Default)]
pub struct Filter(Vec<String>);

impl Filter {
    pub fn new(patterns: &[String]) -> Self {
        Self(patterns.to_vec())
    }

    /// Whether an event of this kind can pass, whatever its id.
    pub fn wants_kind(&self, kind: &str) -> bool {
        DEFAULT_EVENTS.contains(&kind) || self.0.iter().any(|p| p == kind)
    }

    /// An event passes when its kind is one of [`DEFAULT_EVENTS`] or is named, and (with a
    /// filter) some pattern matches its kind or its id: `["sf.refresh.*"]` means "failures,
    /// recoveries and blocks of those causes", not also every `confirmed` line.
    pub fn admits(&self, alert: &Alert) -> bool {
        let kind = alert.kind();
        if !self.wants_kind(kind) {
            return false;
        }
        let named = self.0.iter().any(|p| p == kind);
        self.0.is_empty()
            || named
            || self
                .0
                .iter()
                .any(|p| matches(p, kind) || matches(p, alert.id()))
    }
}

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => !value.is_empty() && value.starts_with(prefix),
        None => pattern == value,
    }
}

/// The body formats of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The log line's fields as one object, plus `"grantdoctor_webhook": 1`.
    #[default]
    Json,
    /// A Slack incoming-webhook message: `{"text": "..."}`.
    Slack,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Slack => "slack",
        }
    }
}

/// The exact bytes POSTed (and signed); `suppressed` is how many alerts of the same key were
/// held back since the last one delivered.
pub fn body(format: Format, alert: &Alert, suppressed: u64) -> Vec<u8> {
    let value = match format {
        Format::Json => {
            let mut fields = alert.fields();
            fields.insert("grantdoctor_webhook".into(), Value::from(1));
            if suppressed > 0 {
                fields.insert("suppressed".into(), Value::from(suppressed));
            }
            Value::Object(fields)
        }
        Format::Slack => {
            serde_json::json!({ "text": slack_text(alert, &alert.fields(), suppressed) })
        }
    };
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

/// One line: what happened, why (with its basis), to whom, and what to do.
fn slack_text(alert: &Alert, fields: &Map<String, Value>, suppressed: u64) -> String {
    let mut parts = vec![format!("grantdoctor: {}", alert.kind())];
    let id = alert.id();
    if !id.is_empty() {
        let basis = text(fields, "basis");
        parts.push(if basis.is_empty() {
            format!("`{id}`")
        } else {
            format!("`{id}` ({basis})")
        });
    }
    for (label, field) in [
        ("client", "client_id"),
        ("user", "user_id"),
        ("host", "host"),
        ("", "message"),
        ("evidence:", "evidence"),
        ("fix:", "fix"),
        ("event", "event_id"),
    ] {
        let value = text(fields, field);
        if !value.is_empty() {
            let value = value.replace(['\n', '\r'], " ");
            parts.push(if label.is_empty() {
                value
            } else {
                format!("{label} {value}")
            });
        }
    }
    if suppressed > 0 {
        parts.push(format!("({suppressed} more like it suppressed)"));
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(line: &str) -> Alert {
        Alert::parse(line.into()).unwrap()
    }

    const FAILURE: &str = r#"{"ts":"t","level":"warn","event":"invalid_grant","event_id":"e1","client_id":"3MVG9web","org_id":"00D1","user_id":"0051","cause":"sf.refresh.approval_limit_evicted","basis":"evidence","evidence":"issued 6th","fix":"raise it"}"#;

    #[test]
    fn without_a_filter_failures_warnings_recoveries_and_blocks_pass() {
        let filter = Filter::default();
        assert!(filter.admits(&alert(FAILURE)));
        for kind in DEFAULT_EVENTS {
            assert!(filter.admits(&alert(&format!(r#"{{"event":"{kind}"}}"#))));
        }
        for kind in ["token_issued", "confirmed", "not_inspected"] {
            assert!(!filter.admits(&alert(&format!(r#"{{"event":"{kind}"}}"#))));
        }
    }

    #[test]
    fn the_kind_is_read_from_the_front_of_the_line() {
        assert_eq!(kind_of(FAILURE), "invalid_grant");
        assert_eq!(
            kind_of(r#"{"ts":"t","level":"info","event":"token_issued","x":1}"#),
            "token_issued"
        );
        assert_eq!(kind_of("not json"), "");
        assert!(Filter::default().wants_kind("warning"));
        assert!(!Filter::default().wants_kind("token_issued"));
        assert!(Filter::new(&["token_issued".into()]).wants_kind("token_issued"));
    }

    #[test]
    fn a_filter_takes_kinds_ids_and_prefixes() {
        let warning = alert(r#"{"event":"warning","id":"warn.retry_storm"}"#);
        let by_prefix = Filter::new(&["sf.refresh.*".into()]);
        assert!(by_prefix.admits(&alert(FAILURE)));
        assert!(!by_prefix.admits(&warning));
        let warnings = Filter::new(&["warn.*".into()]);
        assert!(warnings.admits(&warning) && !warnings.admits(&alert(FAILURE)));
        let confirmed = Filter::new(&["confirmed".into()]);
        assert!(confirmed.admits(&alert(r#"{"event":"confirmed","cause":"x"}"#)));
        assert!(!confirmed.admits(&alert(FAILURE)));
        let exact = Filter::new(&["sf.refresh.approval_limit_evicted".into()]);
        assert!(exact.admits(&alert(FAILURE)));
    }

    #[test]
    fn the_json_body_is_the_line_plus_the_marker_and_the_suppressed_count() {
        let body: Value = serde_json::from_slice(&body(Format::Json, &alert(FAILURE), 0)).unwrap();
        assert_eq!(body["grantdoctor_webhook"], 1);
        assert_eq!(body["cause"], "sf.refresh.approval_limit_evicted");
        assert!(body.get("suppressed").is_none());
        let body: Value = serde_json::from_slice(&body_of(3)).unwrap();
        assert_eq!(body["suppressed"], 3);
    }

    fn body_of(suppressed: u64) -> Vec<u8> {
        body(Format::Json, &alert(FAILURE), suppressed)
    }

    #[test]
    fn the_slack_body_is_one_line_of_text() {
        let body: Value = serde_json::from_slice(&body(Format::Slack, &alert(FAILURE), 2)).unwrap();
        let text = body["text"].as_str().unwrap();
        assert_eq!(body.as_object().unwrap().len(), 1);
        assert!(!text.contains('\n'));
        for part in [
            "invalid_grant",
            "`sf.refresh.approval_limit_evicted` (evidence)",
            "client 3MVG9web",
            "user 0051",
            "evidence: issued 6th",
            "fix: raise it",
            "2 more",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }

    #[test]
    fn the_dedup_key_separates_kinds_causes_and_families() {
        let a = alert(FAILURE).dedup_key();
        let other_user = alert(&FAILURE.replace("0051", "0052")).dedup_key();
        let recovered = alert(&FAILURE.replace("invalid_grant", "recovered")).dedup_key();
        assert_ne!(a, other_user);
        assert_ne!(a, recovered);
        assert_eq!(a, alert(&FAILURE.replace("e1", "e2")).dedup_key());
    }
}
