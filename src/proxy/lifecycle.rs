//! How long a client connection lives, and what it holds while it does.
//!
//! A connection's place under `--max-connections` (and the drain's wait) is a [`Held`] that
//! moves with it: from the listener's HTTP/1.1 connection into the tunnel a CONNECT opens,
//! intercepted or blind, so that a tunnel is a connection until it closes. Intercepted
//! connections also track their requests: with none in flight for the header timeout they
//! are closed, and a client that cancels streams after dispatch faster than
//! [`MAX_CANCELLED`] per [`CANCEL_WINDOW`] gets a GOAWAY.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// A connection's permit and its share of the active-connections gauge, released when the
/// last holder (the connection or the tunnel it became) is gone.
pub struct Held {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Held {
    pub fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.active_connections.inc();
        Arc::new(Self {
            _permit: permit,
            metrics,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.active_connections.dec();
    }
}

/// Completes once the proxy starts draining.
pub async fn until_draining(draining: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not across an await.
    let _ = draining.wait_for(|d| *d).await;
}

/// The request extension through which a CONNECT hands its connection's [`Held`] to the
/// tunnel task.
#[derive(Clone)]
pub struct Hold {
    _held: Arc<Held>,
}

impl Hold {
    pub fn new(held: Arc<Held>) -> Self {
        Self { _held: held }
    }
}

/// Streams cancelled by the client after dispatch, per window, before the connection is told
/// to go away. Each one may already have cost an upstream request.
pub const MAX_CANCELLED: u32 = 100;
pub const CANCEL_WINDOW: Duration = Duration::from_secs(10);

/// The requests of one intercepted connection.
pub struct Requests {
    state: Mutex<RequestState>,
    abuse: Notify,
}

struct RequestState {
    in_flight: u32,
    served: u64,
    /// When the last request started or ended (or the connection opened).
    last_change: Instant,
    window_start: Instant,
    cancelled: u32,
    flagged: bool,
}

impl Default for Requests {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(RequestState {
                in_flight: 0,
                served: 0,
                last_change: now,
                window_start: now,
                cancelled: 0,
                flagged: false,
            }),
            abuse: Notify::new(),
        }
    }
}

impl Requests {
    fn lock(&self) -> std::sync::MutexGuard<'_, RequestState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a request dispatched; the guard notes how it ended.
    pub fn start(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.served += 1;
        state.last_change = Instant::now();
        InFlight {
            requests: self.clone(),
            finished: false,
        }
    }

    /// Requests dispatched so far.
    pub fn served(&self) -> u64 {
        self.lock().served
    }

    /// Completes once no request has been in flight for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = {
                let state = self.lock();
                let quiet = state.last_change.elapsed();
                if state.in_flight == 0 && quiet >= idle {
                    return;
                }
                if state.in_flight > 0 {
                    idle
                } else {
                    idle - quiet
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Completes once the client has cancelled too many streams.
    pub async fn abusive(&self) {
        self.abuse.notified().await;
    }

    fn ended(&self, finished: bool) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        let now = Instant::now();
        state.last_change = now;
        if finished {
            return;
        }
        if now.duration_since(state.window_start) > CANCEL_WINDOW {
            state.window_start = now;
            state.cancelled = 0;
        }
        state.cancelled += 1;
        if state.cancelled > MAX_CANCELLED && !state.flagged {
            state.flagged = true;
            self.abuse.notify_one();
        }
    }
}

/// One dispatched request; dropped before [`InFlight::finish`], it counts as cancelled.
pub struct InFlight {
    requests: Arc<Requests>,
    finished: bool,
}

impl InFlight {
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.requests.ended(self.finished);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_idle_only_with_no_request_in_flight() {
        let idle = Duration::from_millis(50);
        let requests = Arc::new(Requests::default());
        let request = requests.start();
        assert!(
            tokio::time::timeout(idle * 6, requests.idle_for(idle))
                .await
                .is_err(),
            "a request in flight keeps the connection"
        );
        request.finish();
        let ended = std::time::Instant::now();
        requests.idle_for(idle).await;
        assert!(ended.elapsed() >= idle);
    }

    #[tokio::test]
    async fn cancelled_streams_past_the_limit_flag_the_connection_once() {
        let requests = Arc::new(Requests::default());
        for _ in 0..MAX_CANCELLED {
            drop(requests.start());
        }
        requests.start().finish();
        let flagged = tokio::time::timeout(Duration::from_millis(20), requests.abusive()).await;
        assert!(flagged.is_err(), "finished requests are not cancellations");
        drop(requests.start());
        tokio::time::timeout(Duration::from_secs(1), requests.abusive())
            .await
            .expect("the cancellation past the limit flags the connection");
    }
}
