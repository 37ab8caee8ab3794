//! The page itself: rendered whole on the server, so its tables read with JavaScript off;
//! the embedded script only adds live rows, instant filtering and a live counter.
//!
//! Must never: show a field the log line does not carry. Events come from the kept log
//! lines and families from the ledger's fingerprints, so there is no secret to show.

use std::fmt::Write;
use std::time::SystemTime;

use serde_json::Value;

use super::params::{EventFilter, is_failure};
use super::{chart, esc, families};
use crate::ledger::families::FamilyView;

const CSS: &str = include_str!("assets/page.css");
const JS: &str = include_str!("assets/page.js");

/// What one page shows.
pub struct PageData<'a> {
    /// Every kept event, newest first.
    pub events: &'a [Value],
    pub filter: &'a EventFilter,
    pub families: &'a [FamilyView],
    pub now: SystemTime,
}

pub fn render(data: &PageData<'_>) -> String {
    let mut out = String::with_capacity(32 * 1024);
    out.push_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>grantdoctor</title><style>",
    );
    out.push_str(CSS);
    out.push_str(
        "</style></head><body><header><h1>grantdoctor</h1><nav>\
         <a href=\"#failures\">Failures</a><a href=\"#families\">Token families</a>\
         <a href=\"#over-time\">Over time</a></nav>\
         <span id=\"live\" class=\"live\">live updates need JavaScript</span></header><main>",
    );
    if let Some(id) = &data.filter.event_id {
        detail(&mut out, id, data.events);
    }
    failures(&mut out, data);
    families::render(&mut out, data.families);
    out.push_str("<section id=\"over-time\"><h2>Over time</h2>");
    out.push_str("<p class=\"note\">Failures by top cause per hour, last 24 hours, from the kept events. <span id=\"new-count\"></span></p>");
    chart::render(&mut out, data.events, data.now);
    out.push_str("</section></main><script type=\"application/json\" id=\"docs\">");
    // Inside a script element only `</` could end it early; JSON escapes it as `<\/`.
    out.push_str(&docs_json().replace("</", "<\\/"));
    out.push_str("</script><script>");
    out.push_str(JS);
    out.push_str("</script></body></html>");
    out
}

/// The catalogue's docs links by cause id, for rows the script adds.
fn docs_json() -> String {
    let map: serde_json::Map<String, Value> = crate::diagnose::CAUSES
        .iter()
        .map(|c| (c.id.to_owned(), Value::from(c.docs.to_vec())))
        .collect();
    Value::Object(map).to_string()
}

fn docs_of(id: &str) -> &'static [&'static str] {
    crate::diagnose::CAUSES
        .iter()
        .find(|c| c.id == id)
        .map_or(&[], |c| c.docs)
}

fn s<'a>(event: &'a Value, key: &str) -> &'a str {
    event.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `id;q=0.90;basis=evidence, …` as (id, confidence, basis).
pub fn ranked(event: &Value) -> Vec<(String, String, String)> {
    s(event, "causes")
        .split(',')
        .filter_map(|part| {
            let mut fields = part.trim().split(';');
            let id = fields.next().filter(|id| !id.is_empty())?.to_owned();
            let (mut q, mut basis) = (String::new(), String::new());
            for field in fields {
                if let Some(v) = field.strip_prefix("q=") {
                    q = v.to_owned();
                } else if let Some(v) = field.strip_prefix("basis=") {
                    basis = v.to_owned();
                }
            }
            Some((id, q, basis))
        })
        .collect()
}

/// A basis as the page shows it: a prior is a guess and says so.
fn basis_cell(basis: &str) -> String {
    match basis {
        "prior" => "<span class=\"basis prior\" title=\"nothing on the wire shows it: the likeliest cause, not a finding\">prior (a guess)</span>".to_owned(),
        "" => String::new(),
        other => format!("<span class=\"basis {0}\">{0}</span>", esc(other)),
    }
}

fn time_text(ts: &str) -> String {
    // `2026-12-01T10:00:00.123Z` → `2026-12-01 10:00:00Z`: the date matters, the millis not.
    let ts = ts.replacen('T', " ", 1);
    match ts.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => ts,
    }
}

fn failures(out: &mut String, data: &PageData<'_>) {
    let f = data.filter;
    let field = |name: &str, label: &str, value: &Option<String>| {
        format!(
            "<label>{label} <input name=\"{name}\" value=\"{}\" size=\"18\"></label>",
            esc(value.as_deref().unwrap_or(""))
        )
    };
    let _ = write!(
        out,
        "<section id=\"failures\"><h2>Failures</h2><form id=\"filters\" method=\"get\" action=\"/\">{}{}{}{}{}<button>Filter</button> <a href=\"/\">clear</a></form>",
        field("event", "event id", &f.event_id),
        field("cause", "cause", &f.cause),
        field("client_id", "client id", &f.client_id),
        field("org_id", "org", &f.org_id),
        field("user_id", "user", &f.user_id),
    );
    out.push_str("<table id=\"failure-table\"><thead><tr><th>time</th><th>event</th><th>host</th><th>client id</th><th>org / user</th><th>cause</th><th>basis</th><th>confidence</th><th>evidence</th><th>fix</th><th>docs</th></tr></thead><tbody>");
    let rows: Vec<&Value> = data
        .events
        .iter()
        .filter(|e| is_failure(e) && f.keeps(e))
        .take(f.limit)
        .collect();
    for event in &rows {
        failure_row(out, event);
    }
    let _ = write!(
        out,
        "</tbody></table><p id=\"no-failures\" class=\"note\"{}>No failures among the kept events{}.</p></section>",
        if rows.is_empty() { "" } else { " hidden" },
        if f.is_empty() { "" } else { " for this filter" },
    );
}

fn failure_row(out: &mut String, e: &Value) {
    let ranked = ranked(e);
    let top = s(e, "cause");
    let confidence = ranked.first().map_or("", |(_, q, _)| q.as_str());
    let ids: Vec<&str> = ranked.iter().map(|(id, _, _)| id.as_str()).collect();
    let event_id = s(e, "event_id");
    let evidence = match s(e, "evidence") {
        "" => s(e, "reason"),
        text => text,
    };
    let docs: String = docs_of(top)
        .iter()
        .map(|d| format!("<a href=\"{0}\" rel=\"noreferrer\">{0}</a>", esc(d)))
        .collect::<Vec<_>>()
        .join(" ");
    let _ = write!(
        out,
        "<tr id=\"row-{id}\" data-event-id=\"{id}\" data-cause=\"{top}\" data-causes=\"{causes}\" data-client=\"{client}\" data-org=\"{org}\" data-user=\"{user}\" class=\"{kind}\">\
         <td>{time}</td><td><a href=\"/events/{id}\">{id}</a></td><td>{host}</td><td>{client}</td><td>{org}<br>{user}</td>\
         <td><code>{top}</code><br><small>{kind}</small></td><td>{basis}</td><td>{confidence}</td><td class=\"evidence\">{evidence}</td><td class=\"fix\">{fix}</td><td class=\"docs\">{docs}</td></tr>",
        id = esc(event_id),
        top = esc(top),
        causes = esc(&ids.join(" ")),
        client = esc(s(e, "client_id")),
        org = esc(s(e, "org_id")),
        user = esc(s(e, "user_id")),
        kind = esc(s(e, "event")),
        time = esc(&time_text(s(e, "ts"))),
        host = esc(s(e, "host")),
        basis = basis_cell(s(e, "basis")),
        confidence = esc(confidence),
        evidence = esc(evidence),
        fix = esc(s(e, "fix")),
    );
}

/// One event, every field of its log line, and its ranked causes with the catalogue's text.
fn detail(out: &mut String, id: &str, events: &[Value]) {
    let _ = write!(
        out,
        "<section id=\"detail\"><h2>Event <code>{}</code></h2>",
        esc(id)
    );
    let Some(event) = events.iter().find(|e| s(e, "event_id") == id) else {
        out.push_str("<p class=\"note\">Not among the kept events (the last 1,000): search the log with <code>grantdoctor logs</code>.</p></section>");
        return;
    };
    out.push_str("<dl>");
    if let Value::Object(fields) = event {
        for (key, value) in fields {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(key), esc(&text));
        }
    }
    out.push_str("</dl><h3>Ranked causes</h3><ol class=\"ranked\">");
    for (cause, q, basis) in ranked(event) {
        let info = crate::diagnose::CAUSES.iter().find(|c| c.id == cause);
        let _ = write!(
            out,
            "<li><code>{}</code> q={} {}<br>{}",
            esc(&cause),
            esc(&q),
            basis_cell(&basis),
            esc(info.map_or("", |i| i.summary))
        );
        if let Some(info) = info {
            for fix in info.fix {
                let _ = write!(out, "<br>fix: {}", esc(fix));
            }
            for doc in info.docs {
                let _ = write!(
                    out,
                    "<br><a href=\"{0}\" rel=\"noreferrer\">{0}</a>",
                    esc(doc)
                );
            }
        }
        out.push_str("</li>");
    }
    out.push_str("</ol></section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranked_causes_are_read_from_the_log_value() {
        let e = json!({"causes": "a.b;q=0.90;basis=evidence, c.d;q=0.10;basis=prior"});
        assert_eq!(
            ranked(&e),
            vec![
                ("a.b".into(), "0.90".into(), "evidence".into()),
                ("c.d".into(), "0.10".into(), "prior".into())
            ]
        );
    }

    #[test]
    fn a_row_escapes_what_it_shows_and_marks_a_prior_as_a_guess() {
        let mut out = String::new();
        failure_row(
            &mut out,
            &json!({"event": "invalid_grant", "event_id": "ev_1", "cause": "sf.refresh.revoked",
                "basis": "prior", "evidence": "<script>x</script>", "causes": "sf.refresh.revoked;q=0.50;basis=prior"}),
        );
        assert!(out.contains("prior (a guess)"), "{out}");
        assert!(out.contains("&lt;script&gt;"), "{out}");
        assert!(!out.contains("<script>"), "{out}");
    }
}
