//! Attacks the proxy is known to withstand, kept so it keeps withstanding them: request
//! smuggling, HTTP/2 floods and bombs, large bodies, gzip bombs, certificate-cache and
//! connection exhaustion, and secrets in every output.

mod common;

use std::time::{Duration, Instant};

use common::ProxyProcess;
use common::raw::{self, Recorder, kind};
use tokio::io::AsyncWriteExt;

/// Tests that load the machine (many connections, large bodies) run one at a time, so their
/// time and memory figures are their own. (Each test has a runtime of its own; this lock
/// works across them.)
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LOGIN: &str = "login.salesforce.com";

fn recorder_and_proxy(extra: &[&str]) -> (Recorder, ProxyProcess) {
    let recorder = Recorder::start();
    let mut args = recorder.route_args(&[LOGIN, "acme.my.salesforce.com"]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let proxy = ProxyProcess::start(&args);
    (recorder, proxy)
}

// ---------------------------------------------------------------------------------------------
// Request smuggling

/// A request whose framing is ambiguous, with a second request hidden where a parser that
/// disagreed with the proxy's would find it.
struct Probe {
    name: &'static str,
    /// The head is sound and the body's chunked framing is broken: found only once the head
    /// has gone upstream.
    malformed_body: bool,
    /// Headers after the request line and Host (each ending in CRLF), then the blank line's
    /// CRLF and the body.
    rest: String,
}

fn smuggled(n: usize, host: &str) -> String {
    format!("GET /smuggled-{n} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

fn probes(host: &str) -> Vec<Probe> {
    let hidden = |n| smuggled(n, host);
    let chunked_then = |n: usize| format!("0\r\n\r\n{}", hidden(n));
    vec![
        Probe {
            name: "content-length and transfer-encoding together",
            malformed_body: false,
            rest: format!(
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                chunked_then(0)
            ),
        },
        Probe {
            name: "transfer-encoding and content-length, the length covering a request",
            malformed_body: false,
            rest: {
                let body = chunked_then(1);
                format!(
                    "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            },
        },
        Probe {
            name: "transfer-encoding xchunked",
            malformed_body: false,
            rest: format!(
                "Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n{}",
                chunked_then(2)
            ),
        },
        Probe {
            name: "transfer-encoding chunked, identity",
            malformed_body: false,
            rest: format!(
                "Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n\r\n{}",
                chunked_then(3)
            ),
        },
        Probe {
            name: "two content-lengths that differ",
            malformed_body: false,
            rest: {
                let body = format!("hello{}", hidden(4));
                format!(
                    "Content-Length: 5\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            },
        },
        Probe {
            name: "a space before the colon of transfer-encoding",
            malformed_body: false,
            rest: format!(
                "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n{}",
                chunked_then(5)
            ),
        },
        Probe {
            name: "a bare LF after a chunk size",
            malformed_body: true,
            rest: format!(
                "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n{}",
                hidden(6)
            ),
        },
        Probe {
            name: "a chunk size that overflows 64 bits",
            malformed_body: true,
            rest: format!(
                "Transfer-Encoding: chunked\r\n\r\n1{}\r\nhello\r\n0\r\n\r\n{}",
                "0".repeat(16),
                hidden(7)
            ),
        },
        Probe {
            name: "a chunk-size line of 100 KiB of extensions",
            malformed_body: true,
            rest: format!(
                "Transfer-Encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\n{}",
                "x".repeat(100 * 1024),
                hidden(8)
            ),
        },
    ]
}

/// Status codes of the responses in `reply`, in order.
fn statuses(reply: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(reply);
    text.match_indices("HTTP/1.1 ")
        .filter(|(at, _)| *at == 0 || text[..*at].ends_with('\n'))
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// What a probe must never do: the origin sees a request the proxy did not answer as one, or
/// the proxy accepts an ambiguous request and forwards a body other than the one it framed.
/// A probe whose body framing breaks only after its head went upstream may be refused with
/// any error status unless `strict`, which wants the client's fault said with a 4xx.
fn judge(
    recorder: &Recorder,
    n: usize,
    probe: &Probe,
    reply: &[u8],
    strict: bool,
) -> Result<String, String> {
    let statuses = statuses(reply);
    let reply_text = String::from_utf8_lossy(reply);
    let name = probe.name;
    let Some(&first) = statuses.first() else {
        return Err(format!("{name}: no response at all: {reply_text:?}"));
    };
    let smuggled = recorder.seen_with(&format!("/smuggled-{n}"));
    if smuggled.len() >= statuses.len() {
        return Err(format!(
            "{name}: the origin received the hidden request ({smuggled:?}) without the proxy answering it as a request of its own; the client got {statuses:?}"
        ));
    }
    let forwarded = recorder.seen_with(&format!("/probe-{n}"));
    let clean = |s: &common::raw::Seen| {
        let body = String::from_utf8_lossy(&s.body);
        body.is_empty() || body == "hello"
    };
    match first {
        400..=499 if probe.malformed_body => {
            if let Some(bad) = forwarded.iter().find(|s| s.complete && !clean(s)) {
                return Err(format!(
                    "{name}: refused with {first}, yet a body went upstream whole: {bad:?}"
                ));
            }
        }
        400..=499 => {
            if !forwarded.is_empty() {
                return Err(format!(
                    "{name}: refused with {first} yet forwarded: {forwarded:?}"
                ));
            }
        }
        500..=599 if probe.malformed_body && !strict => {
            if let Some(bad) = forwarded.iter().find(|s| s.complete && !clean(s)) {
                return Err(format!(
                    "{name}: refused with {first}, yet a body went upstream whole: {bad:?}"
                ));
            }
        }
        200..=299 => {
            // Normalised: the body forwarded is the one the proxy framed, re-framed cleanly.
            if forwarded.len() != 1 || !forwarded.iter().all(|s| s.complete && clean(s)) {
                return Err(format!("{name}: accepted, forwarding {forwarded:?}"));
            }
        }
        other => {
            return Err(format!(
                "{name}: answered {other}, neither refused as the client's fault nor normalised: {reply_text}"
            ));
        }
    }
    Ok(format!("{name}: {statuses:?}"))
}

/// A probe sent, with its number and the bytes that came back.
type ProbeFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (usize, Probe, Vec<u8>)> + Send>>;

/// Sends every probe on a connection of its own, through `send`, and judges the replies.
async fn run_probes<F, Fut>(
    recorder: &Recorder,
    host: &str,
    only_malformed: bool,
    strict: bool,
    send: F,
) where
    F: Fn(usize, Probe) -> Fut,
    Fut: std::future::Future<Output = (usize, Probe, Vec<u8>)> + Send + 'static,
{
    let tasks: Vec<_> = probes(host)
        .into_iter()
        .enumerate()
        .filter(|(_, p)| !only_malformed || p.malformed_body)
        .map(|(n, p)| tokio::spawn(send(n, p)))
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        let (n, probe, reply) = task.await.unwrap();
        match judge(recorder, n, &probe, &reply, strict) {
            Ok(verdict) => eprintln!("{verdict}"),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn absolute_form(addr: std::net::SocketAddr) -> impl Fn(usize, Probe) -> ProbeFuture {
    move |n, probe| {
        Box::pin(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "POST http://origin.test/probe-{n} HTTP/1.1\r\nHost: origin.test\r\n{}",
                probe.rest
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let reply = raw::read_until_idle(&mut stream, Duration::from_millis(1500)).await;
            (n, probe, reply)
        })
    }
}

fn intercepted(
    addr: std::net::SocketAddr,
    ca: std::path::PathBuf,
) -> impl Fn(usize, Probe) -> ProbeFuture {
    move |n, probe| {
        let ca = ca.clone();
        Box::pin(async move {
            let mut tls = raw::tls_through(addr, LOGIN, &ca, &[b"http/1.1"]).await;
            let request = format!(
                "POST /probe-{n} HTTP/1.1\r\nHost: {LOGIN}\r\n{}",
                probe.rest
            );
            tls.write_all(request.as_bytes()).await.unwrap();
            let reply = raw::read_until_idle(&mut tls, Duration::from_millis(1500)).await;
            (n, probe, reply)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_probes_in_absolute_form_are_refused_or_normalised() {
    let (recorder, proxy) = recorder_and_proxy(&[]);
    run_probes(
        &recorder,
        "origin.test",
        false,
        false,
        absolute_form(proxy.addr),
    )
    .await;
    assert!(raw::healthy(proxy.admin.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_probes_on_an_intercepted_connection_are_refused_or_normalised() {
    let (recorder, proxy) = recorder_and_proxy(&[]);
    run_probes(
        &recorder,
        LOGIN,
        false,
        false,
        intercepted(proxy.addr, proxy.ca_pem()),
    )
    .await;
    assert!(raw::healthy(proxy.admin.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_in_absolute_form_is_refused_as_the_clients_fault() {
    let (recorder, proxy) = recorder_and_proxy(&[]);
    run_probes(
        &recorder,
        "origin.test",
        true,
        true,
        absolute_form(proxy.addr),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_on_an_intercepted_connection_is_refused_as_the_clients_fault() {
    let (recorder, proxy) = recorder_and_proxy(&[]);
    run_probes(
        &recorder,
        LOGIN,
        true,
        true,
        intercepted(proxy.addr, proxy.ca_pem()),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 floods and bombs on an intercepted connection

/// An intercepted connection that negotiated h2, split for reading and writing at once.
async fn h2_raw(
    proxy: &ProxyProcess,
) -> (
    tokio::io::ReadHalf<raw::Tls>,
    tokio::io::WriteHalf<raw::Tls>,
) {
    let tls = raw::tls_through(proxy.addr, LOGIN, &proxy.ca_pem(), &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (read, mut write) = tokio::io::split(tls);
    write.write_all(&raw::client_preface()).await.unwrap();
    (read, write)
}

/// How the proxy ended a connection we were abusing.
#[derive(Debug, PartialEq)]
enum Ending {
    GoAway(u32),
    Closed,
}

/// Reads frames until a GOAWAY or the close; `None` if neither comes within `limit`.
async fn ending<S: tokio::io::AsyncRead + Unpin>(read: &mut S, limit: Duration) -> Option<Ending> {
    tokio::time::timeout(limit, async {
        loop {
            match raw::read_frame(read).await {
                None => return Ending::Closed,
                Some(f) if f.kind == kind::GOAWAY => {
                    return Ending::GoAway(f.error_code().unwrap());
                }
                Some(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// The proxy still serves a fresh intercepted h2 request after an attack.
async fn still_serves_h2(proxy: &ProxyProcess) {
    let tls = raw::tls_through(proxy.addr, LOGIN, &proxy.ca_pem(), &[b"h2"]).await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::get(format!("https://{LOGIN}/after-the-attack"))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(req, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        raw::healthy(proxy.admin.unwrap()),
        "/healthz after the attack"
    );
}

#[tokio::test]
async fn an_h2_rapid_reset_before_dispatch_is_cut_off_and_the_proxy_stays_healthy() {
    let (_recorder, proxy) = recorder_and_proxy(&[]);
    let tls = raw::tls_through(proxy.addr, LOGIN, &proxy.ca_pem(), &[b"h2"]).await;
    let (mut send, conn) = h2::client::handshake(tls).await.unwrap();
    // A current-thread runtime: the connection task writes only when this loop yields, so each
    // HEADERS reaches the proxy in the same write as its RST_STREAM, before any dispatch.
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    let mut reset = 0u32;
    while !conn.is_finished() && reset < 100_000 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no GOAWAY or close after {reset} reset streams"
        );
        send = match send.ready().await {
            Ok(send) => send,
            Err(_) => break,
        };
        let req = http::Request::get(format!("https://{LOGIN}/reset-{reset}"))
            .body(())
            .unwrap();
        let Ok((_response, mut stream)) = send.send_request(req, true) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        reset += 1;
        if reset % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the connection ends in time")
        .unwrap();
    eprintln!("rapid reset: connection ended after {reset} resets: {ended:?}");
    if let Err(e) = &ended {
        if e.is_go_away() {
            assert_eq!(e.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{e}");
        }
    }
    assert!(reset < 100_000, "100,000 reset streams were accepted");
    still_serves_h2(&proxy).await;
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off_and_the_proxy_stays_healthy() {
    let (recorder, proxy) = recorder_and_proxy(&[]);
    let (mut read, mut write) = h2_raw(&proxy).await;
    let block = raw::hpack_get(LOGIN, "/continuation-flood");
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.
    write
        .write_all(&raw::frame(kind::HEADERS, raw::END_STREAM, 1, &block))
        .await
        .unwrap();
    let flood = tokio::spawn(async move {
        let mut field = vec![0x00];
        raw::hpack_string(&mut field, b"x-flood");
        raw::hpack_string(&mut field, &[b'a'; 100]);
        let batch: Vec<u8> = (0..100)
            .flat_map(|_| raw::frame(kind::CONTINUATION, 0, 1, &field))
            .collect();
        let mut sent = 0usize;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20)
            && raw::write_or_stall(&mut write, &batch, Duration::from_secs(5)).await
        {
            sent += 100;
        }
        (sent, started.elapsed())
    });
    let started = Instant::now();
    let end = ending(&mut read, Duration::from_secs(5)).await;
    let closed_after = started.elapsed();
    assert!(
        end.is_some(),
        "the connection stayed open through 5 s of CONTINUATION frames"
    );
    if let Some(Ending::GoAway(code)) = end {
        assert_eq!(code, raw::ENHANCE_YOUR_CALM);
    }
    drop(read);
    let (sent, writing) = flood.await.unwrap();
    eprintln!(
        "continuation flood: {end:?} after {closed_after:?}; {sent} frames written in {writing:?}"
    );
    assert!(recorder.seen_with("/continuation-flood").is_empty());
    still_serves_h2(&proxy).await;
}

/// Writes `frame` over and over without reading, until the proxy stops reading or closes, or
/// `count` were written; returns how many were.
async fn flood_without_reading(
    write: &mut tokio::io::WriteHalf<raw::Tls>,
    frame: &[u8],
    count: usize,
) -> usize {
    let batch: Vec<u8> = (0..1000).flat_map(|_| frame.to_vec()).collect();
    let mut sent = 0;
    while sent < count && raw::write_or_stall(write, &batch, Duration::from_secs(2)).await {
        sent += 1000;
    }
    sent
}

async fn a_control_frame_flood_is_bounded(frame: Vec<u8>, what: &str) {
    let _heavy = HEAVY.lock().await;
    let (_recorder, proxy) = recorder_and_proxy(&[]);
    let pid = proxy.pid();
    let (mut read, mut write) = h2_raw(&proxy).await;
    let before = raw::rss_kib(pid);
    let started = Instant::now();
    let sent = flood_without_reading(&mut write, &frame, 500_000).await;
    let took = started.elapsed();
    let grown = raw::peak_kib(pid).saturating_sub(before);
    // Reading now: the acks, then either the close or an open connection.
    let end = ending(&mut read, Duration::from_secs(2)).await;
    eprintln!("{what} flood: {sent} frames in {took:?}, RSS peak +{grown} KiB, then {end:?}");
    assert!(
        grown < 64 * 1024,
        "{what} flood: the proxy's RSS grew by {grown} KiB"
    );
    if let Some(Ending::GoAway(code)) = end {
        assert_eq!(code, raw::ENHANCE_YOUR_CALM, "{what} flood");
    }
    still_serves_h2(&proxy).await;
}

#[tokio::test]
async fn a_settings_flood_leaves_the_proxy_bounded_and_healthy() {
    // SETTINGS_MAX_CONCURRENT_STREAMS = 100, each one to be acknowledged.
    let payload = [0, 3, 0, 0, 0, 100];
    a_control_frame_flood_is_bounded(raw::frame(kind::SETTINGS, 0, 0, &payload), "SETTINGS").await;
}

#[tokio::test]
async fn a_ping_flood_leaves_the_proxy_bounded_and_healthy() {
    a_control_frame_flood_is_bounded(raw::frame(kind::PING, 0, 0, &[7; 8]), "PING").await;
}

/// A header block whose dynamic-table entry of about 4 KB is referenced `refs` times.
fn hpack_bomb(path: &str, refs: usize) -> Vec<u8> {
    let mut block = raw::hpack_get(LOGIN, path);
    // Literal with incremental indexing, new name: it becomes dynamic entry 62.
    block.push(0x40);
    raw::hpack_string(&mut block, b"x-bomb");
    raw::hpack_string(&mut block, &[b'b'; 4000]);
    block.extend(std::iter::repeat_n(0xbe, refs));
    block
}

/// Sends one header block on stream 1 and says how the proxy answered it.
async fn answer_to_header_block(proxy: &ProxyProcess, block: &[u8]) -> String {
    let (mut read, mut write) = h2_raw(proxy).await;
    assert!(block.len() <= 16_384, "one frame of the default size");
    write
        .write_all(&raw::frame(
            kind::HEADERS,
            raw::END_STREAM | raw::END_HEADERS,
            1,
            block,
        ))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match raw::read_frame(&mut read).await {
                None => return "closed".to_owned(),
                Some(f) if f.kind == kind::GOAWAY => {
                    return format!("goaway {}", f.error_code().unwrap());
                }
                Some(f) if f.kind == kind::RST_STREAM && f.stream == 1 => {
                    return format!("reset {}", f.error_code().unwrap());
                }
                Some(f) if f.kind == kind::HEADERS && f.stream == 1 => {
                    return format!("status {:?}", raw::response_status(&f.payload));
                }
                Some(_) => {}
            }
        }
    })
    .await
    .expect("the proxy answers the header block in time")
}

#[tokio::test]
async fn an_hpack_bomb_is_refused_and_the_proxy_stays_healthy() {
    let (recorder, proxy) = recorder_and_proxy(&[]);
    let pid = proxy.pid();
    let before = raw::rss_kib(pid);
    // Just over the 64 KiB header list limit: a 431.
    let over = answer_to_header_block(&proxy, &hpack_bomb("/hpack-over", 20)).await;
    assert_eq!(over, "status Some(431)");
    // 11,000 references: about 44 MB decoded from 15 KB.
    let bomb = answer_to_header_block(&proxy, &hpack_bomb("/hpack-bomb", 11_000)).await;
    eprintln!("hpack: over the limit: {over}; bomb: {bomb}");
    assert!(
        bomb == "status Some(431)"
            || bomb == format!("goaway {}", raw::ENHANCE_YOUR_CALM)
            || bomb.starts_with("reset")
            || bomb == "closed",
        "{bomb}"
    );
    let grown = raw::peak_kib(pid).saturating_sub(before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    assert!(recorder.seen_with("/hpack-over").is_empty());
    assert!(recorder.seen_with("/hpack-bomb").is_empty());
    // The same entry referenced twice (12 KB, within the origin's own limit too) is served:
    // the refusal is about size.
    let under = answer_to_header_block(&proxy, &hpack_bomb("/hpack-under", 2)).await;
    assert_eq!(under, "status Some(200)");
    still_serves_h2(&proxy).await;
}

// ---------------------------------------------------------------------------------------------
// Large bodies and compression bombs

const TEN_MIB: usize = 10 * 1024 * 1024;

/// A client of the proxy's plain listener (absolute-form for http:// URLs).
fn absolute_form_client(proxy: &ProxyProcess) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.proxy_url()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_bodies_stream_through_whole_without_being_held() {
    let _heavy = HEAVY.lock().await;
    let (recorder, proxy) = recorder_and_proxy(&[]);
    let pid = proxy.pid();
    let before = raw::rss_kib(pid);
    let body = vec![b'z'; TEN_MIB];
    let plain = absolute_form_client(&proxy);
    let h1 = common::client_via(&proxy, &[&proxy.ca_pem()], false);
    let h2 = common::client_via(&proxy, &[&proxy.ca_pem()], true);
    let cases = [
        (
            &plain,
            "http://origin.test/upload-absolute",
            "absolute-form",
        ),
        (
            &h1,
            "https://login.salesforce.com/upload-h1",
            "intercepted h1",
        ),
        (
            &h2,
            "https://acme.my.salesforce.com/upload-h2",
            "intercepted h2",
        ),
    ];
    for (client, url, how) in cases {
        let started = Instant::now();
        let response = client.post(url).body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200, "{how}");
        assert_eq!(
            response.text().await.unwrap(),
            format!("received {TEN_MIB}"),
            "{how}"
        );
        let path = url.rsplit_once('/').unwrap().1;
        let seen = recorder.seen_with(path);
        assert_eq!(seen.len(), 1, "{how}: {seen:?}");
        assert!(
            seen[0].complete && seen[0].body_len == TEN_MIB as u64,
            "{how}"
        );
        assert!(seen[0].body.iter().all(|&b| b == b'z'), "{how}");
        eprintln!("{how}: 10 MiB through in {:?}", started.elapsed());
    }
    let grown = raw::peak_kib(pid).saturating_sub(before);
    eprintln!("10 MiB bodies: the proxy's RSS peak grew by {grown} KiB");
    assert!(
        grown < 8 * 1024,
        "the proxy's RSS grew by {grown} KiB: a body was held, not streamed"
    );
    assert!(raw::healthy(proxy.admin.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_mib_refresh_of_a_rotated_token_gets_no_token_and_is_not_held() {
    let _heavy = HEAVY.lock().await;
    let stack = common::stack::Stack::start(&[]);
    stack
        .emu
        .control(
            "PATCH",
            "apps/3MVG9web",
            serde_json::json!({"rotation": true}),
        )
        .await;
    let login = stack
        .web_login(
            "3MVG9web",
            "web-secret",
            "alice@acme.com",
            "api refresh_token",
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let first = login.body["refresh_token"].as_str().unwrap().to_owned();
    let rotated = stack.refresh(LOGIN, "3MVG9web", &first).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    // Past the replay window of the twin that rotated it.
    tokio::time::sleep(Duration::from_millis(5200)).await;

    let pid = stack.proxy.pid();
    let before = raw::rss_kib(pid);
    let mut body =
        format!("grant_type=refresh_token&client_id=3MVG9web&refresh_token={first}&pad=")
            .into_bytes();
    body.resize(TEN_MIB, b'p');
    // By hand, reading while writing: the answer may come before the upload ends.
    let tls = raw::tls_through(
        stack.proxy.addr,
        LOGIN,
        &stack.proxy.ca_pem(),
        &[b"http/1.1"],
    )
    .await;
    let (mut read, mut write) = tokio::io::split(tls);
    let started = Instant::now();
    let upload = tokio::spawn(async move {
        let head = format!(
            "POST /services/oauth2/token HTTP/1.1\r\nHost: {LOGIN}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {TEN_MIB}\r\n\r\n"
        );
        let _ = write.write_all(head.as_bytes()).await;
        let _ = write.write_all(&body).await;
        write
    });
    let reply = raw::read_until_idle(&mut read, Duration::from_secs(3)).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), upload).await;
    let grown = raw::peak_kib(pid).saturating_sub(before);
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = statuses(&reply).first().copied();
    eprintln!(
        "10 MiB rotated refresh: {status:?} in {:?}, RSS peak +{grown} KiB: {}",
        started.elapsed(),
        text.chars().take(300).collect::<String>()
    );
    let status = status.expect("the proxy answers a 10 MiB token request");
    let answer = (status, text);
    assert!(
        !((200..300).contains(&answer.0) && answer.1.contains("access_token")),
        "a padded refresh of a rotated token got tokens: {}",
        answer.1
    );
    assert!(
        grown < 32 * 1024,
        "the proxy's RSS grew by {grown} KiB on a 10 MiB token request"
    );
    assert!(raw::healthy(stack.proxy.admin.unwrap()));
    // The family is alive: the newest token still refreshes.
    let next = stack.refresh(LOGIN, "3MVG9web", &second).await;
    assert_eq!(next.status, 200, "{}", next.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_from_the_token_endpoint_pass_byte_for_byte_without_growing_the_proxy() {
    let _heavy = HEAVY.lock().await;
    let (_recorder, proxy) = recorder_and_proxy(&[]);
    let pid = proxy.pid();
    let client = common::client_via(&proxy, &[&proxy.ca_pem()], false);
    // 200 MiB from about 200 KB (under the response cap, so the decoder's own cap is what
    // holds), and 1 GiB from about 1 MB (over the response cap).
    for mib in [200, 1024] {
        let bomb = raw::gzip_bomb(mib);
        let before = raw::rss_kib(pid);
        let started = Instant::now();
        let response = client
            .post(format!("https://{LOGIN}/services/oauth2/token?bomb={mib}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=refresh_token&client_id=3MVG9web&refresh_token=5Aep861bomb")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let annotated = response.headers().get("grantdoctor-cause").is_some();
        let encoding = response.headers().get("content-encoding").cloned();
        let got = response.bytes().await.unwrap();
        let grown = raw::peak_kib(pid).saturating_sub(before);
        eprintln!(
            "gzip bomb of {mib} MiB ({} bytes): {status} in {:?}, RSS peak +{grown} KiB",
            bomb.len(),
            started.elapsed()
        );
        assert_eq!(status, 400);
        assert!(!annotated, "a bomb was inspected and annotated");
        assert_eq!(encoding.unwrap(), "gzip");
        assert!(got.as_ref() == bomb.as_slice(), "the bomb was altered");
        assert!(
            grown < 32 * 1024,
            "the proxy's RSS grew by {grown} KiB on a {mib} MiB bomb"
        );
    }
    let reasons: Vec<String> = proxy
        .events()
        .iter()
        .filter(|e| e["event"] == "not_inspected")
        .map(|e| e["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(raw::healthy(proxy.admin.unwrap()));
}

#[test]
fn the_gzip_bomb_is_a_valid_gzip_stream() {
    use std::io::Read;
    let bomb = raw::gzip_bomb(3);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bomb.as_slice())
        .read_to_end(&mut out)
        .expect("CRC and length check out");
    assert_eq!(out.len(), 3 << 20);
    assert!(out.iter().all(|&b| b == 0));
}

// ---------------------------------------------------------------------------------------------
// Exhaustion: certificate cache, idle connections

/// The first bytes of a TLS handshake for `name`, as a real client would send them.
fn client_hello(config: &std::sync::Arc<rustls::ClientConfig>, name: &str) -> Vec<u8> {
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// CONNECT to `name`, send `hello` (a ClientHello for it), and wait for the server's first
/// flight (so the leaf for `name` was chosen); the certificate is not checked, only its
/// minting matters.
async fn hello_through(proxy: std::net::SocketAddr, name: &str, hello: &[u8]) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut stream) = tokio::net::TcpStream::connect(proxy).await else {
        return false;
    };
    // No TIME_WAIT left behind by thousands of short connections.
    let _ = stream.set_zero_linger();
    let connect = format!("CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n");
    if stream.write_all(connect.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") || stream.write_all(hello).await.is_err() {
        return false;
    }
    // A TLS handshake record (the ServerHello) in answer.
    matches!(stream.read(&mut buf).await, Ok(n) if n > 0 && buf[0] == 0x16)
}

/// Distinct server names asked for, each past the leaf cache's 1,024 evicting one. 20,000 take
/// 25 to 34 s in the debug build on two cores: the proxy spends about 2.2 ms of CPU minting a
/// leaf and answering each handshake (a full TLS client per name took 46 to 76 s, hence the
/// rewritten ClientHello).
const SERVER_NAMES: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_server_names_keep_the_leaf_cache_bounded() {
    let _heavy = HEAVY.lock().await;
    let (_recorder, proxy) = recorder_and_proxy(&[]);
    let pid = proxy.pid();
    let config = raw::client_tls(&proxy.ca_pem(), &[b"http/1.1"]);
    // One ClientHello, its name's digits rewritten per connection: the client costs nothing
    // next to the proxy.
    let template = client_hello(&config, "org00000.my.salesforce.com");
    let at = template
        .windows(8)
        .position(|w| w == b"org00000")
        .expect("the server name in the ClientHello")
        + 3;
    let hello_for = move |i: usize| {
        let mut hello = template.clone();
        hello[at..at + 5].copy_from_slice(format!("{i:05}").as_bytes());
        (format!("org{i:05}.my.salesforce.com"), hello)
    };
    // Warm up: the process's steady state with a few leaves minted.
    for i in 90_000..90_050 {
        let (name, hello) = hello_for(i);
        assert!(hello_through(proxy.addr, &name, &hello).await, "{name}");
    }
    let before = raw::rss_kib(pid);
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hello_for = std::sync::Arc::new(hello_for);
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let next = next.clone();
            let hello_for = hello_for.clone();
            let addr = proxy.addr;
            tokio::spawn(async move {
                let mut failed = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= SERVER_NAMES {
                        return failed;
                    }
                    let (name, hello) = hello_for(i);
                    let done = tokio::time::timeout(
                        Duration::from_secs(10),
                        hello_through(addr, &name, &hello),
                    );
                    if !matches!(done.await, Ok(true)) {
                        failed += 1;
                    }
                }
            })
        })
        .collect();
    let mut failed = 0;
    for worker in workers {
        failed += worker.await.unwrap();
    }
    let took = started.elapsed();
    let after = raw::rss_kib(pid);
    eprintln!(
        "{SERVER_NAMES} server names in {took:?} ({failed} failed; proxy CPU {:?}): RSS {before} -> {after} KiB",
        cpu_time(pid) - cpu_before
    );
    assert_eq!(failed, 0, "handshakes that got no server answer");
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "RSS grew by {} KiB over {SERVER_NAMES} leaves: the cache is not bounded",
        after.saturating_sub(before)
    );
    still_serves_h2(&proxy).await;
}

/// Raises this process's soft limit of open files to its hard limit (children inherit it).
fn raise_nofile_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    let (soft, hard) = (numbers.next().unwrap(), numbers.next().unwrap());
    if soft < hard {
        let status = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .status()
            .expect("prlimit (util-linux) runs");
        assert!(status.success());
    }
    hard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_are_held_and_the_admin_port_answers() {
    let _heavy = HEAVY.lock().await;
    let limit = raise_nofile_limit();
    assert!(
        limit >= 11_000,
        "the open-file limit {limit} is too low for this test"
    );
    let (_recorder, proxy) =
        recorder_and_proxy(&["--max-connections", "6000", "--header-timeout", "60"]);
    let pid = proxy.pid();
    let admin = proxy.admin.unwrap();
    // One served request first, so the figure is of idle connections, not of start-up.
    let plain = absolute_form_client(&proxy);
    let warm = plain.get("http://origin.test/warm").send().await.unwrap();
    assert_eq!(warm.status(), 200);
    drop(plain);
    let before = raw::rss_kib(pid);
    let fds_before = raw::open_fds(pid);
    let started = Instant::now();
    let mut held = Vec::with_capacity(5000);
    for _ in 0..50 {
        let batch: Vec<_> = (0..100)
            .map(|_| tokio::spawn(tokio::net::TcpStream::connect(proxy.addr)))
            .collect();
        for connect in batch {
            held.push(connect.await.unwrap().expect("the listener accepts"));
        }
    }
    // Until the proxy holds every one of them.
    // (The warm-up's connection may close meanwhile.)
    while raw::open_fds(pid) < fds_before + 4990 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the proxy holds {} of 5,000 connections",
            raw::open_fds(pid) - fds_before
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = raw::rss_kib(pid);
    let per_connection = (after.saturating_sub(before) * 1024) / 5000;
    eprintln!(
        "5,000 idle connections in {:?}: RSS {before} -> {after} KiB, {per_connection} bytes each",
        started.elapsed()
    );
    assert!(raw::healthy(admin), "/healthz with 5,000 idle connections");
    let metrics = raw::admin_get(admin, "/metrics")
        .expect("/metrics answers")
        .1;
    let active = metrics
        .lines()
        .find(|l| l.starts_with("grantdoctor_active_connections "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(
        active.is_some_and(|a| a >= 5000.0),
        "active connections: {active:?}"
    );
    // And a real request still goes through beside them.
    let client = absolute_form_client(&proxy);
    let response = client
        .get("http://origin.test/beside")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        per_connection < 64 * 1024,
        "{per_connection} bytes per idle connection"
    );
    drop(held);
}

fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

// ---------------------------------------------------------------------------------------------
// Secrets in every output

/// Every file under `dir`, read as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_the_admin_port_the_ledger_or_an_error_body() {
    use common::stack::Stack;
    let mut stack = Stack::start(&[]);
    let mut secrets: Vec<(&str, String)> = vec![
        ("client secret", "web-secret".into()),
        ("client secret", "cc-secret".into()),
        ("password", "Pa55wordTOKEN123".into()),
        ("wrong password", "Wr0ng-Passw0rd-SECRET".into()),
        (
            "made-up refresh token",
            "5Aep861.SECRET-made-up-refresh".into(),
        ),
        (
            "access token in a query",
            "00Dxx0000001gPL!SECRET-query-token".into(),
        ),
    ];
    // Authorization code, access and refresh tokens: the web-server flow, then a refresh.
    let code = stack
        .authorize("3MVG9web", "alice@acme.com", "api refresh_token", None)
        .await;
    let login = stack
        .exchange_code("3MVG9web", "web-secret", &code, None)
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    secrets.push(("authorization code", code));
    let refresh = login.body["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(("refresh token", refresh.clone()));
    secrets.push((
        "access token",
        login.body["access_token"].as_str().unwrap().into(),
    ));
    let refreshed = stack
        .token(
            LOGIN,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "3MVG9web"),
                ("client_secret", "web-secret"),
                ("refresh_token", &refresh),
            ],
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    secrets.push((
        "access token",
        refreshed.body["access_token"].as_str().unwrap().into(),
    ));
    // The password flow, right and wrong.
    let password = |pw: &'static str| {
        let stack = &stack;
        async move {
            stack
                .token(
                    LOGIN,
                    &[
                        ("grant_type", "password"),
                        ("client_id", "3MVG9web"),
                        ("client_secret", "web-secret"),
                        ("username", "alice@acme.com"),
                        ("password", pw),
                    ],
                )
                .await
        }
    };
    let good = password("Pa55wordTOKEN123").await;
    assert_eq!(good.status, 200, "{}", good.body);
    secrets.push((
        "access token",
        good.body["access_token"].as_str().unwrap().into(),
    ));
    let bad = password("Wr0ng-Passw0rd-SECRET").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    // A JWT bearer assertion, accepted, and one that is not (expired).
    let now = common::jwt::now_secs();
    for exp in [now + 120, now - 600] {
        let assertion = common::jwt::sign(&serde_json::json!({
            "iss": "3MVG9jwt", "sub": "alice@acme.com",
            "aud": "https://login.salesforce.com", "exp": exp,
        }));
        let answer = stack
            .token(
                LOGIN,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &assertion),
                ],
            )
            .await;
        assert_eq!(
            answer.status,
            if exp > now { 200 } else { 400 },
            "{}",
            answer.body
        );
        if let Some(access) = answer.body["access_token"].as_str() {
            secrets.push(("access token", access.into()));
        }
        secrets.push(("JWT assertion", assertion.clone()));
        secrets.push((
            "JWT signature",
            assertion.rsplit('.').next().unwrap().into(),
        ));
    }
    // Client credentials.
    let cc = stack
        .token(
            "acme.my.salesforce.com",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "3MVG9cc"),
                ("client_secret", "cc-secret"),
            ],
        )
        .await;
    assert_eq!(cc.status, 200, "{}", cc.body);
    secrets.push((
        "access token",
        cc.body["access_token"].as_str().unwrap().into(),
    ));
    // A refresh token nobody issued: diagnosed and annotated.
    let dead = stack
        .refresh(LOGIN, "3MVG9web", "5Aep861.SECRET-made-up-refresh")
        .await;
    assert_eq!(dead.status, 400);
    assert!(!dead.cause().is_empty(), "the failure was diagnosed");
    let mut bodies = vec![
        ("annotated failure", dead.body.to_string()),
        ("password failure", bad.body.to_string()),
    ];
    // An access token used against the API, and on requests that fail in the proxy itself.
    let access = secrets
        .iter()
        .find(|(what, _)| *what == "access token")
        .unwrap()
        .1
        .clone();
    let api = stack
        .client
        .get("https://acme.my.salesforce.com/services/data/")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    // Unreachable upstream, named in the URL with a token in the query.
    let unreachable = stack
        .client
        .post("https://ghost.my.salesforce.com/services/oauth2/token?access_token=00Dxx0000001gPL!SECRET-query-token")
        .header("content-type", "application/x-www-form-urlencoded")
        .bearer_auth(&access)
        .body(format!(
            "grant_type=refresh_token&client_id=3MVG9web&client_secret=web-secret&refresh_token={refresh}"
        ))
        .send()
        .await
        .unwrap();
    let status = unreachable.status().as_u16();
    assert_eq!(status, 502);
    bodies.push(("unreachable upstream", unreachable.text().await.unwrap()));
    // A malformed request line carrying a token: refused with a reason that does not echo it.
    let malformed = common::raw_exchange(
        stack.proxy.addr,
        b"GET http://origin.test/?access_token=00Dxx0000001gPL!SECRET-query-token  HTTP/1.1 extra\r\nHost: origin.test\r\n\r\n",
    );
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    bodies.push(("malformed request", malformed));
    let not_proxy = common::raw_exchange(
        stack.proxy.addr,
        format!("POST /services/oauth2/token?refresh_token={refresh} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(not_proxy.starts_with("HTTP/1.1 4"), "{not_proxy}");
    bodies.push(("origin-form request", not_proxy));

    // What the admin port shows.
    let admin = stack.proxy.admin.unwrap();
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    for path in [
        "/metrics",
        "/events",
        "/events?limit=1000",
        "/api/events",
        "/api/families",
        "/",
    ] {
        if let Some((200, body)) = raw::admin_get(admin, path) {
            outputs.push((format!("admin {path}"), body.into_bytes()));
        }
    }
    assert!(
        outputs
            .iter()
            .any(|(what, body)| what.starts_with("admin /events")
                && String::from_utf8_lossy(body).contains("invalid_grant")),
        "the events were served: {:?}",
        outputs.iter().map(|(w, _)| w).collect::<Vec<_>>()
    );
    // Stop the proxy so the ledger is on disk, then read every file it wrote.
    stack.proxy.process.terminate();
    let log = stack.proxy.raw_log();
    assert!(
        log.contains("\"token_issued\"") || log.contains("\"token_refreshed\""),
        "{log}"
    );
    outputs.push(("stdout log".into(), log.into_bytes()));
    for (what, body) in bodies {
        outputs.push((format!("error body: {what}"), body.into_bytes()));
    }
    let files = files_under(&stack.proxy.dir.path().join("data"));
    assert!(
        files.iter().map(|(_, b)| b.len()).sum::<usize>() > 4096,
        "the ledger was written: {:?}",
        files
            .iter()
            .map(|(p, b)| (p.file_name().unwrap().to_owned(), b.len()))
            .collect::<Vec<_>>()
    );
    for (path, bytes) in files {
        outputs.push((
            format!("file {}", path.file_name().unwrap().to_string_lossy()),
            bytes,
        ));
    }

    eprintln!(
        "searched: {:?}",
        outputs
            .iter()
            .map(|(w, b)| (w, b.len()))
            .collect::<Vec<_>>()
    );
    // The search finds what is there: the user's name (no secret) is in the log and the ledger.
    let found_in = |needle: &[u8]| {
        outputs
            .iter()
            .filter(|(_, b)| b.windows(needle.len()).any(|w| w == needle))
            .count()
    };
    assert!(
        found_in(b"alice@acme.com") >= 2,
        "the outputs name the user"
    );
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        assert!(secret.len() >= 8, "{what} too short to search for");
        for (output, bytes) in &outputs {
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                leaks.push(format!("{what} in {output}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_intercepted_h2_connections_cost_little() {
    let _heavy = HEAVY.lock().await;
    let (_recorder, proxy) =
        recorder_and_proxy(&["--max-connections", "6000", "--header-timeout", "60"]);
    let pid = proxy.pid();
    // One served intercepted request first: leaf minted, upstream client built.
    still_serves_h2(&proxy).await;
    let before = raw::rss_kib(pid);
    let started = Instant::now();
    let count = 1000;
    let mut held = Vec::with_capacity(count);
    for _ in 0..count / 50 {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                let addr = proxy.addr;
                let ca = proxy.ca_pem();
                tokio::spawn(async move {
                    let (read, mut write) = {
                        let tls = raw::tls_through(addr, LOGIN, &ca, &[b"h2"]).await;
                        tokio::io::split(tls)
                    };
                    write.write_all(&raw::client_preface()).await.unwrap();
                    let mut read = read;
                    // The proxy's SETTINGS: its side of the connection is set up.
                    let settings = raw::read_frame(&mut read).await.expect("SETTINGS");
                    assert_eq!(settings.kind, kind::SETTINGS);
                    (read, write)
                })
            })
            .collect();
        for connection in batch {
            held.push(connection.await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = raw::rss_kib(pid);
    let per_connection = (after.saturating_sub(before) * 1024) / count as u64;
    eprintln!(
        "{count} idle intercepted h2 connections in {:?}: RSS {before} -> {after} KiB, {per_connection} bytes each",
        started.elapsed()
    );
    assert!(raw::healthy(proxy.admin.unwrap()));
    assert!(
        per_connection < 128 * 1024,
        "{per_connection} bytes per idle intercepted connection"
    );
    drop(held);
}
