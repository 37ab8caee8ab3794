//! Large bodies stream through without being held in memory.

mod common;

use common::{Origin, ProxyProcess, client_via, peak_rss_kib, route_to};

const SIZE: u64 = 200 * 1024 * 1024;

#[tokio::test]
async fn a_200_mb_intercepted_response_streams_with_bounded_memory() {
    let origin = Origin::start();
    let proxy = ProxyProcess::start(&route_to(&origin, &["login.salesforce.com"]));
    let client = client_via(&proxy, &[&proxy.ca_pem()], false);
    let mut response = client
        .get(format!("https://login.salesforce.com/big?bytes={SIZE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-length"],
        SIZE.to_string().as_str()
    );
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(chunk.iter().all(|&b| b == b'x'));
        received += chunk.len() as u64;
    }
    assert_eq!(received, SIZE);
    let peak = peak_rss_kib(proxy.pid());
    assert!(
        peak < 64 * 1024,
        "proxy peak RSS {peak} KiB for a {SIZE}-byte body"
    );
}
