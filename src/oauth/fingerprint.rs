//! Keyed fingerprints: HMAC-SHA256 with a per-install secret, so a fingerprint in a log or the
//! ledger identifies a token across requests without being reversible or guessable.

use std::path::Path;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Fingerprints secrets with the install's key.
#[derive(Clone)]
pub struct Fingerprinter {
    key: hmac::Key,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(..)")
    }
}

impl Fingerprinter {
    /// Loads the key from `<data_dir>/fingerprint.key`, creating it (mode 0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("fingerprint.key");
        let key = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: expected 32 bytes", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)?;
                let mut bytes = vec![0u8; 32];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| std::io::Error::other("no system randomness"))?;
                write_private(&path, &bytes)?;
                bytes
            }
            Err(e) => return Err(e),
        };
        Ok(Self::from_key(&key))
    }

    pub fn from_key(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// A key that lives only as long as the process (tests, `explain`).
    pub fn ephemeral() -> Self {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("system randomness is available");
        Self::from_key(&bytes)
    }

    /// `fp_` followed by 16 hex digits (64 bits of the HMAC).
    /// A value that tells whether two processes hold the same key, without revealing it:
    /// replicas sharing a store compare it.
    pub fn check(&self) -> String {
        self.fingerprint("grantdoctor fingerprint key check")
    }

    pub fn fingerprint(&self, secret: &str) -> String {
        let tag = hmac::sign(&self.key, secret.as_bytes());
        let hex: String = tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("fp_{hex}")
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// A consumer key shortened for logs: its first 8 and last 4 characters.
pub fn short_client_id(client_id: &str) -> String {
    if client_id.len() <= 16 || !client_id.is_ascii() {
        return client_id.to_owned();
    }
    format!("{}…{}", &client_id[..8], &client_id[client_id.len() - 4..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_per_key_and_differ_across_keys() {
        let a = Fingerprinter::from_key(&[1; 32]);
        let b = Fingerprinter::from_key(&[2; 32]);
        assert_eq!(a.fingerprint("5Aep861x"), a.fingerprint("5Aep861x"));
        assert_ne!(a.fingerprint("5Aep861x"), b.fingerprint("5Aep861x"));
        assert_ne!(a.fingerprint("5Aep861x"), a.fingerprint("5Aep861y"));
        assert_eq!(a.fingerprint("x").len(), 19);
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = Fingerprinter::load_or_create(dir.path()).unwrap();
        let again = Fingerprinter::load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint("t"), again.fingerprint("t"));
        let mode = std::fs::metadata(dir.path().join("fingerprint.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn long_client_ids_are_shortened() {
        assert_eq!(
            short_client_id("3MVG9abcdefghijklmnopqrstuvwxyz1234"),
            "3MVG9abc…1234"
        );
        assert_eq!(short_client_id("3MVG9web"), "3MVG9web");
    }
}
