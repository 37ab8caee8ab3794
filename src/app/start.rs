//! Starting the proxy: from the parsed `run` arguments to a serving proxy and admin port,
//! one named step at a time, and the drain when `shutdown` comes.
//!
//! Must never: bind a listener before the data directory is locked and the ledger is open,
//! or open the proxy listener before webhooks subscribe (the first exchange's alert would
//! be lost). The steps run in the order `serve` calls them; each logs what it always has.

use std::sync::Arc;

use anyhow::Context;

use super::{LEAF_CACHE_CAPACITY, recovery};
use crate::cli::RunArgs;
use crate::proxy::{InterceptPolicy, Proxy, ProxyOptions, ProxyState};
use crate::tls::{CaFiles, CertificateAuthority, InterceptTls, LeafCertCache};
use crate::upstream::{self, ResolveOverrides, UpstreamOptions};

/// Serves until `shutdown`; `ready` gets the proxy and admin addresses once both are bound.
pub async fn serve(
    args: RunArgs,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr, std::net::SocketAddr),
) -> anyhow::Result<()> {
    // First, before anything under the data directory is read or written.
    let data_lock = crate::data_lock::acquire(&args.data_dir)?;
    tracing::debug!(event = "data_dir_locked", lock = %data_lock.path().display());
    let Interception {
        policy,
        ca_pem,
        tls,
        overrides,
        client_tls,
    } = interception(&args)?;
    let options = proxy_options(&args);
    let access = access_policy(&args)?;
    let recovery = recovery(&args).map_err(anyhow::Error::new)?;
    let own = upstream::OwnListeners::default();
    let client = upstream::client(
        client_tls,
        overrides.clone(),
        own.clone(),
        &UpstreamOptions::default(),
    );
    let (mut observer, health) = open_observer(&args).await?;
    start_outbound(&args, &mut observer, &client)?;
    configure_token_path(&args, &mut observer, recovery);
    let metrics = observer.metrics.clone();
    // Shared with the admin port, which reads the ledger for the page's token families.
    let observer = Arc::new(observer);
    share_rates(&observer);
    let mut state = ProxyState::new(
        policy,
        tls,
        overrides,
        client,
        observer.clone(),
        options,
        crate::diagnose::metric_class,
    );
    state.access = access;
    state.gateway = args.gateway.clone();
    state.health = health;
    state.own_addrs = own;
    let state = Arc::new(state);
    let proxy = Proxy::bind(args.listen, state)
        .await
        .with_context(|| format!("binding the proxy listener on {}", args.listen))?;
    let admin = start_admin(&args, &proxy, metrics, ca_pem, observer).await?;
    let addr = proxy.local_addr()?;
    tracing::info!(event = "listening", addr = %addr, admin = %admin.addr, ca = %args.ca_dir.join("ca.pem").display());
    ready(addr, admin.addr);
    proxy.run(shutdown).await;
    admin.task.abort();
    tracing::info!(event = "stopped");
    drop(data_lock);
    Ok(())
}

/// What interception needs: which hosts, the CA's leaves for them, and how upstream is
/// reached.
struct Interception {
    policy: InterceptPolicy,
    /// Served on the admin port, for clients to fetch the CA they must trust.
    ca_pem: String,
    tls: InterceptTls,
    overrides: ResolveOverrides,
    client_tls: rustls::ClientConfig,
}

/// The intercept policy, the CA (created on first run) and the upstream TLS configuration.
fn interception(args: &RunArgs) -> anyhow::Result<Interception> {
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
    let ca_pem = ca.cert_pem().to_owned();
    let cache = Arc::new(LeafCertCache::new(Arc::new(ca), LEAF_CACHE_CAPACITY)?);
    let tls = InterceptTls::new(cache)?;
    let overrides = ResolveOverrides::new(&args.resolve);
    let client_tls = crate::tls::upstream_client_config(&args.upstream_ca)?;
    Ok(Interception {
        policy,
        ca_pem,
        tls,
        overrides,
        client_tls,
    })
}

/// The listener's limits and timeouts; zeroes that would stall every connection are raised
/// to 1, and the connection cap is fitted under the descriptor limit.
fn proxy_options(args: &RunArgs) -> ProxyOptions {
    let mut options = ProxyOptions {
        connect_ports: args.connect_ports.clone(),
        max_connections: args.max_connections.max(1),
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout),
        header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout.max(1)),
        response_timeout: std::time::Duration::from_secs(args.response_timeout.max(1)),
        max_header_bytes: args.max_header_bytes,
        ..ProxyOptions::default()
    };
    options.max_connections = descriptor_budget(options.max_connections);
    options
}

/// Who may use the proxy; refused before binding when anyone on the network could use it.
fn access_policy(args: &RunArgs) -> anyhow::Result<crate::proxy::AccessPolicy> {
    let access =
        crate::proxy::AccessPolicy::new(args.proxy_auth.as_deref(), args.allow_clients.clone())
            .map_err(|e| anyhow::Error::new(crate::cli::UsageError(e.to_string())))?;
    access
        .check_listener(args.listen)
        .map_err(|e| anyhow::Error::new(crate::cli::UsageError(e.to_string())))?;
    Ok(access)
}

/// The token path's observer with its ledger open, and the readiness the ledger reports to.
async fn open_observer(
    args: &RunArgs,
) -> anyhow::Result<(crate::token_endpoint::Observer, Arc<crate::health::Health>)> {
    let fingerprints = crate::oauth::Fingerprinter::load_or_create(&args.data_dir)
        .with_context(|| format!("the fingerprint key in {}", args.data_dir.display()))?;
    let limits = crate::token_endpoint::Limits {
        max_request_body: args.max_token_request_bytes,
        max_response_body: args.max_token_response_bytes,
        replay_window: std::time::Duration::from_secs(args.replay_window),
    };
    let mut observer = crate::token_endpoint::Observer::new(fingerprints, limits);
    let health = Arc::new(crate::health::Health::default());
    let ledger = open_ledger(args, &mut observer, &health).await?;
    observer.ledger = ledger.with_approval_limit(args.approval_limit as usize);
    observer.ledger.write_behind = args.ledger_sync == crate::cli::LedgerSync::WriteBehind;
    observer.dead_token_breaker = args.dead_token_breaker.on();
    observer.confirm_timeout =
        std::time::Duration::from_secs_f64(args.confirm_timeout.clamp(0.0, 60.0));
    Ok((observer, health))
}

/// The ledger `--store` names: the local SQLite one, or the shared store, whose fleet the
/// observer then coordinates refreshes through.
async fn open_ledger(
    args: &RunArgs,
    observer: &mut crate::token_endpoint::Observer,
    health: &Arc<crate::health::Health>,
) -> anyhow::Result<crate::ledger::GrantLedger> {
    let retention = crate::ledger::Retention {
        max_age_days: args.retention_days,
        max_rows: args.ledger_max_rows,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let hooks = crate::ledger::StoreHooks {
        health: health.clone(),
        write_errors: observer.metrics.ledger_write_errors.clone(),
        write_behind: args.ledger_sync == crate::cli::LedgerSync::WriteBehind,
    };
    if args.ready_requires_store {
        health.require("store");
    }
    let ledger = match args
        .store
        .target()
        .map_err(|e| anyhow::Error::new(crate::cli::UsageError(format!("--store: {e}"))))?
    {
        crate::fleet::Target::Sqlite => {
            crate::ledger::GrantLedger::open(&args.data_dir, retention, now, hooks)
                .map_err(|e| anyhow::anyhow!("opening the ledger: {e}"))?
        }
        crate::fleet::Target::Postgres(target) => {
            let shown = target.shown().to_owned();
            let options = crate::fleet::FleetOptions {
                store_ca: args.store_ca.clone(),
                lease: std::time::Duration::from_secs(args.response_timeout.max(1)) + LEASE_MARGIN,
                replay_window: std::time::Duration::from_secs(args.replay_window),
                retention,
                fingerprint_check: observer.fingerprints.check(),
            };
            let outage =
                crate::fleet::Outage::new(health.clone(), observer.metrics.store_errors.clone());
            let opened = crate::fleet::Fleet::open(*target, options, outage)
                .await
                .map_err(|e| anyhow::anyhow!("opening the shared store {shown}: {e}"))?;
            observer.fleet = Some(opened.fleet);
            tracing::info!(event = "store_shared", store = %shown);
            crate::ledger::GrantLedger::open_shared(
                Box::new(opened.records),
                crate::ledger::REFRESH_CACHED_MAX,
            )
            .await
        }
    };
    Ok(ledger)
}

/// On a shared store, writes every second the request-rate shares that requests left
/// behind since the last; stops with the observer.
fn share_rates(observer: &Arc<crate::token_endpoint::Observer>) {
    if !observer.ledger.shared() {
        return;
    }
    let observer = Arc::downgrade(observer);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(observer) = observer.upgrade() else {
                return;
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            observer.ledger.share_rates(now);
        }
    });
}

/// The org connections and the webhooks: traffic grantdoctor starts itself, through the
/// same upstream client as the proxy's.
fn start_outbound(
    args: &RunArgs,
    observer: &mut crate::token_endpoint::Observer,
    client: &upstream::UpstreamClient,
) -> anyhow::Result<()> {
    if !args.orgs.is_empty() {
        let orgs = crate::org::Orgs::load(&args.orgs, client.clone(), observer.metrics.clone())
            .map_err(|e| anyhow::Error::new(crate::cli::UsageError(e.to_string())))?;
        tracing::info!(event = "orgs_configured", orgs = args.orgs.len());
        observer.orgs = Some(Arc::new(orgs));
    }
    // Subscribed before the listener opens: no alert of the first exchange is missed.
    crate::webhook::start(args, client.clone(), observer.metrics.clone())
        .map_err(anyhow::Error::new)?;
    Ok(())
}

/// What the token path does with what it sees: annotations, refresh policies, the rotation
/// guard, coalescing and JWT bearer recovery.
fn configure_token_path(
    args: &RunArgs,
    observer: &mut crate::token_endpoint::Observer,
    recovery: Option<crate::recover::Recovery>,
) {
    // After the orgs' and webhooks' lines, where start-up logs have always had it.
    tracing::info!(
        event = "ledger_loaded",
        refresh_tokens = observer.ledger.known_refresh_tokens()
    );
    observer.annotate = args.annotate;
    observer.append_description = args.annotate_description == crate::cli::DescriptionMode::Append;
    observer.policies = args.refresh_policies.iter().cloned().collect();
    if !args.rotation_guard.on() {
        observer.guard = None;
    }
    if !args.coalesce_refresh.on() {
        observer.coalescing = None;
    }
    if recovery.is_some() {
        tracing::info!(
            event = "recovery_configured",
            apps = args.jwt_bearer.len(),
            reuse_s = args.recovery_reuse,
            cooldown_s = args.recovery_cooldown
        );
    }
    observer.recovery = recovery;
}

/// The admin port, serving.
struct AdminPort {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Kept until `serve` returns, after the data directory's lock is released: the
    /// observer it shares goes last, as it did before `serve` was split into steps.
    _admin: Arc<crate::admin::Admin>,
}

/// Binds the admin port and serves `/metrics`, health and the CA on it; the proxy learns
/// both of its own addresses, so a request to either is refused instead of looping.
async fn start_admin(
    args: &RunArgs,
    proxy: &Proxy,
    metrics: Arc<crate::metrics::Metrics>,
    ca_pem: String,
    observer: Arc<crate::token_endpoint::Observer>,
) -> anyhow::Result<AdminPort> {
    let admin_listener = crate::admin::Admin::bind(args.admin)
        .await
        .with_context(|| format!("binding the admin listener on {}", args.admin))?;
    let addr = admin_listener.local_addr()?;
    proxy.state().own_addrs.set(vec![proxy.local_addr()?, addr]);
    let admin = Arc::new(crate::admin::Admin {
        metrics,
        ca_pem,
        health: proxy.state().health.clone(),
        observer,
    });
    let task = tokio::spawn(admin.clone().serve(admin_listener));
    Ok(AdminPort {
        addr,
        task,
        _admin: admin,
    })
}

/// How much longer a fleet lease lasts than the leader's upstream call may: time to read,
/// record and publish the answer.
const LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Raises the descriptor limit and fits `--max-connections` under it.
fn descriptor_budget(wanted: usize) -> usize {
    let limits = match crate::fd_limit::raise() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(event = "fd_limit", reason = %e, note = "could not read the descriptor limit");
            return wanted;
        }
    };
    if let Some(before) = limits.raised_from {
        tracing::info!(event = "fd_limit", raised_from = before, soft = limits.soft);
    }
    let effective = crate::fd_limit::connections_within(wanted, limits.soft);
    if effective < wanted {
        tracing::warn!(
            event = "fd_limit",
            soft = limits.soft,
            hard = limits.hard,
            max_connections = wanted,
            effective,
            reason = "the descriptor limit allows fewer connections than --max-connections; the rest are answered 503",
            fix = "raise the hard limit: LimitNOFILE=65536 (systemd), ulimit -Hn, or the container runtime's nofile"
        );
    }
    effective
}
