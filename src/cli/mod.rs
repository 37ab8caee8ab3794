//! The command line: `run` (the default), `ca`, `check-config`, `emulate`, `explain`, `logs`,
//! `demo`, and the installation helpers `completions` and `man`.

mod run;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

pub use run::{DescriptionMode, ENV_FALLBACKS, LedgerSync, RunArgs, Switch, parse_listen};

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

/// A command line or configuration the program refuses to run with (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
