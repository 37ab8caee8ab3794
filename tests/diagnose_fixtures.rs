//! The diagnosis engine over fixtures: one file per documented Salesforce error
//! (`tests/fixtures/salesforce/E*.json`), each with cases that replay a history into the ledger
//! and then diagnose a failing exchange. Together they must name every cause id of the
//! catalogue and raise every warning.

use std::collections::BTreeSet;

use grantdoctor::diagnose::{self, CAUSES, DeclaredPolicy, Policies, WARNINGS};
use grantdoctor::ledger::GrantLedger;
use grantdoctor::oauth::{Fingerprinter, ProxyFailure, RequestFacts, ResponseFacts};
use grantdoctor::token_endpoint::RecordExchange;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Fixture {
    row: String,
    error: Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    history: Vec<Exchange>,
    request: Req,
    /// Defaults to the fixture's error with status 400.
    #[serde(default)]
    response: Option<Resp>,
    now: i64,
    #[serde(default)]
    policies: Vec<(String, String)>,
    /// Other refreshes of the same token in flight when the answer came back.
    #[serde(default)]
    in_flight_others: u32,
    expect: Expect,
}

#[derive(Deserialize)]
struct Exchange {
    request: Req,
    response: Resp,
    at: i64,
    #[serde(default = "one")]
    repeat: usize,
}

fn one() -> usize {
    1
}

#[derive(Deserialize)]
struct Req {
    host: String,
    #[serde(default = "form")]
    content_type: String,
    #[serde(default = "post")]
    method: String,
    body: String,
}

fn form() -> String {
    "application/x-www-form-urlencoded".into()
}
fn post() -> String {
    "POST".into()
}

#[derive(Deserialize)]
struct Resp {
    status: u16,
    /// JSON, or a string sent as is (HTML pages).
    body: Value,
    /// The answer is grantdoctor's own (it could not reach Salesforce).
    #[serde(default)]
    proxy_failure: Option<ProxyFailure>,
}

#[derive(Deserialize)]
struct Expect {
    top: String,
    #[serde(default)]
    min_confidence: Option<f64>,
    #[serde(default)]
    max_confidence: Option<f64>,
    #[serde(default)]
    evidence_contains: Option<String>,
    #[serde(default)]
    also: Vec<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

fn request_facts(req: &Req, fp: &Fingerprinter) -> RequestFacts {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        req.content_type.parse().unwrap(),
    );
    RequestFacts::parse(
        &req.host,
        req.method == "POST",
        &headers,
        None,
        req.body.as_bytes(),
        fp,
    )
}

fn response_facts(resp: &Resp, fp: &Fingerprinter) -> ResponseFacts {
    let body = match &resp.body {
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let mut facts = ResponseFacts::parse(resp.status, &body, fp);
    facts.proxy_failure = resp.proxy_failure.clone();
    facts
}

/// Causes no exchange's diagnosis names: the breaker's own answer, tested end to end in
/// `tests/breaker.rs`.
const ANSWERED_BY_THE_BREAKER: &[&str] = &["gd.dead_token_retried"];

#[test]
fn every_fixture_names_its_cause_and_together_they_cover_the_catalogue() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/salesforce");
    let mut named = BTreeSet::new();
    let mut warned = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for path in files {
        let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in &fixture.cases {
            let label = format!("{} / {}", fixture.row, case.name);
            let fp = Fingerprinter::from_key(&[9; 32]);
            let ledger = GrantLedger::new();
            for exchange in &case.history {
                let req = request_facts(&exchange.request, &fp);
                let resp = response_facts(&exchange.response, &fp);
                for i in 0..exchange.repeat {
                    for w in ledger.record(&req, &resp, exchange.at + i as i64).0 {
                        warned.insert(w.id.to_owned());
                    }
                }
            }
            let req = request_facts(&case.request, &fp);
            let resp = match &case.response {
                Some(resp) => response_facts(resp, &fp),
                None => response_facts(
                    &Resp {
                        status: 400,
                        body: fixture.error.clone(),
                        proxy_failure: None,
                    },
                    &fp,
                ),
            };
            let _own = ledger.begin(&req);
            let _others: Vec<_> = (0..case.in_flight_others)
                .map(|_| ledger.begin(&req))
                .collect();
            let view = ledger.view(&req, case.now);
            let policies: Policies = case
                .policies
                .iter()
                .map(|(client, p)| (client.clone(), p.parse::<DeclaredPolicy>().unwrap()))
                .collect();
            let diagnosis = diagnose::diagnose(&req, &resp, &view, &policies, case.now);
            for w in ledger.record(&req, &resp, case.now).0 {
                warned.insert(w.id.to_owned());
            }
            let top = diagnosis
                .top()
                .unwrap_or_else(|| panic!("{label}: no cause"));
            assert_eq!(top.id, case.expect.top, "{label}: {diagnosis:#?}");
            if let Some(min) = case.expect.min_confidence {
                assert!(
                    top.confidence >= min,
                    "{label}: confidence {} < {min}",
                    top.confidence
                );
            }
            if let Some(max) = case.expect.max_confidence {
                assert!(
                    top.confidence <= max,
                    "{label}: confidence {} > {max}",
                    top.confidence
                );
            }
            if let Some(text) = &case.expect.evidence_contains {
                assert!(
                    top.evidence.iter().any(|e| e.contains(text.as_str())),
                    "{label}: evidence {:?} lacks {text:?}",
                    top.evidence
                );
            }
            for also in &case.expect.also {
                assert!(
                    diagnosis.causes.iter().any(|c| c.id == also),
                    "{label}: {also} not among {diagnosis:#?}"
                );
            }
            for w in &case.expect.warnings {
                assert!(warned.contains(w), "{label}: warning {w} not raised");
            }
            named.insert(top.id.to_owned());
            named.extend(case.expect.also.iter().cloned());
        }
    }
    let all: BTreeSet<String> = CAUSES
        .iter()
        .map(|c| c.id.to_owned())
        .filter(|id| !ANSWERED_BY_THE_BREAKER.contains(&id.as_str()))
        .collect();
    let missing: Vec<_> = all.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "cause ids no fixture names: {missing:?}"
    );
    let all_warnings: BTreeSet<String> = WARNINGS.iter().map(|w| w.to_string()).collect();
    let unwarned: Vec<_> = all_warnings.difference(&warned).collect();
    assert!(
        unwarned.is_empty(),
        "warnings no fixture raises: {unwarned:?}"
    );
}
