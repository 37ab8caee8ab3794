//! What `/readyz` reports: ready, degraded (a part is failing but traffic still flows), or
//! draining (the listener is closing, so a load balancer must stop sending now).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness shared by the proxy, the ledger and the admin port.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    /// Failing parts by name, with the reason each last gave.
    degraded: Mutex<BTreeMap<&'static str, String>>,
    /// Parts without which this replica must not take traffic (`--ready-requires-store`).
    required: Mutex<Vec<&'static str>>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Degraded(String),
    /// A required part is failing: a load balancer must stop sending.
    Unready(String),
    Draining,
}

impl Health {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks `part` failing; true when it was healthy until now (the start of an outage).
    pub fn degrade(&self, part: &'static str, reason: impl Into<String>) -> bool {
        self.lock().insert(part, reason.into()).is_none()
    }

    /// Marks `part` healthy again; true when it was failing (the end of an outage).
    pub fn restore(&self, part: &'static str) -> bool {
        self.lock().remove(part).is_some()
    }

    /// Makes `part` required: while it fails, readiness is [`Readiness::Unready`].
    pub fn require(&self, part: &'static str) {
        self.required
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(part);
    }

    pub fn readiness(&self) -> Readiness {
        if self.draining() {
            return Readiness::Draining;
        }
        let degraded = self.lock();
        if degraded.is_empty() {
            return Readiness::Ready;
        }
        let required = self.required.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((part, reason)) = degraded.iter().find(|(p, _)| required.contains(p)) {
            return Readiness::Unready(format!("{part}: {reason}"));
        }
        Readiness::Degraded(
            degraded
                .iter()
                .map(|(part, reason)| format!("{part}: {reason}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.degraded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_outranks_degraded_and_outages_are_reported_once() {
        let health = Health::default();
        assert_eq!(health.readiness(), Readiness::Ready);
        assert!(health.degrade("ledger", "disk full"));
        assert!(!health.degrade("ledger", "disk still full"));
        assert_eq!(
            health.readiness(),
            Readiness::Degraded("ledger: disk still full".into())
        );
        health.start_draining();
        assert_eq!(health.readiness(), Readiness::Draining);
        assert!(health.restore("ledger"));
        assert!(!health.restore("ledger"));
    }
}
