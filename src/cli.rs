//! The command line: `run` (the default), `ca`, `check-config`, `emulate`, `explain`, `logs`,
//! `demo`, and the installation helpers `completions` and `man`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::annotate::AnnotateMode;
use crate::diagnose::DeclaredPolicy;
use crate::telemetry::LogFormat;
use crate::upstream::ResolveRule;

#[derive(Debug, Parser)]
#[command(
    name = "grantdoctor",
    version = crate::build_info::VERSION,
    about = "A forward proxy that explains Salesforce OAuth invalid_grant failures",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default when no command is given).
    Run(Box<RunArgs>),
    /// Manage the local certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Validate the configuration and print the effective values (secrets masked).
    CheckConfig(Box<RunArgs>),
    /// Run the Salesforce token-endpoint emulator (tests, demos, rehearsing failures).
    Emulate(EmulateArgs),
    /// Explain a pasted token-endpoint error: ranked causes, evidence and fixes.
    Explain(ExplainArgs),
    /// Render the JSON log for a human (a file, or standard input).
    Logs(LogsArgs),
    /// Start the emulator and the proxy in one process and show a few diagnosed failures.
    Demo,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to stdout: `grantdoctor man | man -l -`.
    Man,
    /// Read each configured org (`[[orgs]]`) and say what will break before it does.
    Doctor(Box<DoctorArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// One JSON object per finding (`id`, `level`, `org`, `app`, `user`, `evidence`, `fix`),
    /// in an array.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// The log file; standard input when absent.
    pub file: Option<PathBuf>,
    /// Print new lines as the file grows, starting at its end; a truncated or rotated file
    /// is read again from its start.
    #[arg(short, long)]
    pub follow: bool,
    /// With `--follow`: print what the file holds already, then follow.
    #[arg(long)]
    pub from_start: bool,
    /// Only events naming this cause or warning id (top cause, ranked causes, warning id).
    #[arg(long, value_name = "ID")]
    pub cause: Option<String>,
    /// Only events of this client id (the consumer key, whole or as the log shortens it).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Only events at or after this time: a span back from now (`10m`, `2h`, `1d`) or an
    /// RFC 3339 UTC time (`2026-12-01T10:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = crate::logs::parse_since)]
    pub since: Option<crate::logs::Since>,
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The error: the JSON body, or `invalid_grant: expired access/refresh token`. Read from
    /// standard input when absent.
    pub error: Option<String>,
    /// The grant type of the failed request (the same error means different things per grant).
    #[arg(long)]
    pub grant_type: Option<String>,
    /// The host the request went to.
    #[arg(long)]
    pub host: Option<String>,
    /// The JWT assertion sent (decoded locally for its claims; never stored or sent anywhere).
    #[arg(long)]
    pub assertion: Option<String>,
    /// The HTTP status of the answer.
    #[arg(long, default_value_t = 400)]
    pub status: u16,
    /// Print the diagnosis as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EmulateArgs {
    /// Address to listen on (a host name is resolved at start).
    #[arg(long, default_value = "127.0.0.1:8443", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Directory of the emulator's own CA (created on first run); clients and the proxy's
    /// --upstream-ca trust its ca.pem.
    #[arg(long, default_value = "emulator-certs")]
    pub ca_dir: PathBuf,

    /// Serve plain HTTP instead of HTTPS.
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    pub plain: bool,

    /// Serve this certificate chain (PEM) instead of minting from the emulator's CA.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,

    /// A TOML scenario to preload (orgs, users, apps, settings).
    #[arg(long)]
    pub scenario: Option<PathBuf>,

    /// Log format: json (default when stdout is not a terminal) or pretty.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA in the CA directory if it does not exist yet.
    Init(CaArgs),
    /// Print the CA's path, SHA-256 fingerprint and validity.
    Show(CaArgs),
    /// Print what to set, per client runtime, to trust the CA and use the proxy.
    Trust(TrustArgs),
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    #[command(flatten)]
    pub ca: CaArgs,
    /// The proxy address clients will use (a host name is resolved).
    #[arg(
        long,
        env = "GRANTDOCTOR_LISTEN",
        default_value = "127.0.0.1:8080",
        value_parser = parse_listen
    )]
    pub listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Directory of ca.pem, ca-key.pem and bundle.pem.
    #[arg(long, env = "GRANTDOCTOR_CA_DIR", default_value = "certs")]
    pub ca_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct RunArgs {
    /// A TOML configuration file. Without it (or GRANTDOCTOR_CONFIG), the first of
    /// ./config/grantdoctor.toml and /etc/grantdoctor/grantdoctor.toml that exists is read.
    /// Flags and GRANTDOCTOR_* variables override its values.
    #[arg(long, env = "GRANTDOCTOR_CONFIG")]
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
    pub gateway: Vec<crate::proxy::gateway::GatewayRule>,

    /// Require HTTP Basic proxy authentication (`Proxy-Authorization`) with these credentials.
    #[arg(long, value_name = "USER:PASS", env = "GRANTDOCTOR_PROXY_AUTH")]
    pub proxy_auth: Option<String>,

    /// Accept clients only from these address ranges (comma-separated CIDRs).
    #[arg(
        long,
        value_name = "CIDR,...",
        env = "GRANTDOCTOR_ALLOW_CLIENTS",
        value_delimiter = ','
    )]
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

    /// Ports that CONNECT may reach (repeatable).
    #[arg(
        long = "connect-port",
        value_name = "PORT",
        env = "GRANTDOCTOR_CONNECT_PORTS",
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
    pub ledger_sync: LedgerSync,

    /// Where diagnoses are added to failed token responses.
    #[arg(long, env = "GRANTDOCTOR_ANNOTATE", value_enum, default_value = "all")]
    pub annotate: AnnotateMode,

    /// `append` also adds a short hint to error_description (off by default: some clients
    /// match that string exactly).
    #[arg(
        long,
        env = "GRANTDOCTOR_ANNOTATE_DESCRIPTION",
        value_enum,
        default_value = "off"
    )]
    pub annotate_description: DescriptionMode,

    /// A refresh token policy of an app, so ages become evidence (repeatable):
    /// CLIENT_ID=immediate | CLIENT_ID=idle:SECONDS | CLIENT_ID=absolute:SECONDS.
    #[arg(long = "refresh-policy", value_name = "CLIENT_ID=POLICY", env = "GRANTDOCTOR_REFRESH_POLICY", value_delimiter = ',', value_parser = parse_policy)]
    pub refresh_policies: Vec<(String, DeclaredPolicy)>,

    /// Identical concurrent refreshes share one upstream request (no E4 race, no family
    /// revocation under rotation).
    #[arg(
        long,
        env = "GRANTDOCTOR_COALESCE_REFRESH",
        value_enum,
        default_value = "on"
    )]
    pub coalesce_refresh: Switch,

    /// Refuse to forward a refresh token the ledger saw rotated away (forwarding it would make
    /// Salesforce revoke the whole token family).
    #[arg(
        long,
        env = "GRANTDOCTOR_ROTATION_GUARD",
        value_enum,
        default_value = "on"
    )]
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
        value_parser = clap::value_parser!(u32).range(1..)
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
    pub jwt_bearer: Vec<crate::recover::JwtBearerConfig>,

    /// Org connections that confirm diagnoses from the org's own records: `[[orgs]]` tables
    /// of the configuration file (no flag, like recovery keys).
    #[arg(skip)]
    pub orgs: Vec<crate::org::OrgConfig>,

    /// Seconds an answer waits for an org connection to confirm its diagnosis; a later
    /// confirmation is logged as a `confirmed` event with the same event id.
    #[arg(long, env = "GRANTDOCTOR_CONFIRM_TIMEOUT", default_value_t = 1.5)]
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
    pub webhook: Vec<crate::webhook::SecretUrl>,

    /// Webhooks configured as `[[webhooks]]` tables of the configuration file.
    #[arg(skip)]
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

fn parse_policy(s: &str) -> Result<(String, DeclaredPolicy), String> {
    let (client, policy) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected CLIENT_ID=POLICY"))?;
    Ok((client.to_owned(), policy.parse()?))
}

/// A command line or configuration the program refuses to run with (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
