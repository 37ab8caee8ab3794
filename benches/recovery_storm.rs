//! The storms of issue 6 as a benchmark, against the emulator, directly and through
//! grantdoctor in one run:
//!
//! - **recovery storm**: N concurrent refreshes with an evicted token of one user of an app
//!   whose JWT bearer key grantdoctor holds (coalescing off, so every refresh fails upstream).
//!   Direct, every caller fails; through grantdoctor every caller gets a token from one JWT
//!   exchange.
//! - **rotation storm**: N concurrent refreshes of one token of an app with refresh token
//!   rotation. Direct, they collide (E4) and revoke the family; through grantdoctor they
//!   share one upstream refresh.
//!
//! - **rotation storm across replicas**: the same over three grantdoctor replicas sharing one
//!   PostgreSQL store (`--store postgres://…`, a throwaway cluster the bench starts; skipped,
//!   and said so, where PostgreSQL is not installed), callers spread over the three.
//!
//! Reported: callers, upstream exchanges (from the emulator's request log), successes, p50/p99
//! caller latency. Run: `cargo bench --bench recovery_storm` (knob: `STORM_CALLERS`, 1000).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::{Running, free_addr, wait_for_port};

#[allow(dead_code)]
#[path = "../tests/common/postgres.rs"]
mod postgres;

const LOGIN: &str = "login.salesforce.com";
const WEB: &str = "3MVG9web";
const ALICE: &str = "alice@acme.com";
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const HOSTS: [&str; 2] = [LOGIN, "acme.my.salesforce.com"];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let callers: usize = std::env::var("STORM_CALLERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let emu = Process::emulator(
        dir.path(),
        &manifest.join("tests/fixtures/emulator/world.toml"),
    );
    let config = dir.path().join("grantdoctor.toml");
    std::fs::write(
        &config,
        format!(
            "[[recovery.jwt_bearer]]\nclient_id = \"{WEB}\"\nprivate_key = {:?}\nsubject = \"{ALICE}\"\n",
            manifest.join("tests/fixtures/jwt/app-private.pem")
        ),
    )
    .unwrap();
    let rescuing = Process::proxy(
        dir.path(),
        "gd-rescue",
        emu.addr,
        &config,
        &["--coalesce-refresh", "off"],
    );
    let guarding = Process::proxy(dir.path(), "gd-guard", emu.addr, &config, &[]);
    let direct = client(&dir.path().join("emu-certs/ca.pem"), None, emu.addr);
    let through_rescuing = client(
        &dir.path().join("gd-rescue/certs/ca.pem"),
        Some(rescuing.addr),
        emu.addr,
    );
    let through_guarding = client(
        &dir.path().join("gd-guard/certs/ca.pem"),
        Some(guarding.addr),
        emu.addr,
    );

    let mut rows = Vec::new();
    rt.block_on(async {
        // Six authorizations through grantdoctor: the first token is evicted, and known.
        let mut tokens = Vec::new();
        for _ in 0..6 {
            tokens.push(login(&through_rescuing).await);
        }
        let evicted = tokens.swap_remove(0);
        for (label, client) in [("direct", &direct), ("grantdoctor", &through_rescuing)] {
            clear(&direct).await;
            let run = storm(client, callers, |_| evicted.clone()).await;
            let log = requests(&direct).await;
            rows.push(row("recovery storm", label, callers, &run, &log, JWT_GRANT));
        }
        control(
            &direct,
            "PATCH",
            &format!("apps/{WEB}"),
            json!({"rotation": true}),
        )
        .await;
        for (label, client) in [("direct", &direct), ("grantdoctor", &through_guarding)] {
            let token = login(&direct).await;
            clear(&direct).await;
            let run = storm(client, callers, |_| token.clone()).await;
            let log = requests(&direct).await;
            rows.push(row(
                "rotation storm",
                label,
                callers,
                &run,
                &log,
                "refresh_token",
            ));
        }
        match postgres::Postgres::try_start() {
            None => println!("rotation storm across replicas: not run (no PostgreSQL here)"),
            Some(pg) => {
                let replicas: Vec<Process> = (0..3)
                    .map(|i| {
                        let name = format!("gd-replica-{i}");
                        std::fs::create_dir_all(dir.path().join(&name).join("data")).unwrap();
                        // One fingerprint key for the fleet, as one Secret would give it.
                        std::fs::write(
                            dir.path().join(&name).join("data/fingerprint.key"),
                            [3u8; 32],
                        )
                        .unwrap();
                        Process::proxy(
                            dir.path(),
                            &name,
                            emu.addr,
                            &config,
                            &["--store", &pg.url()],
                        )
                    })
                    .collect();
                let clients: Vec<reqwest::Client> = replicas
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        client(
                            &dir.path().join(format!("gd-replica-{i}/certs/ca.pem")),
                            Some(r.addr),
                            emu.addr,
                        )
                    })
                    .collect();
                let token = login(&direct).await;
                clear(&direct).await;
                let run = storm_over(&clients, callers, |_| token.clone()).await;
                let log = requests(&direct).await;
                rows.push(row(
                    "rotation storm",
                    "3 replicas, one PostgreSQL",
                    callers,
                    &run,
                    &log,
                    "refresh_token",
                ));
                drop(replicas);
            }
        }
    });
    println!("| storm | path | callers | upstream exchanges | callers answered 200 | p50 | p99 |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}

struct Run {
    ok: usize,
    latencies: Vec<Duration>,
}

impl Run {
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * p / 100.0).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

fn row(storm: &str, path: &str, callers: usize, run: &Run, log: &[Value], grant: &str) -> String {
    let upstream = log.iter().filter(|r| r["grant_type"] == grant).count();
    format!(
        "| {storm} | {path} | {callers} | {upstream} {} | {} | {:.1} ms | {:.1} ms |",
        if grant == JWT_GRANT { "JWT" } else { "refresh" },
        run.ok,
        run.pct(50.0),
        run.pct(99.0)
    )
}

async fn storm(client: &reqwest::Client, callers: usize, token: impl Fn(usize) -> String) -> Run {
    storm_over(std::slice::from_ref(client), callers, token).await
}

/// Callers spread round-robin over `clients`.
async fn storm_over(
    clients: &[reqwest::Client],
    callers: usize,
    token: impl Fn(usize) -> String,
) -> Run {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..callers {
        let (client, token) = (clients[i % clients.len()].clone(), token(i));
        tasks.spawn(async move {
            let started = Instant::now();
            let status = client
                .post(format!("https://{LOGIN}/services/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "grant_type=refresh_token&client_id={WEB}&refresh_token={token}"
                ))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (status, started.elapsed())
        });
    }
    let mut run = Run {
        ok: 0,
        latencies: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (status, latency) = done.unwrap();
        run.ok += usize::from(status == 200);
        run.latencies.push(latency);
    }
    run.latencies.sort();
    run
}

async fn control(client: &reqwest::Client, method: &str, path: &str, body: Value) -> Value {
    let response = client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("https://{LOGIN}/_emulator/{path}"),
        )
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

async fn clear(client: &reqwest::Client) {
    control(client, "DELETE", "requests", Value::Null).await;
}

async fn requests(client: &reqwest::Client) -> Vec<Value> {
    control(client, "GET", "requests", Value::Null)
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A web-server login for alice; returns the refresh token.
async fn login(client: &reqwest::Client) -> String {
    let code = control(
        client,
        "POST",
        "authorize",
        json!({"client_id": WEB, "username": ALICE, "scope": "api refresh_token",
            "redirect_uri": "https://app.example.com/callback"}),
    )
    .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = client
        .post(format!("https://{LOGIN}/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=authorization_code&code={code}&client_id={WEB}&client_secret=web-secret&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback"))
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    body["refresh_token"].as_str().unwrap().to_owned()
}

/// h2 through the proxy (one connection, as an SDK's pool would), or straight to the emulator.
fn client(ca: &Path, proxy: Option<SocketAddr>, emu: SocketAddr) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(120));
    builder = match proxy {
        Some(addr) => builder.proxy(reqwest::Proxy::all(format!("http://{addr}")).unwrap()),
        None => {
            let mut b = builder.no_proxy();
            for host in HOSTS {
                b = b.resolve(host, emu);
            }
            b
        }
    };
    builder.build().unwrap()
}

struct Process {
    /// Held so the process ends with the benchmark.
    _child: Running,
    addr: SocketAddr,
}

impl Process {
    fn emulator(dir: &Path, scenario: &Path) -> Self {
        let addr = free_addr();
        let child = Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
            .args([
                "emulate",
                "--log-format",
                "json",
                "--listen",
                &addr.to_string(),
            ])
            .arg("--ca-dir")
            .arg(dir.join("emu-certs"))
            .arg("--scenario")
            .arg(scenario)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self::ready(child, addr)
    }

    fn proxy(dir: &Path, name: &str, emu: SocketAddr, config: &PathBuf, extra: &[&str]) -> Self {
        let addr = free_addr();
        let mut command = Command::new(env!("CARGO_BIN_EXE_grantdoctor"));
        command
            .args(["run", "--log-format", "json", "--listen", &addr.to_string()])
            .args(["--admin", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--ca-dir")
            .arg(dir.join(name).join("certs"))
            .arg("--data-dir")
            .arg(dir.join(name).join("data"))
            .args(extra)
            .arg("--upstream-ca")
            .arg(dir.join("emu-certs/ca.pem"));
        for host in HOSTS {
            command.args(["--resolve", &format!("{host}:443={emu}")]);
        }
        Self::ready(command.stdout(Stdio::null()).spawn().unwrap(), addr)
    }

    fn ready(child: Child, addr: SocketAddr) -> Self {
        wait_for_port(addr);
        Self {
            _child: Running(child),
            addr,
        }
    }
}
