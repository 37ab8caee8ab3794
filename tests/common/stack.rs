//! The emulator behind the real proxy: clients talk to Salesforce host names through
//! grantdoctor, which resolves them to the emulator and trusts its CA.

use serde_json::Value;

use super::emulator::{HOSTS, encode};
use super::{EmulatorProcess, ProxyProcess, client_via};

pub struct Stack {
    pub emu: EmulatorProcess,
    pub proxy: ProxyProcess,
    pub client: reqwest::Client,
    proxy_args: Vec<String>,
}

/// What a token request through the proxy returned.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn cause(&self) -> &str {
        self.headers
            .get("grantdoctor-cause")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The annotated cause entry with this id.
    pub fn finding(&self, id: &str) -> &Value {
        self.body["grantdoctor"]["causes"]
            .as_array()
            .and_then(|causes| causes.iter().find(|c| c["id"] == id))
            .unwrap_or_else(|| panic!("{id} not among the causes: {}", self.body))
    }

    pub fn evidence(&self, id: &str) -> String {
        self.finding(id)["evidence"].to_string()
    }
}

impl Stack {
    pub fn start(extra_proxy_args: &[&str]) -> Self {
        let emu = EmulatorProcess::start();
        let mut args = vec![
            "--upstream-ca".to_owned(),
            emu.ca_pem().display().to_string(),
        ];
        for host in HOSTS {
            args.push("--resolve".into());
            args.push(format!("{host}:443={}", emu.addr));
        }
        args.extend(extra_proxy_args.iter().map(|s| s.to_string()));
        let proxy = ProxyProcess::start(&args);
        let client = client_via(&proxy, &[&proxy.ca_pem()], false);
        Self {
            emu,
            proxy,
            client,
            proxy_args: args,
        }
    }

    /// Stops the proxy with SIGTERM and starts a new one on the same CA and data directory.
    pub fn restart_proxy(&mut self) {
        self.proxy.process.terminate();
        let dir = std::mem::replace(&mut self.proxy.dir, tempfile::tempdir().unwrap());
        self.proxy = ProxyProcess::start_in(dir, &self.proxy_args);
        self.client = client_via(&self.proxy, &[&self.proxy.ca_pem()], false);
    }

    /// A token request through the proxy.
    pub async fn token(&self, host: &str, form: &[(&str, &str)]) -> Answer {
        let response = self
            .client
            .post(format!("https://{host}/services/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The web-server flow with the code exchanged through the proxy.
    pub async fn web_login(
        &self,
        client_id: &str,
        secret: &str,
        username: &str,
        scope: &str,
    ) -> Answer {
        let code = self.authorize(client_id, username, scope, None).await;
        self.exchange_code(client_id, secret, &code, None).await
    }

    pub async fn authorize(
        &self,
        client_id: &str,
        username: &str,
        scope: &str,
        challenge: Option<&str>,
    ) -> String {
        self.emu
            .authorize(client_id, username, scope, challenge)
            .await
    }

    pub async fn exchange_code(
        &self,
        client_id: &str,
        secret: &str,
        code: &str,
        verifier: Option<&str>,
    ) -> Answer {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("code", code),
            ("redirect_uri", "https://app.example.com/callback"),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        self.token("login.salesforce.com", &form).await
    }

    pub async fn refresh(&self, host: &str, client_id: &str, token: &str) -> Answer {
        self.token(
            host,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("refresh_token", token),
            ],
        )
        .await
    }

    pub async fn advance(&self, seconds: u64) {
        self.emu
            .control(
                "POST",
                "clock/advance",
                serde_json::json!({"seconds": seconds}),
            )
            .await;
    }

    /// Warnings logged so far, by id.
    pub fn warnings(&self) -> Vec<String> {
        self.proxy
            .events()
            .iter()
            .filter(|e| e["event"] == "warning")
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }
}
