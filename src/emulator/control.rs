//! The control API under `/_emulator/`: JSON in, JSON out. It plays the parts of the
//! Salesforce world that never cross the token endpoint: admins, browsers, time.
//! Documented in `docs/emulator.md`.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::body::ProxyBody;

use super::model::{AppPatch, AppSpec, OrgPatch, OrgSpec, Settings, UserPatch, UserSpec};
use super::server::{Emulator, json, read_body};
use super::world::{ControlError, Fault, World};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorize {
    client_id: String,
    username: String,
    #[serde(default)]
    scope: Option<String>,
    redirect_uri: String,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Faults {
    fault: Fault,
    #[serde(default = "one")]
    count: usize,
}

fn one() -> usize {
    1
}

pub async fn handle(
    emulator: &Arc<Emulator>,
    req: Request<Incoming>,
    path: &str,
) -> Response<ProxyBody> {
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body = match read_body(req.into_body()).await {
        Ok(body) => body,
        Err(status) => return error(status, "request body unreadable or too large"),
    };
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let result = route(emulator, &method, &segments, &body, &query);
    match result {
        Ok(value) => json(StatusCode::OK, value.to_string(), false),
        Err(Failure::NotFound) => error(StatusCode::NOT_FOUND, "no such control resource"),
        Err(Failure::Bad(message)) => error(StatusCode::BAD_REQUEST, &message),
    }
}

enum Failure {
    NotFound,
    Bad(String),
}

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Self {
        Self::Bad(e.0)
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| Failure::Bad(format!("bad JSON: {e}")))
}

/// Dispatches on the first segment, one function per part the control API plays. The world
/// stays locked for the whole request, clock requests included.
fn route(
    emulator: &Emulator,
    method: &Method,
    segments: &[&str],
    body: &[u8],
    query: &str,
) -> Result<serde_json::Value, Failure> {
    let now = emulator.clock.now_ms();
    let mut world = emulator.world();
    let method = method.as_str();
    match segments.first().copied() {
        Some("orgs" | "users" | "apps") => admin(&mut world, method, segments, body, query),
        Some("authorize") => browser(&mut world, method, segments, body, now),
        Some("clock") => clock(emulator, method, segments, body, now),
        _ => harness(&mut world, method, segments, body),
    }
}

/// What an admin does in Setup: orgs, users and apps, revoking and counting approvals.
fn admin(
    world: &mut World,
    method: &str,
    segments: &[&str],
    body: &[u8],
    query: &str,
) -> Result<serde_json::Value, Failure> {
    Ok(match (method, segments) {
        ("POST", ["orgs"]) => {
            let org = world.add_org(parse::<OrgSpec>(body)?)?;
            json!({"org_id": org.id, "name": org.spec.name, "my_domain_host": org.my_domain_host()})
        }
        ("PATCH", ["orgs", name]) => {
            world.patch_org(name, parse::<OrgPatch>(body)?)?;
            json!({"ok": true})
        }
        ("POST", ["orgs", name, "sandbox-refresh"]) => {
            json!({"org_id": world.refresh_sandbox(name)?})
        }
        ("POST", ["users"]) => {
            let user = world.add_user(parse::<UserSpec>(body)?)?;
            json!({"user_id": user.id, "username": user.spec.username})
        }
        ("PATCH", ["users", username]) => {
            world.patch_user(username, parse::<UserPatch>(body)?)?;
            json!({"ok": true})
        }
        ("POST", ["users", username, "revoke"]) => {
            let revoke: Revoke = parse(body)?;
            json!({"revoked": world.revoke(username, revoke.client_id.as_deref())?})
        }
        ("GET", ["users", username, "approvals"]) => {
            let client_id = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "client_id")
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| Failure::Bad("client_id query parameter required".into()))?;
            json!({"live": world.approvals_of(username, &client_id)})
        }
        ("POST", ["apps"]) => {
            let app = world.add_app(parse::<AppSpec>(body)?)?;
            json!({"client_id": app.client_id, "client_secret": app.secret})
        }
        ("PATCH", ["apps", client_id]) => {
            world.patch_app(client_id, parse::<AppPatch>(body)?)?;
            json!({"ok": true})
        }
        _ => return Err(Failure::NotFound),
    })
}

/// What a browser does: log in and approve, for a code.
fn browser(
    world: &mut World,
    method: &str,
    segments: &[&str],
    body: &[u8],
    now: i64,
) -> Result<serde_json::Value, Failure> {
    let ("POST", ["authorize"]) = (method, segments) else {
        return Err(Failure::NotFound);
    };
    let a: Authorize = parse(body)?;
    let challenge = a
        .code_challenge
        .map(|c| (c, a.code_challenge_method.unwrap_or_else(|| "plain".into())));
    let code = world.authorize(
        now,
        &a.client_id,
        &a.username,
        a.scope.as_deref(),
        &a.redirect_uri,
        challenge,
    )?;
    Ok(json!({"code": code}))
}

/// Time: read the virtual clock, or move it forward.
fn clock(
    emulator: &Emulator,
    method: &str,
    segments: &[&str],
    body: &[u8],
    now: i64,
) -> Result<serde_json::Value, Failure> {
    Ok(match (method, segments) {
        ("GET", ["clock"]) => json!({"now_ms": now, "offset_ms": emulator.clock.offset_ms()}),
        ("POST", ["clock", "advance"]) => {
            let a: Advance = parse(body)?;
            emulator.clock.advance(a.seconds);
            json!({"now_ms": emulator.clock.now_ms()})
        }
        _ => return Err(Failure::NotFound),
    })
}

/// The test harness around the world: health, the request log, injected faults, settings.
fn harness(
    world: &mut World,
    method: &str,
    segments: &[&str],
    body: &[u8],
) -> Result<serde_json::Value, Failure> {
    Ok(match (method, segments) {
        ("GET", ["health"]) => json!({"ok": true}),
        ("GET", ["requests"]) => serde_json::to_value(&world.log).expect("serialisable"),
        ("DELETE", ["requests"]) => {
            world.log.clear();
            json!({"ok": true})
        }
        ("POST", ["faults"]) => {
            let f: Faults = parse(body)?;
            world.faults.extend(std::iter::repeat_n(f.fault, f.count));
            json!({"queued": world.faults.len()})
        }
        ("POST", ["query-faults"]) => {
            let f: super::query::QueryFaults = parse(body)?;
            world.query_faults.extend(f.queue());
            json!({"queued": world.query_faults.len()})
        }
        ("GET", ["settings"]) => serde_json::to_value(&world.settings).expect("serialisable"),
        ("PUT", ["settings"]) => {
            world.settings = parse::<Settings>(body)?;
            serde_json::to_value(&world.settings).expect("serialisable")
        }
        _ => return Err(Failure::NotFound),
    })
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json(status, json!({"error": message}).to_string(), false)
}
