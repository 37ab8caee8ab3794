//! Why a token exchange failed: a pure function from what the request said, what Salesforce
//! answered, what the ledger remembers and the (upstream) time, to ranked causes with evidence.
//!
//! Must never: do I/O or read a clock. Every rule is unit-tested with plain data.

pub mod catalogue;
mod hosts;
mod rules;
#[cfg(test)]
mod testing;
pub mod warnings;

use std::collections::HashMap;

use serde::Serialize;

use crate::ledger::LedgerView;
use crate::oauth::{RequestFacts, ResponseFacts};

pub use catalogue::{CAUSES, CauseInfo, WARNINGS, info};
pub use hosts::{HostKind, metric_class};
pub use warnings::Warning;

/// What a cause rests on: users must tell at a glance whether grantdoctor knows or guesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// Decided by facts from the request, the answer or the ledger.
    Evidence,
    /// Salesforce's own records, read through an org connection, agree.
    Confirmed,
    /// Nothing observed decides it: a ranking of what usually causes this error.
    Prior,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Evidence => "evidence",
            Self::Confirmed => "confirmed",
            Self::Prior => "prior",
        }
    }
}

/// One cause found likely, with what made it so.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub id: &'static str,
    /// In [0, 1]: ≥ 0.9 when a recorded fact alone explains the error; ≤ 0.5 for priors.
    pub confidence: f64,
    pub basis: Basis,
    pub evidence: Vec<String>,
}

/// Ranked causes, most likely first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Diagnosis {
    pub causes: Vec<Finding>,
    /// A refresh token failed on its first use and nothing else recorded explains it: only
    /// such failures count as evidence of an app whose tokens expire at once.
    #[serde(skip)]
    pub unexplained_first_use: bool,
}

impl Diagnosis {
    pub fn top(&self) -> Option<&Finding> {
        self.causes.first()
    }

    /// Whether the top cause rests on more than a prior: only then is it *the* cause.
    pub fn decided(&self) -> bool {
        self.top().is_some_and(|c| c.basis != Basis::Prior)
    }

    /// `id;q=0.95;basis=evidence, ...` for the log line, which carries every cause's basis.
    pub fn log_value(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(64 * self.causes.len());
        for (i, c) in self.causes.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            let _ = write!(
                out,
                "{separator}{};q={:.2};basis={}",
                c.id,
                c.confidence,
                c.basis.as_str()
            );
        }
        out
    }

    /// `id;q=0.95, id;q=0.40` for the `grantdoctor-causes` header.
    pub fn header_value(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(48 * self.causes.len());
        for (i, c) in self.causes.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            let _ = write!(out, "{separator}{};q={:.2}", c.id, c.confidence);
        }
        out
    }
}

/// A refresh-token policy an operator declared for an app, which turns an age into evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredPolicy {
    Immediate,
    IdleSeconds(u64),
    AbsoluteSeconds(u64),
}

impl std::fmt::Display for DeclaredPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Immediate => f.write_str("immediate"),
            Self::IdleSeconds(s) => write!(f, "idle:{s}"),
            Self::AbsoluteSeconds(s) => write!(f, "absolute:{s}"),
        }
    }
}

impl std::str::FromStr for DeclaredPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let seconds = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("`{v}` is not a number of seconds"))
        };
        match s.split_once(':') {
            None if s == "immediate" => Ok(Self::Immediate),
            Some(("idle", v)) => Ok(Self::IdleSeconds(seconds(v)?)),
            Some(("absolute", v)) => Ok(Self::AbsoluteSeconds(seconds(v)?)),
            _ => Err(format!(
                "`{s}`: expected immediate, idle:SECONDS or absolute:SECONDS"
            )),
        }
    }
}

/// Declared policies by client id.
pub type Policies = HashMap<String, DeclaredPolicy>;

/// Diagnoses a failed exchange. `now` is upstream milliseconds since the epoch.
pub fn diagnose(
    req: &RequestFacts,
    resp: &ResponseFacts,
    view: &LedgerView,
    policies: &Policies,
    now: i64,
) -> Diagnosis {
    let mut findings = Findings::default();
    rules::apply(req, resp, view, policies, now, &mut findings);
    findings.finish()
}

/// Collects findings; one per id, the most confident kept.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    found: Vec<Finding>,
    unexplained_first_use: bool,
}

impl Findings {
    /// A cause decided by what the request, the answer or the ledger showed.
    pub fn add(&mut self, id: &'static str, confidence: f64, evidence: Vec<String>) {
        self.put(id, confidence, Basis::Evidence, evidence);
    }

    /// A cause ranked without anything observed deciding it; `evidence` says what would.
    pub fn prior(&mut self, id: &'static str, confidence: f64, evidence: Vec<String>) {
        self.put(id, confidence, Basis::Prior, evidence);
    }

    fn put(&mut self, id: &'static str, confidence: f64, basis: Basis, evidence: Vec<String>) {
        debug_assert!(
            CAUSES.iter().any(|c| c.id == id),
            "{id} not in the catalogue"
        );
        match self.found.iter_mut().find(|f| f.id == id) {
            Some(existing) if existing.confidence >= confidence => {}
            Some(existing) => {
                existing.confidence = confidence;
                existing.basis = basis;
                existing.evidence = evidence;
            }
            None => self.found.push(Finding {
                id,
                confidence,
                basis,
                evidence,
            }),
        }
    }

    pub fn has_certain(&self) -> bool {
        self.found.iter().any(|f| f.confidence >= 0.9)
    }

    pub fn first_use_unexplained(&mut self) {
        self.unexplained_first_use = true;
    }

    fn finish(mut self) -> Diagnosis {
        if self.found.is_empty() {
            self.prior(
                catalogue::id::UNKNOWN,
                0.3,
                vec!["no rule matched this error; the event carries every recorded fact".into()],
            );
        }
        self.found
            .sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        Diagnosis {
            causes: self.found,
            unexplained_first_use: self.unexplained_first_use,
        }
    }
}
