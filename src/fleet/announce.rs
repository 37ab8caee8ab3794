//! Whether another replica wrote since this one last read the change feed. Every write
//! transaction announces itself on a channel (`NOTIFY`, which the server delivers only once
//! the transaction committed) with its writer's name, and the reading connection listens.
//! The feed is read when another writer announced a commit since the last read began, when
//! the connection was not listening (what is sent to a connection that is down is lost, so a
//! reconnection counts as an announcement), and at least every [`REREAD_EVERY`]: a replica
//! alone on its store, or whose peers are idle, asks the database nothing before it judges.
//!
//! What a peer committed is seen here once its notification arrived: on a live loopback or
//! LAN connection well under a millisecond after the commit. A twin of a refresh in flight on
//! another replica is covered in the meantime by that refresh's lease, which lasts until its
//! answer and its record are in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::db::{Heard, Sink};

/// The channel write transactions announce themselves on.
pub const CHANNEL: &str = "grantdoctor_records";
/// The longest a replica goes without reading the feed while it judges exchanges.
pub const REREAD_EVERY: Duration = Duration::from_secs(1);

/// What the listening connection heard, against what the last read covered.
pub struct Announcements {
    own: Arc<str>,
    listening: AtomicBool,
    /// Commits other writers announced, and reconnections (which may have hidden some).
    heard: AtomicU64,
    /// `heard` when the last complete read began; `u64::MAX` before the first.
    read_through: AtomicU64,
    /// When the last complete read began, in milliseconds since `epoch`.
    read_at: AtomicU64,
    epoch: Instant,
}

/// A read begun: what it will cover once complete.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    heard: u64,
    at: u64,
}

impl Announcements {
    /// `own`: this replica's writer name; its own announcements are not news to it.
    pub fn new(own: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            own,
            listening: AtomicBool::new(false),
            heard: AtomicU64::new(0),
            read_through: AtomicU64::new(u64::MAX),
            read_at: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// This replica's writer name.
    pub fn own(&self) -> &Arc<str> {
        &self.own
    }

    /// What the listening connection reports to.
    pub fn sink(self: &Arc<Self>) -> Sink {
        let me = self.clone();
        Arc::new(move |heard| me.hear(heard))
    }

    fn hear(&self, heard: Heard<'_>) {
        match heard {
            Heard::Listening => {
                self.heard.fetch_add(1, Ordering::SeqCst);
                self.listening.store(true, Ordering::SeqCst);
            }
            Heard::Deaf => self.listening.store(false, Ordering::SeqCst),
            Heard::Notified(writer) if writer != &*self.own => {
                self.heard.fetch_add(1, Ordering::SeqCst);
            }
            Heard::Notified(_) => {}
        }
    }

    /// Whether a read now would find nothing the last one did not.
    pub fn quiet(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
            && self.heard.load(Ordering::SeqCst) == self.read_through.load(Ordering::SeqCst)
            && self.since_epoch_ms()
                < self.read_at.load(Ordering::SeqCst) + REREAD_EVERY.as_millis() as u64
    }

    /// Marks a read's beginning; pass it to [`Announcements::read`] once the read is whole.
    pub fn reading(&self) -> Reading {
        Reading {
            heard: self.heard.load(Ordering::SeqCst),
            at: self.since_epoch_ms(),
        }
    }

    /// A read that began at `reading` completed: it saw every commit announced before.
    pub fn read(&self, reading: Reading) {
        self.read_at.store(reading.at, Ordering::SeqCst);
        self.read_through.store(reading.heard, Ordering::SeqCst);
    }

    fn since_epoch_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Arc<Announcements> {
        Announcements::new(Arc::from("me"))
    }

    #[test]
    fn the_first_read_is_never_skipped() {
        let a = fresh();
        assert!(!a.quiet(), "before listening");
        (a.sink())(Heard::Listening);
        assert!(!a.quiet(), "listening, but nothing read yet");
        a.read(a.reading());
        assert!(a.quiet());
    }

    #[test]
    fn another_writers_commit_calls_for_a_read_and_this_replicas_own_does_not() {
        let a = fresh();
        let sink = a.sink();
        sink(Heard::Listening);
        a.read(a.reading());
        sink(Heard::Notified("me"));
        assert!(a.quiet(), "its own commit is not news");
        sink(Heard::Notified("peer"));
        assert!(!a.quiet());
        a.read(a.reading());
        assert!(a.quiet());
    }

    #[test]
    fn a_commit_announced_while_a_read_runs_calls_for_another() {
        let a = fresh();
        let sink = a.sink();
        sink(Heard::Listening);
        let reading = a.reading();
        sink(Heard::Notified("peer"));
        a.read(reading);
        assert!(!a.quiet(), "the read may have begun before that commit");
    }

    #[test]
    fn a_connection_that_stopped_listening_reads_every_time_until_it_listens_again() {
        let a = fresh();
        let sink = a.sink();
        sink(Heard::Listening);
        a.read(a.reading());
        sink(Heard::Deaf);
        a.read(a.reading());
        assert!(!a.quiet(), "deaf: a peer's commit would go unheard");
        sink(Heard::Listening);
        assert!(
            !a.quiet(),
            "what was sent while it was down is lost: read once"
        );
        a.read(a.reading());
        assert!(a.quiet());
    }

    #[test]
    fn a_quiet_replica_still_reads_once_its_last_read_is_old() {
        let a = fresh();
        (a.sink())(Heard::Listening);
        a.read(Reading {
            heard: a.heard.load(Ordering::SeqCst),
            at: 0,
        });
        std::thread::sleep(REREAD_EVERY + Duration::from_millis(20));
        assert!(!a.quiet());
    }
}
