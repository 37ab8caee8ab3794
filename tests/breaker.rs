//! The dead-token breaker, end to end: a refresh token Salesforce declared dead is answered by
//! the proxy itself on every retry (Salesforce's own body plus the annotation), never
//! forwarded, at the same host and client id only, and across a restart. Also the basis of a
//! diagnosis in headers, body and log, and the proxy's own unreachable upstream.

mod common;

use common::stack::{Answer, Stack};
use serde_json::{Value, json};

const LOGIN: &str = "login.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";

async fn refresh_token_of(stack: &Stack) -> String {
    let answer = stack
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["refresh_token"].as_str().unwrap().to_owned()
}

async fn upstream_refreshes(stack: &Stack) -> usize {
    stack.emu.requests_of("refresh_token").await.len()
}

/// A token the ledger saw evicted: the first of six authorizations through the proxy.
async fn evicted_token(stack: &Stack) -> String {
    let first = refresh_token_of(stack).await;
    for _ in 0..5 {
        refresh_token_of(stack).await;
    }
    first
}

/// A token used through the proxy, then revoked directly at the emulator (as the user would
/// in their settings): nothing on the wire says why it died.
async fn revoked_token(stack: &Stack) -> String {
    let token = refresh_token_of(stack).await;
    assert_eq!(stack.refresh(LOGIN, WEB, &token).await.status, 200);
    stack
        .emu
        .control("POST", &format!("users/{ALICE}/revoke"), json!({}))
        .await;
    token
}

/// Salesforce's body for this refresh, asked of the emulator directly, as text.
async fn salesforce_body(stack: &Stack, token: &str) -> String {
    let form = common::emulator::encode(&[
        ("grant_type", "refresh_token"),
        ("client_id", WEB),
        ("refresh_token", token),
    ]);
    stack
        .emu
        .client
        .post(format!("https://{LOGIN}/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

fn causes(answer: &Answer) -> Vec<String> {
    answer.body["grantdoctor"]["causes"]
        .as_array()
        .unwrap_or_else(|| panic!("no causes: {}", answer.body))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn saved(stack: &Stack) -> u64 {
    let admin = stack.proxy.admin.expect("the proxy's admin port");
    let (_, text) = common::raw::admin_get(admin, "/metrics").expect("/metrics answers");
    text.lines()
        .find_map(|l| l.strip_prefix("grantdoctor_upstream_requests_saved_total "))
        .unwrap_or_else(|| panic!("no saved counter in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_hundred_retries_of_a_dead_token_reach_salesforce_once() {
    let stack = Stack::start(&[]);
    let token = evicted_token(&stack).await;
    let before = upstream_refreshes(&stack).await;
    let first = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(first.status, 400);
    assert_eq!(
        first.cause(),
        "sf.refresh.approval_limit_evicted",
        "{}",
        first.body
    );
    assert_eq!(header(&first, "grantdoctor-basis"), "evidence");
    assert_eq!(header(&first, "grantdoctor-blocked"), "");
    let original = salesforce_body(&stack, &token).await;
    let direct = upstream_refreshes(&stack).await;
    assert_eq!(direct, before + 2, "the first refresh and the direct one");
    let form = common::emulator::encode(&[
        ("grant_type", "refresh_token"),
        ("client_id", WEB),
        ("refresh_token", &token),
    ]);
    for i in 1..100 {
        let response = stack
            .client
            .post(format!("https://{LOGIN}/services/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let headers = response.headers().clone();
        assert_eq!(headers["grantdoctor-blocked"], "dead-refresh-token");
        assert_eq!(headers["grantdoctor-cause"], "gd.dead_token_retried");
        let text = response.text().await.unwrap();
        // Salesforce's body, byte for byte, with the annotation as its last member.
        let open = original.strip_suffix('}').unwrap();
        assert!(
            text.starts_with(&format!("{open},\"grantdoctor\":{{")),
            "retry {i}: {text} against {original}"
        );
        let retry = Answer {
            status: 400,
            headers,
            body: serde_json::from_str(&text).unwrap(),
        };
        assert_eq!(
            causes(&retry)[..2],
            ["gd.dead_token_retried", "sf.refresh.approval_limit_evicted"]
        );
        if i == 99 {
            let evidence = retry.evidence("gd.dead_token_retried");
            assert!(evidence.contains("99 retries absorbed"), "{evidence}");
        }
    }
    assert_eq!(
        upstream_refreshes(&stack).await,
        direct,
        "no retry forwarded"
    );
    assert_eq!(saved(&stack), 99);
    let storms: Vec<Value> = stack
        .proxy
        .events()
        .into_iter()
        .filter(|e| e["id"] == "warn.retry_storm")
        .collect();
    assert_eq!(storms.len(), 1, "{storms:?}");
    let message = storms[0]["message"].as_str().unwrap();
    assert!(message.contains(WEB), "{message}");
    assert!(message.contains("user 005"), "{message}");
    let blocked = stack
        .proxy
        .wait_for_event(|e| e["event"] == "blocked" && e["cause"] == "gd.dead_token_retried");
    assert_eq!(blocked["died_as"], "sf.refresh.approval_limit_evicted");
    assert!(
        !stack.proxy.raw_log().contains(&token),
        "the token was logged"
    );
}

#[tokio::test]
async fn the_same_token_at_another_host_or_with_another_client_id_is_still_forwarded() {
    let stack = Stack::start(&[]);
    let token = evicted_token(&stack).await;
    assert_eq!(
        stack.refresh(LOGIN, WEB, &token).await.cause(),
        "sf.refresh.approval_limit_evicted"
    );
    let before = upstream_refreshes(&stack).await;
    let elsewhere = stack.refresh("acme.my.salesforce.com", WEB, &token).await;
    assert_eq!(header(&elsewhere, "grantdoctor-blocked"), "");
    let other_client = stack.refresh(LOGIN, "3MVG9jwt", &token).await;
    assert_eq!(header(&other_client, "grantdoctor-blocked"), "");
    assert_eq!(upstream_refreshes(&stack).await, before + 2);
    let again = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(header(&again, "grantdoctor-blocked"), "dead-refresh-token");
}

#[tokio::test]
async fn the_breaker_survives_a_restart() {
    let mut stack = Stack::start(&[]);
    let token = evicted_token(&stack).await;
    assert_eq!(stack.refresh(LOGIN, WEB, &token).await.status, 400);
    stack.restart_proxy();
    let before = upstream_refreshes(&stack).await;
    let retry = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(header(&retry, "grantdoctor-blocked"), "dead-refresh-token");
    assert_eq!(causes(&retry)[1], "sf.refresh.approval_limit_evicted");
    assert_eq!(upstream_refreshes(&stack).await, before);
}

#[tokio::test]
async fn a_death_nothing_observed_explains_is_a_guess_and_keeps_being_forwarded() {
    let stack = Stack::start(&[]);
    let token = revoked_token(&stack).await;
    let before = upstream_refreshes(&stack).await;
    for _ in 0..2 {
        let answer = stack.refresh(LOGIN, WEB, &token).await;
        assert_eq!(answer.cause(), "sf.refresh.revoked", "{}", answer.body);
        assert_eq!(header(&answer, "grantdoctor-basis"), "prior");
        assert_eq!(header(&answer, "grantdoctor-blocked"), "");
    }
    assert_eq!(upstream_refreshes(&stack).await, before + 2);
}

#[tokio::test]
async fn a_guess_is_never_a_dead_token_and_says_it_is_a_guess() {
    let stack = Stack::start(&[]);
    // Issued directly at the emulator: grantdoctor never saw it.
    let body = stack
        .emu
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    let token = body["refresh_token"].as_str().unwrap().to_owned();
    stack
        .emu
        .control("POST", &format!("users/{ALICE}/revoke"), json!({}))
        .await;
    let before = upstream_refreshes(&stack).await;
    for _ in 0..3 {
        let answer = stack.refresh(LOGIN, WEB, &token).await;
        assert_eq!(
            header(&answer, "grantdoctor-basis"),
            "prior",
            "{}",
            answer.body
        );
        assert_eq!(header(&answer, "grantdoctor-blocked"), "");
        let top = &answer.body["grantdoctor"]["causes"][0];
        assert_eq!(top["basis"], "prior");
        assert!(
            top["evidence"][0]
                .as_str()
                .unwrap()
                .starts_with("not observed:"),
            "{top}"
        );
    }
    assert_eq!(upstream_refreshes(&stack).await, before + 3);
    let event = stack
        .proxy
        .wait_for_event(|e| e["event"] == "invalid_grant");
    assert_eq!(event["basis"], "prior");
    assert!(
        event["causes"].as_str().unwrap().contains(";basis=prior"),
        "{event}"
    );
}

#[tokio::test]
async fn evidence_is_said_in_the_header_the_body_and_the_log() {
    let stack = Stack::start(&[]);
    let token = evicted_token(&stack).await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(header(&answer, "grantdoctor-basis"), "evidence");
    assert_eq!(
        answer.finding("sf.refresh.approval_limit_evicted")["basis"],
        "evidence"
    );
    let event = stack
        .proxy
        .wait_for_event(|e| e["event"] == "invalid_grant");
    assert_eq!(event["basis"], "evidence");
    assert!(
        event["causes"]
            .as_str()
            .unwrap()
            .starts_with("sf.refresh.approval_limit_evicted;q=0.95;basis=evidence"),
        "{event}"
    );
}

#[tokio::test]
async fn the_breaker_can_be_turned_off() {
    let stack = Stack::start(&["--dead-token-breaker", "off"]);
    let token = evicted_token(&stack).await;
    let before = upstream_refreshes(&stack).await;
    for _ in 0..3 {
        let answer = stack.refresh(LOGIN, WEB, &token).await;
        assert_eq!(header(&answer, "grantdoctor-blocked"), "");
    }
    assert_eq!(upstream_refreshes(&stack).await, before + 3);
}

#[tokio::test]
async fn an_unreachable_upstream_is_the_proxys_own_failure_not_salesforces() {
    // The token host resolves to a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = common::ProxyProcess::start(&["--resolve".into(), format!("{LOGIN}:443={closed}")]);
    let client = common::client_via(&proxy, &[&proxy.ca_pem()], false);
    let response = client
        .post(format!("https://{LOGIN}/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&client_id=3MVG9web&refresh_token=5Aep861xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let headers = response.headers().clone();
    assert_eq!(headers["grantdoctor-cause"], "gd.upstream_unreachable");
    assert_eq!(headers["grantdoctor-basis"], "evidence");
    assert_eq!(headers["grantdoctor-error"], "upstream-unreachable");
    let text = response.text().await.unwrap();
    assert!(text.contains("unreachable"), "{text}");
    let event = proxy.wait_for_event(|e| e["event"] == "token_error");
    assert_eq!(event["cause"], "gd.upstream_unreachable");
    assert!(
        !event["causes"].as_str().unwrap().contains("sf.transient"),
        "{event}"
    );
}
