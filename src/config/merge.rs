//! The file's values into `run`'s arguments, through the arguments' own parsers: a value in
//! the file is taken, and refused, exactly as the same value given to the flag.

use std::collections::BTreeSet;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches};

use super::FileConfig;
use crate::cli::{ENV_FALLBACKS, RunArgs, UsageError};

/// The ids of `run`'s arguments that the file may set.
pub(super) fn keys() -> BTreeSet<String> {
    declared()
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .filter(|id| !matches!(id.as_str(), "config" | "help" | "version"))
        .collect()
}

/// Fills every argument that came from neither the command line nor the environment with the
/// file's value. `matches` are the `run` arguments' matches.
pub fn merge(
    args: &mut RunArgs,
    matches: &ArgMatches,
    file: FileConfig,
    path: &Path,
) -> Result<(), UsageError> {
    let bad = |key: &str, reason: String| {
        UsageError(format!("{}: key `{key}`: {reason}", path.display()))
    };
    let command = values_only();
    let kinds = match toml::Value::try_from(defaults()) {
        Ok(toml::Value::Table(kinds)) => kinds,
        _ => toml::Table::new(),
    };
    for (key, value) in &file.values {
        if set_by_user(matches, key) || fallback_in_use(key).is_some() {
            continue;
        }
        let values = strings(value, kinds.get(key)).map_err(|reason| bad(key, reason))?;
        assign(&command, args, key, &values, number(value)).map_err(|reason| bad(key, reason))?;
    }
    if let Some(recovery) = file.recovery {
        args.jwt_bearer = recovery.jwt_bearer;
    }
    if let Some(orgs) = file.orgs {
        args.orgs = orgs;
    }
    if let Some(webhooks) = file.webhooks {
        args.webhooks = webhooks;
    }
    Ok(())
}

/// Reads the deprecated environment names of [`ENV_FALLBACKS`] where neither the flag nor
/// the variable of today's name is set; like the variables clap reads, they rank above the
/// file.
pub fn apply_env_fallbacks(args: &mut RunArgs, matches: &ArgMatches) -> Result<(), UsageError> {
    let command = values_only();
    for (id, var) in ENV_FALLBACKS {
        if set_by_user(matches, id) {
            continue;
        }
        let Some(text) = std::env::var_os(var) else {
            continue;
        };
        let bad = |reason: String| UsageError(format!("{var} (environment): {reason}"));
        let text = text
            .into_string()
            .map_err(|_| bad("not valid UTF-8".into()))?;
        let delimiter = declared_arg(id).and_then(|arg| arg.get_value_delimiter());
        let values: Vec<String> = match delimiter {
            Some(d) => text.split(d).map(str::to_owned).collect(),
            None => vec![text],
        };
        assign(&command, args, id, &values, false).map_err(bad)?;
    }
    Ok(())
}

/// The deprecated variable that sets argument `id`, when it is the one in effect.
pub(super) fn fallback_in_use(id: &str) -> Option<&'static str> {
    ENV_FALLBACKS
        .iter()
        .find(|(arg, var)| *arg == id && std::env::var_os(var).is_some())
        .map(|(_, var)| *var)
        .filter(|_| {
            let canonical = declared_arg(id).and_then(|arg| arg.get_env().map(|v| v.to_owned()));
            canonical.is_none_or(|var| std::env::var_os(var).is_none())
        })
}

/// `run`'s arguments as declared on [`RunArgs`].
fn declared() -> Command {
    RunArgs::augment_args(Command::new("grantdoctor").no_binary_name(true))
}

fn declared_arg(id: &str) -> Option<clap::Arg> {
    declared()
        .get_arguments()
        .find(|arg| arg.get_id() == id)
        .cloned()
}

fn set_by_user(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
    )
}

/// `run`'s arguments with no defaults and no environment, so that parsing one flag's values
/// yields matches of that argument alone. Every argument takes a value (`true`/`false` for a
/// switch) and a list item is never split (a path or URL in the file may hold a comma); a
/// list may be given no items (the file's `[]`).
fn values_only() -> Command {
    declared().mut_args(|arg| {
        let arg = arg
            .env(None::<&str>)
            .default_value(None::<&str>)
            .value_delimiter(None::<char>);
        match arg.get_action() {
            ArgAction::SetTrue => arg.action(ArgAction::Set),
            ArgAction::Append => arg.num_args(0..=1),
            _ => arg,
        }
    })
}

/// The defaults of every argument, for the kind of value each key takes.
fn defaults() -> RunArgs {
    let matches = declared()
        .mut_args(|arg| arg.env(None::<&str>))
        .try_get_matches_from(Vec::<String>::new())
        .expect("the defaults parse");
    RunArgs::from_arg_matches(&matches).expect("the defaults parse")
}

/// Sets argument `id` of `args` from `values`, as `--ID=VALUE` for each would.
fn assign(
    command: &Command,
    args: &mut RunArgs,
    id: &str,
    values: &[String],
    show_value: bool,
) -> Result<(), String> {
    let arg = command
        .get_arguments()
        .find(|arg| arg.get_id() == id)
        .ok_or("not a configuration key")?;
    let long = arg.get_long().unwrap_or(id);
    let argv: Vec<String> = if values.is_empty() {
        vec![format!("--{long}")]
    } else {
        values.iter().map(|v| format!("--{long}={v}")).collect()
    };
    let matches = command
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| reason(&e, show_value))?;
    args.update_from_arg_matches(&matches)
        .map_err(|e| reason(&e, show_value))
}

/// What the parser said, without clap's framing (`error:`, usage, `--help`). The value is
/// named only when it is a number or a switch: others may be secrets (a password in a URL).
fn reason(e: &clap::Error, show_value: bool) -> String {
    use clap::error::{ContextKind, ContextValue};
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => Some(v.as_str()),
        _ => None,
    };
    if let (Some(value), Some(ContextValue::Strings(valid))) =
        (value, e.get(ContextKind::ValidValue))
    {
        return format!("`{value}`: expected {}", one_of(valid));
    }
    let text = match std::error::Error::source(e) {
        Some(source) => source.to_string(),
        None => e.kind().to_string(),
    };
    match value {
        Some(value) if show_value && !text.contains(value) => format!("`{value}`: {text}"),
        _ => text,
    }
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(names: &[String]) -> String {
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "nothing".into(),
    }
}

/// Whether a value is one no one keeps a secret in, so an error may show it.
fn number(value: &toml::Value) -> bool {
    matches!(
        value,
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)
    )
}

/// The file's value as the flag's value strings: a list's items one by one, a table's entries
/// as `KEY=VALUE` (`[refresh_policies]`, like `--refresh-policy CLIENT_ID=POLICY`). The kind
/// must be the default's (`expected`) where the default shows one.
fn strings(value: &toml::Value, expected: Option<&toml::Value>) -> Result<Vec<String>, String> {
    use toml::Value;
    if let Some(expected) = expected {
        same_kind(value, expected)?;
    }
    match value {
        Value::Array(items) => {
            let element = match expected {
                Some(Value::Array(defaults)) => defaults.first(),
                _ => None,
            };
            items
                .iter()
                .map(|item| match item {
                    Value::Array(_) | Value::Table(_) => Err("expected a list of values".into()),
                    item => {
                        if let Some(element) = element {
                            same_kind(item, element)?;
                        }
                        Ok(scalar(item))
                    }
                })
                .collect()
        }
        Value::Table(entries) => entries
            .iter()
            .map(|(key, item)| match item {
                Value::Array(_) | Value::Table(_) => Err(format!("`{key}`: expected a value")),
                item => Ok(format!("{key}={}", scalar(item))),
            })
            .collect(),
        value => Ok(vec![scalar(value)]),
    }
}

fn scalar(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Refuses a value of another kind than `expected` (a whole number stands for a fraction).
fn same_kind(value: &toml::Value, expected: &toml::Value) -> Result<(), String> {
    use toml::Value;
    let ok = match (expected, value) {
        (Value::Float(_), Value::Integer(_)) | (Value::Integer(_), Value::Float(_)) => {
            matches!(expected, Value::Float(_))
        }
        _ => std::mem::discriminant(expected) == std::mem::discriminant(value),
    };
    if ok {
        return Ok(());
    }
    let kind = match expected {
        Value::String(_) => "a string",
        Value::Integer(_) => "a whole number",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "true or false",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
        Value::Datetime(_) => "a date",
    };
    Err(format!("expected {kind}, found {}", value.type_str()))
}
