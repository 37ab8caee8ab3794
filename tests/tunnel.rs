//! Blind tunnels and CONNECT refusals.

mod common;

use common::{Origin, ProxyProcess, client_via, raw_exchange, route_to};

#[tokio::test]
async fn a_tunnelled_host_shows_the_origins_own_certificate() {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&route_to(&origin, &["other.test"]));
    // The client trusts only the origin's CA: it succeeds only if nothing in between re-signs.
    let client = client_via(&proxy, &[&origin.ca_pem], true);
    let response = client.get("https://other.test/hello").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "hello from origin");
    // And the token hook never sees it.
    assert!(
        proxy
            .events()
            .iter()
            .all(|e| e["event"] != "token_exchange")
    );
}

#[test]
fn connect_to_a_port_outside_the_allow_list_is_forbidden() {
    let proxy = ProxyProcess::start(&[]);
    let reply = raw_exchange(
        proxy.addr,
        b"CONNECT example.com:22 HTTP/1.1\r\nHost: example.com:22\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(
        reply.contains("grantdoctor-error: port-not-allowed"),
        "{reply}"
    );
    assert!(
        reply.contains("CONNECT to port 22 is not allowed (allowed: 443)"),
        "{reply}"
    );
}

#[test]
fn an_unreachable_origin_is_a_502_that_names_host_and_reason() {
    // A port that was just free: nothing listens on it.
    // On an address no other test binds, so the freed port cannot be taken by a parallel test.
    let closed = std::net::TcpListener::bind("127.0.0.3:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = ProxyProcess::start(&["--resolve".into(), format!("down.test:443={closed}")]);
    let reply = raw_exchange(
        proxy.addr,
        b"CONNECT down.test:443 HTTP/1.1\r\nHost: down.test:443\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    assert!(
        reply.contains("upstream down.test:443 unreachable"),
        "{reply}"
    );
    assert!(
        reply.to_lowercase().contains("connection refused"),
        "{reply}"
    );
}

#[test]
fn a_connect_without_a_port_is_a_bad_request() {
    let proxy = ProxyProcess::start(&[]);
    let reply = raw_exchange(
        proxy.addr,
        b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
}
