//! One process per data directory. The ledger database and the fingerprint key under
//! `--data-dir` are written by one process: a second one on the same directory would
//! interleave writes, prune the other's history and race it for the first key. The lock is an
//! OS advisory lock (`flock`) on `<data-dir>/grantdoctor.lock`, which the kernel releases when
//! the holder exits however it exits, so a crash never leaves a stale lock to clean by hand.
//! The file holds the holder's pid, only so the refusal can name it.
//!
//! Must never: delete the lock file (a process that opened it before the unlink would lock a
//! file nobody else sees), or wait for the lock (a second process refuses at once).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "grantdoctor.lock";

/// Held for as long as the process uses the data directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data directory {dir} is in use by grantdoctor {holder} (lock {lock}): stop it or use another --data-dir"
    )]
    Held {
        dir: String,
        lock: String,
        holder: String,
    },
    #[error("data directory {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// Creates `dir` if needed and takes its lock, or says who holds it.
pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| LockError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // No truncate on open: until the lock is ours, the file's content is the holder's pid.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            // The holder writes its pid right after locking; in between there is none to name.
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "(its pid not written yet)".to_owned(),
            };
            return Err(LockError::Held {
                dir: dir.display().to_string(),
                lock: path.display().to_string(),
                holder,
            });
        }
        Err(errno) => return Err(io(&path)(errno.into())),
    }
    // Best effort: the pid only names the holder in a refusal, and a full disk must not stop a
    // start that the lock itself allows. Written over the old content, then cut to length, so
    // it needs no new block when a pid was there before.
    let pid = format!("{}\n", std::process::id());
    let _ = file
        .rewind()
        .and_then(|()| file.write_all(pid.as_bytes()))
        .and_then(|()| file.set_len(pid.len() as u64));
    Ok(DataDirLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path()).unwrap();
        // flock conflicts between open file descriptions, even within one process.
        let err = acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains(LOCK_FILE),
            "{err}"
        );
        drop(held);
        acquire(dir.path()).unwrap();
    }
}
