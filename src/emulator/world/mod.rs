//! The emulator's state and Salesforce's rules over it: who may get a token, which tokens are
//! alive, what the 5-approval limit, refresh policies and rotation do. No I/O: the server
//! calls in with a parsed request and the (virtual) time, and gets a body or an error back.
//!
//! This module owns the [`World`] itself and the token state it keeps (approval families,
//! refresh, access and code records); the rules live in one submodule per concern. Every item
//! the rest of the emulator uses is re-exported here, so callers name `world::…` only. Must
//! never: do I/O, read the real clock, or answer a token request with an error that is not
//! one of [`super::errors`].

mod admission;
mod approvals;
mod directory;
mod grants;
mod hosts;
mod identity;
mod issuance;
mod messages;
mod refresh;
mod revocation;
mod scopes;
mod web_flow;

use std::collections::{HashMap, VecDeque};

use super::model::Settings;

pub use approvals::{APPROVAL_LIMIT, ApprovalRecord};
pub use directory::{App, Org, User};
pub use hosts::HostCtx;
pub use issuance::hmac_signature;
pub use messages::{Fault, LoggedRequest, TokenRequest, TokenSuccess};
pub use refresh::RefreshTicket;

/// One approval: the chain of refresh tokens that rotation produces from one authorization.
#[derive(Debug)]
struct Family {
    username: String,
    client_id: String,
    org_id: String,
    issued_at: i64,
    scope: String,
    revoked: bool,
    /// The id of the approval's `OauthToken` record (key prefix `0CQ`).
    record_id: String,
    /// Successful refreshes of any token of the family, and the last one.
    use_count: u64,
    last_used: i64,
}

#[derive(Debug)]
struct RefreshRecord {
    family: u64,
    last_used: i64,
    /// Superseded by rotation: presenting it again revokes the family.
    rotated: bool,
    in_flight: bool,
}

#[derive(Debug)]
struct AccessRecord {
    username: String,
    org_id: String,
    family: Option<u64>,
    last_used: i64,
}

#[derive(Debug)]
struct CodeRecord {
    username: String,
    client_id: String,
    scope: String,
    redirect_uri: String,
    challenge: Option<(String, String)>,
    issued_at: i64,
    used: bool,
}

#[derive(Debug, Default)]
pub struct World {
    pub settings: Settings,
    pub(crate) orgs: Vec<Org>,
    pub(crate) users: HashMap<String, User>,
    pub(crate) apps: HashMap<String, App>,
    families: HashMap<u64, Family>,
    refresh: HashMap<String, RefreshRecord>,
    access: HashMap<String, AccessRecord>,
    codes: HashMap<String, CodeRecord>,
    approvals: HashMap<(String, String), VecDeque<u64>>,
    next_family: u64,
    pub log: Vec<LoggedRequest>,
    pub faults: VecDeque<Fault>,
    /// Injected failures for the next REST queries (see [`super::query::QueryFault`]).
    pub query_faults: VecDeque<super::query::QueryFault>,
    /// Login attempts of known users, oldest first, for `LoginHistory` (see [`super::logins`]).
    pub(crate) login_history: VecDeque<super::logins::LoginEvent>,
}

/// An error of the control API: which input was wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ControlError(pub String);

fn control<T>(msg: impl Into<String>) -> Result<T, ControlError> {
    Err(ControlError(msg.into()))
}
