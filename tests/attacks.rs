//! Attacks the proxy is known to withstand, kept so it keeps withstanding them: request
//! smuggling, HTTP/2 floods and bombs, large bodies, gzip bombs, certificate-cache and
//! connection exhaustion, and secrets in every output.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::ProxyProcess;
use common::raw::{self, Recorder, kind};
use tokio::io::AsyncWriteExt;

/// Tests that load the machine (many connections, large bodies) run one at a time, so their
/// time and memory figures are their own.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

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

fn absolute_form(
    addr: std::net::SocketAddr,
) -> impl Fn(
    usize,
    Probe,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = (usize, Probe, Vec<u8>)> + Send>> {
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
) -> impl Fn(
    usize,
    Probe,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = (usize, Probe, Vec<u8>)> + Send>> {
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
#[ignore = "defect: a malformed chunked request body is answered 502 upstream-failed, not 400"]
async fn a_malformed_chunked_body_is_refused_as_the_clients_fault_in_every_mode() {
    let (recorder, proxy) = recorder_and_proxy(&[]);
    run_probes(
        &recorder,
        "origin.test",
        true,
        true,
        absolute_form(proxy.addr),
    )
    .await;
    run_probes(
        &recorder,
        LOGIN,
        true,
        true,
        intercepted(proxy.addr, proxy.ca_pem()),
    )
    .await;
}
