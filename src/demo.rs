//! `grantdoctor demo`: the emulator and the proxy in one process, a handful of real failures
//! driven through the proxy by a real HTTPS client, and what grantdoctor said about each.
//! Everything lives in a temporary directory and on loopback ports; nothing leaves the machine.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{EmulateArgs, RunArgs};

const SCENARIO: &str = r#"
[[orgs]]
name = "acme"

[[users]]
org = "acme"
username = "integration@acme.com"
password = "demo-password"
security_token = "DEMOTOKEN"

[[apps]]
org = "acme"
name = "demo"
client_id = "3MVG9demo"
client_secret = "demo-secret"
callback_urls = ["https://app.example.com/callback"]

[[apps]]
org = "acme"
name = "service"
client_id = "3MVG9service"
client_secret = "service-secret"
client_credentials_enabled = true
run_as = "integration@acme.com"
"#;

const HOSTS: &[&str] = &["login.salesforce.com", "acme.my.salesforce.com"];

pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let (emu_tx, emu_rx) = tokio::sync::oneshot::channel();
    let emu_args = EmulateArgs {
        listen: "127.0.0.1:0".parse()?,
        ca_dir: dir.path().join("emulator-certs"),
        plain: false,
        cert: None,
        key: None,
        scenario: Some(scenario),
        log_format: None,
    };
    let emulator = tokio::spawn(crate::app::serve_emulator(
        emu_args,
        stopped(stop_rx.clone()),
        move |a| {
            let _ = emu_tx.send(a);
        },
    ));
    let emu_addr = emu_rx.await.context("the emulator did not start")?;

    let (proxy_tx, proxy_rx) = tokio::sync::oneshot::channel();
    let proxy_args = RunArgs {
        listen: "127.0.0.1:0".parse()?,
        admin: "127.0.0.1:0".parse()?,
        ca_dir: dir.path().join("certs"),
        resolve: HOSTS
            .iter()
            .map(|h| {
                format!("{h}:443={emu_addr}")
                    .parse()
                    .map_err(anyhow::Error::msg)
            })
            .collect::<Result<_, _>>()?,
        upstream_ca: vec![dir.path().join("emulator-certs/ca.pem")],
        data_dir: dir.path().join("data"),
        retention_days: 1,
        ledger_max_rows: 10_000,
        max_connections: 64,
        drain_timeout: 1,
        idle_timeout: 60,
        response_timeout: 30,
        ..RunArgs::defaults()
    };
    let proxy = tokio::spawn(crate::app::serve(
        proxy_args,
        stopped(stop_rx.clone()),
        move |a, _| {
            let _ = proxy_tx.send(a);
        },
    ));
    let proxy_addr = proxy_rx.await.context("the proxy did not start")?;
    let client = Client::new(proxy_addr, &dir.path().join("certs/ca.pem"))?;

    println!("grantdoctor demo: a Salesforce emulator behind the proxy, on loopback.\n");
    eviction(&client).await?;
    client_credentials_at_login(&client).await?;
    wrong_password(&client).await?;
    json_body(&client).await?;
    println!(
        "Every answer kept Salesforce's own error and error_description; grantdoctor added the"
    );
    println!(
        "grantdoctor-cause header and a \"grantdoctor\" member. Run it for real with: cargo run --release"
    );

    let _ = stop_tx.send(true);
    let _ = tokio::join!(emulator, proxy);
    Ok(())
}

async fn eviction(client: &Client) -> anyhow::Result<()> {
    println!("1. The same user authorizes the same app six times (one per environment, say).");
    let mut tokens = Vec::new();
    for _ in 0..6 {
        let code = client
            .post_json(
                "login.salesforce.com",
                "/_emulator/authorize",
                serde_json::json!({"client_id": "3MVG9demo", "username": "integration@acme.com",
                    "scope": "api refresh_token", "redirect_uri": "https://app.example.com/callback"}),
            )
            .await?;
        let code = code.body["code"]
            .as_str()
            .context("authorize gave no code")?
            .to_owned();
        let answer = client
            .token(
                "login.salesforce.com",
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", "3MVG9demo"),
                    ("client_secret", "demo-secret"),
                    ("code", &code),
                    ("redirect_uri", "https://app.example.com/callback"),
                ],
            )
            .await?;
        tokens.push(
            answer.body["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    println!("   Then the first environment refreshes its token:");
    let answer = client
        .token(
            "login.salesforce.com",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "3MVG9demo"),
                ("refresh_token", &tokens[0]),
            ],
        )
        .await?;
    answer.show();
    Ok(())
}

async fn client_credentials_at_login(client: &Client) -> anyhow::Result<()> {
    println!("2. A service uses the client credentials flow against login.salesforce.com:");
    client
        .token(
            "login.salesforce.com",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9service"),
                ("client_secret", "service-secret"),
            ],
        )
        .await?
        .show();
    Ok(())
}

async fn wrong_password(client: &Client) -> anyhow::Result<()> {
    println!("3. A script logs in with the password but forgets the security token, three times:");
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            client
                .token(
                    "login.salesforce.com",
                    &[
                        ("grant_type", "password"),
                        ("client_id", "3MVG9demo"),
                        ("client_secret", "demo-secret"),
                        ("username", "integration@acme.com"),
                        ("password", "demo-password"),
                    ],
                )
                .await?,
        );
    }
    if let Some(answer) = last {
        answer.show();
    }
    Ok(())
}

async fn json_body(client: &Client) -> anyhow::Result<()> {
    println!("4. A client posts JSON instead of a form:");
    client
        .request(
            "login.salesforce.com",
            "/services/oauth2/token",
            "application/json",
            r#"{"grant_type":"password"}"#.into(),
        )
        .await?
        .show();
    Ok(())
}

/// A minimal HTTPS client that goes through the proxy with CONNECT and trusts its CA.
struct Client {
    proxy: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

struct Answer {
    status: u16,
    cause: Option<String>,
    body: Value,
}

impl Answer {
    fn show(&self) {
        println!(
            "   → HTTP {} {} / {}",
            self.status,
            self.body["error"].as_str().unwrap_or(""),
            self.body["error_description"].as_str().unwrap_or("")
        );
        println!(
            "   grantdoctor-cause: {}",
            self.cause.as_deref().unwrap_or("(none)")
        );
        if let Some(top) = self.body["grantdoctor"]["causes"].get(0) {
            println!("   why:  {}", top["summary"].as_str().unwrap_or(""));
            for line in top["evidence"].as_array().into_iter().flatten() {
                println!("   seen: {}", line.as_str().unwrap_or(""));
            }
            if let Some(fix) = top["fix"].get(0) {
                println!("   fix:  {}", fix.as_str().unwrap_or(""));
            }
        }
        println!();
    }
}

impl Client {
    fn new(proxy: SocketAddr, ca: &Path) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in crate::tls::load_pem_certs(ca)? {
            roots.add(cert)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            proxy,
            tls: Arc::new(tls),
        })
    }

    async fn token(&self, host: &str, form: &[(&str, &str)]) -> anyhow::Result<Answer> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.request(
            host,
            "/services/oauth2/token",
            "application/x-www-form-urlencoded",
            body,
        )
        .await
    }

    async fn post_json(&self, host: &str, path: &str, body: Value) -> anyhow::Result<Answer> {
        self.request(host, path, "application/json", body.to_string())
            .await
    }

    async fn request(
        &self,
        host: &str,
        path: &str,
        content_type: &str,
        body: String,
    ) -> anyhow::Result<Answer> {
        let mut tcp = tokio::net::TcpStream::connect(self.proxy).await?;
        tcp.write_all(
            format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await?;
            head.push(byte[0]);
        }
        anyhow::ensure!(
            head.starts_with(b"HTTP/1.1 200"),
            "CONNECT refused: {}",
            String::from_utf8_lossy(&head)
        );
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = http::Request::post(path)
            .header("host", host)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(req).await?;
        let status = response.status().as_u16();
        let cause = response
            .headers()
            .get(crate::annotate::headers::CAUSE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            cause,
            body,
        })
    }
}
