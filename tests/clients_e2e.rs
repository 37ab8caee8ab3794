//! The clients users run, through the real proxy to the emulator: curl, Python `requests` and
//! `simple-salesforce`, Node `jsforce` (through the proxy and against a gateway). Each must see
//! a success unchanged and an `invalid_grant` with Salesforce's own `error` and
//! `error_description`, with the cause where that client exposes it (headers for curl and
//! requests, the log event otherwise).
//!
//! The clients are installed by `tests/e2e/setup.sh` (which `.ci/run` runs). A test whose
//! client is missing fails, naming the installer, with or without `CI` set: a test that did not
//! run must not be counted as passed, and an `#[ignore]` would hide these tests from the very
//! machines that have the clients.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::stack::Stack;
use serde_json::Value;

const LOGIN: &str = "login.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";
const DEAD: &str = "5Aep861.never.issued.token";

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

/// Whether the clients are installed; their absence fails the test that needs them.
fn installed(what: &str, path: &Path) -> bool {
    assert!(
        path.exists(),
        "{what} is not installed ({}): run tests/e2e/setup.sh (.ci/run does)",
        path.display()
    );
    true
}

fn python() -> Option<PathBuf> {
    let path = e2e_dir().join(".venv/bin/python");
    installed("the Python venv", &path).then_some(path)
}

fn jsforce() -> bool {
    installed("jsforce", &e2e_dir().join("node_modules/jsforce"))
}

/// Runs a client to completion; its stdout is one JSON object.
async fn run(command: Command) -> Value {
    let mut command = command;
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// A command without the proxy settings this machine's environment may carry.
fn clean(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
    ] {
        command.env_remove(var);
    }
    command
}

fn python_client(stack: &Stack, python: &Path, args: &[&str]) -> Command {
    let mut command = clean(python);
    command
        .arg(e2e_dir().join("python_clients.py"))
        .args(args)
        .env("HTTPS_PROXY", stack.proxy.proxy_url())
        .env(
            "REQUESTS_CA_BUNDLE",
            stack.proxy.ca_dir().join("bundle.pem"),
        );
    command
}

fn jsforce_client(login_url: &str, token: &str, proxy: Option<&str>, ca: Option<&Path>) -> Command {
    let mut command = clean("node");
    command
        .arg(e2e_dir().join("jsforce_refresh.js"))
        .args([login_url, WEB, token])
        .args(proxy);
    if let Some(ca) = ca {
        command.env("NODE_EXTRA_CA_CERTS", ca);
    }
    command
}

async fn refresh_token_of(stack: &Stack) -> String {
    let answer = stack
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["refresh_token"].as_str().unwrap().to_owned()
}

/// The invalid_grant event the proxy logged for the `nth` failure (0-based).
fn failure_event(stack: &Stack, nth: usize) -> Value {
    stack.proxy.wait_for_event(|e| {
        e["event"] == "invalid_grant"
            && stack
                .proxy
                .events()
                .iter()
                .filter(|x| x["event"] == "invalid_grant")
                .count()
                > nth
    });
    stack
        .proxy
        .events()
        .into_iter()
        .filter(|e| e["event"] == "invalid_grant")
        .nth(nth)
        .unwrap()
}

struct Curl {
    status: u16,
    headers: String,
    body: Value,
}

/// A token request with curl, through the proxy trusting the bundle, or straight at a URL.
async fn curl(url: &str, proxy: Option<&Stack>, form: &[(&str, &str)]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let mut command = clean("curl");
    command.args(["-sS", "-o", "-", "-D"]).arg(&headers);
    if let Some(stack) = proxy {
        command
            .args(["-x", &stack.proxy.proxy_url(), "--cacert"])
            .arg(stack.proxy.ca_dir().join("bundle.pem"));
    }
    for (k, v) in form {
        command.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    command.arg(url);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let headers = std::fs::read_to_string(&headers)
        .unwrap()
        .to_ascii_lowercase();
    // With a proxy the file holds the CONNECT response first; the last block is the answer.
    let last = headers
        .trim_end()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap()
        .to_owned();
    let status = last.split_whitespace().nth(1).unwrap().parse().unwrap();
    Curl {
        status,
        headers: last,
        body: serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&output.stdout).into())),
    }
}

/// A refresh of the web app's `token` with curl.
async fn curl_refresh(url: &str, proxy: Option<&Stack>, token: &str) -> Curl {
    curl(
        url,
        proxy,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", WEB),
            ("refresh_token", token),
        ],
    )
    .await
}

#[tokio::test]
async fn curl_exchanges_a_code_and_refreshes_and_sees_the_cause_in_headers() {
    let stack = Stack::start(&[]);
    let url = format!("https://{LOGIN}/services/oauth2/token");
    let code = stack.authorize(WEB, ALICE, "api refresh_token", None).await;
    let issued = curl(
        &url,
        Some(&stack),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", WEB),
            ("client_secret", WEB_SECRET),
            ("code", &code),
            ("redirect_uri", "https://app.example.com/callback"),
        ],
    )
    .await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    assert!(
        !issued.headers.contains("grantdoctor-"),
        "{}",
        issued.headers
    );
    let token = issued.body["refresh_token"].as_str().unwrap().to_owned();
    let refreshed = curl_refresh(&url, Some(&stack), &token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert!(refreshed.body["access_token"].is_string());

    let failed = curl_refresh(&url, Some(&stack), DEAD).await;
    assert_eq!(failed.status, 400);
    assert_eq!(failed.body["error"], "invalid_grant");
    assert_eq!(
        failed.body["error_description"],
        "expired access/refresh token"
    );
    assert!(
        failed.headers.contains("grantdoctor-cause: sf.refresh."),
        "{}",
        failed.headers
    );
    assert!(!stack.proxy.raw_log().contains(&token));
}

#[tokio::test]
async fn requests_refreshes_with_gzip_and_sees_the_cause_in_headers() {
    let Some(python) = python() else { return };
    let stack = Stack::start(&[]);
    let token = refresh_token_of(&stack).await;
    let ok = run(python_client(
        &stack,
        &python,
        &["requests-refresh", LOGIN, WEB, &token],
    ))
    .await;
    assert_eq!(ok["status"], 200, "{ok}");
    // requests asked for gzip; Salesforce's (the emulator's) gzip passed through untouched.
    assert_eq!(ok["content_encoding"], "gzip");
    assert!(ok["body"]["access_token"].is_string());
    assert!(ok["cause"].is_null());

    let failed = run(python_client(
        &stack,
        &python,
        &["requests-refresh", LOGIN, WEB, DEAD],
    ))
    .await;
    assert_eq!(failed["status"], 400);
    assert_eq!(failed["content_encoding"], "gzip");
    assert_eq!(failed["body"]["error"], "invalid_grant");
    assert_eq!(
        failed["body"]["error_description"],
        "expired access/refresh token"
    );
    let cause = failed["cause"].as_str().expect("the cause header");
    assert!(cause.starts_with("sf.refresh."), "{failed}");
    assert_eq!(failed["body"]["grantdoctor"]["causes"][0]["id"], cause);
    assert!(!stack.proxy.raw_log().contains(&token));
}

#[tokio::test]
async fn simple_salesforce_logs_in_with_password_jwt_and_client_credentials() {
    let Some(python) = python() else { return };
    let stack = Stack::start(&[]);
    let key = common::jwt::fixture("jwt/app-private.pem")
        .display()
        .to_string();
    let password = run(python_client(
        &stack,
        &python,
        &["sf-password", ALICE, "Pa55wordTOKEN123", WEB, WEB_SECRET],
    ))
    .await;
    assert_eq!(password["ok"], true, "{password}");
    assert_eq!(password["instance"], "acme.my.salesforce.com");
    let jwt = run(python_client(
        &stack,
        &python,
        &["sf-jwt", ALICE, "3MVG9jwt", &key],
    ))
    .await;
    assert_eq!(jwt["ok"], true, "{jwt}");
    let cc = run(python_client(
        &stack,
        &python,
        &["sf-client-credentials", "3MVG9cc", "cc-secret", "acme.my"],
    ))
    .await;
    assert_eq!(cc["ok"], true, "{cc}");

    // Failures: Salesforce's strings reach the exception; the cause reaches the log.
    let wrong = run(python_client(
        &stack,
        &python,
        &["sf-password", ALICE, "wrongTOKEN123", WEB, WEB_SECRET],
    ))
    .await;
    assert_eq!(wrong["ok"], false);
    assert!(
        wrong["message"]
            .as_str()
            .unwrap()
            .contains("authentication failure"),
        "{wrong}"
    );
    let event = failure_event(&stack, 0);
    assert_eq!(event["grant_type"], "password");
    assert!(
        event["cause"].as_str().unwrap().starts_with("sf.password."),
        "{event}"
    );

    let stranger = run(python_client(
        &stack,
        &python,
        &["sf-jwt", "nobody@acme.com", "3MVG9jwt", &key],
    ))
    .await;
    assert_eq!(stranger["ok"], false);
    assert!(
        stranger["message"]
            .as_str()
            .unwrap()
            .contains("user hasn't approved this consumer"),
        "{stranger}"
    );
    let event = failure_event(&stack, 1);
    assert_eq!(
        event["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    assert!(
        event["cause"].as_str().unwrap().starts_with("sf."),
        "{event}"
    );
    let log = stack.proxy.raw_log();
    for secret in ["Pa55word", "TOKEN123", WEB_SECRET, "cc-secret", "eyJ"] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[tokio::test]
async fn jsforce_refreshes_through_the_proxy_with_its_chunked_body() {
    if !jsforce() {
        return;
    }
    let stack = Stack::start(&[]);
    let token = refresh_token_of(&stack).await;
    let proxy = stack.proxy.proxy_url();
    let ca = stack.proxy.ca_pem();
    let login = format!("https://{LOGIN}");
    let ok = run(jsforce_client(&login, &token, Some(&proxy), Some(&ca))).await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["has_access_token"], true);
    let refreshed = stack
        .proxy
        .wait_for_event(|e| e["event"] == "token_refreshed");
    assert_eq!(refreshed["client_id"], WEB);

    let failed = run(jsforce_client(&login, DEAD, Some(&proxy), Some(&ca))).await;
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["error"], "invalid_grant");
    assert_eq!(failed["error_description"], "expired access/refresh token");
    let event = failure_event(&stack, 0);
    assert!(
        event["cause"].as_str().unwrap().starts_with("sf.refresh."),
        "{event}"
    );
}

#[tokio::test]
async fn a_gateway_serves_jsforce_and_curl_without_a_ca_or_proxy_settings() {
    let stack = Stack::start(&[
        "--gateway",
        "https://login.salesforce.com",
        "--gateway",
        "/sandbox=https://test.salesforce.com",
    ]);
    let gateway = format!("http://{}", stack.proxy.addr);
    let token = refresh_token_of(&stack).await;

    let refreshed = curl_refresh(&format!("{gateway}/services/oauth2/token"), None, &token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(
        refreshed.body["instance_url"],
        "https://acme.my.salesforce.com"
    );
    let failed = curl_refresh(&format!("{gateway}/services/oauth2/token"), None, DEAD).await;
    assert_eq!(failed.status, 400);
    assert_eq!(
        failed.body["error_description"],
        "expired access/refresh token"
    );
    assert!(
        failed.headers.contains("grantdoctor-cause: sf.refresh."),
        "{}",
        failed.headers
    );
    // The prefix rule sends the sandbox path to test.salesforce.com, where the token is unknown.
    let sandbox = curl_refresh(
        &format!("{gateway}/sandbox/services/oauth2/token"),
        None,
        &token,
    )
    .await;
    assert_eq!(sandbox.status, 400, "{}", sandbox.body);
    let log = stack.emu.control("GET", "requests", Value::Null).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|r| r["host"] == "test.salesforce.com"),
        "{log}"
    );
    let unrouted = curl(&format!("{gateway}/elsewhere"), None, &[]).await;
    assert_eq!(unrouted.status, 404);

    if !jsforce() {
        return;
    }
    let ok = run(jsforce_client(&gateway, &token, None, None)).await;
    assert_eq!(ok["ok"], true, "{ok}");
    let failed = run(jsforce_client(&gateway, DEAD, None, None)).await;
    assert_eq!(failed["error"], "invalid_grant");
    assert_eq!(failed["error_description"], "expired access/refresh token");
}
