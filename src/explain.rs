//! `grantdoctor explain`: a pasted error (the JSON body, or the `error: description` form
//! client libraries print) and whatever the user knows about the request, diagnosed without
//! history, rendered for a human or as JSON.

use crate::diagnose::{self, Diagnosis, info};
use crate::ledger::LedgerView;
use crate::oauth::{Fingerprinter, RequestFacts, ResponseFacts};

/// What the user pasted and told.
#[derive(Debug, Clone, Default)]
pub struct Question {
    pub error: String,
    pub grant_type: Option<String>,
    pub host: Option<String>,
    pub assertion: Option<String>,
    pub status: u16,
}

/// Turns pasted text into a JSON error body: JSON as is; `invalid_grant: expired ...` (how
/// jsforce and restforce print it) or `invalid_grant::authentication failure` (sfdx) split.
pub fn body_of(pasted: &str) -> String {
    let text = pasted.trim();
    if serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object()) {
        return text.to_owned();
    }
    let (error, description) = text
        .split_once("::")
        .or_else(|| text.split_once(':'))
        .map(|(e, d)| (e.trim(), d.trim()))
        .unwrap_or(("invalid_grant", text));
    serde_json::json!({"error": error, "error_description": description}).to_string()
}

pub fn diagnose(q: &Question, now_ms: i64) -> (ResponseFacts, Diagnosis) {
    let fp = Fingerprinter::ephemeral();
    let host = q
        .host
        .clone()
        .unwrap_or_else(|| "login.salesforce.com".into());
    let mut form = form_urlencoded::Serializer::new(String::new());
    if let Some(g) = &q.grant_type {
        form.append_pair("grant_type", g);
    }
    if let Some(a) = &q.assertion {
        form.append_pair("assertion", a);
    }
    if q.grant_type.as_deref() == Some("refresh_token") {
        // A token grantdoctor never saw: the diagnosis says what history would decide.
        form.append_pair("refresh_token", "5Aep861unseen");
    }
    let body = form.finish();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let req = RequestFacts::parse(&host, true, &headers, None, body.as_bytes(), &fp);
    let resp = ResponseFacts::parse(q.status, body_of(&q.error).as_bytes(), &fp);
    let diagnosis = diagnose::diagnose(
        &req,
        &resp,
        &LedgerView::default(),
        &Default::default(),
        now_ms,
    );
    (resp, diagnosis)
}

/// The human rendering.
pub fn render(q: &Question, resp: &ResponseFacts, diagnosis: &Diagnosis) -> String {
    let mut out = format!(
        "{}: {}\n",
        resp.error.as_deref().unwrap_or("(no error code)"),
        resp.error_description
            .as_deref()
            .unwrap_or("(no description)")
    );
    out.push_str(&format!(
        "grant type: {}   host: {}\n\n",
        q.grant_type
            .as_deref()
            .unwrap_or("(not given: pass --grant-type)"),
        q.host
            .as_deref()
            .unwrap_or("login.salesforce.com (assumed)")
    ));
    for (i, cause) in diagnosis.causes.iter().enumerate() {
        let meta = info(cause.id);
        out.push_str(&format!(
            "{}. {}  (confidence {:.2})\n   {}\n",
            i + 1,
            cause.id,
            cause.confidence,
            meta.summary
        ));
        for line in &cause.evidence {
            out.push_str(&format!("   evidence: {line}\n"));
        }
        for step in meta.fix {
            out.push_str(&format!("   fix: {step}\n"));
        }
        for doc in meta.docs {
            out.push_str(&format!("   docs: {doc}\n"));
        }
        out.push('\n');
    }
    if q.grant_type.is_none() {
        out.push_str(
            "Tip: the same error string has different causes per grant type; pass --grant-type.\n",
        );
    }
    out.push_str("Without history this is a ranking of priors: run traffic through grantdoctor to decide between them.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_library_forms_are_understood() {
        let v: serde_json::Value =
            serde_json::from_str(&body_of("invalid_grant: expired access/refresh token")).unwrap();
        assert_eq!(v["error"], "invalid_grant");
        assert_eq!(v["error_description"], "expired access/refresh token");
        let v: serde_json::Value =
            serde_json::from_str(&body_of("invalid_grant::authentication failure")).unwrap();
        assert_eq!(v["error_description"], "authentication failure");
    }

    #[test]
    fn the_grant_type_changes_the_answer() {
        let q = |g: &str| Question {
            error: r#"{"error":"invalid_grant","error_description":"expired authorization code"}"#
                .into(),
            grant_type: Some(g.into()),
            status: 400,
            ..Default::default()
        };
        assert_eq!(
            diagnose(&q("refresh_token"), 0).1.top().unwrap().id,
            "sf.refresh.concurrent_refresh"
        );
        assert_eq!(
            diagnose(&q("authorization_code"), 0).1.top().unwrap().id,
            "sf.code.expired"
        );
    }
}
