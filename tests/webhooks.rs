//! Alerts by webhook, end to end: the real proxy in front of the emulator POSTs its diagnosed
//! failures to a receiver written here (raw HTTP/1.1 on 127.0.0.1, recording every request,
//! able to answer 500 the first N times). Payload, signature, dedup, retries, the Slack
//! format, filters, a dead receiver that never delays a token answer, and a full queue.
//!
//! The runtimes are multi-threaded: the receivers run on them while a test blocks waiting
//! for a log line.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::stack::{Answer, Stack};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOGIN: &str = "login.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";
const HOOK_SECRET: &str = "whsec-not-for-logs";
/// A token in the webhook URL, as Slack's and many others' URLs carry one.
const URL_TOKEN: &str = "T0KEN-in-the-url";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver on 127.0.0.1 that answers 500 to its first `failures` requests.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(failures: usize) -> Self {
        Self::on(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            failures,
        )
    }

    fn on(listener: tokio::net::TcpListener, failures: usize) -> Self {
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let record = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (record, seen) = (record.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Some(request) = read_request(stream, &seen, failures).await {
                        record.lock().unwrap().push(request);
                    }
                });
            }
        });
        Self { addr, got }
    }

    /// The same over TLS, with a leaf for `hooks.test` from a CA of its own (its PEM in the
    /// returned directory, `ca.pem`).
    async fn start_tls() -> (Self, tempfile::TempDir) {
        common::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["hooks.test".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key.into())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let record = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    if let Some(request) = read_request(tls, &AtomicUsize::new(0), 0).await {
                        record.lock().unwrap().push(request);
                    }
                });
            }
        });
        (Self { addr, got }, dir)
    }

    fn url(&self) -> String {
        format!("http://{}/hook/{URL_TOKEN}?key={URL_TOKEN}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived, or panics after `within`.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{} of {n} requests", got.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Reads one request and answers it (500 while fewer than `failures` came before it).
async fn read_request(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    seen: &AtomicUsize,
    failures: usize,
) -> Option<Received> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    let status = if seen.fetch_add(1, Ordering::SeqCst) < failures {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    stream.write_all(answer.as_bytes()).await.ok()?;
    Some(Received {
        headers,
        body: data[head_end..head_end + length].to_vec(),
    })
}

/// A stack whose proxy reads `config` (a TOML file written for it) after `args`.
fn stack_with_config(config: &str, args: &[&str]) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grantdoctor.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.display().to_string();
    let mut all = vec!["--config", path.as_str()];
    all.extend_from_slice(args);
    (Stack::start(&all), dir)
}

/// A refresh of a token Salesforce never issued: a diagnosed `invalid_grant`, no warnings.
async fn unknown_refresh(stack: &Stack, n: usize) -> Answer {
    let answer = stack
        .refresh(LOGIN, WEB, &format!("5Aep861never.issued.{n}"))
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    answer
}

fn metric(stack: &Stack, series: &str) -> u64 {
    let admin = stack.proxy.admin.expect("the proxy's admin port");
    let (_, text) = common::raw::admin_get(admin, "/metrics").expect("/metrics answers");
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

fn events_of(stack: &Stack, kind: &str) -> Vec<Value> {
    stack
        .proxy
        .events()
        .into_iter()
        .filter(|e| e["event"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diagnosed_invalid_grant_is_posted_signed_with_its_fields_and_no_secret() {
    let receiver = Receiver::start(0).await;
    let config = format!(
        "[[webhooks]]\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\nevents = [\"invalid_grant\"]\n",
        receiver.url()
    );
    let (stack, _dir) = stack_with_config(&config, &[]);
    let mut secrets = vec![WEB_SECRET.to_owned(), HOOK_SECRET.to_owned()];
    for _ in 0..6 {
        let login = stack
            .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
            .await;
        assert_eq!(login.status, 200, "{}", login.body);
        for token in ["refresh_token", "access_token"] {
            secrets.push(login.body[token].as_str().unwrap().to_owned());
        }
    }
    let answer = stack.refresh(LOGIN, WEB, &secrets[2]).await;
    assert_eq!(
        answer.cause(),
        "sf.refresh.approval_limit_evicted",
        "{}",
        answer.body
    );
    let event_id = answer.headers["grantdoctor-event"].to_str().unwrap();

    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let request = &got[0];
    let body = request.json();
    assert_eq!(body["grantdoctor_webhook"], 1);
    assert_eq!(body["event"], "invalid_grant");
    assert_eq!(body["cause"], "sf.refresh.approval_limit_evicted");
    assert_eq!(body["basis"], "evidence");
    assert_eq!(body["event_id"], event_id);
    assert!(!body["client_id"].as_str().unwrap().is_empty(), "{body}");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("grantdoctor-event"), event_id);

    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
    let hex = request
        .header("grantdoctor-signature")
        .strip_prefix("sha256=")
        .expect("a sha256= signature");
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    ring::hmac::verify(&key, &request.body, &tag).expect("the signature verifies");

    let text = String::from_utf8_lossy(&request.body);
    let log = stack.proxy.raw_log();
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret in the body: {text}"
        );
        assert!(!log.contains(secret.as_str()), "a secret in the log");
    }
    assert!(
        !log.contains(URL_TOKEN),
        "the webhook URL's token in the log"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "the warnings are filtered out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_within_the_dedup_window_are_held_back_and_counted_on_the_next_one() {
    let receiver = Receiver::start(0).await;
    let url = receiver.url();
    let stack = Stack::start(&[
        "--webhook",
        &url,
        "--webhook-dedup",
        "2",
        "--dead-token-breaker",
        "off",
    ]);
    let started = Instant::now();
    let first = unknown_refresh(&stack, 1).await;
    unknown_refresh(&stack, 1).await;
    unknown_refresh(&stack, 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the test needs a faster machine"
    );
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].json()["event_id"],
        first.headers["grantdoctor-event"].to_str().unwrap()
    );
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    assert_eq!(receiver.received().len(), 1, "the repeats were held back");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = unknown_refresh(&stack, 1).await;
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    let body = got[1].json();
    assert_eq!(
        body["event_id"],
        later.headers["grantdoctor-event"].to_str().unwrap()
    );
    assert_eq!(body["suppressed"], 2, "{body}");
    assert!(got[0].json().get("suppressed").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_the_alert_on_the_third_attempt() {
    let receiver = Receiver::start(2).await;
    let url = receiver.url();
    let stack = Stack::start(&["--webhook", &url]);
    let answer = unknown_refresh(&stack, 1).await;
    let got = receiver.wait_for(3, Duration::from_secs(15)).await;
    let event_id = answer.headers["grantdoctor-event"].to_str().unwrap();
    assert!(
        got.iter()
            .all(|r| r.header("grantdoctor-event") == event_id)
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same body each time"
    );
    stack
        .proxy
        .wait_for_event(|e| e["event"] == "webhook_recovered");
    let failed = events_of(&stack, "webhook_failed");
    assert_eq!(failed.len(), 1, "one line per outage: {failed:?}");
    assert_eq!(failed[0]["host"], "127.0.0.1");
    assert_eq!(failed[0]["reason"], "status 500");
    assert!(!stack.proxy.raw_log().contains(URL_TOKEN));
    let series = "grantdoctor_webhook_deliveries_total{outcome=";
    assert_eq!(metric(&stack, &format!("{series}\"delivered\"}}")), 1);
    assert_eq!(metric(&stack, &format!("{series}\"retried\"}}")), 2);
    assert_eq!(metric(&stack, &format!("{series}\"failed\"}}")), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 3, "delivered once, then no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_format_is_one_line_of_text() {
    let receiver = Receiver::start(0).await;
    let config = format!(
        "[[webhooks]]\nurl = \"{}\"\nformat = \"slack\"\n",
        receiver.url()
    );
    let (stack, _dir) = stack_with_config(&config, &[]);
    let answer = unknown_refresh(&stack, 1).await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let body = got[0].json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(!text.contains('\n'), "{text}");
    let event_id = answer.headers["grantdoctor-event"].to_str().unwrap();
    for part in ["invalid_grant", answer.cause(), "client ", LOGIN, event_id] {
        assert!(text.contains(part), "{part} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_keeps_out_what_it_does_not_name() {
    let (only_warnings, everything) = (Receiver::start(0).await, Receiver::start(0).await);
    let config = format!(
        "[[webhooks]]\nurl = \"{}\"\nevents = [\"warn.*\"]\n\n[[webhooks]]\nurl = \"{}\"\n",
        only_warnings.url(),
        everything.url()
    );
    let (stack, _dir) = stack_with_config(&config, &[]);
    unknown_refresh(&stack, 1).await;
    let got = everything.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["event"], "invalid_grant");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        only_warnings.received().is_empty(),
        "{:?}",
        only_warnings.received()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_never_delays_the_token_answer() {
    // A port with nothing behind it yet: the alert's first attempts fail to connect.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = port.local_addr().unwrap();
    drop(port);
    let url = format!("http://{addr}/hook/{URL_TOKEN}");
    let stack = Stack::start(&["--webhook", &url]);
    let answer = unknown_refresh(&stack, 1).await;
    assert!(answer.headers.contains_key("grantdoctor-event"));
    // The answer is here and the receiver does not even exist: delivery is not in its way.
    stack
        .proxy
        .wait_for_event(|e| e["event"] == "webhook_failed");
    let receiver = Receiver::on(tokio::net::TcpListener::bind(addr).await.unwrap(), 0);
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["event"], "invalid_grant");
    stack
        .proxy
        .wait_for_event(|e| e["event"] == "webhook_recovered");
    let failed = events_of(&stack, "webhook_failed");
    assert_eq!(failed[0]["reason"], "could not connect", "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_beyond_a_full_queue_are_dropped_and_counted() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", port.local_addr().unwrap());
    drop(port);
    let stack = Stack::start(&[
        "--webhook",
        &url,
        "--webhook-queue",
        "1",
        "--webhook-dedup",
        "0",
    ]);
    for n in 0..6 {
        unknown_refresh(&stack, n).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let series = "grantdoctor_webhook_dropped_total{reason=\"queue_full\"}";
    while metric(&stack, series) == 0 {
        assert!(Instant::now() < deadline, "nothing counted as dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(
            &stack,
            "grantdoctor_webhook_dropped_total{reason=\"gave_up\"}"
        ),
        0,
        "still retrying the first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_is_reached_through_resolve_and_verified_against_upstream_ca() {
    let (receiver, dir) = Receiver::start_tls().await;
    let resolve = format!("hooks.test:443={}", receiver.addr);
    let ca = dir.path().join("ca.pem").display().to_string();
    let url = format!("https://hooks.test/hook/{URL_TOKEN}");
    let stack = Stack::start(&[
        "--resolve",
        &resolve,
        "--upstream-ca",
        &ca,
        "--webhook",
        &url,
    ]);
    unknown_refresh(&stack, 1).await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["event"], "invalid_grant");
    assert_eq!(got[0].header("host"), "hooks.test");
    assert_eq!(
        metric(
            &stack,
            "grantdoctor_webhook_deliveries_total{outcome=\"retried\"}"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_whose_certificate_is_not_trusted_is_never_sent_the_alert() {
    let (receiver, _dir) = Receiver::start_tls().await;
    let resolve = format!("hooks.test:443={}", receiver.addr);
    let url = format!("https://hooks.test/hook/{URL_TOKEN}");
    let stack = Stack::start(&["--resolve", &resolve, "--webhook", &url]);
    unknown_refresh(&stack, 1).await;
    let failed = stack
        .proxy
        .wait_for_event(|e| e["event"] == "webhook_failed");
    assert_eq!(failed["host"], "hooks.test");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.starts_with("TLS: "), "{reason}");
    assert!(!stack.proxy.raw_log().contains(URL_TOKEN));
    assert!(receiver.received().is_empty());
}

#[test]
fn check_config_shows_webhooks_with_the_url_and_secret_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grantdoctor.toml");
    let file = format!(
        "webhook_dedup = 60\n[[webhooks]]\nurl = \"https://hooks.example.com/services/{URL_TOKEN}\"\n\
         format = \"slack\"\nevents = [\"sf.refresh.*\"]\nsecret = \"{HOOK_SECRET}\"\n"
    );
    std::fs::write(&path, file).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .args([
            "--webhook",
            &format!("https://user:pw@alerts.example.com/x?token={URL_TOKEN}"),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("webhook = [\"https://alerts.example.com/…\"]"),
        "{stdout}"
    );
    assert!(stdout.contains("webhook_dedup = 60  # file"), "{stdout}");
    assert!(
        stdout.contains("url = \"https://hooks.example.com/…\""),
        "{stdout}"
    );
    assert!(stdout.contains("secret = \"********\""), "{stdout}");
    assert!(stdout.contains("[[webhooks]]  # file"), "{stdout}");
    for secret in [URL_TOKEN, HOOK_SECRET, "user:pw"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret}: {stdout}"
        );
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(["check-config", "--webhook", &format!("ftp://x/{URL_TOKEN}")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("webhook 1") && !stderr.contains(URL_TOKEN),
        "{stderr}"
    );
}
