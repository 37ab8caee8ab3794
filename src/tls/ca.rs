//! The local certificate authority under `--ca-dir`: created on first run, loaded afterwards.
//!
//! Files: `ca.pem` (certificate, public), `ca-key.pem` (private key, mode 0600, never served),
//! `bundle.pem` (the system roots plus our CA, because `REQUESTS_CA_BUNDLE` and `SSL_CERT_FILE`
//! replace a client's trust store instead of adding to it).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::TlsError;

/// Where the CA's files live.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub dir: PathBuf,
}

impl CaFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle.pem")
    }
}

/// The loaded CA: what signs leaves, and its certificate for chains and for users.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    files: CaFiles,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert", &self.files.cert())
            .finish_non_exhaustive()
    }
}

/// Ten years, backdated two days so a client with a slow clock still accepts it.
const CA_LIFETIME: Duration = Duration::days(3650);
const BACKDATE: Duration = Duration::days(2);

impl CertificateAuthority {
    /// Loads the CA from `files`, creating it (and the bundle) when no certificate exists yet.
    /// Returns the CA and whether it was created now.
    pub fn load_or_create(files: CaFiles) -> Result<(Self, bool), TlsError> {
        let created = if files.cert().exists() {
            false
        } else {
            create(&files)?;
            true
        };
        let ca = Self::load(files)?;
        if !ca.files.bundle().exists() {
            ca.write_bundle()?;
        }
        Ok((ca, created))
    }

    /// Loads an existing CA; a missing or unreadable file is an error naming it.
    pub fn load(files: CaFiles) -> Result<Self, TlsError> {
        let cert_pem = read(&files.cert())?;
        let key_pem = read(&files.key())?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::BadPem {
            path: files.key().display().to_string(),
            what: "private key",
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| TlsError::BadPem {
            path: files.cert().display().to_string(),
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        let cert_der = super::load_pem_certs(&files.cert())?
            .into_iter()
            .next()
            .ok_or_else(|| TlsError::BadPem {
                path: files.cert().display().to_string(),
                what: "CA certificate",
                reason: "no CERTIFICATE block".into(),
            })?;
        Ok(Self {
            issuer,
            cert_pem,
            cert_der,
            files,
        })
    }

    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
    pub fn files(&self) -> &CaFiles {
        &self.files
    }

    /// Writes `bundle.pem`: the platform's roots followed by our CA.
    pub fn write_bundle(&self) -> Result<(), TlsError> {
        let mut out = String::new();
        // A machine without a system store still gets a bundle that trusts the proxy.
        for cert in rustls_native_certs::load_native_certs().certs {
            out.push_str(&pem_block("CERTIFICATE", cert.as_ref()));
        }
        out.push_str(&self.cert_pem);
        write_file(&self.files.bundle(), out.as_bytes(), 0o644)
    }
}

fn create(files: &CaFiles) -> Result<(), TlsError> {
    fs::create_dir_all(&files.dir).map_err(|source| TlsError::Io {
        path: files.dir.display().to_string(),
        source,
    })?;
    let key = KeyPair::generate().map_err(|e| mint_error("CA", e))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "grantdoctor");
    name.push(DnType::CommonName, "grantdoctor local CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_LIFETIME;
    params.serial_number = Some(super::leaf::random_serial());
    let cert = params.self_signed(&key).map_err(|e| mint_error("CA", e))?;
    // The key first, so a crash in between never leaves a certificate without its key.
    write_file(&files.key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&files.cert(), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn mint_error(host: &str, e: rcgen::Error) -> TlsError {
    TlsError::Mint {
        host: host.into(),
        reason: e.to_string(),
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let io_err = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let mut file = options.open(path).map_err(io_err)?;
        // `mode` applies only on creation; an existing file keeps its bits unless we set them.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err)?;
        file.write_all(data).map_err(io_err)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        options
            .open(path)
            .map_err(io_err)?
            .write_all(data)
            .map_err(io_err)
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
