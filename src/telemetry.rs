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

/// Installs the global subscriber. `RUST_LOG` refines the default `info` filter. Token
/// exchange events are also kept in memory for the admin port's `/events`.
pub fn init(format: LogFormat, file: Option<&Path>) -> anyhow::Result<()> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,hyper_util=warn,rustls=warn,h2=warn"));
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
    let lines = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(file.is_none() && std::io::stdout().is_terminal())
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(RecentEvents.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

/// Events of these kinds are kept for `/events`.
const KEPT: &[&str] = &[
    "invalid_grant",
    "token_error",
    "token_issued",
    "token_refreshed",
    "token_exchange",
    "not_inspected",
    "warning",
    "recovered",
];
const KEEP_AT_MOST: usize = 1000;

static RECENT: std::sync::Mutex<std::collections::VecDeque<Value>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// The most recent token-exchange events, newest first.
pub fn recent_events(limit: usize) -> Vec<Value> {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent.iter().rev().take(limit).cloned().collect()
}

/// A layer that keeps the last events of the kinds above, as the JSON lines show them.
struct RecentEvents;

impl<S: Subscriber> tracing_subscriber::Layer<S> for RecentEvents {
    fn on_event(&self, event: &Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let line = event_line(event);
        let kept = line
            .get("event")
            .and_then(Value::as_str)
            .is_some_and(|e| KEPT.contains(&e));
        if !kept {
            return;
        }
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == KEEP_AT_MOST {
            recent.pop_front();
        }
        recent.push_back(Value::Object(line));
    }
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
        let line = event_line(event);
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event as one flat JSON object: `ts`, `level`, then its fields. Events without an
/// `event` field (library messages) get `"event":"log"` and their target, so every line can be
/// filtered on `event`.
fn event_line(event: &Event<'_>) -> Map<String, Value> {
    let mut line = Map::new();
    line.insert(
        "ts".into(),
        Value::String(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
    );
    line.insert(
        "level".into(),
        Value::String(event.metadata().level().as_str().to_ascii_lowercase()),
    );
    let mut fields = FieldMap(Map::new());
    event.record(&mut fields);
    if !fields.0.contains_key("event") {
        line.insert("event".into(), Value::String("log".into()));
        line.insert(
            "target".into(),
            Value::String(event.metadata().target().into()),
        );
    }
    line.extend(fields.0);
    line
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
