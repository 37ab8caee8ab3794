//! Where the ledger's records go: the one interface its two backends share. The memory
//! layer ([`super::GrantLedger`]) records and answers views; a backend keeps the records
//! (`kind`, `key`, JSON value) durable and, when several replicas share it, hands each the
//! records the others wrote, so that every replica's views see the same history.
//!
//! - `store::Store`: the embedded SQLite database under `--data-dir` (one process).
//! - `crate::fleet::records::PgRecords`: PostgreSQL shared by replicas (`--store postgres://…`).

use std::future::Future;
use std::pin::Pin;

use super::store::{Commit, Row};

/// Records written by others since the last call, oldest first; `None` when nothing could
/// be read (the caller goes on with what it holds).
pub type Changes<'a> = Pin<Box<dyn Future<Output = Option<Vec<Row>>> + Send + 'a>>;

/// A page of keys; `None` when nothing could be read.
pub type Keys<'a> = Pin<Box<dyn Future<Output = Option<Vec<String>>> + Send + 'a>>;

/// A place that keeps the ledger's records.
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// Queues rows; they are durable within milliseconds.
    fn write(&self, rows: Vec<Row>);

    /// Queues rows and returns their commit, to wait for before answering.
    fn write_durably(&self, rows: Vec<Row>) -> Option<Commit>;

    /// What other writers recorded since the last call.
    fn changes(&self) -> Changes<'_> {
        Box::pin(std::future::ready(None))
    }

    /// The records of `kind` under `keys` that the store holds, for a ledger that keeps
    /// only some of them in memory; `None` when nothing could be read.
    fn fetch(&self, kind: &'static str, keys: Vec<String>) -> Changes<'_> {
        let _ = (kind, keys);
        Box::pin(std::future::ready(None))
    }

    /// A page of the keys of `kind` after `after`, in key order (empty at the end); `None`
    /// when nothing could be read. For a ledger that learns which records the store holds
    /// without reading them.
    fn keys_after(&self, kind: &'static str, after: String) -> Keys<'_> {
        let _ = (kind, after);
        Box::pin(std::future::ready(None))
    }

    /// The `limit` records of `kind` changed most recently, newest first; `None` when
    /// nothing could be read. For a view of what every writer recorded.
    fn recent(&self, kind: &'static str, limit: i64) -> Changes<'_> {
        let _ = (kind, limit);
        Box::pin(std::future::ready(None))
    }

    /// Whether [`RecordStore::changes`] is still handing over the history a page at a time
    /// (a shared store's first read).
    fn catching_up(&self) -> bool {
        false
    }

    /// The name this process writes under, among the store's writers (empty where it is
    /// the only one): a count that every writer adds to keeps one record per writer.
    fn writer(&self) -> &str {
        ""
    }

    /// Whether other processes write here too: the ledger then takes in their records
    /// ([`RecordStore::changes`]) before each exchange is judged.
    fn shared(&self) -> bool {
        false
    }
}

impl<T: RecordStore> RecordStore for std::sync::Arc<T> {
    fn write(&self, rows: Vec<Row>) {
        (**self).write(rows)
    }
    fn write_durably(&self, rows: Vec<Row>) -> Option<Commit> {
        (**self).write_durably(rows)
    }
    fn changes(&self) -> Changes<'_> {
        (**self).changes()
    }
    fn fetch(&self, kind: &'static str, keys: Vec<String>) -> Changes<'_> {
        (**self).fetch(kind, keys)
    }
    fn keys_after(&self, kind: &'static str, after: String) -> Keys<'_> {
        (**self).keys_after(kind, after)
    }
    fn recent(&self, kind: &'static str, limit: i64) -> Changes<'_> {
        (**self).recent(kind, limit)
    }
    fn shared(&self) -> bool {
        (**self).shared()
    }
    fn writer(&self) -> &str {
        (**self).writer()
    }
    fn catching_up(&self) -> bool {
        (**self).catching_up()
    }
}
