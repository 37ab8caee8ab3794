//! `grantdoctor run`'s arguments: the one declaration of every run setting. Its type, default,
//! help, environment variable (`GRANTDOCTOR_<FLAG>`) and parser are here; the configuration
//! file's keys are the argument ids, parsed by the same parsers (`config::merge`), and
//! `check-config` prints the serialized form (`config::render`), secrets masked.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::Cli;
use crate::annotate::AnnotateMode;
use crate::config::shown;
use crate::diagnose::DeclaredPolicy;
use crate::telemetry::LogFormat;
use crate::upstream::ResolveRule;

/// Environment variables read under an older name, by argument id: the old name is read only
/// when neither the flag nor `GRANTDOCTOR_<FLAG>` is set. Deprecated; a test holds every other
/// variable to `GRANTDOCTOR_<FLAG>`.
pub const ENV_FALLBACKS: [(&str, &str); 1] = [("connect_ports", "GRANTDOCTOR_CONNECT_PORTS")];

#[derive(Debug, Clone, PartialEq, Args, Serialize)]
pub struct RunArgs {
    /// A TOML configuration file. Without it (or GRANTDOCTOR_CONFIG), the first of
    /// ./config/grantdoctor.toml and /etc/grantdoctor/grantdoctor.toml that exists is read.
    /// Flags and GRANTDOCTOR_* variables override its values.
    #[arg(long, env = "GRANTDOCTOR_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address of the proxy listener (a host name is resolved at start).
    #[arg(
        long,
        env = "GRANTDOCTOR_LISTEN",
        default_value = "127.0.0.1:8080",
        value_parser = parse_listen
    )]
    pub listen: SocketAddr,

    /// Address of the admin listener (/healthz, /readyz, /metrics, /ca.pem, /events).
    #[arg(
        long,
        env = "GRANTDOCTOR_ADMIN",
        default_value = "127.0.0.1:9090",
        value_parser = parse_listen
    )]
    pub admin: SocketAddr,

    /// Directory of the CA (created on first run).
    #[arg(long, env = "GRANTDOCTOR_CA_DIR", default_value = "certs")]
    pub ca_dir: PathBuf,

    /// Host pattern to intercept (repeatable): `host` or `*.domain`. Replaces the Salesforce
    /// defaults.
    #[arg(
        long = "intercept",
        value_name = "PATTERN",
        env = "GRANTDOCTOR_INTERCEPT",
        value_delimiter = ','
    )]
    pub intercept: Vec<String>,

    /// Send HOST:PORT to ADDR:PORT instead of resolving it (repeatable, like curl's --resolve).
    #[arg(
        long = "resolve",
        value_name = "HOST:PORT=ADDR:PORT",
        env = "GRANTDOCTOR_RESOLVE",
        value_delimiter = ','
    )]
    #[serde(serialize_with = "shown::resolve_rules")]
    pub resolve: Vec<ResolveRule>,

    /// Extra trust anchors (PEM) for upstream certificates, added to the built-in roots.
    #[arg(
        long = "upstream-ca",
        value_name = "PEM",
        env = "GRANTDOCTOR_UPSTREAM_CA",
        value_delimiter = ','
    )]
    pub upstream_ca: Vec<PathBuf>,

    /// Gateway mode (repeatable): answer origin-form requests by forwarding them to a
    /// Salesforce host, observed like intercepted traffic: `https://HOST`,
    /// `/PREFIX=https://HOST` or `NAME=https://HOST` (by the request's Host).
    #[arg(
        long = "gateway",
        value_name = "[/PREFIX=|NAME=]URL",
        env = "GRANTDOCTOR_GATEWAY",
        value_delimiter = ','
    )]
    #[serde(serialize_with = "shown::each_displayed")]
    pub gateway: Vec<crate::proxy::gateway::GatewayRule>,

    /// Require HTTP Basic proxy authentication (`Proxy-Authorization`) with these credentials.
    #[arg(long, value_name = "USER:PASS", env = "GRANTDOCTOR_PROXY_AUTH")]
    #[serde(serialize_with = "shown::masked_credentials")]
    pub proxy_auth: Option<String>,

    /// Accept clients only from these address ranges (comma-separated CIDRs).
    #[arg(
        long,
        value_name = "CIDR,...",
        env = "GRANTDOCTOR_ALLOW_CLIENTS",
        value_delimiter = ','
    )]
    #[serde(serialize_with = "shown::each_displayed")]
    pub allow_clients: Vec<crate::net::Cidr>,

    /// Client connections served at once; the excess is refused with a 503.
    #[arg(long, env = "GRANTDOCTOR_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Seconds in-flight requests may take after SIGTERM before the process exits.
    #[arg(long, env = "GRANTDOCTOR_DRAIN_TIMEOUT", default_value_t = 20)]
    pub drain_timeout: u64,

    /// Seconds a client has to send a complete request head (slowloris guard); also how long an
    /// idle keep-alive connection stays open.
    #[arg(long, env = "GRANTDOCTOR_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,

    /// Seconds a blind tunnel may carry no bytes either way before it is closed.
    #[arg(long, env = "GRANTDOCTOR_IDLE_TIMEOUT", default_value_t = 300)]
    pub idle_timeout: u64,

    /// Seconds to wait for an upstream's response headers (then a 504).
    #[arg(long, env = "GRANTDOCTOR_RESPONSE_TIMEOUT", default_value_t = 60)]
    pub response_timeout: u64,

    /// Largest request head accepted, in bytes (HTTP/1.1 at least 8192).
    #[arg(long, env = "GRANTDOCTOR_MAX_HEADER_BYTES", default_value_t = 65536)]
    pub max_header_bytes: usize,

    /// Largest token request body read, in bytes; a larger one is refused unread with a 400
    /// (token requests are a few hundred bytes).
    #[arg(
        long,
        env = "GRANTDOCTOR_MAX_TOKEN_REQUEST_BYTES",
        default_value_t = 65536
    )]
    pub max_token_request_bytes: usize,

    /// Largest token response body read for inspection, in bytes; a larger one is forwarded
    /// unchanged, uninspected.
    #[arg(
        long,
        env = "GRANTDOCTOR_MAX_TOKEN_RESPONSE_BYTES",
        default_value_t = 262144
    )]
    pub max_token_response_bytes: usize,

    /// Ports that CONNECT may reach (repeatable). GRANTDOCTOR_CONNECT_PORTS, the variable's
    /// old name, is still read when GRANTDOCTOR_CONNECT_PORT is unset (deprecated).
    #[arg(
        long = "connect-port",
        value_name = "PORT",
        env = "GRANTDOCTOR_CONNECT_PORT",
        value_delimiter = ',',
        default_value = "443"
    )]
    pub connect_ports: Vec<u16>,

    /// Directory of the fingerprint key and the ledger database; one process at a time (a lock
    /// file inside it, grantdoctor.lock, refuses a second).
    #[arg(long, env = "GRANTDOCTOR_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Days of ledger history kept.
    #[arg(long, env = "GRANTDOCTOR_RETENTION_DAYS", default_value_t = 400)]
    pub retention_days: u64,

    /// Most ledger records kept (the oldest go first).
    #[arg(long, env = "GRANTDOCTOR_LEDGER_MAX_ROWS", default_value_t = 1_000_000)]
    pub ledger_max_rows: u64,

    /// Where the ledger lives: `sqlite` (the embedded database under --data-dir, one process)
    /// or `postgres://user:password@host:port/database[?sslmode=require|verify-full]`, shared
    /// by every replica: history, the rotation guard and refresh coalescing then span the
    /// fleet. The password is never shown.
    #[arg(
        long,
        value_name = "URL",
        env = "GRANTDOCTOR_STORE",
        default_value = "sqlite"
    )]
    #[serde(serialize_with = "shown::store")]
    pub store: crate::fleet::StoreUrl,

    /// Extra trust anchors (PEM) for the database's certificate (`sslmode=require` or
    /// `verify-full`), added to the built-in roots.
    #[arg(
        long = "store-ca",
        value_name = "PEM",
        env = "GRANTDOCTOR_STORE_CA",
        value_delimiter = ','
    )]
    pub store_ca: Vec<PathBuf>,

    /// Answer /readyz 503 while the shared store is failing. Off by default: traffic still
    /// flows without the database, and a database outage should not take every replica out
    /// of its load balancer.
    #[arg(long, env = "GRANTDOCTOR_READY_REQUIRES_STORE")]
    pub ready_requires_store: bool,

    /// Benchmark and diagnostic knob, hidden: `durable` (the default) holds the answer that
    /// rotates or issues a refresh token until its ledger commit, so a crash cannot lose a
    /// rotation the guard relies on; `write-behind` makes every ledger write non-waiting, to
    /// measure what that wait costs. Never for production: after a crash the guard may forward
    /// a rotated-away token and Salesforce revoke its family.
    #[arg(
        long,
        env = "GRANTDOCTOR_LEDGER_SYNC",
        value_enum,
        default_value = "durable",
        hide = true
    )]
    #[serde(serialize_with = "shown::value_enum")]
    pub ledger_sync: LedgerSync,

    /// Where diagnoses are added to failed token responses.
    #[arg(long, env = "GRANTDOCTOR_ANNOTATE", value_enum, default_value = "all")]
    #[serde(serialize_with = "shown::value_enum")]
    pub annotate: AnnotateMode,

    /// `append` also adds a short hint to error_description (off by default: some clients
    /// match that string exactly).
    #[arg(
        long,
        env = "GRANTDOCTOR_ANNOTATE_DESCRIPTION",
        value_enum,
        default_value = "off"
    )]
    #[serde(serialize_with = "shown::value_enum")]
    pub annotate_description: DescriptionMode,

    /// A refresh token policy of an app, so ages become evidence (repeatable):
    /// CLIENT_ID=immediate | CLIENT_ID=idle:SECONDS | CLIENT_ID=absolute:SECONDS.
    #[arg(long = "refresh-policy", value_name = "CLIENT_ID=POLICY", env = "GRANTDOCTOR_REFRESH_POLICY", value_delimiter = ',', value_parser = parse_policy)]
    #[serde(skip)]
    pub refresh_policies: Vec<(String, DeclaredPolicy)>,

    /// Identical concurrent refreshes share one upstream request (no E4 race, no family
    /// revocation under rotation).
    #[arg(
        long,
        env = "GRANTDOCTOR_COALESCE_REFRESH",
        value_enum,
        default_value = "on"
    )]
    #[serde(serialize_with = "shown::value_enum")]
    pub coalesce_refresh: Switch,

    /// Refuse to forward a refresh token the ledger saw rotated away (forwarding it would make
    /// Salesforce revoke the whole token family).
    #[arg(
        long,
        env = "GRANTDOCTOR_ROTATION_GUARD",
        value_enum,
        default_value = "on"
    )]
    #[serde(serialize_with = "shown::value_enum")]
    pub rotation_guard: Switch,

    /// Seconds after a rotation during which a twin of that refresh (same token, same client
    /// credentials) gets the same response instead of a block.
    #[arg(long, env = "GRANTDOCTOR_REPLAY_WINDOW", default_value_t = 5)]
    pub replay_window: u64,

    /// Live refresh tokens Salesforce keeps per user and connected app; the next authorization
    /// evicts the oldest (Salesforce documents 5).
    #[arg(
        long,
        env = "GRANTDOCTOR_APPROVAL_LIMIT",
        default_value_t = 5,
        value_parser = at_least_one
    )]
    pub approval_limit: u32,

    /// Answer retries of a refresh token Salesforce already declared dead from the proxy,
    /// without forwarding them.
    #[arg(
        long,
        env = "GRANTDOCTOR_DEAD_TOKEN_BREAKER",
        value_enum,
        default_value = "on"
    )]
    #[serde(serialize_with = "shown::value_enum")]
    pub dead_token_breaker: Switch,

    /// Seconds a token obtained by JWT bearer recovery is handed to further failing refreshes
    /// of the same user and app (memory only).
    #[arg(long, env = "GRANTDOCTOR_RECOVERY_REUSE", default_value_t = 60)]
    pub recovery_reuse: u64,

    /// Seconds after a failed recovery during which no new JWT exchange is attempted for that
    /// user and app.
    #[arg(long, env = "GRANTDOCTOR_RECOVERY_COOLDOWN", default_value_t = 30)]
    pub recovery_cooldown: u64,

    /// JWT bearer recovery per connected app: `[[recovery.jwt_bearer]]` tables of the
    /// configuration file (no flag: keys are files, not arguments).
    #[arg(skip)]
    #[serde(skip)]
    pub jwt_bearer: Vec<crate::recover::JwtBearerConfig>,

    /// Org connections that confirm diagnoses from the org's own records: `[[orgs]]` tables
    /// of the configuration file (no flag, like recovery keys).
    #[arg(skip)]
    #[serde(skip)]
    pub orgs: Vec<crate::org::OrgConfig>,

    /// Seconds an answer waits for an org connection to confirm its diagnosis; a later
    /// confirmation is logged as a `confirmed` event with the same event id.
    #[arg(
        long,
        env = "GRANTDOCTOR_CONFIRM_TIMEOUT",
        default_value_t = 1.5,
        value_parser = seconds_up_to_a_minute
    )]
    #[serde(serialize_with = "shown::seconds")]
    pub confirm_timeout: f64,

    /// POST every diagnosed failure, warning, recovery and block to this URL as JSON
    /// (repeatable; `[[webhooks]]` in the file adds filters, Slack format and signing). The URL
    /// is treated as a secret: logs and check-config show `scheme://host/…` only.
    #[arg(
        long = "webhook",
        value_name = "URL",
        env = "GRANTDOCTOR_WEBHOOK",
        value_delimiter = ','
    )]
    #[serde(serialize_with = "shown::secret_urls")]
    pub webhook: Vec<crate::webhook::SecretUrl>,

    /// Webhooks configured as `[[webhooks]]` tables of the configuration file.
    #[arg(skip)]
    #[serde(skip)]
    pub webhooks: Vec<crate::webhook::WebhookConfig>,

    /// Seconds during which repeats of an alert (same event, cause or warning id, org, user
    /// and client id) are held back; the next one sent says how many with `suppressed`.
    /// 0 sends every one.
    #[arg(long, env = "GRANTDOCTOR_WEBHOOK_DEDUP", default_value_t = 600)]
    pub webhook_dedup: u64,

    /// Alerts waiting per webhook; more are dropped and counted
    /// (`grantdoctor_webhook_dropped_total{reason="queue_full"}`).
    #[arg(long, env = "GRANTDOCTOR_WEBHOOK_QUEUE", default_value_t = 1000)]
    pub webhook_queue: usize,

    /// Log format: json (default when stdout is not a terminal) or pretty.
    #[arg(long, env = "GRANTDOCTOR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Append logs to this file instead of stdout.
    #[arg(long, env = "GRANTDOCTOR_LOG_FILE")]
    pub log_file: Option<PathBuf>,
}

impl RunArgs {
    /// Every argument at its default, as a bare `grantdoctor` would run.
    pub fn defaults() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command()
            .try_get_matches_from(["grantdoctor"])
            .expect("the defaults parse");
        Cli::from_arg_matches(&matches)
            .expect("the defaults parse")
            .run
    }
}

/// A feature switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn on(self) -> bool {
        self == Self::On
    }
}

/// Whether a new refresh token's answer waits for the ledger's commit (`--ledger-sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerSync {
    Durable,
    WriteBehind,
}

impl LedgerSync {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::WriteBehind => "write-behind",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DescriptionMode {
    Off,
    Append,
}

/// A listen address: `IP:PORT`, or `HOST:PORT` resolved now, once. A listener binds one
/// address, so of a name's addresses the first IPv4 one is taken (what the `127.0.0.1`
/// default is; clients given the name try each of its addresses).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    if !s.contains(':') {
        return Err(format!("`{s}`: expected HOST:PORT or IP:PORT"));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("`{s}`: the name does not resolve ({e})"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("`{s}`: the name resolves to no address"))
}

fn at_least_one(s: &str) -> Result<u32, String> {
    match s.parse::<u32>().map_err(|e| e.to_string())? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn seconds_up_to_a_minute(s: &str) -> Result<f64, String> {
    let seconds: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=60.0).contains(&seconds) {
        Ok(seconds)
    } else {
        Err("must be between 0 and 60 seconds".into())
    }
}

fn parse_policy(s: &str) -> Result<(String, DeclaredPolicy), String> {
    let (client, policy) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected CLIENT_ID=POLICY"))?;
    Ok((client.to_owned(), policy.parse()?))
}
