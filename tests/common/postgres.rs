//! A throwaway PostgreSQL cluster from Debian's `postgresql` package: initdb into a temp dir
//! (as the package's unprivileged `postgres` user when the tests run as root, since the
//! server refuses root), a free loopback port, password authentication, stopped when dropped.
//!
//! Missing server: a test that needs one fails with "NOT RUN", in CI and elsewhere; it never passes unrun.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const USER: &str = "grantdoctor";
/// The database password the tests use; they grep logs and dumps for it.
pub const PASSWORD: &str = "pg-pass-Qx81vZ";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Run the server's tools as this user (root cannot run the server).
    run_as: Option<String>,
    /// Server options for TLS, when started with [`Postgres::start_tls`].
    tls: Option<String>,
}

/// Where the server's tools are: Debian's versioned directory, or the PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Why a test that needs PostgreSQL did not run.
const MISSING: &str = "NOT RUN, counted as failed: PostgreSQL is not installed (apt-get install postgresql, or run bash .ci/run, which installs Debian's package)";

impl Postgres {
    /// Starts a cluster. A test that needs one fails, never passes unrun, where PostgreSQL is
    /// not installed: in CI and everywhere else.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|| panic!("{MISSING}"))
    }

    /// The same with TLS on, its certificate (for `localhost` and 127.0.0.1) signed by a
    /// throwaway CA whose PEM is [`Postgres::ca_pem`].
    pub fn start_tls() -> Self {
        Self::start_with(true).unwrap_or_else(|| panic!("{MISSING}"))
    }

    /// A cluster, or `None` where PostgreSQL is not installed (for the benchmarks, which
    /// report a row as not run).
    pub fn try_start() -> Option<Self> {
        Self::start_with(false)
    }

    /// The CA that signed the server's certificate (TLS clusters only).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(tls: bool) -> Option<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir().unwrap();
        let run_as = is_root().then(|| "postgres".to_owned());
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        std::fs::create_dir(dir.path().join("sock")).unwrap();
        let tls = tls.then(|| {
            use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name
                .push(rcgen::DnType::CommonName, "test database CA");
            std::fs::write(
                dir.path().join("ca.pem"),
                ca.self_signed(&ca_key).unwrap().pem(),
            )
            .unwrap();
            let issuer = Issuer::new(ca, ca_key);
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            let (crt, pem) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&crt, cert.pem()).unwrap();
            std::fs::write(&pem, key.serialize_pem()).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).unwrap();
            format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                crt.display(),
                pem.display()
            )
        });
        if let Some(user) = &run_as {
            let chown = Command::new("chown")
                .args(["-R", &format!("{user}:"), &dir.path().display().to_string()])
                .status()
                .unwrap();
            assert!(chown.success(), "chown of the cluster directory");
        }
        let pg = Self {
            bin,
            port: free_port(),
            run_as,
            tls,
            dir,
        };
        let data = pg.data().display().to_string();
        let init = pg.tool(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                USER,
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
            ],
        );
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        pg.start_server();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(name);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("setpriv");
                cmd.args([
                    &format!("--reuid={user}"),
                    &format!("--regid={user}"),
                    "--init-groups",
                ])
                .arg(&exe);
                cmd
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(self.dir.path());
        cmd.output().unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Starts (or restarts) the server on the same port.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200{}",
            self.port,
            self.dir.path().join("sock").display(),
            self.tls.as_deref().unwrap_or("")
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data().display().to_string();
        let started = self.tool(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
        assert!(
            started.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server at once (connections are cut, as when a database goes away).
    pub fn stop_server(&self) {
        let data = self.data().display().to_string();
        let stopped = self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        assert!(stopped.status.success(), "pg_ctl stop");
    }

    /// `postgres://grantdoctor:…@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A client tool of the server's version, logged in as the test user.
    fn client(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new(self.bin.join(name))
            .env("PGPASSWORD", PASSWORD)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `psql -c sql` and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.client("psql", &["-d", "postgres", "-At", "-c", sql])
    }

    /// Starts `psql -c sql` without waiting for it (a session that holds a lock a while).
    pub fn psql_in_background(&self, sql: &str) -> std::process::Child {
        Command::new(self.bin.join("psql"))
            .env("PGPASSWORD", PASSWORD)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", "postgres", "-At", "-c", sql])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Every table's content, as `pg_dump` writes it.
    pub fn dump(&self) -> String {
        self.client("pg_dump", &["postgres"])
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
