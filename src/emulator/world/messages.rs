//! What the server hands the world and gets back: the parsed token request, the success body
//! in Salesforce's field order, the request log line and the injected faults. Must never: hold
//! behaviour beyond reading a request's parameters; a logged line never carries a secret.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

/// A token request as the server parsed it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub host: String,
    pub params: HashMap<String, String>,
    /// Client id and secret from HTTP Basic.
    pub basic: Option<(String, String)>,
    pub peer: IpAddr,
}

impl TokenRequest {
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    pub(super) fn client_id(&self) -> Option<&str> {
        self.param("client_id")
            .or(self.basic.as_ref().map(|b| b.0.as_str()))
    }
    pub(super) fn client_secret(&self) -> Option<&str> {
        self.param("client_secret")
            .or(self.basic.as_ref().map(|b| b.1.as_str()))
    }
}

/// A successful token response, fields in Salesforce's order.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenSuccess {
    pub access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub scope: String,
    pub instance_url: String,
    pub id: String,
    pub token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
}

/// One line of the request log: never a secret.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub at_ms: i64,
    pub host: String,
    pub grant_type: String,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub status: u16,
    pub error: Option<String>,
}

/// Injected failures for the next token requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// `unknown_error` / `retry your request` (E35).
    UnknownError,
    /// A 503 HTML maintenance page (E37).
    Maintenance,
}
