//! Between the in-memory ledger and its records on disk: which records an exchange touched,
//! and how to rebuild the state from records.

use serde::{Deserialize, Serialize};

use crate::oauth::{RequestFacts, ResponseFacts};

use super::State;
use super::store::Row;

pub(crate) const REFRESH: &str = "refresh";
const AUTHORIZATIONS: &str = "authorizations";
const LATEST_BY_CLIENT: &str = "latest_by_client";
const CODE: &str = "code";
const PASSWORD_FAILURES: &str = "password_failures";
const PASSWORD_FAILURES_AT_HOST: &str = "password_failures_at_host";
const HOST: &str = "host";
const REQUESTS: &str = "requests";
const CLIENT: &str = "client";
const DEAD: &str = "dead";

/// The record kinds, as stored.
pub(crate) fn kind(name: &str) -> Option<&'static str> {
    [
        REFRESH,
        AUTHORIZATIONS,
        LATEST_BY_CLIENT,
        CODE,
        PASSWORD_FAILURES,
        PASSWORD_FAILURES_AT_HOST,
        HOST,
        REQUESTS,
        CLIENT,
        DEAD,
    ]
    .into_iter()
    .find(|k| *k == name)
}

/// What the ledger keeps per host.
#[derive(Debug, Default, Serialize, Deserialize)]
struct HostRecord {
    org: Option<String>,
    org_change: Option<(String, String, i64)>,
    password_success: bool,
    /// The share of the count that the writer with no name holds: the embedded store's
    /// whole count (its one writer), or on a shared store what builds before shares were
    /// kept per writer wrote (each replica's then take kind `password_failures_at_host`).
    /// Always written: builds before it cannot read a host record without it.
    #[serde(default)]
    password_failures: u32,
}

fn json<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

/// The records an exchange may have changed, read back from the state after recording it.
pub(crate) fn rows_for(
    state: &State,
    req: &RequestFacts,
    resp: &ResponseFacts,
    now: i64,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut put = |kind: &'static str, key: String, value: Option<String>| {
        rows.push(Row {
            kind,
            key,
            value,
            at: now,
        })
    };
    let fps = [
        req.refresh_fp().map(str::to_owned),
        resp.success
            .as_ref()
            .and_then(|s| s.refresh_token_fp.clone()),
    ];
    for fp in fps.into_iter().flatten() {
        if let Some(entry) = state.refresh.get(&super::fp_key(&fp)) {
            put(REFRESH, fp, json(entry));
        }
    }
    // Each authorization is a record of its own: rewriting a user's whole list on every
    // exchange would make each write grow with history.
    if let Some(success) = &resp.success
        && req.grant != crate::oauth::GrantType::RefreshToken
    {
        let key: (super::Sym, super::Sym, super::Sym) = (
            success.org_id.as_deref().unwrap_or_default().into(),
            success.user_id.as_deref().unwrap_or_default().into(),
            req.client_id.as_deref().unwrap_or_default().into(),
        );
        if let Some(latest) = state.authorizations.get(&key).and_then(|list| list.last()) {
            let id = format!(
                "{}|{}|{}|{}|{}",
                key.0,
                key.1,
                key.2,
                latest.at,
                req.code_fp.as_deref().unwrap_or("")
            );
            put(AUTHORIZATIONS, id, json(latest));
        }
    }
    if let Some(client) = &req.client_id
        && let Some(latest) = state.latest_by_client.get(client)
    {
        put(LATEST_BY_CLIENT, client.clone(), json(latest));
    }
    if let Some(code) = &req.code_fp
        && let Some(at) = state.codes.get(&super::fp_key(code))
    {
        put(CODE, code.clone(), Some(at.to_string()));
    }
    if let Some(user) = &req.username_fp
        && let Some(failures) = state.password_failures.get(&super::fp_key(user))
    {
        for (key, count) in failures.rows(user, &state.writer) {
            put(PASSWORD_FAILURES, key, count.map(|c| c.value()));
        }
    }
    if req.grant == crate::oauth::GrantType::Password
        && resp.error.is_some()
        && !state.writer.is_empty()
        && let Some(failures) = state.password_failures_by_host.get(&req.host)
    {
        for (key, count) in failures.rows(&req.host, &state.writer) {
            put(PASSWORD_FAILURES_AT_HOST, key, count.map(|c| c.value()));
        }
    }
    if let Some(key) = state.shared_rate_key(resp)
        && let Some(rate) = state.requests_per_user.get(&key)
        && rate.share_due(now)
    {
        let key = super::rate::share_key(&key.0, &key.1, &state.writer);
        put(REQUESTS, key, Some(rate.share().value()));
    }
    put(
        HOST,
        req.host.clone(),
        json(&HostRecord::of(state, &req.host)),
    );
    if let Some(client) = req.client_id.as_deref()
        && let Some(record) = state.clients.get(client)
    {
        put(CLIENT, client.to_owned(), json(record));
    }
    rows
}

/// The shares of users' request rates that wait to be written and are due at `now`: the
/// requests a user sent after this writer's last share, had it sent no more since. Each
/// returned share is marked written.
pub(crate) fn due_rate_rows(state: &mut State, now: i64) -> Vec<Row> {
    if state.writer.is_empty() {
        return Vec::new();
    }
    let writer = state.writer.clone();
    let mut rows = Vec::new();
    for ((org, user), rate) in &mut state.requests_per_user {
        if rate.unshared() && rate.share_due(now) {
            rows.push(Row {
                kind: REQUESTS,
                key: super::rate::share_key(org, user, &writer),
                value: Some(rate.share().value()),
                at: now,
            });
            rate.shared(now);
        }
    }
    rows
}

/// The record of a dead refresh token (the breaker's), as it stands now.
pub(crate) fn dead_row(state: &State, key: &super::dead::DeadKey, now: i64) -> Option<Row> {
    let token = state.dead.get(key)?;
    Some(Row {
        kind: DEAD,
        key: super::dead::row_key(key),
        value: json(token),
        at: now,
    })
}

/// Rebuilds the state from stored records (oldest first); unreadable records are skipped.
pub(crate) fn restore(rows: Vec<Row>) -> State {
    let mut state = State::default();
    merge(&mut state, rows, Taken::Changes);
    state
}

/// How records came to be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Loaded at start or read from a shared store's change feed: with a bounded cache of
    /// refresh tokens, only the tokens held are updated (the others are fetched when needed).
    Changes,
    /// Fetched because a request presents the token.
    Fetched,
}

/// Takes records into the state, replacing what they replace. Idempotent: a record read
/// twice (a shared store's change feed may repeat one) changes nothing the second time.
pub(crate) fn merge(state: &mut State, rows: Vec<Row>, taken: Taken) {
    for row in rows {
        if matches!(row.kind, PASSWORD_FAILURES | PASSWORD_FAILURES_AT_HOST) {
            merge_share(state, &row);
            continue;
        }
        let Some(value) = row.value else {
            continue;
        };
        match row.kind {
            REFRESH => merge_refresh(state, &row.key, &value, taken),
            AUTHORIZATIONS => merge_approval(state, &row.key, &value),
            LATEST_BY_CLIENT => {
                if let Ok(latest) = serde_json::from_str(&value) {
                    state.latest_by_client.insert(row.key, latest);
                }
            }
            CODE => {
                if let Ok(at) = value.parse() {
                    state.codes.insert(super::fp_key(&row.key), at);
                }
            }
            HOST => merge_host(state, row.key, &value),
            REQUESTS => merge_rate(state, &row.key, &value),
            CLIENT => {
                if let Ok(record) = serde_json::from_str::<super::ClientRecord>(&value) {
                    let client = state.intern(&row.key);
                    state.clients.insert(client, record);
                }
            }
            DEAD => {
                if let (Some(key), Ok(token)) = (
                    super::dead::parse_row_key(state, &row.key),
                    serde_json::from_str::<super::DeadToken>(&value),
                ) {
                    state.dead.insert(key, token);
                }
            }
            _ => {}
        }
    }
}

impl HostRecord {
    fn of(state: &State, host: &str) -> Self {
        Self {
            org: state.org_by_host.get(host).cloned(),
            org_change: state.org_changes.get(host).cloned(),
            password_success: state.password_success_hosts.contains_key(host),
            password_failures: state
                .password_failures_by_host
                .get(host)
                .map_or(0, |t| t.share_of("", &state.writer)),
        }
    }
}

/// A refresh token's record. A rotation is never undone: a record written before it, read
/// after it (two reads of the feed finishing out of order, a fetch overtaking the feed),
/// must not let the guard forward the dead token.
fn merge_refresh(state: &mut State, key: &str, value: &str, taken: Taken) {
    let fp = super::fp_key(key);
    let absent = state.refresh.absent.contains(&fp);
    let held = state.refresh.get(&fp);
    if taken == Taken::Changes && state.refresh_cap.is_some() && held.is_none() && !absent {
        // Not held, but now known to be in the store: a request presenting it fetches it.
        if let Some(known) = &mut state.refresh.known {
            known.insert(fp);
        }
        return;
    }
    let rotated_before = held.and_then(|e| e.rotated_at);
    let Ok(entry) = serde_json::from_str::<super::RefreshEntry>(value) else {
        return;
    };
    let mut entry = state.intern_entry(entry);
    entry.rotated_at = entry.rotated_at.or(rotated_before);
    state.refresh.insert(fp, entry);
}

/// One approval of (org, user, client id), in time order, once.
fn merge_approval(state: &mut State, key: &str, value: &str) {
    let mut parts = key.splitn(4, '|');
    let (Some(org), Some(user), Some(client), Ok(authorization)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        serde_json::from_str::<super::Approval>(value),
    ) else {
        return;
    };
    let key = (state.intern(org), state.intern(user), state.intern(client));
    let list = state.authorizations.entry(key).or_default();
    let same =
        |a: &super::Approval| a.at == authorization.at && a.refresh_fp == authorization.refresh_fp;
    if list.iter().any(same) {
        return;
    }
    // In time order, wherever a replica's record lands in the feed: the approval count
    // evicts the oldest.
    let at = list.partition_point(|a| a.at <= authorization.at);
    list.insert(at, authorization);
    if list.len() > super::AUTHORIZATIONS_KEPT {
        list.remove(0);
    }
}

/// What is known of a host: its org (and a change of it), password outcomes there.
fn merge_host(state: &mut State, host_name: String, value: &str) {
    let Ok(host) = serde_json::from_str::<HostRecord>(value) else {
        return;
    };
    if let Some(org) = host.org {
        state.org_by_host.insert(host_name.clone(), org);
    }
    if let Some(change) = host.org_change {
        state.org_changes.insert(host_name.clone(), change);
    }
    if host.password_success {
        state.password_success_hosts.insert(host_name.clone(), true);
    }
    if host.password_failures > 0 {
        let writer = state.writer.clone();
        state
            .password_failures_by_host
            .entry(host_name)
            .or_default()
            .merge(
                "",
                &writer,
                Some(super::tally::Share {
                    count: host.password_failures,
                    round: 0,
                }),
            );
    }
}

/// Another writer's share of a user's request rate; this writer's own requests are counted
/// as they happen, never read back.
fn merge_rate(state: &mut State, key: &str, value: &str) {
    let (Some((org, user, writer)), Some(minutes)) = (
        super::rate::parse_share_key(key),
        super::rate::Minutes::parse(value),
    ) else {
        return;
    };
    if writer == &*state.writer {
        return;
    }
    let key = (state.intern(org), state.intern(user));
    state
        .requests_per_user
        .entry(key)
        .or_default()
        .merge(writer, Some(minutes));
}

/// One writer's share of a count ([`super::tally`]); unreadable shares are skipped.
fn merge_share(state: &mut State, row: &Row) {
    let share = match row.value.as_deref().map(super::tally::Share::parse) {
        Some(Some(share)) => Some(share),
        Some(None) => return,
        None => None,
    };
    let (subject, writer) = super::tally::parse_share_key(&row.key);
    let own = state.writer.clone();
    if row.kind == PASSWORD_FAILURES {
        let fp = super::fp_key(subject);
        // Kept at 0: the round it knows makes a stale share arriving later count for nothing.
        let tally = state.password_failures.entry(fp).or_default();
        tally.merge(writer, &own, share);
    } else {
        let tally = state
            .password_failures_by_host
            .entry(subject.to_owned())
            .or_default();
        tally.merge(writer, &own, share);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(at: i64, fp: u64) -> Row {
        Row {
            kind: AUTHORIZATIONS,
            key: format!("00Dorg|005user|3MVG9web|{at}|fp_{fp:016x}"),
            value: Some(format!("{{\"at\":{at},\"refresh_fp\":{fp}}}")),
            at,
        }
    }

    #[test]
    fn records_read_twice_or_out_of_order_leave_one_history_in_time_order() {
        let mut state = State::default();
        merge(
            &mut state,
            vec![approval(3_000, 3), approval(1_000, 1)],
            Taken::Changes,
        );
        // A shared store's change feed may hand a record over again, and another replica's
        // older record may arrive after a newer one.
        merge(
            &mut state,
            vec![approval(1_000, 1), approval(2_000, 2)],
            Taken::Changes,
        );
        let list = state.authorizations.values().next().unwrap();
        let times: Vec<i64> = list.iter().map(|a| a.at).collect();
        assert_eq!(times, [1_000, 2_000, 3_000]);
    }

    fn refresh(fp: u64, rotated: Option<i64>) -> Row {
        let entry = crate::ledger::RefreshEntry {
            rotated_at: rotated.and_then(super::super::Millis::new),
            ..crate::ledger::RefreshEntry::issued(
                "login.salesforce.com".into(),
                None,
                "3MVG9web".into(),
                None,
                None,
                None,
                1_000,
                "authorization_code".into(),
            )
        };
        Row {
            kind: REFRESH,
            key: super::super::families::fp_text(fp),
            value: json(&entry),
            at: 1_000,
        }
    }

    #[test]
    fn a_bounded_ledger_takes_changes_only_for_tokens_it_holds_and_fetched_ones_always() {
        let mut state = State {
            refresh_cap: Some(10),
            ..State::default()
        };
        merge(&mut state, vec![refresh(1, None)], Taken::Changes);
        assert!(state.refresh.get(&1).is_none(), "not held: left to a fetch");
        merge(&mut state, vec![refresh(1, None)], Taken::Fetched);
        assert!(state.refresh.get(&1).is_some());
        merge(&mut state, vec![refresh(1, Some(2_000))], Taken::Changes);
        assert!(
            state.refresh.get(&1).unwrap().rotated_at.is_some(),
            "held: updated"
        );
        // A token the store lacked when fetched is taken in when its record arrives.
        state.refresh.absent.insert(2);
        merge(&mut state, vec![refresh(2, None)], Taken::Changes);
        assert!(state.refresh.get(&2).is_some());
        assert!(state.refresh.absent.is_empty());
        // Unbounded (the embedded store), everything is taken.
        let mut whole = State::default();
        merge(&mut whole, vec![refresh(1, None)], Taken::Changes);
        assert!(whole.refresh.get(&1).is_some());
    }

    #[test]
    fn a_full_cache_forgets_the_least_recently_active_tokens_and_trims_to_three_quarters() {
        let mut state = State {
            refresh_cap: Some(8),
            ..State::default()
        };
        for fp in 1..=9u64 {
            let mut row = refresh(fp, None);
            // Token 1 is the oldest issued but was used last: it stays.
            let used = if fp == 1 { "99000" } else { "null" };
            row.value = row.value.map(|v| {
                v.replace(
                    "\"issued_at\":1000",
                    &format!("\"issued_at\":{}", fp * 1_000),
                )
                .replace("\"last_success\":null", &format!("\"last_success\":{used}"))
            });
            merge(&mut state, vec![row], Taken::Fetched);
        }
        assert_eq!(state.refresh.len(), 9);
        state.trim(0);
        assert_eq!(state.refresh.len(), 6);
        let mut held: Vec<u64> = (1..=9)
            .filter(|fp| state.refresh.get(fp).is_some())
            .collect();
        held.sort_unstable();
        assert_eq!(held, [1, 5, 6, 7, 8, 9]);
        assert_eq!(state.refresh.get(&9).unwrap().issued_at, 9_000);
    }

    #[test]
    fn a_rotation_is_not_undone_by_a_record_written_before_it_and_read_after() {
        let mut state = State::default();
        merge(&mut state, vec![refresh(7, Some(2_000))], Taken::Changes);
        merge(&mut state, vec![refresh(7, None)], Taken::Fetched);
        let entry = state.refresh.get(&7).unwrap();
        assert_eq!(entry.rotated_at.map(|m| m.get()), Some(2_000));
    }

    #[test]
    fn a_deleted_record_of_another_replica_is_deleted_here() {
        // The record of a replica with no name: what builds before shares per writer wrote.
        let mut state = State {
            writer: "a".into(),
            ..State::default()
        };
        let row = |value: Option<&str>| Row {
            kind: PASSWORD_FAILURES,
            key: "fp_00000000000000aa".into(),
            value: value.map(str::to_owned),
            at: 1,
        };
        merge(&mut state, vec![row(Some("2"))], Taken::Changes);
        assert_eq!(
            state.password_failures.get(&0xaa).map(|t| t.total()),
            Some(2)
        );
        merge(&mut state, vec![row(None)], Taken::Changes);
        assert_eq!(
            state.password_failures.get(&0xaa).map(|t| t.total()),
            Some(0)
        );
    }

    #[test]
    fn counts_kept_by_several_writers_add_up_and_the_embedded_store_reads_its_old_records() {
        let row = |kind: &'static str, key: &str, value: &str| Row {
            kind,
            key: key.into(),
            value: Some(value.into()),
            at: 1,
        };
        // As the embedded store wrote them before shares were kept per writer.
        let mut state = restore(vec![
            row(PASSWORD_FAILURES, "fp_00000000000000aa", "2"),
            row(
                HOST,
                "login.example",
                r#"{"org":null,"org_change":null,"password_success":false,"password_failures":3}"#,
            ),
        ]);
        assert_eq!(state.password_failures[&0xaa].total(), 2);
        assert_eq!(state.password_failures_by_host["login.example"].total(), 3);
        // A replica's shares next to the others'.
        state.writer = "a1".into();
        merge(
            &mut state,
            vec![
                row(PASSWORD_FAILURES, "fp_00000000000000aa|b2", "4"),
                row(PASSWORD_FAILURES_AT_HOST, "login.example|b2", "1"),
                row(PASSWORD_FAILURES, "fp_00000000000000aa|c3", "x"),
            ],
            Taken::Changes,
        );
        assert_eq!(state.password_failures[&0xaa].total(), 6);
        assert_eq!(state.password_failures_by_host["login.example"].total(), 4);
        // A round begun elsewhere clears them all.
        merge(
            &mut state,
            vec![row(PASSWORD_FAILURES, "fp_00000000000000aa|c3", "0@7")],
            Taken::Changes,
        );
        assert_eq!(state.password_failures[&0xaa].total(), 0);
    }
}
