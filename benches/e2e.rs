//! End-to-end proxy benchmark: the same load against a local TLS origin (nginx) directly and
//! through grantdoctor, in one run, reported as ratios.
//!
//! Run: `cargo bench --bench e2e` (needs `nginx` on PATH: `apt-get install nginx-light`), or
//! `bash benches/peers/run.sh` to add mitmproxy as a peer (`E2E_MITMDUMP`).
//! Knobs: `E2E_SECONDS` (per scenario, default 5), `E2E_CONNECTIONS` (default 32),
//! `E2E_IDLE_CONNECTIONS` (held open for the memory figure, default 1000), `E2E_BASELINE`
//! (another grantdoctor binary, e.g. a build of the previous commit, run alongside as
//! "baseline" to compare two builds in one run), `E2E_ANNOTATE` (grantdoctor's `--annotate`),
//! `E2E_HUDSUCKER` (a hudsucker proxy that does nothing, `benches/peers/hudsucker-noop`),
//! `E2E_ONLY=get,token,rotation,tunnel,memory` (a subset of the scenarios).
//!
//! A variant of this build: `E2E_VARIANT_ARGS` (extra `run` arguments, split on whitespace)
//! starts a second grantdoctor of the same binary with them, reported as "variant" next to
//! the first, so the cost of an option is measured in one run (e.g.
//! `--ledger-sync write-behind`). In those arguments `{webhook}` stands for the URL of a
//! receiver inside the harness that answers 204 and counts what it gets.
//! `E2E_VARIANT_STREAM=1` also holds the variant's `GET /events/stream` (the operator page's
//! live feed) open for the whole run, read as fast as it comes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::{Running, free_addr, wait_for_port};

const INTERCEPTED: &str = "login.salesforce.com";
const TUNNELLED: &str = "bulk.example.test";
const BULK_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of the body grantdoctor answers a failed refresh of an unknown token with
/// (`invalid_grant` plus five causes with their texts), measured with curl.
const ANNOTATED_SIZE: usize = 3051;
static NEXT_TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: build-check only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Thousands of idle connections need as many descriptors here as in the proxy; the
    // children inherit the raised limit.
    let _ = grantdoctor::fd_limit::raise();
    let seconds: u64 = env_or("E2E_SECONDS", 5);
    let connections: usize = env_or("E2E_CONNECTIONS", 32);
    let idle_connections: usize = env_or("E2E_IDLE_CONNECTIONS", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let origin = Nginx::start(dir.path());
    let binary = Path::new(env!("CARGO_BIN_EXE_grantdoctor"));
    let mut proxies = vec![Proxy::grantdoctor(
        &dir.path().join("grantdoctor"),
        &origin,
        binary,
        "grantdoctor",
        &[],
    )];
    if let Ok(baseline) = std::env::var("E2E_BASELINE") {
        proxies.push(Proxy::grantdoctor(
            &dir.path().join("baseline"),
            &origin,
            Path::new(&baseline),
            "baseline",
            &[],
        ));
    }
    let variant_args: Option<Vec<String>> = std::env::var("E2E_VARIANT_ARGS")
        .ok()
        .map(|a| a.split_whitespace().map(str::to_owned).collect());
    let receiver = variant_args
        .as_ref()
        .filter(|args| args.iter().any(|a| a.contains("{webhook}")))
        .map(|_| rt.block_on(WebhookReceiver::start()));
    let mut stream = None;
    if let Some(args) = &variant_args {
        let args: Vec<String> = args
            .iter()
            .map(|a| match &receiver {
                Some(r) => a.replace("{webhook}", &r.url()),
                None => a.clone(),
            })
            .collect();
        let variant = Proxy::grantdoctor(
            &dir.path().join("variant"),
            &origin,
            binary,
            "variant",
            &args,
        );
        if std::env::var("E2E_VARIANT_STREAM").is_ok_and(|v| v == "1") {
            stream = Some(rt.block_on(StreamReader::start(variant.admin.unwrap())));
        }
        proxies.push(variant);
    }
    if let Ok(mitmdump) = std::env::var("E2E_MITMDUMP") {
        proxies.push(Proxy::mitmproxy(dir.path(), &origin, Path::new(&mitmdump)));
    }
    if let Ok(hudsucker) = std::env::var("E2E_HUDSUCKER") {
        proxies.push(Proxy::hudsucker(dir.path(), &origin, Path::new(&hudsucker)));
    }
    let duration = Duration::from_secs(seconds);
    let direct_tls = client_tls(&origin.ca_pem);
    let names: Vec<&str> = proxies.iter().map(|p| p.name).collect();
    let mut table = Table::new(&names);
    // `E2E_ONLY=get,token,rotation,tunnel,memory` runs a subset (for profiling one scenario).
    let only = std::env::var("E2E_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);

    let gets: &[(&str, bool)] = if want("get") {
        &[("keep-alive", true), ("new connection per request", false)]
    } else {
        &[]
    };
    for &(label, reuse) in gets {
        let direct = with_cpu(origin.pid(), None, || {
            rt.block_on(load(
                Route::Direct(origin.addr),
                direct_tls.clone(),
                connections,
                duration,
                reuse,
            ))
        });
        let through: Vec<Stats> = proxies
            .iter()
            .map(|p| {
                with_cpu(origin.pid(), Some(p.pid()), || {
                    rt.block_on(load(
                        Route::Proxy(p.addr, INTERCEPTED),
                        p.tls.clone(),
                        connections,
                        duration,
                        reuse,
                    ))
                })
            })
            .collect();
        table.rates(
            &format!("intercepted GET, {label}, {connections} conns"),
            &direct,
            &through,
        );
    }
    // One token-endpoint-shaped POST load to `path`: directly, and through every proxy.
    let token = |route: Route, tls: Tls, path, answer| {
        rt.block_on(load_of(
            route,
            tls,
            connections,
            duration,
            true,
            Exchange::Refresh(path, answer),
        ))
    };
    let direct_post = |path, answer| {
        with_cpu(origin.pid(), None, || {
            token(Route::Direct(origin.addr), direct_tls.clone(), path, answer)
        })
    };
    let through_post = |path, answer| -> Vec<Stats> {
        proxies
            .iter()
            .map(|p| {
                with_cpu(origin.pid(), Some(p.pid()), || {
                    token(
                        Route::Proxy(p.addr, INTERCEPTED),
                        p.tls.clone(),
                        path,
                        answer,
                    )
                })
            })
            .collect()
    };
    if want("token") {
        let failing = Answer::InvalidGrant;
        let direct_token = direct_post("/services/oauth2/token", failing);
        table.rates(
            &format!("failed refresh at the token endpoint (observe, diagnose, annotate), keep-alive, {connections} conns"),
            &direct_token,
            &through_post("/services/oauth2/token", failing),
        );
        table.rates(
            "the same POST to a path only forwarded (the proxy doing nothing)",
            &direct_token,
            &through_post("/not-the-token-endpoint", failing),
        );
        // The annotated answer is ~40 times the origin's: this row tells the cost of the
        // bigger answer apart from the cost of the work.
        table.rates(
            &format!("the same POST only forwarded, the origin answering {ANNOTATED_SIZE} bytes (the annotated answer's size)"),
            &direct_post("/not-the-token-endpoint-annotated-size", failing),
            &through_post("/not-the-token-endpoint-annotated-size", failing),
        );
    }
    if want("rotation") {
        // Every answer issues a new refresh token: the exchanges whose ledger write is
        // durable (the answer waits for its commit).
        let path = "/services/oauth2/token?answer=rotate";
        table.rates(
            &format!("successful refresh, rotation on (a new refresh token in every answer), keep-alive, {connections} conns"),
            &direct_post(path, Answer::Rotated),
            &through_post(path, Answer::Rotated),
        );
        let path = "/services/oauth2/token?answer=mix";
        table.rates(
            "refreshes of which one in ten fails with invalid_grant, the rest rotating",
            &direct_post(path, Answer::OneInTenFails),
            &through_post(path, Answer::OneInTenFails),
        );
    }
    if want("tunnel") {
        let direct = rt.block_on(bulk(
            Route::Direct(origin.addr),
            direct_tls.clone(),
            4,
            duration,
        ));
        let tunnelled: Vec<f64> = proxies
            .iter()
            .map(|p| {
                rt.block_on(bulk(
                    Route::Proxy(p.addr, TUNNELLED),
                    direct_tls.clone(),
                    4,
                    duration,
                ))
            })
            .collect();
        table.bulk("blind tunnel bulk download, 4 streams", direct, &tunnelled);
    }
    let after_load: Vec<(u64, u64)> = proxies.iter().map(|p| p.memory_kib()).collect();
    // Connections that only completed CONNECT and the TLS handshake first: what a client
    // pool holds open; measured first, before freed memory of the other kind can be reused.
    let (bare, idle): (Vec<Held>, Vec<Held>) = if want("memory") {
        proxies
            .iter()
            .map(|p| {
                let bare = rt.block_on(hold_connections(p, idle_connections, false));
                std::thread::sleep(Duration::from_secs(1));
                (
                    bare,
                    rt.block_on(hold_connections(p, idle_connections, true)),
                )
            })
            .unzip()
    } else {
        (Vec::new(), Vec::new())
    };

    table.print();
    if let Some(receiver) = &receiver {
        println!(
            "\nwebhook receiver: {} deliveries received",
            receiver.received.load(Ordering::Relaxed)
        );
    }
    if let Some(variant) = proxies.iter().find(|p| p.name == "variant")
        && let Some(admin) = variant.admin
    {
        let metrics = fetch_metrics(admin);
        println!(
            "variant's webhook counters: delivered {}, dropped {}",
            metric_sum(&metrics, "grantdoctor_webhook_deliveries_total"),
            metric_sum(&metrics, "grantdoctor_webhook_dropped_total"),
        );
    }
    if let Some(stream) = &stream {
        println!(
            "/events/stream reader: {} events, {} reported missed (lagged), {:.1} MiB",
            stream.events.load(Ordering::Relaxed),
            stream.missed.load(Ordering::Relaxed),
            mib(stream.bytes.load(Ordering::Relaxed) / 1024)
        );
    }
    println!("\n| memory | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    println!(
        "| RSS after the loads (peak) | {} |",
        after_load
            .iter()
            .map(|(rss, peak)| format!("{:.1} MiB ({:.1} MiB)", mib(*rss), mib(*peak)))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for (label, held) in [
        ("CONNECT and TLS, then nothing", &bare),
        ("keep-alive after one request each", &idle),
    ] {
        if held.is_empty() {
            continue;
        }
        println!(
            "| RSS holding {idle_connections} intercepted connections, {label}: total (before), per connection, time to open | {} |",
            held.iter()
                .map(|h| format!(
                    "{:.1} MiB ({:.1} MiB), {:.1} KiB, {:.1} s",
                    mib(h.holding),
                    mib(h.before),
                    h.holding.saturating_sub(h.before) as f64 / idle_connections.max(1) as f64,
                    h.opening.as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Rows of one run: each scenario direct and through every proxy, as ratios to direct.
struct Table {
    names: Vec<String>,
    rows: Vec<String>,
    cpu_rows: Vec<String>,
}

impl Table {
    fn new(names: &[&str]) -> Self {
        Self {
            names: names.iter().map(|n| n.to_string()).collect(),
            rows: Vec::new(),
            cpu_rows: Vec::new(),
        }
    }

    fn rates(&mut self, scenario: &str, direct: &Stats, through: &[Stats]) {
        let cells: Vec<String> = through
            .iter()
            .map(|s| {
                format!(
                    "{:.0} req/s, **{:.3}×**, {:.2} / {:.2} ms",
                    s.rate(),
                    s.rate() / direct.rate(),
                    s.pct(50.0),
                    s.pct(99.0)
                )
            })
            .collect();
        self.rows.push(format!(
            "| {scenario} | {:.0} req/s, {:.2} / {:.2} ms | {}{} |",
            direct.rate(),
            direct.pct(50.0),
            direct.pct(99.0),
            cells.join(" | "),
            self.versus(&through.iter().map(Stats::rate).collect::<Vec<_>>()),
        ));
        let cpu = |s: &Stats| s.cpu.map_or_else(|| "n/a".to_owned(), |c| c.to_string());
        self.cpu_rows.push(format!(
            "| {scenario} | {} | {} |",
            cpu(direct),
            through.iter().map(cpu).collect::<Vec<_>>().join(" | ")
        ));
    }

    fn bulk(&mut self, scenario: &str, direct: f64, through: &[f64]) {
        let cells: Vec<String> = through
            .iter()
            .map(|t| format!("{t:.0} MiB/s, **{:.2}×**", t / direct))
            .collect();
        self.rows.push(format!(
            "| {scenario} | {direct:.0} MiB/s | {}{} |",
            cells.join(" | "),
            self.versus(through)
        ));
    }

    /// The first proxy after grantdoctor that is not its variant.
    fn peer(&self) -> Option<usize> {
        (1..self.names.len()).find(|&i| self.names[i] != "variant")
    }

    fn variant(&self) -> Option<usize> {
        self.names.iter().position(|n| n == "variant")
    }

    /// With a peer: grantdoctor's rate over the peer's; with a variant: the variant's rate
    /// over grantdoctor's.
    fn versus(&self, values: &[f64]) -> String {
        let mut out = String::new();
        if let Some(peer) = self.peer() {
            out.push_str(&format!(" | **{:.1}×**", values[0] / values[peer]));
        }
        if let Some(variant) = self.variant() {
            out.push_str(&format!(" | **{:.3}×**", values[variant] / values[0]));
        }
        out
    }

    fn print(&self) {
        let mut versus = String::new();
        if let Some(peer) = self.peer() {
            versus.push_str(&format!(" | {} ÷ {}", self.names[0], self.names[peer]));
        }
        if self.variant().is_some() {
            versus.push_str(&format!(" | variant ÷ {}", self.names[0]));
        }
        let extra = versus.matches(" | ").count();
        println!(
            "\n| scenario (rate, ratio to direct, p50 / p99) | direct | {}{versus} |",
            self.names.join(" | ")
        );
        println!("|---|---|{}", "---|".repeat(self.names.len() + extra));
        for row in &self.rows {
            println!("{row}");
        }
        if self.cpu_rows.is_empty() {
            return;
        }
        println!(
            "\n| CPU per request, µs: load generator / origin / **proxy** | direct | {} |",
            self.names.join(" | ")
        );
        println!("|---|---|{}", "---|".repeat(self.names.len()));
        for row in &self.cpu_rows {
            println!("{row}");
        }
    }
}

/// The proxy's RSS in KiB with connections held open, and before they were opened.
struct Held {
    before: u64,
    holding: u64,
    opening: Duration,
}

/// Opens `n` intercepted connections (CONNECT, then TLS through it; then one request each when
/// `request`) and reads the proxy's RSS while all are open.
async fn hold_connections(proxy: &Proxy, n: usize, request: bool) -> Held {
    let before = proxy.memory_kib().0;
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(50) {
        let opened: Vec<_> = (0..50.min(n - chunk * 50))
            .map(|_| {
                let tls = proxy.tls.clone();
                let route = Route::Proxy(proxy.addr, INTERCEPTED);
                tokio::spawn(async move {
                    if !request {
                        return (Some(open(route, &tls).await), None);
                    }
                    let mut sender = handshake(route, &tls).await;
                    send(&mut sender, Exchange::Get("/hello")).await;
                    (None, Some(sender))
                })
            })
            .collect();
        for task in opened {
            held.push(task.await.unwrap());
        }
    }
    let opening = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let holding = proxy.memory_kib().0;
    drop(held);
    Held {
        before,
        holding,
        opening,
    }
}

/// A webhook receiver that answers every request 204 and counts them.
struct WebhookReceiver {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
}

impl WebhookReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let count = count.clone();
                            async move {
                                let _ = req.into_body().collect().await;
                                count.fetch_add(1, Ordering::Relaxed);
                                let answer = http::Response::builder()
                                    .status(204)
                                    .body(http_body_util::Empty::<Bytes>::new())
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(answer)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

/// One reader of `/events/stream`, counting what it gets.
#[derive(Default)]
struct StreamReader {
    events: AtomicU64,
    missed: AtomicU64,
    bytes: AtomicU64,
}

impl StreamReader {
    /// Connects, checks the stream opened, and reads it in a task until the run ends.
    async fn start(admin: SocketAddr) -> Arc<Self> {
        let stream = TcpStream::connect(admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get("/events/stream")
            .header("host", admin.to_string())
            .header("accept", "text/event-stream")
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200, "/events/stream");
        let reader = Arc::new(Self::default());
        let counts = reader.clone();
        tokio::spawn(async move {
            let _sender = sender;
            let mut body = response.into_body();
            let mut pending = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                counts.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                pending.extend_from_slice(&data);
                let mut start = 0;
                while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                    let line = &pending[start..start + end];
                    if line.starts_with(b"data: ") {
                        counts.events.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(rest) = line.strip_prefix(b": lagged, ") {
                        let missed = String::from_utf8_lossy(rest);
                        let n = missed.split(' ').next().and_then(|n| n.parse().ok());
                        counts.missed.fetch_add(n.unwrap_or(0), Ordering::Relaxed);
                    }
                    start += end + 1;
                }
                pending.drain(..start);
            }
        });
        reader
    }
}

/// The admin port's `/metrics` text.
fn fetch_metrics(admin: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// The sum over every label set of a counter in `/metrics` text.
fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
enum Route {
    Direct(SocketAddr),
    /// Through the proxy with CONNECT to this host (port 443).
    Proxy(SocketAddr, &'static str),
}

struct Stats {
    requests: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// CPU time per request of each process, when measured.
    cpu: Option<Cpu>,
}

/// CPU time per request, µs: throughput moves with whatever else the two cores are doing,
/// CPU per request much less, and it shows who pays for what.
#[derive(Clone, Copy)]
struct Cpu {
    client: f64,
    origin: f64,
    proxy: Option<f64>,
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} / {:.1}", self.client, self.origin)?;
        match self.proxy {
            Some(proxy) => write!(f, " / **{proxy:.1}**"),
            None => Ok(()),
        }
    }
}

/// CPU time of all of a process's threads so far (`/proc/PID/task/*/schedstat`, in ns).
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Runs a load and adds the CPU time per request of the load generator (this process), the
/// origin, and the proxy when there is one.
fn with_cpu(origin: u32, proxy: Option<u32>, run: impl FnOnce() -> Stats) -> Stats {
    let pids = [Some(std::process::id()), Some(origin), proxy];
    let before: Vec<Option<u64>> = pids.iter().map(|p| p.and_then(cpu_ns)).collect();
    let mut stats = run();
    let per_request = |i: usize| -> Option<f64> {
        let spent = pids[i].and_then(cpu_ns)? - before[i]?;
        Some(spent as f64 / 1000.0 / stats.requests.max(1) as f64)
    };
    if let (Some(client), Some(origin)) = (per_request(0), per_request(1)) {
        stats.cpu = Some(Cpu {
            client,
            origin,
            proxy: per_request(2),
        });
    }
    stats
}

impl Stats {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

type Tls = Arc<rustls::ClientConfig>;

fn client_tls(ca: &Path) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Full handshakes on every new connection, like a fresh client process.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn open(route: Route, tls: &Tls) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (stream, sni) = match route {
        Route::Direct(addr) => (TcpStream::connect(addr).await.unwrap(), INTERCEPTED),
        Route::Proxy(addr, host) => {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            (stream, host)
        }
    };
    stream.set_nodelay(true).unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, stream)
        .await
        .unwrap()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// What each request of a load is.
#[derive(Clone, Copy)]
enum Exchange {
    Get(&'static str),
    /// A refresh-token form POST to this path, answered as the origin is told to.
    Refresh(&'static str, Answer),
}

/// How the origin answers a refresh (`?answer=` on the token endpoint picks it).
#[derive(Clone, Copy)]
enum Answer {
    /// 400 invalid_grant.
    InvalidGrant,
    /// 200 with a new refresh token, different each time.
    Rotated,
    /// One in ten (by a hash of nginx's request id) as `InvalidGrant`, the rest `Rotated`.
    OneInTenFails,
}

impl Answer {
    fn admits(self, status: u16) -> bool {
        match self {
            Self::InvalidGrant => status == 400,
            Self::Rotated => status == 200,
            Self::OneInTenFails => status == 200 || status == 400,
        }
    }
}

async fn handshake(route: Route, tls: &Tls) -> Sender {
    let stream = open(route, tls).await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(sender: &mut Sender, exchange: Exchange) -> usize {
    let (req, answer) = match exchange {
        Exchange::Get(path) => (
            http::Request::get(path)
                .header("host", INTERCEPTED)
                .body(Full::default())
                .unwrap(),
            None,
        ),
        // A different token each time, as from many users: identical concurrent refreshes
        // would be coalesced into one upstream request and measure that instead.
        Exchange::Refresh(path, answer) => (
            http::Request::post(path)
                .header("host", INTERCEPTED)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(format!(
                    "grant_type=refresh_token&client_id=3MVG9bench&refresh_token=5Aep861bench{}",
                    NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ))))
                .unwrap(),
            Some(answer),
        ),
    };
    let response = sender.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    match answer {
        Some(answer) => assert!(answer.admits(status), "refresh answered {status}"),
        None => assert_eq!(status, 200),
    }
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

async fn load(
    route: Route,
    tls: Tls,
    connections: usize,
    duration: Duration,
    reuse: bool,
) -> Stats {
    load_of(
        route,
        tls,
        connections,
        duration,
        reuse,
        Exchange::Get("/hello"),
    )
    .await
}

async fn load_of(
    route: Route,
    tls: Tls,
    connections: usize,
    duration: Duration,
    reuse: bool,
    exchange: Exchange,
) -> Stats {
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut sender = if reuse {
                    Some(handshake(route, &tls).await)
                } else {
                    None
                };
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match sender.as_mut() {
                        Some(sender) => send(sender, exchange).await,
                        None => send(&mut handshake(route, &tls).await, exchange).await,
                    };
                    latencies.push(t.elapsed().as_micros() as u32);
                }
                latencies
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    for worker in workers {
        latencies_us.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Stats {
        requests: latencies_us.len(),
        elapsed,
        latencies_us,
        cpu: None,
    }
}

/// MiB/s over `streams` parallel connections repeatedly downloading the bulk file.
async fn bulk(route: Route, tls: Tls, streams: usize, duration: Duration) -> f64 {
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut sender = handshake(route, &tls).await;
                let mut bytes = 0usize;
                while Instant::now() < deadline {
                    bytes += send(&mut sender, Exchange::Get("/files/bulk")).await;
                }
                bytes
            })
        })
        .collect();
    let mut total = 0usize;
    for worker in workers {
        total += worker.await.unwrap();
    }
    total as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64()
}

struct Nginx {
    child: Running,
    addr: SocketAddr,
    /// The same server on a second port, where tunnelled traffic goes: a proxy can tell the
    /// two apart by address.
    tunnel_addr: SocketAddr,
    ca_pem: PathBuf,
}

impl Nginx {
    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn start(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: with rcgen's default name on both, OpenSSL clients (mitmproxy) take
        // the leaf for self-signed.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "benchmark origin CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf_params =
            CertificateParams::new(vec![INTERCEPTED.to_owned(), TUNNELLED.to_owned()]).unwrap();
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, INTERCEPTED);
        let leaf = leaf_params.signed_by(&key, &issuer).unwrap();
        let ca_pem = dir.join("origin-ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        std::fs::write(dir.join("origin.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("origin.key"), key.serialize_pem()).unwrap();
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("files/bulk"), vec![b'x'; BULK_BYTES]).unwrap();
        let port = free_addr().port();
        let tunnel_addr = free_addr();
        let tunnel_port = tunnel_addr.port();
        let d = dir.display();
        let sized = {
            let head = r#"{"error":"invalid_grant","error_description":"expired access/refresh token","padding":""#;
            format!("{head}{}\"}}", "x".repeat(ANNOTATED_SIZE - head.len() - 2))
        };
        // A refresh token of Salesforce's length, new in every answer ($request_id).
        let rotated = r#"{"access_token":"00Dbench!AQ0AQ$request_id","refresh_token":"5Aep861bench.rotated.$request_id$request_id","instance_url":"https://login.salesforce.com","token_type":"Bearer","issued_at":"1764633600000","scope":"api refresh_token"}"#;
        let conf = format!(
            "daemon off; worker_processes 1; master_process off; pid {d}/nginx.pid; error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;
  uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;
  keepalive_requests 10000000;
  split_clients \"${{request_id}}\" $one_in_ten {{ 10% fail; * rotate; }}
  map $arg_answer $answer {{ default fail; rotate rotate; mix $one_in_ten; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    listen 127.0.0.1:{tunnel_port} ssl http2;
    ssl_certificate {d}/origin.pem; ssl_certificate_key {d}/origin.key;
    location = /hello {{ return 200 \"hello from origin\\n\"; }}
    location = /services/oauth2/token {{
      default_type application/json;
      if ($answer = rotate) {{ return 200 '{rotated}'; }}
      return 400 '{{\"error\":\"invalid_grant\",\"error_description\":\"expired access/refresh token\"}}';
    }}
    location = /not-the-token-endpoint {{ default_type application/json; return 400 '{{\"error\":\"invalid_grant\",\"error_description\":\"expired access/refresh token\"}}'; }}
    location = /not-the-token-endpoint-annotated-size {{ default_type application/json; return 400 '{sized}'; }}
    location /files/ {{ alias {d}/files/; }}
  }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx on PATH (apt-get install nginx-light)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for_port(addr);
        Self {
            child: Running(child),
            addr,
            tunnel_addr,
            ca_pem,
        }
    }
}

/// A proxy under test, running until dropped.
struct Proxy {
    name: &'static str,
    child: Running,
    addr: SocketAddr,
    /// grantdoctor's admin listener.
    admin: Option<SocketAddr>,
    /// What a client trusts to talk through it.
    tls: Tls,
}

impl Proxy {
    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn grantdoctor(
        dir: &Path,
        origin: &Nginx,
        binary: &Path,
        name: &'static str,
        extra: &[String],
    ) -> Self {
        let origin_ca = origin.ca_pem.clone();
        let (tunnel, origin) = (origin.tunnel_addr, origin.addr);
        let addr = free_addr();
        let admin = free_addr();
        let child = Command::new(binary)
            .args(["run", "--log-format", "json", "--listen", &addr.to_string()])
            .args(["--admin", &admin.to_string(), "--max-connections", "8192"])
            .arg("--ca-dir")
            .arg(dir.join("certs"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--upstream-ca")
            .arg(origin_ca)
            .args(["--resolve", &format!("{INTERCEPTED}:443={origin}")])
            .args(["--resolve", &format!("{TUNNELLED}:443={tunnel}")])
            .args(
                std::env::var("E2E_ANNOTATE")
                    .map(|mode| vec!["--annotate".to_owned(), mode])
                    .unwrap_or_default(),
            )
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(addr);
        wait_for_port(admin);
        Self {
            name,
            child: Running(child),
            addr,
            admin: Some(admin),
            tls: client_tls(&dir.join("certs/ca.pem")),
        }
    }

    /// mitmdump with `benches/peers/grantdoctor_addon.py`: intercepting the Salesforce host,
    /// passing the bulk host through untouched, upstream verified against the origin's CA.
    fn mitmproxy(dir: &Path, origin: &Nginx, mitmdump: &Path) -> Self {
        let (tunnel, origin) = (origin.tunnel_addr, origin.addr);
        let addr = free_addr();
        let confdir = dir.join("mitmproxy");
        let addon =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/grantdoctor_addon.py");
        let child = Command::new(mitmdump)
            .args(["--quiet", "--listen-host", "127.0.0.1"])
            .args(["--listen-port", &addr.port().to_string()])
            .arg("--set")
            .arg(format!("confdir={}", confdir.display()))
            .arg("--set")
            .arg(format!(
                "ssl_verify_upstream_trusted_ca={}",
                dir.join("origin-ca.pem").display()
            ))
            // With the default eager strategy ignore_hosts sees the address the addon mapped.
            .args([
                "--ignore-hosts",
                &format!("^127\\.0\\.0\\.1:{}$", tunnel.port()),
            ])
            .arg("-s")
            .arg(addon)
            .env(
                "GD_RESOLVE",
                format!("{INTERCEPTED}:443={origin},{TUNNELLED}:443={tunnel}"),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("mitmdump runs");
        wait_for_port(addr);
        let ca = confdir.join("mitmproxy-ca-cert.pem");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ca.exists() {
            assert!(Instant::now() < deadline, "mitmproxy wrote no CA");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            name: "mitmproxy",
            child: Running(child),
            addr,
            admin: None,
            tls: client_tls(&ca),
        }
    }

    /// `benches/peers/hudsucker-noop`: hudsucker with handlers that do nothing, the same
    /// interception and tunnel split and the same `--resolve` mapping as grantdoctor.
    fn hudsucker(dir: &Path, origin: &Nginx, binary: &Path) -> Self {
        let (tunnel, origin_addr) = (origin.tunnel_addr, origin.addr);
        let addr = free_addr();
        let ca = dir.join("hudsucker-ca.pem");
        let child = Command::new(binary)
            .args(["--listen", &addr.to_string(), "--intercept", INTERCEPTED])
            .arg("--ca-out")
            .arg(&ca)
            .arg("--origin-ca")
            .arg(&origin.ca_pem)
            .args(["--resolve", &format!("{INTERCEPTED}:443={origin_addr}")])
            .args(["--resolve", &format!("{TUNNELLED}:443={tunnel}")])
            .stdout(Stdio::null())
            .spawn()
            .expect("hudsucker-noop runs");
        wait_for_port(addr);
        Self {
            name: "hudsucker (does nothing)",
            child: Running(child),
            addr,
            admin: None,
            tls: client_tls(&ca),
        }
    }

    /// (RSS, peak RSS) in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}
