//! Gateway mode: the listener itself answers origin-form requests (`POST
//! /services/oauth2/token`) by forwarding them to a configured Salesforce host over verified
//! TLS, observed like intercepted traffic. Clients that let you set the login URL (jsforce
//! `loginUrl`, simple-salesforce `domain`, `sf` instance URLs) then need neither a CA nor
//! proxy variables.
//!
//! Rules (`--gateway`, repeatable): `https://HOST` serves every path; `/PREFIX=https://HOST`
//! serves paths under `/PREFIX` (the prefix is removed); `NAME=https://HOST` serves requests
//! whose `Host` is `NAME`. Host rules win, then the longest prefix.
//!
//! Must never: forward to plain HTTP, or anywhere no rule names.

use std::str::FromStr;

use crate::route::{HostClassifier, Route};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRule {
    /// What the rule matches on.
    pub matcher: Matcher,
    /// The upstream host (lower case) and port.
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// A path prefix (`/` for all paths), removed before forwarding.
    Prefix(String),
    /// The request's `Host` name.
    Host(String),
}

impl FromStr for GatewayRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (matcher, url) = match s.split_once('=') {
            None => (Matcher::Prefix("/".into()), s),
            Some((left, url)) if left.starts_with('/') => {
                let prefix = left.trim_end_matches('/');
                let prefix = if prefix.is_empty() { "/" } else { prefix };
                (Matcher::Prefix(prefix.to_owned()), url)
            }
            Some((left, url)) if !left.is_empty() => {
                (Matcher::Host(left.to_ascii_lowercase()), url)
            }
            Some(_) => return Err(format!("`{s}`: expected URL, /PREFIX=URL or HOST=URL")),
        };
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            format!("`{s}`: the target must be an https:// URL (upstream TLS is always verified)")
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "`{s}`: the target is a host (https://HOST[:PORT]), without a path"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| format!("`{s}`: `{port}` is not a port"))?,
            ),
            None => (authority, 443),
        };
        Ok(Self {
            matcher,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for GatewayRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = if self.port == 443 {
            format!("https://{}", self.host)
        } else {
            format!("https://{}:{}", self.host, self.port)
        };
        match &self.matcher {
            Matcher::Prefix(p) if p == "/" => f.write_str(&target),
            Matcher::Prefix(p) => write!(f, "{p}={target}"),
            Matcher::Host(h) => write!(f, "{h}={target}"),
        }
    }
}

impl GatewayRule {
    fn authority(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Where an origin-form request goes: its route and the upstream URI.
pub fn route(
    rules: &[GatewayRule],
    host_header: Option<&str>,
    path_and_query: &str,
    classify: HostClassifier,
) -> Option<(Route, http::Uri)> {
    let name = host_header
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
        .map(str::to_ascii_lowercase);
    let path = path_and_query.split('?').next().unwrap_or("");
    let by_host = rules
        .iter()
        .find(|r| matches!(&r.matcher, Matcher::Host(h) if Some(h) == name.as_ref()));
    let (rule, strip) = match by_host {
        Some(rule) => (rule, 0),
        None => rules
            .iter()
            .filter_map(|r| match &r.matcher {
                Matcher::Prefix(p) if p == "/" => Some((r, 0)),
                Matcher::Prefix(p)
                    if path == p || path.strip_prefix(p.as_str())?.starts_with('/') =>
                {
                    Some((r, p.len()))
                }
                _ => None,
            })
            .max_by_key(|(_, len)| *len)?,
    };
    let rest = &path_and_query[strip..];
    let rest = if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    };
    let authority = rule.authority();
    let uri = format!("https://{authority}{rest}").parse().ok()?;
    Some((
        Route::new(rule.host.clone(), authority, true, classify),
        uri,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(specs: &[&str]) -> Vec<GatewayRule> {
        specs.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn rules_parse_and_print_back() {
        for spec in [
            "https://login.salesforce.com",
            "/sandbox=https://test.salesforce.com",
            "acme.gw.test=https://acme.my.salesforce.com:8443",
        ] {
            assert_eq!(spec.parse::<GatewayRule>().unwrap().to_string(), spec);
        }
        assert!(
            "http://login.salesforce.com"
                .parse::<GatewayRule>()
                .unwrap_err()
                .contains("https://")
        );
        assert!(
            "https://login.salesforce.com/x"
                .parse::<GatewayRule>()
                .is_err()
        );
    }

    #[test]
    fn host_rules_win_then_the_longest_prefix() {
        let rules = rules(&[
            "https://login.salesforce.com",
            "/sandbox=https://test.salesforce.com",
            "acme.gw.test=https://acme.my.salesforce.com",
        ]);
        let go = |host: Option<&str>, path: &str| {
            let (route, uri) = route(&rules, host, path, |_, _| "other").unwrap();
            (route.host, uri.to_string())
        };
        assert_eq!(
            go(Some("127.0.0.1:8080"), "/services/oauth2/token"),
            (
                "login.salesforce.com".into(),
                "https://login.salesforce.com/services/oauth2/token".into()
            )
        );
        assert_eq!(
            go(None, "/sandbox/services/oauth2/token?x=1").1,
            "https://test.salesforce.com/services/oauth2/token?x=1"
        );
        // A prefix matches whole segments only.
        assert_eq!(go(None, "/sandboxes/a").0, "login.salesforce.com");
        assert_eq!(
            go(Some("ACME.gw.test:8080"), "/sandbox/x").1,
            "https://acme.my.salesforce.com/sandbox/x"
        );
        let only_sandbox = super::tests::rules(&["/sandbox=https://test.salesforce.com"]);
        assert!(
            route(
                &only_sandbox,
                None,
                "/services/oauth2/token",
                |_, _| "other"
            )
            .is_none()
        );
    }
}
