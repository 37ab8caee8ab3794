//! The emulator's REST query endpoint over real HTTPS: each SOQL query grantdoctor's org
//! connection sends is answered from the emulator's live state with Salesforce's exact JSON,
//! and what the emulator does not support, may not show or must not return is refused in
//! Salesforce's error shape.
//!
//! Ids and dates are made by the emulator: each is checked for its shape (key prefix, 18
//! characters; `2026-11-25T09:12:03.000+0000` within the window of the action that made it)
//! and then written into the expected text, which is compared whole.

mod common;

use common::EmulatorProcess;
use common::jwt::{now_secs, sign};
use grantdoctor::org::records::{UserKey, soql};
use serde_json::{Value, json};

const LOGIN: &str = "login.salesforce.com";
const MYDOMAIN: &str = "acme.my.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const VERSION: &str = "v60.0";

/// An access token of `admin@acme.com` by JWT bearer (it holds ManageUsers and
/// CustomizeApplication).
async fn admin_token(emu: &EmulatorProcess) -> String {
    jwt_login(emu, "admin@acme.com").await.1["access_token"]
        .as_str()
        .expect("admin JWT bearer login succeeds")
        .to_owned()
}

async fn jwt_login(emu: &EmulatorProcess, sub: &str) -> (u16, Value) {
    let assertion = sign(&json!({"iss": "3MVG9jwt", "sub": sub,
        "aud": "https://login.salesforce.com", "exp": now_secs() + 3600}));
    emu.token(
        LOGIN,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ],
    )
    .await
}

async fn password_login(emu: &EmulatorProcess, username: &str, password: &str) -> (u16, Value) {
    emu.token(
        LOGIN,
        &[
            ("grant_type", "password"),
            ("client_id", WEB),
            ("client_secret", WEB_SECRET),
            ("username", username),
            ("password", password),
        ],
    )
    .await
}

/// The web-server flow for `username` and the app; returns (user id, refresh token).
async fn authorize(
    emu: &EmulatorProcess,
    client_id: &str,
    secret: &str,
    username: &str,
) -> (String, String) {
    let body = emu
        .web_login(client_id, secret, username, "api refresh_token")
        .await;
    let user_id = body["id"].as_str().unwrap().rsplit('/').next().unwrap();
    (
        user_id.to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// GET the query endpoint; status and body text.
async fn query(emu: &EmulatorProcess, token: Option<&str>, soql: &str) -> (u16, String) {
    query_at(emu, token, VERSION, soql).await
}

async fn query_at(
    emu: &EmulatorProcess,
    token: Option<&str>,
    version: &str,
    soql: &str,
) -> (u16, String) {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", soql)
        .finish();
    let mut request = emu.client.get(format!(
        "https://{MYDOMAIN}/services/data/{version}/query?{q}"
    ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// An answer that must be a 200; its text and its parsed form.
async fn rows(emu: &EmulatorProcess, token: &str, soql: &str) -> (String, Value) {
    let (status, text) = query(emu, Some(token), soql).await;
    assert_eq!(status, 200, "{soql}: {text}");
    let value = serde_json::from_str(&text).unwrap();
    (text, value)
}

async fn now_ms(emu: &EmulatorProcess) -> i64 {
    emu.control("GET", "clock", json!({})).await["now_ms"]
        .as_i64()
        .unwrap()
}

async fn advance(emu: &EmulatorProcess, seconds: u64) {
    emu.control("POST", "clock/advance", json!({"seconds": seconds}))
        .await;
}

/// The `Id` of record `i`, checked for its key prefix and length.
fn id(answer: &Value, i: usize, prefix: &str) -> String {
    let id = answer["records"][i]["Id"].as_str().unwrap().to_owned();
    assert!(id.len() == 18 && id.starts_with(prefix), "{id}");
    id
}

/// Field `field` of record `i`: a Salesforce datetime between `lo` and `hi` (ms).
fn date(answer: &Value, i: usize, field: &str, (lo, hi): (i64, i64)) -> String {
    let text = answer["records"][i][field].as_str().unwrap().to_owned();
    let ms = salesforce_ms(&text);
    assert!(lo <= ms && ms <= hi, "{field} {text} outside [{lo}, {hi}]");
    text
}

/// Parses `2026-11-25T09:12:03.000+0000`, checking every separator.
fn salesforce_ms(text: &str) -> i64 {
    let b = text.as_bytes();
    assert_eq!(b.len(), 28, "{text}");
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        assert_eq!(b[at], c, "{text}");
    }
    assert!(text.ends_with("+0000"), "{text}");
    let n = |from: usize, to: usize| text[from..to].parse::<u16>().unwrap();
    let month = time::Month::try_from(n(5, 7) as u8).unwrap();
    let day = time::Date::from_calendar_date(n(0, 4) as i32, month, n(8, 10) as u8).unwrap();
    let clock =
        time::Time::from_hms_milli(n(11, 13) as u8, n(14, 16) as u8, n(17, 19) as u8, n(20, 23))
            .unwrap();
    (time::PrimitiveDateTime::new(day, clock)
        .assume_utc()
        .unix_timestamp_nanos()
        / 1_000_000) as i64
}

/// A datetime literal for a WHERE clause: the second after `ms`.
fn literal_after(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(ms / 1000 + 1).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// One record of `ty` as Salesforce writes it; `members` follow `Id` in SELECT order.
fn record(ty: &str, id: &str, members: &str) -> String {
    format!(
        r#"{{"attributes":{{"type":"{ty}","url":"/services/data/{VERSION}/sobjects/{ty}/{id}"}},"Id":"{id}",{members}}}"#
    )
}

fn page(records: &[String]) -> String {
    format!(
        r#"{{"totalSize":{},"done":true,"records":[{}]}}"#,
        records.len(),
        records.join(",")
    )
}

/// Runs `action` and returns the emulator-clock window it ran in.
macro_rules! window {
    ($emu:expr, $action:expr) => {{
        let lo = now_ms($emu).await;
        let out = $action;
        (lo, now_ms($emu).await, out)
    }};
}

/// The queries are grantdoctor's own (`org::records::soql`): what is tested here is what an
/// org connection sends.
fn oauth_token_query(user_id: &str, app: &str) -> String {
    soql::approvals(user_id, app)
}

#[tokio::test]
async fn oauth_token_lists_one_users_live_approvals_of_an_app_newest_first_with_their_use() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    let (lo0, hi0, (alice, first)) = window!(
        &emu,
        authorize(&emu, WEB, WEB_SECRET, "alice@acme.com").await
    );
    advance(&emu, 60).await;
    let (lo1, hi1, _) = window!(
        &emu,
        authorize(&emu, WEB, WEB_SECRET, "alice@acme.com").await
    );
    authorize(&emu, WEB, WEB_SECRET, "bob@acme.com").await;
    advance(&emu, 60).await;
    let (lo2, hi2, refreshed) = window!(
        &emu,
        emu.token(
            LOGIN,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", WEB),
                ("client_secret", WEB_SECRET),
                ("refresh_token", &first),
            ],
        )
        .await
    );
    assert_eq!(refreshed.0, 200, "{}", refreshed.1);

    let soql = oauth_token_query(&alice, "web");
    let (text, answer) = rows(&emu, &admin, &soql).await;
    let (newer, older) = (id(&answer, 0, "0CQ"), id(&answer, 1, "0CQ"));
    let newer_created = date(&answer, 0, "CreatedDate", (lo1, hi1));
    let older_created = date(&answer, 1, "CreatedDate", (lo0, hi0));
    let older_used = date(&answer, 1, "LastUsedDate", (lo2, hi2));
    let expected = page(&[
        record(
            "OauthToken",
            &newer,
            &format!(
                r#""UserId":"{alice}","AppName":"web","CreatedDate":"{newer_created}","LastUsedDate":"{newer_created}","UseCount":0"#
            ),
        ),
        record(
            "OauthToken",
            &older,
            &format!(
                r#""UserId":"{alice}","AppName":"web","CreatedDate":"{older_created}","LastUsedDate":"{older_used}","UseCount":1"#
            ),
        ),
    ]);
    assert_eq!(text, expected);
    assert_ne!(newer, older);
    let (again, _) = rows(&emu, &admin, &soql).await;
    assert_eq!(again, expected, "ids and values are stable between queries");
}

#[tokio::test]
async fn oauth_token_lists_the_approvals_of_several_apps_across_users() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    for (name, client_id) in [("Acme Sync", "3MVG9sync"), ("Other", "3MVG9other")] {
        emu.control(
            "POST",
            "apps",
            json!({"org": "acme", "name": name, "client_id": client_id, "client_secret": "s",
                "callback_urls": ["https://app.example.com/callback"]}),
        )
        .await;
    }
    let mut made = Vec::new();
    for (client, secret, user, app) in [
        (WEB, WEB_SECRET, "alice@acme.com", "web"),
        ("3MVG9sync", "s", "alice@acme.com", "Acme Sync"),
        ("3MVG9sync", "s", "bob@acme.com", "Acme Sync"),
    ] {
        let (lo, hi, (user_id, _)) = window!(&emu, authorize(&emu, client, secret, user).await);
        made.push((lo, hi, user_id, app));
        advance(&emu, 30).await;
    }
    // The newest approval of all, of an app not in the list: not shown.
    authorize(&emu, "3MVG9other", "s", "bob@acme.com").await;

    let (text, answer) = rows(
        &emu,
        &admin,
        &soql::approvals_of_apps(&["Acme Sync", "web"]),
    )
    .await;
    let expected: Vec<String> = made
        .iter()
        .rev()
        .enumerate()
        .map(|(i, (lo, hi, user_id, app))| {
            let created = date(&answer, i, "CreatedDate", (*lo, *hi));
            record(
                "OauthToken",
                &id(&answer, i, "0CQ"),
                &format!(
                    r#""UserId":"{user_id}","AppName":"{app}","CreatedDate":"{created}","LastUsedDate":"{created}","UseCount":0"#
                ),
            )
        })
        .collect();
    assert_eq!(text, page(&expected));
}

#[tokio::test]
async fn the_sixth_authorization_leaves_five_rows_without_the_oldest() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    let mut windows = Vec::new();
    let mut alice = String::new();
    for _ in 0..6 {
        let (lo, hi, (user_id, _)) = window!(
            &emu,
            authorize(&emu, WEB, WEB_SECRET, "alice@acme.com").await
        );
        alice = user_id;
        windows.push((lo, hi));
        advance(&emu, 10).await;
    }
    let (text, answer) = rows(&emu, &admin, &oauth_token_query(&alice, "web")).await;
    let expected: Vec<String> = (0..5)
        .map(|i| {
            let created = date(&answer, i, "CreatedDate", windows[5 - i]);
            record(
                "OauthToken",
                &id(&answer, i, "0CQ"),
                &format!(
                    r#""UserId":"{alice}","AppName":"web","CreatedDate":"{created}","LastUsedDate":"{created}","UseCount":0"#
                ),
            )
        })
        .collect();
    assert_eq!(text, page(&expected));
}

#[tokio::test]
async fn an_approval_revoked_through_the_control_api_disappears_from_oauth_token() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    let (alice, _) = authorize(&emu, WEB, WEB_SECRET, "alice@acme.com").await;
    authorize(&emu, WEB, WEB_SECRET, "alice@acme.com").await;
    let soql = oauth_token_query(&alice, "web");
    let (_, before) = rows(&emu, &admin, &soql).await;
    assert_eq!(before["totalSize"], 2);
    let revoked = emu
        .control(
            "POST",
            "users/alice@acme.com/revoke",
            json!({"client_id": WEB}),
        )
        .await;
    assert_eq!(revoked["revoked"], 2);
    let (text, _) = rows(&emu, &admin, &soql).await;
    assert_eq!(text, page(&[]));
}

#[tokio::test]
async fn user_is_found_by_id_or_username_with_its_last_login() {
    let emu = EmulatorProcess::start();
    let (lo, hi, admin) = window!(&emu, admin_token(&emu).await);
    let (bob_lo, bob_hi, (bob, _)) =
        window!(&emu, authorize(&emu, WEB, WEB_SECRET, "bob@acme.com").await);
    emu.control("PATCH", "users/bob@acme.com", json!({"active": false}))
        .await;

    let (text, answer) = rows(&emu, &admin, &soql::user(UserKey::Id(&bob))).await;
    let last = date(&answer, 0, "LastLoginDate", (bob_lo, bob_hi));
    let members = format!(r#""Username":"bob@acme.com","IsActive":false,"LastLoginDate":"{last}""#);
    assert_eq!(text, page(&[record("User", &bob, &members)]));

    let (text, answer) = rows(
        &emu,
        &admin,
        &soql::user(UserKey::Username("admin@acme.com")),
    )
    .await;
    let admin_id = id(&answer, 0, "005");
    let last = date(&answer, 0, "LastLoginDate", (lo, hi));
    let members =
        format!(r#""Username":"admin@acme.com","IsActive":true,"LastLoginDate":"{last}""#);
    assert_eq!(text, page(&[record("User", &admin_id, &members)]));

    let (text, answer) = rows(
        &emu,
        &admin,
        "select id, username, isactive, lastlogindate from user where username = 'ALICE@acme.com'",
    )
    .await;
    let alice = id(&answer, 0, "005");
    let members = r#""Username":"alice@acme.com","IsActive":true,"LastLoginDate":null"#;
    assert_eq!(
        text,
        page(&[record("User", &alice, members)]),
        "names and text match case-insensitively; a user who never logged in has null"
    );
    let (text, _) = rows(
        &emu,
        &admin,
        "SELECT Id FROM User WHERE Username = 'carol@newco.com'",
    )
    .await;
    assert_eq!(text, page(&[]), "users of other orgs are not visible");
}

#[tokio::test]
async fn user_login_says_whether_a_user_is_frozen_or_password_locked() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    let (bob, _) = authorize(&emu, WEB, WEB_SECRET, "bob@acme.com").await;
    let soql = soql::user_login(&bob);
    let (text, answer) = rows(&emu, &admin, &soql).await;
    let login_id = id(&answer, 0, "060");
    let members = |frozen: bool, locked: bool| {
        format!(r#""UserId":"{bob}","IsFrozen":{frozen},"IsPasswordLocked":{locked}"#)
    };
    assert_eq!(
        text,
        page(&[record("UserLogin", &login_id, &members(false, false))])
    );

    emu.control("PATCH", "orgs/acme", json!({"lockout_after": 2}))
        .await;
    for _ in 0..2 {
        assert_eq!(password_login(&emu, "bob@acme.com", "wrong").await.0, 400);
    }
    emu.control("PATCH", "users/bob@acme.com", json!({"frozen": true}))
        .await;
    let (text, _) = rows(&emu, &admin, &soql).await;
    assert_eq!(
        text,
        page(&[record("UserLogin", &login_id, &members(true, true))])
    );
}

/// One token-endpoint login of the LoginHistory test; returns its HTTP status.
async fn attempt(emu: &EmulatorProcess, what: &str) -> u16 {
    let (status, _) = match what {
        "alice" => password_login(emu, "alice@acme.com", "Pa55wordTOKEN123").await,
        "bob-wrong" => password_login(emu, "bob@acme.com", "nope").await,
        "dave" => password_login(emu, "dave@acme.com", "Pa55word").await,
        "bob-jwt" => jwt_login(emu, "bob@acme.com").await,
        "bob-frozen" => {
            emu.control("PATCH", "users/bob@acme.com", json!({"frozen": true}))
                .await;
            password_login(emu, "bob@acme.com", "Pa55wordTOKENBOB").await
        }
        _ => password_login(emu, "erin@oldco.com", "Pa55word").await,
    };
    status
}

async fn user_id(emu: &EmulatorProcess, token: &str, username: &str) -> String {
    let soql = format!("SELECT Id FROM User WHERE Username = '{username}'");
    id(&rows(emu, token, &soql).await.1, 0, "005")
}

#[tokio::test]
async fn login_history_lists_oauth_logins_after_a_time_newest_first_with_their_status() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    // The second after now, as `literal_after` makes it for the other LoginHistory tests.
    let since_ms = (now_ms(&emu).await / 1000 + 1) * 1000;
    advance(&emu, 60).await;
    // (attempt, its user, its status, its app); erin's org is not acme's: not visible.
    let attempts = [
        ("alice", "alice@acme.com", "Success", "web"),
        ("bob-wrong", "bob@acme.com", "Invalid password", "web"),
        ("dave", "dave@acme.com", "Restricted IP", "web"),
        (
            "bob-jwt",
            "bob@acme.com",
            "Failed: Not approved for access",
            "jwt",
        ),
        ("bob-frozen", "bob@acme.com", "User is frozen", "web"),
        ("erin", "", "", ""),
    ];
    let mut expected = Vec::new();
    for (what, user, status, app) in attempts {
        let (lo, hi, got) = window!(&emu, attempt(&emu, what).await);
        assert_eq!(got == 200, status == "Success", "{what}: {got}");
        if !user.is_empty() {
            expected.push(((lo, hi), user_id(&emu, &admin, user).await, status, app));
        }
        advance(&emu, 10).await;
    }
    let (text, answer) = rows(&emu, &admin, &soql::logins(since_ms)).await;
    let records: Vec<String> = expected
        .iter()
        .rev()
        .enumerate()
        .map(|(i, (window, user_id, status, app))| {
            let at = date(&answer, i, "LoginTime", *window);
            record(
                "LoginHistory",
                &id(&answer, i, "0Ya"),
                &format!(
                    r#""UserId":"{user_id}","LoginTime":"{at}","LoginType":"Remote Access 2.0","Status":"{status}","Application":"{app}""#
                ),
            )
        })
        .collect();
    assert_eq!(text, page(&records));
}

/// The date window and the limit are applied to the live rows, not only parsed: `<` cuts the
/// logins after the window, ASC puts the oldest first and LIMIT keeps the first of them.
#[tokio::test]
async fn a_date_window_an_ascending_order_and_a_limit_cut_login_history() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    let since = literal_after(now_ms(&emu).await);
    advance(&emu, 60).await;
    let mut windows = Vec::new();
    for _ in 0..3 {
        let (lo, hi, status) = window!(&emu, attempt(&emu, "alice").await);
        assert_eq!(status, 200);
        windows.push((lo, hi));
        advance(&emu, 10).await;
    }
    let until = literal_after(windows[1].1);
    let soql = |limit: &str| {
        format!(
            "SELECT Id, LoginTime FROM LoginHistory WHERE LoginTime > {since} AND LoginTime < {until} ORDER BY LoginTime ASC{limit}"
        )
    };
    let expected = |answer: &Value, n: usize| {
        let records: Vec<String> = (0..n)
            .map(|i| {
                let at = date(answer, i, "LoginTime", windows[i]);
                record(
                    "LoginHistory",
                    &id(answer, i, "0Ya"),
                    &format!(r#""LoginTime":"{at}""#),
                )
            })
            .collect();
        page(&records)
    };
    let (text, answer) = rows(&emu, &admin, &soql("")).await;
    assert_eq!(
        text,
        expected(&answer, 2),
        "the third login is after the window"
    );
    let (text, answer) = rows(&emu, &admin, &soql(" LIMIT 1")).await;
    assert_eq!(text, expected(&answer, 1), "only the oldest");
}

#[tokio::test]
async fn login_history_keeps_the_source_address_and_filters_on_status() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    let since = literal_after(now_ms(&emu).await);
    advance(&emu, 60).await;
    assert_eq!(attempt(&emu, "alice").await, 200);
    assert_eq!(attempt(&emu, "bob-wrong").await, 400);
    let (text, answer) = rows(
        &emu,
        &admin,
        &format!(
            "SELECT SourceIp FROM LoginHistory WHERE LoginTime > {since} AND Status = 'success'"
        ),
    )
    .await;
    // Without Id in the SELECT list the id is in the record's URL only.
    let url = answer["records"][0]["attributes"]["url"].as_str().unwrap();
    let id = url.rsplit('/').next().unwrap();
    assert!(id.starts_with("0Ya") && id.len() == 18, "{url}");
    assert_eq!(
        text,
        page(&[format!(
            r#"{{"attributes":{{"type":"LoginHistory","url":"/services/data/{VERSION}/sobjects/LoginHistory/{id}"}},"SourceIp":"127.0.0.1"}}"#
        )])
    );
}

#[tokio::test]
async fn connected_application_shows_each_apps_approval_and_refresh_policy() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    emu.control(
        "PATCH",
        "apps/3MVG9cc",
        json!({"refresh_policy": {"kind": "idle_expire", "seconds": 5400}}),
    )
    .await;
    emu.control(
        "POST",
        "apps",
        json!({"org": "acme", "name": "Now", "refresh_policy": {"kind": "immediately_expire"}}),
    )
    .await;
    let (text, answer) = rows(
        &emu,
        &admin,
        &soql::app_policies(&["web", "jwt", "cc", "Now", "web-uat"]),
    )
    .await;
    let rows: Vec<String> = [
        ("Now", false, true, "0"),
        ("cc", false, true, "2"),
        ("jwt", true, false, "null"),
        ("web", false, false, "null"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, admin_only, metric, period))| {
        record(
            "ConnectedApplication",
            &id(&answer, i, "0H4"),
            &format!(
                r#""Name":"{name}","OptionsAllowAdminApprovedUsersOnly":{admin_only},"OptionsRefreshTokenValidityMetric":{metric},"RefreshTokenValidityPeriod":{period}"#
            ),
        )
    })
    .collect();
    assert_eq!(text, page(&rows), "web-uat belongs to another org");
}

/// Salesforce's answer for an object that does not exist or that the user may not see.
fn not_supported(name: &str) -> String {
    format!(
        r#"[{{"message":"sObject type '{name}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.","errorCode":"INVALID_TYPE"}}]"#
    )
}

/// (query, status, exact body).
#[tokio::test]
async fn refused_queries_answer_in_salesforces_error_shape() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    let cases = [
        (
            "SELECT Id FROM User WHERE Id = 'a' OR Id = 'b'",
            r#"[{"message":"OR is not supported; only AND joins conditions","errorCode":"MALFORMED_QUERY"}]"#.to_owned(),
        ),
        (
            "SELECT COUNT() FROM OauthToken",
            r#"[{"message":"functions and subqueries are not supported","errorCode":"MALFORMED_QUERY"}]"#.to_owned(),
        ),
        (
            "SELECT Id FROM User WHERE IsActive = 'true'",
            r#"[{"message":"value of filter criterion for field 'IsActive' must be of type boolean (true or false, not in quotes), compared with = or IN","errorCode":"MALFORMED_QUERY"}]"#.to_owned(),
        ),
        ("SELECT Id FROM Foo", not_supported("Foo")),
        (
            "SELECT Id, AccessToken FROM OauthToken",
            r#"[{"message":"Field 'AccessToken' on entity 'OauthToken' holds a token value; the emulator does not return token values.","errorCode":"INVALID_FIELD"}]"#.to_owned(),
        ),
        (
            "SELECT Id FROM OauthToken WHERE DeleteToken = 'x'",
            r#"[{"message":"Field 'DeleteToken' on entity 'OauthToken' holds a token value; the emulator does not return token values.","errorCode":"INVALID_FIELD"}]"#.to_owned(),
        ),
        (
            "SELECT Id, Foo FROM User",
            r#"[{"message":"No such column 'Foo' on entity 'User'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.","errorCode":"INVALID_FIELD"}]"#.to_owned(),
        ),
    ];
    for (soql, body) in cases {
        assert_eq!(query(&emu, Some(&admin), soql).await, (400, body), "{soql}");
    }
    let (status, body) = emu
        .client
        .get(format!("https://{MYDOMAIN}/services/data/{VERSION}/query"))
        .bearer_auth(&admin)
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        body.text().await.unwrap(),
        r#"[{"message":"A query string has to be specified","errorCode":"MALFORMED_QUERY"}]"#
    );
}

#[tokio::test]
async fn a_user_without_the_permissions_sees_only_user() {
    let emu = EmulatorProcess::start();
    let (status, body) = password_login(&emu, "alice@acme.com", "Pa55wordTOKEN123").await;
    assert_eq!(status, 200, "{body}");
    let alice = body["access_token"].as_str().unwrap();
    for object in [
        "OauthToken",
        "ConnectedApplication",
        "LoginHistory",
        "UserLogin",
    ] {
        let got = query(&emu, Some(alice), &format!("SELECT Id FROM {object}")).await;
        assert_eq!(got, (400, not_supported(object)), "{object}");
    }
    let (status, _) = query(&emu, Some(alice), "SELECT Id FROM User").await;
    assert_eq!(status, 200);

    // ManageUsers alone opens all four.
    emu.control(
        "PATCH",
        "users/alice@acme.com",
        json!({"permissions": ["ManageUsers"]}),
    )
    .await;
    for object in [
        "OauthToken",
        "LoginHistory",
        "UserLogin",
        "ConnectedApplication",
    ] {
        let (status, text) = query(&emu, Some(alice), &format!("SELECT Id FROM {object}")).await;
        assert_eq!(status, 200, "{object}: {text}");
    }
}

#[tokio::test]
async fn without_a_live_access_token_the_query_is_an_invalid_session() {
    let emu = EmulatorProcess::start();
    let invalid = r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
    let soql = "SELECT Id FROM User";
    assert_eq!(query(&emu, None, soql).await, (401, invalid.to_owned()));
    assert_eq!(
        query(&emu, Some("00Dnope!x"), soql).await,
        (401, invalid.to_owned())
    );
    let admin = admin_token(&emu).await;
    advance(&emu, 3 * 3600).await;
    assert_eq!(
        query(&emu, Some(&admin), soql).await,
        (401, invalid.to_owned()),
        "an idle session expires"
    );
}

#[tokio::test]
async fn account_queries_still_get_the_fixed_page_of_200_accounts() {
    let emu = EmulatorProcess::start();
    let admin = admin_token(&emu).await;
    let (status, text) =
        query_at(&emu, Some(&admin), "v66.0", "SELECT Id, Name FROM Account").await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["totalSize"], 200);
    assert_eq!(page["done"], true);
    assert_eq!(
        page["records"][0],
        json!({"attributes": {"type": "Account", "url": "/services/data/v66.0/sobjects/Account/001000000000000AAA"},
            "Id": "001000000000000AAA", "Name": "Account 0", "Industry": "Technology", "BillingCity": "San Francisco"})
    );
    let (status, other) = query(&emu, Some(&admin), "select id from account limit 5").await;
    assert_eq!(
        (status, other),
        (200, text),
        "whatever the rest of the query says"
    );
}
