//! The observability pack against the real binary: every metric the alert rules and the
//! dashboard name is exported, the histograms count what the traffic did, the rules pass
//! `promtool check rules` and their own `promtool test rules`, and the dashboard is a valid
//! Grafana dashboard with the panels operators look for.
//!
//! promtool comes from Debian's `prometheus` package (`.ci/run` installs it). A missing
//! promtool fails the test, naming the package: a check that did not run never passes.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::raw::admin_get;
use common::stack::Stack;
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn scrape(admin: SocketAddr) -> String {
    let (status, body) = admin_get(admin, "/metrics").expect("the admin port answers");
    assert_eq!(status, 200, "{body}");
    body
}

/// The sample names of an exposition (`grantdoctor_x_total`, `grantdoctor_y_bucket`, ...).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// The value of the sample line that starts with `name_and_labels` exactly.
fn sample(exposition: &str, name_and_labels: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Every `grantdoctor_...` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("grantdoctor_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let preceded_by_word = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded_by_word {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The `expr:` of every rule in the alert file (one line each, as the file promises).
fn alert_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let exprs: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr:"))
        .map(|e| e.trim().to_owned())
        .collect();
    for expr in &exprs {
        assert!(
            !expr.is_empty() && !expr.starts_with(['|', '>']),
            "keep each expr on one line: {expr:?}"
        );
    }
    assert!(exprs.len() >= 6, "{exprs:?}");
    exprs
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(deploy("grafana/grantdoctor.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every query of the dashboard: panel targets and template variable queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    exprs
}

/// Whether `name` is exported: as a sample name, or as a histogram's base name.
fn exported(names: &BTreeSet<String>, name: &str) -> bool {
    names.contains(name) || names.contains(&format!("{name}_bucket"))
}

/// A short run through the proxy to the emulator: a failed and a successful token exchange,
/// and one forwarded non-token request.
async fn traffic(stack: &Stack) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "3MVG9cc"),
        ("client_secret", "cc-secret"),
    ];
    assert_eq!(stack.token("login.salesforce.com", &form).await.status, 400);
    assert_eq!(
        stack.token("acme.my.salesforce.com", &form).await.status,
        200
    );
    let forwarded = stack
        .client
        .get("https://acme.my.salesforce.com/services/data/")
        .send()
        .await
        .unwrap();
    assert!(forwarded.headers().get("grantdoctor-error").is_none());
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_name_is_exported() {
    let stack = Stack::start(&[]);
    traffic(&stack).await;
    let metrics = scrape(stack.proxy.admin.unwrap());
    let names = sample_names(&metrics);
    let mut used: BTreeSet<String> = BTreeSet::new();
    for expr in alert_exprs().iter().chain(&dashboard_exprs(&dashboard())) {
        used.extend(metric_names(expr));
    }
    assert!(used.len() >= 10, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !exported(&names, n)).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}\n{metrics}"
    );
}

#[tokio::test]
async fn every_cause_and_warning_an_alert_keys_on_is_exported_from_the_start() {
    let stack = Stack::start(&[]);
    let metrics = scrape(stack.proxy.admin.unwrap());
    let mut keyed = 0;
    for expr in alert_exprs() {
        for (label, metric) in [
            ("cause", "grantdoctor_diagnoses_total"),
            ("id", "grantdoctor_warnings_total"),
        ] {
            let Some(at) = expr.find(&format!("{metric}{{{label}=\"")) else {
                continue;
            };
            let value = expr[at + metric.len() + label.len() + 3..]
                .split('"')
                .next()
                .unwrap();
            let series = format!("{metric}{{{label}=\"{value}\"}}");
            assert_eq!(sample(&metrics, &series), Some(0.0), "{series}:\n{metrics}");
            keyed += 1;
        }
    }
    assert!(keyed >= 4, "alerts keyed on cause or warning ids: {keyed}");
    assert_eq!(
        sample(&metrics, "grantdoctor_ledger_write_errors_total"),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_latency_histograms_count_the_exchanges_and_requests_made() {
    let stack = Stack::start(&[]);
    traffic(&stack).await;
    let metrics = scrape(stack.proxy.admin.unwrap());
    let exchanges = |outcome: &str| {
        sample(
            &metrics,
            &format!(
                "grantdoctor_token_exchange_duration_seconds_count{{grant_type=\"client_credentials\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(exchanges("error"), Some(1.0), "{metrics}");
    assert_eq!(exchanges("success"), Some(1.0), "{metrics}");
    let inf = sample(
        &metrics,
        "grantdoctor_token_exchange_duration_seconds_bucket{le=\"+Inf\",grant_type=\"client_credentials\",outcome=\"success\"}",
    );
    assert_eq!(inf, Some(1.0), "{metrics}");
    let took = sample(
        &metrics,
        "grantdoctor_token_exchange_duration_seconds_sum{grant_type=\"client_credentials\",outcome=\"success\"}",
    )
    .unwrap();
    assert!(took > 0.0 && took < 30.0, "{took}");
    let forwarded = sample(
        &metrics,
        "grantdoctor_request_duration_seconds_count{host_class=\"my_domain\"}",
    );
    assert_eq!(forwarded, Some(1.0), "{metrics}");
    let build = metrics
        .lines()
        .find(|l| l.starts_with("grantdoctor_build_info{"))
        .expect("grantdoctor_build_info is exported");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build.contains("commit=\"")
            && build.ends_with(" 1"),
        "{build}"
    );
}

/// Waits until the sample reaches `want` (the handshake's end is logged after the client
/// sees it).
fn wait_for_sample(admin: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(admin);
        if sample(&metrics, series) == Some(want) || Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TLS client that fails its handshake through the proxy as `trust` makes it.
async fn refused_handshake(proxy: SocketAddr, trust: rustls::RootCertStore) {
    let tcp = common::raw::connect_tunnel(proxy, "login.salesforce.com").await;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(trust)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("login.salesforce.com").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
}

#[tokio::test]
async fn client_tls_failures_are_counted_by_reason() {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::AsyncWriteExt;
    let stack = Stack::start(&[]);
    let admin = stack.proxy.admin.unwrap();
    let proxy = stack.proxy.addr;
    // A client that trusts no CA of ours answers the leaf with unknown_ca.
    refused_handshake(proxy, rustls::RootCertStore::empty()).await;
    // One that trusts another CA of the same name finds the signature wrong.
    let mut other = rustls::RootCertStore::empty();
    let pem = std::fs::read(stack.emu.ca_pem()).unwrap();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        other.add(cert.unwrap()).unwrap();
    }
    refused_handshake(proxy, other).await;
    // One that sends its hello and hangs up.
    let mut tcp = common::raw::connect_tunnel(proxy, "login.salesforce.com").await;
    let mut hello = Vec::new();
    let name = rustls_pki_types::ServerName::try_from("login.salesforce.com").unwrap();
    rustls::ClientConnection::new(
        common::raw::client_tls(&stack.proxy.ca_pem(), &[b"http/1.1"]),
        name,
    )
    .unwrap()
    .write_tls(&mut hello)
    .unwrap();
    tcp.write_all(&hello).await.unwrap();
    tcp.shutdown().await.unwrap();
    drop(tcp);
    let series =
        |reason: &str| format!("grantdoctor_client_tls_failures_total{{reason=\"{reason}\"}}");
    let mut metrics = String::new();
    for reason in ["unknown_ca", "bad_certificate", "eof"] {
        metrics = wait_for_sample(admin, &series(reason), 1.0);
    }
    let logged: Vec<String> = stack
        .proxy
        .events()
        .into_iter()
        .filter(|e| e["event"] == "client_tls_failed")
        .map(|e| e["reason"].to_string())
        .collect();
    for (reason, count) in [
        ("unknown_ca", 1.0),
        ("bad_certificate", 1.0),
        ("eof", 1.0),
        ("protocol", 0.0),
        ("other", 0.0),
    ] {
        assert_eq!(
            sample(&metrics, &series(reason)),
            Some(count),
            "{reason}; the proxy logged {logged:?}"
        );
    }
}

/// promtool, or a failure that names the package.
fn promtool() -> Command {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Command::new(path),
        None if std::env::var_os("CI").is_some() => {
            panic!("promtool is missing in CI: .ci/run installs the Debian package prometheus")
        }
        None => panic!(
            "NOT RUN, counted as failed: promtool is missing; apt-get install prometheus \
             (the binary only; the service need not run), or run bash .ci/run"
        ),
    }
}

fn run_promtool(args: &[&str]) -> String {
    let output = promtool()
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = run_promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Each alert is exercised by the unit test, firing and not.
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/alerts.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
    {
        let alert = alert.trim();
        let mentions = tests.matches(&format!("alertname: {alert}")).count();
        assert!(mentions >= 2, "{alert} needs a firing and a quiet case");
    }
}

#[test]
fn the_dashboard_has_the_panels_and_asks_for_its_datasource() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for title in [
        "Failures by cause",
        "Token exchange latency",
        "Recoveries",
        "Coalesced and blocked refreshes",
        "Tunnel bytes",
        "Active connections",
        "Ledger write errors",
    ] {
        assert!(titles.contains(&title), "{title} missing from {titles:?}");
    }
    let latency = panels
        .iter()
        .find(|p| p["title"] == "Token exchange latency")
        .unwrap();
    let queries = latency["targets"].to_string();
    for quantile in ["histogram_quantile(0.5,", "histogram_quantile(0.99,"] {
        assert!(queries.contains(quantile), "{quantile} in {queries}");
    }
    assert!(queries.contains("grantdoctor_token_exchange_duration_seconds_bucket"));
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
    }
    every_datasource_is_the_variable(&dashboard);
}

/// No datasource uid is hard-coded: every Prometheus reference goes through the variable.
fn every_datasource_is_the_variable(value: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(ds) = map.get("datasource")
                && ds.get("type").and_then(Value::as_str) != Some("grafana")
            {
                assert_eq!(ds["uid"], "${datasource}", "{ds}");
            }
            map.values().for_each(every_datasource_is_the_variable);
        }
        Value::Array(items) => items.iter().for_each(every_datasource_is_the_variable),
        _ => {}
    }
}

#[test]
fn metric_names_are_read_out_of_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(grantdoctor_a_bucket{x=\"grantdoctor\"}[5m]))) / grantdoctor_b_total"
        ),
        ["grantdoctor_a_bucket", "grantdoctor_b_total"]
    );
    assert!(metric_names("up{job=\"grantdoctor\"} == 0").is_empty());
    assert!(metric_names("my_grantdoctor_thing").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_gauges_count_tokens_families_and_live_approvals() {
    let stack = Stack::start(&[]);
    for _ in 0..6 {
        let answer = stack
            .web_login(
                "3MVG9web",
                "web-secret",
                "alice@acme.com",
                "api refresh_token",
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let admin = stack.proxy.admin.expect("an admin port");
    let text = scrape(admin);
    let gauge = |kind: &str| {
        sample(
            &text,
            &format!("grantdoctor_ledger_size{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(gauge("tokens_known"), Some(6.0), "{text}");
    assert_eq!(gauge("families"), Some(1.0));
    // Six issued, the limit keeps five.
    assert_eq!(gauge("live_approvals"), Some(5.0));
    assert_eq!(gauge("dead_tokens"), Some(0.0));
}
