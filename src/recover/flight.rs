//! Single flight: concurrent callers with the same key share one piece of work. The first
//! caller leads and does it; the others wait for its result. A leader that is cancelled
//! (its client went away) hands the work to the next waiter instead of failing everyone.
//!
//! Must never: let a new arrival start a second flight while one is running, nor keep a key
//! after its flight ended (a finished flight's result is the caller's to cache, not ours).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The flights in progress, by key.
#[derive(Debug)]
pub struct Flights<K, V> {
    running: Arc<Mutex<HashMap<K, watch::Receiver<Option<V>>>>>,
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Self {
            running: Arc::default(),
        }
    }
}

/// What a caller is to do.
pub enum Joined<K: Hash + Eq + Clone, V: Clone> {
    /// Do the work, then [`Leader::land`] its result.
    Lead(Leader<K, V>),
    /// Another caller did it: here is its result.
    Follow(V),
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    /// Joins the flight for `key`, or starts one.
    pub async fn join(&self, key: K) -> Joined<K, V> {
        loop {
            let mut waiting = {
                let mut running = self.lock();
                match running.get(&key) {
                    Some(receiver) => receiver.clone(),
                    None => {
                        let (sender, receiver) = watch::channel(None);
                        running.insert(key.clone(), receiver);
                        return Joined::Lead(Leader {
                            key,
                            sender,
                            running: self.running.clone(),
                        });
                    }
                }
            };
            match waiting.wait_for(Option::is_some).await {
                Ok(result) => {
                    if let Some(value) = result.clone() {
                        return Joined::Follow(value);
                    }
                }
                // The leader was dropped without a result: lead (or follow the next leader).
                Err(_) => continue,
            }
        }
    }

    /// Flights running now (for tests and metrics).
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, watch::Receiver<Option<V>>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The caller doing the work. Dropping it without landing lets a waiter take over.
pub struct Leader<K: Hash + Eq, V> {
    key: K,
    sender: watch::Sender<Option<V>>,
    running: Arc<Mutex<HashMap<K, watch::Receiver<Option<V>>>>>,
}

impl<K: Hash + Eq, V> Leader<K, V> {
    /// Gives every waiter the result and ends the flight.
    pub fn land(self, value: V) {
        self.sender.send_replace(Some(value));
        // Drop (below) removes the key after the value is visible to waiters.
    }
}

impl<K: Hash + Eq, V> Drop for Leader<K, V> {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running
            .get(&self.key)
            .is_some_and(|r| r.same_channel(&self.sender.subscribe()))
        {
            running.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_piece_of_work() {
        let flights: Arc<Flights<&str, usize>> = Arc::default();
        let work = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, work) = (flights.clone(), work.clone());
            tasks.push(tokio::spawn(async move {
                match flights.join("k").await {
                    Joined::Lead(leader) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        let n = work.fetch_add(1, Ordering::SeqCst) + 1;
                        leader.land(n);
                        n
                    }
                    Joined::Follow(n) => n,
                }
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 1);
        }
        assert_eq!(work.load(Ordering::SeqCst), 1);
        assert_eq!(flights.running(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_the_work_to_a_waiter() {
        let flights: Arc<Flights<&str, &str>> = Arc::default();
        let Joined::Lead(first) = flights.join("k").await else {
            panic!("the first caller leads")
        };
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move {
                match flights.join("k").await {
                    Joined::Lead(leader) => {
                        leader.land("second");
                        "led"
                    }
                    Joined::Follow(v) => v,
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(first);
        assert_eq!(waiter.await.unwrap(), "led");
        assert_eq!(flights.running(), 0);
    }
}
