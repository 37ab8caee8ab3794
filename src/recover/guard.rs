//! The rotated-token guard. Under refresh token rotation, presenting a refresh token that was
//! already rotated away makes Salesforce revoke the whole token family (Salesforce article
//! 005316711 on rotation), so such a refresh is never forwarded. A caller that arrives within
//! the replay window with the same client credentials is a racing twin of the refresh that
//! rotated it and gets that refresh's response; anyone else is refused on Salesforce's behalf.
//!
//! Must never: keep a response past the replay window, or hand it to different credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::finished::Finished;

/// A digest of how a client authenticated (client id, secret, `Authorization`); memory only.
pub type CredentialsKey = [u8; 32];

#[derive(Debug)]
struct Replay {
    at: Instant,
    credentials: CredentialsKey,
    response: Arc<Finished>,
}

/// What to do with a refresh whose token the ledger saw rotated away.
#[derive(Debug)]
pub enum Verdict {
    /// The twin of the refresh that rotated it: answer with that refresh's response.
    Replay(Arc<Finished>),
    /// Refuse it: forwarding would revoke the family.
    Block,
}

#[derive(Debug)]
pub struct RotationGuard {
    window: Duration,
    replays: Mutex<HashMap<u64, Replay>>,
}

impl RotationGuard {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            replays: Mutex::default(),
        }
    }

    /// Remembers the response of a refresh that rotated `old` away.
    pub fn rotated(&self, old: u64, credentials: CredentialsKey, response: Arc<Finished>) {
        let now = Instant::now();
        let mut replays = self.lock();
        replays.retain(|_, r| now.duration_since(r.at) < self.window);
        replays.insert(
            old,
            Replay {
                at: now,
                credentials,
                response,
            },
        );
    }

    /// The verdict on a refresh presenting `old`, a token known to be rotated away.
    pub fn verdict(&self, old: u64, credentials: &CredentialsKey) -> Verdict {
        let replays = self.lock();
        match replays.get(&old) {
            Some(r) if r.at.elapsed() < self.window && r.credentials == *credentials => {
                Verdict::Replay(r.response.clone())
            }
            _ => Verdict::Block,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Replay>> {
        self.replays.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished() -> Arc<Finished> {
        Arc::new(Finished::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            bytes::Bytes::from_static(b"{}"),
        ))
    }

    #[test]
    fn a_twin_within_the_window_is_replayed_and_anyone_else_blocked() {
        let guard = RotationGuard::new(Duration::from_secs(5));
        guard.rotated(7, [1; 32], finished());
        assert!(matches!(guard.verdict(7, &[1; 32]), Verdict::Replay(_)));
        assert!(matches!(guard.verdict(7, &[2; 32]), Verdict::Block));
        assert!(matches!(guard.verdict(8, &[1; 32]), Verdict::Block));
    }

    #[test]
    fn after_the_window_even_a_twin_is_blocked() {
        let guard = RotationGuard::new(Duration::from_millis(10));
        guard.rotated(7, [1; 32], finished());
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(guard.verdict(7, &[1; 32]), Verdict::Block));
    }
}
