//! What grantdoctor tells: one JSON object per line (`ts`, `level`, `event`, then the event's
//! own fields, flat) for machines and `jq`, or a compact human format on a terminal.
//!
//! Must never: receive a secret. Callers pass fingerprints and shortened ids only; this module
//! is the last line, not the first.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    /// JSON unless stdout is a terminal.
    pub fn detect() -> Self {
        if std::io::stdout().is_terminal() {
            Self::Pretty
        } else {
            Self::Json
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` refines the default `info` filter.
pub fn init(format: LogFormat, file: Option<&Path>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,hyper_util=warn,rustls=warn,h2=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let writer = match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("--log-file {}: {e}", path.display()))?;
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout),
    };
    let result = match format {
        LogFormat::Json => builder
            .event_format(JsonLines)
            .with_writer(writer)
            .try_init(),
        LogFormat::Pretty => builder
            .compact()
            .with_ansi(file.is_none() && std::io::stdout().is_terminal())
            .with_writer(writer)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

/// The JSON line format of `DESIGN.md`.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert(
            "ts".into(),
            Value::String(
                humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            ),
        );
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        let mut fields = FieldMap(Map::new());
        event.record(&mut fields);
        // Events without an `event` field (library messages) still get one, so every line
        // can be filtered on it.
        if !fields.0.contains_key("event") {
            line.insert("event".into(), Value::String("log".into()));
            line.insert(
                "target".into(),
                Value::String(event.metadata().target().into()),
            );
        }
        line.extend(fields.0);
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct FieldMap(Map<String, Value>);

impl Visit for FieldMap {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Milliseconds to three decimals is all the precision a log reader needs.
        let rounded = (value * 1000.0).round() / 1000.0;
        self.0.insert(field.name().into(), Value::from(rounded));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}
