//! JWT bearer assertions as Salesforce checks them: RS256 only, verified against the
//! certificate uploaded on the connected app; `exp` in epoch seconds, given as a number or a
//! numeric string (simple-salesforce sends a string).

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde_json::Value;

use super::errors::{self, OAuthError};

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A decoded assertion whose signature has not been checked yet.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub alg: String,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    /// Seconds since the epoch; `None` when absent or not a number.
    pub exp: Option<f64>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWT; anything malformed is `invalid assertion` (E17).
pub fn decode(assertion: &str) -> Result<Assertion, OAuthError> {
    let bad = || errors::INVALID_ASSERTION;
    let mut parts = assertion.trim().split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let header: Value =
        serde_json::from_slice(&B64URL.decode(h).map_err(|_| bad())?).map_err(|_| bad())?;
    let claims: Value =
        serde_json::from_slice(&B64URL.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let signature = B64URL.decode(s).map_err(|_| bad())?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let aud = match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    let exp = match &claims["exp"] {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    Ok(Assertion {
        alg: header["alg"].as_str().unwrap_or_default().to_owned(),
        iss: text(&claims["iss"]),
        sub: text(&claims["sub"]),
        aud,
        exp,
        signing_input: format!("{h}.{c}").into_bytes(),
        signature,
    })
}

impl Assertion {
    /// Verifies the RS256 signature against a PEM certificate or public key.
    pub fn verify(&self, pem: &str) -> bool {
        let Some(key) = rsa_public_key(pem) else {
            return false;
        };
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
            .verify(&self.signing_input, &self.signature)
            .is_ok()
    }
}

/// The PKCS#1 RSA public key inside a PEM certificate or SubjectPublicKeyInfo.
fn rsa_public_key(pem: &str) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let spki = match block.label.as_str() {
        "CERTIFICATE" => {
            let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).ok()?;
            cert.tbs_certificate
                .subject_pki
                .subject_public_key
                .data
                .to_vec()
        }
        "PUBLIC KEY" => {
            let (_, spki) =
                x509_parser::x509::SubjectPublicKeyInfo::from_der(&block.contents).ok()?;
            spki.subject_public_key.data.to_vec()
        }
        "RSA PUBLIC KEY" => block.contents.clone(),
        _ => return None,
    };
    Some(spki)
}

/// Encodes bytes as unpadded base64url (for tests and for building assertions).
pub fn b64url(data: &[u8]) -> String {
    general_purpose::URL_SAFE_NO_PAD.encode(data)
}
