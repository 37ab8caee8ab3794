//! What grantdoctor does about a failure, beyond explaining it:
//!
//! - **JWT bearer recovery**: a refresh that failed with `invalid_grant`, for a connected app
//!   whose private key we hold, is rescued with a JWT bearer exchange (Salesforce's JWT bearer flow), one per
//!   (host, client id, subject) at a time; a success is reused briefly, a failure starts a
//!   cooldown so a broken app cannot hammer Salesforce's login limits.
//! - **Refresh coalescing** ([`Flights`]): identical concurrent refreshes share one upstream
//!   request (E4's concurrency error, and under rotation the family revocation, cannot happen).
//! - **The rotated-token guard** ([`RotationGuard`]): a refresh token rotated away is never
//!   presented to Salesforce again.
//!
//! Must never: replay a client's refresh token, log an assertion or a key, or keep a token
//! response anywhere but memory.

pub mod assertion;
pub mod flight;
pub mod guard;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::diagnose::Diagnosis;
use crate::finished::Finished;

pub use flight::{Flights, Joined};
pub use guard::{CredentialsKey, RotationGuard, Verdict};

/// One `[[recovery.jwt_bearer]]` entry of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtBearerConfig {
    /// The connected app's consumer key: refresh failures of this client id are rescued.
    pub client_id: String,
    /// Its RSA private key, PEM (PKCS#8 or PKCS#1); the certificate is on the app.
    pub private_key: PathBuf,
    /// The username to act as, whoever's token failed.
    #[serde(default)]
    pub subject: Option<String>,
    /// Usernames by Salesforce user id (15 or 18 characters), for apps used by many users: the
    /// ledger knows whose token failed.
    #[serde(default)]
    pub subjects: BTreeMap<String, String>,
    /// `aud` of the assertion; default: the origin of the host the refresh went to.
    #[serde(default)]
    pub audience: Option<String>,
}

/// A configured app, its key loaded.
struct JwtBearerApp {
    config: JwtBearerConfig,
    key: jsonwebtoken::EncodingKey,
}

impl std::fmt::Debug for JwtBearerApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtBearerApp")
            .field("client_id", &self.config.client_id)
            .field("private_key", &self.config.private_key)
            .finish_non_exhaustive()
    }
}

/// Whose token a recovery is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub host: String,
    pub client_id: String,
    pub subject: String,
}

/// What a recovery came to; shared by every caller of one flight and cached for a while.
#[derive(Debug, Clone)]
pub enum Outcome {
    Recovered(Arc<Finished>),
    Failed(Arc<Failure>),
}

/// Why a recovery did not give a token.
#[derive(Debug, Default)]
pub struct Failure {
    /// HTTP status of the JWT exchange (0 when none took place).
    pub status: u16,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The JWT exchange's own diagnosis.
    pub diagnosis: Diagnosis,
    /// A plain reason when there is no Salesforce error (key, transport).
    pub reason: Option<String>,
}

/// How a caller got its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// It led the JWT exchange.
    Exchanged,
    /// It waited for a concurrent caller's exchange.
    Shared,
    /// A recent success was handed out again.
    Reused,
    /// A recent failure: no exchange is attempted during the cooldown.
    CoolingDown,
}

impl How {
    pub fn label(self) -> &'static str {
        match self {
            Self::Exchanged => "exchanged",
            Self::Shared => "shared",
            Self::Reused => "reused",
            Self::CoolingDown => "cooling_down",
        }
    }
}

/// Whether and as whom a failed refresh can be rescued.
#[derive(Debug)]
pub enum Plan {
    /// No key for this client id: nothing to do.
    NotConfigured,
    /// Configured, but not to be attempted (no subject for this user, say), with the reason.
    Skip(String),
    Attempt {
        key: Key,
        audience: String,
    },
}

/// The recovery engine, shared by every connection.
#[derive(Debug)]
pub struct Recovery {
    apps: HashMap<String, JwtBearerApp>,
    reuse: Duration,
    cooldown: Duration,
    flights: Flights<Key, Outcome>,
    recent: Mutex<HashMap<Key, (Instant, Outcome)>>,
}

/// A `[[recovery.jwt_bearer]]` entry refused at start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("recovery.jwt_bearer[{index}] private_key: {source}")]
    Key {
        index: usize,
        source: assertion::KeyError,
    },
    #[error("recovery.jwt_bearer[{index}] ({client_id}): set subject or subjects")]
    NoSubject { index: usize, client_id: String },
}

/// Why no JWT bearer form could be made.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("no such app")]
    NoSuchApp,
    #[error("the assertion could not be signed: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

impl Recovery {
    /// Loads every configured key; a bad one is an error naming its entry and file.
    pub fn new(
        configs: &[JwtBearerConfig],
        reuse: Duration,
        cooldown: Duration,
    ) -> Result<Self, ConfigError> {
        let mut apps = HashMap::new();
        for (i, config) in configs.iter().enumerate() {
            let key = assertion::load_key(&config.private_key)
                .map_err(|source| ConfigError::Key { index: i, source })?;
            if config.subject.is_none() && config.subjects.is_empty() {
                return Err(ConfigError::NoSubject {
                    index: i,
                    client_id: config.client_id.clone(),
                });
            }
            apps.insert(
                config.client_id.clone(),
                JwtBearerApp {
                    config: config.clone(),
                    key,
                },
            );
        }
        Ok(Self {
            apps,
            reuse,
            cooldown,
            flights: Flights::default(),
            recent: Mutex::default(),
        })
    }

    pub fn is_configured(&self) -> bool {
        !self.apps.is_empty()
    }

    /// The recovery for a refresh of `client_id` at `host` that failed for `user_id`.
    pub fn plan(&self, host: &str, client_id: Option<&str>, user_id: Option<&str>) -> Plan {
        let Some(app) = client_id.and_then(|c| self.apps.get(c)) else {
            return Plan::NotConfigured;
        };
        let mapped = user_id.and_then(|user| {
            app.config
                .subjects
                .iter()
                .find(|(id, _)| same_user_id(id, user))
                .map(|(_, name)| name.clone())
        });
        let Some(subject) = mapped.or_else(|| app.config.subject.clone()) else {
            return Plan::Skip(match user_id {
                Some(user) => format!("no subject configured for user {user}"),
                None => "the failed token's user is unknown to the ledger and no default subject is configured".into(),
            });
        };
        Plan::Attempt {
            audience: app
                .config
                .audience
                .clone()
                .unwrap_or_else(|| assertion::audience_for(host)),
            key: Key {
                host: host.to_owned(),
                client_id: app.config.client_id.clone(),
                subject,
            },
        }
    }

    /// The form of a JWT bearer exchange for `key`; the assertion lives only in it.
    pub fn form(&self, key: &Key, audience: &str) -> Result<String, FormError> {
        let app = self.apps.get(&key.client_id).ok_or(FormError::NoSuchApp)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let jwt = assertion::mint(&app.key, &key.client_id, &key.subject, audience, now)
            .map_err(FormError::Sign)?;
        Ok(form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", crate::oauth::JWT_BEARER)
            .append_pair("assertion", &jwt)
            .finish())
    }

    /// Runs `exchange` for `key` unless a recent outcome stands or a concurrent caller is
    /// already running it.
    pub async fn run<F, Fut>(&self, key: &Key, exchange: F) -> (Outcome, How)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        if let Some(recent) = self.recent(key) {
            return recent;
        }
        match self.flights.join(key.clone()).await {
            Joined::Follow(outcome) => (outcome, How::Shared),
            Joined::Lead(leader) => {
                // A flight may have landed between the look at recent outcomes and the join.
                if let Some((outcome, how)) = self.recent(key) {
                    leader.land(outcome.clone());
                    return (outcome, how);
                }
                let outcome = exchange().await;
                self.lock()
                    .insert(key.clone(), (Instant::now(), outcome.clone()));
                leader.land(outcome.clone());
                (outcome, How::Exchanged)
            }
        }
    }

    fn recent(&self, key: &Key) -> Option<(Outcome, How)> {
        let mut recent = self.lock();
        let (at, outcome) = recent.get(key)?;
        let (limit, how) = match outcome {
            Outcome::Recovered(_) => (self.reuse, How::Reused),
            Outcome::Failed(_) => (self.cooldown, How::CoolingDown),
        };
        if at.elapsed() < limit {
            return Some((outcome.clone(), how));
        }
        recent.remove(key);
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, Outcome)>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Salesforce ids come in a 15-character case-sensitive form and an 18-character form with a
/// checksum suffix; both name the same user.
fn same_user_id(a: &str, b: &str) -> bool {
    a == b || (a.len() >= 15 && b.len() >= 15 && a[..15] == b[..15])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config(subject: Option<&str>, subjects: &[(&str, &str)]) -> JwtBearerConfig {
        JwtBearerConfig {
            client_id: "3MVG9web".into(),
            private_key: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/jwt/app-private.pem"),
            subject: subject.map(str::to_owned),
            subjects: subjects
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            audience: None,
        }
    }

    fn recovery(reuse: u64, cooldown: u64) -> Recovery {
        Recovery::new(
            &[config(
                Some("int@acme.com"),
                &[("005000000000001AAA", "alice@acme.com")],
            )],
            Duration::from_millis(reuse),
            Duration::from_millis(cooldown),
        )
        .unwrap()
    }

    #[test]
    fn the_subject_comes_from_the_user_id_map_then_the_default() {
        let r = recovery(0, 0);
        let subject =
            |user: Option<&str>| match r.plan("acme.my.salesforce.com", Some("3MVG9web"), user) {
                Plan::Attempt { key, audience } => {
                    assert_eq!(audience, "https://acme.my.salesforce.com");
                    key.subject
                }
                other => panic!("{other:?}"),
            };
        assert_eq!(subject(Some("005000000000001")), "alice@acme.com");
        assert_eq!(subject(Some("005000000000002AAA")), "int@acme.com");
        assert_eq!(subject(None), "int@acme.com");
        assert!(matches!(
            r.plan("x", Some("other"), None),
            Plan::NotConfigured
        ));
        let only_map = Recovery::new(
            &[config(None, &[("005000000000001AAA", "a@b")])],
            Duration::ZERO,
            Duration::ZERO,
        )
        .unwrap();
        assert!(matches!(
            only_map.plan("x", Some("3MVG9web"), Some("005000000000009AAA")),
            Plan::Skip(_)
        ));
    }

    #[test]
    fn an_entry_without_any_subject_is_refused() {
        let err = Recovery::new(&[config(None, &[])], Duration::ZERO, Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("set subject or subjects"), "{err}");
    }

    fn key() -> Key {
        Key {
            host: "h".into(),
            client_id: "3MVG9web".into(),
            subject: "s".into(),
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed(Arc::new(Failure::default()))
    }

    #[tokio::test]
    async fn a_failure_holds_a_cooldown_and_then_a_new_exchange_is_tried() {
        let r = recovery(0, 100);
        let calls = AtomicUsize::new(0);
        let exchange = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            failed()
        };
        assert_eq!(r.run(&key(), exchange).await.1, How::Exchanged);
        assert_eq!(r.run(&key(), exchange).await.1, How::CoolingDown);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(r.run(&key(), exchange).await.1, How::Exchanged);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_form_carries_a_jwt_bearer_grant_and_nothing_of_the_refresh() {
        let r = recovery(0, 0);
        let form = r.form(&key(), "https://login.salesforce.com").unwrap();
        let pairs: HashMap<String, String> = form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(pairs["grant_type"], crate::oauth::JWT_BEARER);
        assert_eq!(pairs.len(), 2);
        let parts = crate::oauth::jwt::decode_parts(&pairs["assertion"]).unwrap();
        assert_eq!(parts.claims["sub"], "s");
    }
}
