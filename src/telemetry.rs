//! What grantdoctor tells: one JSON object per line (`ts`, `level`, `event`, then the event's
//! own fields, flat) for machines and `jq`, or on a terminal the same lines as `grantdoctor
//! logs` renders them.
//!
//! Must never: receive a secret. Callers pass fingerprints and shortened ids only; this module
//! is the last line, not the first.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;

use serde_json::Value;
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
            .event_format(PrettyLines {
                colour: file.is_none() && crate::colour::wanted(std::io::stdout().is_terminal()),
            })
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
    "recovery_failed",
    "blocked",
    "confirmed",
];
const KEEP_AT_MOST: usize = 1000;

/// Kept as the lines were written; parsed only when `/events` is asked.
static RECENT: std::sync::Mutex<std::collections::VecDeque<String>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

thread_local! {
    /// The line the JSON formatter just rendered, with its event's identity, so the
    /// `/events` layer that sees the same event next does not render it again.
    static RENDERED: std::cell::RefCell<Option<(usize, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// Every kept event as it happens, for live readers (the page's stream, webhooks). Readers
/// that fall behind miss lines (a bounded channel) and never slow the token path.
static LIVE: std::sync::OnceLock<tokio::sync::broadcast::Sender<std::sync::Arc<str>>> =
    std::sync::OnceLock::new();

fn live() -> &'static tokio::sync::broadcast::Sender<std::sync::Arc<str>> {
    LIVE.get_or_init(|| tokio::sync::broadcast::channel(1024).0)
}

/// A live feed of kept events (JSON lines), from now on.
pub fn subscribe() -> tokio::sync::broadcast::Receiver<std::sync::Arc<str>> {
    live().subscribe()
}

/// The most recent token-exchange events, newest first.
pub fn recent_events(limit: usize) -> Vec<Value> {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent
        .iter()
        .rev()
        .take(limit)
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Which event this is, for the hand-over between the formatter and the `/events` layer: the
/// same `Event` is passed to both within one dispatch.
fn identity(event: &Event<'_>) -> usize {
    event as *const Event<'_> as usize ^ (event.metadata() as *const _ as usize).rotate_left(17)
}

/// A layer that keeps the last events of the kinds above, as the JSON lines show them.
struct RecentEvents;

impl<S: Subscriber> tracing_subscriber::Layer<S> for RecentEvents {
    fn on_event(&self, event: &Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut kind = EventKind(false);
        event.record(&mut kind);
        if !kind.0 {
            return;
        }
        let id = identity(event);
        let line = RENDERED
            .with(|r| r.borrow_mut().take())
            .filter(|(rendered, _)| *rendered == id)
            .map(|(_, line)| line)
            .unwrap_or_else(|| event_line(event));
        let sender = live();
        if sender.receiver_count() > 0 {
            let _ = sender.send(std::sync::Arc::from(line.as_str()));
        }
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == KEEP_AT_MOST {
            recent.pop_front();
        }
        recent.push_back(line);
    }
}

/// Whether an event's `event` field names a kept kind.
struct EventKind(bool);

impl Visit for EventKind {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "event" {
            self.0 = KEPT.contains(&value);
        }
    }
    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

/// The JSON line format the README documents.
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
        writeln!(writer, "{line}")?;
        RENDERED.with(|r| *r.borrow_mut() = Some((identity(event), line)));
        Ok(())
    }
}

/// The human format: each event as its JSON line, rendered by `grantdoctor logs`'s
/// renderer, so a terminal and a replayed log file read the same.
pub struct PrettyLines {
    colour: bool,
}

impl<S, N> FormatEvent<S, N> for PrettyLines
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
        writeln!(writer, "{}", crate::logs::render_line(&line, self.colour))?;
        RENDERED.with(|r| *r.borrow_mut() = Some((identity(event), line)));
        Ok(())
    }
}

/// An event as one flat JSON object: `ts`, `level`, `event`, then its other fields in the
/// order they were given. Events without an `event` field (library messages) get
/// `"event":"log"` and their target, so every line can be filtered on `event`. Written
/// straight to text: building a map of values first cost more than the rest of a token
/// exchange's bookkeeping.
fn event_line(event: &Event<'_>) -> String {
    let mut fields = FieldWriter {
        event: None,
        // A diagnosed exchange's fields take about 900 bytes: one allocation, no regrowth.
        rest: String::with_capacity(1024),
    };
    event.record(&mut fields);
    let mut line = String::with_capacity(fields.rest.len() + 96);
    line.push_str("{\"ts\":\"");
    line.push_str(&humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
    line.push_str("\",\"level\":\"");
    line.push_str(match *event.metadata().level() {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    });
    line.push_str("\",\"event\":");
    match &fields.event {
        Some(kind) => push_json_str(&mut line, kind),
        None => {
            line.push_str("\"log\",\"target\":");
            push_json_str(&mut line, event.metadata().target());
        }
    }
    line.push_str(&fields.rest);
    line.push('}');
    line
}

fn push_json_str(out: &mut String, value: &str) {
    // Field names, ids, hosts and cause ids need no escaping; only the rest pays for it.
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(value.len() + 2);
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(value).expect("a string serialises"));
    }
}

/// Writes `,"name":value` for every field but `event`, which it keeps for the front.
struct FieldWriter {
    event: Option<String>,
    rest: String,
}

impl FieldWriter {
    fn key(&mut self, field: &Field) {
        self.rest.push(',');
        push_json_str(&mut self.rest, field.name());
        self.rest.push(':');
    }
}

impl Visit for FieldWriter {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // Milliseconds to three decimals is all the precision a log reader needs.
        let rounded = (value * 1000.0).round() / 1000.0;
        if rounded.is_finite() {
            use std::fmt::Write;
            let _ = write!(self.rest, "{rounded}");
        } else {
            self.rest.push_str("null");
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        use std::fmt::Write;
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        use std::fmt::Write;
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.rest.push_str(if value { "true" } else { "false" });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "event" && self.event.is_none() {
            self.event = Some(value.to_owned());
            return;
        }
        self.key(field);
        push_json_str(&mut self.rest, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        for value in [
            "plain ascii",
            "",
            "quote \" and backslash \\",
            "tab\tnewline\ncontrol\u{1}",
            "non-ascii é → ✓",
            "\u{7f} delete",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, value);
            assert_eq!(out, serde_json::to_string(value).unwrap(), "{value:?}");
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), value);
        }
    }
}
