//! What every forwarded request adds to the proxy's metrics: its wait for response headers
//! (`request_duration`, by host class) and the class of the origin's status (`requests`).
//!
//! Must never: count the proxy's own answers as the origin's statuses; they are counted by
//! what refused them (limits, upstream and client errors).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};

use crate::body::ProxyBody;
use crate::metrics::Metrics;
use crate::reply::{ErrorKind, OwnAnswer};
use crate::route::Route;

/// Wraps a service in [`RequestMetrics`].
#[derive(Clone)]
pub struct RequestMetricsLayer {
    metrics: Arc<Metrics>,
}

impl RequestMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> RequestMetrics<S> {
        RequestMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Records the latency and the status class of each request the inner service answers.
#[derive(Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request<ProxyBody>> for RequestMetrics<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>>,
{
    type Response = Response<ProxyBody>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        // Token exchanges come through here too; they have their own histogram.
        let timed = !crate::token_endpoint::is_token_exchange(&req);
        let host_class = req
            .extensions()
            .get::<Route>()
            .map_or("other", |route| route.host_class);
        MetricsFuture {
            started: Instant::now(),
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
            host_class,
            timed,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, recorded as it comes.
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        metrics: Arc<Metrics>,
        host_class: &'static str,
        timed: bool,
        started: Instant,
    }
}

impl<F, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, E>>,
{
    type Output = Result<Response<ProxyBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = ready!(this.inner.poll(cx));
        if let Ok(response) = &answered {
            record(
                this.metrics,
                this.host_class,
                *this.timed,
                *this.started,
                response,
            );
        }
        Poll::Ready(answered)
    }
}

fn record(
    metrics: &Metrics,
    host_class: &'static str,
    timed: bool,
    started: Instant,
    response: &Response<ProxyBody>,
) {
    let own = response.extensions().get::<OwnAnswer>();
    // A request that found no place in time never waited for headers: it is no latency
    // sample, and its refusal is counted as a limit.
    let refused_in_time = own.is_some_and(|own| own.kind == ErrorKind::UpstreamTimeout);
    if timed && !refused_in_time {
        metrics.request_took(host_class, started.elapsed());
    }
    if own.is_some() {
        return;
    }
    let status_class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    Metrics::count(
        &metrics.requests,
        &[("host_class", host_class), ("status", status_class)],
    );
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http::StatusCode;
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::body;
    use crate::reply;

    fn request(path: &str, observed: bool) -> Request<ProxyBody> {
        let mut req = Request::post(format!("https://login.salesforce.com{path}"))
            .body(body::full(""))
            .unwrap();
        req.extensions_mut().insert(Route::new(
            "login.salesforce.com".into(),
            "login.salesforce.com".into(),
            observed,
            |_, _| "login",
        ));
        req
    }

    fn answering(
        make: fn() -> Response<ProxyBody>,
    ) -> impl tower::Service<
        Request<ProxyBody>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send,
    > + Clone {
        tower::service_fn(move |_req: Request<ProxyBody>| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Infallible>(make())
        })
    }

    fn status(code: u16) -> Response<ProxyBody> {
        let mut response = Response::new(body::full("from the origin"));
        *response.status_mut() = StatusCode::from_u16(code).unwrap();
        response
    }

    fn requests(metrics: &Metrics, status: &'static str) -> u64 {
        metrics
            .requests
            .get_or_create(&vec![("host_class", "login"), ("status", status)])
            .get()
    }

    fn latency_samples(metrics: &Metrics) -> String {
        let text = metrics.render();
        text.lines()
            .find(|line| {
                line.starts_with("grantdoctor_request_duration_seconds_count{host_class=\"login\"}")
            })
            .unwrap_or_default()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    async fn through(
        make: fn() -> Response<ProxyBody>,
        req: Request<ProxyBody>,
    ) -> (Arc<Metrics>, Response<ProxyBody>) {
        let metrics = Arc::new(Metrics::default());
        let service = RequestMetricsLayer::new(metrics.clone()).layer(answering(make));
        let response = service.oneshot(req).await.unwrap();
        (metrics, response)
    }

    #[tokio::test]
    async fn an_origins_answer_passes_through_untouched_and_is_counted_and_timed() {
        let (metrics, response) = through(|| status(404), request("/x", false)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.extensions().get::<OwnAnswer>().is_none());
        assert_eq!(requests(&metrics, "4xx"), 1);
        assert_eq!(requests(&metrics, "2xx"), 0);
        assert_eq!(latency_samples(&metrics), "1");
    }

    #[tokio::test]
    async fn a_token_exchange_is_counted_but_not_timed_here() {
        let (metrics, _) = through(|| status(200), request("/services/oauth2/token", true)).await;
        assert_eq!(requests(&metrics, "2xx"), 1);
        assert_eq!(latency_samples(&metrics), "0");
    }

    #[tokio::test]
    async fn the_proxys_own_answer_is_timed_but_not_counted_as_the_origins_status() {
        let (metrics, response) = through(
            || reply::error(ErrorKind::UpstreamUnreachable, "upstream x unreachable"),
            request("/x", false),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(requests(&metrics, "5xx"), 0);
        assert_eq!(latency_samples(&metrics), "1");
    }

    #[tokio::test]
    async fn a_request_refused_for_want_of_a_place_in_time_is_not_timed() {
        let (metrics, response) = through(
            || reply::error(ErrorKind::UpstreamTimeout, "none ended in time"),
            request("/x", false),
        )
        .await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(requests(&metrics, "5xx"), 0);
        assert_eq!(latency_samples(&metrics), "0");
    }
}
