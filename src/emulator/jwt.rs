//! JWT bearer assertions as Salesforce checks them: RS256 only, verified against the
//! certificate uploaded on the connected app; `exp` in epoch seconds, given as a number or a
//! numeric string (simple-salesforce sends a string).

use crate::oauth::jwt::{audiences, decode_parts, number_claim};

use super::errors::{self, OAuthError};

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
    let parts = decode_parts(assertion).ok_or(errors::INVALID_ASSERTION)?;
    let text = |name: &str| parts.claims[name].as_str().map(str::to_owned);
    Ok(Assertion {
        alg: parts.header["alg"].as_str().unwrap_or_default().to_owned(),
        iss: text("iss"),
        sub: text("sub"),
        aud: audiences(&parts.claims),
        exp: number_claim(&parts.claims, "exp"),
        signing_input: parts.signing_input.into_bytes(),
        signature: parts.signature,
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

/// Encodes bytes as unpadded base64url.
pub fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    crate::oauth::jwt::B64URL.encode(data)
}
