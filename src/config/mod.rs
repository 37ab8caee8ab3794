//! The configuration file: every `run` flag as a TOML key, so a sidecar can be configured
//! from a file. Sources, highest first: flags, environment (`GRANTDOCTOR_*`), the file,
//! built-in defaults. A value from the file is used only where neither a flag nor the
//! environment set one.
//!
//! The file is `--config`, else `GRANTDOCTOR_CONFIG`, else the first of [`DISCOVERED`] that
//! exists: the working directory's first (a checkout, a container's workdir), then the system
//! one that packages and images install.
//!
//! The keys are declared once, as `run`'s arguments (`cli::RunArgs`): a file value is parsed
//! by its flag's own parser, and `check-config` prints the arguments' serialized form.
//!
//! `config/grantdoctor.example.toml` lists every key with its default; a test holds it to that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::cli::{RunArgs, UsageError};
use crate::recover::JwtBearerConfig;

mod merge;
mod render;
pub mod shown;

pub use merge::{apply_env_fallbacks, merge};
pub use render::render;

/// The file used when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "config/grantdoctor.toml";

/// The system-wide file, read when neither `--config` nor [`DEFAULT_FILE`] gives one.
pub const SYSTEM_FILE: &str = "/etc/grantdoctor/grantdoctor.toml";

/// Where a file is looked for without `--config` or `GRANTDOCTOR_CONFIG`, in order.
pub const DISCOVERED: [&str; 2] = [DEFAULT_FILE, SYSTEM_FILE];

/// A configuration file's settings. Its top-level keys are `run`'s argument ids, kept as
/// written until [`merge`] parses them with the arguments' own parsers; the tables that have
/// no flag are typed here.
#[derive(Debug, Default)]
pub struct FileConfig {
    /// Argument id → the file's value.
    pub values: toml::Table,
    pub recovery: Option<RecoveryFile>,
    /// `[[orgs]]`: org connections.
    pub orgs: Option<Vec<crate::org::OrgConfig>>,
    /// `[[webhooks]]`: alert receivers.
    pub webhooks: Option<Vec<crate::webhook::WebhookConfig>>,
}

/// The tables of the file that no flag sets. Read from the file's text, so that their errors
/// point at the line; the other keys are left to [`merge`].
#[derive(Debug, Default, Deserialize)]
struct Tables {
    recovery: Option<RecoveryFile>,
    orgs: Option<Vec<crate::org::OrgConfig>>,
    webhooks: Option<Vec<crate::webhook::WebhookConfig>>,
}

/// The file's keys that are tables of their own rather than arguments.
const TABLES: [&str; 3] = ["recovery", "orgs", "webhooks"];

impl FileConfig {
    /// The file's settings; a key that is neither an argument of `run` nor one of its tables
    /// is refused. Errors are `PATH: ...`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, UsageError> {
        let bad = |e: toml::de::Error| {
            UsageError(format!("{}: {}", path.display(), one_line(&e.to_string())))
        };
        let mut values: toml::Table = toml::from_str(text).map_err(bad)?;
        let tables: Tables = toml::from_str(text).map_err(bad)?;
        let keys = merge::keys();
        for key in values.keys() {
            if !TABLES.contains(&key.as_str()) && !keys.contains(key) {
                return Err(UsageError(format!(
                    "{}: key `{key}`: unknown key (config/grantdoctor.example.toml lists every key)",
                    path.display()
                )));
            }
        }
        values.retain(|key, _| !TABLES.contains(&key));
        Ok(Self {
            values,
            recovery: tables.recovery,
            orgs: tables.orgs,
            webhooks: tables.webhooks,
        })
    }
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
    let file = FileConfig::parse(&text, &path)?;
    let tables = [
        file.recovery.is_some(),
        file.orgs.is_some(),
        file.webhooks.is_some(),
    ];
    let keys = file
        .values
        .keys()
        .cloned()
        .chain(
            TABLES
                .iter()
                .zip(tables)
                .filter(|(_, set)| *set)
                .map(|(t, _)| t.to_string()),
        )
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
            _ if let Some(var) = merge::fallback_in_use(id) => Source::Env(var.to_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let matches = crate::cli::Cli::command().get_matches_from(["grantdoctor"]);
        let defaults = crate::cli::Cli::from_arg_matches(&matches).unwrap().run;
        let example = include_str!("../../config/grantdoctor.example.toml");
        let file = FileConfig::parse(example, Path::new("example")).unwrap();
        let mut merged = defaults.clone();
        merge(&mut merged, &matches, file, Path::new("example")).unwrap();
        assert_eq!(merged, defaults);
    }

    #[test]
    fn every_run_flag_has_a_key() {
        let text = include_str!("../../config/grantdoctor.example.toml");
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
        let file = FileConfig::parse("approval_limit = 0", Path::new("g.toml")).unwrap();
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
        let file = FileConfig::parse("listen = \"nowhere\"", Path::new("g.toml")).unwrap();
        let err = merge(&mut args, &matches, file, Path::new("g.toml")).unwrap_err();
        assert!(err.0.starts_with("g.toml: key `listen`"), "{}", err.0);
    }
}
