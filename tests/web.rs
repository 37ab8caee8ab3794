//! The operator's page on the admin port, end to end: six authorizations of one user fill a
//! family past the approval limit, the evicted token is refreshed, and the page (read plainly,
//! as with JavaScript off), its JSON and its live stream all show it — and no secret the
//! scenario used appears in any of them.

mod common;

use std::time::Duration;

use common::stack::{Answer, Stack};
use serde_json::Value;

const LOGIN: &str = "login.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";
const EVICTED: &str = "sf.refresh.approval_limit_evicted";

/// Every secret the scenario handled, to look for in what the admin port serves.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn note(&mut self, value: &str) {
        if value.len() >= 8 {
            self.0.push(value.to_owned());
        }
    }

    fn assert_absent(&self, what: &str, text: &str) {
        for secret in &self.0 {
            assert!(
                !text.contains(secret.as_str()),
                "a secret appears in {what}"
            );
            // The page escapes HTML; a secret with `!` or `.` would still read the same.
            let escaped = escape(secret);
            assert!(
                !text.contains(&escaped),
                "a secret appears (escaped) in {what}"
            );
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Six authorizations of Alice through the proxy, then a refresh of the first refresh token,
/// which the sixth evicted.
async fn evicted_refresh(stack: &Stack, secrets: &mut Secrets) -> Answer {
    secrets.note(WEB_SECRET);
    let mut first = None;
    for _ in 0..6 {
        let code = stack.authorize(WEB, ALICE, "api refresh_token", None).await;
        secrets.note(&code);
        let answer = stack.exchange_code(WEB, WEB_SECRET, &code, None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let refresh = answer.body["refresh_token"].as_str().unwrap().to_owned();
        secrets.note(&refresh);
        secrets.note(answer.body["access_token"].as_str().unwrap());
        first.get_or_insert(refresh);
    }
    let answer = stack.refresh(LOGIN, WEB, &first.unwrap()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.cause(), EVICTED, "{}", answer.body);
    answer
}

fn admin_get(stack: &Stack, path: &str) -> (u16, String) {
    let admin = stack.proxy.admin.expect("the proxy's admin port");
    common::raw::admin_get(admin, path).unwrap_or_else(|| panic!("{path} answers"))
}

fn event_id(answer: &Answer) -> String {
    answer.headers["grantdoctor-event"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_page_shows_the_eviction_and_its_family_without_javascript() {
    let stack = Stack::start(&[]);
    let mut secrets = Secrets::default();
    let answer = evicted_refresh(&stack, &mut secrets).await;
    let id = event_id(&answer);
    let (status, page) = admin_get(&stack, "/");
    assert_eq!(status, 200);
    let row_start = page
        .find(&format!("<tr id=\"row-{id}\""))
        .unwrap_or_else(|| panic!("no row for {id}"));
    let row = &page[row_start..row_start + page[row_start..].find("</tr>").unwrap()];
    assert!(row.contains(EVICTED), "{row}");
    assert!(row.contains("evidence"), "the basis: {row}");
    let evidence = answer.finding(EVICTED)["evidence"][0].as_str().unwrap();
    assert!(row.contains(&escape(evidence)), "{evidence} in {row}");
    assert!(
        page.contains("<b class=\"approvals\">5/5</b>"),
        "the family at 5/5"
    );
    assert!(page.contains("id=\"chart\""));
    // The detail view of the event, by the id the header carries.
    let (status, detail) = admin_get(&stack, &format!("/events/{id}"));
    assert_eq!(status, 200);
    assert!(detail.contains("Ranked causes"), "{detail}");
    assert!(detail.contains(EVICTED));
    let (_, searched) = admin_get(&stack, &format!("/?event={id}"));
    assert!(searched.contains(&format!("row-{id}")));
    secrets.assert_absent("the page", &page);
    // Kept for a look at what the page rendered (CARGO_TARGET_TMPDIR is under target/).
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page.html"),
        &page,
    );
    secrets.assert_absent("the detail page", &detail);
}

#[tokio::test]
async fn the_json_lists_the_family_and_filters_events() {
    let stack = Stack::start(&[]);
    let mut secrets = Secrets::default();
    let answer = evicted_refresh(&stack, &mut secrets).await;
    let id = event_id(&answer);
    let (status, events) = admin_get(&stack, &format!("/api/events?cause={EVICTED}&limit=10"));
    assert_eq!(status, 200, "{events}");
    let events: Vec<Value> = serde_json::from_str(&events).unwrap();
    let event = events
        .iter()
        .find(|e| e["event_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not found by cause"));
    let evicted_fp = event["token_fp"].as_str().unwrap().to_owned();
    assert!(
        events
            .iter()
            .all(|e| e["cause"] == EVICTED || e["causes"].as_str().unwrap_or("").contains(EVICTED))
    );
    let (_, by_client) = admin_get(&stack, &format!("/api/events?client_id={WEB}&since=10m"));
    assert!(by_client.contains(&id));

    let (status, families) = admin_get(&stack, "/api/families");
    assert_eq!(status, 200, "{families}");
    let families: Vec<Value> = serde_json::from_str(&families).unwrap();
    let family = families
        .iter()
        .find(|f| f["client_id"] == WEB)
        .unwrap_or_else(|| panic!("no family of {WEB}: {families:?}"));
    assert_eq!(family["live_approvals"], 5, "{family}");
    assert_eq!(family["approval_limit"], 5);
    assert_eq!(
        family["predicted_evictions"],
        serde_json::json!([evicted_fp])
    );
    assert_eq!(family["tokens"].as_array().unwrap().len(), 6);
    assert!(family["failures"].as_u64().unwrap() >= 1);
    assert!(
        family["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["what"] == "evicted")
    );

    for path in [
        "/api/events?limit=abc",
        "/events?limit=abc",
        "/api/events?limt=5",
        "/api/families?limit=0",
    ] {
        let (status, body) = admin_get(&stack, path);
        assert_eq!(status, 400, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "bad_parameter", "{path}");
        let named = if path.contains("limt") {
            "limt"
        } else {
            "limit"
        };
        assert_eq!(body["parameter"], named, "{path}");
    }
    for path in [
        "/api/events",
        "/api/events?limit=1000",
        "/api/families",
        "/events?limit=1000",
    ] {
        let (_, body) = admin_get(&stack, path);
        secrets.assert_absent(path, &body);
    }
}

#[tokio::test]
async fn the_stream_delivers_a_failure_made_after_connecting() {
    let stack = Stack::start(&[]);
    let admin = stack.proxy.admin.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut response = client
        .get(format!("http://{admin}/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    // The stream says it is open before any event: after that, nothing can be missed.
    while !seen.contains(": connected") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the stream opens")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let failed = stack.refresh(LOGIN, WEB, "5Aep861-not-a-known-token").await;
    assert_eq!(failed.status, 400);
    let id = event_id(&failed);
    let wanted = format!("id: {id}\ndata: ");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&wanted) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("{id} not streamed: {seen}"))
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let line = seen[seen.find(&wanted).unwrap() + wanted.len()..]
        .lines()
        .next()
        .unwrap();
    let event: Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["event"], "invalid_grant");
    assert!(
        !seen.contains("5Aep861-not-a-known-token"),
        "the token was streamed"
    );
}

/// A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
/// ended when dropped.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    /// `None` when no driver is installed (the test then fails, naming what to install).
    async fn start() -> Option<Self> {
        common::install_crypto();
        let driver = ["chromedriver", "/usr/bin/chromedriver"]
            .into_iter()
            .find(|p| {
                std::process::Command::new(p)
                    .arg("--version")
                    .output()
                    .is_ok()
            })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            driver: child,
            base,
            session: String::new(),
            http,
        };
        for _ in 0..100 {
            if browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let options = serde_json::json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1500,1100"]}}}});
        let session = browser.call("POST", "/session", options).await;
        browser.session = session["sessionId"].as_str().expect("a session").to_owned();
        Some(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "POST" => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string()),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let text = request.send().await.unwrap().text().await.unwrap();
        let answer: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: {text}"));
        answer.get("value").cloned().unwrap_or(Value::Null)
    }

    async fn script(&self, source: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call(
            "POST",
            &path,
            serde_json::json!({"script": source, "args": []}),
        )
        .await
    }

    /// Types a cause into the page's filter; returns the shown rows' ranked causes.
    async fn filter_by_cause(&self, cause: &str) -> Value {
        self.script(&format!(
            "var i = document.querySelector('input[name=cause]'); i.value = '{cause}';
             i.dispatchEvent(new Event('input', {{ bubbles: true }}));
             return Array.from(document.querySelectorAll('#failure-table tbody tr'))
               .filter(function (r) {{ return !r.hidden; }})
               .map(function (r) {{ return r.dataset.causes; }});"
        ))
        .await
    }

    /// Polls a script until it returns `true`.
    async fn until(&self, what: &str, source: &str) {
        for _ in 0..100 {
            if self.script(source).await == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: not within 10 s");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test]
async fn in_a_browser_a_new_failure_appears_without_reload() {
    let Some(browser) = Browser::start().await else {
        panic!(
            "NOT RUN, counted as failed: no chromedriver here (apt-get install chromium chromium-driver, or run bash .ci/run)"
        );
    };
    let stack = Stack::start(&[]);
    let mut secrets = Secrets::default();
    evicted_refresh(&stack, &mut secrets).await;
    let admin = stack.proxy.admin.unwrap();
    let path = format!("/session/{}/url", browser.session);
    browser
        .call(
            "POST",
            &path,
            serde_json::json!({"url": format!("http://{admin}/")}),
        )
        .await;
    browser
        .until(
            "the stream connects",
            "return document.getElementById('live').textContent === 'live'",
        )
        .await;
    let has = |text: &str| format!("return document.body.innerText.indexOf({text:?}) >= 0");
    browser.until("the eviction is listed", &has(EVICTED)).await;
    browser.until("the family is at 5/5", &has("5/5")).await;
    browser
        .until(
            "the chart has data",
            "return document.querySelectorAll('#chart rect').length > 0",
        )
        .await;
    let failed = stack
        .refresh(LOGIN, WEB, "5Aep861-never-issued-token")
        .await;
    let id = event_id(&failed);
    browser
        .until(
            "the new failure appears without reload",
            &format!("return !!document.getElementById('row-{id}')"),
        )
        .await;
    // The filter hides, as one types, rows that do not name the cause (top or ranked).
    let rows = browser.filter_by_cause(EVICTED).await;
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty(), "{rows:?}");
    assert!(
        rows.iter()
            .all(|c| c.as_str().unwrap().split(' ').any(|id| id == EVICTED)),
        "{rows:?}"
    );
    assert_eq!(
        browser.filter_by_cause("sf.no.such_cause").await,
        serde_json::json!([])
    );
    browser.filter_by_cause("").await;
    let html = browser
        .script("return document.documentElement.outerHTML")
        .await;
    secrets.assert_absent("the page in the browser", html.as_str().unwrap());
    let shot = browser
        .call(
            "GET",
            &format!("/session/{}/screenshot", browser.session),
            Value::Null,
        )
        .await;
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page.png");
    std::fs::write(&file, png).unwrap();
    browser
        .call(
            "DELETE",
            &format!("/session/{}", browser.session),
            Value::Null,
        )
        .await;
}
