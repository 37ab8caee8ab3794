//! JWT bearer assertions as Salesforce requires them (Salesforce's JWT bearer flow documentation): RS256, `iss` the
//! consumer key, `sub` the username, `aud` the login, test, My Domain or site URL, `exp` in
//! epoch seconds no more than three minutes ahead.
//!
//! Must never: put the assertion or the key anywhere but the request that carries it.

use serde::Serialize;

/// Seconds an assertion stays valid: well inside Salesforce's documented three minutes.
pub const LIFETIME_SECS: u64 = 120;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

/// The audience for a token endpoint host: its own origin, which Salesforce accepts for
/// login, test and My Domain hosts (and requires for external client apps, E20).
pub fn audience_for(host: &str) -> String {
    format!("https://{host}")
}

/// Signs an assertion valid until `now_secs + LIFETIME_SECS`.
pub fn mint(
    key: &jsonwebtoken::EncodingKey,
    client_id: &str,
    subject: &str,
    audience: &str,
    now_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        iss: client_id,
        sub: subject,
        aud: audience,
        exp: now_secs + LIFETIME_SECS,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        key,
    )
}

/// Why a private key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Unreadable {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an RSA private key in PEM (PKCS#8 or PKCS#1): {source}", path.display())]
    NotRsa {
        path: std::path::PathBuf,
        source: jsonwebtoken::errors::Error,
    },
}

/// Reads an RSA private key (PEM, PKCS#8 or PKCS#1) and proves it can sign.
pub fn load_key(path: &std::path::Path) -> Result<jsonwebtoken::EncodingKey, KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let unusable = |source| KeyError::NotRsa {
        path: path.to_owned(),
        source,
    };
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).map_err(unusable)?;
    // Parsing accepts some PEM that cannot sign (a certificate, say); one signature proves it.
    mint(&key, "check", "check", "https://login.salesforce.com", 0).map_err(unusable)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name)
    }

    #[test]
    fn an_assertion_carries_the_documented_claims_and_verifies_against_the_certificate() {
        let key = load_key(&fixture("app-private.pem")).unwrap();
        let jwt = mint(
            &key,
            "3MVGclient",
            "alice@acme.com",
            "https://login.salesforce.com",
            1_700_000_000,
        )
        .unwrap();
        let parts = crate::oauth::jwt::decode_parts(&jwt).unwrap();
        assert_eq!(parts.header["alg"], "RS256");
        assert_eq!(parts.claims["iss"], "3MVGclient");
        assert_eq!(parts.claims["sub"], "alice@acme.com");
        assert_eq!(parts.claims["aud"], "https://login.salesforce.com");
        assert_eq!(parts.claims["exp"], 1_700_000_000u64 + LIFETIME_SECS);
        let cert = std::fs::read_to_string(fixture("app-cert.pem")).unwrap();
        let other = std::fs::read_to_string(fixture("other-cert.pem")).unwrap();
        let assertion = crate::emulator::jwt::decode(&jwt).unwrap();
        assert!(assertion.verify(&cert));
        assert!(!assertion.verify(&other));
    }

    #[test]
    fn a_file_that_is_not_a_key_is_refused_with_its_path() {
        let err = load_key(&fixture("app-cert.pem"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("app-cert.pem") && err.contains("not an RSA private key"),
            "{err}"
        );
        assert!(
            load_key(&fixture("missing.pem"))
                .err()
                .unwrap()
                .to_string()
                .contains("missing.pem")
        );
    }
}
