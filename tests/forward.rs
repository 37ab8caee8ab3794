//! Plain forwarding (absolute-form http://) and the listener's answers to bad input.

mod common;

use common::{Origin, ProxyProcess, raw_exchange};

#[test]
fn an_absolute_form_http_request_is_forwarded() {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&[
        "--resolve".into(),
        format!("origin.test:80={}", origin.plain_addr),
    ]);
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "-x"])
        .arg(proxy.proxy_url())
        .arg("http://origin.test/hello")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello from origin"), "{text}");
    assert!(
        text.to_lowercase().contains("x-origin-version: http/1.1"),
        "{text}"
    );
}

#[test]
fn proxy_only_headers_do_not_reach_the_origin() {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&[
        "--resolve".into(),
        format!("origin.test:80={}", origin.plain_addr),
    ]);
    let reply = raw_exchange(
        proxy.addr,
        b"GET http://origin.test/headers HTTP/1.1\r\nHost: origin.test\r\nProxy-Authorization: Basic c2VjcmV0\r\nConnection: close, x-hop\r\nx-hop: 1\r\nx-kept: 2\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["x-kept"], "2");
    assert_eq!(seen["host"], "origin.test");
    assert!(
        seen.get("proxy-authorization").is_none() && seen.get("x-hop").is_none(),
        "{seen}"
    );
}

#[test]
fn a_malformed_request_line_gets_a_400_with_a_plain_reason() {
    let proxy = ProxyProcess::start(&[]);
    let reply = raw_exchange(proxy.addr, b"THIS IS NOT HTTP\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("grantdoctor: malformed request line"),
        "{reply}"
    );
    proxy.wait_for_event(|e| e["event"] == "bad_request");
}

#[test]
fn tls_sent_to_the_plain_listener_is_explained() {
    let proxy = ProxyProcess::start(&[]);
    let reply = raw_exchange(
        proxy.addr,
        &[0x16, 0x03, 0x01, 0x00, 0x20, 0x01, 0x00, 0x00, 0x1c, b'\n'],
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("use http:// in HTTPS_PROXY"), "{reply}");
}

#[test]
fn an_origin_form_request_to_the_proxy_is_refused_with_a_reason() {
    let proxy = ProxyProcess::start(&[]);
    let reply = raw_exchange(
        proxy.addr,
        b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("this is a forward proxy"), "{reply}");
}

#[test]
fn an_unreachable_http_origin_is_a_502() {
    // On an address no other test binds, so the freed port cannot be taken by a parallel test.
    let closed = std::net::TcpListener::bind("127.0.0.3:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = ProxyProcess::start(&["--resolve".into(), format!("down.test:80={closed}")]);
    let reply = raw_exchange(
        proxy.addr,
        b"GET http://down.test/ HTTP/1.1\r\nHost: down.test\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    assert!(
        reply.contains("grantdoctor-error: upstream-unreachable"),
        "{reply}"
    );
    assert!(reply.contains("upstream down.test unreachable"), "{reply}");
}
