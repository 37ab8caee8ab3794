//! hudsucker with no-op handlers, for the peer benchmark. It intercepts one host name, tunnels
//! the others, and honours `--resolve` like grantdoctor so both reach the same local origin.
//!
//! Usage: hudsucker-noop --listen ADDR --ca-out PEM --origin-ca PEM --intercept HOST
//!        [--resolve HOST:PORT=ADDR:PORT ...]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hudsucker::certificate_authority::RcgenAuthority;
use hudsucker::hyper::{Request, Uri};
use hudsucker::rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use hudsucker::{Body, HttpContext, HttpHandler, Proxy, RequestOrResponse};
use hyper_util::client::legacy::connect::HttpConnector;

type Overrides = Arc<HashMap<(String, u16), SocketAddr>>;

/// Dials the override address for a mapped host; TLS still verifies the name.
#[derive(Clone)]
struct Resolving {
    inner: HttpConnector,
    overrides: Overrides,
}

impl tower_service::Service<Uri> for Resolving {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let port = uri.port_u16().unwrap_or(443);
        let target = uri
            .host()
            .and_then(|host| self.overrides.get(&(host.to_owned(), port)))
            .and_then(|addr| format!("http://{addr}").parse().ok())
            .unwrap_or(uri);
        Box::pin(self.inner.call(target))
    }
}

/// Intercepts `intercept`, tunnels the rest (to their override address, if any).
#[derive(Clone)]
struct Noop {
    intercept: String,
    overrides: Overrides,
}

impl HttpHandler for Noop {
    async fn handle_request(
        &mut self,
        _ctx: &HttpContext,
        mut req: Request<Body>,
    ) -> RequestOrResponse {
        if req.method() == hudsucker::hyper::Method::CONNECT
            && let Some(authority) = req.uri().authority()
            && authority.host() != self.intercept
            && let Some(addr) = self.overrides.get(&(
                authority.host().to_owned(),
                authority.port_u16().unwrap_or(443),
            ))
            && let Ok(uri) = addr.to_string().parse()
        {
            *req.uri_mut() = uri;
        }
        req.into()
    }

    async fn should_intercept_connect(&mut self, _ctx: &HttpContext, req: &Request<Body>) -> bool {
        req.uri().host() == Some(self.intercept.as_str())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut ca_out, mut origin_ca, mut intercept) = (None, None, None, None);
    let mut overrides = HashMap::new();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value.parse::<SocketAddr>().expect("--listen ADDR")),
            "--ca-out" => ca_out = Some(value),
            "--origin-ca" => origin_ca = Some(value),
            "--intercept" => intercept = Some(value),
            "--resolve" => {
                let (from, to) = value.split_once('=').expect("HOST:PORT=ADDR:PORT");
                let (host, port) = from.rsplit_once(':').expect("HOST:PORT");
                overrides.insert(
                    (host.to_owned(), port.parse().expect("port")),
                    to.parse::<SocketAddr>().expect("ADDR:PORT"),
                );
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let overrides: Overrides = Arc::new(overrides);
    let provider = rustls::crypto::ring::default_provider();

    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = params.clone().self_signed(&ca_key).expect("CA certificate");
    std::fs::write(ca_out.expect("--ca-out PEM"), ca_cert.pem()).expect("writing the CA");
    let ca = RcgenAuthority::new(Issuer::new(params, ca_key), 1_000, provider.clone());

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(origin_ca.expect("--origin-ca PEM")).expect("reading the origin CA");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("origin CA PEM")).expect("origin CA");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(Resolving {
            inner: http,
            overrides: overrides.clone(),
        });

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async move {
            let proxy = Proxy::builder()
                .with_listener(listener(listen.expect("--listen ADDR")))
                .with_ca(ca)
                .with_http_connector(https)
                .with_http_handler(Noop {
                    intercept: intercept.expect("--intercept HOST"),
                    overrides,
                })
                .build()
                .expect("building the proxy");
            proxy.start().await.expect("serving");
        });
}

/// hudsucker leaves Nagle's algorithm on for accepted connections, and its POST round trips
/// then wait on delayed ACKs (40 ms at p99). Accepted sockets inherit `TCP_NODELAY` from the
/// listener on Linux, so it is set there: the peer is measured at its best.
fn listener(addr: SocketAddr) -> tokio::net::TcpListener {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_tcp_nodelay(true).expect("TCP_NODELAY");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(1024).expect("listen");
    socket.set_nonblocking(true).expect("non-blocking");
    tokio::net::TcpListener::from_std(socket.into()).expect("listener")
}
