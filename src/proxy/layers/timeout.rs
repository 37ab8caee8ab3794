//! `--response-timeout`: one deadline for a forwarded request's wait for a place at its
//! origin and its wait for response headers, answered with a `504` when it passes.
//!
//! Must never: bound the response body, which streams for as long as it takes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::metrics::Metrics;
use crate::reply;

/// The deadline of the request being served, for the waits inside that answer for
/// themselves (the wait for a place at the origin names its own cause).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    /// The `--response-timeout` the deadline was set from, for the wording of a refusal.
    pub within: Duration,
}

tokio::task_local! {
    // A task-local rather than a request extension: an extension is one more allocation per
    // request, and only futures polled inside this layer's read it.
    static DEADLINE: Deadline;
}

impl Deadline {
    /// The deadline a [`ResponseTimeout`] around the caller set, while its request is being
    /// called or polled; `None` outside one.
    pub fn current() -> Option<Self> {
        DEADLINE.try_with(|deadline| *deadline).ok()
    }
}

/// Wraps a service in [`ResponseTimeout`].
#[derive(Clone)]
pub struct ResponseTimeoutLayer {
    within: Duration,
    metrics: Arc<Metrics>,
}

impl ResponseTimeoutLayer {
    pub fn new(within: Duration, metrics: Arc<Metrics>) -> Self {
        Self { within, metrics }
    }
}

impl<S> tower::Layer<S> for ResponseTimeoutLayer {
    type Service = ResponseTimeout<S>;

    fn layer(&self, inner: S) -> ResponseTimeout<S> {
        ResponseTimeout {
            inner,
            within: self.within,
            metrics: self.metrics.clone(),
        }
    }
}

/// Answers `504 upstream-timeout` when the inner service has not answered within the
/// response timeout, counting `limits{limit="response_timeout"}`.
#[derive(Clone)]
pub struct ResponseTimeout<S> {
    inner: S,
    within: Duration,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request<ProxyBody>> for ResponseTimeout<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>>,
{
    type Response = Response<ProxyBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        let deadline = Deadline {
            at: Instant::now() + self.within,
            within: self.within,
        };
        let authority = req.uri().authority().cloned();
        let inner = &mut self.inner;
        let called = DEADLINE.sync_scope(deadline, || inner.call(req));
        ResponseFuture {
            inner: tokio::time::timeout_at(deadline.at, DEADLINE.scope(deadline, called)),
            authority,
            within: self.within,
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, or the proxy's `504` once the deadline passes.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<TaskLocalFuture<Deadline, F>>,
        authority: Option<Authority>,
        within: Duration,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, E>>,
{
    type Output = Result<Response<ProxyBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(answered) => Poll::Ready(answered),
            Err(_elapsed) => {
                let authority = this.authority.as_ref().map_or("", Authority::as_str);
                Poll::Ready(Ok(expired(authority, *this.within, this.metrics)))
            }
        }
    }
}

fn expired(authority: &str, within: Duration, metrics: &Metrics) -> Response<ProxyBody> {
    Metrics::count(&metrics.limits, &[("limit", "response_timeout")]);
    tracing::warn!(event = "upstream_error", host = %authority, reason = "no response headers in time", connect = false);
    reply::error(
        reply::ErrorKind::UpstreamTimeout,
        format_args!(
            "upstream {authority} sent no response within {} s",
            within.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::body;

    fn request() -> Request<ProxyBody> {
        Request::get("http://origin.test:8080/slow")
            .body(body::full(""))
            .unwrap()
    }

    fn timed_out(metrics: &Metrics) -> u64 {
        metrics
            .limits
            .get_or_create(&vec![("limit", "response_timeout")])
            .get()
    }

    async fn text(response: Response<ProxyBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Answers `204` after `delay`, having seen the deadline it was called under.
    fn answering_after(
        delay: Duration,
    ) -> impl tower::Service<
        Request<ProxyBody>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send,
    > + Clone {
        tower::service_fn(move |_req: Request<ProxyBody>| {
            let in_call = Deadline::current();
            async move {
                assert!(in_call.is_some(), "the deadline is set while calling");
                assert!(Deadline::current().is_some(), "and while polling");
                tokio::time::sleep(delay).await;
                let mut response = Response::new(body::full("from the origin"));
                *response.status_mut() = StatusCode::NO_CONTENT;
                Ok::<_, Infallible>(response)
            }
        })
    }

    #[tokio::test]
    async fn an_inner_service_slower_than_the_timeout_is_answered_with_a_504_and_counted() {
        let metrics = Arc::new(Metrics::default());
        let layer = ResponseTimeoutLayer::new(Duration::from_millis(50), metrics.clone());
        let service = layer.layer(answering_after(Duration::from_secs(30)));
        let started = std::time::Instant::now();
        let response = service.oneshot(request()).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.headers()[reply::ERROR_HEADER], "upstream-timeout");
        assert_eq!(
            text(response).await,
            "grantdoctor: upstream origin.test:8080 sent no response within 0 s\n"
        );
        assert_eq!(timed_out(&metrics), 1);
    }

    #[tokio::test]
    async fn an_inner_service_within_the_timeout_passes_through_untouched() {
        let metrics = Arc::new(Metrics::default());
        let layer = ResponseTimeoutLayer::new(Duration::from_secs(30), metrics.clone());
        let service = layer.layer(answering_after(Duration::from_millis(1)));
        let response = service.oneshot(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.headers().get(reply::ERROR_HEADER).is_none());
        assert_eq!(text(response).await, "from the origin");
        assert_eq!(timed_out(&metrics), 0);
    }

    #[tokio::test]
    async fn the_inner_service_sees_the_deadline_the_timeout_fires_at() {
        let within = Duration::from_secs(7);
        let seen = Arc::new(std::sync::Mutex::new(None));
        let service = tower::service_fn({
            let seen = seen.clone();
            move |_req: Request<ProxyBody>| {
                let seen = seen.clone();
                async move {
                    *seen.lock().unwrap() = Deadline::current();
                    Ok::<_, Infallible>(Response::new(body::full("")))
                }
            }
        });
        let layer = ResponseTimeoutLayer::new(within, Arc::new(Metrics::default()));
        let before = Instant::now();
        layer.layer(service).oneshot(request()).await.unwrap();
        let after = Instant::now();
        let deadline = seen.lock().unwrap().expect("set by the layer");
        assert_eq!(deadline.within, within);
        assert!(before + within <= deadline.at && deadline.at <= after + within);
        assert!(Deadline::current().is_none(), "not outside the layer");
    }
}
