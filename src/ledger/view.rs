//! The ledger's answer to "what do you know that bears on this exchange": plain data, so the
//! diagnosis rules stay pure functions over it.

use serde::Serialize;

use crate::oauth::RequestFacts;

use super::State;

/// What the ledger knew when the exchange came back.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerView {
    /// History of the presented refresh token, when it was seen being issued.
    pub token: Option<TokenHistory>,
    pub concurrent: Option<ConcurrentRefresh>,
    /// The newest authorization for this client id that returned no refresh token.
    pub client_authorized_without_refresh: Option<(i64, Option<String>)>,
    /// When this authorization code was already redeemed.
    pub code_redeemed_at: Option<i64>,
    /// Consecutive password failures for this username before this one.
    pub password_failures: u32,
    /// Whether any password grant ever succeeded at this host.
    pub password_success_at_host: bool,
    /// Password failures at this host before this one.
    pub password_failures_at_host: u32,
    /// A new org id appeared for the token's host: (old, new, when).
    pub org_changed: Option<(String, String, i64)>,
    /// Other refresh tokens of the same org that failed in the last 10 minutes.
    pub org_failures_recent: usize,
    /// Other tokens of the same client that failed on their first use with nothing else
    /// recorded to explain it.
    pub client_first_use_failures: usize,
    /// Other refresh tokens of the same (org, user, client id) that had worked and failed in
    /// the last 10 minutes: what a revoked approval looks like.
    pub user_revocations_recent: usize,
    /// Live refresh tokens per (user, app) before Salesforce evicts the oldest.
    pub approval_limit: usize,
    /// Whether a ledger stands behind this view: `explain` diagnoses without one, and must
    /// not word an absence of history as a fact.
    pub watched: bool,
    /// How the client secret sent compares with the ones that worked for this client id.
    pub secret: Option<SecretHistory>,
    /// Shortest and longest refresh token issued to this client id.
    pub client_refresh_lengths: Option<(usize, usize)>,
    /// When this client id was first seen.
    pub client_first_seen: Option<i64>,
    /// When the assertion's subject was first seen.
    pub subject_first_seen: Option<i64>,
    /// Other subjects whose JWT bearer login with this client id at this host succeeded.
    pub jwt_other_subjects_ok: usize,
}

/// The client secrets that worked for a client id, against the one just sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SecretHistory {
    /// The same secret worked, last at this time.
    pub same_ok_at: Option<i64>,
    /// Another secret worked, last at this time.
    pub other_ok_at: Option<i64>,
}

impl Default for LedgerView {
    fn default() -> Self {
        Self {
            token: None,
            concurrent: None,
            client_authorized_without_refresh: None,
            code_redeemed_at: None,
            password_failures: 0,
            password_success_at_host: false,
            password_failures_at_host: 0,
            org_changed: None,
            org_failures_recent: 0,
            client_first_use_failures: 0,
            user_revocations_recent: 0,
            approval_limit: super::APPROVAL_LIMIT,
            watched: false,
            secret: None,
            client_refresh_lengths: None,
            client_first_seen: None,
            subject_first_seen: None,
            jwt_other_subjects_ok: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenHistory {
    pub host: String,
    pub instance_host: Option<String>,
    pub client_id: String,
    pub org_id: Option<String>,
    pub user_id: Option<String>,
    pub scope: Option<String>,
    pub issued_at: i64,
    pub issued_by: String,
    pub uses: u32,
    pub last_success: Option<i64>,
    pub rotated_at: Option<i64>,
    /// Issue times of refresh-token authorizations of the same (org, user, client id) made
    /// after this token's.
    pub newer_approvals: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConcurrentRefresh {
    /// Other refreshes with this token still upstream.
    pub in_flight: u32,
    /// Milliseconds since the last refresh with this token came back.
    pub finished_ms_ago: Option<u64>,
}

pub(super) fn build(state: &State, req: &RequestFacts, now: i64) -> LedgerView {
    let mut view = LedgerView {
        approval_limit: state.approval_limit(),
        watched: true,
        ..LedgerView::default()
    };
    client_facts(state, req, &mut view);
    if let Some(fp) = req.refresh_fp().map(super::fp_key) {
        if let Some(entry) = state.refresh.get(&fp) {
            token_facts(state, fp, entry, now, &mut view);
        }
        if let Some((count, finished)) = state.in_flight.get(&fp) {
            // This request counted itself in when it went upstream.
            view.concurrent = Some(ConcurrentRefresh {
                in_flight: count.saturating_sub(1),
                finished_ms_ago: finished.map(|t| t.elapsed().as_millis() as u64),
            });
        }
    }
    grant_facts(state, req, &mut view);
    view
}

fn text(v: &Option<super::Sym>) -> Option<String> {
    v.as_deref().map(str::to_owned)
}

/// What the ledger knows of the presented refresh token: its history, the approvals since,
/// the failures around it.
fn token_facts(
    state: &State,
    fp: super::Fp,
    entry: &super::RefreshEntry,
    now: i64,
    view: &mut LedgerView,
) {
    let newer_approvals = match (&entry.org_id, &entry.user_id) {
        (Some(org), Some(user)) => state
            .authorizations
            .get(&(org.clone(), user.clone(), entry.client_id.clone()))
            .map(|list| {
                list.iter()
                    .filter(|a| {
                        a.refresh_fp.is_some_and(|other| other.get() != fp)
                            && a.at > entry.issued_at
                    })
                    .map(|a| a.at)
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    view.token = Some(TokenHistory {
        host: entry.host.to_string(),
        instance_host: text(&entry.instance_host),
        client_id: entry.client_id.to_string(),
        org_id: text(&entry.org_id),
        user_id: text(&entry.user_id),
        scope: text(&entry.scope),
        issued_at: entry.issued_at,
        issued_by: entry.issued_by.to_string(),
        uses: entry.uses,
        last_success: entry.last_success.map(|t| t.get()),
        rotated_at: entry.rotated_at.map(|t| t.get()),
        newer_approvals,
    });
    if entry.org_id.is_some() {
        failures_around(state, fp, entry, now, view);
    }
    view.org_changed = state.org_changes.get(&*entry.host).cloned();
    // Counted as failures happen: a scan of every token here would make each exchange
    // cost O(tokens known).
    let own = u32::from(entry.uses == 0 && entry.failures > 0);
    view.client_first_use_failures = state
        .first_use_failures
        .get(&*entry.client_id)
        .map_or(0, |n| n.saturating_sub(own) as usize);
}

/// Other refresh tokens of the token's org failing lately: the whole org, or this user's
/// approvals going.
fn failures_around(
    state: &State,
    fp: super::Fp,
    entry: &super::RefreshEntry,
    now: i64,
    view: &mut LedgerView,
) {
    let Some(org) = &entry.org_id else {
        return;
    };
    // Only failures after this token was issued can share its cause (give or take the whole
    // second of the `Date` a failure is timed by).
    let mut others: Vec<super::Fp> = state
        .refresh_failures_by_org
        .get(&**org)
        .map(|list| {
            list.iter()
                .filter(|(at, other)| {
                    now - at <= 600_000 && *at + 1_000 >= entry.issued_at && *other != fp
                })
                .map(|(_, other)| *other)
                .collect()
        })
        .unwrap_or_default();
    others.sort_unstable();
    others.dedup();
    let same_user = |other: &super::RefreshEntry| {
        other.user_id == entry.user_id && other.client_id == entry.client_id
    };
    // Tokens of one user and app failing together are that user's approvals going (a
    // revocation, an eviction), not the whole org being refreshed.
    view.org_failures_recent = others
        .iter()
        .filter(|other| state.refresh.get(other).is_none_or(|o| !same_user(o)))
        .count();
    view.user_revocations_recent = others
        .iter()
        .filter_map(|other| state.refresh.get(other))
        .filter(|other| other.uses > 0 && other.rotated_at.is_none() && same_user(other))
        .count();
}

/// What the other grants left: an authorization without a refresh token, a redeemed code,
/// password failures.
fn grant_facts(state: &State, req: &RequestFacts, view: &mut LedgerView) {
    if let Some(client) = &req.client_id
        && let Some(latest) = state.latest_by_client.get(client)
        && latest.refresh_fp.is_none()
    {
        view.client_authorized_without_refresh = Some((latest.at, text(&latest.scope)));
    }
    if let Some(code) = &req.code_fp {
        view.code_redeemed_at = state.codes.get(&super::fp_key(code)).copied();
    }
    if let Some(u) = &req.username_fp {
        view.password_failures = state
            .password_failures
            .get(&super::fp_key(u))
            .map_or(0, |t| t.total());
    }
    view.password_success_at_host = state.password_success_hosts.contains_key(&req.host);
    view.password_failures_at_host = state
        .password_failures_by_host
        .get(&req.host)
        .map_or(0, |t| t.total());
}

/// What the ledger knows of the client id and the JWT subject of this request.
fn client_facts(state: &State, req: &RequestFacts, view: &mut LedgerView) {
    let client = req.client_id.as_deref().unwrap_or("");
    if let Some(record) = state.clients.get(client) {
        view.client_first_seen = Some(record.first_seen);
        view.client_refresh_lengths = record.refresh_len;
        if let (Some(sent), Some(worked)) = (
            req.client_secret_fp.as_deref().map(super::fp_key),
            record.secret_fp,
        ) {
            view.secret = Some(if sent == worked {
                SecretHistory {
                    same_ok_at: record.secret_ok_at,
                    other_ok_at: record.previous_secret_ok_at,
                }
            } else {
                SecretHistory {
                    same_ok_at: None,
                    other_ok_at: record.secret_ok_at,
                }
            });
        }
    }
    if let Some(subject) = req.subject_fp.as_deref().map(super::fp_key) {
        view.subject_first_seen = state.subjects.get(&subject).copied();
        view.jwt_other_subjects_ok = state
            .jwt_subjects_ok
            .iter()
            .find(|((host, id), _)| **host == *req.host && **id == *client)
            .map_or(0, |(_, ok)| ok.iter().filter(|s| **s != subject).count());
    }
}
