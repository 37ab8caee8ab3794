//! One org connection: its JWT bearer login (cached until it stops working), its SOQL queries
//! through the proxy's upstream client, and the org id it learns from the identity URL.

use crate::diagnose::catalogue::id;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::BodyExt;

use super::OrgConfig;
use crate::body;
use crate::metrics::Metrics;
use crate::oauth;
use crate::upstream::UpstreamClient;

/// Salesforce's default session timeout is two hours; a shorter cache never outlives it, and a
/// 401 logs in again anyway.
const SESSION_KEPT: Duration = Duration::from_secs(15 * 60);
/// The API version queried; every org of the last years serves it.
const API_VERSION: &str = "v60.0";
/// Answers larger than this are not read (500 rows of these fields are far smaller).
const ANSWER_CAP: usize = 4 * 1024 * 1024;
/// How long what was read for a (user, app) is reused: a client retrying a dead token must not
/// turn into a storm of queries.
const FACTS_KEPT: Duration = Duration::from_secs(30);
/// Queries per minute at most, far below any org's daily API allowance.
const QUERIES_PER_MINUTE: u32 = 120;
/// How long the org's refusal of the connection itself (its login, or a session right after
/// the login) answers for it before the org is asked again: a broken connection must not send
/// a login per query of every confirmation.
const REFUSAL_KEPT: Duration = Duration::from_secs(30);

/// Why the org could not be asked. Messages carry hosts, ids and Salesforce's error text,
/// never a token or the assertion.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrgError {
    #[error(
        "the org connection's JWT bearer login at {host} failed: HTTP {status} {error}: {description}"
    )]
    Login {
        host: String,
        status: u16,
        error: String,
        description: String,
        /// The login failure diagnosed like an application's.
        cause: &'static str,
    },
    #[error("{host} could not be reached: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("the query on {object} was refused: HTTP {status} {code}: {message}")]
    Refused {
        object: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    #[error("the answer from {host} was not understood: {reason}")]
    Malformed { host: String, reason: String },
    #[error("the key could not sign an assertion: {0}")]
    Key(String),
}

/// The queries one org connection may still make this minute: each connection has its own,
/// so a storm of failures of one org never spends another org's API allowance.
#[derive(Debug)]
struct QueryBudget {
    minute_from: Instant,
    used: u32,
}

impl QueryBudget {
    fn new(now: Instant) -> Self {
        Self {
            minute_from: now,
            used: 0,
        }
    }

    /// Counts `n` queries if they fit the current minute; a refusal spends nothing, so the
    /// queries of a later, smaller confirmation may still fit.
    fn take(&mut self, n: u32, now: Instant) -> bool {
        if now.duration_since(self.minute_from) >= Duration::from_secs(60) {
            *self = Self::new(now);
        }
        let fits = self.used + n <= QUERIES_PER_MINUTE;
        if fits {
            self.used += n;
        }
        fits
    }
}

struct Session {
    access_token: String,
    /// Where the REST API of this org answers (`instance_url`).
    instance: String,
    until: Instant,
}

pub struct OrgConnection {
    pub config: OrgConfig,
    key: jsonwebtoken::EncodingKey,
    client: UpstreamClient,
    metrics: Arc<Metrics>,
    session: tokio::sync::Mutex<Option<Session>>,
    /// The org's last refusal of the connection itself and when, kept for `REFUSAL_KEPT`.
    refusal: Mutex<Option<(Instant, OrgError)>>,
    org_id: Mutex<Option<String>>,
    /// What was already logged about this connection's own problems: once per cause.
    told: Mutex<HashSet<String>>,
    facts: Mutex<std::collections::HashMap<(String, String), (Instant, super::OrgFacts)>>,
    budget: Mutex<QueryBudget>,
}

impl std::fmt::Debug for OrgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgConnection")
            .field("host", &self.config.host)
            .field("username", &self.config.username)
            .finish_non_exhaustive()
    }
}

impl OrgConnection {
    pub(super) fn new(
        config: OrgConfig,
        key: jsonwebtoken::EncodingKey,
        client: UpstreamClient,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            key,
            client,
            metrics,
            session: tokio::sync::Mutex::new(None),
            refusal: Mutex::new(None),
            org_id: Mutex::new(None),
            told: Mutex::new(HashSet::new()),
            facts: Mutex::new(std::collections::HashMap::new()),
            budget: Mutex::new(QueryBudget::new(Instant::now())),
        }
    }

    /// What was read for this user and app in the last seconds.
    pub fn recent_facts(&self, user_id: &str, app: &str) -> Option<super::OrgFacts> {
        let facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        facts
            .get(&(user_id.to_owned(), app.to_owned()))
            .filter(|(at, _)| at.elapsed() < FACTS_KEPT)
            .map(|(_, facts)| facts.clone())
    }

    pub fn keep_facts(&self, user_id: &str, app: &str, read: super::OrgFacts) {
        let mut facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        facts.retain(|_, (at, _)| at.elapsed() < FACTS_KEPT);
        facts.insert((user_id.to_owned(), app.to_owned()), (Instant::now(), read));
    }

    /// Whether `n` more queries fit this minute's budget (and counts them if so).
    pub fn may_query(&self, n: u32) -> bool {
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(n, Instant::now())
    }

    pub fn serves_host(&self, host: &str) -> bool {
        self.config.host.eq_ignore_ascii_case(host)
    }

    pub fn serves_org(&self, org_id: &str) -> bool {
        self.org_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .is_some_and(|o| o.get(..15) == org_id.get(..15))
    }

    /// The app's name for a consumer key, from `[orgs.apps]`.
    pub fn app_name(&self, client_id: &str) -> Option<&str> {
        self.config.apps.get(client_id).map(String::as_str)
    }

    /// Logs a problem of this connection once per kind, with what would fix it.
    pub fn tell_once(&self, kind: &str, message: &str, fix: &str) {
        let first = self
            .told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind.to_owned());
        if first {
            tracing::warn!(
                event = "org_connection_problem",
                org = self.config.host,
                kind,
                message,
                fix
            );
        }
    }

    /// Runs one SOQL query and returns its records; logs in first (again after a 401), unless
    /// the org refused the connection itself moments ago.
    pub async fn query(
        &self,
        object: &'static str,
        soql: &str,
    ) -> Result<Vec<serde_json::Value>, OrgError> {
        // Not counted: the org was not asked.
        if let Some(refusal) = self.recent_refusal() {
            return Err(refusal);
        }
        let outcome = self.query_with_session(object, soql).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(OrgError::Refused { .. }) => "refused",
            Err(OrgError::Login { .. }) => "login_failed",
            Err(_) => "error",
        };
        Metrics::count(
            &self.metrics.org_queries,
            &[
                ("org", self.org_label()),
                ("object", object),
                ("outcome", label),
            ],
        );
        outcome
    }

    async fn query_with_session(
        &self,
        object: &'static str,
        soql: &str,
    ) -> Result<Vec<serde_json::Value>, OrgError> {
        match self.query_once(object, soql).await {
            Err(OrgError::Refused { status: 401, .. }) => {
                *self.session.lock().await = None;
                let retried = self.query_once(object, soql).await;
                if let Err(e @ OrgError::Refused { status: 401, .. }) = &retried {
                    // Refused right after a login: the next session would be too.
                    self.keep_refusal(e);
                }
                retried
            }
            other => other,
        }
    }

    fn recent_refusal(&self) -> Option<OrgError> {
        let refusal = self.refusal.lock().unwrap_or_else(|e| e.into_inner());
        refusal
            .as_ref()
            .filter(|(at, _)| at.elapsed() < REFUSAL_KEPT)
            .map(|(_, e)| e.clone())
    }

    fn keep_refusal(&self, e: &OrgError) {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), e.clone()));
    }

    /// The org label of the metric: the configured host, leaked once per connection so the
    /// label set stays static (connections are few and fixed at start).
    fn org_label(&self) -> &'static str {
        static LABELS: std::sync::OnceLock<Mutex<Vec<(String, &'static str)>>> =
            std::sync::OnceLock::new();
        let mut labels = LABELS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, label)) = labels.iter().find(|(h, _)| *h == self.config.host) {
            return label;
        }
        let label: &'static str = Box::leak(self.config.host.clone().into_boxed_str());
        labels.push((self.config.host.clone(), label));
        label
    }

    async fn query_once(
        &self,
        object: &'static str,
        soql: &str,
    ) -> Result<Vec<serde_json::Value>, OrgError> {
        let (token, instance) = self.session().await?;
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", soql)
            .finish();
        let uri = format!("https://{instance}/services/data/{API_VERSION}/query?{query}");
        let mut request = Request::new(body::empty());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri.parse().map_err(|e| OrgError::Malformed {
            host: instance.clone(),
            reason: format!("no query URI: {e}"),
        })?;
        let headers = request.headers_mut();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}")
                .parse()
                .map_err(|_| OrgError::Malformed {
                    host: instance.clone(),
                    reason: "the access token is not a header value".into(),
                })?,
        );
        headers.insert(
            header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let (status, body) = self.send(&instance, request).await?;
        if status != 200 {
            let first = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.as_array().and_then(|a| a.first()).cloned())
                .unwrap_or_default();
            return Err(OrgError::Refused {
                object,
                status,
                code: first["errorCode"].as_str().unwrap_or("").to_owned(),
                message: first["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| OrgError::Malformed {
                host: instance.clone(),
                reason: format!("the {object} answer is not JSON: {e}"),
            })?;
        value["records"]
            .as_array()
            .cloned()
            .ok_or_else(|| OrgError::Malformed {
                host: instance,
                reason: format!("the {object} answer has no records"),
            })
    }

    /// The cached session, or a new JWT bearer login.
    async fn session(&self) -> Result<(String, String), OrgError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref()
            && s.until > Instant::now()
        {
            return Ok((s.access_token.clone(), s.instance.clone()));
        }
        let fresh = self.login().await.inspect_err(|e| {
            if matches!(e, OrgError::Login { .. }) {
                self.keep_refusal(e);
            }
        })?;
        let found = (fresh.access_token.clone(), fresh.instance.clone());
        *session = Some(fresh);
        Ok(found)
    }

    async fn login(&self) -> Result<Session, OrgError> {
        let host = self.config.host.clone();
        let audience = self
            .config
            .audience
            .clone()
            .unwrap_or_else(|| crate::recover::assertion::audience_for(&host));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let assertion = crate::recover::assertion::mint(
            &self.key,
            &self.config.client_id,
            &self.config.username,
            &audience,
            now,
        )
        .map_err(|e| OrgError::Key(e.to_string()))?;
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", oauth::JWT_BEARER)
            .append_pair("assertion", &assertion)
            .finish();
        let mut request = Request::new(body::full(Bytes::from(form.clone())));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = format!("https://{host}/services/oauth2/token")
            .parse()
            .map_err(|e| OrgError::Malformed {
                host: host.clone(),
                reason: format!("no token URI: {e}"),
            })?;
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let (status, body) = self.send(&host, request).await?;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let text = |k: &str| value[k].as_str().unwrap_or("").to_owned();
        if status != 200 || !value["access_token"].is_string() {
            return Err(self.login_failure(&host, status, &form, &body));
        }
        let instance = text("instance_url")
            .strip_prefix("https://")
            .map(|h| h.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| host.clone());
        let id = text("id");
        if let Some(org) = id.split('/').rev().nth(1).filter(|o| o.starts_with("00D")) {
            *self.org_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(org.to_owned());
        }
        Ok(Session {
            access_token: text("access_token"),
            instance,
            until: Instant::now() + SESSION_KEPT,
        })
    }

    /// A failed login, diagnosed with the same rules as an application's exchange.
    fn login_failure(&self, host: &str, status: u16, form: &str, body: &[u8]) -> OrgError {
        let fp = oauth::Fingerprinter::ephemeral();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let facts = oauth::RequestFacts::parse(host, true, &headers, None, form.as_bytes(), &fp);
        let outcome = oauth::ResponseFacts::parse(status, body, &fp);
        let view = crate::ledger::LedgerView::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let diagnosis =
            crate::diagnose::diagnose(&facts, &outcome, &view, &Default::default(), now);
        let cause = diagnosis.top().map_or(id::UNKNOWN, |c| c.id);
        OrgError::Login {
            host: host.to_owned(),
            status,
            error: outcome.error.unwrap_or_default(),
            description: outcome.error_description.unwrap_or_default(),
            cause,
        }
    }

    async fn send(
        &self,
        host: &str,
        request: Request<body::ProxyBody>,
    ) -> Result<(u16, Bytes), OrgError> {
        let unreachable = |reason: String| OrgError::Unreachable {
            host: host.to_owned(),
            reason,
        };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| unreachable(crate::reply::root_cause(&e)))?;
        let status = response.status().as_u16();
        let limited = http_body_util::Limited::new(response.into_body(), ANSWER_CAP);
        let body = limited
            .collect()
            .await
            .map_err(|e| unreachable(format!("the answer broke off: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minutes_queries_stop_at_the_budget_and_start_again_the_next_minute() {
        let start = Instant::now();
        let mut budget = QueryBudget::new(start);
        let confirmations = QUERIES_PER_MINUTE / 5;
        for i in 0..confirmations {
            assert!(budget.take(5, start), "confirmation {i} fits");
        }
        assert!(!budget.take(5, start + Duration::from_secs(59)));
        assert!(!budget.take(1, start + Duration::from_secs(59)));
        assert!(budget.take(5, start + Duration::from_secs(60)));
    }

    #[test]
    fn a_refused_confirmation_spends_nothing() {
        let start = Instant::now();
        let mut budget = QueryBudget::new(start);
        assert!(budget.take(QUERIES_PER_MINUTE - 2, start));
        assert!(!budget.take(5, start));
        assert!(budget.take(2, start));
        assert!(!budget.take(1, start));
    }
}
