//! Wiring: from parsed arguments to a running proxy (its start-up steps in `start`), and
//! the `ca` commands.

use std::sync::Arc;

use anyhow::Context;

use crate::cli::{CaArgs, EmulateArgs, RunArgs};
use crate::proxy::InterceptPolicy;
use crate::tls::{CaFiles, CertificateAuthority, InterceptTls, LeafCertCache};
use crate::upstream::{self, ResolveOverrides, UpstreamOptions};

mod start;

pub use start::serve;

/// Leaves kept in memory; each is a few hundred bytes plus the chain.
const LEAF_CACHE_CAPACITY: usize = 1024;

/// Builds everything, binds the listener and serves until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    serve(args, shutdown_signal()?, |_, _| {}).await
}

/// Runs the emulator until SIGINT or SIGTERM.
pub async fn emulate(args: EmulateArgs) -> anyhow::Result<()> {
    serve_emulator(args, shutdown_signal()?, |_| {}).await
}

/// Serves the emulator until `shutdown`; `ready` gets its address once bound.
pub async fn serve_emulator(
    args: EmulateArgs,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the scenario {}", path.display()))?;
            let mut scenario: crate::emulator::model::Scenario =
                toml::from_str(&text).with_context(|| format!("scenario {}", path.display()))?;
            let base = path.parent().unwrap_or(std::path::Path::new("."));
            for app in &mut scenario.apps {
                if let Some(cert) = app.jwt_certificate.as_mut()
                    && !cert.trim_start().starts_with("-----BEGIN")
                {
                    let file = base.join(cert.trim());
                    *cert = std::fs::read_to_string(&file)
                        .with_context(|| format!("jwt_certificate {}", file.display()))?;
                }
            }
            scenario
        }
        None => crate::emulator::model::Scenario::default(),
    };
    let emulator = crate::emulator::Emulator::from_scenario(scenario)
        .map_err(|e| anyhow::anyhow!("scenario: {e}"))?
        .shared();
    let tls = match (&args.cert, &args.key) {
        _ if args.plain => None,
        (Some(cert), Some(key)) => Some(crate::emulator::server::ServerTls::Files(
            crate::tls::server_config_from_files(cert, key)?,
        )),
        _ => {
            let (ca, _) = CertificateAuthority::load_or_create(CaFiles::new(&args.ca_dir))
                .context("loading the emulator's CA")?;
            let cache = Arc::new(LeafCertCache::new(Arc::new(ca), LEAF_CACHE_CAPACITY)?);
            Some(crate::emulator::server::ServerTls::Minted(
                InterceptTls::new(cache)?,
            ))
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the emulator on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        event = "listening",
        addr = %addr,
        scheme = if args.plain { "http" } else { "https" },
        ca = %args.ca_dir.join("ca.pem").display()
    );
    ready(addr);
    crate::emulator::server::serve(listener, emulator, tls, shutdown).await;
    Ok(())
}

/// SIGINT or SIGTERM. The handlers are installed now, not when the future is first polled
/// (after the `listening` line): a supervisor that stops the process right after it reports
/// ready gets a drained exit 0, not death by the signal's default action.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

pub fn ca_init(args: &CaArgs) -> anyhow::Result<()> {
    let (ca, created) = CertificateAuthority::load_or_create(CaFiles::new(&args.ca_dir))?;
    println!(
        "{} {}",
        if created { "created" } else { "exists:" },
        ca.files().cert().display()
    );
    Ok(())
}

pub fn ca_show(args: &CaArgs) -> anyhow::Result<()> {
    let ca = CertificateAuthority::load(CaFiles::new(&args.ca_dir))?;
    let der = ca.cert_der();
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let fingerprint = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| anyhow::anyhow!("parsing {}: {e}", ca.files().cert().display()))?;
    println!("certificate: {}", ca.files().cert().display());
    println!("bundle:      {}", ca.files().bundle().display());
    println!("subject:     {}", cert.subject());
    println!("sha256:      {fingerprint}");
    println!("not before:  {}", cert.validity().not_before);
    println!("not after:   {}", cert.validity().not_after);
    Ok(())
}

/// `grantdoctor doctor`: the findings of every configured org; error-level findings exit 1.
pub async fn doctor(args: crate::cli::RunArgs, json: bool) -> anyhow::Result<()> {
    if args.orgs.is_empty() {
        anyhow::bail!(crate::cli::UsageError(
            "no org connection configured: add [[orgs]] tables to the configuration file".into()
        ));
    }
    let tls = crate::tls::upstream_client_config(&args.upstream_ca)?;
    let overrides = ResolveOverrides::new(&args.resolve);
    let client = upstream::client(
        tls,
        overrides,
        upstream::OwnListeners::default(),
        &UpstreamOptions::default(),
    );
    let orgs = crate::org::Orgs::load(&args.orgs, client, Arc::default())
        .map_err(|e| anyhow::Error::new(crate::cli::UsageError(e.to_string())))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let findings = crate::doctor::examine(&orgs, args.approval_limit as usize, now).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        print!("{}", crate::doctor::render(&findings));
    }
    let errors = findings
        .iter()
        .filter(|f| f.level == crate::doctor::Level::Error)
        .count();
    if errors > 0 {
        anyhow::bail!("{errors} finding(s) at error level");
    }
    Ok(())
}

pub fn explain(args: crate::cli::ExplainArgs) -> anyhow::Result<()> {
    crate::explain::run(args)
}

pub fn logs(args: crate::cli::LogsArgs) -> anyhow::Result<()> {
    crate::logs::run(args)
}

/// The per-runtime instructions of `ca trust`: which variable or store, and why (some replace
/// the trust store, some add to it; some ignore `HTTPS_PROXY`).
pub fn ca_trust(args: &crate::cli::TrustArgs) -> anyhow::Result<()> {
    let (ca, _) = CertificateAuthority::load_or_create(CaFiles::new(&args.ca.ca_dir))?;
    let absolute =
        |p: std::path::PathBuf| std::fs::canonicalize(&p).unwrap_or(p).display().to_string();
    let ca_pem = absolute(ca.files().cert());
    let bundle = absolute(ca.files().bundle());
    let proxy = format!("http://{}", args.listen);
    let (host, port) = (args.listen.ip(), args.listen.port());
    print!(
        "\
# grantdoctor CA: {ca_pem}
# bundle (system roots + the CA): {bundle}
# Variables that *replace* the trust store get the bundle; ones that *add* get the CA.

# Every client that honours the proxy variables
export HTTPS_PROXY={proxy}

# curl
curl --cacert {bundle} https://login.salesforce.com/...      # or: export CURL_CA_BUNDLE={bundle}

# Python requests, simple-salesforce (certifi replaces the system store)
export REQUESTS_CA_BUNDLE={bundle}

# Go, OpenSSL-based tools
export SSL_CERT_FILE={bundle}

# Node, every version: the CA (adds to the built-in roots)
export NODE_EXTRA_CA_CERTS={ca_pem}
# Node 20 and 22: neither the built-in fetch nor the https module reads HTTPS_PROXY; give
# the client an agent that does (jsforce: its httpProxy option):
#   axios: honours HTTPS_PROXY itself
#   undici: setGlobalDispatcher(new EnvHttpProxyAgent())    (also covers the built-in fetch)
#   https / node-fetch / got: new HttpsProxyAgent(process.env.HTTPS_PROXY)  (https-proxy-agent)
# Node >= 24 only: the built-in fetch reads HTTPS_PROXY when asked to
export NODE_USE_ENV_PROXY=1    # Node >= 24; ignored by Node 20 and 22

# Java ignores HTTPS_PROXY: import the CA into the JDK's store (keeping its roots; a
# truststore holding only ca.pem would replace them) and pass the proxy as system properties
keytool -importcert -cacerts -noprompt -alias grantdoctor -file {ca_pem} -storepass changeit
java -Dhttps.proxyHost={host} -Dhttps.proxyPort={port} ...
# ... with --proxy-auth, also: -Djdk.http.auth.tunneling.disabledSchemes=

# Debian / Ubuntu system store
sudo cp {ca_pem} /usr/local/share/ca-certificates/grantdoctor.crt && sudo update-ca-certificates

# macOS keychain
sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca_pem}
"
    );
    Ok(())
}

/// `check-config`: everything `run` validates before binding, then the effective values with
/// where each came from.
pub fn check_config(args: RunArgs, provenance: &crate::config::Provenance) -> anyhow::Result<()> {
    let usage = |e: String| anyhow::Error::new(crate::cli::UsageError(e));
    if !args.intercept.is_empty() {
        InterceptPolicy::new(&args.intercept).map_err(|e| usage(e.to_string()))?;
    }
    crate::proxy::AccessPolicy::new(args.proxy_auth.as_deref(), args.allow_clients.clone())
        .map_err(|e| usage(e.to_string()))?
        .check_listener(args.listen)
        .map_err(|e| usage(e.to_string()))?;
    crate::tls::upstream_client_config(&args.upstream_ca)
        .map_err(|e| usage(format!("--upstream-ca: {e}")))?;
    recovery(&args)?;
    crate::webhook::configured(&args)?;
    let data = usable_dir(&args.data_dir).map_err(|e| anyhow::anyhow!("--data-dir {e}"))?;
    let ca = usable_ca_dir(&args.ca_dir)?;
    let mut out = crate::config::render_with_sources(&args, provenance);
    out.push_str(&format!("# data_dir {}: {data}\n", args.data_dir.display()));
    out.push_str(&format!("# ca_dir {}: {ca}\n", args.ca_dir.display()));
    to_stdout(out.as_bytes())
}

/// Writes a command's whole output; a reader that went away (`| head`) is not an error.
pub fn to_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Whether `dir` can hold files `run` writes: it exists and is writable, or the nearest
/// directory that exists above it is (then `run` creates it). Says which, or why not.
fn usable_dir(dir: &std::path::Path) -> Result<String, String> {
    use rustix::fs::{Access, access};
    let shown = dir.display();
    let writable = |path: &std::path::Path| {
        access(path, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| {
            format!(
                "{}: not writable ({})",
                path.display(),
                std::io::Error::from(e)
            )
        })
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => writable(dir).map(|()| "exists, writable".to_owned()),
        Ok(_) => Err(format!("{shown}: not a directory")),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            let parent = dir
                .ancestors()
                .skip(1)
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        std::path::Path::new(".")
                    } else {
                        p
                    }
                })
                .find(|p| std::fs::symlink_metadata(p).is_ok())
                .unwrap_or(std::path::Path::new("."));
            if !parent.is_dir() {
                return Err(format!(
                    "{shown}: cannot be created: {} is not a directory",
                    parent.display()
                ));
            }
            writable(parent)
                .map(|()| format!("will be created (in {})", parent.display()))
                .map_err(|e| format!("{shown}: cannot be created: {e}"))
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

/// The CA directory as `run` will use it: an existing CA must load (a mounted Secret is often
/// read-only, so only a missing bundle.pem needs the directory writable); a missing one needs a
/// directory where it can be created.
fn usable_ca_dir(dir: &std::path::Path) -> anyhow::Result<String> {
    let files = CaFiles::new(dir);
    if !files.cert().exists() {
        return usable_dir(dir)
            .map(|state| format!("{state}; the CA is created on first run"))
            .map_err(|e| anyhow::anyhow!("--ca-dir {e}"));
    }
    CertificateAuthority::load(files.clone()).context("loading the CA")?;
    if files.bundle().exists() {
        return Ok("CA readable".into());
    }
    usable_dir(dir)
        .map(|_| "CA readable; bundle.pem is written on first run".into())
        .map_err(|e| anyhow::anyhow!("--ca-dir {e} (bundle.pem is missing and run writes it)"))
}

/// The JWT bearer recovery of the configuration, its keys loaded; `None` when none is set.
fn recovery(args: &RunArgs) -> Result<Option<crate::recover::Recovery>, crate::cli::UsageError> {
    if args.jwt_bearer.is_empty() {
        return Ok(None);
    }
    crate::recover::Recovery::new(
        &args.jwt_bearer,
        std::time::Duration::from_secs(args.recovery_reuse),
        std::time::Duration::from_secs(args.recovery_cooldown),
    )
    .map(Some)
    .map_err(|e| crate::cli::UsageError(e.to_string()))
}
