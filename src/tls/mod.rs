//! Certificates: the local CA that users trust, the leaves minted from it for intercepted hosts,
//! and the trust store the upstream client verifies Salesforce against.
//!
//! Must never: serve or log the CA key, or build an upstream configuration that skips
//! certificate verification.

mod ca;
mod leaf;
mod roots;

pub use ca::{CaFiles, CertificateAuthority};
pub use leaf::{InterceptTls, LeafCertCache};
pub use roots::{load_pem_certs, server_config_from_files, upstream_client_config};

/// The one crypto provider the process uses. rcgen and rustls both build on ring here, so a
/// second provider never sneaks in through a dependency's defaults.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Errors of the certificate layer; each names the file or host it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable {what}: {reason}")]
    BadPem {
        path: String,
        what: &'static str,
        reason: String,
    },
    #[error("minting a certificate for {host}: {reason}")]
    Mint { host: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}
