//! The token-endpoint path: the one place where a request is buffered instead of streamed.
//!
//! Requests to `POST /services/oauth2/token` on intercepted hosts come through here; the
//! request body is buffered (capped) so the exchange can be observed, then forwarded
//! unchanged. Everything else passes straight to the inner service.
//!
//! Must never: log, count or keep a parameter value other than `grant_type`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, header};
use http_body_util::BodyExt;

use crate::body::{self, ProxyBody};
use crate::proxy::Route;
use crate::proxy::reply::{self, ErrorKind};

pub const TOKEN_PATH: &str = "/services/oauth2/token";

/// Wraps a service with token-endpoint observation.
#[derive(Debug, Clone)]
pub struct TokenEndpointLayer {
    max_request_body: usize,
}

impl Default for TokenEndpointLayer {
    fn default() -> Self {
        Self {
            max_request_body: 64 * 1024,
        }
    }
}

impl<S> tower::Layer<S> for TokenEndpointLayer {
    type Service = TokenEndpoint<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TokenEndpoint {
            inner,
            max_request_body: self.max_request_body,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenEndpoint<S> {
    inner: S,
    max_request_body: usize,
}

/// Whether a request is a token exchange we observe.
pub fn is_token_exchange<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST
        && req.uri().path() == TOKEN_PATH
        && req.extensions().get::<Route>().is_some_and(|r| r.observed)
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<Request<ProxyBody>> for TokenEndpoint<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        if !is_token_exchange(&req) {
            return Box::pin(self.inner.call(req));
        }
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cap = self.max_request_body;
        Box::pin(async move {
            let started = Instant::now();
            let host = req
                .extensions()
                .get::<Route>()
                .map(|r| r.host.clone())
                .unwrap_or_default();
            let (parts, incoming) = req.into_parts();
            let (body, facts) = match buffer_capped(incoming, cap).await {
                Ok(Buffered::Complete(bytes)) => {
                    let grant_type = grant_type(&parts, &bytes);
                    (body::full(bytes), Facts::Read { grant_type })
                }
                Ok(Buffered::TooLarge(rest)) => {
                    (rest, Facts::NotInspected("request body over the cap"))
                }
                Err(e) => {
                    tracing::info!(event = "token_exchange", host, outcome = "client_body_failed", reason = %reply::root_cause(&e));
                    return Ok(reply::error(
                        ErrorKind::BadRequest,
                        "the request body could not be read",
                    ));
                }
            };
            let response = inner.call(Request::from_parts(parts, body)).await?;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let status = response.status().as_u16();
            match facts {
                Facts::Read { grant_type } => tracing::info!(
                    event = "token_exchange",
                    host,
                    grant_type = grant_type.as_deref().unwrap_or("(none)"),
                    status,
                    latency_ms
                ),
                Facts::NotInspected(reason) => {
                    tracing::info!(event = "not_inspected", host, reason, status, latency_ms)
                }
            }
            Ok(response)
        })
    }
}

enum Facts {
    Read { grant_type: Option<String> },
    NotInspected(&'static str),
}

enum Buffered {
    Complete(Bytes),
    /// Over the cap: the bytes read so far followed by the rest, to forward unchanged.
    TooLarge(ProxyBody),
}

async fn buffer_capped(mut body: ProxyBody, cap: usize) -> Result<Buffered, body::BodyError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > cap {
                return Ok(Buffered::TooLarge(body::prefixed(buf.freeze(), body)));
            }
        }
        // Trailers on a form post are meaningless to Salesforce; they are not forwarded.
    }
    Ok(Buffered::Complete(buf.freeze()))
}

/// `grant_type` from a form body, or from the query string (Salesforce accepts both).
fn grant_type(parts: &http::request::Parts, body: &[u8]) -> Option<String> {
    let find = |bytes: &[u8]| {
        form_urlencoded::parse(bytes)
            .find(|(k, _)| k == "grant_type")
            .map(|(_, v)| v.into_owned())
    };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    is_form
        .then(|| find(body))
        .flatten()
        .or_else(|| parts.uri.query().and_then(|q| find(q.as_bytes())))
}
