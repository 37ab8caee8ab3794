//! The ledger on disk: an embedded SQLite database under `--data-dir`, so history survives
//! restarts and deploys. One table of JSON records keyed by kind and key; writes go through a
//! background thread in batches so a token exchange never waits on the disk.
//!
//! Must never: store a secret. Records hold fingerprints, ids, hosts and times only.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, params};

/// One record to write: `value` `None` deletes it.
#[derive(Debug, Clone)]
pub(crate) struct Row {
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

/// The writer side of the database.
pub(crate) struct Store {
    tx: Option<mpsc::SyncSender<Vec<Row>>>,
    writer: Option<JoinHandle<()>>,
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
) -> rusqlite::Result<(Store, Vec<Row>)> {
    let conn = Connection::open(path)?;
    conn.execute_batch(SCHEMA)?;
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
    // Bounded: a writer that falls behind slows exchanges down rather than growing memory.
    let (tx, rx) = mpsc::sync_channel::<Vec<Row>>(PENDING_BATCHES);
    let writer = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || write_loop(conn, rx))
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    Ok((
        Store {
            tx: Some(tx),
            writer: Some(writer),
        },
        rows,
    ))
}

impl Store {
    pub fn write(&self, rows: Vec<Row>) {
        if let Some(tx) = &self.tx
            && !rows.is_empty()
        {
            let _ = tx.send(rows);
        }
    }
}

impl Drop for Store {
    /// Flushes what is queued before the process goes.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Vec<Row>>) {
    while let Ok(first) = rx.recv() {
        // Gather for a moment: under load one transaction (and one wake-up of this thread)
        // carries many exchanges instead of one each.
        std::thread::sleep(GATHER);
        let mut batch = first;
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        if let Err(e) = write_batch(&mut conn, &batch) {
            tracing::warn!(event = "ledger_write_failed", reason = %e, rows = batch.len());
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[Row]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO records (kind, key, value, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, at = excluded.at",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM records WHERE kind = ?1 AND key = ?2")?;
        for row in batch {
            match &row.value {
                Some(value) => upsert.execute(params![row.kind, row.key, value, row.at])?,
                None => delete.execute(params![row.kind, row.key])?,
            };
        }
    }
    tx.commit()
}
