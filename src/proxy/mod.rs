//! Bytes and connections: the listener, CONNECT routing, blind tunnels, interception and
//! plain forwarding. Knows nothing of OAuth; token exchanges are handed to the exchange
//! stack, which it treats as any other `tower::Service`.
//!
//! Must never: decrypt a host the intercept policy does not name, or alter a response body.

mod access;
mod connect;
mod forward;
pub mod gateway;
mod hello;
mod intercept;
mod layers;
mod lifecycle;
mod linger;
mod mitm;
mod rewind;
mod tunnel;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::body::{self, ProxyBody};
use crate::tls::InterceptTls;
use crate::token_endpoint::TokenEndpoint;
use crate::upstream::{ResolveOverrides, UpstreamClient};

use crate::reply::{self, ErrorKind};
use crate::route::{HostClassifier, Route};
pub use access::{AccessError, AccessPolicy};
pub use forward::{Forward, strip_hop_by_hop};
pub use hello::{Opening, peek_opening};
pub use intercept::{DEFAULT_INTERCEPT, InterceptPolicy, PatternError};
pub use layers::{RequestMetrics, ResponseTimeout};
use lifecycle::{Held, Hold};
use rewind::Rewind;

/// Limits and timeouts of the proxy side.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Ports CONNECT may reach.
    pub connect_ports: Vec<u16>,
    /// Dialling an origin for a tunnel.
    pub connect_timeout: Duration,
    /// Reading a request head (slowloris), and a ClientHello on an intercepted tunnel.
    pub header_timeout: Duration,
    /// How long a non-intercepted tunnel waits for the client's first bytes before it is
    /// tunnelled anyway (protocols where the server speaks first).
    pub tunnel_peek_timeout: Duration,
    /// A blind tunnel with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Waiting for an upstream's response headers.
    pub response_timeout: Duration,
    /// Largest request head accepted (HTTP/1.1 buffer, h2 header list).
    pub max_header_bytes: usize,
    /// Client connections served at once; the excess is refused with a `503`.
    pub max_connections: usize,
    /// After SIGTERM, how long in-flight requests may take before the process exits.
    pub drain_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            connect_ports: vec![443],
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            tunnel_peek_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(300),
            response_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_connections: 4096,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// The service stack every forwarded request goes through, outermost first.
pub type ExchangeStack = TokenEndpoint<ResponseTimeout<RequestMetrics<Forward>>>;

/// Everything a connection needs, shared by all of them.
pub struct ProxyState {
    pub metrics: Arc<crate::metrics::Metrics>,
    pub access: AccessPolicy,
    /// `--gateway` rules: origin-form requests forwarded to Salesforce hosts.
    pub gateway: Vec<gateway::GatewayRule>,
    connections: Arc<tokio::sync::Semaphore>,
    draining: tokio::sync::watch::Sender<bool>,
    /// Readiness: the drain marks it at once, before the listener closes.
    pub health: Arc<crate::health::Health>,
    /// The proxy's own listeners: a request to one of them would loop back into the proxy.
    pub own_addrs: crate::upstream::OwnListeners,
    pub policy: InterceptPolicy,
    pub tls: InterceptTls,
    pub overrides: ResolveOverrides,
    pub exchange: ExchangeStack,
    pub options: ProxyOptions,
    /// Names each route's host class for metric labels.
    pub host_class: HostClassifier,
}

impl ProxyState {
    pub fn new(
        policy: InterceptPolicy,
        tls: InterceptTls,
        overrides: ResolveOverrides,
        client: UpstreamClient,
        observer: Arc<crate::token_endpoint::Observer>,
        options: ProxyOptions,
        host_class: HostClassifier,
    ) -> Self {
        let metrics = observer.metrics.clone();
        let exchange = tower::ServiceBuilder::new()
            .layer(crate::token_endpoint::TokenEndpointLayer::new(observer))
            .layer(layers::ResponseTimeoutLayer::new(
                options.response_timeout,
                metrics.clone(),
            ))
            .layer(layers::RequestMetricsLayer::new(metrics.clone()))
            .service(Forward::new(
                client,
                metrics.clone(),
                options.max_connections,
            ));
        Self {
            access: AccessPolicy::default(),
            gateway: Vec::new(),
            connections: Arc::new(tokio::sync::Semaphore::new(options.max_connections)),
            draining: tokio::sync::watch::channel(false).0,
            health: Arc::default(),
            own_addrs: crate::upstream::OwnListeners::default(),
            metrics,
            policy,
            tls,
            overrides,
            exchange,
            options,
            host_class,
        }
    }
}

impl ProxyState {
    /// Whether `host:port` is one of the proxy's own listeners (by address, `localhost`, or a
    /// `--resolve` override pointing at one).
    pub fn loops_back(&self, host: &str, port: u16) -> bool {
        let Some(own) = self.own_addrs.get() else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let target = self.overrides.lookup(host, port).or_else(|| {
            let ip = if host.eq_ignore_ascii_case("localhost") {
                Some(std::net::IpAddr::from([127, 0, 0, 1]))
            } else {
                host.parse().ok()
            };
            ip.map(|ip| SocketAddr::new(ip, port))
        });
        target.is_some_and(|t| {
            own.iter().any(|o| {
                o.port() == t.port()
                    && (o.ip() == t.ip()
                        || o.ip().is_unspecified()
                        || (o.ip().is_loopback() && t.ip().is_loopback()))
            })
        })
    }
}

/// The bound listener, ready to serve.
pub struct Proxy {
    listener: TcpListener,
    state: Arc<ProxyState>,
}

impl Proxy {
    pub async fn bind(addr: SocketAddr, state: Arc<ProxyState>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, state })
    }

    pub fn state(&self) -> &Arc<ProxyState> {
        &self.state
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` completes, then drains: `/readyz` fails at once,
    /// open connections finish the request they are serving (idle keep-alive connections
    /// close at once, intercepted ones after their in-flight requests), bounded by the drain
    /// timeout. A tunnel holds its connection's place until it closes, so blind tunnels are
    /// waited for too.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failing = AcceptFailures::default();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        failing.recovered();
                        self.admit(stream, peer);
                    }
                    Err(e) => {
                        let pause = failing.failed(&e, &self.state.metrics);
                        tokio::time::sleep(pause).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        self.state.health.start_draining();
        drop(self.listener);
        let _ = self.state.draining.send(true);
        let max = self.state.options.max_connections as u32;
        let drained = tokio::time::timeout(
            self.state.options.drain_timeout,
            self.state.connections.acquire_many(max),
        )
        .await;
        let open = max as usize - self.state.connections.available_permits();
        match drained {
            Ok(_) => tracing::info!(event = "drained"),
            Err(_) => tracing::warn!(event = "drain_timeout", open_connections = open),
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        if !self.state.access.admits(peer.ip()) {
            tracing::warn!(event = "client_refused", peer = %peer, reason = "not in --allow-clients");
            return;
        }
        let Ok(permit) = self.state.connections.clone().try_acquire_owned() else {
            crate::metrics::Metrics::count(
                &self.state.metrics.limits,
                &[("limit", "max_connections")],
            );
            tokio::spawn(refuse(
                stream,
                "503 Service Unavailable",
                "too many connections: the proxy is at --max-connections",
            ));
            return;
        };
        let held = Held::new(permit, self.state.metrics.clone());
        tokio::spawn(serve_client(stream, peer, self.state.clone(), held));
    }
}

/// Failures of `accept` (out of file descriptors, most often): backed off exponentially
/// instead of retried in a loop, counted, and logged once per outage.
#[derive(Default)]
struct AcceptFailures {
    /// Failures since the last success, and the current pause.
    run: Option<(u64, Duration)>,
}

impl AcceptFailures {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    fn failed(&mut self, e: &std::io::Error, metrics: &crate::metrics::Metrics) -> Duration {
        use rustix::io::Errno;
        let errno = e.raw_os_error().map(Errno::from_raw_os_error);
        let reason = match errno {
            Some(Errno::MFILE) | Some(Errno::NFILE) => "fd_limit",
            Some(Errno::NOBUFS) | Some(Errno::NOMEM) => "memory",
            _ => "other",
        };
        crate::metrics::Metrics::count(&metrics.accept_failures, &[("reason", reason)]);
        let (count, pause) = match self.run {
            None => {
                tracing::warn!(event = "accept_failed", reason = %e, kind = reason, note = "backing off; further failures are counted in grantdoctor_accept_failures_total until accept succeeds");
                (1, Self::FIRST_PAUSE)
            }
            Some((count, pause)) => (count + 1, (pause * 2).min(Self::MAX_PAUSE)),
        };
        self.run = Some((count, pause));
        pause
    }

    fn recovered(&mut self) {
        if let Some((failures, _)) = self.run.take() {
            tracing::info!(event = "accept_recovered", failures);
        }
    }
}

async fn serve_client(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ProxyState>,
    held: Arc<Held>,
) {
    let metrics = state.metrics.clone();
    let _ = stream.set_nodelay(true);
    let prefix = match read_request_line(&mut stream, state.options.header_timeout).await {
        LineCheck::Ok(prefix) => prefix,
        LineCheck::Gone => return,
        LineCheck::Bad(reason) => {
            tracing::info!(event = "bad_request", peer = %peer, reason);
            reject(stream, reason).await;
            return;
        }
    };
    let header_timeout = state.options.header_timeout;
    let max_header_bytes = state.options.max_header_bytes.max(8192);
    let mut draining = state.draining.subscribe();
    let hold = Hold::new(held);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let state = state.clone();
        req.extensions_mut().insert(hold.clone());
        async move { Ok::<_, Infallible>(front(req, state).await) }
    });
    let (stream, linger) = linger::Linger::new(Rewind::new(prefix, stream));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_header_bytes)
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = lifecycle::until_draining(&mut draining) => {
            // Finish the request in flight, then close; an idle connection closes now.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        linger.arm();
        if e.is_timeout() {
            crate::metrics::Metrics::count(&metrics.limits, &[("limit", "header_timeout")]);
            tracing::info!(event = "client_timeout", peer = %peer, reason = "request head not complete within the header timeout");
        } else {
            tracing::debug!(event = "client_closed", peer = %peer, reason = %e);
        }
    }
}

/// Requests arriving on the listener: CONNECT, or an absolute-form request to forward.
async fn front(req: Request<Incoming>, state: Arc<ProxyState>) -> Response<ProxyBody> {
    if !state.access.authorizes(req.headers()) {
        let mut response = reply::error(
            ErrorKind::ProxyAuthRequired,
            "proxy authentication required",
        );
        response.headers_mut().insert(
            http::header::PROXY_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"grantdoctor\""),
        );
        return response;
    }
    if req.method() == Method::CONNECT {
        return connect::handle(req, state).await;
    }
    let uri = req.uri();
    if uri.scheme().is_none() && !state.gateway.is_empty() {
        return through_gateway(req, state).await;
    }
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return reply::error(
            ErrorKind::BadRequest,
            "this is a forward proxy: send CONNECT host:443 or an absolute-form request (GET http://host/path)",
        );
    };
    if scheme != "http" && scheme != "https" {
        return reply::error(
            ErrorKind::BadRequest,
            format_args!("unsupported scheme `{scheme}`: only http and https are proxied"),
        );
    }
    let host = authority.host().to_ascii_lowercase();
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    if state.loops_back(&host, port) {
        return reply::error(
            ErrorKind::Loop,
            format_args!("{authority} is grantdoctor itself: the request would loop"),
        );
    }
    crate::metrics::Metrics::count(&state.metrics.connections, &[("mode", "forward")]);
    let observed = scheme == "https" && state.policy.matches(&host);
    let route = Route::new(host, authority.to_string(), observed, state.host_class);
    state.dispatch(req, route).await
}

/// An origin-form request in gateway mode: to the Salesforce host a `--gateway` rule names.
async fn through_gateway(
    mut req: Request<Incoming>,
    state: Arc<ProxyState>,
) -> Response<ProxyBody> {
    let host_header = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let Some((route, uri)) = gateway::route(&state.gateway, host_header, path, state.host_class)
    else {
        return reply::error(
            ErrorKind::NoRoute,
            "no --gateway rule serves this path or host",
        );
    };
    let port = uri.port_u16().unwrap_or(443);
    if state.loops_back(&route.host, port) {
        return reply::error(
            ErrorKind::Loop,
            format_args!(
                "{} is grantdoctor itself: the request would loop",
                route.authority
            ),
        );
    }
    crate::metrics::Metrics::count(&state.metrics.connections, &[("mode", "gateway")]);
    *req.uri_mut() = uri;
    state.dispatch(req, route).await
}

impl ProxyState {
    /// Sends a request its connection has routed (intercepted, forwarded or through the
    /// gateway) through the exchange stack.
    pub(crate) async fn dispatch(
        &self,
        req: Request<Incoming>,
        route: Route,
    ) -> Response<ProxyBody> {
        if let Some(size) = oversized_head(&req, self.options.max_header_bytes) {
            crate::metrics::Metrics::count(&self.metrics.limits, &[("limit", "max_header_bytes")]);
            tracing::info!(
                event = "bad_request",
                host = route.host,
                reason = "request head over --max-header-bytes",
                bytes = size
            );
            return reply::error(
                ErrorKind::HeadTooLarge,
                format_args!(
                    "the request head is {size} bytes, over --max-header-bytes {}",
                    self.options.max_header_bytes
                ),
            );
        }
        let (mut parts, incoming) = req.into_parts();
        parts.extensions.insert(route);
        let req = Request::from_parts(parts, body::boxed(incoming));
        match self.exchange.clone().oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// The size of a request's head (request line and header fields, as HTTP/1.1 would carry
/// them) when it is over `max`. hyper's own buffer limit is looser, and h2 counts differently:
/// one measure for every listener mode.
fn oversized_head<B>(req: &Request<B>, max: usize) -> Option<usize> {
    let mut size = req.method().as_str().len() + req.uri().to_string().len() + 12;
    for (name, value) in req.headers() {
        size += name.as_str().len() + value.len() + 4;
    }
    (size > max).then_some(size)
}

enum LineCheck {
    /// The bytes read so far (the request line and whatever followed it), for hyper.
    Ok(Bytes),
    Gone,
    Bad(&'static str),
}

/// hyper answers an unparsable request with a bare `400`; we read the request line first so
/// the client learns what was wrong, then hand what was read to hyper. Reading (not peeking)
/// means a line that arrives a byte at a time costs one wake-up per packet, not a poll loop.
/// The reason never echoes the input: a request line can carry credentials in its query.
async fn read_request_line(stream: &mut TcpStream, timeout: Duration) -> LineCheck {
    const MAX_LINE: usize = 8192;
    let mut buf = BytesMut::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let scanned = buf.len();
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return LineCheck::Gone,
            Ok(Ok(_)) => {}
        }
        if buf[0] == 0x16 {
            return LineCheck::Bad(
                "received a TLS handshake, but the proxy listener speaks plain HTTP: use http:// in HTTPS_PROXY",
            );
        }
        if let Some(end) = buf[scanned..].iter().position(|&b| b == b'\n') {
            return match validate_request_line(&buf[..scanned + end]) {
                Ok(()) => LineCheck::Ok(buf.freeze()),
                Err(reason) => LineCheck::Bad(reason),
            };
        }
        if buf.len() >= MAX_LINE {
            return LineCheck::Bad("request line longer than 8192 bytes");
        }
        if buf.capacity() == buf.len() {
            buf.reserve(2048);
        }
    }
}

fn validate_request_line(line: &[u8]) -> Result<(), &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line == b"PRI * HTTP/2.0" {
        return Err(
            "HTTP/2 with prior knowledge is not supported on the proxy listener: use HTTP/1.1 for the proxy hop",
        );
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line: expected METHOD SP TARGET SP HTTP/1.1");
    };
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if method.is_empty() || !method.iter().all(is_token) {
        return Err("malformed request line: invalid method");
    }
    if target.is_empty() || target.iter().any(|b| b.is_ascii_control() || *b >= 0x80) {
        return Err("malformed request line: invalid request target");
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(
            "malformed request line: unsupported HTTP version (expected HTTP/1.1 or HTTP/1.0)",
        );
    }
    Ok(())
}

async fn reject(stream: TcpStream, reason: &str) {
    refuse(stream, "400 Bad Request", reason).await;
}

/// Answers a connection hyper never sees, and closes it.
async fn refuse(mut stream: TcpStream, status: &str, reason: &str) {
    let kind = if status.starts_with("400") {
        ErrorKind::BadRequest
    } else {
        ErrorKind::Overloaded
    };
    let body = format!("grantdoctor: {reason}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ngrantdoctor-error: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        kind.as_str(),
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    // Closing with the client's request unread would answer it with a reset, which can
    // destroy the refusal before the client reads it.
    linger::close_gracefully(stream).await;
}

#[cfg(test)]
mod tests {
    use super::validate_request_line;

    #[test]
    fn request_lines_are_validated() {
        assert!(validate_request_line(b"CONNECT login.salesforce.com:443 HTTP/1.1\r").is_ok());
        assert!(validate_request_line(b"GET http://a.test/ HTTP/1.0").is_ok());
        for bad in [
            &b"GARBAGE"[..],
            b"GET  / HTTP/1.1",
            b"GET / HTTP/3",
            b"G(T / HTTP/1.1",
            b"GET /\x01 HTTP/1.1",
            b"PRI * HTTP/2.0",
        ] {
            assert!(
                validate_request_line(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
