//! Leases nobody will land. A take whose answer never reached its exchange (the statement
//! outlived its bound, or the connection dropped after the server may have committed it)
//! leaves the exchange going on alone; a landing that failed leaves its lease held. Either
//! would hold every identical refresh, on every replica and on this one, for the whole
//! lease (`--response-timeout` plus a margin) once the store answers again. Each is freed
//! here by its holder name, unique to one take, so a lease taken since is never touched.
//!
//! A timed-out statement may still run on the server after its caller gave up, so an
//! orphan is freed again until a round that began [`SETTLED`] after it succeeded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Coordination;
use super::lease::{self, Take};

/// The most orphans waiting to be freed: past it the oldest are left to expire.
const MOST: usize = 4096;
/// How long after an orphan's failure a successful round retires it.
const SETTLED: Duration = Duration::from_secs(2);
/// Pause before a round, so that a burst of failures shares it.
const GATHER: Duration = Duration::from_millis(250);
/// Pause between rounds while some wait.
const AGAIN: Duration = Duration::from_millis(500);

struct Orphan {
    take: Take,
    since: Instant,
}

/// Orphaned leases waiting to be freed.
#[derive(Default)]
pub struct Orphans {
    queued: Mutex<VecDeque<Orphan>>,
    wake: Notify,
}

impl Orphans {
    /// Queues a lease this replica may hold without anyone to land it.
    pub fn add(&self, id: &[u8], holder: &str) {
        let mut queued = self.lock();
        if queued.len() == MOST {
            queued.pop_front();
        }
        queued.push_back(Orphan {
            take: Take {
                id: id.to_vec(),
                holder: holder.to_owned(),
            },
            since: Instant::now(),
        });
        drop(queued);
        self.wake.notify_one();
    }

    /// Those still worth freeing at `now`; the ones whose lease has run out anyway are
    /// dropped.
    fn due(&self, now: Instant, lease: Duration) -> Vec<Take> {
        let mut queued = self.lock();
        queued.retain(|o| now.duration_since(o.since) < lease);
        queued.iter().map(|o| o.take.clone()).collect()
    }

    /// After a round that began at `began` succeeded: those settled before it are done.
    fn retire(&self, began: Instant) {
        self.lock()
            .retain(|o| began.saturating_duration_since(o.since) < SETTLED);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Orphan>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Frees orphans as they come, for as long as the process runs.
pub(super) async fn free(orphans: Arc<Orphans>, coordination: Arc<Coordination>, lease: Duration) {
    loop {
        orphans.wake.notified().await;
        loop {
            tokio::time::sleep(GATHER).await;
            let began = Instant::now();
            let due = orphans.due(began, lease);
            if due.is_empty() {
                break;
            }
            let freed = coordination
                .run("lease", |c| async move { lease::free_many(&c, &due).await })
                .await;
            if let Some(n) = freed {
                if n > 0 {
                    tracing::info!(
                        event = "lease_freed",
                        leases = n,
                        reason =
                            "a take or landing whose answer was lost: no exchange will land it"
                    );
                }
                orphans.retire(began);
            }
            tokio::time::sleep(AGAIN).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orphan_is_kept_until_a_round_after_it_settled_or_its_lease_ran_out() {
        let orphans = Orphans::default();
        orphans.add(b"id", "r-1");
        let now = Instant::now();
        assert_eq!(orphans.due(now, Duration::from_secs(60)).len(), 1);
        orphans.retire(now);
        assert_eq!(
            orphans.due(now, Duration::from_secs(60)).len(),
            1,
            "a round right after the failure may have run before the take committed"
        );
        orphans.retire(now + SETTLED);
        assert!(orphans.due(now, Duration::from_secs(60)).is_empty());

        orphans.add(b"id", "r-2");
        let later = Instant::now() + Duration::from_secs(61);
        assert!(orphans.due(later, Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn past_the_bound_the_oldest_orphans_are_left_to_expire() {
        let orphans = Orphans::default();
        for n in 0..=MOST {
            orphans.add(b"id", &format!("r-{n}"));
        }
        let due = orphans.due(Instant::now(), Duration::from_secs(60));
        assert_eq!(due.len(), MOST);
        assert_eq!(due[0].holder, "r-1");
    }
}
