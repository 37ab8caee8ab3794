//! Interception: TLS terminated with a leaf from our CA, requests forwarded to the real origin
//! (a local one reached through --resolve and trusted through --upstream-ca).

mod common;

use common::{Origin, ProxyProcess, client_via, route_to};

fn start() -> (Origin, ProxyProcess) {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&route_to(
        &origin,
        &["login.salesforce.com", "acme.my.salesforce.com"],
    ));
    (origin, proxy)
}

#[tokio::test]
async fn an_intercepted_get_over_http1_reaches_the_origin() {
    let (_origin, proxy) = start();
    let client = client_via(&proxy, &[&proxy.ca_pem()], false);
    let response = client
        .get("https://login.salesforce.com/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.text().await.unwrap(), "hello from origin");
}

#[tokio::test]
async fn h2_is_spoken_on_both_sides_of_an_intercepted_tunnel() {
    let (_origin, proxy) = start();
    let client = client_via(&proxy, &[&proxy.ca_pem()], true);
    let response = client
        .get("https://acme.my.salesforce.com/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    // The origin saw h2 from the proxy's pooled client too.
    assert_eq!(response.headers()["x-origin-version"], "HTTP/2.0");
    assert_eq!(response.text().await.unwrap(), "hello from origin");
}

#[tokio::test]
async fn the_certificate_presented_for_an_intercepted_host_is_ours() {
    let (origin, proxy) = start();
    // Trusting only the origin's CA fails: the client is talking to grantdoctor's leaf.
    let client = client_via(&proxy, &[&origin.ca_pem], false);
    let err = client
        .get("https://login.salesforce.com/hello")
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
    proxy.wait_for_event(|e| {
        e["event"] == "client_tls_failed" && e["host"] == "login.salesforce.com"
    });
}

#[tokio::test]
async fn curl_gets_through_with_the_bundle() {
    let (_origin, proxy) = start();
    let bundle = proxy.ca_dir().join("bundle.pem");
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-w",
            "\n%{http_code} %{http_version}",
            "-x",
        ])
        .arg(proxy.proxy_url())
        .arg("--cacert")
        .arg(&bundle)
        .arg("https://login.salesforce.com/hello")
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "hello from origin\n200 2");
}

#[tokio::test]
async fn a_request_target_that_is_not_a_path_is_refused_with_a_reason() {
    let (_origin, proxy) = start();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http1.1", "-X", "OPTIONS", "--request-target", "*"])
        .args(["-w", "\n%{http_code}", "-x"])
        .arg(proxy.proxy_url())
        .arg("--cacert")
        .arg(proxy.ca_dir().join("bundle.pem"))
        .arg("https://login.salesforce.com/")
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "grantdoctor: request target is not a valid path\n\n400",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_gzip_response_arrives_byte_for_byte() {
    let (_origin, proxy) = start();
    let client = client_via(&proxy, &[&proxy.ca_pem()], true);
    let response = client
        .get("https://login.salesforce.com/gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let expected = common::origin::gzip_payload();
    assert_eq!(
        response.headers()["content-length"],
        expected.len().to_string().as_str()
    );
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        expected.as_slice()
    );
}

#[tokio::test]
async fn a_failed_token_exchange_is_annotated_and_logged_without_its_secrets() {
    let (_origin, proxy) = start();
    let client = client_via(&proxy, &[&proxy.ca_pem()], false);
    let secret = "5Aep861.SECRET-refresh-token-value";
    let response = client
        .post("https://login.salesforce.com/services/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&client_id=3MVG9abc&refresh_token={secret}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let cause = response.headers()["grantdoctor-cause"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    assert!(
        text.starts_with(r#"{"error":"invalid_grant","error_description":"expired access/refresh token","grantdoctor":{"#),
        "{text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["grantdoctor"]["causes"][0]["id"], cause.as_str());
    let event = proxy.wait_for_event(|e| e["event"] == "invalid_grant");
    assert_eq!(event["grant_type"], "refresh_token");
    assert_eq!(event["status"], 400);
    assert_eq!(event["host"], "login.salesforce.com");
    assert_eq!(event["cause"], cause.as_str());
    assert_eq!(event["event_id"], body["grantdoctor"]["event_id"]);
    assert!(event["token_fp"].as_str().unwrap().starts_with("fp_"));
    assert!(event["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(event["ts"].is_string() && event["level"] == "warn");
    assert!(
        !proxy.raw_log().contains("SECRET"),
        "a secret reached the log"
    );
}

#[tokio::test]
async fn garbage_after_connect_to_an_intercepted_host_closes_with_a_logged_reason() {
    let (_origin, proxy) = start();
    let reply = common::raw_exchange(
        proxy.addr,
        b"CONNECT login.salesforce.com:443 HTTP/1.1\r\nHost: login.salesforce.com:443\r\n\r\nthis is not TLS\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(!reply.contains("this is not TLS"));
    let event = proxy.wait_for_event(|e| e["event"] == "tunnel_refused");
    assert_eq!(event["reason"], "the client did not start a TLS handshake");
}

#[tokio::test]
async fn a_corrupt_gzip_token_response_passes_unchanged_and_is_logged_as_not_inspected() {
    let (_origin, proxy) = start();
    let client = client_via(&proxy, &[&proxy.ca_pem()], false);
    let response = client
        .post("https://login.salesforce.com/services/oauth2/token?corrupt")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&refresh_token=5Aep861x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("grantdoctor-cause").is_none());
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        common::origin::CORRUPT_GZIP
    );
    let event = proxy.wait_for_event(|e| e["event"] == "not_inspected");
    assert_eq!(event["reason"], "corrupt compressed body");
}

#[tokio::test]
async fn an_oversized_token_request_is_refused_unread_in_salesforces_shape() {
    let (_origin, proxy) = start();
    let client = client_via(&proxy, &[&proxy.ca_pem()], false);
    let body = format!(
        "grant_type=refresh_token&padding={}",
        "x".repeat(100 * 1024)
    );
    let response = client
        .post("https://login.salesforce.com/services/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(
        response.headers().get("x-received-bytes").is_none(),
        "never forwarded"
    );
    assert_eq!(
        response.headers()["grantdoctor-error"],
        "token-request-too-large"
    );
    let answer: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(answer["error"], "invalid_request");
    let event = proxy.wait_for_event(|e| e["event"] == "token_request_refused");
    assert_eq!(event["cap_bytes"], 65536);
}
