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

use crate::body::{self, ProxyBody};
use crate::upstream::UpstreamClient;

use crate::reply;
use crate::route::Route;

/// Forwards to the origin named by the request's absolute URI.
#[derive(Clone)]
pub struct Forward {
    client: UpstreamClient,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    response_timeout: std::time::Duration,
    origins: OriginLimits,
}

impl Forward {
    pub fn new(
        client: UpstreamClient,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        response_timeout: std::time::Duration,
        per_origin: usize,
    ) -> Self {
        Self {
            client,
            metrics,
            response_timeout,
            origins: OriginLimits::new(per_origin),
        }
    }
}

/// Requests in flight per origin, each holding its place until its response body ends. On
/// an HTTP/1.1 origin each is a connection: without a bound, clients that cancel and resend
/// (h2 streams reset after dispatch) make the pool open connections without end.
#[derive(Clone)]
struct OriginLimits {
    per_origin: usize,
    origins: Arc<dashmap::DashMap<String, Arc<Semaphore>>>,
}

impl OriginLimits {
    fn new(per_origin: usize) -> Self {
        Self {
            per_origin: per_origin.max(1),
            origins: Arc::default(),
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
    /// One request upstream: a place at its origin, then the response headers, both within
    /// the response timeout.
    async fn send(self, mut req: Request<ProxyBody>) -> Result<Response<ProxyBody>, Infallible> {
        let started = std::time::Instant::now();
        // Token exchanges come through here too; they have their own histogram.
        let timed = !crate::token_endpoint::is_token_exchange(&req);
        let host_class = req
            .extensions()
            .get::<Route>()
            .map_or("other", |route| route.host_class);
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        prepare(&mut req);
        let deadline = tokio::time::Instant::now() + self.response_timeout;
        let permit = match self.place_at(&authority, deadline).await {
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
        let Ok(sent) = tokio::time::timeout_at(deadline, self.client.request(req)).await else {
            crate::metrics::Metrics::count(&self.metrics.limits, &[("limit", "response_timeout")]);
            tracing::warn!(event = "upstream_error", host = %authority, reason = "no response headers in time", connect = false);
            return Ok(reply::error(
                reply::ErrorKind::UpstreamTimeout,
                format_args!(
                    "upstream {authority} sent no response within {} s",
                    self.response_timeout.as_secs()
                ),
            ));
        };
        if timed {
            self.metrics.request_took(host_class, started.elapsed());
        }
        Ok(match sent {
            Ok(response) => self.answered(host_class, response, permit),
            Err(err) => {
                let body_failed = failed.load(std::sync::atomic::Ordering::Relaxed);
                self.failed(&authority, &err, body_failed)
            }
        })
    }

    /// A place among the origin's requests in flight, waited for until the deadline.
    async fn place_at(
        &self,
        authority: &str,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, Response<ProxyBody>> {
        if let Ok(permit) = self.origins.of(authority).try_acquire_owned() {
            return Ok(permit);
        }
        crate::metrics::Metrics::count(&self.metrics.limits, &[("limit", "per_origin")]);
        match tokio::time::timeout_at(deadline, self.origins.of(authority).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(reply::error(
                reply::ErrorKind::UpstreamTimeout,
                format_args!(
                    "upstream {authority}: {} requests already in flight, none ended within {} s",
                    self.origins.per_origin,
                    self.response_timeout.as_secs()
                ),
            )),
        }
    }

    /// The origin's answer, streamed back, holding the origin's place until its body ends.
    fn answered(
        &self,
        host_class: &'static str,
        response: Response<hyper::body::Incoming>,
        permit: OwnedSemaphorePermit,
    ) -> Response<ProxyBody> {
        let status_class = match response.status().as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        crate::metrics::Metrics::count(
            &self.metrics.requests,
            &[("host_class", host_class), ("status", status_class)],
        );
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = Permitted {
            inner: incoming,
            permit: Some(permit),
        };
        Response::from_parts(parts, body::boxed(body))
    }

    /// No answer: the client's body broke (its fault), or the origin could not be reached
    /// or failed.
    fn failed(
        &self,
        authority: &str,
        err: &hyper_util::client::legacy::Error,
        body_failed: bool,
    ) -> Response<ProxyBody> {
        if reply::client_body_error(err).is_some() || body_failed {
            crate::metrics::Metrics::count(
                &self.metrics.client_errors,
                &[("kind", "request_body")],
            );
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
        crate::metrics::Metrics::count(&self.metrics.upstream_errors, &[("kind", kind)]);
        tracing::warn!(event = "upstream_error", host = %authority, reason = %reply::root_cause(err), connect = err.is_connect());
        reply::upstream_error(authority, err)
    }
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
