//! Intercepted connections: TLS terminated with a leaf for the server name, then HTTP/1.1 or
//! h2 (by ALPN) served request by request through the exchange stack.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::body::ProxyBody;

use super::ProxyState;
use super::connect::Target;
use super::lifecycle::{CANCEL_WINDOW, MAX_CANCELLED, Requests, until_draining};
use super::linger::Linger;
use super::rewind::Rewind;
use crate::reply::{self, ErrorKind};
use crate::route::Route;

pub async fn serve(
    client: TokioIo<hyper::upgrade::Upgraded>,
    prefix: Bytes,
    sni_present: bool,
    name: &str,
    target: &Target,
    state: Arc<ProxyState>,
) {
    let Some(tls) = handshake(client, prefix, sni_present, name, &state).await else {
        return;
    };
    let host = name.to_ascii_lowercase();
    let authority = target.authority_for(&host);
    let route = Route::new(host, authority, true, state.host_class);
    // Parsed once: every request's URI is built from it and the request's own path.
    let authority = route.authority.parse::<Authority>().ok();
    let header_timeout = state.options.header_timeout;
    let max_header_bytes = state.options.max_header_bytes.max(8192);
    let mut draining = state.draining.subscribe();
    let metrics = state.metrics.clone();
    let requests = Arc::new(Requests::default());
    let tracked = requests.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        let route = route.clone();
        let authority = authority.clone();
        let request = tracked.start();
        async move {
            let response = handle(req, route, authority, &state).await;
            request.finish();
            Ok::<_, Infallible>(response)
        }
    });
    let builder = builder(header_timeout, max_header_bytes);
    let (tls, linger) = Linger::new(tls);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    // Idle means no request in flight: before the first one, and between keep-alive
    // requests. A graceful shutdown lets requests in flight finish (h2: GOAWAY first).
    let ended = tokio::select! {
        result = conn.as_mut() => Some(result),
        () = until_draining(&mut draining) => {
            // A client that has just opened the tunnel is about to send its request: serve
            // that one before closing, rather than close under it.
            let deadline = tokio::time::Instant::now() + header_timeout;
            let mut ended = None;
            while ended.is_none() && requests.served() == 0 && tokio::time::Instant::now() < deadline {
                tokio::select! {
                    result = conn.as_mut() => ended = Some(result),
                    () = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
                }
            }
            ended
        }
        () = requests.idle_for(header_timeout) => {
            crate::metrics::Metrics::count(&metrics.limits, &[("limit", "intercept_idle")]);
            tracing::debug!(event = "intercept_closed", host = name, reason = "no request within the header timeout");
            None
        }
        () = requests.abusive() => {
            crate::metrics::Metrics::count(&metrics.limits, &[("limit", "client_cancels")]);
            tracing::warn!(event = "client_refused", host = name, reason = "too many streams cancelled after dispatch: connection told to go away", limit = MAX_CANCELLED, window_s = CANCEL_WINDOW.as_secs());
            None
        }
    };
    let result = match ended {
        Some(result) => result,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        linger.arm();
        tracing::debug!(event = "intercept_closed", host = name, reason = %e);
    }
}

/// The client's TLS handshake, under a leaf for the name it asked for.
async fn handshake(
    client: TokioIo<hyper::upgrade::Upgraded>,
    prefix: Bytes,
    sni_present: bool,
    name: &str,
    state: &ProxyState,
) -> Option<tokio_rustls::server::TlsStream<Rewind<TokioIo<hyper::upgrade::Upgraded>>>> {
    let config = match state.tls.config_for(sni_present, name) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(event = "mint_failed", host = name, reason = %e);
            return None;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // The ClientHello is in already: a client that stalls the rest of the handshake gets
    // the same bound as one that stalls a request head.
    let handshake = acceptor.accept(Rewind::new(prefix, client));
    let accepted = tokio::time::timeout(state.options.header_timeout, handshake)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    match accepted {
        Ok(tls) => Some(tls),
        Err(e) => {
            state.metrics.client_tls_failed(&e);
            // Most often the client does not trust our CA yet; say where it is.
            tracing::warn!(
                event = "client_tls_failed",
                host = name,
                reason = %e,
                hint = "the client must trust the grantdoctor CA (ca.pem or bundle.pem in the CA directory)"
            );
            None
        }
    }
}

/// HTTP/1.1 or h2 by ALPN, with the head limits of every listener.
fn builder(
    header_timeout: std::time::Duration,
    max_header_bytes: usize,
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Some(header_timeout))
        .max_buf_size(max_header_bytes);
    builder
        .http2()
        .max_header_list_size(max_header_bytes as u32);
    builder
}

async fn handle(
    mut req: Request<Incoming>,
    route: Route,
    authority: Option<Authority>,
    state: &ProxyState,
) -> Response<ProxyBody> {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // `*` and other targets that are not a path are refused, as is a name that makes no
    // authority.
    let uri = match authority {
        Some(authority) if path.as_str().starts_with('/') => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTPS);
            parts.authority = Some(authority);
            parts.path_and_query = Some(path);
            Uri::from_parts(parts).ok()
        }
        _ => None,
    };
    let Some(uri) = uri else {
        return reply::error(ErrorKind::BadRequest, "request target is not a valid path");
    };
    *req.uri_mut() = uri;
    state.dispatch(req, route).await
}
