//! The emulator's HTTP surface: the token endpoint, the identity URL and a small REST API, and
//! the control API under `/_emulator/`. Behaviour is chosen from the `Host` header, so one
//! listener plays login, test, every My Domain and every site at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};

use super::clock::VirtualClock;
use super::errors::{self, OAuthError};
use super::world::{HostCtx, LoggedRequest, TokenRequest, TokenSuccess, World};

/// Bodies larger than this are refused: nothing Salesforce accepts comes close.
const MAX_BODY: usize = 1024 * 1024;

/// A refresh between its two halves; dropped unfinished, it clears the in-flight mark.
struct PendingRefresh<'a> {
    emulator: &'a Emulator,
    ticket: Option<super::world::RefreshTicket>,
}

impl Drop for PendingRefresh<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.emulator.world().abandon_refresh(ticket);
        }
    }
}

/// The emulated Salesforce: its world and its clock.
#[derive(Default)]
pub struct Emulator {
    pub world: Mutex<World>,
    pub clock: VirtualClock,
}

impl Emulator {
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        // A panic while holding the lock would be a bug in the emulator; keep serving anyway.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let host = request_host(&req);
        let path = req.uri().path().to_owned();
        if let Some(rest) = path.strip_prefix("/_emulator/") {
            let rest = rest.to_owned();
            return super::control::handle(&self, req, &rest).await;
        }
        if path == "/services/oauth2/token" {
            return self.token(req, host, peer.ip()).await;
        }
        if req.method() == Method::GET {
            if let Some(ids) = path.strip_prefix("/id/") {
                let ids = ids.to_owned();
                return self.identity(&req, &host, &ids);
            }
            if path == "/services/data" || path == "/services/data/" {
                return self.rest(&req, |_| versions_body());
            }
            if path.starts_with("/services/data/v") && path.ends_with("/query") {
                return self.query(req, &path).await;
            }
        }
        plain(StatusCode::NOT_FOUND, "emulator: no such resource\n")
    }

    async fn token(
        &self,
        req: Request<Incoming>,
        host: String,
        peer: IpAddr,
    ) -> Response<ProxyBody> {
        let gzip = accepts_gzip(req.headers());
        if let Some(fault) = self.world().faults.pop_front() {
            return match fault {
                super::world::Fault::UnknownError => oauth_error(errors::UNKNOWN_ERROR, gzip),
                super::world::Fault::Maintenance => maintenance(),
            };
        }
        if self.world().classify(&host) == HostCtx::Unknown {
            return plain(
                StatusCode::NOT_FOUND,
                format!("emulator: no org is served at {host}\n"),
            );
        }
        let method_ok = req.method() == Method::POST;
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        let basic = crate::oauth::basic_credentials(req.headers());
        let query = req.uri().query().unwrap_or_default().to_owned();
        let body = match read_body(req.into_body()).await {
            Ok(body) => body,
            Err(status) => {
                return plain(status, "emulator: request body unreadable or too large\n");
            }
        };
        let mut params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let body_ok = body.is_empty() || form;
        if form {
            params.extend(form_urlencoded::parse(&body).into_owned());
        }
        let grant_type = params.get("grant_type").cloned().unwrap_or_default();
        let request = TokenRequest {
            host: host.clone(),
            params,
            basic,
            peer,
        };
        let result = if !method_ok || !body_ok {
            Err(errors::UNSUPPORTED_GRANT_TYPE)
        } else if grant_type == "refresh_token" {
            self.refresh(&request).await
        } else {
            let now = self.clock.now_ms();
            self.world().token(&request, now)
        };
        self.log(&request, &grant_type, &result);
        let now = self.clock.now_ms();
        self.world().record_login(&request, &result, now);
        match result {
            Ok(success) => token_success(&success, gzip),
            Err(error) => oauth_error(error, gzip),
        }
    }

    /// A refresh stays in flight for `refresh_latency_ms`, so concurrent refreshes of one token
    /// collide the way they do at Salesforce (E4).
    /// A client that hangs up mid-refresh drops this future: the token is no longer in
    /// flight then, however the request ended.
    async fn refresh(&self, request: &TokenRequest) -> Result<TokenSuccess, OAuthError> {
        let (ticket, latency) = {
            let mut world = self.world();
            let ticket = world.begin_refresh(request, self.clock.now_ms())?;
            (ticket, world.settings.refresh_latency_ms)
        };
        let mut pending = PendingRefresh {
            emulator: self,
            ticket: Some(ticket),
        };
        tokio::time::sleep(Duration::from_millis(latency)).await;
        let now = self.clock.now_ms();
        let ticket = pending.ticket.take().expect("taken once");
        self.world().finish_refresh(ticket, now)
    }

    fn log(
        &self,
        request: &TokenRequest,
        grant_type: &str,
        result: &Result<TokenSuccess, OAuthError>,
    ) {
        let username = request.params.get("username").cloned().or_else(|| {
            request
                .params
                .get("assertion")
                .and_then(|a| super::jwt::decode(a).ok())
                .and_then(|a| a.sub)
        });
        let client_id = request
            .params
            .get("client_id")
            .cloned()
            .or_else(|| request.basic.as_ref().map(|b| b.0.clone()))
            .or_else(|| {
                request
                    .params
                    .get("assertion")
                    .and_then(|a| super::jwt::decode(a).ok())
                    .and_then(|a| a.iss)
            });
        let (status, error) = match result {
            Ok(_) => (200, None),
            Err(e) => (e.status, Some(e.error.to_owned())),
        };
        tracing::info!(
            event = "emulator_token",
            host = %request.host,
            grant_type,
            status,
            error = error.as_deref().unwrap_or(""),
        );
        let entry = LoggedRequest {
            at_ms: self.clock.now_ms(),
            host: request.host.clone(),
            grant_type: grant_type.to_owned(),
            client_id,
            username,
            status,
            error,
        };
        self.world().log.push(entry);
    }

    fn identity(&self, req: &Request<Incoming>, host: &str, ids: &str) -> Response<ProxyBody> {
        let Some((org_id, user_id, username)) = self.session(req) else {
            return invalid_session();
        };
        let mut parts = ids.split('/');
        if parts.next() != Some(org_id.as_str()) || parts.next() != Some(user_id.as_str()) {
            return plain(
                StatusCode::FORBIDDEN,
                "emulator: the identity URL belongs to another user\n",
            );
        }
        let body = serde_json::json!({
            "id": format!("https://{host}/id/{org_id}/{user_id}"),
            "asserted_user": true,
            "user_id": user_id,
            "organization_id": org_id,
            "username": username,
            "nick_name": username.split('@').next().unwrap_or_default(),
            "display_name": username,
            "active": true,
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": 0,
        });
        json(
            StatusCode::OK,
            body.to_string(),
            accepts_gzip(req.headers()),
        )
    }

    fn rest(&self, req: &Request<Incoming>, body: impl Fn(&str) -> String) -> Response<ProxyBody> {
        if self.session(req).is_none() {
            return invalid_session();
        }
        json(
            StatusCode::OK,
            body(req.uri().query().unwrap_or_default()),
            accepts_gzip(req.headers()),
        )
    }

    /// The SOQL endpoint: answered from the world for the session's user (see [`super::query`]),
    /// unless a fault is queued for it.
    async fn query(&self, req: Request<Incoming>, path: &str) -> Response<ProxyBody> {
        let Some((_, _, username)) = self.session(&req) else {
            return invalid_session();
        };
        // `/services/data/vNN.N/query`: record URLs carry the version the client asked for.
        let version = path.split('/').nth(3).unwrap_or_default();
        let q = form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "q")
            .map(|(_, v)| v.into_owned());
        let gzip = accepts_gzip(req.headers());
        let fault = self.world().query_faults.pop_front();
        if let Some(fault) = fault {
            if let super::query::QueryFault::Slow(delay) = fault {
                tokio::time::sleep(delay).await;
            }
            if let Some((status, body)) = fault.answer() {
                let status = StatusCode::from_u16(status).expect("a valid status");
                return json(status, body, gzip);
            }
        }
        match super::query::answer(&self.world(), &username, version, q.as_deref()) {
            Ok(body) => json(StatusCode::OK, body, gzip),
            Err(error) => json(StatusCode::BAD_REQUEST, error.body(), gzip),
        }
    }

    fn session(&self, req: &Request<Incoming>) -> Option<(String, String, String)> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("OAuth "))
            })?;
        let now = self.clock.now_ms();
        self.world().session(token.trim(), now)
    }
}

/// The host a request was sent to, lower case, without a port.
pub fn request_host<B>(req: &Request<B>) -> String {
    let raw = req
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let host = if raw.starts_with('[') {
        raw.split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
            .to_owned()
    } else {
        raw.split(':').next().unwrap_or_default().to_owned()
    };
    host.to_ascii_lowercase()
}

pub(super) async fn read_body(body: Incoming) -> Result<Bytes, StatusCode> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            let mut parts = v.trim().split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Salesforce's headers on token-endpoint answers (listed in `docs/emulator.md`).
fn salesforce_headers(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(headers, "content-type", "application/json;charset=UTF-8");
    set(
        headers,
        "cache-control",
        "no-cache,must-revalidate,max-age=0,no-store,private",
    );
    set(headers, "expires", "Thu, 01 Jan 1970 00:00:00 GMT");
    set(
        headers,
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-xss-protection", "1; mode=block");
    set(
        headers,
        "content-security-policy",
        "upgrade-insecure-requests",
    );
    set(headers, "vary", "Accept-Encoding");
    let cookie = format!(
        "BrowserId={}; domain=.salesforce.com; path=/; Max-Age=31536000; secure; SameSite=None",
        super::ids::random_base62(22)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.insert("set-cookie", v);
    }
}

fn token_success(success: &TokenSuccess, gzip: bool) -> Response<ProxyBody> {
    let text = serde_json::to_string(success).expect("serialisable");
    let mut response = json(StatusCode::OK, text, gzip);
    salesforce_headers(response.headers_mut());
    response
}

fn oauth_error(error: OAuthError, gzip: bool) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json(status, error.body(), gzip);
    salesforce_headers(response.headers_mut());
    response
}

/// A JSON response, gzip-encoded when the client asked for it.
pub(super) fn json(status: StatusCode, text: String, gzip: bool) -> Response<ProxyBody> {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json;charset=UTF-8");
    let bytes = if gzip {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder
            .write_all(text.as_bytes())
            .expect("writing to memory");
        encoder.finish().expect("writing to memory")
    } else {
        text.into_bytes()
    };
    builder
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(body::full(bytes))
        .expect("valid response")
}

pub(super) fn plain(status: StatusCode, text: impl Into<String>) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body::full(text.into()))
        .expect("valid response")
}

fn invalid_session() -> Response<ProxyBody> {
    json(
        StatusCode::UNAUTHORIZED,
        r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#.into(),
        false,
    )
}

fn maintenance() -> Response<ProxyBody> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONTENT_TYPE, "text/html;charset=UTF-8")
        .body(body::full(
            "<html><head><title>Service Unavailable</title></head><body><h1>Down for maintenance</h1><p>Salesforce is undergoing scheduled maintenance.</p></body></html>",
        ))
        .expect("valid response")
}

fn versions_body() -> String {
    let versions: Vec<_> = (60..=66)
        .map(|v| serde_json::json!({"label": format!("API {v}.0"), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")}))
        .collect();
    serde_json::Value::Array(versions).to_string()
}

/// Where the emulator's server certificates come from.
#[derive(Clone)]
pub enum ServerTls {
    /// Minted per SNI from the emulator's CA.
    Minted(crate::tls::InterceptTls),
    /// A fixed chain and key given on the command line.
    Files(Arc<rustls::ServerConfig>),
}

/// Serves HTTP/1.1 and h2 on accepted connections (TLS or plain) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    emulator: Arc<Emulator>,
    tls: Option<ServerTls>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(event = "accept_failed", reason = %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let emulator = emulator.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let emulator = emulator.clone();
                async move {
                    let now = emulator.clock.now_ms();
                    let mut response = emulator.handle(req, peer).await;
                    // The virtual clock's time, so clients measuring ages on Salesforce's clock
                    // (as grantdoctor does) see the emulated one.
                    let date = std::time::UNIX_EPOCH + Duration::from_millis(now.max(0) as u64);
                    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(date)) {
                        response.headers_mut().insert(header::DATE, value);
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(tls) => {
                    let config = match tls {
                        ServerTls::Files(config) => config,
                        ServerTls::Minted(minted) => match minted.config_for(true, "localhost") {
                            Ok(config) => config,
                            Err(_) => return,
                        },
                    };
                    match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                        Ok(stream) => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Err(e) => {
                            tracing::debug!(event = "emulator_tls_failed", reason = %e);
                            return;
                        }
                    }
                }
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(event = "emulator_connection_closed", reason = %e);
            }
        });
    }
}
