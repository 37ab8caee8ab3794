//! The real `grantdoctor emulate` binary on port 0, and a client that reaches every
//! Salesforce host name through it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::Spawned;

/// Host names the test client sends to the emulator.
pub const HOSTS: &[&str] = &[
    "login.salesforce.com",
    "test.salesforce.com",
    "acme.my.salesforce.com",
    "acme--uat.sandbox.my.salesforce.com",
    "newco.my.salesforce.com",
    "oldco.my.salesforce.com",
    "acme.my.site.com",
    "nobody.my.salesforce.com",
];

pub struct EmulatorProcess {
    pub process: Spawned,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

impl std::ops::Deref for EmulatorProcess {
    type Target = Spawned;
    fn deref(&self) -> &Spawned {
        &self.process
    }
}

impl EmulatorProcess {
    /// Starts the emulator with the test world of `tests/fixtures/emulator/world.toml`.
    pub fn start() -> Self {
        Self::start_with(&[
            "--scenario".into(),
            super::jwt::fixture("emulator/world.toml")
                .display()
                .to_string(),
        ])
    }

    pub fn start_with(extra: &[String]) -> Self {
        super::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec![
            "emulate".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--ca-dir".into(),
            dir.path().join("certs").display().to_string(),
            "--log-format".into(),
            "json".into(),
        ];
        args.extend_from_slice(extra);
        let process = Spawned::start(&args);
        let client = client_for(&dir.path().join("certs/ca.pem"), process.addr);
        Self {
            process,
            dir,
            client,
        }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    /// A control API call that must succeed.
    pub async fn control(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = self.control_raw(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {value}");
        value
    }

    /// An authorization of `username` for `client_id` (the web-server flow's first leg, made
    /// at the emulator): its code.
    pub async fn authorize(
        &self,
        client_id: &str,
        username: &str,
        scope: &str,
        challenge: Option<&str>,
    ) -> String {
        let mut body = serde_json::json!({"client_id": client_id, "username": username, "scope": scope,
            "redirect_uri": "https://app.example.com/callback"});
        if let Some(c) = challenge {
            body["code_challenge"] = c.into();
            body["code_challenge_method"] = "S256".into();
        }
        self.control("POST", "authorize", body).await["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The requests of one grant type in the emulator's request log.
    pub async fn requests_of(&self, grant_type: &str) -> Vec<Value> {
        let log = self.control("GET", "requests", Value::Null).await;
        log.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["grant_type"] == grant_type)
            .cloned()
            .collect()
    }

    pub async fn control_raw(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let url = format!("https://login.salesforce.com/_emulator/{path}");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .client
            .request(method, url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.text().await.unwrap()).unwrap(),
        )
    }

    /// POSTs a form to `host`'s token endpoint; returns status and parsed JSON body.
    pub async fn token(&self, host: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .client
            .post(format!("https://{host}/services/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Runs the web-server flow: authorize, then exchange the code. Returns the token body.
    pub async fn web_login(
        &self,
        client_id: &str,
        secret: &str,
        username: &str,
        scope: &str,
    ) -> Value {
        let code = self
            .control(
                "POST",
                "authorize",
                serde_json::json!({"client_id": client_id, "username": username, "scope": scope,
                    "redirect_uri": "https://app.example.com/callback"}),
            )
            .await["code"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, body) = self
            .token(
                "login.salesforce.com",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("redirect_uri", "https://app.example.com/callback"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

pub fn encode(form: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

/// A client that trusts the emulator's CA and resolves every test host to it.
pub fn client_for(ca: &std::path::Path, addr: std::net::SocketAddr) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    // Absent when the emulator serves given certificate files; such tests build their own.
    let pem = std::fs::read(ca).unwrap_or_default();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30));
    for host in HOSTS {
        builder = builder.resolve(host, addr);
    }
    builder.build().unwrap()
}
