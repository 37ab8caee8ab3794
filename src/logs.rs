//! `grantdoctor logs`: the JSON log rendered for a human, one short block per event, with
//! colour on a terminal.

use serde_json::Value;

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

/// Renders one log line; lines that are not grantdoctor JSON come back unchanged.
pub fn render_line(line: &str, colour: bool) -> String {
    let Ok(Value::Object(e)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let p = Paint(colour);
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let time = s("ts").get(11..19).unwrap_or(s("ts"));
    let level = s("level").to_ascii_uppercase();
    let level = match level.as_str() {
        "WARN" | "ERROR" => p.wrap("33;1", &format!("{level:<5}")),
        _ => p.wrap("2", &format!("{level:<5}")),
    };
    let event = s("event");
    let mut out = format!("{time} {level} {}", p.wrap("1", event));
    for key in ["host", "grant_type", "client_id", "status"] {
        match e.get(key) {
            Some(Value::String(v)) if !v.is_empty() => out.push_str(&format!(" {v}")),
            Some(Value::Number(n)) => out.push_str(&format!(" {n}")),
            _ => {}
        }
    }
    match event {
        "invalid_grant" | "token_error" => {
            out.push_str(&format!(" {}: {}", s("error"), s("error_description")));
            out.push_str(&format!("\n    → {}", p.wrap("36;1", s("cause"))));
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
            for key in ["reason", "addr", "message"] {
                if !s(key).is_empty() {
                    out.push_str(&format!(" {}", s(key)));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_grant_line_shows_cause_evidence_and_fix() {
        let line = r#"{"ts":"2026-11-25T20:14:03.120Z","level":"warn","event":"invalid_grant","host":"login.salesforce.com","grant_type":"refresh_token","client_id":"3MVG9web","status":400,"error":"invalid_grant","error_description":"expired access/refresh token","cause":"sf.refresh.approval_limit_evicted","causes":"sf.refresh.approval_limit_evicted;q=0.95","evidence":"5 newer refresh tokens","fix":"Stop re-running"}"#;
        let out = render_line(line, false);
        assert!(out.starts_with("20:14:03 WARN  invalid_grant login.salesforce.com refresh_token 3MVG9web 400 invalid_grant: expired access/refresh token"), "{out}");
        assert!(out.contains("→ sf.refresh.approval_limit_evicted"));
        assert!(out.contains("evidence: 5 newer refresh tokens"));
        assert!(!out.contains('\x1b'));
        assert!(render_line(line, true).contains('\x1b'));
    }

    #[test]
    fn other_lines_pass_through() {
        assert_eq!(render_line("plain text", true), "plain text");
    }
}
