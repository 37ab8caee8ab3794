//! Wiring: from parsed arguments to a running proxy, and the `ca` commands.

use std::sync::Arc;

use anyhow::Context;

use crate::cli::{CaArgs, RunArgs};
use crate::proxy::{InterceptPolicy, Proxy, ProxyOptions, ProxyState};
use crate::tls::{CaFiles, CertificateAuthority, InterceptTls, LeafCertCache};
use crate::upstream::{self, ResolveOverrides, UpstreamOptions};

/// Leaves kept in memory; each is a few hundred bytes plus the chain.
const LEAF_CACHE_CAPACITY: usize = 1024;

/// Builds everything, binds the listener and serves until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let policy = if args.intercept.is_empty() {
        InterceptPolicy::salesforce()
    } else {
        InterceptPolicy::new(&args.intercept).map_err(anyhow::Error::msg)?
    };
    let (ca, created) = CertificateAuthority::load_or_create(CaFiles::new(&args.ca_dir))
        .context("loading the CA")?;
    if created {
        tracing::info!(event = "ca_created", path = %ca.files().cert().display(), bundle = %ca.files().bundle().display());
    }
    let cache = Arc::new(LeafCertCache::new(Arc::new(ca), LEAF_CACHE_CAPACITY)?);
    let tls = InterceptTls::new(cache)?;
    let overrides = ResolveOverrides::new(&args.resolve);
    let client_tls = crate::tls::upstream_client_config(&args.upstream_ca)?;
    let options = ProxyOptions {
        connect_ports: args.connect_ports.clone(),
        ..ProxyOptions::default()
    };
    let client = upstream::client(client_tls, overrides.clone(), &UpstreamOptions::default());
    let state = Arc::new(ProxyState::new(policy, tls, overrides, client, options));
    let proxy = Proxy::bind(args.listen, state)
        .await
        .with_context(|| format!("binding the proxy listener on {}", args.listen))?;
    let addr = proxy.local_addr()?;
    tracing::info!(event = "listening", addr = %addr, ca = %args.ca_dir.join("ca.pem").display());
    proxy.run(shutdown_signal()).await;
    tracing::info!(event = "stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
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
