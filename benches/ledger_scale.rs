//! The ledger at a million grants (10,000 users of 10 apps over 30 days): memory, view latency, and the time to load it back from
//! SQLite after a restart. Run: `cargo bench --bench ledger_scale` (LEDGER_GRANTS to change).

use std::time::Instant;

use grantdoctor::ledger::{GrantLedger, Retention};
use grantdoctor::oauth::{Fingerprinter, RequestFacts, ResponseFacts};
use grantdoctor::token_endpoint::RecordExchange;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let grants: usize = std::env::var("LEDGER_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let fp = Fingerprinter::from_key(&[5; 32]);
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_764_093_000_000i64;
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let before = rss_kib();
    let started = Instant::now();
    {
        let ledger = GrantLedger::open(
            dir.path(),
            Retention {
                max_rows: 100_000_000,
                ..Retention::default()
            },
            t0,
            Default::default(),
        )
        .unwrap();
        for i in 0..grants {
            // 10,000 users of 10 apps in 100 orgs, each authorizing several times.
            let (org, user, app) = (i % 100, i % 10_000, i % 10);
            // A million grants over 30 days: one every 2.6 s.
            let at = t0 + i as i64 * 2_592;
            let body = format!("grant_type=authorization_code&client_id=3MVG9app{app}&code=c{i}");
            let req = RequestFacts::parse(
                "login.salesforce.com",
                true,
                &headers,
                None,
                body.as_bytes(),
                &fp,
            );
            let resp = format!(
                r#"{{"access_token":"x","refresh_token":"5Aep{i}","scope":"api refresh_token","instance_url":"https://o{org}.my.salesforce.com","id":"https://login.salesforce.com/id/00D{org:015}/005{user:015}","issued_at":"{}"}}"#,
                at
            );
            let resp = ResponseFacts::parse(200, resp.as_bytes(), &fp);
            ledger.record(&req, &resp, at);
        }
        let recorded = started.elapsed();
        let rss = rss_kib().saturating_sub(before);
        let probe = RequestFacts::parse(
            "login.salesforce.com",
            true,
            &headers,
            None,
            b"grant_type=refresh_token&client_id=3MVG9app3&refresh_token=5Aep123",
            &fp,
        );
        let n = 10_000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(ledger.view(&probe, t0 + grants as i64 * 2_592));
        }
        let view_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "grants recorded: {grants} in {:.1} s ({:.1} µs each, SQLite writes included)",
            recorded.as_secs_f64(),
            recorded.as_secs_f64() * 1e6 / grants as f64
        );
        println!("ledger memory (RSS growth): {:.0} MiB", rss as f64 / 1024.0);
        println!("view of a known token: {view_us:.2} µs");
        let flush = Instant::now();
        drop(ledger);
        println!("flush on shutdown: {:.1} s", flush.elapsed().as_secs_f64());
    }
    let size = std::fs::metadata(dir.path().join("ledger.sqlite3"))
        .map(|m| m.len())
        .unwrap_or(0);
    let t = Instant::now();
    let ledger = GrantLedger::open(
        dir.path(),
        Retention {
            max_rows: 100_000_000,
            ..Retention::default()
        },
        t0 + grants as i64 * 2_592,
        Default::default(),
    )
    .unwrap();
    println!(
        "restart load: {} refresh tokens in {:.1} s (database {:.0} MiB)",
        ledger.known_refresh_tokens(),
        t.elapsed().as_secs_f64(),
        size as f64 / 1024.0 / 1024.0
    );
}
