//! Recording an exchange and the warnings it raises, in one step for the token path: the
//! ledger keeps the facts and reports what it counted, diagnosis decides and words the
//! warnings.

use crate::diagnose::warnings::{self, Warning};
use crate::ledger::{Commit, GrantLedger};
use crate::oauth::{RequestFacts, ResponseFacts};

/// The ledger as the token path records into it.
pub trait RecordExchange {
    /// Records the exchange; returns its warnings and the commit to wait for before the
    /// client sees a new refresh token (see [`GrantLedger::remember`]).
    fn record(
        &self,
        req: &RequestFacts,
        resp: &ResponseFacts,
        now: i64,
    ) -> (Vec<Warning>, Option<Commit>);
}

impl RecordExchange for GrantLedger {
    fn record(
        &self,
        req: &RequestFacts,
        resp: &ResponseFacts,
        now: i64,
    ) -> (Vec<Warning>, Option<Commit>) {
        let (observed, commit) = self.remember(req, resp, now);
        (warnings::judge(req, resp, &observed, now), commit)
    }
}
