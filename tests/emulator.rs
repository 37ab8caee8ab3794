//! The emulator over real HTTPS: every implemented error row answers with Salesforce's exact
//! `error`, `error_description` and status, and the rules that kill tokens behave as documented.

mod common;

use common::EmulatorProcess;
use common::jwt::{now_secs, sign, sign_with};
use serde_json::{Value, json};

const LOGIN: &str = "login.salesforce.com";
const MYDOMAIN: &str = "acme.my.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";

fn assert_error(got: &(u16, Value), status: u16, error: &str, description: &str, row: &str) {
    assert_eq!(got.0, status, "{row}: {}", got.1);
    assert_eq!(got.1["error"], error, "{row}: {}", got.1);
    assert_eq!(got.1["error_description"], description, "{row}: {}", got.1);
    assert_eq!(
        got.1.as_object().unwrap().len(),
        2,
        "{row}: exactly two members: {}",
        got.1
    );
}

/// Row, host, form, status, error, description.
type Case = (
    &'static str,
    &'static str,
    Vec<(String, String)>,
    u16,
    &'static str,
    &'static str,
);

fn jwt_claims(iss: &str, sub: &str, aud: &str) -> Value {
    json!({"iss": iss, "sub": sub, "aud": aud, "exp": now_secs() + 120})
}

#[tokio::test]
async fn every_stateless_error_row_answers_with_salesforces_exact_strings() {
    let emu = EmulatorProcess::start();
    let pw =
        |user: &'static str, password: &'static str, client: &'static str, secret: &'static str| {
            vec![
                ("grant_type", "password"),
                ("client_id", client),
                ("client_secret", secret),
                ("username", user),
                ("password", password),
            ]
        };
    let jwt = |assertion: String| {
        vec![
            (
                "grant_type".to_owned(),
                "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned(),
            ),
            ("assertion".to_owned(), assertion),
        ]
    };
    let alice = "alice@acme.com";
    let cases: Vec<Case> = vec![
        (
            "E1 unknown refresh token",
            LOGIN,
            own(&[
                ("grant_type", "refresh_token"),
                ("client_id", WEB),
                ("refresh_token", "5Aep861nope"),
            ]),
            400,
            "invalid_grant",
            "expired access/refresh token",
        ),
        (
            "E1 empty refresh token",
            LOGIN,
            own(&[
                ("grant_type", "refresh_token"),
                ("client_id", WEB),
                ("refresh_token", ""),
            ]),
            400,
            "invalid_grant",
            "expired access/refresh token",
        ),
        (
            "E2 unknown code",
            LOGIN,
            own(&[
                ("grant_type", "authorization_code"),
                ("client_id", WEB),
                ("client_secret", WEB_SECRET),
                ("code", "aPrxnope"),
                ("redirect_uri", "https://app.example.com/callback"),
            ]),
            400,
            "invalid_grant",
            "expired authorization code",
        ),
        (
            "E3 JWT exp in the past",
            LOGIN,
            jwt(sign(
                &json!({"iss": "3MVG9jwt", "sub": alice, "aud": "https://login.salesforce.com", "exp": now_secs() - 10}),
            )),
            400,
            "invalid_grant",
            "expired authorization code",
        ),
        (
            "E6 wrong password",
            LOGIN,
            own(&pw(alice, "Pa55wordWRONG", WEB, WEB_SECRET)),
            400,
            "invalid_grant",
            "authentication failure",
        ),
        (
            "E6 missing security token",
            LOGIN,
            own(&pw(alice, "Pa55word", WEB, WEB_SECRET)),
            400,
            "invalid_grant",
            "authentication failure",
        ),
        (
            "E6 username-password flow blocked",
            "newco.my.salesforce.com",
            own(&pw("carol@newco.com", "Pa55word", WEB, WEB_SECRET)),
            400,
            "invalid_grant",
            "authentication failure",
        ),
        (
            "E9 outside login IP ranges",
            LOGIN,
            own(&pw("dave@acme.com", "Pa55word", WEB, WEB_SECRET)),
            400,
            "invalid_grant",
            "ip restricted",
        ),
        (
            "E14 inactive org",
            "oldco.my.salesforce.com",
            own(&pw("erin@oldco.com", "Pa55word", WEB, WEB_SECRET)),
            400,
            "inactive_org",
            "Org is locked, closed, or suspended",
        ),
        (
            "E15 no approval for a self-authorize app",
            LOGIN,
            jwt(sign(&jwt_claims(
                WEB,
                "bob@acme.com",
                "https://login.salesforce.com",
            ))),
            400,
            "invalid_grant",
            "user hasn't approved this consumer",
        ),
        (
            "E15 sandbox user at production",
            LOGIN,
            jwt(sign(&jwt_claims(
                "3MVG9jwt",
                "alice@acme.com.uat",
                "https://login.salesforce.com",
            ))),
            400,
            "invalid_grant",
            "user hasn't approved this consumer",
        ),
        (
            "E16 admin-approved app, user not assigned",
            LOGIN,
            jwt(sign(&jwt_claims(
                "3MVG9jwt",
                "bob@acme.com",
                "https://login.salesforce.com",
            ))),
            400,
            "invalid_app_access",
            "user is not admin approved to access this app",
        ),
        (
            "E17 alg is not RS256",
            LOGIN,
            jwt(sign_with(
                "app",
                "RS512",
                &jwt_claims("3MVG9jwt", alice, "https://login.salesforce.com"),
            )),
            400,
            "invalid_grant",
            "invalid assertion",
        ),
        (
            "E17 signed with another key",
            LOGIN,
            jwt(sign_with(
                "other",
                "RS256",
                &jwt_claims("3MVG9jwt", alice, "https://login.salesforce.com"),
            )),
            400,
            "invalid_grant",
            "invalid assertion",
        ),
        (
            "E17 not a JWT",
            LOGIN,
            jwt("not.a-jwt".to_owned()),
            400,
            "invalid_grant",
            "invalid assertion",
        ),
        (
            "E18 sandbox audience at login",
            LOGIN,
            jwt(sign(&jwt_claims(
                "3MVG9jwt",
                alice,
                "https://test.salesforce.com",
            ))),
            400,
            "invalid_grant",
            "audience is invalid",
        ),
        (
            "E18 trailing slash",
            LOGIN,
            jwt(sign(&jwt_claims(
                "3MVG9jwt",
                alice,
                "https://login.salesforce.com/",
            ))),
            400,
            "invalid_grant",
            "audience is invalid",
        ),
        (
            "E20 External Client App via login",
            LOGIN,
            jwt(sign(&jwt_claims(
                "3MVG9eca",
                alice,
                "https://login.salesforce.com",
            ))),
            400,
            "app_not_found",
            "External client app is not installed in this org",
        ),
        (
            "E20 ECA at My Domain with a generic aud",
            MYDOMAIN,
            jwt(sign(&jwt_claims(
                "3MVG9eca",
                alice,
                "https://login.salesforce.com",
            ))),
            400,
            "app_not_found",
            "External client app is not installed in this org",
        ),
        (
            "E21 client credentials at login",
            LOGIN,
            own(&[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9cc"),
                ("client_secret", "cc-secret"),
            ]),
            400,
            "invalid_grant",
            "request not supported on this domain",
        ),
        (
            "E22 no Run As user",
            MYDOMAIN,
            own(&[
                ("grant_type", "client_credentials"),
                ("client_id", WEB),
                ("client_secret", WEB_SECRET),
            ]),
            400,
            "invalid_grant",
            "no client credentials user enabled",
        ),
        (
            "E27 wrong consumer secret",
            LOGIN,
            own(&pw(alice, "Pa55wordTOKEN123", WEB, "wrong")),
            400,
            "invalid_client",
            "invalid client credentials",
        ),
        (
            "E28 unknown consumer key",
            LOGIN,
            own(&pw(alice, "Pa55wordTOKEN123", "3MVG9nope", WEB_SECRET)),
            400,
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            "E28 production app at a sandbox host",
            "test.salesforce.com",
            own(&pw(
                "alice@acme.com.uat",
                "Pa55wordUATTOKEN",
                WEB,
                WEB_SECRET,
            )),
            400,
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            "E28 unknown JWT issuer",
            LOGIN,
            jwt(sign(&jwt_claims(
                "3MVG9nope",
                alice,
                "https://login.salesforce.com",
            ))),
            400,
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            "E30 misspelt grant type",
            LOGIN,
            own(&[("grant_type", "refreshtoken")]),
            400,
            "unsupported_grant_type",
            "grant type not supported",
        ),
        (
            "E30 no grant type",
            LOGIN,
            own(&[("client_id", WEB)]),
            400,
            "unsupported_grant_type",
            "grant type not supported",
        ),
    ];
    for (row, host, form, status, error, description) in cases {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let got = emu.token(host, &form).await;
        assert_error(&got, status, error, description, row);
    }
}

fn own(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn a_json_body_or_a_get_is_an_unsupported_grant_type() {
    let emu = EmulatorProcess::start();
    let response = emu
        .client
        .post(format!("https://{LOGIN}/services/oauth2/token"))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"password"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/json;charset=UTF-8"
    );
    assert_eq!(
        response.headers()["cache-control"],
        "no-cache,must-revalidate,max-age=0,no-store,private"
    );
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error":"unsupported_grant_type","error_description":"grant type not supported"}"#
    );
    let get = emu
        .client
        .get(format!(
            "https://{LOGIN}/services/oauth2/token?grant_type=password"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400);
    assert!(get.text().await.unwrap().contains("unsupported_grant_type"));
}

#[tokio::test]
async fn the_success_body_has_salesforces_shape_and_a_valid_signature() {
    let emu = EmulatorProcess::start();
    let body = emu
        .web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token")
        .await;
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "access_token",
        "refresh_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    ] {
        assert!(keys.contains(&key), "{key} missing from {body}");
    }
    let id = body["id"].as_str().unwrap();
    let parts: Vec<&str> = id
        .trim_start_matches("https://login.salesforce.com/id/")
        .split('/')
        .collect();
    assert_eq!(parts.len(), 2);
    let (org, user) = (parts[0], parts[1]);
    assert!(
        org.starts_with("00D") && org.len() == 18 && user.starts_with("005") && user.len() == 18,
        "{id}"
    );
    assert!(
        body["access_token"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}!", &org[..15]))
    );
    assert_eq!(body["instance_url"], "https://acme.my.salesforce.com");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "api refresh_token");
    let issued_at = body["issued_at"].as_str().unwrap();
    assert_eq!(issued_at.len(), 13, "milliseconds as a string");
    let expected = grantdoctor::emulator::world::hmac_signature(WEB_SECRET, id, issued_at);
    // Recomputed independently: HMAC-SHA256(secret, id + issued_at), standard base64.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, WEB_SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{id}{issued_at}").as_bytes());
    use base64::Engine;
    assert_eq!(
        body["signature"],
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    );
    assert_eq!(body["signature"], expected);
}

#[tokio::test]
async fn no_refresh_token_without_the_refresh_scope() {
    let emu = EmulatorProcess::start();
    let body = emu
        .web_login(WEB, WEB_SECRET, "alice@acme.com", "api")
        .await;
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "api");
}

#[tokio::test]
async fn a_code_works_once_and_expires() {
    let emu = EmulatorProcess::start();
    let authorize = json!({"client_id": WEB, "username": "alice@acme.com", "redirect_uri": "https://app.example.com/callback"});
    let code = emu.control("POST", "authorize", authorize.clone()).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let form = |code: &str, redirect: &str| {
        own(&[
            ("grant_type", "authorization_code"),
            ("client_id", WEB),
            ("client_secret", WEB_SECRET),
            ("code", code),
            ("redirect_uri", redirect),
        ])
    };
    let exchange = |form: Vec<(String, String)>| {
        let emu = &emu;
        async move {
            let form: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            emu.token(LOGIN, &form).await
        }
    };
    assert_error(
        &exchange(form(&code, "https://app.example.com/other")).await,
        400,
        "redirect_uri_mismatch",
        "redirect_uri must match configuration",
        "E31",
    );
    assert_eq!(
        exchange(form(&code, "https://app.example.com/callback"))
            .await
            .0,
        200
    );
    assert_error(
        &exchange(form(&code, "https://app.example.com/callback")).await,
        400,
        "invalid_grant",
        "expired authorization code",
        "E2 reuse",
    );
    let late = emu.control("POST", "authorize", authorize).await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    emu.control("POST", "clock/advance", json!({"seconds": 16 * 60}))
        .await;
    assert_error(
        &exchange(form(&late, "https://app.example.com/callback")).await,
        400,
        "invalid_grant",
        "expired authorization code",
        "E2 expiry",
    );
}

#[tokio::test]
async fn pkce_verifiers_are_checked() {
    let emu = EmulatorProcess::start();
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let mut codes = Vec::new();
    for _ in 0..3 {
        let body = json!({"client_id": WEB, "username": "alice@acme.com", "redirect_uri": "https://app.example.com/callback",
            "code_challenge": challenge, "code_challenge_method": "S256"});
        codes.push(
            emu.control("POST", "authorize", body).await["code"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let base = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", WEB.to_owned()),
            ("code", code.to_owned()),
            (
                "redirect_uri",
                "https://app.example.com/callback".to_owned(),
            ),
        ]
    };
    let run = |mut form: Vec<(&'static str, String)>, extra: Option<&str>| {
        if let Some(v) = extra {
            form.push(("code_verifier", v.to_owned()));
        }
        let emu = &emu;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            emu.token(LOGIN, &form).await
        }
    };
    assert_error(
        &run(base(&codes[0]), None).await,
        400,
        "invalid_grant",
        "invalid code verifier",
        "E23 missing",
    );
    assert_error(
        &run(
            base(&codes[1]),
            Some("wrong-verifier-wrong-verifier-wrong-verifier"),
        )
        .await,
        400,
        "invalid_grant",
        "invalid code verifier",
        "E23 mismatch",
    );
    // A public client with the right verifier needs no secret.
    let (status, body) = run(base(&codes[2]), Some(verifier)).await;
    assert_eq!(status, 200, "{body}");
}

async fn refresh(emu: &EmulatorProcess, host: &str, client_id: &str, token: &str) -> (u16, Value) {
    emu.token(
        host,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", token),
        ],
    )
    .await
}

#[tokio::test]
async fn the_sixth_approval_evicts_the_oldest_refresh_token() {
    let emu = EmulatorProcess::start();
    let mut tokens = Vec::new();
    for _ in 0..6 {
        let body = emu
            .web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token")
            .await;
        tokens.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    let live = emu
        .control(
            "GET",
            "users/alice@acme.com/approvals?client_id=3MVG9web",
            json!({}),
        )
        .await;
    assert_eq!(live["live"], 5);
    assert_error(
        &refresh(&emu, LOGIN, WEB, &tokens[0]).await,
        400,
        "invalid_grant",
        "expired access/refresh token",
        "E1 evicted",
    );
    for token in &tokens[1..] {
        assert_eq!(refresh(&emu, LOGIN, WEB, token).await.0, 200);
    }
}

#[tokio::test]
async fn refresh_policies_expire_tokens_on_the_virtual_clock() {
    let emu = EmulatorProcess::start();
    let login = || emu.web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token");
    let e1 = |got: &(u16, Value), row: &str| {
        assert_error(
            got,
            400,
            "invalid_grant",
            "expired access/refresh token",
            row,
        )
    };

    emu.control(
        "PATCH",
        "apps/3MVG9web",
        json!({"refresh_policy": {"kind": "immediately_expire"}}),
    )
    .await;
    let token = login().await["refresh_token"].as_str().unwrap().to_owned();
    e1(&refresh(&emu, LOGIN, WEB, &token).await, "immediate expiry");

    emu.control(
        "PATCH",
        "apps/3MVG9web",
        json!({"refresh_policy": {"kind": "idle_expire", "seconds": 3600}}),
    )
    .await;
    let token = login().await["refresh_token"].as_str().unwrap().to_owned();
    emu.control("POST", "clock/advance", json!({"seconds": 3000}))
        .await;
    assert_eq!(
        refresh(&emu, LOGIN, WEB, &token).await.0,
        200,
        "used within the idle window"
    );
    emu.control("POST", "clock/advance", json!({"seconds": 3000}))
        .await;
    assert_eq!(
        refresh(&emu, LOGIN, WEB, &token).await.0,
        200,
        "the window slides with each use"
    );
    emu.control("POST", "clock/advance", json!({"seconds": 3601}))
        .await;
    e1(&refresh(&emu, LOGIN, WEB, &token).await, "idle expiry");

    emu.control(
        "PATCH",
        "apps/3MVG9web",
        json!({"refresh_policy": {"kind": "absolute_expire", "seconds": 7200}}),
    )
    .await;
    let token = login().await["refresh_token"].as_str().unwrap().to_owned();
    emu.control("POST", "clock/advance", json!({"seconds": 3600}))
        .await;
    assert_eq!(refresh(&emu, LOGIN, WEB, &token).await.0, 200);
    emu.control("POST", "clock/advance", json!({"seconds": 3601}))
        .await;
    e1(
        &refresh(&emu, LOGIN, WEB, &token).await,
        "absolute expiry despite recent use",
    );

    emu.control(
        "PATCH",
        "apps/3MVG9web",
        json!({"refresh_policy": {"kind": "valid_until_revoked"}, "limit_idle_ttl": true}),
    )
    .await;
    let token = login().await["refresh_token"].as_str().unwrap().to_owned();
    emu.control("POST", "clock/advance", json!({"seconds": 29 * 86400}))
        .await;
    assert_eq!(refresh(&emu, LOGIN, WEB, &token).await.0, 200);
    emu.control("POST", "clock/advance", json!({"seconds": 31 * 86400}))
        .await;
    e1(&refresh(&emu, LOGIN, WEB, &token).await, "30-day idle cap");
}

#[tokio::test]
async fn rotation_issues_a_new_token_and_reuse_revokes_the_family() {
    let emu = EmulatorProcess::start();
    emu.control("PATCH", "apps/3MVG9web", json!({"rotation": true}))
        .await;
    let first = emu
        .web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = refresh(&emu, LOGIN, WEB, &first).await;
    assert_eq!(status, 200);
    let second = body["refresh_token"]
        .as_str()
        .expect("rotation returns a new refresh token")
        .to_owned();
    assert_ne!(first, second);
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_error(
        &refresh(&emu, LOGIN, WEB, &first).await,
        400,
        "invalid_grant",
        "expired access/refresh token",
        "stale rotated token",
    );
    assert_error(
        &refresh(&emu, LOGIN, WEB, &second).await,
        400,
        "invalid_grant",
        "expired access/refresh token",
        "family revoked",
    );
    let api = emu
        .client
        .get(format!("https://{MYDOMAIN}/services/data/"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401, "the family's access tokens die with it");
}

#[tokio::test]
async fn without_rotation_a_refresh_returns_no_refresh_token() {
    let emu = EmulatorProcess::start();
    let token = emu
        .web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = refresh(&emu, LOGIN, WEB, &token).await;
    assert_eq!(status, 200);
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body["signature"].is_string() && body["issued_at"].is_string());
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_collide() {
    let emu = EmulatorProcess::start();
    // Long enough that the second request (on a connection of its own, a TLS handshake
    // first) arrives while the first is still in flight on a loaded machine.
    let mut settings = emu.control("GET", "settings", json!(null)).await;
    settings["refresh_latency_ms"] = json!(1000);
    emu.control("PUT", "settings", settings).await;
    let token = emu
        .web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (a, b) = tokio::join!(
        refresh(&emu, LOGIN, WEB, &token),
        refresh(&emu, LOGIN, WEB, &token)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 400], "{a:?} {b:?}");
    let failed = if a.0 == 400 { a } else { b };
    assert_error(
        &failed,
        400,
        "invalid_grant",
        "expired authorization code",
        "E4",
    );
}

#[tokio::test]
async fn a_token_only_refreshes_at_a_host_of_its_org_and_for_its_client() {
    let emu = EmulatorProcess::start();
    let code = emu.control("POST", "authorize", json!({"client_id": "3MVG9uat", "username": "alice@acme.com.uat", "scope": "api refresh_token", "redirect_uri": "https://app.example.com/callback"})).await["code"].as_str().unwrap().to_owned();
    let (status, body) = emu
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
    assert_eq!(status, 200, "{body}");
    assert!(
        body["id"]
            .as_str()
            .unwrap()
            .starts_with("https://test.salesforce.com/id/")
    );
    assert_eq!(
        body["instance_url"],
        "https://acme--uat.sandbox.my.salesforce.com"
    );
    let sandbox_token = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        refresh(
            &emu,
            "acme--uat.sandbox.my.salesforce.com",
            "3MVG9uat",
            &sandbox_token
        )
        .await
        .0,
        200
    );
    // A sandbox token at production: the production host does not know the app.
    assert_error(
        &refresh(&emu, LOGIN, "3MVG9uat", &sandbox_token).await,
        400,
        "invalid_client_id",
        "client identifier invalid",
        "wrong host",
    );

    let web_token = emu
        .web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        &refresh(&emu, LOGIN, "3MVG9jwt", &web_token).await,
        400,
        "invalid_grant",
        "expired access/refresh token",
        "client mismatch",
    );
    assert_error(
        &refresh(
            &emu,
            "acme--uat.sandbox.my.salesforce.com",
            "3MVG9uat",
            &web_token,
        )
        .await,
        400,
        "invalid_grant",
        "expired access/refresh token",
        "production token at a sandbox",
    );
}

#[tokio::test]
async fn a_sandbox_refresh_kills_every_token_and_changes_the_org_id() {
    let emu = EmulatorProcess::start();
    let code = emu.control("POST", "authorize", json!({"client_id": "3MVG9uat", "username": "alice@acme.com.uat", "scope": "api refresh_token", "redirect_uri": "https://app.example.com/callback"})).await["code"].as_str().unwrap().to_owned();
    let (_, body) = emu
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
    let token = body["refresh_token"].as_str().unwrap().to_owned();
    let old_org = body["id"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(4)
        .unwrap()
        .to_owned();
    let new_org = emu
        .control("POST", "orgs/acme-uat/sandbox-refresh", json!({}))
        .await["org_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(old_org, new_org);
    assert_error(
        &refresh(&emu, "test.salesforce.com", "3MVG9uat", &token).await,
        400,
        "invalid_grant",
        "expired access/refresh token",
        "after sandbox refresh",
    );
}

#[tokio::test]
async fn revoking_an_approval_kills_its_tokens() {
    let emu = EmulatorProcess::start();
    let token = emu
        .web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = emu
        .control(
            "POST",
            "users/alice@acme.com/revoke",
            json!({"client_id": WEB}),
        )
        .await;
    assert_eq!(revoked["revoked"], 1);
    assert_error(
        &refresh(&emu, LOGIN, WEB, &token).await,
        400,
        "invalid_grant",
        "expired access/refresh token",
        "revoked",
    );
}

#[tokio::test]
async fn user_state_changes_give_their_own_errors() {
    let emu = EmulatorProcess::start();
    let token = emu
        .web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    emu.control("PATCH", "users/alice@acme.com", json!({"active": false}))
        .await;
    assert_error(
        &refresh(&emu, LOGIN, WEB, &token).await,
        400,
        "invalid_grant",
        "inactive user",
        "E12",
    );
    let got = emu
        .token(
            LOGIN,
            &[
                ("grant_type", "password"),
                ("client_id", WEB),
                ("client_secret", WEB_SECRET),
                ("username", "alice@acme.com"),
                ("password", "Pa55wordTOKEN123"),
            ],
        )
        .await;
    assert_error(&got, 400, "invalid_grant", "inactive user", "E12 password");
}

#[tokio::test]
async fn the_password_flow_locks_out_after_repeated_failures() {
    let emu = EmulatorProcess::start();
    emu.control("PATCH", "orgs/acme", json!({"lockout_after": 3}))
        .await;
    let attempt = |password: &'static str| bob_password(&emu, password);
    let (status, body) = attempt("Pa55wordTOKENBOB").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("refresh_token").is_none(),
        "the password flow issues no refresh token"
    );
    for _ in 0..3 {
        assert_error(
            &attempt("wrong").await,
            400,
            "invalid_grant",
            "authentication failure",
            "bad password",
        );
    }
    assert_error(
        &attempt("Pa55wordTOKENBOB").await,
        400,
        "invalid_grant",
        "authentication failure",
        "locked out",
    );
}

async fn bob_password(emu: &EmulatorProcess, password: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "password"),
        ("client_id", WEB),
        ("client_secret", WEB_SECRET),
        ("username", "bob@acme.com"),
        ("password", password),
    ];
    emu.token(LOGIN, &form).await
}

#[tokio::test]
async fn the_login_rate_limit_applies_per_user() {
    let emu = EmulatorProcess::start();
    emu.control("PATCH", "orgs/acme", json!({"login_rate_per_hour": 2}))
        .await;
    let attempt = || bob_password(&emu, "Pa55wordTOKENBOB");
    assert_eq!(attempt().await.0, 200);
    assert_eq!(attempt().await.0, 200);
    assert_error(
        &attempt().await,
        400,
        "rate_limit_exceeded",
        "Number of logins exceeded",
        "E34",
    );
    emu.control("POST", "clock/advance", json!({"seconds": 3601}))
        .await;
    assert_eq!(attempt().await.0, 200);
}

#[tokio::test]
async fn jwt_bearer_accepts_the_documented_audiences_and_exp_forms() {
    let emu = EmulatorProcess::start();
    let run = |host: &'static str, claims: Value| {
        let emu = &emu;
        async move {
            let assertion = sign(&claims);
            emu.token(
                host,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &assertion),
                ],
            )
            .await
        }
    };
    let alice = "alice@acme.com";
    let (status, body) = run(LOGIN, json!({"iss": "3MVG9jwt", "sub": alice, "aud": "https://login.salesforce.com", "exp": (now_secs() + 120).to_string()})).await;
    assert_eq!(status, 200, "exp as a numeric string: {body}");
    assert!(
        body.get("refresh_token").is_none() && body.get("signature").is_none(),
        "{body}"
    );
    assert_eq!(body["scope"], "api");
    let (status, _) = run(LOGIN, json!({"iss": "3MVG9jwt", "sub": alice, "aud": "https://login.salesforce.com", "exp": (now_secs() + 300) * 1000})).await;
    assert_eq!(status, 200, "exp in milliseconds is accepted");
    let (status, _) = run(MYDOMAIN, json!({"iss": "3MVG9jwt", "sub": alice, "aud": "https://acme.my.salesforce.com", "exp": now_secs() + 60})).await;
    assert_eq!(status, 200, "My Domain audience");
    let (status, body) = run(MYDOMAIN, json!({"iss": "3MVG9eca", "sub": alice, "aud": "https://acme.my.salesforce.com", "exp": now_secs() + 60})).await;
    assert_eq!(status, 200, "External Client App through My Domain: {body}");
    let (status, _) = run("acme.my.site.com", json!({"iss": "3MVG9jwt", "sub": alice, "aud": "https://acme.my.site.com/customers", "exp": now_secs() + 60})).await;
    assert_eq!(status, 200, "Experience Cloud site audience");
    // A user who approved a self-authorize app through a refresh-token flow may use JWT.
    emu.web_login(WEB, WEB_SECRET, "bob@acme.com", "api refresh_token")
        .await;
    let (status, _) = run(LOGIN, json!({"iss": WEB, "sub": "bob@acme.com", "aud": "https://login.salesforce.com", "exp": now_secs() + 60})).await;
    assert_eq!(status, 200, "prior approval");
}

#[tokio::test]
async fn client_credentials_work_on_my_domain_with_basic_auth() {
    let emu = EmulatorProcess::start();
    let response = emu
        .client
        .post(format!("https://{MYDOMAIN}/services/oauth2/token"))
        .basic_auth("3MVG9cc", Some("cc-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(body.get("refresh_token").is_none());
    assert!(
        body["id"]
            .as_str()
            .unwrap()
            .starts_with("https://acme.my.salesforce.com/id/")
    );
    let got = emu
        .token(
            MYDOMAIN,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9cc"),
                ("client_secret", "nope"),
            ],
        )
        .await;
    assert_error(
        &got,
        400,
        "invalid_client",
        "invalid client credentials",
        "E27 cc",
    );
}

#[tokio::test]
async fn chunked_requests_and_gzip_responses_are_handled() {
    let emu = EmulatorProcess::start();
    let form = "grant_type=password&client_id=3MVG9web&client_secret=web-secret&username=bob%40acme.com&password=Pa55wordTOKENBOB";
    let reply = raw_tls(&emu, &format!(
        "POST /services/oauth2/token HTTP/1.1\r\nHost: login.salesforce.com\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        20, &form[..20], form.len() - 20, &form[20..]
    ))
    .await;
    let (head, body) = reply.split_at(reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);
    let head = String::from_utf8_lossy(head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut decoded = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut decoded)
        .unwrap();
    let json: Value = serde_json::from_str(&decoded).unwrap();
    assert!(json["access_token"].is_string(), "{decoded}");
}

async fn raw_tls(emu: &EmulatorProcess, request: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(emu.ca_pem()).unwrap();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(emu.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("login.salesforce.com").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    out
}

#[tokio::test]
async fn the_rest_surface_needs_a_live_access_token() {
    let emu = EmulatorProcess::start();
    let body = emu
        .web_login(WEB, WEB_SECRET, "alice@acme.com", "api refresh_token")
        .await;
    let token = body["access_token"].as_str().unwrap();
    let id = body["id"].as_str().unwrap();
    let identity: Value = serde_json::from_str(
        &emu.client
            .get(id)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(identity["username"], "alice@acme.com");
    assert_eq!(identity["organization_id"], id.split('/').nth(4).unwrap());
    let query = emu
        .client
        .get(format!(
            "https://{MYDOMAIN}/services/data/v66.0/query?q=SELECT+Id+FROM+Account"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 200);
    let query: Value = serde_json::from_str(&query.text().await.unwrap()).unwrap();
    assert_eq!(query["records"].as_array().unwrap().len(), 200);
    let denied = emu
        .client
        .get(format!("https://{MYDOMAIN}/services/data/"))
        .bearer_auth("00Dnope!x")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.text().await.unwrap(),
        r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#
    );
    emu.control("POST", "clock/advance", json!({"seconds": 2 * 3600 + 1}))
        .await;
    let expired = emu
        .client
        .get(format!("https://{MYDOMAIN}/services/data/"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401, "the session timed out");
}

#[tokio::test]
async fn faults_can_be_injected_and_the_request_log_holds_no_secrets() {
    let emu = EmulatorProcess::start();
    emu.control("POST", "faults", json!({"fault": "unknown_error"}))
        .await;
    emu.control("POST", "faults", json!({"fault": "maintenance"}))
        .await;
    let pw = [
        ("grant_type", "password"),
        ("client_id", WEB),
        ("client_secret", WEB_SECRET),
        ("username", "bob@acme.com"),
        ("password", "Pa55wordTOKENBOB"),
    ];
    assert_error(
        &emu.token(LOGIN, &pw).await,
        400,
        "unknown_error",
        "retry your request",
        "E35",
    );
    let (status, body) = emu.token(LOGIN, &pw).await;
    assert_eq!(status, 503);
    assert!(body.as_str().unwrap().contains("<html>"), "E37 is not JSON");
    assert_eq!(emu.token(LOGIN, &pw).await.0, 200);
    let log = emu.control("GET", "requests", json!({})).await;
    let text = log.to_string();
    assert!(text.contains("bob@acme.com") && text.contains("password"));
    for secret in ["Pa55word", WEB_SECRET, "TOKENBOB"] {
        assert!(!text.contains(secret), "{secret} in the request log");
        assert!(
            !emu.raw_log().contains(secret),
            "{secret} in the emulator's log"
        );
    }
}

#[tokio::test]
async fn unknown_hosts_and_control_errors_are_explained() {
    let emu = EmulatorProcess::start();
    let (status, body) = emu
        .token("nobody.my.salesforce.com", &[("grant_type", "password")])
        .await;
    assert_eq!(status, 404);
    assert!(
        body.as_str()
            .unwrap()
            .contains("no org is served at nobody.my.salesforce.com")
    );
    let (status, body) = emu
        .control_raw("POST", "users", json!({"org": "nope", "username": "x@y"}))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("no org `nope`"));
    let (status, body) = emu
        .control_raw("POST", "apps", json!({"org": "acme", "bogus": 1}))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("bogus"), "{body}");
}

#[tokio::test]
async fn the_example_scenario_loads_and_serves() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/emulator-scenario.example.toml");
    let emu = EmulatorProcess::start_with(&["--scenario".into(), example.display().to_string()]);
    let got = emu
        .token(
            LOGIN,
            &[
                ("grant_type", "password"),
                ("client_id", "3MVG9example"),
                ("client_secret", "example-secret"),
                ("username", "integration@acme.com"),
                ("password", "example-passwordEXAMPLETOKEN"),
            ],
        )
        .await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["instance_url"], "https://acme.my.salesforce.com");
}

#[tokio::test]
async fn given_certificate_files_are_served_instead_of_minted_ones() {
    let origin_dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = common::emulator::HOSTS
        .iter()
        .map(|h| h.to_string())
        .collect();
    let leaf = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_path, key_path, ca_path) = (
        origin_dir.path().join("c.pem"),
        origin_dir.path().join("k.pem"),
        origin_dir.path().join("ca.pem"),
    );
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let emu = EmulatorProcess::start_with(&[
        "--cert".into(),
        cert_path.display().to_string(),
        "--key".into(),
        key_path.display().to_string(),
    ]);
    let client = common::emulator::client_for(&ca_path, emu.addr);
    let health = client
        .get("https://login.salesforce.com/_emulator/health")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        !emu.ca_pem().exists(),
        "no CA is created when certificate files are given"
    );
}
