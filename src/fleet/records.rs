//! The ledger's records on PostgreSQL, shared by replicas. Writes go through one task on a
//! connection of its own, in batches (group commit); every write transaction takes one
//! advisory lock before it numbers its rows, so sequence order is commit order and a replica
//! that read up to number N has seen every commit before N. Reads are the change feed: the
//! records other replicas wrote since this one last looked, read only when another replica
//! announced a commit since ([`super::announce`]).
//!
//! A batch that fails (the database down, a timeout) is kept and retried with back-off; the
//! outage is counted and reported once (see [`super::Outage`]).
//!
//! Must never: write a secret. The rows are those of the embedded store: fingerprints, ids,
//! hosts, times.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::Outage;
use super::announce::{self, Announcements};
use super::db::{Db, StoreError};
use super::lease::{self, ToSeal};
use crate::ledger::{Commit, REFRESH_KIND, RecordStore, Row, fold, record_kind};

/// Serializes numbering with commits (see the module docs).
const WRITE_LOCK: i64 = 0x6772_616e_7464_6f64;
/// Held by the one replica that prunes at a time.
const PRUNE_LOCK: i64 = 0x6772_616e_7464_6f65;

/// The most one page of the first read (the whole history but refresh tokens) may take.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows read per round of the change feed.
const FEED_PAGE: i64 = 20_000;
/// The most a read for the operator's view may take (a page load, not an exchange).
pub(super) const VIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys in one page of [`PgRecords::keys_after`].
const KEYS_PAGE: i64 = 50_000;
/// Batches queued for the writer before writes wait.
const PENDING_BATCHES: usize = 4096;
/// How long write-behind rows gather before a commit: each commit of a replica is a round of
/// five statements and a flush of the server's log, and rows that no one waits for need not
/// be seen elsewhere sooner (a rotation's record is waited for, and commits at once).
const GATHER: Duration = Duration::from_millis(10);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Rows deleted per statement of a prune: a bounded delete never holds the table long.
const PRUNE_CHUNK: i64 = 10_000;

struct Batch {
    rows: Vec<Row>,
    /// Sealed answers committed with the rows (a rotation's replay with its record).
    sealed: Vec<ToSeal>,
    committed: Option<oneshot::Sender<bool>>,
}

/// The shared records, as the ledger sees them.
pub struct PgRecords {
    tx: mpsc::Sender<Batch>,
    reader: Arc<Db>,
    /// For the operator's view ([`PgRecords::recent_rows`]).
    viewer: Arc<Db>,
    /// The last sequence number read; held while a read runs, so reads never overlap.
    cursor: tokio::sync::Mutex<i64>,
    /// Reads begun, so that a caller who waited for a read that began after it arrived
    /// takes that read's result rather than running another.
    begun: AtomicU64,
    /// Whether another replica committed since the last read.
    announced: Arc<Announcements>,
    /// Whether a first read (the history but refresh tokens) has completed.
    caught_up: std::sync::atomic::AtomicBool,
    /// The refresh tokens the first read leaves out are those numbered up to this (the
    /// head when it began; negative before).
    skip_through: std::sync::atomic::AtomicI64,
    outage: Outage,
    op_timeout: Duration,
}

impl std::fmt::Debug for PgRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgRecords(..)")
    }
}

impl PgRecords {
    /// Starts the writer on `writer`'s connection; reads go through `reader`, which listens
    /// for the announcements `announced` keeps.
    pub fn start(
        reader: Arc<Db>,
        viewer: Arc<Db>,
        writer: Arc<Db>,
        announced: Arc<Announcements>,
        outage: Outage,
        op_timeout: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(PENDING_BATCHES);
        let task = Writer {
            db: writer,
            replica: announced.own().clone(),
            outage: outage.clone(),
            pending: Vec::new(),
            sealed: Vec::new(),
            waiting: Vec::new(),
            retry: None,
            op_timeout,
        };
        tokio::spawn(task.run(rx));
        Self {
            tx,
            reader,
            viewer,
            cursor: tokio::sync::Mutex::new(0),
            begun: AtomicU64::new(0),
            announced,
            caught_up: Default::default(),
            skip_through: std::sync::atomic::AtomicI64::new(-1),
            outage,
            op_timeout,
        }
    }

    async fn read_changes(&self) -> Option<Vec<Row>> {
        let first = !self.caught_up.load(Ordering::Acquire);
        if !first && self.announced.quiet() {
            return Some(Vec::new());
        }
        let arrived = self.begun.load(Ordering::Acquire);
        let mut cursor = self.cursor.lock().await;
        if self.begun.load(Ordering::Acquire) > arrived {
            // A read that began after this caller arrived has run: it saw everything
            // committed before then.
            return Some(Vec::new());
        }
        self.begun.fetch_add(1, Ordering::AcqRel);
        let reading = self.announced.reading();
        // The first read catches up with the whole history, a page per call (the ledger
        // merges each before the next: the history never sits in memory at once). The
        // refresh tokens, most of it, are left to the ledger's fetches (it holds only a
        // bounded number of them): those numbered up to the head when the catch-up began,
        // so that a token fetched meanwhile still gets every later change. Codes older than
        // the ledger keeps them are left too, and request rates older than their hour.
        let skip = if first {
            Skip {
                kind: REFRESH_KIND,
                through: self.skip_through.load(Ordering::Acquire),
                codes_before: crate::ledger::codes_kept_since(),
            }
        } else {
            Skip::NOTHING
        };
        let mut rows = Vec::new();
        loop {
            let page = self
                .outage
                .bounded_on(
                    &self.reader,
                    "read",
                    self.op_timeout.max(CATCH_UP_TIMEOUT * u32::from(first)),
                    feed(&self.reader, *cursor, self.announced.own(), &skip),
                )
                .await?;
            let full = page.rows.len() as i64 == FEED_PAGE;
            *cursor = match (full, page.last) {
                (true, Some(last)) => last,
                // Everything up to the head was in this snapshot: our own rows in between
                // are never read back.
                _ => (*cursor).max(page.head),
            };
            rows.extend(page.rows);
            if first && full {
                if skip.through < 0 {
                    self.skip_through.store(page.head, Ordering::Release);
                }
                return Some(rows);
            }
            if !full {
                self.caught_up.store(true, Ordering::Release);
                self.announced.read(reading);
                return Some(rows);
            }
        }
    }

    /// Files a sealed answer in the next write transaction: a rotation's replay, queued
    /// before the rotation's record, commits with it (or before it), so a replica that reads
    /// the rotation finds the replay too. Kept until `until` at most.
    pub fn keep_sealed(&self, id: Vec<u8>, sealed: Vec<u8>, until: std::time::Instant) {
        let _ = self.tx.try_send(Batch {
            rows: Vec::new(),
            sealed: vec![ToSeal { id, sealed, until }],
            committed: None,
        });
    }

    async fn fetch_rows(&self, kind: &'static str, keys: Vec<String>) -> Option<Vec<Row>> {
        self.outage
            .bounded_on(&self.reader, "read", self.op_timeout, async {
                let client = self.reader.client()?;
                let found = client
                    .query_prepared(
                        "SELECT key, value, at FROM grantdoctor_records
                         WHERE kind = $1 AND key = ANY($2)",
                        &[(&kind, Type::TEXT), (&keys, Type::TEXT_ARRAY)],
                    )
                    .await?;
                Ok(rows_of(kind, found))
            })
            .await
    }

    /// For the operator's view only: bounded, and neither counted nor reported as an
    /// outage when it fails (a page load must not mark the replica degraded). It runs on a
    /// connection of its own, not the reader the token path's fetches queue on.
    async fn recent_rows(&self, kind: &'static str, limit: i64) -> Option<Vec<Row>> {
        let read = async {
            let client = self.viewer.client()?;
            // The server stops it at the bound too (that connection's `statement_timeout`):
            // a client that gave up does not.
            let found = client
                .query_typed(
                    "SELECT key, value, at FROM grantdoctor_records
                     WHERE kind = $1 ORDER BY at DESC LIMIT $2",
                    &[(&kind, Type::TEXT), (&limit, Type::INT8)],
                )
                .await?;
            Ok::<_, StoreError>(rows_of(kind, found))
        };
        match tokio::time::timeout(VIEW_TIMEOUT, read).await {
            Ok(Ok(rows)) => Some(rows),
            Ok(Err(e)) => {
                tracing::debug!(event = "store_view_failed", reason = %e);
                None
            }
            Err(_) => None,
        }
    }

    async fn keys_page(&self, kind: &'static str, after: String) -> Option<Vec<String>> {
        self.outage
            .bounded_on(&self.reader, "read", CATCH_UP_TIMEOUT, async {
                let client = self.reader.client()?;
                let found = client
                    .query_typed(
                        "SELECT key FROM grantdoctor_records
                         WHERE kind = $1 AND key > $2 ORDER BY key LIMIT $3",
                        &[
                            (&kind, Type::TEXT),
                            (&after, Type::TEXT),
                            (&KEYS_PAGE, Type::INT8),
                        ],
                    )
                    .await?;
                Ok(found.into_iter().map(|r| r.get(0)).collect())
            })
            .await
    }
}

/// Deletes records past the retention, in bounded chunks, if no other replica is at it, and
/// first the request-rate shares last written before `stale_rates`: a share covers its
/// writer's last hour, and each replica that ever ran leaves one per user it served. The
/// lock it takes is the session's: a caller lets it run to its end (or its connection end),
/// or no other replica prunes again while the connection lives.
pub async fn prune(
    client: &Client,
    oldest: i64,
    max_rows: i64,
    stale_rates: i64,
) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&PRUNE_LOCK])
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let mut deleted = 0;
    let outcome: Result<(), StoreError> = async {
        let past = [
            (
                "DELETE FROM grantdoctor_records WHERE (kind, key) IN (
                    SELECT kind, key FROM grantdoctor_records
                    WHERE kind = 'requests' AND at < $1 LIMIT $2)",
                stale_rates,
            ),
            (
                "DELETE FROM grantdoctor_records WHERE (kind, key) IN (
                    SELECT kind, key FROM grantdoctor_records WHERE at < $1 LIMIT $2)",
                oldest,
            ),
        ];
        for (statement, before) in past {
            loop {
                let n = client.execute(statement, &[&before, &PRUNE_CHUNK]).await?;
                deleted += n;
                if (n as i64) < PRUNE_CHUNK {
                    break;
                }
            }
        }
        loop {
            let n = client
                .execute(
                    "DELETE FROM grantdoctor_records WHERE (kind, key) IN (
                        SELECT kind, key FROM grantdoctor_records
                        ORDER BY at DESC OFFSET $1 LIMIT $2)",
                    &[&max_rows, &PRUNE_CHUNK],
                )
                .await?;
            deleted += n;
            if (n as i64) < PRUNE_CHUNK {
                break;
            }
        }
        Ok(())
    }
    .await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&PRUNE_LOCK])
        .await;
    outcome.map(|()| deleted)
}

/// Records of `kind` read as (key, value, at).
fn rows_of(kind: &'static str, found: Vec<tokio_postgres::Row>) -> Vec<Row> {
    found
        .into_iter()
        .map(|r| Row {
            kind,
            key: r.get(0),
            value: r.get(1),
            at: r.get(2),
        })
        .collect()
}

/// One page of the change feed: other writers' rows after the cursor, and the highest
/// number committed when it was read.
struct Page {
    rows: Vec<Row>,
    /// The number of the last row read, when any was.
    last: Option<i64>,
    head: i64,
}

/// What a catch-up read leaves out.
struct Skip {
    kind: &'static str,
    /// Rows of `kind` numbered up to this; negative: up to the head of this read.
    through: i64,
    /// Codes and request rates recorded before this (an hour ago).
    codes_before: i64,
}

impl Skip {
    const NOTHING: Skip = Skip {
        kind: "",
        through: 0,
        codes_before: i64::MIN,
    };
}

/// Reads a page in one statement, so the head and the rows come from one snapshot: every
/// row numbered up to the head that another replica wrote is in the page (unless it is
/// full). A replica's own rows, the most of what it would read back, stay on the server.
async fn feed(db: &Db, cursor: i64, replica: &str, skip: &Skip) -> Result<Page, StoreError> {
    let client = db.client()?;
    // Planned on every run: its generic plan (a prepared statement's, after five runs) took
    // 15 times as long under load, not knowing how near the head the cursor is.
    let found = client
        .query_typed(
            "SELECT h.head, r.kind, r.key, r.value, r.at, r.seq
             FROM (SELECT coalesce(max(seq), 0) AS head FROM grantdoctor_records) h
             LEFT JOIN LATERAL (
                 SELECT kind, key, value, at, seq FROM grantdoctor_records
                 WHERE seq > $1 AND seq <= h.head AND writer <> $2
                   AND (kind <> $4 OR seq > CASE WHEN $5 < 0 THEN h.head ELSE $5 END)
                   AND (kind NOT IN ('code', 'requests') OR at >= $6)
                 ORDER BY seq LIMIT $3
             ) r ON true
             ORDER BY r.seq",
            &[
                (&cursor, Type::INT8),
                (&replica, Type::TEXT),
                (&FEED_PAGE, Type::INT8),
                (&skip.kind, Type::TEXT),
                (&skip.through, Type::INT8),
                (&skip.codes_before, Type::INT8),
            ],
        )
        .await?;
    let mut page = Page {
        rows: Vec::with_capacity(found.len()),
        last: None,
        head: cursor,
    };
    for r in found {
        page.head = r.get(0);
        let Some(seq) = r.get::<_, Option<i64>>(5) else {
            continue;
        };
        page.last = Some(seq);
        let kind: String = r.get(1);
        if let Some(kind) = record_kind(&kind) {
            page.rows.push(Row {
                kind,
                key: r.get(2),
                value: r.get(3),
                at: r.get(4),
            });
        }
    }
    Ok(page)
}

impl RecordStore for PgRecords {
    fn write(&self, rows: Vec<Row>) {
        if !rows.is_empty() {
            let _ = self.tx.try_send(Batch {
                rows,
                sealed: Vec::new(),
                committed: None,
            });
        }
    }

    fn write_durably(&self, rows: Vec<Row>) -> Option<Commit> {
        let (done, commit) = oneshot::channel();
        self.tx
            .try_send(Batch {
                rows,
                sealed: Vec::new(),
                committed: Some(done),
            })
            .ok()?;
        Some(Commit::new(commit))
    }

    fn changes(&self) -> crate::ledger::backend::Changes<'_> {
        Box::pin(self.read_changes())
    }

    fn fetch(&self, kind: &'static str, keys: Vec<String>) -> crate::ledger::backend::Changes<'_> {
        Box::pin(self.fetch_rows(kind, keys))
    }

    fn keys_after(&self, kind: &'static str, after: String) -> crate::ledger::backend::Keys<'_> {
        Box::pin(self.keys_page(kind, after))
    }

    fn recent(&self, kind: &'static str, limit: i64) -> crate::ledger::backend::Changes<'_> {
        Box::pin(self.recent_rows(kind, limit))
    }

    fn shared(&self) -> bool {
        true
    }

    fn writer(&self) -> &str {
        self.announced.own()
    }

    fn catching_up(&self) -> bool {
        !self.caught_up.load(Ordering::Acquire)
    }
}

/// The writer task's state.
struct Writer {
    db: Arc<Db>,
    replica: Arc<str>,
    outage: Outage,
    pending: Vec<Row>,
    sealed: Vec<ToSeal>,
    waiting: Vec<oneshot::Sender<bool>>,
    retry: Option<Duration>,
    op_timeout: Duration,
}

impl Writer {
    fn take(&mut self, batch: Batch) {
        self.pending.extend(batch.rows);
        self.sealed.extend(batch.sealed);
        self.waiting.extend(batch.committed);
    }

    /// Lets write-behind rows gather for a moment, unless someone waits for a commit: a
    /// waited batch arriving meanwhile ends the gathering at once.
    async fn gather(&mut self, rx: &mut mpsc::Receiver<Batch>) {
        let until = tokio::time::Instant::now() + GATHER;
        while self.waiting.is_empty() {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(batch)) => self.take(batch),
                Ok(None) | Err(_) => return,
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Batch>) {
        loop {
            let received = match self.retry {
                None => rx.recv().await,
                Some(pause) => match tokio::time::timeout(pause, rx.recv()).await {
                    Ok(batch) => batch,
                    Err(_) => {
                        self.commit().await;
                        continue;
                    }
                },
            };
            let Some(batch) = received else {
                if !self.pending.is_empty() || !self.sealed.is_empty() {
                    self.commit().await;
                }
                return;
            };
            self.take(batch);
            if self.retry.is_none() {
                self.gather(&mut rx).await;
            }
            while let Ok(more) = rx.try_recv() {
                self.take(more);
            }
            self.commit().await;
        }
    }

    async fn commit(&mut self) {
        fold(&mut self.pending);
        if self.retry.is_some()
            && let Ok(client) = self.db.client()
        {
            // The failed attempt may have been cut off inside its transaction.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        let written = self
            .outage
            .bounded_on(
                &self.db,
                "write",
                self.op_timeout,
                write_batch(&self.db, &self.replica, &self.pending, &self.sealed),
            )
            .await;
        if written.is_some() {
            self.pending.clear();
            self.sealed.clear();
            self.retry = None;
            for waiter in self.waiting.drain(..) {
                let _ = waiter.send(true);
            }
            return;
        }
        // The answer goes out anyway: the record is in this replica's memory, and is retried.
        for waiter in self.waiting.drain(..) {
            let _ = waiter.send(false);
        }
        self.retry = Some(
            self.retry
                .map_or(RETRY_FIRST, |pause| (pause * 2).min(RETRY_MAX)),
        );
    }
}

async fn write_batch(
    db: &Db,
    replica: &str,
    rows: &[Row],
    sealed: &[ToSeal],
) -> Result<(), StoreError> {
    let sealing = lease::sealed_many(sealed);
    if rows.is_empty() && sealing.is_none() {
        return Ok(());
    }
    let client = db.client()?;
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let values: Vec<Option<&str>> = rows.iter().map(|r| r.value.as_deref()).collect();
    let ats: Vec<i64> = rows.iter().map(|r| r.at).collect();
    // Prepared first (once per connection): their round trips must not fall between the
    // statements sent together below.
    let insert = client
        .prepared(
            "INSERT INTO grantdoctor_records (kind, key, value, at, seq, writer)
             SELECT k, c, v, a, nextval('grantdoctor_records_seq'), $5
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) AS t(k, c, v, a)
             ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value,
                at = excluded.at, seq = excluded.seq, writer = excluded.writer",
            &[
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::INT8_ARRAY,
                Type::TEXT,
            ],
        )
        .await?;
    let seal = match &sealing {
        Some(many) => Some(client.prepared(many.sql, &many.types).await?),
        None => None,
    };
    // Sent together (the client pipelines statements issued at once), in order (`biased`):
    // one round trip per batch. A failing statement aborts the transaction; its COMMIT then
    // rolls back. A commit of records is announced to the other replicas' readers
    // (delivered only if it commits).
    let begin = if rows.is_empty() {
        "BEGIN".to_owned()
    } else {
        format!(
            "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}); NOTIFY {}, '{}'",
            announce::CHANNEL,
            replica.replace('\'', "''")
        )
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&kinds, &keys, &values, &ats, &replica];
    let records = async {
        if rows.is_empty() {
            return Ok(0);
        }
        client.execute(&insert, &params).await
    };
    let replays = async {
        match (&seal, &sealing) {
            (Some(statement), Some(many)) => {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&many.ids, &many.answers, &many.keep_ms];
                client.execute(statement, &params).await
            }
            _ => Ok(0),
        }
    };
    let written = tokio::try_join!(
        biased;
        client.batch_execute(&begin),
        records,
        replays,
        client.batch_execute("COMMIT"),
    );
    if written.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    written.map(drop).map_err(StoreError::from)
}
