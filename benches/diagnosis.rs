//! The diagnosis engine per call, and the ledger's view on a known token.

use criterion::{Criterion, criterion_group, criterion_main};
use grantdoctor::diagnose::{self, Policies};
use grantdoctor::ledger::GrantLedger;
use grantdoctor::oauth::{Fingerprinter, RequestFacts, ResponseFacts};
use grantdoctor::token_endpoint::RecordExchange;

fn facts(body: &str, fp: &Fingerprinter) -> RequestFacts {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    RequestFacts::parse(
        "login.salesforce.com",
        true,
        &headers,
        None,
        body.as_bytes(),
        fp,
    )
}

fn success(refresh: &str, at: i64) -> Vec<u8> {
    format!(
        r#"{{"access_token":"00D000000000001!AQ","refresh_token":"{refresh}","scope":"api refresh_token","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA","token_type":"Bearer","issued_at":"{at}"}}"#
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let fp = Fingerprinter::from_key(&[3; 32]);
    let ledger = GrantLedger::new();
    let t0 = 1_764_093_000_000i64;
    for i in 0..6 {
        let req = facts(
            &format!("grant_type=authorization_code&client_id=3MVG9x&code=c{i}"),
            &fp,
        );
        let resp = ResponseFacts::parse(200, &success(&format!("5Aep{i}"), t0 + i), &fp);
        ledger.record(&req, &resp, t0 + i);
    }
    let req = facts(
        "grant_type=refresh_token&client_id=3MVG9x&refresh_token=5Aep0",
        &fp,
    );
    let resp = ResponseFacts::parse(
        400,
        br#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
        &fp,
    );
    let view = ledger.view(&req, t0 + 10);
    let policies = Policies::new();
    assert_eq!(
        diagnose::diagnose(&req, &resp, &view, &policies, t0 + 10)
            .top()
            .unwrap()
            .id,
        "sf.refresh.approval_limit_evicted"
    );
    c.bench_function("diagnose_evicted_refresh", |b| {
        b.iter(|| diagnose::diagnose(&req, &resp, &view, &policies, t0 + 10))
    });
    c.bench_function("ledger_view_known_token", |b| {
        b.iter(|| ledger.view(&req, t0 + 10))
    });
    let body = "grant_type=refresh_token&client_id=3MVG9x&client_secret=s&refresh_token=5Aep861abcdefghijklmnopqrstuvwxyz";
    c.bench_function("request_facts_parse", |b| b.iter(|| facts(body, &fp)));
    let unknown = facts(
        "grant_type=refresh_token&client_id=3MVG9x&refresh_token=5Aep861never",
        &fp,
    );
    let unknown_view = ledger.view(&unknown, t0 + 10);
    let diagnosis = diagnose::diagnose(&unknown, &resp, &unknown_view, &policies, t0 + 10);
    let raw = bytes::Bytes::from_static(
        br#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
    );
    c.bench_function("diagnose_unknown_token", |b| {
        b.iter(|| diagnose::diagnose(&unknown, &resp, &unknown_view, &policies, t0 + 10))
    });
    c.bench_function("annotate_failure", |b| {
        b.iter(|| {
            let mut headers = http::HeaderMap::new();
            grantdoctor::annotate::apply(
                &mut headers,
                raw.clone(),
                &raw,
                &grantdoctor::annotate::Annotation {
                    event_id: "ev_0123456789abcdef",
                    diagnosis: &diagnosis,
                    recovery: None,
                },
                grantdoctor::annotate::AnnotateMode::All,
                false,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
