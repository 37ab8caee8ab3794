//! The page's "Over time" chart: failures by top cause per hour for the last 24 hours, as
//! inline SVG drawn on the server, so it shows with JavaScript off and needs no library.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::esc;
use super::params::is_failure;

const HOURS: usize = 24;
const BAR: usize = 28;
const HEIGHT: usize = 140;

/// Counts per hour (0 = the hour ending now) and top cause.
pub fn buckets(events: &[Value], now: SystemTime) -> BTreeMap<String, [u32; HOURS]> {
    let mut out: BTreeMap<String, [u32; HOURS]> = BTreeMap::new();
    for e in events.iter().filter(|e| is_failure(e)) {
        let Some(at) = e
            .get("ts")
            .and_then(Value::as_str)
            .and_then(|ts| humantime::parse_rfc3339_weak(ts).ok())
        else {
            continue;
        };
        let age = now.duration_since(at).unwrap_or(Duration::ZERO).as_secs() as usize / 3600;
        if age >= HOURS {
            continue;
        }
        let cause = e.get("cause").and_then(Value::as_str).unwrap_or("unknown");
        out.entry(cause.to_owned()).or_insert([0; HOURS])[age] += 1;
    }
    out
}

/// A stable colour per cause id, so a cause keeps its colour across reloads.
fn colour(cause: &str) -> String {
    let hue = cause
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 360;
    format!("hsl({hue} 65% 45%)")
}

pub fn render(out: &mut String, events: &[Value], now: SystemTime) {
    let buckets = buckets(events, now);
    let totals: Vec<u32> = (0..HOURS)
        .map(|h| buckets.values().map(|b| b[h]).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let width = HOURS * BAR;
    let _ = write!(
        out,
        "<svg id=\"chart\" viewBox=\"0 0 {width} {}\" role=\"img\" aria-label=\"failures per hour by cause, {} in the last 24 hours\" data-total=\"{}\">",
        HEIGHT + 20,
        totals.iter().sum::<u32>(),
        totals.iter().sum::<u32>(),
    );
    for hour in 0..HOURS {
        // Oldest hour on the left, the current one on the right.
        let x = (HOURS - 1 - hour) * BAR + 2;
        let mut y = HEIGHT;
        for (cause, counts) in &buckets {
            let n = counts[hour];
            if n == 0 {
                continue;
            }
            let h = (n as usize * HEIGHT / max as usize).max(2);
            y = y.saturating_sub(h);
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{h}\" fill=\"{}\"><title>{} × {n}, {hour} h ago</title></rect>",
                BAR - 4,
                colour(cause),
                esc(cause),
            );
        }
    }
    for (hour, label) in [
        (23, "−24 h"),
        (17, "−18 h"),
        (11, "−12 h"),
        (5, "−6 h"),
        (0, "now"),
    ] {
        let x = (HOURS - 1 - hour) * BAR + 2;
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"{}\" font-size=\"11\">{label}</text>",
            HEIGHT + 15
        );
    }
    let _ = write!(
        out,
        "<line x1=\"0\" x2=\"{width}\" y1=\"{HEIGHT}\" y2=\"{HEIGHT}\" stroke=\"#888\"/></svg><ul class=\"legend\">"
    );
    for (cause, counts) in &buckets {
        let _ = write!(
            out,
            "<li><i style=\"background:{}\"></i><code>{}</code> {}</li>",
            colour(cause),
            esc(cause),
            counts.iter().sum::<u32>()
        );
    }
    out.push_str("</ul>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_land_in_the_hour_they_happened() {
        let now = SystemTime::now();
        let ts =
            |ago: u64| humantime::format_rfc3339_millis(now - Duration::from_secs(ago)).to_string();
        let events = vec![
            json!({"event": "invalid_grant", "cause": "a", "ts": ts(10)}),
            json!({"event": "invalid_grant", "cause": "a", "ts": ts(3 * 3600 + 5)}),
            json!({"event": "token_issued", "ts": ts(10)}),
            json!({"event": "blocked", "cause": "b", "ts": ts(25 * 3600)}),
        ];
        let b = buckets(&events, now);
        assert_eq!(b["a"][0], 1);
        assert_eq!(b["a"][3], 1);
        assert!(!b.contains_key("b"));
    }
}
