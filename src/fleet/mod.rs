//! What replicas share through PostgreSQL (`--store postgres://…`): the ledger's records,
//! the leases of refreshes in flight (coalescing across the fleet), and sealed answers for
//! the rotated-token guard's replays. With `--store sqlite` (the default) none of this runs.
//!
//! The database is never in the way of the application's traffic: every operation on the
//! token path is bounded in time, fails at once while the connection is down, and on
//! failure the caller goes on with what this replica holds; upkeep that may take longer
//! (retention's deletes) runs on a connection of its own, bounded by the server. An outage
//! is counted (`grantdoctor_store_errors_total{op}`), logged once, and reported on
//! `/readyz` as degraded until an operation succeeds again.
//!
//! Every replica must fingerprint a token alike, or their records would never meet: they
//! share one `fingerprint.key` (mounted from one Secret). The database holds only a check
//! value of it, and a replica with another key refuses to start rather than write records
//! no other replica can match.
//!
//! Must never: write a secret to the database. Records hold fingerprints; sealed answers
//! can only be opened by a caller presenting the secrets they were sealed under
//! ([`seal`]); the fingerprint key itself stays in each replica's data directory.

pub mod announce;
pub mod batch;
pub mod db;
pub mod lease;
pub mod migrate;
mod orphans;
pub mod records;
pub mod seal;
pub mod url;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub use db::StoreError;
pub use url::{PgTarget, StoreUrl, Target};

/// How long a start waits for the database before giving up.
const START_WAIT: Duration = Duration::from_secs(15);
/// The most one store operation may take on the token path.
const OP_TIMEOUT: Duration = Duration::from_millis(750);
/// How often finished leases and expired sealed answers are swept. Often: every exchange
/// leaves a lease row, and the statements on them cost more the more rows the table holds.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How often records past retention are pruned (and at start); a pass that could not start
/// (its connection down, or the last pass still at it) is tried again at the next sweep.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The most one chunk of a prune may take, stopped by the server: a pass runs to its end,
/// never dropped midway (see [`prune_pass`]), and this bounds it.
const PRUNE_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections for reads, leases and sealed answers: looks and sealed answers of exchanges
/// in flight at once would queue behind each other's round trips on one.
const COORDINATION_CONNECTIONS: usize = 4;
/// The one of them lease batches go to while it is up: batches in flight at once then leave
/// in one write and wake the server's backend once, where spread over the connections each
/// woke a backend of its own, and a wakeup on another CPU costs more than the statement (a
/// failed refresh against a database on its own CPU: 0.65 to 0.70 times SQLite's rate). A
/// connection that does not answer within the bound is dropped and re-established
/// ([`db::Db::reset`]), and they go to the next one meanwhile.
const LEASE_CONNECTION: usize = 1;
/// The one the sweeps go to (while it is up): a sweep deletes thousands of rows in
/// milliseconds, which lease statements queued behind it would wait out.
const SWEEP_CONNECTION: usize = 3;
/// A connection whose sent data goes unacknowledged this long is closed and reconnected:
/// without it a half-open connection (a failover, a NAT dropping it) looks up for minutes,
/// and everything sent on it times out.
const UNACKNOWLEDGED: Duration = Duration::from_secs(10);
/// Keepalive probes after this much quiet, so an idle half-open connection is found too.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Lease statements in flight at once for takes, and as many for landings (each for a batch
/// of exchanges): takes never wait for a landing's slot, nor landings for a take's, and a
/// statement sent for either carries what waits of both.
const LEASE_SLOTS: usize = 2;

/// The queue lease takes wait in, and the one landings wait in.
const TAKES: batch::Lane = batch::Lane::One;
const LANDINGS: batch::Lane = batch::Lane::Two;

/// Counts and reports store failures: once per outage in the log and on `/readyz`.
#[derive(Clone)]
pub struct Outage {
    health: Arc<crate::health::Health>,
    errors: Family<Vec<(&'static str, &'static str)>, Counter>,
    down: Arc<AtomicBool>,
}

impl Outage {
    pub fn new(
        health: Arc<crate::health::Health>,
        errors: Family<Vec<(&'static str, &'static str)>, Counter>,
    ) -> Self {
        Self {
            health,
            errors,
            down: Arc::default(),
        }
    }

    /// [`Outage::bounded`] on a connection of `db`: one that did not answer within the
    /// bound is dropped and re-established, not trusted with the next operation.
    pub async fn bounded_on<T>(
        &self,
        db: &db::Db,
        op: &'static str,
        bound: Duration,
        run: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        let generation = db.generation();
        let answered = tokio::time::timeout(bound, run).await;
        if answered.is_err() {
            db.reset(generation);
        }
        self.settle(op, answered.unwrap_or(Err(StoreError::Timeout(bound))))
    }

    /// Runs `op` within `bound`; `None` (counted, reported) when it fails or takes longer.
    pub async fn bounded<T>(
        &self,
        op: &'static str,
        bound: Duration,
        run: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        let outcome = match tokio::time::timeout(bound, run).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Timeout(bound)),
        };
        self.settle(op, outcome)
    }

    /// Counts and reports a failed outcome, or the store's return after one.
    fn settle<T>(&self, op: &'static str, outcome: Result<T, StoreError>) -> Option<T> {
        match outcome {
            Ok(value) => {
                if self.down.swap(false, Ordering::AcqRel) && self.health.restore("store") {
                    tracing::info!(event = "store_recovered", op);
                }
                Some(value)
            }
            Err(e) => {
                self.failed(op, &e);
                None
            }
        }
    }

    fn failed(&self, op: &'static str, e: &StoreError) {
        self.errors.get_or_create(&vec![("op", op)]).inc();
        self.down.store(true, Ordering::Release);
        let reason = format!(
            "the shared store is failing ({op}: {e}); this replica serves from what it holds"
        );
        if self.health.degrade("store", reason) {
            tracing::warn!(
                event = "store_unavailable",
                op,
                reason = %e,
                note = "traffic flows; the guard and coalescing fall back to this replica; records are kept and retried; /readyz reports degraded until the store answers"
            );
        }
    }
}

/// How the fleet's shared parts behave.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub store_ca: Vec<PathBuf>,
    /// A lease outlives the leader's upstream call: `--response-timeout` plus a margin.
    pub lease: Duration,
    /// `--replay-window`: how long a sealed replay is kept.
    pub replay_window: Duration,
    pub retention: crate::ledger::Retention,
    /// A check value of this replica's fingerprint key ([`crate::oauth::Fingerprinter::check`]).
    pub fingerprint_check: String,
}

/// The connections for leases and sealed answers: looks and sealed answers taken in turn,
/// lease batches on one (see [`LEASE_CONNECTION`]).
struct Coordination {
    dbs: Vec<Arc<db::Db>>,
    next: std::sync::atomic::AtomicUsize,
    outage: Outage,
}

impl Coordination {
    /// Runs one operation on the next connection, bounded; `None` when the store failed.
    async fn run<T, F, Fut>(&self, op: &'static str, run: F) -> Option<T>
    where
        F: FnOnce(Arc<db::Conn>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.run_told(op, run).await.ok()
    }

    /// Like [`Coordination::run`], saying whether a failed operation may have reached the
    /// server: with no connection up, nothing was sent.
    async fn run_told<T, F, Fut>(&self, op: &'static str, run: F) -> Result<T, batch::Failed>
    where
        F: FnOnce(Arc<db::Conn>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.run_from(turn, op, run).await
    }

    /// The connection `turn` names, or the next that is up: one dropped (and reconnecting)
    /// must not leave its share of the exchanges uncoordinated while the others answer.
    fn up_from(&self, turn: usize) -> Option<(&Arc<db::Db>, Arc<db::Conn>)> {
        (0..self.dbs.len()).find_map(|k| {
            let db = &self.dbs[(turn + k) % self.dbs.len()];
            db.client().ok().map(|client| (db, client))
        })
    }

    /// Like [`Coordination::run_told`], on the connection `turn` names, or the next up.
    async fn run_from<T, F, Fut>(
        &self,
        turn: usize,
        op: &'static str,
        run: F,
    ) -> Result<T, batch::Failed>
    where
        F: FnOnce(Arc<db::Conn>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let Some((db, client)) = self.up_from(turn) else {
            self.outage.failed(op, &StoreError::Unavailable);
            return Err(batch::Failed::Unsent);
        };
        self.outage
            .bounded_on(db, op, OP_TIMEOUT, run(client))
            .await
            .ok_or(batch::Failed::Lost)
    }
}

/// The shared store, opened.
pub struct Fleet {
    coordination: Arc<Coordination>,
    /// Takes and landings, many exchanges to a statement.
    leases: batch::Batches<lease::Op, lease::Answer>,
    replica: Arc<str>,
    /// Numbers this replica's takes: each asks under a holder name of its own.
    asked: std::sync::atomic::AtomicU64,
    orphans: Arc<orphans::Orphans>,
    outage: Outage,
    replay_ms: i64,
    /// The records' writer, which also files rotations' replays (in the same transaction).
    records: Arc<records::PgRecords>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fleet({})", self.replica)
    }
}

/// What opening the shared store gives the rest of the process.
pub struct Opened {
    pub fleet: Arc<Fleet>,
    pub records: Arc<records::PgRecords>,
}

impl Fleet {
    /// Connects (four connections for reads, leases and sealed answers, one for the writer's
    /// transactions, one for the operator's view, one for pruning), migrates, and starts the
    /// background sweeps.
    pub async fn open(
        mut target: PgTarget,
        options: FleetOptions,
        outage: Outage,
    ) -> Result<Opened, StoreError> {
        let tls = crate::tls::upstream_client_config(&options.store_ca)
            .map_err(|e| StoreError::Schema(format!("store_ca: {e}")))?;
        target
            .config
            .tcp_user_timeout(UNACKNOWLEDGED)
            .keepalives_idle(KEEPALIVE_IDLE);
        // Leases and sealed answers live seconds: their commits need not wait for the
        // disk (a database crash loses only leases, which expire, and replays). The records
        // keep the server's durability.
        let mut quick = target.clone();
        quick.config.options("-c synchronous_commit=off");
        let replica: Arc<str> = Arc::from(replica_id().as_str());
        let announced = announce::Announcements::new(replica.clone());
        // The first connection also reads the change feed, and listens for what tells it
        // there is something to read.
        let mut coordination = Vec::new();
        for i in 0..COORDINATION_CONNECTIONS {
            let listen = (i == 0).then(|| db::Listen {
                channel: announce::CHANNEL,
                sink: announced.sink(),
            });
            let named = named(&quick, &replica, &format!("coordination-{i}"));
            coordination
                .push(db::Db::open_listening(named, Some(tls.clone()), START_WAIT, listen).await?);
        }
        let mut view = named(&target, &replica, "view");
        view.config.options(format!(
            "-c statement_timeout={}",
            records::VIEW_TIMEOUT.as_millis()
        ));
        let viewer = db::Db::open(view, Some(tls.clone()), START_WAIT).await?;
        let mut prune = named(&target, &replica, "prune");
        prune.config.options(format!(
            "-c statement_timeout={}",
            PRUNE_STATEMENT_TIMEOUT.as_millis()
        ));
        let pruner = db::Db::open(prune, Some(tls.clone()), START_WAIT).await?;
        let writer = named(&target, &replica, "writer");
        let writer = db::Db::open(writer, Some(tls), START_WAIT).await?;
        let client = writer.client()?;
        let before = migrate::migrate(&client).await?;
        tracing::info!(
            event = "store_opened",
            schema = migrate::latest(),
            migrated_from = before
        );
        agree_on_fingerprint_key(&client, &options.fingerprint_check).await?;
        let records = Arc::new(records::PgRecords::start(
            coordination[0].clone(),
            viewer,
            writer,
            announced,
            outage.clone(),
            OP_TIMEOUT,
        ));
        let coordination = Arc::new(Coordination {
            dbs: coordination,
            next: Default::default(),
            outage: outage.clone(),
        });
        let orphans = Arc::new(orphans::Orphans::default());
        tokio::spawn(orphans::free(
            orphans.clone(),
            coordination.clone(),
            options.lease,
        ));
        let fleet = Arc::new(Self {
            leases: leases(&coordination, options.lease),
            coordination,
            replica,
            asked: Default::default(),
            orphans,
            outage,
            replay_ms: options.replay_window.as_millis() as i64,
            records: records.clone(),
        });
        tokio::spawn(sweeps(fleet.clone(), pruner, options.retention));
        Ok(Opened { fleet, records })
    }

    /// This replica's name in lease rows (random per start).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn replay_window_ms(&self) -> i64 {
        self.replay_ms
    }

    /// Runs one sealed-answer operation, bounded; `None` when the store failed.
    async fn run<T, F, Fut>(&self, op: &'static str, run: F) -> Option<T>
    where
        F: FnOnce(Arc<db::Conn>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.coordination.run(op, run).await
    }

    /// Takes the lease of a refresh, or says who has it; with the holder name it asked under
    /// (a lease taken is landed under it). When the answer is lost, the lease the statement
    /// may have taken is freed in the background: nobody will land it.
    pub async fn take(&self, id: &[u8]) -> Option<(lease::Turn, String)> {
        let n = self.asked.fetch_add(1, Ordering::Relaxed);
        let holder = format!("{}-{n}", self.replica);
        let take = lease::Take {
            id: id.to_vec(),
            holder: holder.clone(),
        };
        match self.leases.ask(TAKES, lease::Op::Take(take)).await {
            Ok(lease::Answer::Turn(turn)) => Some((turn, holder)),
            Ok(lease::Answer::Landed(_)) => unreachable!("a take is answered with a turn"),
            // Never sent, so never taken: nothing to free.
            Err(batch::Failed::Unsent) => None,
            Err(batch::Failed::Lost) => {
                self.orphans.add(id, &holder);
                None
            }
        }
    }

    /// The state of a lease as a follower sees it, or why the store gave none: `Lost` when
    /// the connection asked did not answer (it is being replaced, and the next one may),
    /// `Unsent` when none is up.
    pub async fn look(&self, id: &[u8]) -> Result<lease::Turn, batch::Failed> {
        self.coordination
            .run_told("lease", |c| async move { lease::look(&c, id).await })
            .await
    }

    /// Ends a leader's lease as `end` says (a published answer kept `keep_ms`). A landing
    /// that fails leaves the lease to be freed in the background.
    pub async fn land(
        &self,
        id: &[u8],
        (generation, holder): (i64, &str),
        end: lease::End,
        keep_ms: i64,
    ) -> Option<lease::Landed> {
        let landed = self
            .leases
            .ask(
                LANDINGS,
                lease::Op::Land(lease::Landing {
                    id: id.to_vec(),
                    generation,
                    end,
                    keep_ms,
                }),
            )
            .await;
        match landed {
            Ok(lease::Answer::Landed(landed)) => Some(landed),
            Ok(lease::Answer::Turn(_)) => unreachable!("a landing is answered with a landed"),
            Err(_) => {
                // Even unsent: the lease it should have ended is still held.
                self.orphans.add(id, holder);
                None
            }
        }
    }

    /// Files a sealed replay with the next commit of records, for the replay window (see
    /// [`records::PgRecords::keep_sealed`]).
    pub fn keep_replay(&self, id: Vec<u8>, sealed: Vec<u8>) {
        let window = Duration::from_millis(self.replay_ms.max(0) as u64);
        self.records
            .keep_sealed(id, sealed, std::time::Instant::now() + window);
    }

    pub async fn get_sealed(&self, id: &[u8]) -> Option<Option<Vec<u8>>> {
        self.run("seal", |c| async move { lease::get_sealed(&c, id).await })
            .await
    }
}

/// Lease takes and landings, many exchanges to a statement, run on the lease connection,
/// bounded.
fn leases(
    coordination: &Arc<Coordination>,
    lease: Duration,
) -> batch::Batches<lease::Op, lease::Answer> {
    let lease_ms = lease.as_millis() as i64;
    let coordination = coordination.clone();
    batch::Batches::start(LEASE_SLOTS, OP_TIMEOUT * 2, move |ops: Vec<lease::Op>| {
        let coordination = coordination.clone();
        async move {
            coordination
                .run_from(LEASE_CONNECTION, "lease", |c| async move {
                    lease::run_many(&c, &ops, lease_ms).await
                })
                .await
        }
    })
}

/// Checks that this replica fingerprints like the others: the first to start records a
/// check value of its key, and every other must match it.
async fn agree_on_fingerprint_key(
    client: &tokio_postgres::Client,
    check: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO grantdoctor_settings (name, value) VALUES ('fingerprint_check', $1)
             ON CONFLICT (name) DO NOTHING",
            &[&check.as_bytes()],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT value FROM grantdoctor_settings WHERE name = 'fingerprint_check'",
            &[],
        )
        .await?;
    let fleet: Vec<u8> = row.get(0);
    if fleet != check.as_bytes() {
        return Err(StoreError::Schema(
            "this replica's fingerprint key (fingerprint.key in --data-dir) is not the one the other replicas of this store use, so their records would never match its tokens: give every replica the same key (one Secret mounted as fingerprint.key in each)".into(),
        ));
    }
    Ok(())
}

/// `target` for one of this replica's connections, named for `pg_stat_activity`
/// (`grantdoctor <replica> <role>`, after the URL's own `application_name` if it sets one).
fn named(target: &PgTarget, replica: &str, role: &str) -> PgTarget {
    let mut named = target.clone();
    let prefix = target
        .config
        .get_application_name()
        .unwrap_or("grantdoctor")
        .to_owned();
    named
        .config
        .application_name(format!("{prefix} {replica} {role}"));
    named
}

fn replica_id() -> String {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sweeps finished leases and expired sealed answers; prunes records past retention (one
/// replica at a time).
async fn sweeps(fleet: Arc<Fleet>, pruner: Arc<db::Db>, retention: crate::ledger::Retention) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut prune_at = tokio::time::Instant::now();
    let mut pass: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        sweep.tick().await;
        let _ = fleet
            .coordination
            .run_from(SWEEP_CONNECTION, "sweep", |c| async move {
                lease::sweep(&c).await
            })
            .await;
        let running = pass.as_ref().is_some_and(|p| !p.is_finished());
        if tokio::time::Instant::now() < prune_at || running {
            continue;
        }
        match pruner.client() {
            Ok(client) => {
                prune_at = tokio::time::Instant::now() + PRUNE_EVERY;
                // Beside the sweeps, which a long pass would otherwise hold up.
                pass = Some(tokio::spawn(prune_pass(
                    client,
                    fleet.outage.clone(),
                    retention,
                )));
            }
            Err(e) => fleet.outage.failed("prune", &e),
        }
    }
}

/// One pass of retention on a connection of its own, run to its end: dropped midway (at a
/// client-side timeout) it would keep the prune lock, its session's, for as long as the
/// connection lives, and no other replica would prune again. Each chunk is bounded by the
/// server instead ([`PRUNE_STATEMENT_TIMEOUT`]).
async fn prune_pass(client: Arc<db::Conn>, outage: Outage, retention: crate::ledger::Retention) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let oldest = now - retention.max_age_days as i64 * 86_400_000;
    let max_rows = retention.max_rows as i64;
    let stale_rates = crate::ledger::rates_kept_since();
    match records::prune(&client, oldest, max_rows, stale_rates).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(event = "store_pruned", rows),
        Err(e) => outage.failed("prune", &e),
    }
}
