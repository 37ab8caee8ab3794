//! The configuration file: every `run` flag as a TOML key, so a sidecar can be configured
//! from a file. Sources, highest first: flags, environment (`GRANTDOCTOR_*`), the file,
//! built-in defaults. A value from the file is used only where neither a flag nor the
//! environment set one.
//!
//! The file is `--config`, else `GRANTDOCTOR_CONFIG`, else the first of [`DISCOVERED`] that
//! exists: the working directory's first (a checkout, a container's workdir), then the system
//! one that packages and images install.
//!
//! `config/grantdoctor.example.toml` lists every key with its default; a test holds it to that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::annotate::AnnotateMode;
use crate::cli::{DescriptionMode, RunArgs, Switch, UsageError};
use crate::recover::JwtBearerConfig;
use crate::telemetry::LogFormat;

/// The file used when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "config/grantdoctor.toml";

/// The system-wide file, read when neither `--config` nor [`DEFAULT_FILE`] gives one.
pub const SYSTEM_FILE: &str = "/etc/grantdoctor/grantdoctor.toml";

/// Where a file is looked for without `--config` or `GRANTDOCTOR_CONFIG`, in order.
pub const DISCOVERED: [&str; 2] = [DEFAULT_FILE, SYSTEM_FILE];

/// Every key of the file; absent keys leave the flag's value alone.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub admin: Option<String>,
    pub ca_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub intercept: Option<Vec<String>>,
    pub resolve: Option<Vec<String>>,
    pub upstream_ca: Option<Vec<PathBuf>>,
    pub gateway: Option<Vec<String>>,
    pub connect_ports: Option<Vec<u16>>,
    pub proxy_auth: Option<String>,
    pub allow_clients: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub drain_timeout: Option<u64>,
    pub header_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub response_timeout: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub retention_days: Option<u64>,
    pub ledger_max_rows: Option<u64>,
    /// `sqlite` or a `postgres://` URL (a secret: its password is masked when shown).
    pub store: Option<crate::fleet::StoreUrl>,
    pub store_ca: Option<Vec<PathBuf>>,
    pub ready_requires_store: Option<bool>,
    pub ledger_sync: Option<crate::cli::LedgerSync>,
    pub annotate: Option<AnnotateMode>,
    pub annotate_description: Option<String>,
    /// Client id → `immediate`, `idle:SECONDS` or `absolute:SECONDS`.
    pub refresh_policies: Option<std::collections::BTreeMap<String, String>>,
    pub coalesce_refresh: Option<Switch>,
    pub rotation_guard: Option<Switch>,
    pub replay_window: Option<u64>,
    pub recovery_reuse: Option<u64>,
    pub recovery_cooldown: Option<u64>,
    /// At least 1.
    pub approval_limit: Option<u32>,
    pub dead_token_breaker: Option<Switch>,
    pub confirm_timeout: Option<f64>,
    pub recovery: Option<RecoveryFile>,
    /// `[[orgs]]`: org connections.
    pub orgs: Option<Vec<crate::org::OrgConfig>>,
    pub webhook: Option<Vec<String>>,
    /// `[[webhooks]]`: alert receivers.
    pub webhooks: Option<Vec<crate::webhook::WebhookConfig>>,
    pub webhook_dedup: Option<u64>,
    pub webhook_queue: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub log_file: Option<PathBuf>,
}

/// The `[recovery]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryFile {
    /// One `[[recovery.jwt_bearer]]` per connected app whose key grantdoctor holds.
    #[serde(default)]
    pub jwt_bearer: Vec<JwtBearerConfig>,
}

/// A configuration file that was read.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub file: FileConfig,
    /// The top-level keys the file sets, for `check-config`'s sources.
    pub keys: BTreeSet<String>,
}

/// Reads the file named by `--config` (or `GRANTDOCTOR_CONFIG`), or the first discovered file
/// that exists; `None` when there is none.
pub fn load(explicit: Option<&Path>) -> Result<Option<Loaded>, UsageError> {
    let Some(path) = locate(explicit, &DISCOVERED.map(Path::new)) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| UsageError(format!("--config {}: {e}", path.display())))?;
    let bad = |e: toml::de::Error| {
        UsageError(format!("{}: {}", path.display(), one_line(&e.to_string())))
    };
    let file: FileConfig = toml::from_str(&text).map_err(bad)?;
    let keys = toml::from_str::<toml::Table>(&text)
        .map_err(bad)?
        .keys()
        .cloned()
        .collect();
    Ok(Some(Loaded { path, file, keys }))
}

/// The file to read: the one named, else the first of `candidates` that exists.
pub fn locate(explicit: Option<&Path>, candidates: &[&Path]) -> Option<PathBuf> {
    match explicit {
        Some(path) => Some(path.to_path_buf()),
        None => candidates
            .iter()
            .find(|p| p.is_file())
            .map(|p| p.to_path_buf()),
    }
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fills every argument that came from neither the command line nor the environment with the
/// file's value. `matches` are the `run` arguments' matches.
pub fn merge(
    args: &mut RunArgs,
    matches: &ArgMatches,
    file: FileConfig,
    path: &Path,
) -> Result<(), UsageError> {
    let unset = |id: &str| {
        !matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        )
    };
    let bad = |key: &str, reason: String| {
        UsageError(format!("{}: key `{key}`: {reason}", path.display()))
    };
    macro_rules! take {
        ($key:ident) => {
            if unset(stringify!($key))
                && let Some(value) = file.$key
            {
                args.$key = value.into();
            }
        };
        ($key:ident, listen) => {
            if unset(stringify!($key))
                && let Some(value) = file.$key
            {
                args.$key =
                    crate::cli::parse_listen(&value).map_err(|e| bad(stringify!($key), e))?;
            }
        };
        ($key:ident, each) => {
            if unset(stringify!($key))
                && let Some(values) = file.$key
            {
                args.$key = values
                    .iter()
                    .map(|v| v.parse().map_err(|e| bad(stringify!($key), format!("{e}"))))
                    .collect::<Result<_, _>>()?;
            }
        };
    }
    take!(listen, listen);
    take!(admin, listen);
    take!(ca_dir);
    take!(data_dir);
    take!(intercept);
    take!(resolve, each);
    take!(upstream_ca);
    take!(gateway, each);
    take!(connect_ports);
    if unset("proxy_auth") && file.proxy_auth.is_some() {
        args.proxy_auth = file.proxy_auth;
    }
    take!(allow_clients, each);
    take!(max_connections);
    take!(drain_timeout);
    take!(header_timeout);
    take!(idle_timeout);
    take!(response_timeout);
    take!(max_header_bytes);
    take!(retention_days);
    take!(ledger_max_rows);
    take!(store);
    take!(store_ca);
    take!(ready_requires_store);
    take!(ledger_sync);
    take!(annotate);
    if unset("annotate_description")
        && let Some(mode) = file.annotate_description
    {
        args.annotate_description = match mode.as_str() {
            "off" => DescriptionMode::Off,
            "append" => DescriptionMode::Append,
            other => {
                return Err(bad(
                    "annotate_description",
                    format!("`{other}`: expected off or append"),
                ));
            }
        };
    }
    if unset("refresh_policies")
        && let Some(policies) = file.refresh_policies
    {
        args.refresh_policies = policies
            .into_iter()
            .map(|(client, policy)| {
                Ok((
                    client,
                    policy
                        .parse()
                        .map_err(|e: String| bad("refresh_policies", e))?,
                ))
            })
            .collect::<Result<_, UsageError>>()?;
    }
    take!(coalesce_refresh);
    take!(rotation_guard);
    take!(replay_window);
    take!(recovery_reuse);
    take!(recovery_cooldown);
    if file.approval_limit == Some(0) {
        return Err(bad("approval_limit", "must be at least 1".into()));
    }
    take!(approval_limit);
    take!(dead_token_breaker);
    if file
        .confirm_timeout
        .is_some_and(|t| !(0.0..=60.0).contains(&t))
    {
        return Err(bad(
            "confirm_timeout",
            "must be between 0 and 60 seconds".into(),
        ));
    }
    take!(confirm_timeout);
    if let Some(recovery) = file.recovery {
        args.jwt_bearer = recovery.jwt_bearer;
    }
    if let Some(orgs) = file.orgs {
        args.orgs = orgs;
    }
    take!(webhook, each);
    if let Some(webhooks) = file.webhooks {
        args.webhooks = webhooks;
    }
    take!(webhook_dedup);
    take!(webhook_queue);
    if unset("log_format") && file.log_format.is_some() {
        args.log_format = file.log_format;
    }
    if unset("log_file") && file.log_file.is_some() {
        args.log_file = file.log_file;
    }
    Ok(())
}

/// Where a value came from, for `check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The command line, with the flag's name.
    Flag(String),
    /// The environment, with the variable's name.
    Env(String),
    File,
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag(flag) => write!(f, "flag {flag}"),
            Self::Env(var) => write!(f, "env {var}"),
            Self::File => f.write_str("file"),
            Self::Default => f.write_str("default"),
        }
    }
}

/// The file that was read (and what chose it) and the source of every value.
#[derive(Debug, Default)]
pub struct Provenance {
    /// The file, and `--config`, `GRANTDOCTOR_CONFIG` or `found`.
    pub file: Option<(PathBuf, String)>,
    /// Key → source, for every key of [`render`].
    pub values: BTreeMap<String, Source>,
}

/// The sources of the run arguments in `matches`, after `loaded` was merged into them.
pub fn provenance(matches: &ArgMatches, loaded: Option<&Loaded>) -> Provenance {
    use clap::CommandFactory;
    let mut values = BTreeMap::new();
    let command = crate::cli::Cli::command();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "config" | "help" | "version") {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => {
                Source::Flag(format!("--{}", arg.get_long().unwrap_or(id)))
            }
            Some(ValueSource::EnvVariable) => Source::Env(
                arg.get_env()
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ if loaded.is_some_and(|l| l.keys.contains(id)) => Source::File,
            _ => Source::Default,
        };
        values.insert(id.to_owned(), source);
    }
    for table in ["recovery", "orgs", "webhooks"] {
        if loaded.is_some_and(|l| l.keys.contains(table)) {
            values.insert(table.into(), Source::File);
        }
    }
    let file = loaded.map(|l| {
        let how = match matches.value_source("config") {
            Some(ValueSource::CommandLine) => "--config",
            Some(ValueSource::EnvVariable) => "GRANTDOCTOR_CONFIG",
            _ => "found",
        };
        (l.path.clone(), how.to_owned())
    });
    Provenance { file, values }
}

/// [`render`] with the file named at the top and each value's source after it, as comments,
/// so the output is still a configuration file.
pub fn render_with_sources(args: &RunArgs, provenance: &Provenance) -> String {
    let mut out = match &provenance.file {
        Some((path, how)) => format!("# config file: {} ({how})\n", path.display()),
        None => format!(
            "# config file: none (no --config or GRANTDOCTOR_CONFIG; looked for {})\n",
            DISCOVERED.join(", ")
        ),
    };
    let mut table: Option<String> = None;
    for line in render(args).lines() {
        let key = if let Some(header) = line.strip_prefix('[') {
            let name = header.trim_matches(|c| c == '[' || c == ']');
            let name = name.split('.').next().unwrap_or(name).to_owned();
            table = Some(name.clone());
            Some(name)
        } else if table.is_none() {
            line.split_once(" = ").map(|(k, _)| k.to_owned())
        } else {
            None
        };
        out.push_str(line);
        if let Some(source) = key.and_then(|k| provenance.values.get(&k)) {
            out.push_str(&format!("  # {source}"));
        }
        out.push('\n');
    }
    out
}

/// The effective configuration as TOML, secrets masked (`check-config`).
pub fn render(args: &RunArgs) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let list = |items: Vec<String>| {
        format!(
            "[{}]",
            items
                .iter()
                .map(|s| quote(s))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let path = |p: &Path| quote(&p.display().to_string());
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key} = {value}\n"));
    line("listen", quote(&args.listen.to_string()));
    line("admin", quote(&args.admin.to_string()));
    line("ca_dir", path(&args.ca_dir));
    line("data_dir", path(&args.data_dir));
    line("intercept", list(args.intercept.clone()));
    line(
        "resolve",
        list(
            args.resolve
                .iter()
                .map(|r| format!("{}:{}={}", r.host, r.port, r.addr))
                .collect(),
        ),
    );
    line(
        "upstream_ca",
        list(
            args.upstream_ca
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        ),
    );
    line(
        "gateway",
        list(args.gateway.iter().map(|g| g.to_string()).collect()),
    );
    line("connect_ports", format!("{:?}", args.connect_ports));
    if let Some(auth) = &args.proxy_auth {
        let user = auth.split(':').next().unwrap_or_default();
        line("proxy_auth", quote(&format!("{user}:********")));
    }
    line(
        "allow_clients",
        list(args.allow_clients.iter().map(|c| c.to_string()).collect()),
    );
    line("max_connections", args.max_connections.to_string());
    line("drain_timeout", args.drain_timeout.to_string());
    line("header_timeout", args.header_timeout.to_string());
    line("idle_timeout", args.idle_timeout.to_string());
    line("response_timeout", args.response_timeout.to_string());
    line("max_header_bytes", args.max_header_bytes.to_string());
    line("retention_days", args.retention_days.to_string());
    line("ledger_max_rows", args.ledger_max_rows.to_string());
    line("store", quote(&args.store.shown()));
    line(
        "store_ca",
        list(
            args.store_ca
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        ),
    );
    line(
        "ready_requires_store",
        args.ready_requires_store.to_string(),
    );
    line("ledger_sync", quote(args.ledger_sync.as_str()));
    line(
        "annotate",
        quote(&format!("{:?}", args.annotate).to_ascii_lowercase()),
    );
    line(
        "annotate_description",
        quote(&format!("{:?}", args.annotate_description).to_ascii_lowercase()),
    );
    let switch = |s: Switch| quote(if s.on() { "on" } else { "off" });
    line("coalesce_refresh", switch(args.coalesce_refresh));
    line("rotation_guard", switch(args.rotation_guard));
    line("replay_window", args.replay_window.to_string());
    line("recovery_reuse", args.recovery_reuse.to_string());
    line("recovery_cooldown", args.recovery_cooldown.to_string());
    line("approval_limit", args.approval_limit.to_string());
    line("dead_token_breaker", switch(args.dead_token_breaker));
    line("confirm_timeout", args.confirm_timeout.to_string());
    line(
        "webhook",
        list(args.webhook.iter().map(|u| u.shown()).collect()),
    );
    line("webhook_dedup", args.webhook_dedup.to_string());
    line("webhook_queue", args.webhook_queue.to_string());
    if let Some(format) = args.log_format {
        line(
            "log_format",
            quote(&format!("{format:?}").to_ascii_lowercase()),
        );
    }
    if let Some(file) = &args.log_file {
        line("log_file", path(file));
    }
    if !args.refresh_policies.is_empty() {
        out.push_str("\n[refresh_policies]\n");
        for (client, policy) in &args.refresh_policies {
            out.push_str(&format!(
                "{} = {}\n",
                quote(client),
                quote(&policy.to_string())
            ));
        }
    }
    for org in &args.orgs {
        out.push_str("\n[[orgs]]\n");
        out.push_str(&format!("host = {}\n", quote(&org.host)));
        out.push_str(&format!("client_id = {}\n", quote(&org.client_id)));
        out.push_str(&format!("private_key = {}\n", path(&org.private_key)));
        out.push_str(&format!("username = {}\n", quote(&org.username)));
        if let Some(audience) = &org.audience {
            out.push_str(&format!("audience = {}\n", quote(audience)));
        }
        if !org.apps.is_empty() {
            let mut apps: Vec<_> = org.apps.iter().collect();
            apps.sort();
            let pairs: Vec<String> = apps
                .iter()
                .map(|(id, name)| format!("{} = {}", quote(id), quote(name)))
                .collect();
            out.push_str(&format!("apps = {{ {} }}\n", pairs.join(", ")));
        }
    }
    out.push_str(&crate::webhook::render_tables(&args.webhooks));
    for app in &args.jwt_bearer {
        out.push_str("\n[[recovery.jwt_bearer]]\n");
        out.push_str(&format!("client_id = {}\n", quote(&app.client_id)));
        out.push_str(&format!("private_key = {}\n", path(&app.private_key)));
        if let Some(subject) = &app.subject {
            out.push_str(&format!("subject = {}\n", quote(subject)));
        }
        if !app.subjects.is_empty() {
            let pairs: Vec<String> = app
                .subjects
                .iter()
                .map(|(id, name)| format!("{} = {}", quote(id), quote(name)))
                .collect();
            out.push_str(&format!("subjects = {{ {} }}\n", pairs.join(", ")));
        }
        if let Some(audience) = &app.audience {
            out.push_str(&format!("audience = {}\n", quote(audience)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let matches = crate::cli::Cli::command().get_matches_from(["grantdoctor"]);
        let defaults = crate::cli::Cli::from_arg_matches(&matches).unwrap().run;
        let file: FileConfig =
            toml::from_str(include_str!("../config/grantdoctor.example.toml")).unwrap();
        let mut merged = defaults.clone();
        merge(&mut merged, &matches, file, Path::new("example")).unwrap();
        assert_eq!(merged, defaults);
    }

    #[test]
    fn every_run_flag_has_a_key() {
        let text = include_str!("../config/grantdoctor.example.toml");
        let command = crate::cli::Cli::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "help" || id == "version" {
                continue;
            }
            assert!(
                text.contains(&format!("{id} =")) || text.contains(&format!("[{id}]")),
                "{id} is not in the example file"
            );
        }
    }

    #[test]
    fn discovery_takes_the_named_file_else_the_first_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        let candidates = [first.as_path(), second.as_path()];
        assert_eq!(locate(None, &candidates), None);
        std::fs::write(&second, "").unwrap();
        assert_eq!(locate(None, &candidates), Some(second.clone()));
        std::fs::write(&first, "").unwrap();
        assert_eq!(locate(None, &candidates), Some(first.clone()));
        let named = dir.path().join("missing.toml");
        assert_eq!(locate(Some(&named), &candidates), Some(named));
        assert_eq!(
            DISCOVERED,
            [
                "config/grantdoctor.toml",
                "/etc/grantdoctor/grantdoctor.toml"
            ]
        );
    }

    #[test]
    fn an_approval_limit_of_zero_in_the_file_is_refused() {
        let matches = crate::cli::Cli::command().get_matches_from(["grantdoctor"]);
        let mut args = crate::cli::Cli::from_arg_matches(&matches).unwrap().run;
        let file: FileConfig = toml::from_str("approval_limit = 0").unwrap();
        let err = merge(&mut args, &matches, file, Path::new("g.toml")).unwrap_err();
        assert!(
            err.0.contains("approval_limit") && err.0.contains("at least 1"),
            "{}",
            err.0
        );
    }

    #[test]
    fn a_bad_value_names_the_file_and_key() {
        let matches = crate::cli::Cli::command().get_matches_from(["grantdoctor"]);
        let mut args = crate::cli::Cli::from_arg_matches(&matches).unwrap().run;
        let file: FileConfig = toml::from_str("listen = \"nowhere\"").unwrap();
        let err = merge(&mut args, &matches, file, Path::new("g.toml")).unwrap_err();
        assert!(err.0.starts_with("g.toml: key `listen`"), "{}", err.0);
    }
}
