//! Which hosts are intercepted: exact names and `*.suffix` rules, never substring regexes
//! (a regex "search" for `salesforce.com` also matches `salesforce.com.evil.example`).

/// The hosts grantdoctor terminates TLS for; every other host is tunnelled blind.
#[derive(Debug, Clone)]
pub struct InterceptPolicy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `login.salesforce.com`: that host only.
    Exact(String),
    /// `*.salesforce.com`: any host below it (stored as `.salesforce.com`), not the apex.
    Below(String),
}

/// The Salesforce domains intercepted when no `--intercept` is given.
pub const DEFAULT_INTERCEPT: &[&str] = &[
    "login.salesforce.com",
    "test.salesforce.com",
    "*.salesforce.com",
    "*.force.com",
    "*.my.site.com",
    "*.cloudforce.com",
    "*.salesforce-sites.com",
];

impl InterceptPolicy {
    /// Builds the policy from patterns; a malformed pattern is an error naming it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let rules = patterns
            .iter()
            .map(|p| parse_rule(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    pub fn salesforce() -> Self {
        Self::new(DEFAULT_INTERCEPT).expect("default patterns are valid")
    }

    /// Whether `host` (a name or an IP literal, any case, with or without a trailing dot)
    /// is intercepted.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalise(host);
        self.rules.iter().any(|rule| match rule {
            Rule::Exact(name) => *name == host,
            Rule::Below(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        })
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// An `--intercept` pattern that is neither a host name nor `*.` and a domain.
#[derive(Debug, thiserror::Error)]
#[error("intercept pattern `{0}`: expected a host name or `*.` followed by a domain")]
pub struct PatternError(String);

fn parse_rule(pattern: &str) -> Result<Rule, PatternError> {
    let pattern = normalise(pattern.trim());
    let valid = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    match pattern.strip_prefix("*.") {
        Some(rest) if valid(rest) => Ok(Rule::Below(format!(".{rest}"))),
        None if valid(&pattern) => Ok(Rule::Exact(pattern)),
        _ => Err(PatternError(pattern)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_cover_salesforce_hosts() {
        let policy = InterceptPolicy::salesforce();
        for host in [
            "login.salesforce.com",
            "TEST.salesforce.com.",
            "acme.my.salesforce.com",
            "acme--uat.sandbox.my.salesforce.com",
            "acme.lightning.force.com",
            "acme.my.site.com",
            "na1.cloudforce.com",
            "acme.salesforce-sites.com",
        ] {
            assert!(policy.matches(host), "{host}");
        }
    }

    #[test]
    fn lookalike_hosts_are_not_intercepted() {
        let policy = InterceptPolicy::salesforce();
        for host in [
            "salesforce.com.evil.example",
            "evilsalesforce.com",
            "force.com",
            "example.com",
            "my.site.com",
            "127.0.0.1",
        ] {
            assert!(!policy.matches(host), "{host}");
        }
    }

    #[test]
    fn custom_patterns_replace_the_defaults() {
        let policy = InterceptPolicy::new(&["origin.test", "*.example.org"]).unwrap();
        assert!(policy.matches("origin.test"));
        assert!(policy.matches("a.b.example.org"));
        assert!(!policy.matches("example.org"));
        assert!(!policy.matches("login.salesforce.com"));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in ["", "*.", "a..b", "*salesforce.com", "https://x.com"] {
            assert!(InterceptPolicy::new(&[bad]).is_err(), "{bad}");
        }
    }
}
