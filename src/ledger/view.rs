//! The ledger's answer to "what do you know that bears on this exchange": plain data, so the
//! diagnosis rules stay pure functions over it.

use serde::Serialize;

use crate::oauth::RequestFacts;

use super::State;

/// What the ledger knew when the exchange came back.
#[derive(Debug, Clone, Default, Serialize)]
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
    /// Other tokens of the same client that failed on their first use.
    pub client_first_use_failures: usize,
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
    let mut view = LedgerView::default();
    let text = |v: &Option<super::Sym>| v.as_deref().map(str::to_owned);
    if let Some(fp) = req.refresh_fp().map(super::fp_key) {
        if let Some(entry) = state.refresh.get(&fp) {
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
            if let Some(org) = &entry.org_id {
                view.org_failures_recent = state
                    .refresh_failures_by_org
                    .get(&**org)
                    .map(|list| {
                        let mut others: Vec<super::Fp> = list
                            .iter()
                            .filter(|(at, other)| now - at <= 600_000 && *other != fp)
                            .map(|(_, other)| *other)
                            .collect();
                        others.sort_unstable();
                        others.dedup();
                        others.len()
                    })
                    .unwrap_or(0);
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
        if let Some((count, finished)) = state.in_flight.get(&fp) {
            // This request counted itself in when it went upstream.
            view.concurrent = Some(ConcurrentRefresh {
                in_flight: count.saturating_sub(1),
                finished_ms_ago: finished.map(|t| t.elapsed().as_millis() as u64),
            });
        }
    }
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
            .copied()
            .unwrap_or(0);
    }
    view.password_success_at_host = state.password_success_hosts.contains_key(&req.host);
    view.password_failures_at_host = state
        .password_failures_by_host
        .get(&req.host)
        .copied()
        .unwrap_or(0);
    view
}
