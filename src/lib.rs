//! grantdoctor: an HTTP forward proxy that stands between applications and Salesforce and
//! explains why token exchanges fail.
//!
//! The data flow, and the module that owns each step:
//!
//! ```text
//! client ─▶ proxy (listener, CONNECT, tunnel or intercept) ─▶ token_endpoint (observe the
//!           exchange) ─▶ proxy::layers (response timeout, request metrics)
//!           ─▶ proxy::Forward ─▶ upstream (pooled, verified TLS) ─▶ Salesforce
//! ```
//!
//! - [`proxy`]: bytes and connections; knows nothing of OAuth.
//! - [`route`], [`reply`], [`finished`]: what the proxy and the token path hand each other —
//!   where a request goes, the proxy's own error answers, a token response read whole — so
//!   that neither imports the other.
//! - [`tls`]: the local CA, leaf minting and its cache, upstream trust.
//! - [`upstream`]: the pooled client and the tunnel dialler, with `--resolve` overrides.
//! - [`token_endpoint`]: the one buffered path, where token exchanges are observed.
//! - [`oauth`], [`ledger`], [`diagnose`]: what an exchange says, what was seen before, why it
//!   failed and which warnings the wire shows (pure).
//! - [`fleet`]: what replicas share on PostgreSQL (`--store postgres://…`): the ledger's
//!   records, leases of refreshes in flight, sealed replays.
//! - [`org`]: org connections that read Salesforce's own records (`OauthToken`, `User`...) to
//!   confirm what the ledger cannot decide.
//! - [`recover`] and [`annotate`]: what is done about a failure — JWT bearer recovery, refresh
//!   coalescing, the rotated-token guard, the dead-token breaker — and how it is told to the
//!   client.
//! - [`telemetry`]: the JSON log line format.
//! - [`webhook`]: alerts POSTed to webhooks (JSON or Slack), filtered, deduplicated, signed.
//! - [`emulator`]: a faithful Salesforce token endpoint (`grantdoctor emulate`).
//! - [`cli`] and [`app`]: arguments and wiring.

#![forbid(unsafe_code)]

pub mod admin;
pub mod annotate;
pub mod app;
pub mod body;
pub mod build_info;
pub mod cli;
pub mod colour;
pub mod config;
pub mod data_lock;
pub mod demo;
pub mod diagnose;
pub mod doctor;
pub mod emulator;
pub mod explain;
pub mod fd_limit;
pub mod finished;
pub mod fleet;
pub mod health;
pub mod ledger;
pub mod logs;
pub mod metrics;
pub mod net;
pub mod oauth;
pub mod org;
pub mod proxy;
pub mod recover;
pub mod reply;
pub mod route;
pub mod telemetry;
pub mod tls;
pub mod token_endpoint;
pub mod upstream;
pub mod web;
pub mod webhook;
