//! The one pooled client that talks to origins, and the dialler for blind tunnels.
//!
//! Both honour `--resolve HOST:PORT=ADDR:PORT`, so a test or a staging set-up can send
//! `login.salesforce.com:443` to a local emulator while TLS still verifies the real name.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;

use crate::body::ProxyBody;

/// Name-resolution overrides, keyed by lower-case host and port.
#[derive(Debug, Clone, Default)]
pub struct ResolveOverrides(Arc<HashMap<(String, u16), SocketAddr>>);

/// One `--resolve` entry: `HOST:PORT=ADDR:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRule {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

impl FromStr for ResolveRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (from, to) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected HOST:PORT=ADDR:PORT"))?;
        let (host, port) = from
            .rsplit_once(':')
            .ok_or_else(|| format!("`{from}`: expected HOST:PORT"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        if host.is_empty() {
            return Err(format!("`{from}`: empty host"));
        }
        let addr = to
            .parse::<SocketAddr>()
            .map_err(|_| format!("`{to}`: expected an IP address and port, e.g. 127.0.0.1:8443"))?;
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
            addr,
        })
    }
}

impl ResolveOverrides {
    pub fn new(rules: &[ResolveRule]) -> Self {
        Self(Arc::new(
            rules
                .iter()
                .map(|r| ((r.host.clone(), r.port), r.addr))
                .collect(),
        ))
    }

    pub fn lookup(&self, host: &str, port: u16) -> Option<SocketAddr> {
        if self.0.is_empty() {
            return None;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.0.get(&(host.to_ascii_lowercase(), port)).copied()
    }
}

/// Opens the TCP connection for a blind tunnel, honouring the overrides.
pub async fn dial(
    overrides: &ResolveOverrides,
    host: &str,
    port: u16,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let connect = async {
        let stream = match overrides.lookup(host, port) {
            Some(addr) => TcpStream::connect(addr).await?,
            None => {
                TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
                    .await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect timed out after {} ms", timeout.as_millis()),
        )),
    }
}

/// An `HttpConnector` that dials the override address when one matches, leaving the URI that
/// TLS verifies (and the pool keys on) untouched.
#[derive(Clone)]
pub struct OverridingConnector {
    inner: HttpConnector,
    overrides: ResolveOverrides,
}

impl tower::Service<Uri> for OverridingConnector {
    type Response = <HttpConnector as tower::Service<Uri>>::Response;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let target = uri
            .host()
            .and_then(|host| self.overrides.lookup(host, port))
            .and_then(|addr| Uri::from_str(&format!("http://{addr}")).ok())
            .unwrap_or(uri);
        Box::pin(self.inner.call(target))
    }
}

/// Timeouts and limits of the upstream side.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
        }
    }
}

pub type UpstreamClient = Client<HttpsConnector<OverridingConnector>, ProxyBody>;

/// Builds the pooled client: HTTP/1.1 and h2 chosen by ALPN, TLS verified by `tls`.
pub fn client(
    tls: rustls::ClientConfig,
    overrides: ResolveOverrides,
    options: &UpstreamOptions,
) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(options.connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(OverridingConnector {
            inner: http,
            overrides,
        });
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolve_rule_parses_like_curls_with_a_port_on_both_sides() {
        let rule: ResolveRule = "Login.Salesforce.com:443=127.0.0.1:8443".parse().unwrap();
        assert_eq!(rule.host, "login.salesforce.com");
        assert_eq!(rule.port, 443);
        assert_eq!(rule.addr, "127.0.0.1:8443".parse().unwrap());
        let v6: ResolveRule = "h:443=[::1]:9".parse().unwrap();
        assert_eq!(v6.addr, "[::1]:9".parse().unwrap());
    }

    #[test]
    fn malformed_resolve_rules_say_what_is_expected() {
        for bad in [
            "login.salesforce.com",
            "h:443=localhost:1",
            "h:x=127.0.0.1:1",
            ":443=127.0.0.1:1",
        ] {
            let err = bad.parse::<ResolveRule>().unwrap_err();
            assert!(err.contains('`'), "{bad}: {err}");
        }
    }

    #[test]
    fn lookups_are_case_insensitive_and_port_specific() {
        let overrides = ResolveOverrides::new(&["a.test:443=127.0.0.1:1".parse().unwrap()]);
        assert!(overrides.lookup("A.TEST", 443).is_some());
        assert!(overrides.lookup("a.test", 80).is_none());
    }
}
