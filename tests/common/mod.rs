//! Shared test fixtures: a local TLS origin with its own CA (standing in for Salesforce and
//! for other hosts), the real grantdoctor binary on port 0, and clients configured for both.
#![allow(dead_code, unused_imports)]

pub mod emulator;
pub mod jwt;
pub mod org;
pub mod origin;
pub mod postgres;
pub mod raw;
pub mod stack;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use emulator::EmulatorProcess;
pub use origin::Origin;

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A grantdoctor process whose JSON log lines are collected, killed when dropped.
pub struct Spawned {
    child: Child,
    pub addr: SocketAddr,
    /// The admin listener, when the process has one.
    pub admin: Option<SocketAddr>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    /// SIGTERM, then waits for the process to exit (graceful shutdown).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the process did not exit after SIGTERM");
    }

    /// Runs the binary with `args` and waits for its `listening` event.
    pub fn start(args: &[String]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
            .args(args)
            .env(
                "RUST_LOG",
                "debug,hyper=warn,hyper_util=warn,rustls=warn,h2=warn",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the grantdoctor binary starts");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && v["event"] == "listening"
                    {
                        let _ = tx.send((
                            v["addr"].as_str().unwrap().to_owned(),
                            v["admin"].as_str().map(str::to_owned),
                        ));
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let (addr, admin) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("grantdoctor logs its listening address");
        Self {
            child,
            addr: addr.parse().unwrap(),
            admin: admin.map(|a| a.parse().unwrap()),
            lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines so far, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("log line is JSON: {l}")))
            .collect()
    }

    /// Waits until an event matching `pred` is logged.
    pub fn wait_for_event(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no matching event; got {:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn raw_log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy, running with its own CA directory, until dropped.
pub struct ProxyProcess {
    pub process: Spawned,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for ProxyProcess {
    type Target = Spawned;
    fn deref(&self) -> &Spawned {
        &self.process
    }
}

impl ProxyProcess {
    /// Starts `grantdoctor run` with `args` added to a port-0 listener and a fresh CA dir.
    pub fn start(args: &[String]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), args)
    }

    /// The same, keeping CA and data in `dir` (a restart reuses it).
    pub fn start_in(dir: tempfile::TempDir, args: &[String]) -> Self {
        let mut all: Vec<String> = vec![
            "run".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--ca-dir".into(),
            dir.path().join("certs").display().to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--log-format".into(),
            "json".into(),
        ];
        all.extend_from_slice(args);
        let process = Spawned::start(&all);
        Self {
            addr: process.addr,
            process,
            dir,
        }
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }
}

/// Arguments that send `hosts` on port 443 to the origin and trust its CA upstream.
pub fn route_to(origin: &Origin, hosts: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--upstream-ca".to_owned(),
        origin.ca_pem.display().to_string(),
    ];
    for host in hosts {
        args.push("--resolve".into());
        args.push(format!("{host}:443={}", origin.addr));
    }
    args
}

/// A reqwest client through `proxy` that trusts the PEM files given.
pub fn client_via(proxy: &ProxyProcess, trust: &[&Path], alpn_h2: bool) -> reqwest::Client {
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for path in trust {
        let pem = std::fs::read(path).unwrap();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = if alpn_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let mut builder = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.proxy_url()).unwrap())
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(60));
    if !alpn_h2 {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

use rustls_pki_types::pem::PemObject;

/// Reads a process's resident-set high-water mark in KiB (Linux).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

/// Sends raw bytes to `addr` and returns everything read until the peer closes.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
