//! Not an open proxy, bounded, and stopping without dropping work.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Origin, ProxyProcess, raw_exchange};

#[test]
fn a_public_listener_without_auth_or_allow_list_refuses_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(["run", "--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--proxy-auth"),
        "{err}"
    );
}

#[test]
fn proxy_authentication_is_required_when_configured() {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&[
        "--proxy-auth".into(),
        "alice:s3cret".into(),
        "--resolve".into(),
        format!("origin.test:80={}", origin.plain_addr),
    ]);
    let denied = raw_exchange(
        proxy.addr,
        b"GET http://origin.test/hello HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n",
    );
    assert!(denied.starts_with("HTTP/1.1 407"), "{denied}");
    assert!(
        denied
            .to_lowercase()
            .contains("proxy-authenticate: basic realm=\"grantdoctor\""),
        "{denied}"
    );
    let wrong = raw_exchange(proxy.addr, b"GET http://origin.test/hello HTTP/1.1\r\nHost: origin.test\r\nProxy-Authorization: Basic YWxpY2U6d3Jvbmc=\r\nConnection: close\r\n\r\n");
    assert!(wrong.starts_with("HTTP/1.1 407"), "{wrong}");
    let allowed = raw_exchange(proxy.addr, b"GET http://origin.test/hello HTTP/1.1\r\nHost: origin.test\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\nConnection: close\r\n\r\n");
    assert!(
        allowed.starts_with("HTTP/1.1 200") && allowed.ends_with("hello from origin"),
        "{allowed}"
    );
    assert!(!proxy.raw_log().contains("s3cret"));
}

#[test]
fn the_connection_limit_refuses_the_excess_cleanly() {
    let proxy = ProxyProcess::start(&["--max-connections".into(), "1".into()]);
    // Holds the only slot without sending anything.
    let _held = std::net::TcpStream::connect(proxy.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let reply = raw_exchange(
        proxy.addr,
        b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("--max-connections"), "{reply}");
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let origin = Origin::start();
    let mut proxy = ProxyProcess::start(&[
        "--resolve".into(),
        format!("origin.test:80={}", origin.plain_addr),
    ]);
    let addr = proxy.addr;
    let client = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream
            .write_all(b"GET http://origin.test/slow HTTP/1.1\r\nHost: origin.test\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    std::thread::sleep(Duration::from_millis(400));
    let status = proxy.process.terminate();
    let reply = client.join().unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("slow but sure"),
        "{reply}"
    );
    assert!(status.success(), "{status:?}");
    proxy.wait_for_event(|e| e["event"] == "drained");
}

#[test]
fn requests_to_the_proxys_own_listeners_are_refused() {
    let proxy = ProxyProcess::start(&[]);
    let own = format!(
        "GET http://127.0.0.1:{}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        proxy.addr.port()
    );
    let reply = raw_exchange(proxy.addr, own.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains("grantdoctor-error: loop"), "{reply}");
    let admin = proxy.admin.unwrap();
    let to_admin = format!(
        "GET http://localhost:{}/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        admin.port()
    );
    let reply = raw_exchange(proxy.addr, to_admin.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
}

#[test]
fn a_slowloris_client_is_cut_off_at_the_header_timeout() {
    let proxy = ProxyProcess::start(&["--header-timeout".into(), "1".into()]);
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    stream
        .write_all(b"GET http://origin.test/hello HTTP/1.1\r\n")
        .unwrap();
    let dribble = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut cut = false;
    for byte in dribble {
        std::thread::sleep(Duration::from_millis(300));
        if stream.write_all(&[*byte]).is_err() {
            cut = true;
            break;
        }
    }
    if !cut {
        // The close may only show on reading.
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 64];
        cut = matches!(stream.read(&mut buf), Ok(0) | Err(_))
            || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408");
    }
    assert!(
        cut,
        "the connection stayed open while the head was dribbled for 12 s"
    );
    proxy.wait_for_event(|e| e["event"] == "client_timeout");
}

#[test]
fn a_silent_tunnel_is_closed_at_the_idle_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = std::thread::spawn(move || silent.accept().map(|(s, _)| s));
    let proxy = ProxyProcess::start(&[
        "--idle-timeout".into(),
        "1".into(),
        "--resolve".into(),
        format!("quiet.test:443={silent_addr}"),
    ]);
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    stream
        .write_all(b"CONNECT quiet.test:443 HTTP/1.1\r\nHost: quiet.test:443\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 39];
    stream.read_exact(&mut head).unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream.write_all(b"not tls, tunnelled anyway").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let _origin = holder.join().unwrap();
    let event = proxy.wait_for_event(|e| e["event"] == "tunnel" && e["outcome"] == "idle_timeout");
    assert_eq!(event["idle_s"], 1);
}

#[test]
fn an_upstream_that_does_not_answer_in_time_is_a_504() {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&[
        "--response-timeout".into(),
        "1".into(),
        "--resolve".into(),
        format!("origin.test:80={}", origin.plain_addr),
    ]);
    let reply = raw_exchange(
        proxy.addr,
        b"GET http://origin.test/slow HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 504"), "{reply}");
    assert!(
        reply.contains("grantdoctor-error: upstream-timeout")
            && reply.contains("sent no response within 1 s"),
        "{reply}"
    );
}
