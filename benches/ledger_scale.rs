//! The ledger at a million grants (10,000 users of 10 apps over 30 days): memory, view latency, and the time to load it back from
//! SQLite after a restart. Run: `cargo bench --bench ledger_scale` (LEDGER_GRANTS to change).
//!
//! With `LEDGER_STORE=postgres://…` (what `STORE_BENCH=ledger bash benches/store/run.sh` sets), the
//! same grants go to a shared store: a replica then holds a bounded number of refresh tokens and
//! fetches the others when presented; the restart is measured in a process of its own.

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

const T0: i64 = 1_764_093_000_000;

fn form() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    headers
}

/// Grant `i` of the million: 10,000 users of 10 apps in 100 orgs, each authorizing several
/// times, one grant every 2.6 s over 30 days.
fn grant(
    i: usize,
    fp: &Fingerprinter,
    headers: &http::HeaderMap,
) -> (RequestFacts, ResponseFacts, i64) {
    let (org, user, app) = (i % 100, i % 10_000, i % 10);
    let at = T0 + i as i64 * 2_592;
    let body = format!("grant_type=authorization_code&client_id=3MVG9app{app}&code=c{i}");
    let req = form_request(&body, fp, headers);
    let resp = format!(
        r#"{{"access_token":"x","refresh_token":"5Aep{i}","scope":"api refresh_token","instance_url":"https://o{org}.my.salesforce.com","id":"https://login.salesforce.com/id/00D{org:015}/005{user:015}","issued_at":"{at}"}}"#
    );
    (req, ResponseFacts::parse(200, resp.as_bytes(), fp), at)
}

fn refresh_of(i: usize, fp: &Fingerprinter, headers: &http::HeaderMap) -> RequestFacts {
    let body = format!(
        "grant_type=refresh_token&client_id=3MVG9app{}&refresh_token=5Aep{i}",
        i % 10
    );
    form_request(&body, fp, headers)
}

fn form_request(body: &str, fp: &Fingerprinter, headers: &http::HeaderMap) -> RequestFacts {
    RequestFacts::parse(
        "login.salesforce.com",
        true,
        headers,
        None,
        body.as_bytes(),
        fp,
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let grants: usize = std::env::var("LEDGER_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if let Ok(url) = std::env::var("LEDGER_STORE") {
        shared::run(&url, grants);
        return;
    }
    let fp = Fingerprinter::from_key(&[5; 32]);
    let dir = tempfile::tempdir().unwrap();
    let t0 = T0;
    let headers = form();
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
            let (req, resp, at) = grant(i, &fp, &headers);
            ledger.record(&req, &resp, at);
        }
        let recorded = started.elapsed();
        let rss = rss_kib().saturating_sub(before);
        let probe = refresh_of(123, &fp, &headers);
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

/// The same grants on PostgreSQL.
mod shared {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use grantdoctor::fleet::{Fleet, FleetOptions, Outage, StoreUrl, Target};
    use grantdoctor::ledger::{GrantLedger, REFRESH_CACHED_MAX, fp_key};
    use grantdoctor::oauth::Fingerprinter;

    use super::{T0, form, grant, refresh_of, rss_kib};

    /// Commits waited for at once while recording: the writer's queue stays bounded.
    const IN_FLIGHT: usize = 512;

    pub fn run(url: &str, grants: usize) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        if std::env::var_os("LEDGER_RESTART").is_some() {
            runtime.block_on(restart(url, grants));
        } else {
            runtime.block_on(record(url, grants));
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .arg("--bench")
                .env("LEDGER_RESTART", "1")
                .status()
                .unwrap();
            assert!(status.success(), "the restart measurement failed");
        }
    }

    async fn open(url: &str) -> (GrantLedger, Fingerprinter) {
        let fp = Fingerprinter::from_key(&[5; 32]);
        let Target::Postgres(target) = url.parse::<StoreUrl>().unwrap().target().unwrap() else {
            panic!("LEDGER_STORE must be a postgres:// URL");
        };
        let options = FleetOptions {
            store_ca: Vec::new(),
            lease: Duration::from_secs(40),
            replay_window: Duration::from_secs(30),
            retention: grantdoctor::ledger::Retention {
                max_rows: 100_000_000,
                ..Default::default()
            },
            fingerprint_check: fp.check(),
        };
        let outage = Outage::new(Arc::default(), Default::default());
        let opened = Fleet::open(*target, options, outage).await.unwrap();
        let ledger = GrantLedger::open_shared(Box::new(opened.records), REFRESH_CACHED_MAX).await;
        (ledger, fp)
    }

    async fn record(url: &str, grants: usize) {
        let before = rss_kib();
        let (ledger, fp) = open(url).await;
        let headers = form();
        let started = Instant::now();
        let mut commits = Vec::with_capacity(IN_FLIGHT);
        for i in 0..grants {
            let (req, resp, at) = grant(i, &fp, &headers);
            let (_, commit) = ledger.remember(&req, &resp, at);
            commits.extend(commit);
            if commits.len() == IN_FLIGHT || i + 1 == grants {
                for commit in commits.drain(..) {
                    assert!(commit.wait(Duration::from_secs(30)).await, "a write failed");
                }
            }
        }
        let recorded = started.elapsed();
        println!(
            "postgres: grants recorded: {grants} in {:.1} s ({:.1} µs each, commits waited {IN_FLIGHT} at a time)",
            recorded.as_secs_f64(),
            recorded.as_secs_f64() * 1e6 / grants as f64
        );
        println!(
            "postgres: ledger memory (RSS growth): {:.0} MiB, {} refresh tokens held (at most {REFRESH_CACHED_MAX})",
            rss_kib().saturating_sub(before) as f64 / 1024.0,
            ledger.known_refresh_tokens()
        );
    }

    async fn restart(url: &str, grants: usize) {
        let before = rss_kib();
        let started = Instant::now();
        let (ledger, fp) = open(url).await;
        let opened = started.elapsed();
        let headers = form();
        let now = T0 + grants as i64 * 2_592;
        // Tokens this replica does not hold: each view needs one fetch.
        let n = 2_000.min(grants);
        let t = Instant::now();
        for i in 0..n {
            let probe = refresh_of(i * (grants / n), &fp, &headers);
            ledger.sync(probe.refresh_fp().map(fp_key)).await;
            let view = ledger.view(&probe, now);
            assert!(view.token.is_some(), "token {i} fetched");
        }
        let fetched_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        // The same tokens again: held now.
        let probe = refresh_of(0, &fp, &headers);
        let t = Instant::now();
        let m = 10_000;
        for _ in 0..m {
            ledger.sync(probe.refresh_fp().map(fp_key)).await;
            std::hint::black_box(ledger.view(&probe, now));
        }
        let held_us = t.elapsed().as_secs_f64() * 1e6 / m as f64;
        let sizes = ledger.sizes();
        println!(
            "postgres: restart load: {:.1} s ({} families, {} refresh tokens held)",
            opened.as_secs_f64(),
            sizes.families,
            ledger.known_refresh_tokens()
        );
        println!("postgres: sync and view of a token not held (one fetch): {fetched_us:.0} µs");
        println!("postgres: sync and view of a held token: {held_us:.2} µs");
        println!(
            "postgres: replica memory after the restart (RSS growth): {:.0} MiB",
            rss_kib().saturating_sub(before) as f64 / 1024.0
        );
    }
}
