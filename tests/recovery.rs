//! Recovery and protection end to end, through the real proxy to the emulator: JWT bearer
//! recovery (with single flight and cooldown), refresh coalescing, the rotated-token guard.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::emulator::encode;
use common::jwt::fixture;
use common::stack::{Answer, Stack};
use serde_json::{Value, json};

const LOGIN: &str = "login.salesforce.com";
const MYDOMAIN: &str = "acme.my.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A configuration file with one `[[recovery.jwt_bearer]]` for the web app acting as `subject`.
fn recovery_config(subject: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grantdoctor.toml");
    let key = fixture("jwt/app-private.pem");
    std::fs::write(
        &path,
        format!(
            "[[recovery.jwt_bearer]]\nclient_id = \"{WEB}\"\nprivate_key = {key:?}\nsubject = \"{subject}\"\n"
        ),
    )
    .unwrap();
    (dir, path)
}

fn start_with_recovery(subject: &str, extra: &[&str]) -> (Stack, tempfile::TempDir) {
    let (dir, path) = recovery_config(subject);
    let path = path.display().to_string();
    let mut args = vec!["--config", path.as_str()];
    args.extend_from_slice(extra);
    (Stack::start(&args), dir)
}

async fn refresh_token_of(stack: &Stack) -> String {
    let answer = stack
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["refresh_token"].as_str().unwrap().to_owned()
}

/// The requests of one grant type in the emulator's request log.
async fn upstream_requests(stack: &Stack, grant_type: &str) -> Vec<Value> {
    stack.emu.requests_of(grant_type).await
}

async fn upstream_count(stack: &Stack, grant_type: &str) -> usize {
    upstream_requests(stack, grant_type).await.len()
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn an_evicted_refresh_token_is_recovered_with_a_usable_access_token() {
    let (stack, _config) = start_with_recovery(ALICE, &[]);
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(refresh_token_of(&stack).await);
    }
    let answer = stack.refresh(LOGIN, WEB, &tokens[0]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(header(&answer, "grantdoctor-recovered"), "jwt-bearer");
    // The diagnosis of what was recovered from still reaches the client.
    assert_eq!(answer.cause(), "sf.refresh.approval_limit_evicted");
    let access = answer.body["access_token"]
        .as_str()
        .expect("an access token");
    assert!(
        answer.body.get("refresh_token").is_none(),
        "{}",
        answer.body
    );
    assert_eq!(answer.body["instance_url"], format!("https://{MYDOMAIN}"));

    let rest = stack
        .client
        .get(format!("https://{MYDOMAIN}/services/data/"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200, "{}", rest.text().await.unwrap());

    let failure = stack
        .proxy
        .wait_for_event(|e| e["event"] == "invalid_grant");
    assert_eq!(failure["cause"], "sf.refresh.approval_limit_evicted");
    let recovered = stack.proxy.wait_for_event(|e| e["event"] == "recovered");
    assert_eq!(recovered["recovers"], failure["event_id"]);
    assert_eq!(recovered["how"], "exchanged");
    assert_eq!(upstream_count(&stack, JWT_GRANT).await, 1);
    let jwt = upstream_requests(&stack, JWT_GRANT).await.remove(0);
    assert_eq!(jwt["username"], ALICE);
    assert_eq!(jwt["host"], LOGIN);
    assert_eq!(jwt["status"], 200);

    // Never the client's refresh token replayed, never a token or an assertion in the log.
    assert_eq!(upstream_count(&stack, "refresh_token").await, 1);
    let text = stack.proxy.raw_log();
    for secret in tokens
        .iter()
        .map(String::as_str)
        .chain([access, WEB_SECRET])
    {
        assert!(!text.contains(secret), "a secret reached the log");
    }
    assert!(!text.contains("eyJ"), "an assertion reached the log");
    let metrics = admin_metrics(&stack).await;
    assert!(
        metrics.contains("grantdoctor_recoveries_total{outcome=\"recovered\",how=\"exchanged\"} 1"),
        "{metrics}"
    );
}

async fn admin_metrics(stack: &Stack) -> String {
    let admin = stack.proxy.admin.unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_subject_is_found_by_the_failed_tokens_user_id() {
    // First a configuration naming the wrong user, to prove the mapping is what is used.
    let (mut stack, config) = start_with_recovery("bob@acme.com", &[]);
    let first = stack
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    let alice_id = first.body["id"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let token = first.body["refresh_token"].as_str().unwrap().to_owned();
    // Five more authorizations evict the first token; Alice stays approved.
    for _ in 0..5 {
        refresh_token_of(&stack).await;
    }
    let key = fixture("jwt/app-private.pem");
    std::fs::write(
        config.path().join("grantdoctor.toml"),
        format!(
            "[[recovery.jwt_bearer]]\nclient_id = \"{WEB}\"\nprivate_key = {key:?}\nsubjects = {{ \"{}\" = \"{ALICE}\" }}\n",
            &alice_id[..15]
        ),
    )
    .unwrap();
    // The ledger survives the restart, so the token is still known and still Alice's.
    stack.restart_proxy();
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(header(&answer, "grantdoctor-recovered"), "jwt-bearer");
    let jwt = upstream_requests(&stack, JWT_GRANT).await.remove(0);
    assert_eq!(jwt["username"], ALICE);
}

#[tokio::test]
async fn a_failed_recovery_gives_the_original_error_with_both_diagnoses_and_cools_down() {
    // Bob never approved the web app: the JWT exchange fails with E15.
    let (stack, _config) = start_with_recovery("bob@acme.com", &["--recovery-cooldown", "2"]);
    let token = refresh_token_of(&stack).await;
    stack
        .emu
        .control("POST", &format!("users/{ALICE}/revoke"), json!({}))
        .await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "invalid_grant");
    assert_eq!(
        answer.body["error_description"],
        "expired access/refresh token"
    );
    assert!(
        answer.cause().starts_with("sf.refresh."),
        "{}",
        answer.cause()
    );
    assert_eq!(header(&answer, "grantdoctor-recovery"), "failed");
    assert_eq!(
        header(&answer, "grantdoctor-recovery-cause"),
        "sf.jwt.not_preauthorized"
    );
    let recovery = &answer.body["grantdoctor"]["recovery"];
    assert_eq!(recovery["error"], "invalid_grant");
    assert_eq!(
        recovery["error_description"],
        "user hasn't approved this consumer"
    );
    assert_eq!(recovery["causes"][0]["id"], "sf.jwt.not_preauthorized");
    assert!(
        !answer.body["grantdoctor"]["causes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let failed = stack
        .proxy
        .wait_for_event(|e| e["event"] == "recovery_failed");
    assert_eq!(failed["cause"], "sf.jwt.not_preauthorized");
    assert_eq!(upstream_count(&stack, JWT_GRANT).await, 1);

    // During the cooldown no new exchange is attempted.
    let again = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(again.status, 400);
    assert_eq!(header(&again, "grantdoctor-recovery"), "cooling-down");
    assert_eq!(
        again.body["grantdoctor"]["recovery"]["error_description"],
        "user hasn't approved this consumer"
    );
    assert_eq!(upstream_count(&stack, JWT_GRANT).await, 1);

    // After it, one new attempt.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let later = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(header(&later, "grantdoctor-recovery"), "failed");
    assert_eq!(upstream_count(&stack, JWT_GRANT).await, 2);
}

#[tokio::test]
async fn a_made_up_refresh_token_is_never_rescued() {
    // The client id is no secret: a token grantdoctor never saw earns no access token.
    let (stack, _config) = start_with_recovery(ALICE, &[]);
    refresh_token_of(&stack).await;
    let answer = stack.refresh(LOGIN, WEB, "5Aep861.never.issued").await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body["error_description"],
        "expired access/refresh token"
    );
    assert_eq!(header(&answer, "grantdoctor-recovery"), "skipped");
    assert!(
        answer.body["grantdoctor"]["recovery"]["reason"]
            .as_str()
            .unwrap()
            .contains("never seen"),
        "{}",
        answer.body
    );
    assert!(answer.body.get("access_token").is_none());
    assert_eq!(upstream_count(&stack, JWT_GRANT).await, 0);
}

#[tokio::test]
async fn a_thousand_concurrent_failing_refreshes_make_one_jwt_exchange() {
    // Coalescing off, so that every refresh really fails upstream and asks for a recovery.
    let (stack, _config) = start_with_recovery(ALICE, &["--coalesce-refresh", "off"]);
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(refresh_token_of(&stack).await);
    }
    let evicted = Arc::new(tokens.swap_remove(0));
    stack.emu.control("DELETE", "requests", Value::Null).await;
    let client = common::client_via(&stack.proxy, &[&stack.proxy.ca_pem()], true);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (client, evicted) = (client.clone(), evicted.clone());
        tasks.spawn(async move {
            let response = client
                .post(format!("https://{LOGIN}/services/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", WEB),
                    ("refresh_token", evicted.as_str()),
                ]))
                .send()
                .await
                .unwrap();
            let recovered = response.headers().get("grantdoctor-recovered").cloned();
            let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            (recovered, body["access_token"].as_str().map(str::to_owned))
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (recovered, token) = done.unwrap();
        assert_eq!(recovered.unwrap(), "jwt-bearer");
        tokens.insert(token.expect("an access token"));
    }
    assert_eq!(tokens.len(), 1, "every caller got the one recovered token");
    // Once Salesforce declared the token dead, the breaker answers the rest (and still
    // recovers them) without sending the refresh again.
    let refreshes = upstream_count(&stack, "refresh_token").await;
    assert!(
        (1..1000).contains(&refreshes),
        "{refreshes} refreshes upstream"
    );
    assert_eq!(upstream_count(&stack, JWT_GRANT).await, 1);
}

#[tokio::test]
async fn a_hundred_concurrent_refreshes_under_rotation_make_one_upstream_refresh() {
    let stack = Stack::start(&[]);
    stack
        .emu
        .control("PATCH", "apps/3MVG9web", json!({"rotation": true}))
        .await;
    // Issued before grantdoctor watched: the proxy first sees this token being used.
    let first = stack
        .emu
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let stack = Arc::new(stack);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (stack, first) = (stack.clone(), first.clone());
        tasks.spawn(async move { stack.refresh(LOGIN, WEB, &first).await });
    }
    let mut new_tokens = std::collections::HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let answer = done.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        new_tokens.insert(answer.body["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(new_tokens.len(), 1, "every caller got the same new token");
    assert_eq!(upstream_count(&stack, "refresh_token").await, 1);
    let newest = new_tokens.into_iter().next().unwrap();
    assert_ne!(newest, first);

    // The family is intact: the new token refreshes.
    let next = stack.refresh(LOGIN, WEB, &newest).await;
    assert_eq!(next.status, 200, "{}", next.body);
    let metrics = admin_metrics(&stack).await;
    let shared: u64 = [
        "grantdoctor_coalesced_refreshes_total ",
        "grantdoctor_rotation_guard_total{decision=\"replayed\"} ",
    ]
    .iter()
    .filter_map(|name| metrics.lines().find_map(|l| l.strip_prefix(name)))
    .map(|n| n.trim().parse::<u64>().unwrap())
    .sum();
    assert_eq!(shared, 99, "{metrics}");
}

#[tokio::test]
async fn a_stale_rotated_token_is_blocked_and_the_newest_still_refreshes() {
    let stack = Stack::start(&["--replay-window", "1"]);
    stack
        .emu
        .control("PATCH", "apps/3MVG9web", json!({"rotation": true}))
        .await;
    let first = refresh_token_of(&stack).await;
    let rotated = stack.refresh(LOGIN, WEB, &first).await;
    assert_eq!(rotated.status, 200);
    let second = rotated.body["refresh_token"].as_str().unwrap().to_owned();

    // A racing twin within the window gets the same answer, not a revoked family.
    let twin = stack.refresh(LOGIN, WEB, &first).await;
    assert_eq!(twin.status, 200);
    assert_eq!(twin.body["refresh_token"], second.as_str());
    // Other credentials within the window are not a twin.
    let stranger = stack
        .token(
            LOGIN,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", WEB),
                ("client_secret", WEB_SECRET),
                ("refresh_token", &first),
            ],
        )
        .await;
    assert_eq!(stranger.status, 400);
    assert_eq!(
        header(&stranger, "grantdoctor-blocked"),
        "rotated-refresh-token"
    );

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let stale = stack.refresh(LOGIN, WEB, &first).await;
    assert_eq!(stale.status, 400);
    assert_eq!(stale.body["error"], "invalid_grant");
    assert_eq!(
        stale.body["error_description"],
        "expired access/refresh token"
    );
    assert_eq!(
        header(&stale, "grantdoctor-blocked"),
        "rotated-refresh-token"
    );
    assert_eq!(stale.cause(), "sf.refresh.rotated_token_reused");
    assert!(
        stale
            .evidence("sf.refresh.rotated_token_reused")
            .contains("did not forward")
    );
    let blocked = stack.proxy.wait_for_event(|e| e["event"] == "blocked");
    assert_eq!(blocked["cause"], "sf.refresh.rotated_token_reused");

    // Only the one rotation reached Salesforce, so the family is alive.
    assert_eq!(upstream_count(&stack, "refresh_token").await, 1);
    let next = stack.refresh(LOGIN, WEB, &second).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert!(!stack.proxy.raw_log().contains(&first));
}

#[test]
fn a_recovery_key_that_cannot_sign_is_refused_at_start_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cert = fixture("jwt/app-cert.pem");
    std::fs::write(
        &path,
        format!("[[recovery.jwt_bearer]]\nclient_id = \"{WEB}\"\nprivate_key = {cert:?}\nsubject = \"{ALICE}\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("recovery.jwt_bearer[0] private_key") && stderr.contains("app-cert.pem"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_refresh_whose_client_hung_up_still_protects_the_family() {
    let stack = Stack::start(&[]);
    stack
        .emu
        .control("PATCH", "apps/3MVG9web", json!({"rotation": true}))
        .await;
    let first = refresh_token_of(&stack).await;
    // The client gives up while the refresh is upstream (the emulator takes 50 ms).
    // Over h2 the client resets the stream, and hyper drops the request it was serving.
    let impatient = common::client_via(&stack.proxy, &[&stack.proxy.ca_pem()], true);
    // Connected first, so that the timeout below falls while the refresh is upstream.
    let warm = impatient
        .get(format!("https://{LOGIN}/_emulator/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    let gave_up = impatient
        .post(format!("https://{LOGIN}/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[
            ("grant_type", "refresh_token"),
            ("client_id", WEB),
            ("refresh_token", &first),
        ]))
        .timeout(std::time::Duration::from_millis(20))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client was meant to time out");
    drop(impatient);
    // Its retry with the same token gets the rotated answer instead of revoking the family.
    stack
        .proxy
        .wait_for_event(|e| e["event"] == "token_refreshed");
    let retry = stack.refresh(LOGIN, WEB, &first).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    let newest = retry.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(newest, first);
    assert_eq!(upstream_count(&stack, "refresh_token").await, 1);
    let next = stack.refresh(LOGIN, WEB, &newest).await;
    assert_eq!(next.status, 200, "{}", next.body);
}
