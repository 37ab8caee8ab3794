//! Alerts that reach people: every diagnosed failure, warning, recovery and block, POSTed to
//! the configured webhooks (`--webhook URL`, `[[webhooks]]`) as JSON or as a Slack message.
//!
//! One task reads the live feed of kept events ([`crate::telemetry::subscribe`]), filters and
//! deduplicates them per webhook, and hands each body to that webhook's bounded queue; one
//! task per webhook delivers in order, with retries ([`deliver`]). The token path only
//! writes a log line: a slow or dead receiver costs it nothing, and what does not fit in a
//! queue is dropped and counted (`grantdoctor_webhook_dropped_total`).
//!
//! Must never: show a webhook URL (a token in its path or query, credentials in it) or its
//! secret in a log line, an error or `check-config`; only `scheme://host/…`.

pub mod deliver;
pub mod payload;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Uri};
use ring::hmac;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::cli::{RunArgs, UsageError};
use crate::metrics::Metrics;
use crate::upstream::UpstreamClient;
pub use payload::{Alert, Filter, Format};

/// A webhook URL. Kept whole for sending; shown as `scheme://host/…` everywhere else (its
/// `Debug` too), since the rest may be the credential.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl std::str::FromStr for SecretUrl {
    /// Never fails here: a parse error from the argument parser would print the value.
    /// [`SecretUrl::uri`] validates, with a message that leaves the URL out.
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_owned()))
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl<'de> serde::Deserialize<'de> for SecretUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(String::deserialize(d)?.trim().to_owned()))
    }
}

impl SecretUrl {
    /// `scheme://host/…` (with the port when there is one), or a placeholder for a URL that
    /// does not parse.
    pub fn shown(&self) -> String {
        match self.uri() {
            Ok(uri) => {
                let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
                format!(
                    "{}://{}{port}/…",
                    uri.scheme_str().unwrap_or("?"),
                    uri.host().unwrap_or("?")
                )
            }
            Err(_) => "(not a valid URL)".into(),
        }
    }

    /// The URL, checked: `http` or `https`, with a host.
    pub fn uri(&self) -> Result<Uri, UrlError> {
        let uri: Uri = self.0.parse().map_err(|_| UrlError::Malformed)?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
            _ => Err(UrlError::NotHttp),
        }
    }
}

/// Why a webhook URL is refused; never with the URL itself, which may hold a token.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("not a valid URL (the URL is not shown: it may hold a token)")]
    Malformed,
    #[error(
        "expected an http:// or https:// URL with a host (the URL is not shown: it may hold a token)"
    )]
    NotHttp,
}

/// One `[[webhooks]]` table; `--webhook URL` is the same with every other key at its
/// default.
#[derive(Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: SecretUrl,
    /// Event kinds and cause or warning ids (`sf.refresh.*`, `warn.*`); empty: every
    /// diagnosed failure, warning, recovery and block.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub format: Format,
    /// Signs each body: `grantdoctor-signature: sha256=<hex HMAC-SHA256>`.
    #[serde(default)]
    pub secret: Option<String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "********"))
            .finish()
    }
}

/// Every webhook of the arguments, `--webhook` ones first, each checked.
pub fn configured(args: &RunArgs) -> Result<Vec<WebhookConfig>, UsageError> {
    let flags = args.webhook.iter().map(|url| WebhookConfig {
        url: url.clone(),
        events: Vec::new(),
        format: Format::Json,
        secret: None,
    });
    let all: Vec<WebhookConfig> = flags.chain(args.webhooks.iter().cloned()).collect();
    for (n, hook) in all.iter().enumerate() {
        let bad = |reason: &str| UsageError(format!("webhook {}: {reason}", n + 1));
        hook.url.uri().map_err(|e| bad(&e.to_string()))?;
        if hook.secret.as_deref().is_some_and(str::is_empty) {
            return Err(bad("`secret` is empty"));
        }
        if hook.events.iter().any(|e| e.trim().is_empty()) {
            return Err(bad("`events` holds an empty entry"));
        }
    }
    Ok(all)
}

/// Starts the webhook tasks, subscribed to the event feed from now on; nothing when none is
/// configured.
pub fn start(
    args: &RunArgs,
    client: UpstreamClient,
    metrics: Arc<Metrics>,
) -> Result<(), UsageError> {
    let hooks = configured(args)?;
    if hooks.is_empty() {
        return Ok(());
    }
    let feed = crate::telemetry::subscribe();
    let mut routes = Vec::with_capacity(hooks.len());
    for (n, hook) in hooks.iter().enumerate() {
        let (tx, rx) = mpsc::channel(args.webhook_queue.max(1));
        let target = target(n + 1, hook)?;
        tracing::info!(event = "webhook_configured", webhook = n + 1, host = target.host.as_str(), format = hook.format.as_str(), signed = hook.secret.is_some(), events = %hook.events.join(","));
        tokio::spawn(deliver::run(
            target,
            rx,
            client.clone(),
            metrics.clone(),
            deliver::Retry::default(),
        ));
        routes.push(Route {
            filter: Filter::new(&hook.events),
            format: hook.format,
            queue: tx,
            dedup: Dedup::new(Duration::from_secs(args.webhook_dedup)),
        });
    }
    tokio::spawn(dispatch(feed, routes, metrics));
    Ok(())
}

fn target(number: usize, hook: &WebhookConfig) -> Result<deliver::Target, UsageError> {
    let bad = |reason: &str| UsageError(format!("webhook {number}: {reason}"));
    let uri = hook.url.uri().map_err(|e| bad(&e.to_string()))?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    // Credentials in the URL become Basic authentication, and leave the URI the client
    // sends (and its Host header).
    let (authorization, uri) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(userinfo);
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| bad("the URL's credentials do not fit a header"))?;
            value.set_sensitive(true);
            let mut parts = uri.clone().into_parts();
            parts.authority = Some(host.parse().map_err(|_| bad("a bad host in the URL"))?);
            let bare = Uri::from_parts(parts).map_err(|_| bad("a bad URL"))?;
            (Some(value), bare)
        }
        None => (None, uri),
    };
    Ok(deliver::Target {
        number,
        host: uri.host().unwrap_or_default().to_owned(),
        uri,
        authorization,
        secret: hook
            .secret
            .as_ref()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes())),
    })
}

/// One webhook as the dispatcher sees it.
struct Route {
    filter: Filter,
    format: Format,
    queue: mpsc::Sender<deliver::Delivery>,
    dedup: Dedup,
}

/// Reads the feed until it closes, handing each admitted, not-duplicate alert to its
/// webhook's queue without waiting.
async fn dispatch(
    mut feed: tokio::sync::broadcast::Receiver<Arc<str>>,
    mut routes: Vec<Route>,
    metrics: Arc<Metrics>,
) {
    loop {
        let line = match feed.recv().await {
            Ok(line) => line,
            // The feed outran this task: those lines are lost to every webhook.
            Err(RecvError::Lagged(missed)) => {
                let dropped = missed * routes.len() as u64;
                Metrics::add(
                    &metrics.webhook_dropped,
                    &[("reason", "queue_full")],
                    dropped,
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let kind = payload::kind_of(&line);
        if !routes.iter().any(|r| r.filter.wants_kind(kind)) {
            continue;
        }
        let Some(alert) = Alert::parse(line) else {
            continue;
        };
        let now = Instant::now();
        for route in &mut routes {
            if !route.filter.admits(&alert) {
                continue;
            }
            let Some(suppressed) = route.dedup.admit(alert.dedup_key(), now) else {
                continue;
            };
            let delivery = deliver::Delivery {
                event_id: alert.event_id().to_owned(),
                body: payload::body(route.format, &alert, suppressed).into(),
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = route.queue.try_send(delivery) {
                Metrics::count(&metrics.webhook_dropped, &[("reason", "queue_full")]);
            }
        }
    }
}

/// Per key, the last alert sent and how many were held back since.
struct Dedup {
    window: Duration,
    seen: HashMap<String, (Instant, u64)>,
}

/// Keys kept before the expired ones are forgotten.
const DEDUP_KEYS: usize = 4096;

impl Dedup {
    fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
        }
    }

    /// `Some(suppressed since the last one)` when this alert is sent, `None` when it repeats
    /// one sent less than the window ago.
    fn admit(&mut self, key: String, now: Instant) -> Option<u64> {
        if self.window.is_zero() {
            return Some(0);
        }
        if let Some((sent, suppressed)) = self.seen.get_mut(&key) {
            if now.duration_since(*sent) < self.window {
                *suppressed += 1;
                return None;
            }
            let held = std::mem::take(suppressed);
            *sent = now;
            return Some(held);
        }
        if self.seen.len() >= DEDUP_KEYS {
            let window = self.window;
            self.seen
                .retain(|_, (sent, held)| *held > 0 || now.duration_since(*sent) < window);
        }
        self.seen.insert(key, (now, 0));
        Some(0)
    }
}

/// The `[[webhooks]]` tables for `check-config`: URLs as `scheme://host/…`, secrets masked.
pub fn render_tables(hooks: &[WebhookConfig]) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut out = String::new();
    for hook in hooks {
        out.push_str("\n[[webhooks]]\n");
        out.push_str(&format!("url = {}\n", quote(&hook.url.shown())));
        let events: Vec<String> = hook.events.iter().map(|e| quote(e)).collect();
        out.push_str(&format!("events = [{}]\n", events.join(", ")));
        out.push_str(&format!("format = {}\n", quote(hook.format.as_str())));
        if hook.secret.is_some() {
            out.push_str("secret = \"********\"\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_as_its_scheme_and_host_only() {
        let url: SecretUrl =
            "https://user:pw@hooks.example.com:8443/services/T0/B0/XyZsecret?token=abc"
                .parse()
                .unwrap();
        assert_eq!(url.shown(), "https://hooks.example.com:8443/…");
        assert_eq!(format!("{url:?}"), url.shown());
        let bad: SecretUrl = "ftp://x/token".parse().unwrap();
        let err = bad.uri().unwrap_err().to_string();
        assert!(
            !err.contains("token") || err.contains("may hold a token"),
            "{err}"
        );
        assert!(!err.contains("ftp://x"), "{err}");
    }

    #[test]
    fn repeats_within_the_window_are_held_back_and_counted_on_the_next_one_sent() {
        let mut dedup = Dedup::new(Duration::from_secs(600));
        let t0 = Instant::now();
        assert_eq!(dedup.admit("a".into(), t0), Some(0));
        assert_eq!(dedup.admit("a".into(), t0 + Duration::from_secs(1)), None);
        assert_eq!(dedup.admit("a".into(), t0 + Duration::from_secs(2)), None);
        assert_eq!(
            dedup.admit("b".into(), t0 + Duration::from_secs(2)),
            Some(0)
        );
        assert_eq!(
            dedup.admit("a".into(), t0 + Duration::from_secs(601)),
            Some(2)
        );
        assert_eq!(dedup.admit("a".into(), t0 + Duration::from_secs(602)), None);
        let mut off = Dedup::new(Duration::ZERO);
        assert_eq!(off.admit("a".into(), t0), Some(0));
        assert_eq!(off.admit("a".into(), t0), Some(0));
    }

    #[test]
    fn credentials_in_the_url_become_basic_authentication() {
        let hook = WebhookConfig {
            url: "http://u:p@127.0.0.1:9/hook?k=v".parse().unwrap(),
            events: vec![],
            format: Format::Json,
            secret: Some("s".into()),
        };
        let target = target(1, &hook).unwrap();
        assert_eq!(target.uri.to_string(), "http://127.0.0.1:9/hook?k=v");
        assert_eq!(target.host, "127.0.0.1");
        assert!(target.authorization.is_some());
        let shown = format!("{hook:?}");
        assert!(!shown.contains("u:p") && !shown.contains("k=v") && !shown.contains("\"s\""));
    }
}
