//! Org connections under test: a config file naming one, the proxy's own account of it (its
//! `org_connection_problem` events, its query counter) and the emulator's (the JWT bearer
//! logins it answered).

use std::path::Path;

use serde_json::Value;

use super::stack::Stack;

pub const ACME: &str = "acme.my.salesforce.com";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// One org connection to the emulator's acme org, through `client_id` as `username`, signing
/// with the fixture key `key`; the web app is named `web` for it.
pub fn config(dir: &Path, key: &str, client_id: &str, username: &str) -> String {
    let key = super::jwt::fixture(&format!("jwt/{key}-private.pem"));
    let path = dir.join("grantdoctor.toml");
    std::fs::write(
        &path,
        format!(
            r#"[[orgs]]
host = "{ACME}"
client_id = "{client_id}"
private_key = "{}"
username = "{username}"
[orgs.apps]
"3MVG9web" = "web"
"#,
            key.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// The connection that works: `3MVG9jwt` as `admin@acme.com`.
pub fn working_config(dir: &Path) -> String {
    config(dir, "app", "3MVG9jwt", "admin@acme.com")
}

/// The proxy's `/metrics` text.
pub async fn metrics(stack: &Stack) -> String {
    let admin = stack.proxy.admin.expect("the proxy logs its admin address");
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

/// The value of `grantdoctor_org_queries_total` for these labels (in any order), 0 when the
/// series is absent.
pub fn org_queries(metrics: &str, object: &str, outcome: &str) -> f64 {
    let wanted = [
        format!("org=\"{ACME}\""),
        format!("object=\"{object}\""),
        format!("outcome=\"{outcome}\""),
    ];
    metrics
        .lines()
        .filter(|l| l.starts_with("grantdoctor_org_queries_total{"))
        .find(|l| {
            let labels = &l[l.find('{').unwrap() + 1..l.find('}').unwrap()];
            let labels: Vec<&str> = labels.split(',').collect();
            wanted.iter().all(|w| labels.contains(&w.as_str()))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The `org_connection_problem` events logged so far.
pub fn problems(stack: &Stack) -> Vec<Value> {
    stack
        .proxy
        .events()
        .into_iter()
        .filter(|e| e["event"] == "org_connection_problem")
        .collect()
}

/// JWT bearer logins of `username` the emulator answered.
pub async fn jwt_logins(stack: &Stack, username: &str) -> usize {
    stack
        .emu
        .requests_of(JWT_BEARER)
        .await
        .iter()
        .filter(|r| r["username"] == username)
        .count()
}

/// Whether `text` holds something shaped like a Salesforce access token (`00D` + 12 more
/// alphanumerics, then `!`).
pub fn holds_access_token(text: &[u8]) -> bool {
    text.windows(16).any(|w| {
        w.starts_with(b"00D") && w[15] == b'!' && w[..15].iter().all(u8::is_ascii_alphanumeric)
    })
}
