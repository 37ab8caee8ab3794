//! `grantdoctor logs`: the JSON log rendered for a human, one short block per event, with
//! colour on a terminal; filtered by cause, client id and time, and followed as it grows.
//! The proxy's own console format (`--log-format pretty`) is this same renderer.
//!
//! Must never: print a field the log line does not carry (it holds no secret; neither may
//! this), or stop following a file because it was truncated or rotated.

use std::io::{BufRead, BufReader, IsTerminal, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::cli::LogsArgs;

/// `--since`: a moment, or a span back from when the command starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(SystemTime),
}

impl Since {
    fn cutoff(self, now: SystemTime) -> SystemTime {
        match self {
            Self::Ago(span) => now.checked_sub(span).unwrap_or(SystemTime::UNIX_EPOCH),
            Self::At(at) => at,
        }
    }
}

/// The `--since` value parser: `10m`, `2h`, `1d 6h`, or `2026-12-01T10:00:00Z`. Its error
/// becomes clap's usage error, which names the flag and exits with 2.
pub fn parse_since(value: &str) -> Result<Since, String> {
    let value = value.trim();
    if let Ok(span) = humantime::parse_duration(value) {
        return Ok(Since::Ago(span));
    }
    humantime::parse_rfc3339_weak(value)
        .map(Since::At)
        .map_err(|_| {
            "expected a duration back from now (10m, 2h, 1d) or an RFC 3339 UTC time \
             (2026-12-01T10:00:00Z)"
                .to_owned()
        })
}

/// Which events `logs` shows.
#[derive(Debug, Default)]
struct Filter {
    cause: Option<String>,
    client_id: Option<String>,
    since: Option<SystemTime>,
}

impl Filter {
    fn from_args(args: &LogsArgs, now: SystemTime) -> Self {
        Self {
            cause: args.cause.clone(),
            // The log carries consumer keys shortened; compare like with like.
            client_id: args.client_id.as_deref().map(crate::oauth::short_client_id),
            since: args.since.map(|s| s.cutoff(now)),
        }
    }

    fn is_empty(&self) -> bool {
        self.cause.is_none() && self.client_id.is_none() && self.since.is_none()
    }

    /// Whether a line is shown. With a filter set, lines that are not grantdoctor JSON are
    /// not: they cannot be said to match.
    fn keeps(&self, line: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(event)) => self.keeps_event(&event),
            _ => false,
        }
    }

    fn keeps_event(&self, event: &Map<String, Value>) -> bool {
        let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("");
        if let Some(cause) = &self.cause
            && !names_cause(event, cause)
        {
            return false;
        }
        if let Some(client_id) = &self.client_id
            && s("client_id") != client_id
        {
            return false;
        }
        if let Some(since) = self.since {
            let at = humantime::parse_rfc3339_weak(s("ts")).ok();
            if at.is_none_or(|at| at < since) {
                return false;
            }
        }
        true
    }
}

/// The top cause, any ranked cause (`id;q=0.9;basis=…, …`), or a warning's id.
pub(crate) fn names_cause(event: &Map<String, Value>, id: &str) -> bool {
    let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("");
    s("cause") == id
        || (s("event") == "warning" && s("id") == id)
        || s("causes")
            .split(',')
            .any(|c| c.split(';').next().unwrap_or("").trim() == id)
}

/// `grantdoctor logs`.
pub fn run(args: LogsArgs) -> anyhow::Result<()> {
    let filter = Filter::from_args(&args, SystemTime::now());
    let colour = crate::colour::wanted(std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    let mut show = |line: &str| -> bool {
        if !filter.keeps(line) {
            return true;
        }
        // A reader that went away (`| head`) ends the command quietly.
        writeln!(out, "{}", render_line(line, colour)).is_ok() && out.flush().is_ok()
    };
    match &args.file {
        None => {
            for line in std::io::stdin().lock().lines() {
                if !show(line?.trim_end()) {
                    break;
                }
            }
            Ok(())
        }
        Some(path) if args.follow => follow(path, args.from_start, &mut show),
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
            for line in BufReader::new(file).lines() {
                if !show(line?.trim_end()) {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// How often a followed file is looked at when it has nothing new.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Prints lines as they are appended to `path`, from its end unless `from_start`. A file
/// that shrinks (truncated) is read again from its start; one replaced by another (rotated)
/// is reopened.
fn follow(
    path: &Path,
    from_start: bool,
    show: &mut impl FnMut(&str) -> bool,
) -> anyhow::Result<()> {
    let open = || {
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))
    };
    let mut file = BufReader::new(open()?);
    if !from_start {
        file.seek(SeekFrom::End(0))?;
    }
    // A line the writer has not finished yet waits here for its end.
    let mut pending = String::new();
    loop {
        let mut chunk = String::new();
        let n = file.read_line(&mut chunk)?;
        if n > 0 {
            pending.push_str(&chunk);
            if pending.ends_with('\n') {
                let done = std::mem::take(&mut pending);
                if !show(done.trim_end()) {
                    return Ok(());
                }
            }
            continue;
        }
        std::thread::sleep(FOLLOW_POLL);
        let position = file.stream_position()?;
        if replaced_or_truncated(path, file.get_ref(), position) {
            file = BufReader::new(open()?);
            pending.clear();
        }
    }
}

fn replaced_or_truncated(path: &Path, open: &std::fs::File, position: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(now), Ok(held)) = (std::fs::metadata(path), open.metadata()) else {
        // Between a rotation's rename and the new file: keep the old one until it appears.
        return false;
    };
    now.ino() != held.ino() || now.dev() != held.dev() || held.len() < position
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Fields every rendering shows in its first line, or that are not worth a reader's time.
const HEADLINE: &[&str] = &[
    "ts",
    "level",
    "event",
    "event_id",
    "host",
    "grant_type",
    "client_id",
    "status",
];

/// Renders one log line; lines that are not grantdoctor JSON come back unchanged.
pub fn render_line(line: &str, colour: bool) -> String {
    let Ok(Value::Object(e)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let p = Paint(colour);
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let event = s("event");
    let mut out = headline(&e, &p);
    match event {
        "invalid_grant" | "token_error" => {
            out.push_str(&format!(" {}: {}", s("error"), s("error_description")));
            out.push_str(&format!("\n    → {}", p.wrap("36;1", s("cause"))));
            match s("basis") {
                "prior" => out.push_str(" — a guess (prior): nothing observed decides it"),
                "confirmed" => out.push_str(" — confirmed by the org's records"),
                "evidence" => out.push_str(" — on evidence"),
                _ => {}
            }
            if !s("causes").is_empty() {
                out.push_str(&format!("  ({})", s("causes")));
            }
            if !s("evidence").is_empty() {
                out.push_str(&format!("\n    evidence: {}", s("evidence")));
            }
            if !s("fix").is_empty() {
                out.push_str(&format!("\n    fix: {}", s("fix")));
            }
        }
        "warning" => out.push_str(&format!(" {}\n    {}", p.wrap("33", s("id")), s("message"))),
        _ => {
            for (key, value) in e.iter().filter(|(k, _)| !HEADLINE.contains(&k.as_str())) {
                match value {
                    Value::String(v) if v.is_empty() => {}
                    Value::String(v) => out.push_str(&format!(" {}={v}", p.wrap("2", key))),
                    other => out.push_str(&format!(" {}={other}", p.wrap("2", key))),
                }
            }
        }
    }
    out
}

/// `2026-11-25 20:14:03 WARN  invalid_grant ev_… host grant_type client_id status`.
fn headline(e: &Map<String, Value>, p: &Paint) -> String {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let ts = s("ts");
    // RFC 3339 in UTC, as the log writes it: date and time to the second, separated for
    // reading; anything else is shown as written.
    let when = match (ts.get(0..10), ts.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time}"),
        _ => ts.to_owned(),
    };
    let level = s("level").to_ascii_uppercase();
    let level = match level.as_str() {
        "WARN" | "ERROR" => p.wrap("33;1", &format!("{level:<5}")),
        _ => p.wrap("2", &format!("{level:<5}")),
    };
    let mut out = format!("{when} {level} {}", p.wrap("1", s("event")));
    if !s("event_id").is_empty() {
        out.push_str(&format!(" {}", p.wrap("2", s("event_id"))));
    }
    for key in ["host", "grant_type", "client_id", "status"] {
        match e.get(key) {
            Some(Value::String(v)) if !v.is_empty() => out.push_str(&format!(" {v}")),
            Some(Value::Number(n)) => out.push_str(&format!(" {n}")),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIAGNOSED: &str = r#"{"ts":"2026-11-25T20:14:03.120Z","level":"warn","event":"invalid_grant","event_id":"ev_5f0c2a9d41e7b3c8","host":"login.salesforce.com","grant_type":"refresh_token","client_id":"3MVG9web","status":400,"error":"invalid_grant","error_description":"expired access/refresh token","cause":"sf.refresh.approval_limit_evicted","causes":"sf.refresh.approval_limit_evicted;q=0.95, sf.refresh.revoked;q=0.2","evidence":"5 newer refresh tokens","fix":"Stop re-running"}"#;

    fn event(line: &str) -> Map<String, Value> {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn an_invalid_grant_line_shows_date_event_id_cause_evidence_and_fix() {
        let out = render_line(DIAGNOSED, false);
        assert!(out.starts_with("2026-11-25 20:14:03 WARN  invalid_grant ev_5f0c2a9d41e7b3c8 login.salesforce.com refresh_token 3MVG9web 400 invalid_grant: expired access/refresh token"), "{out}");
        assert!(out.contains("→ sf.refresh.approval_limit_evicted"));
        assert!(out.contains("evidence: 5 newer refresh tokens"));
        assert!(!out.contains('\x1b'));
        assert!(render_line(DIAGNOSED, true).contains('\x1b'));
    }

    #[test]
    fn other_events_show_their_own_fields() {
        let line = r#"{"ts":"2026-11-25T20:14:03.120Z","level":"info","event":"listening","addr":"127.0.0.1:8080","admin":"127.0.0.1:9090","empty":""}"#;
        assert_eq!(
            render_line(line, false),
            "2026-11-25 20:14:03 INFO  listening addr=127.0.0.1:8080 admin=127.0.0.1:9090"
        );
    }

    #[test]
    fn other_lines_pass_through() {
        assert_eq!(render_line("plain text", true), "plain text");
    }

    #[test]
    fn since_takes_a_span_or_a_utc_time_and_refuses_anything_else() {
        assert_eq!(parse_since("10m"), Ok(Since::Ago(Duration::from_secs(600))));
        assert_eq!(parse_since("2h"), Ok(Since::Ago(Duration::from_secs(7200))));
        let at = parse_since("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(
            at,
            Since::At(humantime::parse_rfc3339("2026-12-01T10:00:00Z").unwrap())
        );
        for bad in ["", "yesterday", "10", "2026-13-01T00:00:00Z", "-5m"] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_basis_is_said_and_a_prior_is_called_a_guess() {
        let prior = DIAGNOSED.replace(
            "\"cause\":\"sf.refresh.approval_limit_evicted\"",
            "\"cause\":\"sf.refresh.approval_limit_evicted\",\"basis\":\"prior\"",
        );
        assert!(render_line(&prior, false).contains("a guess (prior)"));
        let evidence = prior.replace("\"basis\":\"prior\"", "\"basis\":\"evidence\"");
        let shown = render_line(&evidence, false);
        assert!(
            shown.contains("on evidence") && !shown.contains("guess"),
            "{shown}"
        );
    }

    #[test]
    fn a_cause_matches_the_top_cause_a_ranked_cause_or_a_warning_id() {
        let e = event(DIAGNOSED);
        assert!(names_cause(&e, "sf.refresh.approval_limit_evicted"));
        assert!(names_cause(&e, "sf.refresh.revoked"));
        assert!(!names_cause(&e, "sf.refresh"));
        let warning = event(r#"{"event":"warning","id":"warn.approval_evicted"}"#);
        assert!(names_cause(&warning, "warn.approval_evicted"));
    }

    #[test]
    fn the_filter_compares_shortened_client_ids_and_times() {
        let now = humantime::parse_rfc3339("2026-11-25T20:20:00Z").unwrap();
        let long = "3MVG9abcdefghijklmnopqrstuvwx1Yz";
        let line = format!(
            r#"{{"ts":"2026-11-25T20:14:03.120Z","event":"token_refreshed","client_id":"{}"}}"#,
            crate::oauth::short_client_id(long)
        );
        let filter = |client_id: Option<&str>, since: Option<Since>| Filter {
            cause: None,
            client_id: client_id.map(crate::oauth::short_client_id),
            since: since.map(|s| s.cutoff(now)),
        };
        assert!(filter(Some(long), None).keeps(&line));
        assert!(!filter(Some("3MVG9other"), None).keeps(&line));
        assert!(filter(None, Some(Since::Ago(Duration::from_secs(600)))).keeps(&line));
        assert!(!filter(None, Some(Since::Ago(Duration::from_secs(60)))).keeps(&line));
        assert!(!filter(None, Some(Since::Ago(Duration::from_secs(60)))).keeps("not json"));
        assert!(Filter::default().keeps("not json"));
    }
}
