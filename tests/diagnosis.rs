//! Diagnosis end to end: real failures produced by the emulator, through the real proxy, and
//! the cause named in the response headers, the body and the log.

mod common;

use common::jwt::{now_secs, sign, sign_with};
use common::stack::Stack;
use serde_json::json;

const LOGIN: &str = "login.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

async fn refresh_token_of(stack: &Stack, scope: &str) -> String {
    let answer = stack.web_login(WEB, WEB_SECRET, ALICE, scope).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned()
}

#[tokio::test]
async fn the_sixth_authorization_warns_and_the_evicted_token_is_named() {
    let stack = Stack::start(&[]);
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(refresh_token_of(&stack, "api refresh_token").await);
    }
    stack
        .proxy
        .wait_for_event(|e| e["id"] == "warn.approval_limit_reached");
    assert!(
        !stack
            .warnings()
            .contains(&"warn.approval_evicted".to_owned())
    );
    tokens.push(refresh_token_of(&stack, "api refresh_token").await);
    // Warned before anyone uses the evicted token.
    let warning = stack
        .proxy
        .wait_for_event(|e| e["id"] == "warn.approval_evicted");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("is now revoked"),
        "{warning}"
    );

    let answer = stack.refresh(LOGIN, WEB, &tokens[0]).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "invalid_grant");
    assert_eq!(
        answer.body["error_description"],
        "expired access/refresh token"
    );
    assert_eq!(answer.cause(), "sf.refresh.approval_limit_evicted");
    assert!(
        answer
            .evidence("sf.refresh.approval_limit_evicted")
            .contains("5 newer refresh tokens were issued"),
        "{}",
        answer.body
    );
    assert!(
        answer.finding("sf.refresh.approval_limit_evicted")["confidence"]
            .as_f64()
            .unwrap()
            >= 0.9
    );
    let event = stack
        .proxy
        .wait_for_event(|e| e["event"] == "invalid_grant");
    assert_eq!(event["cause"], "sf.refresh.approval_limit_evicted");
    assert_eq!(event["client_id"], WEB);
    assert!(event["org_id"].as_str().unwrap().starts_with("00D"));
    assert!(event["user_id"].as_str().unwrap().starts_with("005"));
    // The second-oldest still works: the diagnosis matched what Salesforce did.
    assert_eq!(stack.refresh(LOGIN, WEB, &tokens[1]).await.status, 200);
}

#[tokio::test]
async fn immediate_expiry_is_named_when_a_fresh_token_fails_on_first_use() {
    let stack = Stack::start(&[]);
    stack
        .emu
        .control(
            "PATCH",
            "apps/3MVG9web",
            json!({"refresh_policy": {"kind": "immediately_expire"}}),
        )
        .await;
    let token = refresh_token_of(&stack, "api refresh_token").await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(
        answer.cause(),
        "sf.refresh.policy_immediate_expiry",
        "{}",
        answer.body
    );
    assert!(
        answer
            .evidence("sf.refresh.policy_immediate_expiry")
            .contains("never refreshed successfully")
    );
    // A second token of the same app failing the same way makes it near certain.
    let token = refresh_token_of(&stack, "api refresh_token").await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert!(
        answer.finding("sf.refresh.policy_immediate_expiry")["confidence"]
            .as_f64()
            .unwrap()
            >= 0.9,
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn idle_and_absolute_expiry_are_measured_on_salesforces_clock() {
    let stack = Stack::start(&[
        "--refresh-policy",
        "3MVG9web=idle:3600",
        "--refresh-policy",
        "3MVG9uat=absolute:7200",
    ]);
    stack
        .emu
        .control(
            "PATCH",
            "apps/3MVG9web",
            json!({"refresh_policy": {"kind": "idle_expire", "seconds": 3600}}),
        )
        .await;
    let token = refresh_token_of(&stack, "api refresh_token").await;
    assert_eq!(stack.refresh(LOGIN, WEB, &token).await.status, 200);
    stack.advance(3700).await;
    let answer = stack.refresh(LOGIN, WEB, &token).await;
    assert_eq!(
        answer.cause(),
        "sf.refresh.policy_idle_expiry",
        "{}",
        answer.body
    );
    assert!(
        answer
            .evidence("sf.refresh.policy_idle_expiry")
            .contains("unused for 61 min"),
        "{}",
        answer.body
    );

    // Absolute lifetime, on a sandbox app, used regularly until it dies.
    stack
        .emu
        .control(
            "PATCH",
            "apps/3MVG9uat",
            json!({"refresh_policy": {"kind": "absolute_expire", "seconds": 7200}}),
        )
        .await;
    let code = stack.emu.control("POST", "authorize", json!({"client_id": "3MVG9uat", "username": "alice@acme.com.uat", "scope": "api refresh_token", "redirect_uri": "https://app.example.com/callback"})).await["code"].as_str().unwrap().to_owned();
    let issued = stack
        .token(
            "test.salesforce.com",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "3MVG9uat"),
                ("client_secret", "uat-secret"),
                ("code", &code),
                ("redirect_uri", "https://app.example.com/callback"),
            ],
        )
        .await;
    let token = issued.body["refresh_token"].as_str().unwrap().to_owned();
    stack.advance(3600).await;
    assert_eq!(
        stack
            .refresh("test.salesforce.com", "3MVG9uat", &token)
            .await
            .status,
        200
    );
    stack.advance(3601).await;
    let answer = stack
        .refresh("test.salesforce.com", "3MVG9uat", &token)
        .await;
    assert_eq!(
        answer.cause(),
        "sf.refresh.policy_absolute_expiry",
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn reusing_a_rotated_token_is_named_and_rotation_is_warned() {
    // With the guard off the reuse reaches Salesforce, which is what is diagnosed here; the
    // guard's own behaviour is in recovery.rs.
    let stack = Stack::start(&["--rotation-guard", "off"]);
    stack
        .emu
        .control("PATCH", "apps/3MVG9web", json!({"rotation": true}))
        .await;
    let first = refresh_token_of(&stack, "api refresh_token").await;
    let rotated = stack.refresh(LOGIN, WEB, &first).await;
    assert_eq!(rotated.status, 200);
    assert!(rotated.body["refresh_token"].is_string());
    stack
        .proxy
        .wait_for_event(|e| e["id"] == "warn.rotation_on");
    let answer = stack.refresh(LOGIN, WEB, &first).await;
    assert_eq!(
        answer.cause(),
        "sf.refresh.rotated_token_reused",
        "{}",
        answer.body
    );
    assert!(
        answer
            .evidence("sf.refresh.rotated_token_reused")
            .contains("carried a new refresh_token")
    );
}

#[tokio::test]
async fn a_token_sent_to_another_org_or_by_another_app_is_named() {
    let stack = Stack::start(&[]);
    let token = refresh_token_of(&stack, "api refresh_token").await;
    let answer = stack.refresh("newco.my.salesforce.com", WEB, &token).await;
    assert_eq!(
        answer.body["error_description"],
        "expired access/refresh token"
    );
    assert_eq!(answer.cause(), "sf.refresh.wrong_host", "{}", answer.body);
    assert!(answer.evidence("sf.refresh.wrong_host").contains("issued by login.salesforce.com for the org at acme.my.salesforce.com, and sent to newco.my.salesforce.com"));

    let answer = stack.refresh(LOGIN, "3MVG9jwt", &token).await;
    assert_eq!(
        answer.cause(),
        "sf.refresh.client_mismatch",
        "{}",
        answer.body
    );

    // A sandbox token at production: Salesforce says the key is unknown; the ledger says why.
    let code = stack.emu.control("POST", "authorize", json!({"client_id": "3MVG9uat", "username": "alice@acme.com.uat", "scope": "api refresh_token", "redirect_uri": "https://app.example.com/callback"})).await["code"].as_str().unwrap().to_owned();
    let issued = stack
        .token(
            "test.salesforce.com",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "3MVG9uat"),
                ("client_secret", "uat-secret"),
                ("code", &code),
                ("redirect_uri", "https://app.example.com/callback"),
            ],
        )
        .await;
    let sandbox_token = issued.body["refresh_token"].as_str().unwrap().to_owned();
    let answer = stack.refresh(LOGIN, "3MVG9uat", &sandbox_token).await;
    assert_eq!(answer.body["error"], "invalid_client_id");
    assert_eq!(answer.cause(), "sf.refresh.wrong_host", "{}", answer.body);
}

#[tokio::test]
async fn a_missing_refresh_scope_is_warned_and_then_named() {
    let stack = Stack::start(&[]);
    let answer = stack.web_login(WEB, WEB_SECRET, ALICE, "api").await;
    assert!(answer.body.get("refresh_token").is_none());
    stack
        .proxy
        .wait_for_event(|e| e["id"] == "warn.no_refresh_token");
    let answer = stack.refresh(LOGIN, WEB, "undefined").await;
    assert_eq!(
        answer.cause(),
        "sf.refresh.missing_refresh_scope",
        "{}",
        answer.body
    );
    let evidence = answer.evidence("sf.refresh.missing_refresh_scope");
    assert!(
        evidence.contains("placeholder")
            && evidence.contains("returned no refresh_token (scope: api)"),
        "{evidence}"
    );
}

#[tokio::test]
async fn code_reuse_and_pkce_mistakes_are_named() {
    let stack = Stack::start(&[]);
    let code = stack.authorize(WEB, ALICE, "api", None).await;
    assert_eq!(
        stack
            .exchange_code(WEB, WEB_SECRET, &code, None)
            .await
            .status,
        200
    );
    let again = stack.exchange_code(WEB, WEB_SECRET, &code, None).await;
    assert_eq!(
        again.body["error_description"],
        "expired authorization code"
    );
    assert_eq!(again.cause(), "sf.code.reused", "{}", again.body);

    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let code = stack.authorize(WEB, ALICE, "api", Some(challenge)).await;
    let missing = stack
        .token(
            LOGIN,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", WEB),
                ("code", &code),
                ("redirect_uri", "https://app.example.com/callback"),
            ],
        )
        .await;
    assert_eq!(missing.cause(), "sf.code.pkce_mismatch", "{}", missing.body);
    assert!(
        missing
            .evidence("sf.code.pkce_mismatch")
            .contains("no code_verifier")
    );
}

#[tokio::test]
async fn each_jwt_failure_is_named() {
    let stack = Stack::start(&[]);
    let stack = &stack;
    let jwt = |assertion: String| async move {
        stack
            .token(
                LOGIN,
                &[("grant_type", JWT_GRANT), ("assertion", &assertion)],
            )
            .await
    };
    let claims = |aud: &str, exp: i64, sub: &str| json!({"iss": "3MVG9jwt", "sub": sub, "aud": aud, "exp": exp});
    let login = "https://login.salesforce.com";

    let answer = jwt(sign(&claims(
        "https://test.salesforce.com",
        now_secs() + 60,
        ALICE,
    )))
    .await;
    assert_eq!(answer.cause(), "sf.jwt.audience_invalid", "{}", answer.body);
    assert!(
        answer
            .evidence("sf.jwt.audience_invalid")
            .contains("expects https://login.salesforce.com")
    );

    let answer = jwt(sign(&claims(login, now_secs() - 7200, ALICE))).await;
    assert_eq!(
        answer.cause(),
        "sf.jwt.assertion_expired",
        "{}",
        answer.body
    );
    assert!(
        answer
            .evidence("sf.jwt.assertion_expired")
            .contains("local time"),
        "{}",
        answer.body
    );

    let answer = jwt(sign_with(
        "app",
        "RS512",
        &claims(login, now_secs() + 60, ALICE),
    ))
    .await;
    assert_eq!(
        answer.cause(),
        "sf.jwt.invalid_signature",
        "{}",
        answer.body
    );
    assert!(
        answer
            .evidence("sf.jwt.invalid_signature")
            .contains("alg is RS512")
    );

    let answer = jwt(sign_with(
        "other",
        "RS256",
        &claims(login, now_secs() + 60, ALICE),
    ))
    .await;
    assert_eq!(
        answer.cause(),
        "sf.jwt.invalid_signature",
        "{}",
        answer.body
    );
    assert!(
        answer
            .evidence("sf.jwt.invalid_signature")
            .contains("certificate uploaded on the app")
    );

    let answer = jwt(sign(
        &json!({"iss": WEB, "sub": "bob@acme.com", "aud": login, "exp": now_secs() + 60}),
    ))
    .await;
    assert_eq!(
        answer.cause(),
        "sf.jwt.not_preauthorized",
        "{}",
        answer.body
    );

    let answer = jwt(sign(&claims(login, now_secs() + 60, "bob@acme.com"))).await;
    assert_eq!(answer.body["error"], "invalid_app_access");
    assert_eq!(
        answer.cause(),
        "sf.app.user_not_approved",
        "{}",
        answer.body
    );

    let ok = jwt(sign(&claims(login, now_secs() + 600, ALICE))).await;
    assert_eq!(ok.status, 200);
    stack
        .proxy
        .wait_for_event(|e| e["id"] == "warn.jwt_exp_far");
}

#[tokio::test]
async fn password_failures_warn_before_the_lockout() {
    let stack = Stack::start(&[]);
    let attempt = || {
        stack.token(
            LOGIN,
            &[
                ("grant_type", "password"),
                ("client_id", WEB),
                ("client_secret", WEB_SECRET),
                ("username", "bob@acme.com"),
                ("password", "wrong"),
            ],
        )
    };
    for _ in 0..3 {
        let answer = attempt().await;
        assert_eq!(
            answer.cause(),
            "sf.password.bad_credentials",
            "{}",
            answer.body
        );
    }
    let answer = attempt().await;
    assert!(
        answer
            .evidence("sf.password.lockout_risk")
            .contains("4 consecutive failures"),
        "{}",
        answer.body
    );
    let warning = stack
        .proxy
        .wait_for_event(|e| e["id"] == "warn.password_failures");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("consecutive password-grant failures")
    );
}

#[tokio::test]
async fn a_blocked_password_flow_is_suspected_when_nothing_ever_succeeds() {
    let stack = Stack::start(&[]);
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            stack
                .token(
                    "newco.my.salesforce.com",
                    &[
                        ("grant_type", "password"),
                        ("client_id", WEB),
                        ("client_secret", WEB_SECRET),
                        ("username", "carol@newco.com"),
                        ("password", "Pa55word"),
                    ],
                )
                .await,
        );
    }
    let answer = last.unwrap();
    assert!(
        answer
            .evidence("sf.password.flow_blocked")
            .contains("none ever succeeded"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn client_credentials_at_login_are_named() {
    let stack = Stack::start(&[]);
    let answer = stack
        .token(
            LOGIN,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9cc"),
                ("client_secret", "cc-secret"),
            ],
        )
        .await;
    assert_eq!(
        answer.body["error_description"],
        "request not supported on this domain"
    );
    assert_eq!(answer.cause(), "sf.cc.wrong_domain");
    assert!(
        answer.finding("sf.cc.wrong_domain")["confidence"]
            .as_f64()
            .unwrap()
            >= 0.95
    );
}

#[tokio::test]
async fn a_gzip_error_body_is_annotated_and_re_encoded() {
    let stack = Stack::start(&[]);
    let response = stack
        .client
        .post(format!("https://{LOGIN}/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept-encoding", "gzip")
        .body("grant_type=refresh_token&client_id=3MVG9web&refresh_token=5Aep861unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let length: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let raw = response.bytes().await.unwrap();
    assert_eq!(raw.len(), length);
    let mut text = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut text)
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error_description"], "expired access/refresh token");
    let first = &body["grantdoctor"]["causes"][0];
    assert!(
        first["evidence"][0]
            .as_str()
            .unwrap()
            .starts_with("not observed"),
        "{body}"
    );
}

#[tokio::test]
async fn a_chunked_request_body_is_observed() {
    let stack = Stack::start(&[]);
    let out = std::process::Command::new("curl")
        .args(["-sS", "-x", &stack.proxy.proxy_url(), "--cacert"])
        .arg(stack.proxy.ca_pem())
        .args([
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
        ])
        .args([
            "--data-binary",
            "grant_type=client_credentials&client_id=3MVG9cc&client_secret=cc-secret",
        ])
        .arg(format!("https://{LOGIN}/services/oauth2/token"))
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        body["grantdoctor"]["causes"][0]["id"], "sf.cc.wrong_domain",
        "{body}"
    );
    let event = stack
        .proxy
        .wait_for_event(|e| e["event"] == "invalid_grant");
    assert_eq!(event["grant_type"], "client_credentials");
}

#[tokio::test]
async fn a_whole_scenario_leaves_no_secret_in_logs_data_metrics_or_events() {
    let stack = Stack::start(&[]);
    let mut secrets: Vec<String> = vec![
        WEB_SECRET.into(),
        "cc-secret".into(),
        "Pa55word".into(),
        "TOKENBOB".into(),
    ];
    let login = stack
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    for key in ["access_token", "refresh_token"] {
        secrets.push(login.body[key].as_str().unwrap().to_owned());
    }
    let refreshed = stack
        .refresh(LOGIN, WEB, login.body["refresh_token"].as_str().unwrap())
        .await;
    secrets.push(refreshed.body["access_token"].as_str().unwrap().to_owned());
    let code = stack.authorize(WEB, ALICE, "api", None).await;
    stack.exchange_code(WEB, WEB_SECRET, &code, None).await;
    stack.exchange_code(WEB, WEB_SECRET, &code, None).await;
    secrets.push(code);
    let assertion = sign(
        &json!({"iss": "3MVG9jwt", "sub": ALICE, "aud": "https://login.salesforce.com", "exp": now_secs() - 5}),
    );
    stack
        .token(
            LOGIN,
            &[("grant_type", JWT_GRANT), ("assertion", &assertion)],
        )
        .await;
    secrets.push(assertion.split('.').nth(2).unwrap().to_owned());
    secrets.push(assertion);
    stack
        .token(
            LOGIN,
            &[
                ("grant_type", "password"),
                ("client_id", WEB),
                ("client_secret", WEB_SECRET),
                ("username", "bob@acme.com"),
                ("password", "Pa55wordTOKENBOB"),
            ],
        )
        .await;
    stack
        .token(
            LOGIN,
            &[
                ("grant_type", "password"),
                ("client_id", WEB),
                ("client_secret", WEB_SECRET),
                ("username", "bob@acme.com"),
                ("password", "Pa55wordWRONG"),
            ],
        )
        .await;
    stack
        .token(
            LOGIN,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9cc"),
                ("client_secret", "cc-secret"),
            ],
        )
        .await;

    let admin = stack.proxy.admin.unwrap();
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut exposed = String::new();
    for path in ["/metrics", "/events?limit=1000"] {
        let text = plain
            .get(format!("http://{admin}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        exposed.push_str(&text);
    }
    assert!(
        exposed.contains("grantdoctor_token_exchanges_total") && exposed.contains("invalid_grant")
    );
    let log = stack.proxy.raw_log();
    assert!(
        log.contains("invalid_grant") && log.contains("token_issued"),
        "the scenario ran"
    );
    let mut data = String::new();
    for entry in std::fs::read_dir(stack.proxy.dir.path().join("data")).unwrap() {
        data.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry.unwrap().path()).unwrap(),
        ));
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret reached the log: {}…",
            &secret[..6.min(secret.len())]
        );
        assert!(
            !data.contains(secret.as_str()),
            "a secret reached the data dir"
        );
        assert!(
            !exposed.contains(secret.as_str()),
            "a secret reached /metrics or /events"
        );
    }
}

#[tokio::test]
async fn history_survives_a_restart() {
    let mut stack = Stack::start(&[]);
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(refresh_token_of(&stack, "api refresh_token").await);
    }
    stack.restart_proxy();
    let loaded = stack
        .proxy
        .wait_for_event(|e| e["event"] == "ledger_loaded");
    assert!(loaded["refresh_tokens"].as_u64().unwrap() >= 6, "{loaded}");
    let answer = stack.refresh(LOGIN, WEB, &tokens[0]).await;
    assert_eq!(
        answer.cause(),
        "sf.refresh.approval_limit_evicted",
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn a_revocation_after_an_eviction_is_not_taken_for_immediate_expiry() {
    let stack = Stack::start(&[]);
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(refresh_token_of(&stack, "api refresh_token").await);
    }
    assert_eq!(stack.refresh(LOGIN, WEB, &tokens[5]).await.status, 200);
    // The evicted token fails on its first use, and eviction explains it.
    let evicted = stack.refresh(LOGIN, WEB, &tokens[0]).await;
    assert_eq!(evicted.cause(), "sf.refresh.approval_limit_evicted");
    // The user revokes the app; a token never used before now fails on its first use.
    stack
        .emu
        .control("POST", &format!("users/{ALICE}/revoke"), json!({}))
        .await;
    let answer = stack.refresh(LOGIN, WEB, &tokens[1]).await;
    assert_eq!(answer.status, 400);
    let ids: Vec<&str> = answer.body["grantdoctor"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"sf.refresh.revoked"), "{}", answer.body);
    let immediate = answer.finding("sf.refresh.policy_immediate_expiry");
    assert!(
        immediate["confidence"].as_f64().unwrap() < 0.9,
        "one unexplained first use is no pattern: {}",
        answer.body
    );
    assert!(
        !answer
            .evidence("sf.refresh.policy_immediate_expiry")
            .contains("other refresh tokens of this app also failed"),
        "the evicted token's failure was explained by the eviction: {}",
        answer.body
    );
    // The token that had worked fails too; after that, every token of the user is explained
    // by the revocation, first use or not.
    let worked = stack.refresh(LOGIN, WEB, &tokens[5]).await;
    assert_eq!(worked.cause(), "sf.refresh.revoked", "{}", worked.body);
    let next = stack.refresh(LOGIN, WEB, &tokens[2]).await;
    assert_eq!(next.cause(), "sf.refresh.revoked", "{}", next.body);
    assert!(
        next.evidence("sf.refresh.revoked")
            .contains("which had worked"),
        "{}",
        next.body
    );
    assert!(
        next.finding("sf.refresh.revoked")["confidence"]
            .as_f64()
            .unwrap()
            >= 0.9
    );
}

#[tokio::test]
async fn the_approval_limit_can_be_set_for_orgs_that_evict_earlier() {
    let stack = Stack::start(&["--approval-limit", "4"]);
    for _ in 0..4 {
        refresh_token_of(&stack, "api refresh_token").await;
    }
    let reached = stack
        .proxy
        .wait_for_event(|e| e["id"] == "warn.approval_limit_reached");
    assert!(
        reached["message"].as_str().unwrap().contains("number 4"),
        "{reached}"
    );
    assert!(
        !stack
            .warnings()
            .contains(&"warn.approval_evicted".to_owned())
    );
    refresh_token_of(&stack, "api refresh_token").await;
    let evicted = stack
        .proxy
        .wait_for_event(|e| e["id"] == "warn.approval_evicted");
    assert!(
        evicted["message"].as_str().unwrap().contains("keeps 4"),
        "{evicted}"
    );
}
