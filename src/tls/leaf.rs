//! Leaf certificates for intercepted hosts, minted from the local CA and cached per host.
//!
//! The lessons mitmproxy learnt the hard way: SANs typed correctly (an IP address is an IP SAN,
//! not a DNS name), an authority key id that matches the CA's subject key id, no subject key id
//! on the leaf (Windows SChannel rejects a leaf whose SKI equals the CA's), a validity short
//! enough for Apple's limits and backdated against slow clocks. Unlike mitmproxy and hudsucker,
//! leaves do not reuse the CA key: one process-wide leaf key, so a leaked leaf key cannot sign.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::{CertificateAuthority, TlsError};

const LEAF_LIFETIME: Duration = Duration::days(197);
const BACKDATE: Duration = Duration::days(2);
/// Re-mint well before expiry for long-running processes.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Mints and caches one certificate chain (leaf + CA) per host name.
pub struct LeafCertCache {
    ca: Arc<CertificateAuthority>,
    leaf_key: KeyPair,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    entries: DashMap<String, (Arc<CertifiedKey>, Instant)>,
    capacity: usize,
}

impl std::fmt::Debug for LeafCertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCertCache")
            .field("entries", &self.entries.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl LeafCertCache {
    pub fn new(ca: Arc<CertificateAuthority>, capacity: usize) -> Result<Self, TlsError> {
        let leaf_key = KeyPair::generate().map_err(|e| TlsError::Mint {
            host: "(leaf key)".into(),
            reason: e.to_string(),
        })?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing_key = super::provider().key_provider.load_private_key(der)?;
        Ok(Self {
            ca,
            leaf_key,
            signing_key,
            entries: DashMap::new(),
            capacity: capacity.max(1),
        })
    }

    /// The chain for `host`, minted on first use.
    pub fn get(&self, host: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(entry) = self.entries.get(&host)
            && entry.1.elapsed() < CACHE_TTL
        {
            return Ok(entry.0.clone());
        }
        let key = Arc::new(self.mint(&host)?);
        if self.entries.len() >= self.capacity {
            // Any victim will do: a miss costs one signature, well under a millisecond.
            let victim = self.entries.iter().next().map(|e| e.key().clone());
            if let Some(victim) = victim {
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(host, (key.clone(), Instant::now()));
        Ok(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Mints a fresh chain for `host`, bypassing the cache.
    pub fn mint(&self, host: &str) -> Result<CertifiedKey, TlsError> {
        let mint_err = |e: rcgen::Error| TlsError::Mint {
            host: host.into(),
            reason: e.to_string(),
        };
        let mut params = CertificateParams::default();
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into().map_err(mint_err)?),
        };
        params.subject_alt_names = vec![san];
        let mut name = DistinguishedName::new();
        // CN is limited to 64 characters; the SAN is what clients check anyway.
        if host.len() < 64 {
            name.push(DnType::CommonName, host);
        }
        name.push(DnType::OrganizationName, "grantdoctor");
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_LIFETIME;
        let cert = params
            .signed_by(&self.leaf_key, self.ca.issuer())
            .map_err(mint_err)?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.ca.cert_der().clone()],
            self.signing_key.clone(),
        ))
    }
}

/// A positive 128-bit serial: identical serials from one issuer make Firefox refuse a chain.
pub(crate) fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("system randomness is available");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Server-side TLS for intercepted connections: one shared configuration whose certificate is
/// chosen by SNI, so session tickets and the cache are shared by every connection.
#[derive(Clone)]
pub struct InterceptTls {
    cache: Arc<LeafCertCache>,
    by_sni: Arc<ServerConfig>,
}

impl InterceptTls {
    pub fn new(cache: Arc<LeafCertCache>) -> Result<Self, TlsError> {
        let resolver = SniResolver {
            cache: cache.clone(),
        };
        let by_sni = server_config(Arc::new(resolver))?;
        Ok(Self { cache, by_sni })
    }

    pub fn cache(&self) -> &Arc<LeafCertCache> {
        &self.cache
    }

    /// The configuration for a connection to `target`: by SNI when the client sent one,
    /// otherwise a fixed chain for the CONNECT target (clients dialling an IP send no SNI).
    pub fn config_for(
        &self,
        sni_present: bool,
        target: &str,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        if sni_present {
            return Ok(self.by_sni.clone());
        }
        let key = self.cache.get(target)?;
        server_config(Arc::new(Fixed(key)))
    }
}

fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct SniResolver {
    cache: Arc<LeafCertCache>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name()?;
        match self.cache.get(host) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(event = "mint_failed", host, reason = %e);
                None
            }
        }
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::CaFiles;

    fn cache() -> (tempfile::TempDir, LeafCertCache) {
        let dir = tempfile::tempdir().unwrap();
        let (ca, created) = CertificateAuthority::load_or_create(CaFiles::new(dir.path())).unwrap();
        assert!(created);
        (dir, LeafCertCache::new(Arc::new(ca), 4).unwrap())
    }

    fn parse(key: &CertifiedKey) -> x509_parser::certificate::X509Certificate<'_> {
        x509_parser::parse_x509_certificate(key.cert[0].as_ref())
            .unwrap()
            .1
    }

    #[test]
    fn an_ip_address_gets_an_ip_san_and_a_name_gets_a_dns_san() {
        let (_dir, cache) = cache();
        let ip = cache.mint("127.0.0.1").unwrap();
        let cert = parse(&ip);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(matches!(
            san.value.general_names[0],
            x509_parser::extensions::GeneralName::IPAddress(_)
        ));
        let name = cache.mint("login.salesforce.com").unwrap();
        let cert = parse(&name);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(matches!(
            san.value.general_names[0],
            x509_parser::extensions::GeneralName::DNSName("login.salesforce.com")
        ));
    }

    #[test]
    fn leaf_has_authority_key_id_of_the_ca_and_no_subject_key_id() {
        let (_dir, cache) = cache();
        let key = cache.mint("acme.my.salesforce.com").unwrap();
        let leaf = parse(&key);
        let ca = x509_parser::parse_x509_certificate(key.cert[1].as_ref())
            .unwrap()
            .1;
        let ca_ski = ca
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
                _ => None,
            })
            .expect("CA has a subject key id");
        let aki = leaf
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0)
                }
                _ => None,
            })
            .expect("leaf has an authority key id");
        assert_eq!(aki, ca_ski);
        let leaf_has_ski = leaf.extensions().iter().any(|e| {
            matches!(
                e.parsed_extension(),
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(_)
            )
        });
        assert!(!leaf_has_ski);
        let days = (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 199);
        assert!(
            leaf.validity().not_before.timestamp()
                < OffsetDateTime::now_utc().unix_timestamp() - 86_400
        );
    }

    #[test]
    fn leaf_key_is_not_the_ca_key_and_serials_differ() {
        let (_dir, cache) = cache();
        let a = cache.mint("a.salesforce.com").unwrap();
        let b = cache.mint("b.salesforce.com").unwrap();
        let (leaf_a, ca) = (
            parse(&a),
            x509_parser::parse_x509_certificate(a.cert[1].as_ref())
                .unwrap()
                .1,
        );
        assert_ne!(leaf_a.public_key().raw, ca.public_key().raw);
        assert_ne!(leaf_a.raw_serial(), parse(&b).raw_serial());
    }

    #[test]
    fn the_cache_returns_the_same_chain_and_stays_bounded() {
        let (_dir, cache) = cache();
        let first = cache.get("Login.Salesforce.com.").unwrap();
        let again = cache.get("login.salesforce.com").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        for i in 0..10 {
            cache.get(&format!("h{i}.force.com")).unwrap();
        }
        assert!(cache.len() <= 4);
    }

    #[test]
    fn the_ca_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = CaFiles::new(dir.path());
        CertificateAuthority::load_or_create(files.clone()).unwrap();
        let mode = std::fs::metadata(files.key()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let bundle = std::fs::read_to_string(files.bundle()).unwrap();
        let ca = std::fs::read_to_string(files.cert()).unwrap();
        assert!(bundle.ends_with(&ca));
        // Loading again reuses the same CA rather than minting a new one.
        let (_, created) = CertificateAuthority::load_or_create(files).unwrap();
        assert!(!created);
    }
}
