//! Org connections: grantdoctor asks Salesforce itself. An integration user of the org, logged
//! in by the JWT bearer flow through the proxy's own upstream client (verified TLS,
//! `--resolve`), reads the records that decide a diagnosis the ledger cannot: the user's live
//! approvals per app (`OauthToken`), whether the user is active (`User`), frozen or locked
//! (`UserLogin`), recent logins (`LoginHistory`) and the app's policy (`ConnectedApplication`).
//!
//! Must never: select or keep a token value (`OauthToken.AccessToken` and `DeleteToken` are
//! never selected), log the connection's access token or assertion, or delay an application's
//! answer past the confirmation budget.

mod confirm;
pub mod records;
mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

pub use confirm::{OrgFacts, confirm};
pub use records::{Approval, LoginRow, UserRecord};
pub use session::OrgError;

use crate::metrics::Metrics;
use crate::upstream::UpstreamClient;

/// One `[[orgs]]` table of the config file.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// The org's My Domain host: its token endpoint and REST API.
    pub host: String,
    /// Consumer key of an app that allows the JWT bearer flow for `username`.
    pub client_id: String,
    /// The app's RSA key (PEM).
    pub private_key: PathBuf,
    /// The integration user the queries run as.
    pub username: String,
    /// `aud` of the assertion; by default the host's own origin.
    #[serde(default)]
    pub audience: Option<String>,
    /// Consumer key → connected app name: SOQL knows apps by name only.
    #[serde(default)]
    pub apps: HashMap<String, String>,
}

/// The connections of this process, by host.
#[derive(Debug, Default)]
pub struct Orgs {
    connections: Vec<Arc<session::OrgConnection>>,
}

/// An `[[orgs]]` entry whose key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[[orgs]] {host}: {source}")]
pub struct LoadError {
    host: String,
    source: crate::recover::assertion::KeyError,
}

impl Orgs {
    /// Loads each org's key; a key that cannot sign is a configuration error naming the org.
    pub fn load(
        configs: &[OrgConfig],
        client: UpstreamClient,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        let connections = configs
            .iter()
            .map(|config| {
                let key =
                    crate::recover::assertion::load_key(&config.private_key).map_err(|source| {
                        LoadError {
                            host: config.host.clone(),
                            source,
                        }
                    })?;
                Ok(Arc::new(session::OrgConnection::new(
                    config.clone(),
                    key,
                    client.clone(),
                    metrics.clone(),
                )))
            })
            .collect::<Result<_, LoadError>>()?;
        Ok(Self { connections })
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// The connection serving a token of this host or org: its own host, or an org id it
    /// learned when it logged in.
    pub fn for_token(
        &self,
        hosts: &[&str],
        org_id: Option<&str>,
    ) -> Option<Arc<session::OrgConnection>> {
        self.connections
            .iter()
            .find(|c| {
                hosts.iter().any(|h| c.serves_host(h)) || org_id.is_some_and(|o| c.serves_org(o))
            })
            .cloned()
    }

    pub fn all(&self) -> &[Arc<session::OrgConnection>] {
        &self.connections
    }
}

pub use session::OrgConnection;
