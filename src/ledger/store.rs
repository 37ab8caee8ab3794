//! The ledger on disk: an embedded SQLite database under `--data-dir`, so history survives
//! restarts and deploys. One table of JSON records keyed by kind and key; writes go through a
//! background thread in batches. No exchange waits on the disk: the rows of one whose loss
//! would let the guard forward a dead token (a rotation, a newly issued refresh token) are
//! first appended to the redo journal ([`super::journal`]); only if that fails does it wait
//! for the database's commit, which concurrent commits share (group commit).
//!
//! A batch that fails (disk full, I/O error) is kept and retried with back-off; the outage
//! is logged once, counted, and reported on `/readyz` as degraded until a commit succeeds.
//!
//! Must never: store a secret. Records hold fingerprints, ids, hosts, times, and for dead
//! refresh tokens Salesforce's error body and the diagnosis text, which hold none.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, params};

use super::journal::{Journal, Ticket};

/// One record to write: `value` `None` deletes it.
#[derive(Debug, Clone)]
pub struct Row {
    pub kind: &'static str,
    pub key: String,
    pub value: Option<String>,
    pub at: i64,
}

/// How much history is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age_days: u64,
    pub max_rows: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age_days: 400,
            max_rows: 1_000_000,
        }
    }
}

/// What the writer reports to (readiness and the error counter), and whether rows are
/// journaled before they are queued.
#[derive(Clone, Default)]
pub struct StoreHooks {
    pub health: std::sync::Arc<crate::health::Health>,
    pub write_errors: prometheus_client::metrics::counter::Counter,
    /// No redo journal: rows reach the disk only with the writer's next commit, and a
    /// durable write waits for it (`--ledger-sync write-behind`, for measurement).
    pub write_behind: bool,
}

/// Rows to write, who waits for their commit, and where the journal holds them.
struct Batch {
    rows: Vec<Row>,
    committed: Option<tokio::sync::oneshot::Sender<bool>>,
    journaled: Option<Ticket>,
}

/// A durable write's outcome: `true` once committed, `false` if the commit failed (the rows
/// stay queued for retry).
pub struct Commit(tokio::sync::oneshot::Receiver<bool>);

impl Commit {
    /// A commit that resolves when `done` is sent.
    pub(crate) fn new(done: tokio::sync::oneshot::Receiver<bool>) -> Self {
        Self(done)
    }

    /// A write that is already as durable as a commit (it is in the journal).
    fn done() -> Self {
        let (done, commit) = tokio::sync::oneshot::channel();
        let _ = done.send(true);
        Self(commit)
    }

    /// Waits for the commit, at most `bound`: a stuck disk must not hold a client's answer.
    pub async fn wait(self, bound: std::time::Duration) -> bool {
        matches!(tokio::time::timeout(bound, self.0).await, Ok(Ok(true)))
    }
}

/// The writer side of the database.
pub(crate) struct Store {
    tx: Option<mpsc::SyncSender<Batch>>,
    journal: Option<Arc<Journal>>,
    /// Set while journal appends fail: warned once per outage.
    journal_failing: AtomicBool,
    write_errors: prometheus_client::metrics::counter::Counter,
    writer: Option<JoinHandle<()>>,
    /// Dropped to stop the checkpointer.
    checkpoints: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store(..)")
    }
}

/// How long the writer collects rows before it commits them.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// Batches queued for the writer before `write` waits for it.
const PENDING_BATCHES: usize = 4096;

/// Unwritten rows kept across failed commits before they are folded to the last value per
/// record (which bounds them by the number of distinct records, losing nothing).
const FOLD_PENDING_AT: usize = 100_000;

/// Back-off between retries of a failed commit.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS records (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX IF NOT EXISTS records_at ON records (at);
";

/// Opens (creating) the database, prunes it, and returns the writer and every record.
pub(crate) fn open(
    path: &Path,
    retention: Retention,
    now: i64,
    hooks: StoreHooks,
) -> rusqlite::Result<(Store, Vec<Row>)> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        tracing::warn!(event = "ledger_empty", path = %path.display(), reason = "the ledger file is empty (0 bytes): starting with no history; whatever it held before is lost");
    }
    let mut conn = Connection::open(path)?;
    conn.execute_batch(SCHEMA)?;
    // What the journal holds may be newer than the database: it is written first.
    let journal = if hooks.write_behind {
        None
    } else {
        let (journal, redo) = Journal::open(path).map_err(io_error)?;
        write_rows(&mut conn, &redo, Over::NoNewer)?;
        journal.start().map_err(io_error)?;
        Some(Arc::new(journal))
    };
    let oldest = now - retention.max_age_days as i64 * 86_400_000;
    conn.execute("DELETE FROM records WHERE at < ?1", params![oldest])?;
    conn.execute(
        "DELETE FROM records WHERE rowid IN (SELECT rowid FROM records ORDER BY at DESC LIMIT -1 OFFSET ?1)",
        params![retention.max_rows as i64],
    )?;
    let rows = {
        let mut stmt = conn.prepare("SELECT kind, key, value, at FROM records ORDER BY at")?;
        stmt.query_map([], |r| {
            let kind: String = r.get(0)?;
            Ok((
                kind,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .filter_map(Result::ok)
        .filter_map(|(kind, key, value, at)| {
            Some(Row {
                kind: super::persist::kind(&kind)?,
                key,
                value: Some(value),
                at,
            })
        })
        .collect()
    };
    // Checkpoints run on a connection of their own: inside a commit, SQLite's automatic
    // checkpoint would hold the writer (and every answer waiting on its commit) while it
    // copies and syncs the database file.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let checkpoints = start_checkpointer(Connection::open(path)?)?;
    // Bounded: a writer that falls behind slows exchanges down rather than growing memory.
    let (tx, rx) = mpsc::sync_channel::<Batch>(PENDING_BATCHES);
    let write_errors = hooks.write_errors.clone();
    let writer = {
        let journal = journal.clone();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || Writer::new(conn, hooks, journal).run(rx))
            .map_err(io_error)?
    };
    Ok((
        Store {
            tx: Some(tx),
            journal,
            journal_failing: AtomicBool::new(false),
            write_errors,
            writer: Some(writer),
            checkpoints: Some(checkpoints),
        },
        rows,
    ))
}

/// How often the write-ahead log is copied into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Passive checkpoints every [`CHECKPOINT_EVERY`] (they never wait for, or block, the writer),
/// and a last one when the store closes.
fn start_checkpointer(conn: Connection) -> rusqlite::Result<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("ledger-checkpoint".into())
        .spawn(move || {
            let checkpoint = || {
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            };
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                checkpoint();
            }
            checkpoint();
        })
        .map_err(io_error)?;
    Ok((stop, thread))
}

fn io_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

impl Store {
    /// Journals rows (when journaling), so that they survive the process from now on.
    fn journal(&self, rows: &[Row]) -> Option<Ticket> {
        let journal = self.journal.as_ref()?;
        match journal.append(rows) {
            Ok(ticket) => {
                if self.journal_failing.load(Ordering::Relaxed)
                    && self.journal_failing.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(event = "ledger_journal_recovered");
                }
                Some(ticket)
            }
            Err(e) => {
                self.write_errors.inc();
                if !self.journal_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(event = "ledger_journal_failed", reason = %e, note = "rotations wait for the database's commit until the journal can be written again");
                }
                None
            }
        }
    }
}

impl super::backend::RecordStore for Store {
    /// Queues rows; they reach the database within a few milliseconds.
    fn write(&self, rows: Vec<Row>) {
        if let Some(tx) = &self.tx
            && !rows.is_empty()
        {
            let _ = tx.send(Batch {
                rows,
                committed: None,
                journaled: None,
            });
        }
    }

    /// Journals and queues rows, and returns what to wait for before answering: nothing
    /// more once they are in the journal, else the database's commit.
    fn write_durably(&self, rows: Vec<Row>) -> Option<Commit> {
        let tx = self.tx.as_ref()?;
        if let Some(ticket) = self.journal(&rows) {
            tx.send(Batch {
                rows,
                committed: None,
                journaled: Some(ticket),
            })
            .ok()?;
            return Some(Commit::done());
        }
        let (done, commit) = tokio::sync::oneshot::channel();
        tx.send(Batch {
            rows,
            committed: Some(done),
            journaled: None,
        })
        .ok()?;
        Some(Commit(commit))
    }
}

impl Drop for Store {
    /// Flushes what is queued before the process goes.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Some((stop, checkpointer)) = self.checkpoints.take() {
            drop(stop);
            let _ = checkpointer.join();
        }
    }
}

/// The writer thread's state: the connection, the rows not yet committed and who waits.
struct Writer {
    conn: Connection,
    hooks: StoreHooks,
    journal: Option<Arc<Journal>>,
    pending: Vec<Row>,
    waiting: Vec<tokio::sync::oneshot::Sender<bool>>,
    /// Where the journal holds the pending rows, reported back once they are committed.
    journaled: Vec<Ticket>,
    /// The pause before the next retry, while commits fail.
    retry: Option<std::time::Duration>,
}

impl Writer {
    fn new(conn: Connection, hooks: StoreHooks, journal: Option<Arc<Journal>>) -> Self {
        Self {
            conn,
            hooks,
            journal,
            pending: Vec::new(),
            waiting: Vec::new(),
            journaled: Vec::new(),
            retry: None,
        }
    }

    fn take(&mut self, batch: Batch) {
        self.pending.extend(batch.rows);
        self.waiting.extend(batch.committed);
        self.journaled.extend(batch.journaled);
    }

    fn run(mut self, rx: mpsc::Receiver<Batch>) {
        loop {
            let received = match self.retry {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(pause) => rx.recv_timeout(pause),
            };
            match received {
                Ok(batch) => self.take(batch),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if !self.pending.is_empty() {
                        self.commit();
                    }
                    return;
                }
            }
            // Write-behind rows gather for a moment, so that under load one transaction (and
            // one wake-up of this thread) carries many exchanges. A waiting caller is not
            // kept: whatever queued meanwhile shares its commit.
            if self.waiting.is_empty() && self.retry.is_none() {
                std::thread::sleep(GATHER);
            }
            while let Ok(more) = rx.try_recv() {
                self.take(more);
            }
            self.commit();
        }
    }

    fn commit(&mut self) {
        match write_rows(&mut self.conn, &self.pending, Over::Any) {
            Ok(()) => {
                self.pending.clear();
                for waiter in self.waiting.drain(..) {
                    let _ = waiter.send(true);
                }
                if let Some(journal) = &self.journal
                    && let Err(e) = journal.committed(&self.journaled)
                {
                    // The journal keeps its rows a round longer, to be written again.
                    tracing::debug!(event = "ledger_journal_turn_failed", reason = %e);
                }
                self.journaled.clear();
                if self.retry.take().is_some() && self.hooks.health.restore("ledger") {
                    tracing::info!(event = "ledger_write_recovered");
                }
            }
            Err(e) => {
                self.hooks.write_errors.inc();
                // The answer goes out anyway: the record is in memory, and is retried here.
                for waiter in self.waiting.drain(..) {
                    let _ = waiter.send(false);
                }
                let reason = format!("ledger writes failing: {e}");
                if self.hooks.health.degrade("ledger", reason) {
                    tracing::warn!(event = "ledger_write_failed", reason = %e, rows = self.pending.len(), note = "rows are kept and retried; /readyz reports degraded until a commit succeeds");
                }
                if self.pending.len() > FOLD_PENDING_AT {
                    fold(&mut self.pending);
                }
                self.retry = Some(
                    self.retry
                        .map_or(RETRY_FIRST, |pause| (pause * 2).min(RETRY_MAX)),
                );
            }
        }
    }
}

/// Keeps only the last row per record, in the order of those last rows.
pub(crate) fn fold(rows: &mut Vec<Row>) {
    let mut last = std::collections::HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        last.insert((row.kind, row.key.clone()), i);
    }
    let mut i = 0;
    rows.retain(|row| {
        let keep = last.get(&(row.kind, row.key.clone())) == Some(&i);
        i += 1;
        keep
    });
}

/// Whether a row may replace a record newer than itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    /// The writer's own rows: they are the latest state of their keys.
    Any,
    /// The journal's rows, written back at start: one committed long ago must not undo a
    /// newer write that was not journaled.
    NoNewer,
}

/// Writes rows in one transaction, each over its record as `over` allows.
fn write_rows(conn: &mut Connection, rows: &[Row], over: Over) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (upsert, delete) = match over {
        Over::Any => (
            "INSERT INTO records (kind, key, value, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, at = excluded.at",
            "DELETE FROM records WHERE kind = ?1 AND key = ?2",
        ),
        Over::NoNewer => (
            "INSERT INTO records (kind, key, value, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, at = excluded.at
             WHERE excluded.at >= records.at",
            "DELETE FROM records WHERE kind = ?1 AND key = ?2 AND at <= ?3",
        ),
    };
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(upsert)?;
        let mut delete = tx.prepare_cached(delete)?;
        for row in rows {
            match &row.value {
                Some(value) => upsert.execute(params![row.kind, row.key, value, row.at])?,
                None if over == Over::NoNewer => {
                    delete.execute(params![row.kind, row.key, row.at])?
                }
                None => delete.execute(params![row.kind, row.key])?,
            };
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: &str, at: i64) -> Row {
        Row {
            kind: "refresh",
            key: key.into(),
            value: Some(value.into()),
            at,
        }
    }

    fn value_of(conn: &Connection, key: &str) -> Option<String> {
        conn.query_row("SELECT value FROM records WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .ok()
    }

    #[test]
    fn a_replayed_row_never_undoes_a_newer_record() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        write_rows(
            &mut conn,
            &[row("kept", "newer", 5), row("same", "before", 5)],
            Over::Any,
        )
        .unwrap();
        write_rows(
            &mut conn,
            &[
                row("kept", "older", 3),
                row("same", "journaled", 5),
                row("lost", "journaled", 4),
            ],
            Over::NoNewer,
        )
        .unwrap();
        assert_eq!(value_of(&conn, "kept").as_deref(), Some("newer"));
        assert_eq!(value_of(&conn, "same").as_deref(), Some("journaled"));
        assert_eq!(value_of(&conn, "lost").as_deref(), Some("journaled"));
    }

    #[test]
    fn only_the_writer_deletes_over_a_newer_record() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        write_rows(&mut conn, &[row("k", "newer", 5)], Over::Any).unwrap();
        let gone = |at| Row {
            kind: "refresh",
            key: "k".into(),
            value: None,
            at,
        };
        write_rows(&mut conn, &[gone(3)], Over::NoNewer).unwrap();
        assert_eq!(value_of(&conn, "k").as_deref(), Some("newer"));
        write_rows(&mut conn, &[gone(3)], Over::Any).unwrap();
        assert_eq!(value_of(&conn, "k"), None);
    }
}
