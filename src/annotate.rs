//! Applying a diagnosis to the response the client receives: headers, and one extra member in
//! the JSON body. The original members are kept byte for byte (the member is spliced into the
//! text, not re-serialised), and the body is re-encoded with its original Content-Encoding.
//!
//! Must never: change `error` or `error_description` unless `--annotate-description append`.

use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::json;

use crate::diagnose::{Diagnosis, info};
use crate::oauth;

/// The response headers grantdoctor writes: a public interface (the README lists them), so a
/// misspelling is a compile error rather than a silently missing header.
pub mod headers {
    pub const CAUSE: &str = "grantdoctor-cause";
    pub const CAUSES: &str = "grantdoctor-causes";
    pub const BASIS: &str = "grantdoctor-basis";
    pub const EVENT: &str = "grantdoctor-event";
    pub const RECOVERY: &str = "grantdoctor-recovery";
    pub const RECOVERY_CAUSE: &str = "grantdoctor-recovery-cause";
    pub const RECOVERED: &str = "grantdoctor-recovered";
    pub const BLOCKED: &str = "grantdoctor-blocked";
}

/// Where annotations go.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AnnotateMode {
    Off,
    Headers,
    Body,
    All,
}

impl AnnotateMode {
    pub(crate) fn headers(self) -> bool {
        matches!(self, Self::Headers | Self::All)
    }
    fn body(self) -> bool {
        matches!(self, Self::Body | Self::All)
    }
}

/// What a JWT bearer recovery did for a failure it could not turn into a token.
#[derive(Debug, Clone)]
pub struct RecoveryNote {
    /// `failed`, `cooling-down` or `skipped`, for the `grantdoctor-recovery` header.
    pub outcome: &'static str,
    /// The recovery exchange's own top cause.
    pub cause: Option<&'static str>,
    /// The `recovery` member of the body.
    pub member: serde_json::Value,
}

impl RecoveryNote {
    pub fn skipped(reason: &str) -> Self {
        Self {
            outcome: "skipped",
            cause: None,
            member: json!({"outcome": "skipped", "reason": reason}),
        }
    }

    pub fn failed(failure: &crate::recover::Failure, how: crate::recover::How) -> Self {
        let outcome = if how == crate::recover::How::CoolingDown {
            "cooling-down"
        } else {
            "failed"
        };
        let mut member = json!({
            "outcome": outcome,
            "grant_type": oauth::JWT_BEARER,
            "how": how.label(),
            "causes": causes(&failure.diagnosis),
        });
        if failure.status != 0 {
            member["status"] = failure.status.into();
        }
        if let Some(error) = &failure.error {
            member["error"] = error.as_str().into();
        }
        if let Some(description) = &failure.error_description {
            member["error_description"] = description.as_str().into();
        }
        if let Some(reason) = &failure.reason {
            member["reason"] = reason.as_str().into();
        }
        Self {
            outcome,
            cause: failure.diagnosis.top().map(|c| c.id),
            member,
        }
    }
}

/// What is told about one failure.
#[derive(Debug, Clone, Copy)]
pub struct Annotation<'a> {
    pub event_id: &'a str,
    pub diagnosis: &'a Diagnosis,
    pub recovery: Option<&'a RecoveryNote>,
}

/// The catalogue's texts of each cause as JSON, rendered once: escaping them again for every
/// failed exchange was most of the cost of annotating.
struct Fragments {
    /// `"summary":"..."`
    summary: String,
    /// `"fix":[...],"docs":[...]`
    fix_docs: String,
}

fn fragments(id: &str) -> &'static Fragments {
    static ALL: std::sync::OnceLock<std::collections::HashMap<&'static str, Fragments>> =
        std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        crate::diagnose::CAUSES
            .iter()
            .map(|c| {
                (
                    c.id,
                    Fragments {
                        summary: format!("\"summary\":{}", json(c.summary)),
                        fix_docs: format!("\"fix\":{},\"docs\":{}", json(c.fix), json(c.docs)),
                    },
                )
            })
            .collect()
    });
    &all[info(id).id]
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("strings, numbers and lists of them serialise")
}

/// The `grantdoctor` member as JSON text, in the order the README documents.
fn member_text(
    event_id: &str,
    diagnosis: &Diagnosis,
    recovery: Option<&serde_json::Value>,
) -> String {
    let mut out = String::with_capacity(1024 * diagnosis.causes.len().max(1));
    out.push_str("{\"event_id\":");
    out.push_str(&json(event_id));
    out.push_str(",\"causes\":[");
    for (i, c) in diagnosis.causes.iter().enumerate() {
        let texts = fragments(c.id);
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        out.push_str(&json(c.id));
        out.push_str(",\"confidence\":");
        out.push_str(&json(&((c.confidence * 100.0).round() / 100.0)));
        out.push_str(",\"basis\":\"");
        out.push_str(c.basis.as_str());
        out.push_str("\",");
        out.push_str(&texts.summary);
        out.push_str(",\"evidence\":");
        out.push_str(&json(&c.evidence));
        out.push(',');
        out.push_str(&texts.fix_docs);
        out.push('}');
    }
    out.push(']');
    if let Some(recovery) = recovery {
        out.push_str(",\"recovery\":");
        out.push_str(&recovery.to_string());
    }
    out.push('}');
    out
}

/// The `grantdoctor` member of an annotated body, as a value.
pub fn member(event_id: &str, diagnosis: &Diagnosis) -> serde_json::Value {
    serde_json::from_str(&member_text(event_id, diagnosis, None)).expect("the member is JSON")
}

fn causes(diagnosis: &Diagnosis) -> serde_json::Value {
    member("", diagnosis)["causes"].take()
}

/// The annotation headers, per `mode`: the one place they are written, for a failure and for
/// the token a recovery got instead of it.
pub fn set_headers(headers: &mut http::HeaderMap, annotation: &Annotation<'_>, mode: AnnotateMode) {
    let Annotation {
        event_id,
        diagnosis,
        recovery,
    } = *annotation;
    let Some(top) = diagnosis.top() else {
        return;
    };
    if !mode.headers() {
        return;
    }
    let set = |headers: &mut http::HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(headers, self::headers::CAUSE, top.id);
    set(headers, self::headers::BASIS, top.basis.as_str());
    set(headers, self::headers::CAUSES, &diagnosis.header_value());
    set(headers, self::headers::EVENT, event_id);
    if let Some(note) = recovery {
        set(headers, self::headers::RECOVERY, note.outcome);
        if let Some(cause) = note.cause {
            set(headers, self::headers::RECOVERY_CAUSE, cause);
        }
    }
}

/// Annotates a response: sets the headers (per `mode`) and returns the body to send. `raw` is
/// the body as upstream sent it, `decoded` the same without Content-Encoding.
pub fn apply(
    headers: &mut http::HeaderMap,
    raw: Bytes,
    decoded: &[u8],
    annotation: &Annotation<'_>,
    mode: AnnotateMode,
    append_description: bool,
) -> Bytes {
    let Annotation {
        event_id,
        diagnosis,
        recovery,
    } = *annotation;
    if mode == AnnotateMode::Off || diagnosis.causes.is_empty() {
        return raw;
    }
    set_headers(headers, annotation, mode);
    if !mode.body() {
        return raw;
    }
    let Ok(text) = std::str::from_utf8(decoded) else {
        return raw;
    };
    let member = member_text(event_id, diagnosis, recovery.map(|note| &note.member));
    let Some(mut annotated) = splice_member(text, &member) else {
        return raw;
    };
    if append_description && let Some(top) = diagnosis.top() {
        let hint = if top.basis == crate::diagnose::Basis::Prior {
            format!("perhaps {}; not observed, a guess", top.id)
        } else {
            top.id.to_owned()
        };
        annotated = append_hint(&annotated, &hint);
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match encoding.as_deref() {
        None => Bytes::from(annotated.into_bytes()),
        Some(encoding) => Bytes::from(oauth::encode_body(Some(encoding), annotated.as_bytes())),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    body
}

/// Adds `"grantdoctor": member` (JSON text) as the last member of a JSON object's text.
fn splice_member(text: &str, member: &str) -> Option<String> {
    // Valid JSON whose text starts with `{` and ends with `}` is one object; nothing of its
    // values is kept, so nothing is allocated for them.
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let head = text.trim_end().strip_suffix('}')?;
    let inside = head.trim_start().strip_prefix('{')?;
    let mut out = String::with_capacity(text.len() + member.len() + 16);
    out.push_str(head);
    if !inside.trim().is_empty() {
        out.push(',');
    }
    out.push_str("\"grantdoctor\":");
    out.push_str(member);
    out.push('}');
    Some(out)
}

/// `--annotate-description append`: "... (grantdoctor: <cause id>)" after the description.
fn append_hint(text: &str, hint: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return text.to_owned();
    };
    let Some(description) = value["error_description"].as_str() else {
        return text.to_owned();
    };
    let old = serde_json::to_string(description).expect("a string serialises");
    let new = serde_json::to_string(&format!("{description} (grantdoctor: {hint})"))
        .expect("a string serialises");
    text.replacen(
        &format!("\"error_description\":{old}"),
        &format!("\"error_description\":{new}"),
        1,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rendered_member_carries_the_diagnosis_and_the_catalogue() {
        let d = diagnosis();
        let text = member_text("ev_1", &d, Some(&json!({"outcome": "skipped"})));
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let meta = info(d.causes[0].id);
        assert_eq!(
            parsed,
            json!({
                "event_id": "ev_1",
                "causes": [{
                    "id": d.causes[0].id,
                    "confidence": (d.causes[0].confidence * 100.0).round() / 100.0,
                    "basis": "evidence",
                    "summary": meta.summary,
                    "evidence": d.causes[0].evidence,
                    "fix": meta.fix,
                    "docs": meta.docs,
                }],
                "recovery": {"outcome": "skipped"},
            })
        );
    }

    use super::*;
    use crate::diagnose::Finding;

    #[test]
    fn the_member_is_spliced_only_into_an_object_and_keeps_its_text() {
        let member = "{\"x\":1}";
        assert_eq!(
            splice_member(" {\"a\" : [1, {}]}\n", member).as_deref(),
            Some(" {\"a\" : [1, {}],\"grantdoctor\":{\"x\":1}}")
        );
        assert_eq!(
            splice_member("{ }", member).as_deref(),
            Some("{ \"grantdoctor\":{\"x\":1}}")
        );
        for not_an_object in ["[1]", "\"s\"", "{\"a\":1", "{\"a\":1} {}", "", "{\"a\":}"] {
            assert_eq!(
                splice_member(not_an_object, member),
                None,
                "{not_an_object}"
            );
        }
    }

    fn diagnosis() -> Diagnosis {
        Diagnosis {
            causes: vec![Finding {
                id: "sf.refresh.approval_limit_evicted",
                confidence: 0.95,
                basis: crate::diagnose::Basis::Evidence,
                evidence: vec!["5 newer refresh tokens".into()],
            }],
            ..Diagnosis::default()
        }
    }

    const BODY: &str =
        r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#;

    #[test]
    fn the_member_is_appended_and_the_original_members_are_untouched() {
        let mut headers = http::HeaderMap::new();
        let out = apply(
            &mut headers,
            Bytes::from_static(BODY.as_bytes()),
            BODY.as_bytes(),
            &Annotation {
                event_id: "ev1",
                diagnosis: &diagnosis(),
                recovery: None,
            },
            AnnotateMode::All,
            false,
        );
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with(&BODY[..BODY.len() - 1]), "{text}");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            v["grantdoctor"]["causes"][0]["id"],
            "sf.refresh.approval_limit_evicted"
        );
        assert_eq!(
            headers["grantdoctor-cause"],
            "sf.refresh.approval_limit_evicted"
        );
        assert_eq!(
            headers["grantdoctor-causes"],
            "sf.refresh.approval_limit_evicted;q=0.95"
        );
        assert_eq!(headers["grantdoctor-basis"], "evidence");
        assert_eq!(headers["content-length"], out.len().to_string().as_str());
    }

    #[test]
    fn headers_mode_leaves_the_body_byte_for_byte() {
        let mut headers = http::HeaderMap::new();
        let raw = Bytes::from_static(BODY.as_bytes());
        let out = apply(
            &mut headers,
            raw.clone(),
            BODY.as_bytes(),
            &Annotation {
                event_id: "ev1",
                diagnosis: &diagnosis(),
                recovery: None,
            },
            AnnotateMode::Headers,
            false,
        );
        assert_eq!(out, raw);
        assert!(headers.contains_key("grantdoctor-event"));
        let mut none = http::HeaderMap::new();
        assert_eq!(
            apply(
                &mut none,
                raw.clone(),
                BODY.as_bytes(),
                &Annotation {
                    event_id: "ev1",
                    diagnosis: &diagnosis(),
                    recovery: None
                },
                AnnotateMode::Off,
                false,
            ),
            raw
        );
        assert!(none.is_empty());
    }

    #[test]
    fn gzip_bodies_are_re_encoded() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let raw = Bytes::from(oauth::encode_body(Some("gzip"), BODY.as_bytes()));
        let out = apply(
            &mut headers,
            raw,
            BODY.as_bytes(),
            &Annotation {
                event_id: "ev1",
                diagnosis: &diagnosis(),
                recovery: None,
            },
            AnnotateMode::Body,
            false,
        );
        let decoded = oauth::decode_body(Some("gzip"), &out, 1 << 20).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(v["error_description"], "expired access/refresh token");
        assert!(v["grantdoctor"].is_object());
    }

    #[test]
    fn the_description_hint_is_opt_in() {
        let mut headers = http::HeaderMap::new();
        let out = apply(
            &mut headers,
            Bytes::from_static(BODY.as_bytes()),
            BODY.as_bytes(),
            &Annotation {
                event_id: "ev1",
                diagnosis: &diagnosis(),
                recovery: None,
            },
            AnnotateMode::Body,
            true,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["error_description"],
            "expired access/refresh token (grantdoctor: sf.refresh.approval_limit_evicted)"
        );
    }
}
