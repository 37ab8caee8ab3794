//! `grantdoctor explain`: a pasted error (the JSON body, or the `error: description` form
//! client libraries print) and whatever the user knows about the request, diagnosed without
//! history, rendered for a human or as JSON.

use crate::diagnose::{self, Basis, Diagnosis, info};
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

/// The `error` codes Salesforce's token endpoint answers with.
const ERROR_CODES: &[&str] = &[
    "invalid_grant",
    "invalid_client",
    "invalid_client_id",
    "invalid_client_credentials",
    "invalid_request",
    "invalid_scope",
    "unsupported_grant_type",
    "unsupported_response_type",
    "redirect_uri_mismatch",
    "inactive_user",
    "inactive_org",
    "invalid_app_access",
    "app_not_found",
    "rate_limit_exceeded",
    "unknown_error",
    "authorization_pending",
    "access_denied",
];

/// Descriptions recognised on their own, as client libraries sometimes print only those.
const DESCRIPTIONS: &[&str] = &[
    "expired access/refresh token",
    "expired authorization code",
    "authentication failure",
    "invalid user credentials",
    "invalid code verifier",
    "ip restricted",
    "inactive user",
    "inactive organization",
    "user hasn't approved this consumer",
    "invalid assertion",
    "audience is invalid",
    "audience validation failed",
    "request not supported on this domain",
    "no client credentials user enabled",
    "no valid scopes defined",
    "token validity expired",
    "scope parameter not supported",
    "refresh_token scope is required",
];

fn known_description(text: &str) -> bool {
    let lower = text.trim().to_ascii_lowercase();
    DESCRIPTIONS.iter().any(|d| lower.starts_with(d))
}

/// Turns pasted text into a JSON error body: JSON as is; `invalid_grant: expired ...` (how
/// jsforce and restforce print it) or `invalid_grant::authentication failure` (sfdx) split;
/// a known description alone under `invalid_grant`. `None` when the text is none of these:
/// it is not a Salesforce token-endpoint error, and no cause is made up for it.
pub fn body_of(pasted: &str) -> Option<String> {
    let text = pasted.trim();
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        return value["error"].as_str().is_some().then(|| text.to_owned());
    }
    let split = text
        .split_once("::")
        .or_else(|| text.split_once(':'))
        .map(|(e, d)| (e.trim(), d.trim()));
    let (error, description) = match split {
        Some((error, description)) if ERROR_CODES.contains(&error) => (error, description),
        // `Error: expired access/refresh token`: a language's prefix before the description.
        Some((_, description)) if known_description(description) => ("invalid_grant", description),
        _ if known_description(text) => ("invalid_grant", text),
        _ => return None,
    };
    Some(serde_json::json!({"error": error, "error_description": description}).to_string())
}

/// `grantdoctor explain`: the pasted error (argument or standard input) diagnosed, printed for
/// a human or as JSON. Empty input is a usage error; text that is no Salesforce error says so.
pub fn run(args: crate::cli::ExplainArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let error = match args.error {
        Some(error) => error,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
    };
    if error.trim().is_empty() {
        return Err(crate::cli::UsageError(
            "nothing to explain: pass the error body as an argument or on standard input".into(),
        )
        .into());
    }
    let question = Question {
        error,
        grant_type: args.grant_type,
        host: args.host,
        assertion: args.assertion,
        status: args.status,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let Some((response, diagnosis)) = diagnose(&question, now) else {
        let shown: String = question.error.trim().chars().take(80).collect();
        anyhow::bail!(
            "`{shown}` is not a Salesforce token-endpoint error: pass its JSON body ({{\"error\":...,\"error_description\":...}}), the `error: description` form client libraries print, or a description such as `expired access/refresh token`"
        );
    };
    if args.json {
        let member = crate::annotate::member("explain", &diagnosis);
        println!("{}", serde_json::to_string_pretty(&member["causes"])?);
    } else {
        print!("{}", render(&question, &response, &diagnosis));
    }
    Ok(())
}

/// The pasted error diagnosed without history; `None` when it is no Salesforce error.
pub fn diagnose(q: &Question, now_ms: i64) -> Option<(ResponseFacts, Diagnosis)> {
    let pasted = body_of(&q.error)?;
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
    let resp = ResponseFacts::parse(q.status, pasted.as_bytes(), &fp);
    let diagnosis = diagnose::diagnose(
        &req,
        &resp,
        &LedgerView::default(),
        &Default::default(),
        now_ms,
    );
    Some((resp, diagnosis))
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
        let basis = match cause.basis {
            Basis::Prior => "prior: a guess, nothing observed decides it",
            Basis::Evidence => "evidence",
            Basis::Confirmed => "confirmed by Salesforce's records",
        };
        out.push_str(&format!(
            "{}. {}  (confidence {:.2}, {basis})\n   {}\n",
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
    if !diagnosis.decided() {
        out.push_str("Without history this is a ranking of priors, not a diagnosis: run the traffic through grantdoctor (or give it an org connection) to decide between them.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_library_forms_are_understood() {
        let parse = |text: &str| -> serde_json::Value {
            serde_json::from_str(&body_of(text).unwrap()).unwrap()
        };
        let v = parse("invalid_grant: expired access/refresh token");
        assert_eq!(v["error"], "invalid_grant");
        assert_eq!(v["error_description"], "expired access/refresh token");
        let v = parse("invalid_grant::authentication failure");
        assert_eq!(v["error_description"], "authentication failure");
        let v = parse("Error: expired access/refresh token");
        assert_eq!(v["error"], "invalid_grant");
        let v = parse("inactive user");
        assert_eq!(v["error_description"], "inactive user");
    }

    #[test]
    fn text_that_is_no_salesforce_error_is_not_explained() {
        for text in [
            "nonsense",
            "hello: world",
            "{\"a\":1}",
            "[1,2]",
            "404 Not Found",
        ] {
            assert_eq!(body_of(text), None, "{text}");
        }
    }

    #[test]
    fn a_pasted_password_error_claims_no_history() {
        let q = Question {
            error: "invalid_grant: authentication failure".into(),
            grant_type: Some("password".into()),
            status: 400,
            ..Default::default()
        };
        let (_, d) = diagnose(&q, 0).unwrap();
        let text = format!("{:?}", d.causes);
        assert!(!text.contains("consecutive"), "{text}");
        assert!(text.contains("not observed"), "{text}");
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
            diagnose(&q("refresh_token"), 0)
                .unwrap()
                .1
                .top()
                .unwrap()
                .id,
            "sf.refresh.concurrent_refresh"
        );
        assert_eq!(
            diagnose(&q("authorization_code"), 0)
                .unwrap()
                .1
                .top()
                .unwrap()
                .id,
            "sf.code.expired"
        );
    }
}
