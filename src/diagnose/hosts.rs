//! Which Salesforce front door a host name is.

/// A Salesforce host, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    Login,
    Test,
    /// `<name>.my.salesforce.com` or `<name>--<sbx>.sandbox.my.salesforce.com` (`name` keeps
    /// the sandbox part, so two sandboxes differ).
    MyDomain {
        name: String,
        sandbox: bool,
    },
    /// Experience Cloud and other site hosts.
    Site,
    Other,
}

impl HostKind {
    pub fn of(host: &str) -> Self {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "login.salesforce.com" {
            return Self::Login;
        }
        if host == "test.salesforce.com" {
            return Self::Test;
        }
        if let Some(name) = host.strip_suffix(".sandbox.my.salesforce.com") {
            return Self::MyDomain {
                name: name.to_owned(),
                sandbox: true,
            };
        }
        if let Some(name) = host.strip_suffix(".my.salesforce.com") {
            return Self::MyDomain {
                name: name.to_owned(),
                sandbox: false,
            };
        }
        if [".my.site.com", ".force.com", ".salesforce-sites.com"]
            .iter()
            .any(|s| host.ends_with(s))
        {
            return Self::Site;
        }
        Self::Other
    }

    /// Whether the host serves sandboxes; `None` when the name does not tell.
    pub fn sandbox(&self) -> Option<bool> {
        match self {
            Self::Login => Some(false),
            Self::Test => Some(true),
            Self::MyDomain { sandbox, .. } => Some(*sandbox),
            _ => None,
        }
    }

    pub fn is_generic(&self) -> bool {
        matches!(self, Self::Login | Self::Test)
    }
}

/// The class of a host as the upstream metrics label it; `observed` tells an intercepted
/// Salesforce host of no known kind from any other.
pub fn metric_class(host: &str, observed: bool) -> &'static str {
    match HostKind::of(host) {
        HostKind::Login | HostKind::Test => "login",
        HostKind::MyDomain { .. } => "my_domain",
        HostKind::Site => "site",
        HostKind::Other if observed => "salesforce_other",
        HostKind::Other => "other",
    }
}

/// Whether a token issued at `issued` can be refreshed at `used`: same sandbox-ness, and the
/// same My Domain when both are My Domains. Login and the org's My Domain are interchangeable.
pub fn same_org_family(issued: &str, used: &str) -> bool {
    let (a, b) = (HostKind::of(issued), HostKind::of(used));
    if let (Some(x), Some(y)) = (a.sandbox(), b.sandbox())
        && x != y
    {
        return false;
    }
    match (&a, &b) {
        (HostKind::MyDomain { name: x, .. }, HostKind::MyDomain { name: y, .. }) => x == y,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_classified() {
        assert_eq!(HostKind::of("login.salesforce.com"), HostKind::Login);
        assert_eq!(
            HostKind::of("acme--uat.sandbox.my.salesforce.com").sandbox(),
            Some(true)
        );
        assert_eq!(
            HostKind::of("acme.my.salesforce.com").sandbox(),
            Some(false)
        );
        assert_eq!(HostKind::of("acme.my.site.com"), HostKind::Site);
    }

    #[test]
    fn token_hosts_must_match_in_kind_and_my_domain() {
        assert!(same_org_family(
            "login.salesforce.com",
            "acme.my.salesforce.com"
        ));
        assert!(!same_org_family(
            "test.salesforce.com",
            "login.salesforce.com"
        ));
        assert!(!same_org_family(
            "acme.my.salesforce.com",
            "other.my.salesforce.com"
        ));
        assert!(!same_org_family(
            "acme--uat.sandbox.my.salesforce.com",
            "acme.my.salesforce.com"
        ));
    }
}
