//! Org connections, end to end: the proxy logs in as an integration user of the emulator's
//! org and reads its records to confirm what its ledger cannot decide; `grantdoctor doctor`
//! reads them to say what will break. Authorizations made directly at the emulator are the
//! ones made "elsewhere".

mod common;

use std::path::Path;

use common::stack::{Answer, Stack};
use serde_json::{Value, json};

const LOGIN: &str = "login.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";

/// A config file with one org connection (the emulator's acme org, as admin@acme.com).
fn org_config(dir: &Path, key: &str) -> String {
    let key = common::jwt::fixture(&format!("jwt/{key}-private.pem"));
    let path = dir.join("grantdoctor.toml");
    std::fs::write(
        &path,
        format!(
            r#"[[orgs]]
host = "acme.my.salesforce.com"
client_id = "3MVG9jwt"
private_key = "{}"
username = "admin@acme.com"
[orgs.apps]
"3MVG9web" = "web"
"#,
            key.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// A token issued directly at the emulator, then used once through the proxy: the ledger
/// knows it from its first use only.
async fn token_first_seen_in_use(stack: &Stack) -> String {
    let body = stack
        .emu
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    let token = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(stack.refresh(LOGIN, WEB, &token).await.status, 200);
    // What happens elsewhere happens later.
    stack.advance(60).await;
    token
}

async fn authorize_elsewhere(stack: &Stack, times: usize) {
    for _ in 0..times {
        stack
            .emu
            .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
            .await;
    }
}

#[tokio::test]
async fn an_eviction_by_authorizations_made_elsewhere_is_confirmed_from_oauthtoken() {
    let dir = tempfile::tempdir().unwrap();
    let config = org_config(dir.path(), "app");
    let stack = Stack::start(&["--config", &config]);
    let token = token_first_seen_in_use(&stack).await;
    authorize_elsewhere(&stack, 5).await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.cause(),
        "sf.refresh.approval_limit_evicted",
        "{}",
        answer.body
    );
    assert_eq!(header(&answer, "grantdoctor-basis"), "confirmed");
    let finding = answer.finding("sf.refresh.approval_limit_evicted");
    assert_eq!(finding["basis"], "confirmed");
    assert!(
        answer.body["grantdoctor"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .all(
                |c| ["evidence", "confirmed", "prior"].contains(&c["basis"].as_str().unwrap_or(""))
            ),
        "{}",
        answer.body
    );
    let evidence = finding["evidence"][0].as_str().unwrap();
    assert!(evidence.contains("holds 5 approvals"), "{evidence}");
    assert_eq!(
        evidence.matches("Z").count(),
        6,
        "five CreatedDates and the first-seen time: {evidence}"
    );
    let event = stack
        .proxy
        .wait_for_event(|e| e["event"] == "invalid_grant");
    assert_eq!(event["basis"], "confirmed");
    // Every cause of the log line carries its own basis; the refuted revocation is no less
    // listed for being wrong.
    let causes: Vec<&str> = event["causes"].as_str().unwrap().split(", ").collect();
    assert!(
        causes[0].starts_with("sf.refresh.approval_limit_evicted;")
            && causes[0].ends_with(";basis=confirmed"),
        "{causes:?}"
    );
    assert!(causes.iter().all(|c| c.contains(";basis=")), "{causes:?}");
    // The log never holds the org connection's access token or assertion, nor the
    // application's tokens.
    let log = stack.proxy.raw_log();
    assert!(!log.contains("eyJ"), "an assertion was logged");
    assert!(!log.contains(&token));
    let access_token_shaped = log.as_bytes().windows(16).any(|w| {
        w.starts_with(b"00D") && w[15] == b'!' && w[..15].iter().all(u8::is_ascii_alphanumeric)
    });
    assert!(!access_token_shaped, "an access token was logged");
}

/// The header and every ranked cause say `prior`.
fn assert_a_guess(answer: &Answer) {
    assert_eq!(
        header(answer, "grantdoctor-basis"),
        "prior",
        "{}",
        answer.body
    );
    assert!(
        answer.body["grantdoctor"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["basis"] == "prior"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn without_an_org_connection_the_same_failure_is_a_guess_and_says_so() {
    let stack = Stack::start(&[]);
    let token = token_first_seen_in_use(&stack).await;
    authorize_elsewhere(&stack, 5).await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_a_guess(&answer);
}

/// The ledger never saw this token, so it knows no user to ask the org about: the org holds
/// alice's five newer approvals, but reading them for "whoever this token was" would be a
/// guess. The answer stays a prior and the org is not asked at all.
#[tokio::test]
async fn a_token_never_seen_is_not_matched_to_a_user_and_the_org_is_not_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = org_config(dir.path(), "app");
    let stack = Stack::start(&["--config", &config]);
    let body = stack
        .emu
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    let token = body["refresh_token"].as_str().unwrap().to_owned();
    stack.advance(60).await;
    authorize_elsewhere(&stack, 5).await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body["error_description"],
        "expired access/refresh token"
    );
    assert_a_guess(&answer);
    let metrics = common::org::metrics(&stack).await;
    for object in ["OauthToken", "User", "UserLogin", "LoginHistory"] {
        for outcome in ["ok", "refused", "login_failed", "error"] {
            assert_eq!(
                common::org::org_queries(&metrics, object, outcome),
                0.0,
                "{object} {outcome}: {metrics}"
            );
        }
    }
    assert_eq!(common::org::jwt_logins(&stack, "admin@acme.com").await, 0);
}

#[tokio::test]
async fn an_approval_revoked_elsewhere_is_confirmed_gone() {
    let dir = tempfile::tempdir().unwrap();
    let config = org_config(dir.path(), "app");
    let stack = Stack::start(&["--config", &config]);
    let token = token_first_seen_in_use(&stack).await;
    stack
        .emu
        .control("POST", &format!("users/{ALICE}/revoke"), json!({}))
        .await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(answer.cause(), "sf.refresh.revoked", "{}", answer.body);
    assert_eq!(header(&answer, "grantdoctor-basis"), "confirmed");
    assert!(answer.evidence("sf.refresh.revoked").contains("OauthToken"));
    // Confirmed dead: the retry is the breaker's.
    let retry = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(header(&retry, "grantdoctor-blocked"), "dead-refresh-token");
}

#[tokio::test]
async fn a_confirmation_past_the_budget_follows_in_the_log_with_the_same_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = org_config(dir.path(), "app");
    let stack = Stack::start(&["--config", &config, "--confirm-timeout", "0"]);
    let token = token_first_seen_in_use(&stack).await;
    authorize_elsewhere(&stack, 5).await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(
        header(&answer, "grantdoctor-basis"),
        "prior",
        "{}",
        answer.body
    );
    let event_id = header(&answer, "grantdoctor-event").to_owned();
    let confirmed = stack.proxy.wait_for_event(|e| e["event"] == "confirmed");
    assert_eq!(confirmed["event_id"], event_id.as_str());
    assert_eq!(confirmed["cause"], "sf.refresh.approval_limit_evicted");
    assert_eq!(confirmed["basis"], "confirmed");
}

#[tokio::test]
async fn a_broken_org_connection_is_diagnosed_and_never_hurts_the_application() {
    let dir = tempfile::tempdir().unwrap();
    // A key whose certificate is not the app's: the connection's own login fails.
    let config = org_config(dir.path(), "other");
    let stack = Stack::start(&["--config", &config]);
    let token = token_first_seen_in_use(&stack).await;
    authorize_elsewhere(&stack, 5).await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "invalid_grant");
    assert_eq!(header(&answer, "grantdoctor-basis"), "prior");
    let problem = stack
        .proxy
        .wait_for_event(|e| e["event"] == "org_connection_problem");
    assert!(
        problem["kind"]
            .as_str()
            .unwrap()
            .contains("sf.jwt.invalid_signature"),
        "{problem}"
    );
    // Once per cause, not once per request.
    stack.refresh(LOGIN, WEB, &token).await;
    let problems = stack
        .proxy
        .events()
        .into_iter()
        .filter(|e| e["event"] == "org_connection_problem")
        .count();
    assert_eq!(problems, 1);
}

fn doctor(stack: &Stack, config: &str) -> (Option<i32>, String, String) {
    let mut args = vec![
        "doctor".to_owned(),
        "--json".into(),
        "--config".into(),
        config.into(),
    ];
    args.push("--upstream-ca".into());
    args.push(stack.emu.ca_pem().display().to_string());
    for host in common::emulator::HOSTS {
        args.push("--resolve".into());
        args.push(format!("{host}:443={}", stack.emu.addr));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(&args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn doctor_lists_a_full_approval_list_an_inactive_user_and_an_immediate_expiry_app() {
    let dir = tempfile::tempdir().unwrap();
    let config = org_config(dir.path(), "app");
    let stack = Stack::start(&[]);
    authorize_elsewhere(&stack, 5).await;
    stack
        .emu
        .web_login(WEB, WEB_SECRET, "bob@acme.com", "api refresh_token")
        .await;
    stack
        .emu
        .control("PATCH", "users/bob@acme.com", json!({"active": false}))
        .await;
    stack
        .emu
        .control(
            "PATCH",
            "apps/3MVG9web",
            json!({"refresh_policy": {"kind": "immediately_expire"}}),
        )
        .await;
    let (code, out, err) = doctor(&stack, &config);
    assert_eq!(code, Some(1), "{out}{err}");
    let findings: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut ids: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f["id"].as_str().unwrap(), f["level"].as_str().unwrap()))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("sf.refresh.policy_immediate_expiry", "error"),
            ("sf.user.inactive", "error"),
            ("warn.approval_limit_reached", "warning"),
        ],
        "{out}"
    );
    let full = findings
        .iter()
        .find(|f| f["id"] == "warn.approval_limit_reached")
        .unwrap();
    assert_eq!(full["app"], "web");
    assert_eq!(full["org"], "acme.my.salesforce.com");
    for f in &findings {
        assert!(!f["fix"].as_array().unwrap().is_empty(), "{f}");
        assert!(!f["evidence"].as_array().unwrap().is_empty(), "{f}");
    }
}

fn ids_and_levels(findings: &[Value]) -> Vec<(&str, &str)> {
    let mut ids: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f["id"].as_str().unwrap(), f["level"].as_str().unwrap()))
        .collect();
    ids.sort();
    ids
}

/// Warnings alone exit 0; a locked user holding approvals is an error, and the failed logins
/// that locked it are one finding per app and status.
#[tokio::test]
async fn doctor_exits_0_on_warnings_and_names_a_locked_user_and_failed_logins_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = org_config(dir.path(), "app");
    let stack = Stack::start(&[]);
    authorize_elsewhere(&stack, 5).await;
    let (code, out, err) = doctor(&stack, &config);
    assert_eq!(code, Some(0), "{out}{err}");
    let findings: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        ids_and_levels(&findings),
        [("warn.approval_limit_reached", "warning")],
        "{out}"
    );

    stack
        .emu
        .web_login(WEB, WEB_SECRET, "bob@acme.com", "api refresh_token")
        .await;
    stack
        .emu
        .control("PATCH", "orgs/acme", json!({"lockout_after": 2}))
        .await;
    for _ in 0..2 {
        let (status, _) = stack
            .emu
            .token(
                LOGIN,
                &[
                    ("grant_type", "password"),
                    ("client_id", WEB),
                    ("client_secret", WEB_SECRET),
                    ("username", "bob@acme.com"),
                    ("password", "wrong"),
                ],
            )
            .await;
        assert_eq!(status, 400);
    }
    let (code, out, err) = doctor(&stack, &config);
    assert_eq!(code, Some(1), "{out}{err}");
    let findings: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        ids_and_levels(&findings),
        [
            ("doctor.failed_logins", "warning"),
            ("sf.user.inactive", "error"),
            ("warn.approval_limit_reached", "warning"),
        ],
        "{out}"
    );
    let find = |id: &str| findings.iter().find(|f| f["id"] == id).unwrap();
    let locked = find("sf.user.inactive");
    assert_eq!(locked["user"], "bob@acme.com");
    assert_eq!(locked["app"], "web");
    assert!(
        locked["evidence"][0]
            .as_str()
            .unwrap()
            .contains("IsPasswordLocked = true"),
        "{locked}"
    );
    let failed = find("doctor.failed_logins");
    assert_eq!(failed["app"], "web");
    let evidence = failed["evidence"][0].as_str().unwrap();
    assert!(
        evidence.starts_with("2 failed logins") && evidence.contains("`Invalid password`"),
        "{evidence}"
    );
    // Errors first.
    assert_eq!(findings[0]["id"], "sf.user.inactive", "{out}");
}

#[tokio::test]
async fn doctor_without_orgs_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.toml");
    std::fs::write(&path, "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(["doctor", "--config", &path.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[[orgs]]"));
}

/// A key that cannot sign is a configuration error naming the org, found before the org is
/// asked anything.
#[test]
fn doctor_with_a_key_that_cannot_sign_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("admin.key");
    std::fs::write(&key, "not a PEM key\n").unwrap();
    let path = dir.path().join("grantdoctor.toml");
    std::fs::write(
        &path,
        format!(
            "[[orgs]]\nhost = \"acme.my.salesforce.com\"\nclient_id = \"3MVG9jwt\"\nprivate_key = \"{}\"\nusername = \"admin@acme.com\"\n",
            key.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(["doctor", "--json", "--config", &path.display().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("acme.my.salesforce.com"), "{stderr}");
    assert!(out.stdout.is_empty(), "no findings printed");
}

#[tokio::test]
async fn a_deactivated_user_is_confirmed_from_the_user_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = org_config(dir.path(), "app");
    let stack = Stack::start(&["--config", &config]);
    let token = token_first_seen_in_use(&stack).await;
    // An admin deactivates the user: Salesforce revokes the user's tokens with it.
    stack
        .emu
        .control("PATCH", &format!("users/{ALICE}"), json!({"active": false}))
        .await;
    stack
        .emu
        .control("POST", &format!("users/{ALICE}/revoke"), json!({}))
        .await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(
        answer.body["error_description"],
        "expired access/refresh token"
    );
    assert_eq!(answer.cause(), "sf.user.inactive", "{}", answer.body);
    assert_eq!(header(&answer, "grantdoctor-basis"), "confirmed");
    assert!(
        answer
            .evidence("sf.user.inactive")
            .contains("IsActive = false"),
        "{}",
        answer.body
    );
}

#[test]
fn check_config_shows_the_org_connections_and_the_confirmation_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = org_config(dir.path(), "app");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args([
            "check-config",
            "--config",
            &config,
            "--confirm-timeout",
            "0.5",
        ])
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .args(["--ca-dir", &dir.path().join("certs").display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("[[orgs]]"), "{text}");
    assert!(text.contains("host = \"acme.my.salesforce.com\""), "{text}");
    assert!(text.contains("\"3MVG9web\" = \"web\""), "{text}");
    assert!(text.contains("confirm_timeout = 0.5"), "{text}");
    // The file it renders parses back.
    let rendered: String = text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        toml::from_str::<toml::Value>(&rendered).is_ok(),
        "{rendered}"
    );
}
