//! One webhook's delivery task: takes bodies from its bounded queue in order, POSTs each
//! through the proxy's own upstream client (verified TLS, `--upstream-ca`, `--resolve`),
//! signs it when a secret is set, and retries with exponential back-off.
//!
//! Must never: name the URL in a log line or an error (it may carry a token in its path or
//! query, or credentials); the host alone is logged. Never block the token path: the queue
//! in front of this task is filled with `try_send` only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use ring::hmac;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::upstream::UpstreamClient;

/// A body to POST and the event it tells of.
#[derive(Debug)]
pub struct Delivery {
    pub event_id: String,
    pub body: Bytes,
}

/// Where and how one webhook is reached.
pub struct Target {
    /// Position in the configuration (1-based), so log lines tell two webhooks on one host
    /// apart.
    pub number: usize,
    /// The URL without its user information; sent, never logged.
    pub uri: Uri,
    /// `Authorization: Basic` from the URL's user information, if it had any.
    pub authorization: Option<HeaderValue>,
    /// The host, the only part of the URL that is logged.
    pub host: String,
    pub secret: Option<hmac::Key>,
}

/// How hard a delivery is tried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub timeout: Duration,
}

impl Default for Retry {
    /// Five attempts 1, 2, 4 and 8 s apart, each given 5 s: a receiver restarting or
    /// rate-limiting for a quarter of a minute still gets the alert.
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// A status that a retry would not change (4xx other than 429).
    Refused(StatusCode),
    /// Worth another attempt: 5xx, 429, a connection error or a timeout; the reason says
    /// which, in words that hold no part of the URL.
    Retry(String),
}

/// Serves one webhook's queue until every sender is gone.
pub async fn run(
    target: Target,
    mut queue: mpsc::Receiver<Delivery>,
    client: UpstreamClient,
    metrics: Arc<Metrics>,
    retry: Retry,
) {
    // Whether the receiver is in an outage: `webhook_failed` is logged when one starts and
    // `webhook_recovered` when it ends, not once per alert.
    let mut failing = false;
    while let Some(delivery) = queue.recv().await {
        let delivered = deliver(&target, &client, &metrics, retry, &delivery, &mut failing).await;
        if delivered && failing {
            failing = false;
            tracing::info!(
                event = "webhook_recovered",
                webhook = target.number,
                host = target.host.as_str()
            );
        }
    }
}

/// Tries one delivery until it is delivered, refused or out of attempts.
async fn deliver(
    target: &Target,
    client: &UpstreamClient,
    metrics: &Metrics,
    retry: Retry,
    delivery: &Delivery,
    failing: &mut bool,
) -> bool {
    let mut backoff = retry.first_backoff;
    for attempt in 1..=retry.attempts.max(1) {
        let reason = match attempt_once(target, client, retry.timeout, delivery).await {
            Attempt::Delivered => {
                Metrics::count(&metrics.webhook_deliveries, &[("outcome", "delivered")]);
                return true;
            }
            Attempt::Refused(status) => {
                Metrics::count(&metrics.webhook_deliveries, &[("outcome", "failed")]);
                outage(target, failing, &format!("refused with status {status}"), 1);
                return false;
            }
            Attempt::Retry(reason) => reason,
        };
        outage(target, failing, &reason, attempt);
        if attempt < retry.attempts {
            Metrics::count(&metrics.webhook_deliveries, &[("outcome", "retried")]);
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }
    Metrics::count(&metrics.webhook_deliveries, &[("outcome", "failed")]);
    Metrics::count(&metrics.webhook_dropped, &[("reason", "gave_up")]);
    false
}

/// Logs the start of an outage, once.
fn outage(target: &Target, failing: &mut bool, reason: &str, attempt: u32) {
    if !*failing {
        *failing = true;
        tracing::warn!(
            event = "webhook_failed",
            webhook = target.number,
            host = target.host.as_str(),
            reason,
            attempt,
            note = "further failures of this webhook are not logged until it works again"
        );
    }
}

async fn attempt_once(
    target: &Target,
    client: &UpstreamClient,
    timeout: Duration,
    delivery: &Delivery,
) -> Attempt {
    let request = request(target, delivery);
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        // Read (a little of) the answer so the connection can go back to the pool.
        let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Attempt::Retry(format!("no answer within {} s", timeout.as_secs_f64())),
        Ok(Err(e)) if e.is_connect() => Attempt::Retry(connect_reason(&e)),
        Ok(Err(_)) => Attempt::Retry("the request failed".into()),
        Ok(Ok(status)) if status.is_success() => Attempt::Delivered,
        Ok(Ok(status)) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
            Attempt::Retry(format!("status {}", status.as_u16()))
        }
        Ok(Ok(status)) => Attempt::Refused(status),
    }
}

/// Why a connection failed, in words of the error chain that never hold the URL: a TLS
/// failure (an untrusted receiver certificate is the usual one) says so; the rest is "could
/// not connect".
fn connect_reason(error: &(dyn std::error::Error + 'static)) -> String {
    match tls_error(error) {
        Some(tls) => format!("TLS: {tls}"),
        None => "could not connect".into(),
    }
}

/// The rustls error in a chain, through the `io::Error`s the connectors wrap it in.
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && let Some(tls) = tls_error(inner)
    {
        return Some(tls);
    }
    error.source().and_then(tls_error)
}

fn request(target: &Target, delivery: &Delivery) -> Request<crate::body::ProxyBody> {
    let mut builder = Request::post(target.uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("grantdoctor/", env!("CARGO_PKG_VERSION")),
        );
    if let Ok(id) = HeaderValue::from_str(&delivery.event_id) {
        builder = builder.header("grantdoctor-event", id);
    }
    if let Some(key) = &target.secret {
        builder = builder.header("grantdoctor-signature", signature(key, &delivery.body));
    }
    if let Some(authorization) = &target.authorization {
        builder = builder.header(header::AUTHORIZATION, authorization.clone());
    }
    builder
        .body(crate::body::full(delivery.body.clone()))
        .expect("a POST with valid headers builds")
}

/// `sha256=<hex HMAC-SHA256 of the body>`, what a receiver recomputes with the shared secret.
pub fn signature(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in tag.as_ref() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
