//! Test wiring for the rules and the warnings: requests and answers parsed from the wire text, as the
//! proxy parses them, and a ledger that has seen whatever a test lets it see.

use crate::diagnose::warnings::{self, Warning};
use crate::diagnose::{Basis, Diagnosis, Policies, diagnose};
use crate::ledger::GrantLedger;
use crate::oauth::{Fingerprinter, RequestFacts, ResponseFacts};

/// An upstream time in milliseconds, late 2025.
pub const T0: i64 = 1_764_093_000_000;
pub const DAY_MS: i64 = 86_400_000;

pub struct Wire {
    fp: Fingerprinter,
    pub ledger: GrantLedger,
    pub host: &'static str,
    pub policies: Policies,
}

impl Wire {
    pub fn new() -> Self {
        Self {
            fp: Fingerprinter::from_key(&[7; 32]),
            ledger: GrantLedger::new(),
            host: "login.salesforce.com",
            policies: Policies::new(),
        }
    }

    pub fn at(host: &'static str) -> Self {
        Self {
            host,
            ..Self::new()
        }
    }

    pub fn req(&self, body: &str) -> RequestFacts {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        RequestFacts::parse(self.host, true, &headers, None, body.as_bytes(), &self.fp)
    }

    pub fn failure(&self, status: u16, error: &str, description: &str) -> ResponseFacts {
        let body = serde_json::json!({"error": error, "error_description": description});
        ResponseFacts::parse(status, body.to_string().as_bytes(), &self.fp)
    }

    /// Records a success of `body` at `at` that issued `refresh` (when given); returns the
    /// warnings it raises.
    pub fn succeeds(&self, body: &str, refresh: Option<&str>, at: i64) -> Vec<Warning> {
        let mut answer = serde_json::json!({
            "access_token": "00D000000000001!AQ",
            "scope": "api refresh_token",
            "instance_url": "https://acme.my.salesforce.com",
            "id": "https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA",
            "token_type": "Bearer",
            "issued_at": at.to_string(),
        });
        if let Some(refresh) = refresh {
            answer["refresh_token"] = refresh.into();
        }
        let req = self.req(body);
        let resp = ResponseFacts::parse(200, answer.to_string().as_bytes(), &self.fp);
        let (observed, _) = self.ledger.remember(&req, &resp, at);
        warnings::judge(&req, &resp, &observed, at)
    }

    /// Records a failure of `body` at `at`; returns the warnings it raises.
    pub fn fails(&self, body: &str, error: &str, description: &str, at: i64) -> Vec<Warning> {
        let req = self.req(body);
        let resp = self.failure(400, error, description);
        let (observed, _) = self.ledger.remember(&req, &resp, at);
        warnings::judge(&req, &resp, &observed, at)
    }

    /// The diagnosis of `body` answered `status {error, description}` at `T0`.
    pub fn diagnose(&self, body: &str, status: u16, error: &str, description: &str) -> Diagnosis {
        self.diagnose_at(body, status, error, description, T0)
    }

    pub fn diagnose_at(
        &self,
        body: &str,
        status: u16,
        error: &str,
        description: &str,
        now: i64,
    ) -> Diagnosis {
        let req = self.req(body);
        let resp = self.failure(status, error, description);
        let view = self.ledger.view(&req, now);
        diagnose(&req, &resp, &view, &self.policies, now)
    }

    pub fn top(&self, diagnosis: &Diagnosis) -> (&'static str, Basis) {
        let top = diagnosis.top().expect("a cause");
        (top.id, top.basis)
    }
}

/// The ranked ids of a diagnosis.
pub fn ids(diagnosis: &Diagnosis) -> Vec<&'static str> {
    diagnosis.causes.iter().map(|c| c.id).collect()
}
