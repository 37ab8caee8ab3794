//! `grantdoctor explain` says what it knows and what it guesses: a pasted string that is no
//! Salesforce error is refused, no evidence pretends to history, empty input is a usage error.

use std::io::Write;
use std::process::{Command, Stdio};

fn explain(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .arg("explain")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn empty_input_is_a_usage_error() {
    let (code, _, err) = explain(&[], "  \n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nothing to explain"), "{err}");
}

#[test]
fn text_that_is_no_salesforce_error_is_refused_not_diagnosed() {
    let (code, out, err) = explain(&[], "nonsense");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("not a Salesforce token-endpoint error"),
        "{err}"
    );
    assert!(!out.contains("invalid_grant"), "{out}");
}

#[test]
fn a_pasted_password_error_pretends_no_history() {
    let (code, out, err) = explain(
        &["--grant-type", "password"],
        "invalid_grant: authentication failure",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("sf.password.bad_credentials"), "{out}");
    assert!(!out.contains("consecutive"), "{out}");
    assert!(out.contains("not observed"), "{out}");
}

#[test]
fn a_ranking_of_priors_says_it_is_one() {
    let (code, out, err) = explain(
        &["--grant-type", "refresh_token"],
        r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("prior: a guess"), "{out}");
    assert!(out.contains("ranking of priors, not a diagnosis"), "{out}");
    let (_, json, _) = explain(
        &["--grant-type", "refresh_token", "--json"],
        "invalid_grant: expired access/refresh token",
    );
    let causes: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        causes
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["basis"] == "prior"),
        "{causes}"
    );
}

#[test]
fn an_error_the_text_decides_is_evidence() {
    let (code, out, _) = explain(&[], "invalid_grant: inactive user");
    assert_eq!(code, Some(0));
    assert!(
        out.contains("sf.user.inactive  (confidence 0.95, evidence)"),
        "{out}"
    );
    assert!(!out.contains("ranking of priors"), "{out}");
}
