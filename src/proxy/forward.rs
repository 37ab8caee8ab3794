//! The innermost service: send a request upstream and stream the response back.
//! Bodies are never buffered here; hop-by-hop headers are dropped per RFC 9110 §7.6.1.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::body::{self, ProxyBody};
use crate::upstream::UpstreamClient;

use super::layers::Deadline;
use crate::reply;

/// Forwards to the origin named by the request's absolute URI. The response timeout and the
/// request metrics are layers around it (`super::layers`).
#[derive(Clone)]
pub struct Forward {
    // One `Arc` for all of it: the forwarder is cloned into every request's future.
    shared: Arc<Shared>,
}

struct Shared {
    client: UpstreamClient,
    metrics: Arc<crate::metrics::Metrics>,
    origins: OriginLimits,
}

impl Forward {
    pub fn new(
        client: UpstreamClient,
        metrics: Arc<crate::metrics::Metrics>,
        per_origin: usize,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                client,
                metrics,
                origins: OriginLimits::new(per_origin),
            }),
        }
    }
}

/// Requests in flight per origin, each holding its place until its response body ends. On
/// an HTTP/1.1 origin each is a connection: without a bound, clients that cancel and resend
/// (h2 streams reset after dispatch) make the pool open connections without end.
struct OriginLimits {
    per_origin: usize,
    origins: dashmap::DashMap<String, Arc<Semaphore>>,
}

impl OriginLimits {
    fn new(per_origin: usize) -> Self {
        Self {
            per_origin: per_origin.max(1),
            origins: dashmap::DashMap::new(),
        }
    }

    fn of(&self, authority: &str) -> Arc<Semaphore> {
        if let Some(limit) = self.origins.get(authority) {
            return limit.clone();
        }
        self.origins
            .entry(authority.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_origin)))
            .clone()
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its origin's place until it ends.
    struct Permitted {
        #[pin]
        inner: hyper::body::Incoming,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl http_body::Body for Permitted {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.permit.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The client's request body, noting when it fails: an h2 upstream connection reports a
    /// request body that broke as its own stream error, without the body's error as source,
    /// and the client's fault would be answered as the upstream's.
    struct Watched {
        #[pin]
        inner: ProxyBody,
        failed: Arc<std::sync::atomic::AtomicBool>,
    }
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, body::BodyError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(Some(Err(_)))) {
            this.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl tower::Service<Request<ProxyBody>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        Box::pin(self.clone().send(req))
    }
}

impl Forward {
    /// One request upstream: a place at its origin, then the response headers. The
    /// `ResponseTimeout` around this service bounds both.
    async fn send(self, mut req: Request<ProxyBody>) -> Result<Response<ProxyBody>, Infallible> {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        prepare(&mut req);
        let permit = match self.place_at(&authority).await {
            Ok(permit) => permit,
            Err(refused) => return Ok(refused),
        };
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let req = req.map(|inner| {
            body::boxed(Watched {
                inner,
                failed: failed.clone(),
            })
        });
        Ok(match self.shared.client.request(req).await {
            Ok(response) => answered(response, permit),
            Err(err) => {
                let body_failed = failed.load(std::sync::atomic::Ordering::Relaxed);
                self.failed(&authority, &err, body_failed)
            }
        })
    }

    /// A place among the origin's requests in flight, waited for until the request's
    /// deadline.
    async fn place_at(&self, authority: &str) -> Result<OwnedSemaphorePermit, Response<ProxyBody>> {
        let origins = &self.shared.origins;
        if let Ok(permit) = origins.of(authority).try_acquire_owned() {
            return Ok(permit);
        }
        crate::metrics::Metrics::count(&self.shared.metrics.limits, &[("limit", "per_origin")]);
        let deadline = Deadline::current();
        match wait_for_place(origins.of(authority), deadline.map(|d| d.at)).await {
            Some(permit) => Ok(permit),
            None => Err(reply::error(
                reply::ErrorKind::UpstreamTimeout,
                format_args!(
                    "upstream {authority}: {} requests already in flight, none ended within {} s",
                    origins.per_origin,
                    deadline.map_or(0, |d| d.within.as_secs())
                ),
            )),
        }
    }

    /// No answer: the client's body broke (its fault), or the origin could not be reached
    /// or failed.
    fn failed(
        &self,
        authority: &str,
        err: &hyper_util::client::legacy::Error,
        body_failed: bool,
    ) -> Response<ProxyBody> {
        let metrics = &self.shared.metrics;
        if reply::client_body_error(err).is_some() || body_failed {
            crate::metrics::Metrics::count(&metrics.client_errors, &[("kind", "request_body")]);
            tracing::info!(event = "bad_request", host = %authority, reason = "the client's request body could not be read", detail = %reply::root_cause(err));
            return reply::error(
                reply::ErrorKind::BadRequestBody,
                format_args!(
                    "the request body could not be read: {}",
                    reply::client_body_error(err)
                        .unwrap_or_else(|| "it broke off or was malformed".into())
                ),
            );
        }
        let kind = if err.is_connect() {
            "connect"
        } else {
            "request"
        };
        crate::metrics::Metrics::count(&metrics.upstream_errors, &[("kind", kind)]);
        tracing::warn!(event = "upstream_error", host = %authority, reason = %reply::root_cause(err), connect = err.is_connect());
        reply::upstream_error(authority, err)
    }
}

/// Waits for a place until `deadline`, or for as long as it takes without one.
///
/// The `ResponseTimeout` around the forwarder fires at this same instant and polls this wait
/// before its own timer: going by the clock, not only by this wait's timer, the refusal
/// names the wait for a place whichever of the two timers the runtime fires first.
async fn wait_for_place(
    limit: Arc<Semaphore>,
    deadline: Option<Instant>,
) -> Option<OwnedSemaphorePermit> {
    let acquire = limit.acquire_owned();
    let Some(deadline) = deadline else {
        return acquire.await.ok();
    };
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(acquire, expiry);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(permit) = acquire.as_mut().poll(cx) {
            return Poll::Ready(permit.ok());
        }
        if expiry.as_mut().poll(cx).is_ready() || Instant::now() >= deadline {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// The origin's answer, streamed back, holding the origin's place until its body ends.
fn answered(
    response: Response<hyper::body::Incoming>,
    permit: OwnedSemaphorePermit,
) -> Response<ProxyBody> {
    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Permitted {
        inner: incoming,
        permit: Some(permit),
    };
    Response::from_parts(parts, body::boxed(body))
}

/// What changes on the way upstream: hop-by-hop headers go, the client derives Host (HTTP/1.1)
/// or :authority (h2) from the URI, and the pooled connection picks the wire version by ALPN
/// (an h2 request on an HTTP/1.1 connection would be refused).
fn prepare(req: &mut Request<ProxyBody>) {
    strip_hop_by_hop(req.headers_mut());
    req.headers_mut().remove(header::HOST);
    *req.version_mut() = Version::HTTP_11;
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the headers that describe one connection rather than the message, including the
/// ones a `Connection` header names. `TE: trailers` survives: gRPC-style clients depend on it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names tells, without the lookups
    // (each a hash) that removing every listed name would cost.
    let any = headers
        .keys()
        .any(|name| name == header::TE || HOP_BY_HOP.contains(&name.as_str()));
    if !any {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    let te_trailers_only = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("trailers"));
    if !te_trailers_only {
        headers.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::metrics::Metrics;
    use crate::proxy::layers::{RequestMetricsLayer, ResponseTimeoutLayer};

    fn forward(metrics: &Arc<Metrics>) -> Forward {
        let tls = crate::tls::upstream_client_config(&[] as &[&str]).unwrap();
        let client = crate::upstream::client(
            tls,
            crate::upstream::ResolveOverrides::new(&[]),
            crate::upstream::OwnListeners::default(),
            &crate::upstream::UpstreamOptions::default(),
        );
        Forward::new(client, metrics.clone(), 1)
    }

    async fn through_stack(
        forward: Forward,
        metrics: &Arc<Metrics>,
        within: std::time::Duration,
        uri: &str,
    ) -> (http::StatusCode, String) {
        let stack = tower::ServiceBuilder::new()
            .layer(ResponseTimeoutLayer::new(within, metrics.clone()))
            .layer(RequestMetricsLayer::new(metrics.clone()))
            .service(forward);
        let req = Request::get(uri).body(body::full("")).unwrap();
        let response = stack.oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn limit(metrics: &Metrics, which: &'static str) -> u64 {
        metrics.limits.get_or_create(&vec![("limit", which)]).get()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_finds_no_place_in_time_is_refused_for_the_place_not_the_headers() {
        let metrics = Arc::new(Metrics::default());
        let forward = forward(&metrics);
        let held = forward
            .shared
            .origins
            .of("origin.test")
            .try_acquire_owned()
            .unwrap();
        // The two timers share one instant: every round must name the wait for a place.
        for round in 1..=20 {
            let within = std::time::Duration::from_millis(5);
            let (status, text) =
                through_stack(forward.clone(), &metrics, within, "http://origin.test/").await;
            assert_eq!(status, http::StatusCode::GATEWAY_TIMEOUT);
            assert_eq!(
                text,
                "grantdoctor: upstream origin.test: 1 requests already in flight, none ended within 0 s\n"
            );
            assert_eq!(limit(&metrics, "per_origin"), round);
            assert_eq!(limit(&metrics, "response_timeout"), 0);
        }
        drop(held);
    }

    #[tokio::test]
    async fn a_place_that_frees_in_time_lets_the_request_go_on() {
        let metrics = Arc::new(Metrics::default());
        let forward = forward(&metrics);
        let held = forward
            .shared
            .origins
            .of("127.0.0.1:1")
            .try_acquire_owned()
            .unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(held);
        });
        let within = std::time::Duration::from_secs(10);
        let (status, text) = through_stack(forward, &metrics, within, "http://127.0.0.1:1/").await;
        assert_eq!(status, http::StatusCode::BAD_GATEWAY, "{text}");
        assert!(text.contains("upstream 127.0.0.1:1 unreachable"), "{text}");
        assert_eq!(limit(&metrics, "per_origin"), 1);
        assert_eq!(limit(&metrics, "response_timeout"), 0);
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic eA=="),
        );
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("content-encoding", HeaderValue::from_static("gzip"));
        headers.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-encoding"]);
    }

    #[test]
    fn te_trailers_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.contains_key("te"));
    }
}
