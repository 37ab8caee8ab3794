//! Facts of a token response: the error pair, or what a success tells about who got what.

use serde::Serialize;
use serde_json::Value;

use super::Fingerprinter;

#[derive(Debug, Clone, Serialize)]
pub struct ResponseFacts {
    pub status: u16,
    /// The body was a JSON object.
    pub json: bool,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub success: Option<SuccessFacts>,
    /// The answer is grantdoctor's own, not Salesforce's: it could not get one.
    pub proxy_failure: Option<ProxyFailure>,
}

/// Why grantdoctor answered a token request itself, with the reason it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
pub enum ProxyFailure {
    /// DNS, connect or TLS to the upstream failed: Salesforce never saw the request.
    Unreachable(String),
    /// The upstream broke off or did not answer in time.
    Failed(String),
}

/// What a successful exchange returned (no token values).
#[derive(Debug, Clone, Serialize)]
pub struct SuccessFacts {
    pub org_id: Option<String>,
    pub user_id: Option<String>,
    pub id_host: Option<String>,
    pub scope: Option<String>,
    pub refresh_token_fp: Option<String>,
    /// How long the issued refresh token was, to tell a value cut short later.
    pub refresh_token_len: Option<usize>,
    /// Upstream milliseconds since the epoch.
    pub issued_at: Option<i64>,
    pub instance_url: Option<String>,
}

/// Whether `body` looks like JSON but is nested deeper than the parser goes (serde_json's
/// recursion limit): no token response is, so it is passed through, not diagnosed.
pub fn nested_too_deep(body: &[u8]) -> bool {
    let starts_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    starts_json
        && serde_json::from_slice::<Value>(body)
            .is_err_and(|e| e.to_string().contains("recursion limit"))
}

impl ResponseFacts {
    /// `body` is the decoded body (no Content-Encoding left).
    pub fn parse(status: u16, body: &[u8], fp: &Fingerprinter) -> Self {
        let value: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
        let text = |v: &Value, k: &str| v[k].as_str().map(str::to_owned);
        let error = value.as_ref().and_then(|v| text(v, "error"));
        let success = value
            .as_ref()
            .filter(|v| (200..300).contains(&status) && v["access_token"].is_string())
            .map(|v| {
                let id = text(v, "id").unwrap_or_default();
                let (id_host, org_id, user_id) = parse_identity_url(&id);
                SuccessFacts {
                    org_id,
                    user_id,
                    id_host,
                    scope: text(v, "scope"),
                    refresh_token_fp: v["refresh_token"]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(|t| fp.fingerprint(t)),
                    refresh_token_len: v["refresh_token"]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(|t| t.chars().count()),
                    issued_at: match &v["issued_at"] {
                        Value::String(s) => s.parse().ok(),
                        Value::Number(n) => n.as_i64(),
                        _ => None,
                    },
                    instance_url: text(v, "instance_url"),
                }
            });
        Self {
            status,
            json: value.is_some(),
            error_description: value.as_ref().and_then(|v| text(v, "error_description")),
            error,
            success,
            proxy_failure: None,
        }
    }

    /// Case-insensitive prefix match on the description, as the reference advises.
    pub fn description_is(&self, prefix: &str) -> bool {
        self.error_description.as_deref().is_some_and(|d| {
            d.trim()
                .to_ascii_lowercase()
                .starts_with(&prefix.to_ascii_lowercase())
        })
    }

    pub fn error_is(&self, error: &str) -> bool {
        self.error.as_deref() == Some(error)
    }
}

/// `https://host/id/<org>/<user>` → (host, org, user).
fn parse_identity_url(id: &str) -> (Option<String>, Option<String>, Option<String>) {
    let Some(rest) = id.strip_prefix("https://") else {
        return (None, None, None);
    };
    let mut parts = rest.split('/');
    let host = parts.next().map(str::to_ascii_lowercase);
    if parts.next() != Some("id") {
        return (host, None, None);
    }
    (
        host,
        parts.next().map(str::to_owned),
        parts.next().map(str::to_owned),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_nested_past_the_parser_limit_is_told_apart() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(nested_too_deep(deep.as_bytes()));
        assert!(!nested_too_deep(br#"{"error":"invalid_grant"}"#));
        assert!(!nested_too_deep(b"<html>bad gateway</html>"));
        assert!(!nested_too_deep(b"{not json"));
    }

    #[test]
    fn a_success_yields_org_user_scope_and_a_refresh_fingerprint() {
        let body = br#"{"access_token":"00Dx!AQ","refresh_token":"5Aep861R","scope":"api refresh_token","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA","token_type":"Bearer","issued_at":"1764093000123","signature":"x"}"#;
        let facts = ResponseFacts::parse(200, body, &Fingerprinter::from_key(&[1; 32]));
        let s = facts.success.unwrap();
        assert_eq!(s.org_id.as_deref(), Some("00D000000000001AAA"));
        assert_eq!(s.user_id.as_deref(), Some("005000000000001AAA"));
        assert_eq!(s.issued_at, Some(1_764_093_000_123));
        assert!(s.refresh_token_fp.unwrap().starts_with("fp_"));
    }

    #[test]
    fn errors_match_by_description_prefix_ignoring_case() {
        let facts = ResponseFacts::parse(400, br#"{"error":"invalid_grant","error_description":"authentication failure - Failed: API security token required"}"#, &Fingerprinter::ephemeral());
        assert!(facts.error_is("invalid_grant"));
        assert!(facts.description_is("Authentication failure"));
        let html = ResponseFacts::parse(503, b"<html>down</html>", &Fingerprinter::ephemeral());
        assert!(!html.json && html.error.is_none());
    }
}
