//! The one pooled client that talks to origins, and the dialler for blind tunnels.
//!
//! Both honour `--resolve HOST:PORT=ADDR:PORT`, so a test or a staging set-up can send
//! `login.salesforce.com:443` to a local emulator while TLS still verifies the real name.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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

/// The proxy's own listeners, known once they are bound. A name is compared by the
/// addresses it resolves to, not by its spelling: `127.1`, `0`, `2130706433`, `[::ffff:
/// 127.0.0.1]` or the machine's host name all reach the same sockets.
#[derive(Debug, Clone, Default)]
pub struct OwnListeners(Arc<std::sync::OnceLock<Vec<SocketAddr>>>);

/// A dial that would reach one of the proxy's own listeners.
#[derive(Debug, thiserror::Error)]
#[error("{0} is grantdoctor itself: the request would loop")]
pub struct Loops(pub SocketAddr);

impl OwnListeners {
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        let _ = self.0.set(addrs);
    }

    pub fn get(&self) -> Option<&[SocketAddr]> {
        self.0.get().map(Vec::as_slice)
    }

    /// Whether a connection to `target` would reach one of the listeners.
    pub fn contain(&self, target: SocketAddr) -> bool {
        let Some(own) = self.0.get() else {
            return false;
        };
        let ip = target.ip().to_canonical();
        own.iter().filter(|o| o.port() == target.port()).any(|o| {
            let listening = o.ip().to_canonical();
            listening == ip
                || (listening.is_unspecified() && this_machine(ip))
                || (listening.is_loopback() && (ip.is_loopback() || ip.is_unspecified()))
        })
    }

    /// Resolves `host:port` as a dial would and refuses it if it would loop.
    pub async fn check(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        match addrs.iter().find(|a| self.contain(**a)) {
            Some(looping) => Err(std::io::Error::other(Loops(*looping))),
            None => Ok(addrs),
        }
    }
}

/// Whether `ip` is an address of this machine (connecting to 0.0.0.0 reaches it too): only
/// such an address can be bound.
fn this_machine(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The loop in an error's chain, if that is what failed.
pub fn loop_in(err: &(dyn std::error::Error + 'static)) -> Option<SocketAddr> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(Loops(addr)) = e.downcast_ref::<Loops>() {
            return Some(*addr);
        }
        if let Some(Loops(addr)) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Loops>())
        {
            return Some(*addr);
        }
        current = e.source();
    }
    None
}

/// Opens the TCP connection for a blind tunnel, honouring the overrides.
pub async fn dial(
    overrides: &ResolveOverrides,
    own: &OwnListeners,
    host: &str,
    port: u16,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let connect = async {
        let stream = match overrides.lookup(host, port) {
            Some(addr) => TcpStream::connect(addr).await?,
            None => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let addrs = own.check(host, port).await?;
                TcpStream::connect(&addrs[..]).await?
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
/// Names without an override are first checked against the proxy's own listeners.
#[derive(Clone)]
pub struct OverridingConnector {
    inner: HttpConnector,
    overrides: ResolveOverrides,
    own: OwnListeners,
}

impl tower::Service<Uri> for OverridingConnector {
    type Response = <HttpConnector as tower::Service<Uri>>::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let overridden = uri
            .host()
            .and_then(|host| self.overrides.lookup(host, port))
            .and_then(|addr| Uri::from_str(&format!("http://{addr}")).ok());
        if let Some(target) = overridden {
            let connect = self.inner.call(target);
            return Box::pin(async move { connect.await.map_err(Into::into) });
        }
        let mut inner = self.inner.clone();
        let own = self.own.clone();
        Box::pin(async move {
            if own.get().is_some() {
                let host = uri.host().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if let Err(e) = own.check(host, port).await
                    && let Some(addr) = loop_in(&e)
                {
                    return Err(Box::new(Loops(addr)) as Self::Error);
                }
            }
            inner.call(uri).await.map_err(Into::into)
        })
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
    own: OwnListeners,
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
            own,
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

    #[tokio::test]
    async fn every_spelling_of_a_listener_is_the_listener() {
        let own = OwnListeners::default();
        own.set(vec!["127.0.0.1:9090".parse().unwrap()]);
        for alias in [
            "127.0.0.1",
            "127.1",
            "0",
            "0.0.0.0",
            "2130706433",
            "0x7f000001",
            "localhost",
            "::ffff:127.0.0.1",
        ] {
            let err = own.check(alias, 9090).await.expect_err(alias);
            assert!(loop_in(&err).is_some(), "{alias}: {err}");
        }
        assert!(
            own.check("127.0.0.1", 9091).await.is_ok(),
            "another port is not the listener"
        );
        let any = OwnListeners::default();
        any.set(vec!["0.0.0.0:8080".parse().unwrap()]);
        assert!(any.contain("127.0.0.2:8080".parse().unwrap()));
        assert!(
            !any.contain("192.0.2.1:8080".parse().unwrap()),
            "not an address of this machine"
        );
    }

    #[test]
    fn lookups_are_case_insensitive_and_port_specific() {
        let overrides = ResolveOverrides::new(&["a.test:443=127.0.0.1:1".parse().unwrap()]);
        assert!(overrides.lookup("A.TEST", 443).is_some());
        assert!(overrides.lookup("a.test", 80).is_none());
    }
}
