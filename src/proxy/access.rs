//! Who may use the proxy: an allow-list of client addresses and HTTP Basic proxy
//! authentication, so that a listener on a non-loopback address is never an open proxy.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use http::HeaderMap;

use crate::net::{Cidr, constant_time_eq};

/// The access rules of the listener.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// The expected `Proxy-Authorization` value (`Basic …`), when authentication is on.
    expected: Option<String>,
    allow: Vec<Cidr>,
}

impl AccessPolicy {
    /// `proxy_auth` is `USER:PASS`.
    pub fn new(proxy_auth: Option<&str>, allow: Vec<Cidr>) -> Self {
        let expected = proxy_auth.map(|creds| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(creds)
            )
        });
        Self { expected, allow }
    }

    /// Refuses a listener that anyone on the network could use.
    pub fn check_listener(&self, listen: SocketAddr) -> Result<(), String> {
        if listen.ip().is_loopback() || self.expected.is_some() || !self.allow.is_empty() {
            return Ok(());
        }
        Err(format!(
            "--listen {listen} is not a loopback address: set --proxy-auth USER:PASS or --allow-clients CIDR,... so the proxy is not open to the network"
        ))
    }

    pub fn admits(&self, peer: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(peer))
    }

    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        headers
            .get(http::header::PROXY_AUTHORIZATION)
            .is_some_and(|v| constant_time_eq(v.as_bytes(), expected.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_listener_needs_auth_or_an_allow_list() {
        let open = AccessPolicy::default();
        assert!(
            open.check_listener("127.0.0.1:8080".parse().unwrap())
                .is_ok()
        );
        let err = open
            .check_listener("0.0.0.0:8080".parse().unwrap())
            .unwrap_err();
        assert!(err.contains("--proxy-auth"), "{err}");
        assert!(
            AccessPolicy::new(Some("u:p"), vec![])
                .check_listener("0.0.0.0:8080".parse().unwrap())
                .is_ok()
        );
        let allow = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(
            AccessPolicy::new(None, allow)
                .check_listener("0.0.0.0:8080".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn credentials_and_addresses_are_checked() {
        let policy = AccessPolicy::new(Some("user:pass"), vec!["10.0.0.0/8".parse().unwrap()]);
        let mut headers = HeaderMap::new();
        assert!(!policy.authorizes(&headers));
        headers.insert("proxy-authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        assert!(policy.authorizes(&headers));
        headers.insert(
            "proxy-authorization",
            "Basic dXNlcjp3cm9uZw==".parse().unwrap(),
        );
        assert!(!policy.authorizes(&headers));
        assert!(policy.admits("10.2.3.4".parse().unwrap()));
        assert!(!policy.admits("192.0.2.1".parse().unwrap()));
    }
}
