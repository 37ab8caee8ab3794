//! The admin port: `/healthz`, `/readyz`, `/metrics`, `/ca.pem`, `/events?limit=N`, and the
//! operator's page and its JSON (`/`, `/events/stream`, `/api/…`: see [`crate::web`]).
//!
//! Must never: serve the CA key, or anything but the CA certificate from the CA directory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body::{self, ProxyBody};
use crate::health::Readiness;
use crate::metrics::Metrics;

/// What the admin port reports on.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub ca_pem: String,
    /// Draining (503) or degraded (200, with the reason) — shared with the proxy and ledger.
    pub health: Arc<crate::health::Health>,
    /// The token path's observer, for the ledger the page's token families are read from.
    pub observer: Arc<crate::token_endpoint::Observer>,
}

impl Admin {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
        TcpListener::bind(addr).await
    }

    /// Serves until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.route(&req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn route(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        if req.method() != Method::GET {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => match self.health.readiness() {
                Readiness::Ready => text(StatusCode::OK, "text/plain", "ok\n".into()),
                // Still 200: a failing part does not stop the traffic that flows through.
                Readiness::Degraded(reason) => text(
                    StatusCode::OK,
                    "text/plain",
                    format!("degraded: {reason}\n"),
                ),
                Readiness::Unready(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("unready: {reason}\n"),
                ),
                Readiness::Draining => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "draining\n".into(),
                ),
            },
            "/metrics" => {
                // Read at scrape time: the counts cost a pass over the families, not the tokens.
                self.metrics.set_ledger_sizes(self.observer.ledger.sizes());
                text(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.metrics.render(),
                )
            }
            "/ca.pem" => text(
                StatusCode::OK,
                "application/x-pem-file",
                self.ca_pem.clone(),
            ),
            "/events" => crate::web::recent_events(req.uri().query()),
            path => match crate::web::route(path, req.uri().query(), &self.observer.ledger).await {
                Some(response) => response,
                None => text(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "not found: / /healthz /readyz /metrics /ca.pem /events /events/stream /api/events /api/families\n".into(),
                ),
            },
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(body::full(body))
        .expect("valid response")
}
