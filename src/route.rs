//! Where a request is going, as the connection that read it decided: the one fact the proxy
//! hands the exchange stack with each request, so that neither imports the other's types.
//!
//! Must never: know which hosts are Salesforce's. The host class for metric labels comes from
//! a [`HostClassifier`] the composition root supplies.

/// Names the class of a host for metric labels (`login`, `my_domain`, ...); `observed` says
/// whether the connection was intercepted.
pub type HostClassifier = fn(host: &str, observed: bool) -> &'static str;

/// Where a request is going, attached to it as an extension by the connection that read it.
#[derive(Debug, Clone)]
pub struct Route {
    /// The origin's host name, lower case.
    pub host: String,
    /// `host` or `host:port`, as used in the upstream URI.
    pub authority: String,
    /// Whether this request was intercepted (and so may be observed by the exchange stack).
    pub observed: bool,
    /// The host's class as metric labels name it, decided once when the route is made.
    pub host_class: &'static str,
}

impl Route {
    pub fn new(host: String, authority: String, observed: bool, classify: HostClassifier) -> Self {
        let host_class = classify(&host, observed);
        Self {
            host,
            authority,
            observed,
            host_class,
        }
    }
}
