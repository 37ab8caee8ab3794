//! Who may use the proxy: an allow-list of client addresses and HTTP Basic proxy
//! authentication, so that a listener on a non-loopback address is never an open proxy.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use http::HeaderMap;

use crate::net::{Cidr, constant_time_eq};

/// The access rules of the listener.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// The expected `Basic` credentials (base64 of `USER:PASS`), when authentication is on.
    expected: Option<String>,
    allow: Vec<Cidr>,
}

/// Access settings refused at start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("--proxy-auth (GRANTDOCTOR_PROXY_AUTH) must be USER:PASS with neither part empty")]
    ProxyAuth,
    #[error(
        "--listen {0} is not a loopback address: set --proxy-auth USER:PASS or --allow-clients CIDR,... so the proxy is not open to the network"
    )]
    OpenListener(SocketAddr),
}

impl AccessPolicy {
    /// `proxy_auth` is `USER:PASS`, neither empty: an empty user or password would be a
    /// credential anyone can guess (and an empty variable one nobody can send).
    pub fn new(proxy_auth: Option<&str>, allow: Vec<Cidr>) -> Result<Self, AccessError> {
        let expected = match proxy_auth {
            None => None,
            Some(creds) => match creds.split_once(':') {
                Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                    Some(base64::engine::general_purpose::STANDARD.encode(creds))
                }
                _ => return Err(AccessError::ProxyAuth),
            },
        };
        Ok(Self { expected, allow })
    }

    /// Refuses a listener that anyone on the network could use.
    pub fn check_listener(&self, listen: SocketAddr) -> Result<(), AccessError> {
        if listen.ip().is_loopback() || self.expected.is_some() || !self.allow.is_empty() {
            return Ok(());
        }
        Err(AccessError::OpenListener(listen))
    }

    pub fn admits(&self, peer: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(peer))
    }

    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        // The scheme is case-insensitive (RFC 9110 §11.1); the credentials are not.
        headers
            .get(http::header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .is_some_and(|(scheme, creds)| {
                scheme.eq_ignore_ascii_case("basic")
                    && constant_time_eq(creds.trim_start().as_bytes(), expected.as_bytes())
            })
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
            .unwrap_err()
            .to_string();
        assert!(err.contains("--proxy-auth"), "{err}");
        assert!(
            AccessPolicy::new(Some("u:p"), vec![])
                .unwrap()
                .check_listener("0.0.0.0:8080".parse().unwrap())
                .is_ok()
        );
        let allow = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(
            AccessPolicy::new(None, allow)
                .unwrap()
                .check_listener("0.0.0.0:8080".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn empty_users_and_passwords_are_refused() {
        for bad in [":", "user:", ":pass", "", "nocolon"] {
            assert!(AccessPolicy::new(Some(bad), vec![]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_and_addresses_are_checked() {
        let policy =
            AccessPolicy::new(Some("user:pass"), vec!["10.0.0.0/8".parse().unwrap()]).unwrap();
        let mut headers = HeaderMap::new();
        assert!(!policy.authorizes(&headers));
        headers.insert("proxy-authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        assert!(policy.authorizes(&headers));
        headers.insert(
            "proxy-authorization",
            "Basic dXNlcjp3cm9uZw==".parse().unwrap(),
        );
        assert!(!policy.authorizes(&headers));
        headers.insert("proxy-authorization", "basic dXNlcjpwYXNz".parse().unwrap());
        assert!(
            policy.authorizes(&headers),
            "the scheme is case-insensitive"
        );
        assert!(policy.admits("10.2.3.4".parse().unwrap()));
        assert!(!policy.admits("192.0.2.1".parse().unwrap()));
    }
}
