//! The command line: `explain` and `ca`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn grantdoctor(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_reads_a_pasted_body_from_stdin() {
    let (ok, out, err) = grantdoctor(
        &["explain", "--grant-type", "client_credentials"],
        Some(
            r#"{"error":"invalid_grant","error_description":"request not supported on this domain"}"#,
        ),
    );
    assert!(ok, "{err}");
    assert!(out.contains("1. sf.cc.wrong_domain"), "{out}");
    assert!(
        out.contains("fix: Call https://<MyDomain>.my.salesforce.com/services/oauth2/token"),
        "{out}"
    );
}

#[test]
fn explain_decodes_an_assertion_and_prints_json() {
    use base64::Engine;
    let enc = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let assertion = format!(
        "{}.{}.c2ln",
        enc(serde_json::json!({"alg":"HS256"})),
        enc(
            serde_json::json!({"iss":"3MVG9x","sub":"a@b.c","aud":"https://login.salesforce.com","exp":1})
        )
    );
    let (ok, out, err) = grantdoctor(
        &[
            "explain",
            "--json",
            "--grant-type",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "--assertion",
            &assertion,
            "invalid_grant: invalid assertion",
        ],
        None,
    );
    assert!(ok, "{err}");
    let causes: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(causes[0]["id"], "sf.jwt.invalid_signature");
    assert!(
        causes[0]["evidence"][0]
            .as_str()
            .unwrap()
            .contains("alg is HS256")
    );
    assert!(!out.contains(&assertion));
}

#[test]
fn explain_without_input_says_what_it_needs() {
    let (ok, _, err) = grantdoctor(&["explain"], Some(""));
    assert!(!ok);
    assert!(err.contains("nothing to explain"), "{err}");
}

#[test]
fn ca_init_and_show_report_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("certs");
    let ca = ca_dir.to_str().unwrap();
    let (ok, out, err) = grantdoctor(&["ca", "init", "--ca-dir", ca], None);
    assert!(ok, "{err}");
    assert!(out.starts_with("created"), "{out}");
    let (ok, out, _) = grantdoctor(&["ca", "show", "--ca-dir", ca], None);
    assert!(ok);
    assert!(
        out.contains("sha256:") && out.contains("grantdoctor local CA"),
        "{out}"
    );
    let (_, again, _) = grantdoctor(&["ca", "init", "--ca-dir", ca], None);
    assert!(again.starts_with("exists:"), "{again}");
}

#[test]
fn the_demo_shows_four_diagnosed_failures_and_exits() {
    let (ok, out, err) = grantdoctor(&["demo"], None);
    assert!(ok, "{err}");
    for cause in [
        "sf.refresh.approval_limit_evicted",
        "sf.cc.wrong_domain",
        "sf.password.bad_credentials",
        "sf.request.malformed",
    ] {
        assert!(
            out.contains(&format!("grantdoctor-cause: {cause}")),
            "{cause} missing from:\n{out}"
        );
    }
    assert!(!out.contains("demo-secret") && !out.contains("DEMOTOKEN"));
}

#[test]
fn logs_renders_a_json_log_for_a_human() {
    let line = r#"{"ts":"2026-11-25T20:14:03.120Z","level":"warn","event":"invalid_grant","host":"login.salesforce.com","grant_type":"refresh_token","status":400,"error":"invalid_grant","error_description":"expired access/refresh token","cause":"sf.refresh.revoked"}"#;
    let (ok, out, _) = grantdoctor(&["logs"], Some(&format!("{line}\nnot json\n")));
    assert!(ok);
    assert!(
        out.contains("20:14:03 WARN  invalid_grant login.salesforce.com refresh_token 400"),
        "{out}"
    );
    assert!(
        out.contains("→ sf.refresh.revoked") && out.ends_with("not json\n"),
        "{out}"
    );
}

#[test]
fn ca_trust_prints_what_each_runtime_needs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("certs");
    let (ok, out, err) = grantdoctor(
        &[
            "ca",
            "trust",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--listen",
            "127.0.0.1:8181",
        ],
        None,
    );
    assert!(ok, "{err}");
    let bundle = std::fs::canonicalize(ca.join("bundle.pem")).unwrap();
    assert!(
        out.contains(&format!("export REQUESTS_CA_BUNDLE={}", bundle.display())),
        "{out}"
    );
    assert!(out.contains("export HTTPS_PROXY=http://127.0.0.1:8181"));
    for needle in [
        "NODE_EXTRA_CA_CERTS=",
        "NODE_USE_ENV_PROXY=1",
        "keytool -importcert",
        "-Dhttps.proxyPort=8181",
        "update-ca-certificates",
        "add-trusted-cert",
        "SSL_CERT_FILE=",
    ] {
        assert!(out.contains(needle), "{needle} missing");
    }
}
