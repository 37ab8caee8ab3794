//! The ledger's redo journal: the rows of an exchange that issues a refresh token (whose
//! loss would let the guard forward a dead token after a crash), appended to a file before
//! they are queued for SQLite, so a rotation is as durable as a SQLite commit (in the kernel,
//! surviving the process being killed) the moment the exchange answers, without waiting for
//! the writer thread. Other rows are not journaled: they reach the database within
//! milliseconds, and an exchange that only fails costs no more than it did.
//!
//! Two files take turns. Rows go to the active one, each batch in one `write`. After each
//! commit the writer reports which batches it committed; once every batch of the inactive
//! file is committed, that file is emptied and becomes the active one again, under a new
//! generation written as its first line. At start, both files are replayed in generation
//! order into the database before it is read, then emptied. A replayed row replaces a
//! record only if it is at least as recent (records hold the latest state of a key, stamped
//! with its time), so a row committed long ago never undoes a newer write that was not
//! journaled.
//!
//! Must never: hold anything the database would not (rows are the same records), or let a
//! row reach the writer before it is in the journal.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::store::Row;

/// The two files, beside the database.
pub(crate) fn paths(database: &Path) -> [PathBuf; 2] {
    let name = database
        .file_stem()
        .map_or_else(|| "ledger".into(), |s| s.to_string_lossy().into_owned());
    [0, 1].map(|i| database.with_file_name(format!("{name}.redo.{i}")))
}

/// A row as the journal holds it. Written, it borrows the row; read back, it borrows the line
/// where it can, and owns what JSON escaped (a value is JSON text, so it usually is).
#[derive(serde::Serialize, serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
    at: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    generation: u64,
}

/// Which file a batch went to, for the writer to report back once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

pub(crate) struct Journal {
    files: Mutex<Files>,
}

struct Files {
    files: [File; 2],
    active: usize,
    /// The active file's generation; the inactive one's is one less.
    generation: u64,
    appended: [u64; 2],
    committed: [u64; 2],
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal(..)")
    }
}

impl Journal {
    /// Reads what the files hold (oldest generation first) and empties them: the caller
    /// writes those rows into the database before it reads it.
    pub(crate) fn open(database: &Path) -> std::io::Result<(Self, Vec<Row>)> {
        let paths = paths(database);
        let mut held: Vec<(u64, Vec<Row>)> = Vec::new();
        for path in &paths {
            if let Some(read) = read(path)? {
                held.push(read);
            }
        }
        held.sort_by_key(|(generation, _)| *generation);
        let generation = held.last().map_or(0, |(g, _)| *g) + 1;
        let rows = held.into_iter().flat_map(|(_, rows)| rows).collect();
        let open = |path: &PathBuf| OpenOptions::new().create(true).append(true).open(path);
        let files = [open(&paths[0])?, open(&paths[1])?];
        Ok((
            Self {
                files: Mutex::new(Files {
                    files,
                    active: 0,
                    generation,
                    appended: [0; 2],
                    committed: [0; 2],
                }),
            },
            rows,
        ))
    }

    /// Empties both files once their rows are in the database, and starts the first
    /// generation.
    pub(crate) fn start(&self) -> std::io::Result<()> {
        let mut files = self.lock();
        for file in &files.files {
            file.set_len(0)?;
        }
        let generation = files.generation;
        let active = files.active;
        write_header(&mut files.files[active], generation)
    }

    /// Appends a batch, in one write; the caller queues it for the writer only after.
    pub(crate) fn append(&self, rows: &[Row]) -> std::io::Result<Ticket> {
        let mut text = String::with_capacity(rows.len() * 160);
        for row in rows {
            let line = Line {
                kind: Cow::Borrowed(row.kind),
                key: Cow::Borrowed(&row.key),
                value: row.value.as_deref().map(Cow::Borrowed),
                at: row.at,
            };
            text.push_str(&serde_json::to_string(&line).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let mut files = self.lock();
        let active = files.active;
        files.files[active].write_all(text.as_bytes())?;
        files.appended[active] += 1;
        Ok(Ticket(files.generation))
    }

    /// The writer committed these batches: empties the inactive file once all of its batches
    /// are in, and then turns to it if the active one holds anything.
    pub(crate) fn committed(&self, tickets: &[Ticket]) -> std::io::Result<()> {
        let mut files = self.lock();
        let (active, generation) = (files.active, files.generation);
        let inactive = 1 - active;
        for Ticket(of) in tickets {
            if *of == generation {
                files.committed[active] += 1;
            } else if *of + 1 == generation {
                files.committed[inactive] += 1;
            }
        }
        if files.appended[inactive] != files.committed[inactive] {
            return Ok(());
        }
        if files.appended[inactive] > 0 {
            files.files[inactive].set_len(0)?;
            files.appended[inactive] = 0;
            files.committed[inactive] = 0;
        }
        if files.appended[active] == 0 {
            return Ok(());
        }
        write_header(&mut files.files[inactive], generation + 1)?;
        files.active = inactive;
        files.generation = generation + 1;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn write_header(file: &mut File, generation: u64) -> std::io::Result<()> {
    let header = serde_json::to_string(&Header { generation }).map_err(std::io::Error::other)?;
    file.write_all(format!("{header}\n").as_bytes())
}

/// A file's generation and rows; `None` when it is missing or empty. A line that does not
/// parse ends the file: it can only be the last write, cut short.
fn read(path: &Path) -> std::io::Result<Option<(u64, Vec<Row>)>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut lines = BufReader::new(file).lines();
    let Some(Ok(first)) = lines.next() else {
        return Ok(None);
    };
    let Ok(Header { generation }) = serde_json::from_str(&first) else {
        return Ok(None);
    };
    let mut rows = Vec::new();
    for line in lines {
        let Ok(line) = line else { break };
        let Ok(Line {
            kind,
            key,
            value,
            at,
        }) = serde_json::from_str(&line)
        else {
            break;
        };
        let Some(kind) = super::persist::kind(&kind) else {
            continue;
        };
        rows.push(Row {
            kind,
            key: key.into_owned(),
            value: value.map(Cow::into_owned),
            at,
        });
    }
    Ok(Some((generation, rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: Option<&str>) -> Row {
        Row {
            kind: "refresh",
            key: key.into(),
            value: value.map(str::to_owned),
            at: 1,
        }
    }

    fn reopen(db: &Path) -> Vec<(String, Option<String>)> {
        let (_, rows) = Journal::open(db).unwrap();
        rows.into_iter().map(|r| (r.key, r.value)).collect()
    }

    #[test]
    fn values_holding_json_come_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite3");
        let (journal, _) = Journal::open(&db).unwrap();
        journal.start().unwrap();
        let value = r#"{"family":"a\"b","at":[1,2]}"#;
        journal.append(&[row("k", Some(value))]).unwrap();
        drop(journal);
        assert_eq!(reopen(&db), [("k".into(), Some(value.into()))]);
    }

    #[test]
    fn rows_not_known_committed_are_replayed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite3");
        let (journal, rows) = Journal::open(&db).unwrap();
        assert!(rows.is_empty());
        journal.start().unwrap();
        let first = journal.append(&[row("a", Some("1"))]).unwrap();
        journal.committed(&[first]).unwrap();
        // The first file still holds "a" until the second's batches are in too.
        journal
            .append(&[row("a", Some("2")), row("b", None)])
            .unwrap();
        drop(journal);
        assert_eq!(
            reopen(&db),
            [
                ("a".into(), Some("1".into())),
                ("a".into(), Some("2".into())),
                ("b".into(), None)
            ]
        );
    }

    #[test]
    fn a_file_whose_batches_are_all_committed_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite3");
        let (journal, _) = Journal::open(&db).unwrap();
        journal.start().unwrap();
        let first = journal.append(&[row("a", Some("1"))]).unwrap();
        journal.committed(&[first]).unwrap();
        let second = journal.append(&[row("b", Some("2"))]).unwrap();
        journal.committed(&[second]).unwrap();
        let third = journal.append(&[row("c", Some("3"))]).unwrap();
        assert_ne!(first, third);
        drop(journal);
        // "a" is gone with its file; "b" (committed, its file still active at the time) is
        // written again, harmlessly, before what came after.
        assert_eq!(
            reopen(&db),
            [
                ("b".into(), Some("2".into())),
                ("c".into(), Some("3".into()))
            ]
        );
    }

    #[test]
    fn a_cut_last_line_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite3");
        let (journal, _) = Journal::open(&db).unwrap();
        journal.start().unwrap();
        journal.append(&[row("a", Some("1"))]).unwrap();
        drop(journal);
        let [first, _] = paths(&db);
        let mut file = OpenOptions::new().append(true).open(first).unwrap();
        file.write_all(br#"{"kind":"refresh","key":"b","val"#)
            .unwrap();
        assert_eq!(reopen(&db), [("a".into(), Some("1".into()))]);
    }
}
