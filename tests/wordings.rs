//! Failures reported in real client projects' issue trackers, end to end: the emulator answers
//! in Salesforce's words (checked exactly, straight from the emulator), and the proxy names
//! the cause.

mod common;

use common::jwt::{now_secs, sign};
use common::stack::Stack;
use serde_json::json;

const LOGIN: &str = "login.salesforce.com";
const MY_DOMAIN: &str = "acme.my.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

async fn refresh_token_of(stack: &Stack) -> String {
    let answer = stack
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["refresh_token"].as_str().unwrap().to_owned()
}

fn jwt_claims(sub: &str) -> serde_json::Value {
    json!({"iss": "3MVG9jwt", "sub": sub, "aud": "https://login.salesforce.com", "exp": now_secs() + 120})
}

#[tokio::test]
async fn a_refresh_that_sends_scope_is_named() {
    let stack = Stack::start(&[]);
    let token = refresh_token_of(&stack).await;
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", WEB),
        ("refresh_token", token.as_str()),
        ("scope", "api refresh_token"),
    ];
    let (status, body) = stack.emu.token(LOGIN, &form).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "scope parameter not supported"})
    );
    let answer = stack.token(LOGIN, &form).await;
    assert_eq!(
        answer.cause(),
        "sf.request.scope_on_refresh",
        "{}",
        answer.body
    );
    assert!(
        answer
            .evidence("sf.request.scope_on_refresh")
            .contains("`scope` parameter")
    );
    // Without scope the same token still works: nothing was lost.
    assert_eq!(stack.refresh(LOGIN, WEB, &token).await.status, 200);
}

#[tokio::test]
async fn client_credentials_without_the_api_scope_is_named() {
    let stack = Stack::start(&[]);
    stack
        .emu
        .control(
            "PATCH",
            "apps/3MVG9cc",
            json!({"scopes": ["refresh_token"]}),
        )
        .await;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "3MVG9cc"),
        ("client_secret", "cc-secret"),
    ];
    let (status, body) = stack.emu.token(MY_DOMAIN, &form).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "no valid scopes defined"})
    );
    let answer = stack.token(MY_DOMAIN, &form).await;
    assert_eq!(answer.cause(), "sf.cc.no_valid_scopes", "{}", answer.body);
}

#[tokio::test]
async fn a_jwt_app_without_the_refresh_token_scope_is_named() {
    let stack = Stack::start(&[]);
    stack
        .emu
        .control("PATCH", "apps/3MVG9jwt", json!({"scopes": ["api"]}))
        .await;
    let assertion = sign(&jwt_claims(ALICE));
    let form = [("grant_type", JWT_GRANT), ("assertion", assertion.as_str())];
    let (status, body) = stack.emu.token(LOGIN, &form).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "refresh_token scope is required and the connected app should be installed and preauthorized"})
    );
    let answer = stack.token(LOGIN, &form).await;
    assert_eq!(
        answer.cause(),
        "sf.jwt.refresh_scope_missing",
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn a_refresh_at_an_inactive_org_is_named() {
    let stack = Stack::start(&[]);
    let token = refresh_token_of(&stack).await;
    stack
        .emu
        .control("PATCH", "orgs/acme", json!({"active": false}))
        .await;
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", WEB),
        ("refresh_token", token.as_str()),
    ];
    let (status, body) = stack.emu.token(LOGIN, &form).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "inactive organization"})
    );
    let answer = stack.token(LOGIN, &form).await;
    assert_eq!(answer.cause(), "sf.org.inactive", "{}", answer.body);
}

#[tokio::test]
async fn a_new_user_still_propagating_is_told_apart_from_a_missing_pre_authorization() {
    let stack = Stack::start(&[]);
    let ok = stack
        .token(
            LOGIN,
            &[
                ("grant_type", JWT_GRANT),
                ("assertion", &sign(&jwt_claims(ALICE))),
            ],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // A user just created and assigned: Salesforce refuses the first logins, then accepts.
    stack
        .emu
        .control(
            "POST",
            "users",
            json!({"org": "acme", "username": "frank@acme.com", "propagating_logins": 1}),
        )
        .await;
    stack
        .emu
        .control(
            "PATCH",
            "apps/3MVG9jwt",
            json!({"assigned_users": [ALICE, "frank@acme.com"]}),
        )
        .await;
    let form = |sub: &str| {
        let assertion = sign(&jwt_claims(sub));
        vec![
            ("grant_type".to_owned(), JWT_GRANT.to_owned()),
            ("assertion".to_owned(), assertion),
        ]
    };
    let first = form("frank@acme.com");
    let pairs: Vec<(&str, &str)> = first
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let answer = stack.token(LOGIN, &pairs).await;
    assert_eq!(
        answer.body["error_description"],
        "user hasn't approved this consumer"
    );
    assert_eq!(
        answer.cause(),
        "sf.jwt.identity_propagating",
        "{}",
        answer.body
    );
    assert!(
        answer
            .evidence("sf.jwt.identity_propagating")
            .contains("other users")
    );
    let again = form("frank@acme.com");
    let pairs: Vec<(&str, &str)> = again
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(stack.token(LOGIN, &pairs).await.status, 200, "propagated");
}

#[tokio::test]
async fn a_rotated_consumer_secret_is_named() {
    let stack = Stack::start(&[]);
    refresh_token_of(&stack).await;
    stack
        .emu
        .control(
            "PATCH",
            "apps/3MVG9web",
            json!({"client_secret": "web-secret-2"}),
        )
        .await;
    // A replica still deployed with the old secret.
    let answer = stack
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "invalid_client");
    assert_eq!(
        answer.cause(),
        "sf.client.secret_changed",
        "{}",
        answer.body
    );
    assert!(
        answer
            .evidence("sf.client.secret_changed")
            .contains("rotated"),
        "{}",
        answer.body
    );
    let log = stack.proxy.raw_log();
    for secret in [WEB_SECRET, "web-secret-2"] {
        assert!(!log.contains(secret), "{secret} logged");
    }
}

#[tokio::test]
async fn an_access_token_sent_as_the_refresh_token_is_named_and_not_retried() {
    let stack = Stack::start(&[]);
    let answer = stack
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    let access = answer.body["access_token"].as_str().unwrap().to_owned();
    let first = stack.refresh(LOGIN, WEB, &access).await;
    assert_eq!(first.status, 400);
    assert_eq!(
        first.cause(),
        "sf.refresh.token_malformed",
        "{}",
        first.body
    );
    assert!(
        first
            .evidence("sf.refresh.token_malformed")
            .contains("access token")
    );
    assert_eq!(first.headers["grantdoctor-basis"], "evidence");
    // Decided on evidence: the retry is the breaker's.
    let retry = stack.refresh(LOGIN, WEB, &access).await;
    assert_eq!(retry.headers["grantdoctor-blocked"], "dead-refresh-token");
    assert!(
        !stack.proxy.raw_log().contains(&access),
        "the access token was logged"
    );
}
