//! The defects an attack run found, each held by a test against the real binary: drain,
//! connection limits, crash-safe rotations, disk full, padded refreshes, idle and partial
//! connections, descriptor exhaustion, stream cancels, credentials, loops, readiness, bad
//! chunked bodies, oversized heads, and the emulator's hung-up refreshes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::raw::{admin_get, healthy};
use common::stack::Stack;
use common::{Origin, ProxyProcess, client_via, raw_exchange, route_to};
use serde_json::json;

const LOGIN: &str = "login.salesforce.com";
const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";

fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let (_, text) = admin_get(admin, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// Sends `CONNECT authority` on a new connection and returns it with the status line.
fn connect(proxy: SocketAddr, authority: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // One write: a proxy that refuses may have closed by the time a second one goes.
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    (stream, text.lines().next().unwrap_or_default().to_owned())
}

fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_every_in_flight_intercepted_request_finish_and_readyz_fails_at_once() {
    let origin = Origin::start();
    let mut proxy = ProxyProcess::start(&route_to(&origin, &[LOGIN]));
    let admin = proxy.admin.unwrap();
    let client = client_via(&proxy, &[&proxy.ca_pem()], false);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let client = client.clone();
        tasks.spawn(async move {
            let response = client.get(format!("https://{LOGIN}/slow")).send().await?;
            response.text().await
        });
    }
    // Every request is on its intercepted connection (the origin answers after 1.5 s) when
    // the signal comes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::task::spawn_blocking(move || metric(admin, "grantdoctor_active_connections "))
        .await
        .unwrap()
        < Some(200.0)
    {
        assert!(Instant::now() < deadline, "200 connections never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    kill(proxy.pid(), "-TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = tokio::task::spawn_blocking(move || admin_get(admin, "/readyz"))
        .await
        .unwrap();
    assert_eq!(
        ready,
        Some((503, "draining\n".to_owned())),
        "/readyz fails as soon as the drain starts"
    );
    let mut completed = 0;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(body) if body == "slow but sure" => completed += 1,
            other => panic!("an in-flight request was lost: {other:?}"),
        }
    }
    assert_eq!(completed, 200);
    let status = proxy.process.terminate();
    assert!(status.success(), "{status:?}");
    assert!(proxy.raw_log().contains("\"drained\""));
}

#[test]
fn tunnels_count_against_max_connections_until_they_close() {
    let origin = Origin::start();
    let mut args = route_to(&origin, &[LOGIN, "origin.test"]);
    args.extend(["--max-connections".into(), "4".into()]);
    let proxy = ProxyProcess::start(&args);
    let admin = proxy.admin.unwrap();
    let mut open = Vec::new();
    for authority in [
        "origin.test:443",
        "origin.test:443",
        "login.salesforce.com:443",
        "login.salesforce.com:443",
    ] {
        let (stream, status) = connect(proxy.addr, authority);
        assert!(status.contains(" 200"), "{authority}: {status}");
        open.push(stream);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(metric(admin, "grantdoctor_active_connections "), Some(4.0));
    let (_, refused) = connect(proxy.addr, "origin.test:443");
    assert!(refused.contains(" 503"), "the fifth connection: {refused}");
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(admin, "grantdoctor_active_connections ") != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "closed tunnels give their places back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, again) = connect(proxy.addr, "origin.test:443");
    assert!(again.contains(" 200"), "{again}");
}

#[tokio::test]
async fn a_rotation_survives_kill_9_right_after_the_answer() {
    let mut stack = Stack::start(&[]);
    stack
        .emu
        .control("PATCH", "apps/3MVG9web", json!({"rotation": true}))
        .await;
    for _ in 0..3 {
        let first = stack
            .emu
            .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
            .await["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let rotated = stack.refresh(LOGIN, WEB, &first).await;
        assert_eq!(rotated.status, 200, "{}", rotated.body);
        let newest = rotated.body["refresh_token"].as_str().unwrap().to_owned();
        kill(stack.proxy.pid(), "-KILL");
        stack.restart_proxy();
        let stale = stack.refresh(LOGIN, WEB, &first).await;
        assert_eq!(stale.status, 400);
        assert_eq!(
            stale
                .headers
                .get("grantdoctor-blocked")
                .map(|v| v.to_str().unwrap()),
            Some("rotated-refresh-token"),
            "the restarted proxy knows the rotation"
        );
        let next = stack.refresh(LOGIN, WEB, &newest).await;
        assert_eq!(next.status, 200, "the family is intact: {}", next.body);
    }
}

/// A tiny tmpfs for the data directory: the disk can be filled for real.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "this test mounts a 2 MiB tmpfs to fill a disk for real: it needs root (as CI has)"
        );
        Self(dir.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_keeps_the_rows_retries_them_and_reports_degraded() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let _disk = SmallDisk::mount(&data);
    let emu = common::EmulatorProcess::start();
    let mut args = vec![
        "--upstream-ca".to_owned(),
        emu.ca_pem().display().to_string(),
    ];
    for host in common::emulator::HOSTS {
        args.push("--resolve".into());
        args.push(format!("{host}:443={}", emu.addr));
    }
    let proxy = ProxyProcess::start_in(base, &args);
    let admin = proxy.admin.unwrap();
    let client = client_via(&proxy, &[&proxy.ca_pem()], false);
    emu.control("PATCH", "apps/3MVG9web", json!({"rotation": true}))
        .await;
    // Fill the disk.
    let filler = data.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    drop(file);
    let refresh = |token: String| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("https://{LOGIN}/services/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(common::emulator::encode(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", WEB),
                    ("refresh_token", &token),
                ]))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_str(&response.text().await.unwrap()).unwrap();
            (status, body)
        }
    };
    let mut rotated = Vec::new();
    for _ in 0..20 {
        let first = emu
            .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
            .await["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, body) = refresh(first.clone()).await;
        assert_eq!(status, 200, "traffic flows while the disk is full: {body}");
        rotated.push(first);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = admin_get(admin, "/readyz").unwrap();
        if ready.1.starts_with("degraded: ledger") {
            assert_eq!(ready.0, 200, "degraded is still ready");
            break;
        }
        assert!(Instant::now() < deadline, "never degraded: {ready:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metric(admin, "grantdoctor_ledger_write_errors_total ").unwrap() >= 1.0);
    let warned = proxy
        .events()
        .iter()
        .filter(|e| e["event"] == "ledger_write_failed")
        .count();
    assert_eq!(warned, 1, "one warning per outage");
    // Room again: the kept rows land, readiness returns.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while admin_get(admin, "/readyz").unwrap().1 != "ok\n" {
        assert!(Instant::now() < deadline, "the retry never landed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(proxy.raw_log().contains("ledger_write_recovered"));
    // After a restart every rotation made while the disk was full is known.
    let mut proxy = proxy;
    proxy.process.terminate();
    let dir = std::mem::replace(&mut proxy.dir, tempfile::tempdir().unwrap());
    let proxy = ProxyProcess::start_in(dir, &args);
    let client = client_via(&proxy, &[&proxy.ca_pem()], false);
    for old in rotated {
        let response = client
            .post(format!("https://{LOGIN}/services/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(common::emulator::encode(&[
                ("grant_type", "refresh_token"),
                ("client_id", WEB),
                ("refresh_token", &old),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response
                .headers()
                .get("grantdoctor-blocked")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some("rotated-refresh-token".to_owned())
        );
    }
}

#[tokio::test]
async fn a_padded_refresh_of_a_rotated_token_is_refused_not_forwarded() {
    let stack = Stack::start(&[]);
    stack
        .emu
        .control("PATCH", "apps/3MVG9web", json!({"rotation": true}))
        .await;
    let first = stack
        .emu
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = stack.refresh(LOGIN, WEB, &first).await;
    let newest = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    let pad = "a".repeat(70 * 1024);
    let padded = stack
        .token(
            LOGIN,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", WEB),
                ("refresh_token", &first),
                ("pad", &pad),
            ],
        )
        .await;
    assert_eq!(padded.status, 400);
    assert_eq!(padded.body["error"], "invalid_request", "{}", padded.body);
    assert!(
        padded.body["error_description"]
            .as_str()
            .unwrap()
            .contains("over 65536 bytes")
    );
    let next = stack.refresh(LOGIN, WEB, &newest).await;
    assert_eq!(
        next.status, 200,
        "the family was not revoked: {}",
        next.body
    );
}

fn intercepted_tls(
    proxy: &ProxyProcess,
    alpn: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let (stream, status) = connect(proxy.addr, "login.salesforce.com:443");
    assert!(status.contains(" 200"), "{status}");
    let tls = common::raw::client_tls(&proxy.ca_pem(), &[alpn]);
    let conn = rustls::ClientConnection::new(tls, LOGIN.try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

#[test]
fn an_idle_intercepted_connection_is_closed_after_the_header_timeout() {
    let origin = Origin::start();
    let mut args = route_to(&origin, &[LOGIN]);
    args.extend(["--header-timeout".into(), "1".into()]);
    let proxy = ProxyProcess::start(&args);
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut tls = intercepted_tls(&proxy, alpn);
        let started = Instant::now();
        let mut buf = [0u8; 256];
        // h2 gets the server preface and a GOAWAY first; then the connection ends.
        loop {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(started.elapsed() < Duration::from_secs(8)),
            }
        }
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(8),
            "{}: still open after {waited:?}",
            String::from_utf8_lossy(alpn)
        );
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn partial_request_lines_cost_no_cpu_while_they_wait() {
    let proxy = ProxyProcess::start(&["--header-timeout".into(), "10".into()]);
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(proxy.addr).unwrap();
        stream.write_all(b"GET http://example.test/").unwrap();
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(proxy.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(proxy.pid()) - before;
    // Clock ticks are 1/100 s: a poll loop spent 80-170 of them here.
    assert!(
        spent <= 20,
        "{spent} ticks of CPU in 2 s for 300 waiting sockets"
    );
    assert!(healthy(proxy.admin.unwrap()));
}

#[test]
fn at_the_descriptor_limit_the_proxy_refuses_with_503_and_the_admin_port_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(env!("CARGO_BIN_EXE_grantdoctor"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--ca-dir")
        .arg(dir.path().join("certs"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs the proxy under a descriptor limit");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut addrs = None;
    for line in std::io::BufRead::lines(stdout) {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        lines.push(v.clone());
        if v["event"] == "listening" {
            addrs = Some((
                v["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap(),
                v["admin"].as_str().unwrap().parse::<SocketAddr>().unwrap(),
            ));
            break;
        }
    }
    let (addr, admin) = addrs.expect("listening");
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "fd_limit" && l["effective"] == 64),
        "the cap is logged: {lines:?}"
    );
    let held: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut refused = 0;
    for mut stream in held.iter() {
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = stream.read(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains(" 503")
        {
            refused += 1;
        }
    }
    assert!(
        refused >= 200,
        "past the cap connections get 503 ({refused})"
    );
    assert!(healthy(admin), "the admin port still answers");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn streams_cancelled_after_dispatch_earn_a_goaway() {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&route_to(&origin, &[LOGIN]));
    let (stream, status) = tokio::task::spawn_blocking({
        let addr = proxy.addr;
        move || connect(addr, "login.salesforce.com:443")
    })
    .await
    .unwrap();
    assert!(status.contains(" 200"));
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let tls = tokio_rustls::TlsConnector::from(common::raw::client_tls(&proxy.ca_pem(), &[b"h2"]))
        .connect(LOGIN.try_into().unwrap(), stream)
        .await
        .unwrap();
    let (mut h2, connection) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut sent = 0;
    for _ in 0..400 {
        let request = http::Request::get(format!("https://{LOGIN}/slow"))
            .body(())
            .unwrap();
        let Ok(ready) = h2.ready().await else { break };
        h2 = ready;
        let Ok((response, _)) = h2.send_request(request, true) else {
            break;
        };
        sent += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
        drop(response);
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(ended.is_ok(), "the connection is told to go away");
    assert!(
        sent < 400,
        "new streams are refused after the GOAWAY ({sent} sent)"
    );
    assert_eq!(
        metric(
            proxy.admin.unwrap(),
            "grantdoctor_limits_total{limit=\"client_cancels\"} "
        ),
        Some(1.0)
    );
}

#[test]
fn empty_proxy_credentials_are_refused_at_start_and_the_scheme_is_case_insensitive() {
    for (flag, env) in [(Some(":"), None), (Some("user:"), None), (None, Some(""))] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"));
        command.args(["check-config"]);
        if let Some(flag) = flag {
            command.args(["--proxy-auth", flag]);
        }
        if let Some(env) = env {
            command.env("GRANTDOCTOR_PROXY_AUTH", env);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag:?} {env:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("neither part empty"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&["--proxy-auth".into(), "user:pass".into()]);
    let answer = raw_exchange(
        proxy.addr,
        format!(
            "GET http://{0}/hello HTTP/1.1\r\nHost: {0}\r\nProxy-Authorization: basic dXNlcjpwYXNz\r\nConnection: close\r\n\r\n",
            origin.plain_addr
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn every_spelling_of_the_admin_port_is_refused_as_a_loop() {
    let proxy = ProxyProcess::start(&[]);
    let port = proxy.admin.unwrap().port();
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let mut aliases = vec![
        "127.1",
        "0",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0x7f000001",
        "localhost",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    if !hostname.trim().is_empty() {
        aliases.push(hostname.trim().to_owned());
    }
    for alias in aliases {
        let answer = raw_exchange(
            proxy.addr,
            format!("GET http://{alias}:{port}/metrics HTTP/1.1\r\nHost: {alias}:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{alias}: {answer}");
        assert!(
            answer.contains("grantdoctor-error: loop"),
            "{alias}: {answer}"
        );
        assert!(
            !answer.contains("grantdoctor_"),
            "{alias}: metrics leaked through the loop"
        );
    }
}

#[test]
fn a_malformed_chunked_body_is_the_clients_fault() {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&[]);
    let answer = raw_exchange(
        proxy.addr,
        format!(
            "POST http://{0}/upload HTTP/1.1\r\nHost: {0}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\nbroken\r\n0\r\n\r\n",
            origin.plain_addr
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("grantdoctor-error: bad-request-body"),
        "{answer}"
    );
    let admin = proxy.admin.unwrap();
    assert_eq!(
        metric(
            admin,
            "grantdoctor_client_errors_total{kind=\"request_body\"} "
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            admin,
            "grantdoctor_upstream_errors_total{kind=\"request\"} "
        )
        .unwrap_or(0.0),
        0.0,
        "the client's malformed body is not an upstream error"
    );
}

#[test]
fn request_heads_over_max_header_bytes_get_431_in_every_mode() {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&route_to(&origin, &[LOGIN]));
    let big = "a".repeat(100 * 1024);
    let answer = raw_exchange(
        proxy.addr,
        format!(
            "GET http://{0}/hello HTTP/1.1\r\nHost: {0}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n",
            origin.plain_addr
        )
        .as_bytes(),
    );
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "absolute form: {}",
        &answer[..answer.len().min(200)]
    );
    let mut tls = intercepted_tls(&proxy, b"http/1.1");
    write!(
        tls,
        "GET /hello HTTP/1.1\r\nHost: {LOGIN}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "intercepted: {}",
        &text[..text.len().min(200)]
    );
}

#[tokio::test]
async fn the_emulator_forgets_a_refresh_whose_client_hung_up() {
    let emu = common::EmulatorProcess::start();
    let mut settings = emu.control("GET", "settings", json!(null)).await;
    settings["refresh_latency_ms"] = json!(500);
    emu.control("PUT", "settings", settings).await;
    let token = emu
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", WEB),
        ("refresh_token", token.as_str()),
    ];
    // The client gives up while the refresh is in flight.
    let hung_up = tokio::time::timeout(Duration::from_millis(100), emu.token(LOGIN, &form)).await;
    assert!(hung_up.is_err());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = emu.token(LOGIN, &form).await;
    assert_eq!(status, 200, "{body}");
}

#[test]
fn an_empty_ledger_file_is_said_out_loud() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/ledger.sqlite3"), b"").unwrap();
    let proxy = ProxyProcess::start_in(dir, &[]);
    proxy.wait_for_event(|e| e["event"] == "ledger_empty");
}
