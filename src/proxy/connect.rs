//! CONNECT: refuse what is not allowed, dial blind-tunnel targets before answering `200`
//! (so an unreachable origin becomes a `502` that says why), then decide on the ClientHello's
//! server name whether to intercept or to tunnel.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{self, ProxyBody};
use crate::upstream;

use super::hello::{Opening, peek_opening};
use super::lifecycle::Hold;
use super::{ProxyState, mitm, tunnel};
use crate::reply::{self, ErrorKind};

/// Answers a CONNECT and, on success, takes over the upgraded connection in a task of its own.
/// A refused CONNECT also closes the connection: the client asked for a tunnel, not a session.
pub async fn handle(req: Request<Incoming>, state: Arc<ProxyState>) -> Response<ProxyBody> {
    let mut response = open(req, state).await;
    if response.status() != StatusCode::OK {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The origin of a tunnel that is not intercepted, dialled before the client is told 200.
async fn dial(
    state: &ProxyState,
    authority: &http::uri::Authority,
    host: &str,
    port: u16,
) -> Result<tokio::net::TcpStream, Response<ProxyBody>> {
    match upstream::dial(
        &state.overrides,
        &state.own_addrs,
        host,
        port,
        state.options.connect_timeout,
    )
    .await
    {
        Ok(stream) => Ok(stream),
        Err(e) if upstream::loop_in(&e).is_some() => Err(reply::error(
            ErrorKind::Loop,
            format_args!("CONNECT {authority}: that is grantdoctor itself, the tunnel would loop"),
        )),
        Err(e) => {
            crate::metrics::Metrics::count(&state.metrics.upstream_errors, &[("kind", "connect")]);
            tracing::warn!(event = "upstream_error", host = %authority, reason = %e, connect = true);
            Err(reply::error(
                ErrorKind::UpstreamUnreachable,
                format_args!("upstream {authority} unreachable: {e}"),
            ))
        }
    }
}

async fn open(mut req: Request<Incoming>, state: Arc<ProxyState>) -> Response<ProxyBody> {
    let Some(authority) = req.uri().authority().cloned() else {
        return reply::error(
            ErrorKind::BadRequest,
            "CONNECT needs an authority-form target: CONNECT host:port",
        );
    };
    let host = authority.host().to_owned();
    let Some(port) = authority.port_u16() else {
        return reply::error(
            ErrorKind::BadRequest,
            format_args!("CONNECT {host}: the target has no port"),
        );
    };
    if !state.options.connect_ports.contains(&port) {
        return reply::error(
            ErrorKind::PortNotAllowed,
            format_args!(
                "CONNECT to port {port} is not allowed (allowed: {})",
                join(&state.options.connect_ports)
            ),
        );
    }
    if state.loops_back(&host, port) {
        return reply::error(
            ErrorKind::Loop,
            format_args!("CONNECT {authority}: that is grantdoctor itself, the tunnel would loop"),
        );
    }
    let intercept_hint = state.policy.matches(&host);
    let origin = if intercept_hint {
        None
    } else {
        match dial(&state, &authority, &host, port).await {
            Ok(stream) => Some(stream),
            Err(refused) => return refused,
        }
    };
    // The tunnel keeps the connection's place under --max-connections (and in the drain)
    // until it closes.
    let hold = req.extensions_mut().remove::<Hold>();
    tokio::spawn(async move {
        let _hold = hold;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let target = Target { host, port };
                after_connect(
                    TokioIo::new(upgraded),
                    target,
                    origin,
                    intercept_hint,
                    state,
                )
                .await
            }
            Err(e) => tracing::debug!(event = "tunnel", outcome = "upgrade_failed", reason = %e),
        }
    });
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    response
}

/// The host and port a CONNECT named.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `host` or `host:port`, as it belongs in a URI for this target.
    pub fn authority_for(&self, host: &str) -> String {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

async fn after_connect(
    mut client: TokioIo<hyper::upgrade::Upgraded>,
    target: Target,
    origin: Option<TcpStream>,
    intercept_hint: bool,
    state: Arc<ProxyState>,
) {
    let wait = if intercept_hint {
        state.options.header_timeout
    } else {
        state.options.tunnel_peek_timeout
    };
    let (prefix, opening) = match peek_opening(&mut client, wait).await {
        Ok(peeked) => peeked,
        Err(e) => {
            tracing::debug!(event = "tunnel", host = %target.host, outcome = "read_failed", reason = %e);
            return;
        }
    };
    match opening {
        Opening::Closed => {}
        Opening::Tls { sni } => {
            let name = sni.clone().unwrap_or_else(|| target.host.clone());
            if state.policy.matches(&name) {
                crate::metrics::Metrics::count(
                    &state.metrics.connections,
                    &[("mode", "intercept")],
                );
                mitm::serve(client, prefix, sni.is_some(), &name, &target, state).await;
            } else {
                tunnel_to(client, prefix, origin, &target, &state).await;
            }
        }
        Opening::NotTls { .. } | Opening::Silent if !intercept_hint => {
            tunnel_to(client, prefix, origin, &target, &state).await;
        }
        Opening::NotTls { reason } => {
            tracing::warn!(event = "tunnel_refused", host = %target.host, reason);
        }
        Opening::Silent => {
            tracing::info!(event = "tunnel_refused", host = %target.host, reason = "no TLS ClientHello before the timeout");
        }
    }
}

async fn tunnel_to(
    client: TokioIo<hyper::upgrade::Upgraded>,
    prefix: Bytes,
    origin: Option<TcpStream>,
    target: &Target,
    state: &ProxyState,
) {
    let origin = match origin {
        Some(origin) => origin,
        // The CONNECT host looked intercepted but the SNI did not: dial now, after the 200.
        None => match upstream::dial(
            &state.overrides,
            &state.own_addrs,
            &target.host,
            target.port,
            state.options.connect_timeout,
        )
        .await
        {
            Ok(origin) => origin,
            Err(e) => {
                tracing::warn!(event = "upstream_error", host = %target.host, port = target.port, reason = %e, connect = true);
                return;
            }
        },
    };
    crate::metrics::Metrics::count(&state.metrics.connections, &[("mode", "tunnel")]);
    tunnel::run(
        client,
        prefix,
        origin,
        &target.authority_for(&target.host),
        state.options.idle_timeout,
        &state.metrics,
    )
    .await;
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
