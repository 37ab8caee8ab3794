//! The trust anchors for the upstream side: webpki roots plus any `--upstream-ca` files.
//! There is deliberately no way to switch verification off.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::TlsError;

/// Reads every certificate in a PEM file; a file with none is an error.
pub fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::BadPem {
        path: path.display().to_string(),
        what: "PEM certificate file",
        reason,
    };
    let data = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The client configuration for connections to upstream origins: verified against webpki
/// roots and the extra anchors. ALPN is left to the HTTP connector.
pub fn upstream_client_config(
    extra_anchors: &[impl AsRef<Path>],
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in extra_anchors {
        let path = path.as_ref();
        for cert in load_pem_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::BadPem {
                path: path.display().to_string(),
                what: "trust anchor",
                reason: e.to_string(),
            })?;
        }
    }
    Ok(ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth())
}

/// A server configuration from a PEM chain and key (HTTP/1.1 and h2 by ALPN).
pub fn server_config_from_files(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls_pki_types::PrivateKeyDer;
    let chain = load_pem_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::BadPem {
        path: key.display().to_string(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
