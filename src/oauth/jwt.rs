//! Compact JWT decoding without verification: the header and claims as JSON. Used to read an
//! assertion's claims for diagnosis (never to trust them) and by the emulator before it
//! verifies the signature itself.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

/// base64url, padded or not: clients differ.
pub const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The decoded parts of a compact JWT.
#[derive(Debug, Clone)]
pub struct JwtParts {
    pub header: Value,
    pub claims: Value,
    pub signature: Vec<u8>,
    /// `header.claims` as sent, the input of the signature.
    pub signing_input: String,
}

/// Splits and decodes; `None` when it is not three base64url parts with JSON objects.
pub fn decode_parts(assertion: &str) -> Option<JwtParts> {
    let mut parts = assertion.trim().split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let header: Value = serde_json::from_slice(&B64URL.decode(h).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&B64URL.decode(c).ok()?).ok()?;
    if !header.is_object() || !claims.is_object() {
        return None;
    }
    Some(JwtParts {
        header,
        claims,
        signature: B64URL.decode(s).ok()?,
        signing_input: format!("{h}.{c}"),
    })
}

/// `aud` as a list (a string or an array of strings).
pub fn audiences(claims: &Value) -> Vec<String> {
    match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// `exp` in seconds as a number, accepting a numeric string (simple-salesforce sends one).
pub fn number_claim(claims: &Value, name: &str) -> Option<f64> {
    match &claims[name] {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}
