//! `--store`: where the ledger lives. `sqlite` is the embedded database under `--data-dir`
//! (one process); `postgres://user:password@host:port/database` is a PostgreSQL database that
//! several replicas share.
//!
//! Must never: show the password. The URL is kept whole only to connect; errors and
//! `check-config` show `postgres://user:****@host:port/database`.

use std::str::FromStr;

/// The value of `--store`, as given; checked by [`StoreUrl::target`].
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl Default for StoreUrl {
    fn default() -> Self {
        Self("sqlite".into())
    }
}

impl FromStr for StoreUrl {
    /// Never fails here: a parse error from the argument parser would print the password.
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for StoreUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(String::deserialize(d)?.trim().to_owned()))
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// Where the ledger lives.
#[derive(Debug)]
pub enum Target {
    Sqlite,
    Postgres(Box<PgTarget>),
}

/// How the connection to PostgreSQL is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// `sslmode=disable` or none given: plain TCP (a database on loopback or in the pod's
    /// network).
    Off,
    /// `sslmode=require`, `verify-ca` or `verify-full`: TLS, the server's certificate verified
    /// against the system roots and `store_ca`, host name included, whichever of the three
    /// is named (libpq's `require` would not verify; a credential store must).
    Verified,
}

/// A checked PostgreSQL URL.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
    shown: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgTarget {
    /// `postgres://user:****@host:port/database`.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// Why a `--store` URL is refused; never with the URL itself, which holds a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error(
        "expected `sqlite` or postgres://user:password@host:port/database (the URL is not shown: it holds a password)"
    )]
    Scheme,
    #[error("sslmode `{0}`: expected disable, require, verify-ca or verify-full")]
    SslMode(String),
    #[error(
        "not a valid postgres://user:password@host:port/database URL (the URL is not shown: it holds a password)"
    )]
    Malformed,
    #[error("the store URL names no host (the URL is not shown: it holds a password)")]
    NoHost,
}

impl StoreUrl {
    pub fn is_sqlite(&self) -> bool {
        self.0.is_empty() || self.0 == "sqlite"
    }

    /// `sqlite`, or the PostgreSQL URL with its password masked.
    pub fn shown(&self) -> String {
        match self.target() {
            Ok(Target::Sqlite) => "sqlite".into(),
            Ok(Target::Postgres(pg)) => pg.shown.clone(),
            Err(_) => "(not a valid store URL)".into(),
        }
    }

    /// The store this URL names, checked.
    pub fn target(&self) -> Result<Target, StoreUrlError> {
        if self.is_sqlite() {
            return Ok(Target::Sqlite);
        }
        let Some(rest) = self
            .0
            .strip_prefix("postgres://")
            .or_else(|| self.0.strip_prefix("postgresql://"))
        else {
            return Err(StoreUrlError::Scheme);
        };
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut tls = Tls::Off;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", mode)) => {
                    tls = match mode {
                        "disable" => Tls::Off,
                        "require" | "verify-ca" | "verify-full" => Tls::Verified,
                        other => return Err(StoreUrlError::SslMode(other.to_owned())),
                    }
                }
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            format!("postgres://{base}")
        } else {
            format!("postgres://{base}?{}", kept.join("&"))
        };
        let mut config =
            tokio_postgres::Config::from_str(&url).map_err(|_| StoreUrlError::Malformed)?;
        config.ssl_mode(match tls {
            Tls::Off => tokio_postgres::config::SslMode::Disable,
            Tls::Verified => tokio_postgres::config::SslMode::Require,
        });
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => return Err(StoreUrlError::NoHost),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("").to_owned();
        let password = if config.get_password().is_some() {
            ":****"
        } else {
            ""
        };
        let db = config.get_dbname().unwrap_or(&user).to_owned();
        let mode = match tls {
            Tls::Off => "",
            Tls::Verified => "?sslmode=verify-full",
        };
        let shown = format!("postgres://{user}{password}@{host}:{port}/{db}{mode}");
        Ok(Target::Postgres(Box::new(PgTarget { config, tls, shown })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> StoreUrl {
        s.parse().unwrap()
    }

    #[test]
    fn the_password_is_never_shown() {
        let store = url("postgres://gd:s3cret-pw@db.internal:5433/ledger?sslmode=require");
        assert_eq!(
            store.shown(),
            "postgres://gd:****@db.internal:5433/ledger?sslmode=verify-full"
        );
        assert!(!format!("{store:?} {store}").contains("s3cret-pw"));
        let Ok(Target::Postgres(pg)) = store.target() else {
            panic!("a postgres target")
        };
        assert_eq!(pg.tls, Tls::Verified);
        assert!(!format!("{pg:?}").contains("s3cret-pw"));
    }

    #[test]
    fn bad_urls_are_refused_without_their_password() {
        for bad in [
            "mysql://u:s3cret-pw@h/db",
            "postgres://u:s3cret-pw@h/db?sslmode=prefer",
            "postgres://u:s3cret-pw@h:notaport/db",
        ] {
            let err = url(bad).target().unwrap_err().to_string();
            assert!(!err.contains("s3cret-pw"), "{err}");
        }
        assert!(matches!(url("sqlite").target(), Ok(Target::Sqlite)));
        assert!(matches!(url("").target(), Ok(Target::Sqlite)));
    }
}
