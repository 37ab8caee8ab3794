//! How an exchange changes what the ledger remembers: a success by grant type (an
//! authorization and its approval, a refresh and its rotation, a JWT subject that works), a
//! failure by what it counts (password and JWT failures, refresh failures per org). The
//! observations returned are what a warning may rest on; judging them is diagnosis's job.
//!
//! Must never: decide or word a warning, or keep a secret (everything is keyed by
//! fingerprint).

use super::{
    APPROVAL_LIMIT, AUTHORIZATIONS_KEPT, Approval, Authorization, CODES_KEPT_MS, ClientRecord, Fp,
    Millis, Observation, RefreshEntry, State, Sym, UNSEEN, dead, fp_key,
};
use crate::oauth::{GrantType, RequestFacts, ResponseFacts, SuccessFacts};

/// Records one exchange in the state; returns what it observed.
pub(super) fn apply(
    state: &mut State,
    req: &RequestFacts,
    resp: &ResponseFacts,
    now: i64,
) -> Vec<Observation> {
    let mut observed = Vec::new();
    match &resp.success {
        Some(success) => apply_success(state, req, success, now, &mut observed),
        None => apply_failure(state, req, resp, now, &mut observed),
    }
    observed
}

fn non_empty(value: &Sym) -> Option<Sym> {
    (!value.is_empty()).then(|| value.clone())
}

/// A success: who it was for, what it says about the client, and by grant type what it
/// issued.
fn apply_success(
    state: &mut State,
    req: &RequestFacts,
    success: &SuccessFacts,
    now: i64,
    observed: &mut Vec<Observation>,
) {
    let parties = Parties::intern(state, req, success);
    if !parties.org.is_empty() {
        note_org(state, req, &parties, now, observed);
    }
    note_client_success(state, &parties.client, req, success, now);
    match req.grant {
        GrantType::RefreshToken => note_refresh(state, req, success, parties, now),
        GrantType::JwtBearer => {
            note_jwt_success(state, req, &parties, now);
            note_authorization(state, req, success, parties, now, observed);
        }
        _ => note_authorization(state, req, success, parties, now, observed),
    }
}

/// The shared strings of an exchange's parties, interned once.
struct Parties {
    org: Sym,
    user: Sym,
    client: Sym,
    host: Sym,
    scope: Option<Sym>,
    instance: Option<Sym>,
}

impl Parties {
    fn intern(state: &mut State, req: &RequestFacts, success: &SuccessFacts) -> Self {
        Self {
            org: state.intern(success.org_id.as_deref().unwrap_or("")),
            user: state.intern(success.user_id.as_deref().unwrap_or("")),
            client: state.intern(req.client_id.as_deref().unwrap_or("")),
            host: state.intern(&req.host),
            scope: state.intern_opt(success.scope.as_deref()),
            instance: state.intern_opt(instance_host(success).as_deref()),
        }
    }

    /// A refresh entry for a token issued to these parties.
    fn entry(&self, at: i64, issued_by: Sym) -> RefreshEntry {
        RefreshEntry::issued(
            self.host.clone(),
            self.instance.clone(),
            self.client.clone(),
            non_empty(&self.org),
            non_empty(&self.user),
            self.scope.clone(),
            at,
            issued_by,
        )
    }
}

/// The org a host belongs to (and when that changed), and the user's request rate.
fn note_org(
    state: &mut State,
    req: &RequestFacts,
    parties: &Parties,
    now: i64,
    observed: &mut Vec<Observation>,
) {
    let org = &parties.org;
    if let Some(old) = state.org_by_host.insert(req.host.clone(), org.to_string())
        && *old != **org
    {
        state
            .org_changes
            .insert(req.host.clone(), (old, org.to_string(), now));
    }
    let (before, count) = state
        .requests_per_user
        .entry((org.clone(), parties.user.clone()))
        .or_default()
        .count(now);
    observed.push(Observation::UserRequestsLastHour { before, count });
}

/// A JWT bearer subject that works for this app.
fn note_jwt_success(state: &mut State, req: &RequestFacts, parties: &Parties, now: i64) {
    let Some(subject) = req.subject_fp.as_deref().map(fp_key) else {
        return;
    };
    state.subjects.entry(subject).or_insert(now);
    let ok = state
        .jwt_subjects_ok
        .entry((parties.host.clone(), parties.client.clone()))
        .or_default();
    if !ok.contains(&subject) {
        ok.push(subject);
        // Enough to say "other users of this app log in"; the list must not grow forever.
        if ok.len() > 32 {
            ok.remove(0);
        }
    }
    state.jwt_failures.remove(&subject);
}

/// A refresh: the presented token's use (and rotation), the new token's descent.
fn note_refresh(
    state: &mut State,
    req: &RequestFacts,
    success: &SuccessFacts,
    parties: Parties,
    now: i64,
) {
    let new_fp = success.refresh_token_fp.as_deref().map(fp_key);
    let presented = req.refresh_fp().map(fp_key);
    // A token issued before grantdoctor watched: from now on it is known, so that its
    // rotation is remembered and the guard can protect its family.
    if let Some(fp) = presented
        && state.refresh.get(&fp).is_none()
    {
        let issued_by = state.intern(UNSEEN);
        state.refresh.insert(fp, parties.entry(now, issued_by));
    }
    if let Some(fp) = presented
        && let Some(entry) = state.refresh.get_mut(&fp)
    {
        entry.uses += 1;
        entry.last_success = Millis::new(now);
        if new_fp.is_some() {
            entry.rotated_at = Millis::new(now);
        }
    }
    let Some(new_fp) = new_fp else {
        return;
    };
    let parent = presented.and_then(|fp| state.refresh.get(&fp)).cloned();
    let issued_by = state.intern("refresh_token");
    let mut entry = parties.entry(success.issued_at.unwrap_or(now), issued_by);
    // What the answer leaves out, the token it descends from knew.
    if let Some(parent) = parent {
        entry.instance_host = entry.instance_host.or(parent.instance_host);
        entry.org_id = entry.org_id.or(parent.org_id);
        entry.user_id = entry.user_id.or(parent.user_id);
    }
    state.refresh.insert(new_fp, entry);
}

/// Any other grant: an authorization (an approval of the app by the user), and what its
/// grant type says besides.
fn note_authorization(
    state: &mut State,
    req: &RequestFacts,
    success: &SuccessFacts,
    parties: Parties,
    now: i64,
    observed: &mut Vec<Observation>,
) {
    let issued_at = success.issued_at.unwrap_or(now);
    let new_fp = success.refresh_token_fp.as_deref().map(fp_key);
    note_grant(state, req, &parties, new_fp, issued_at, now);
    if let Some(fp) = new_fp {
        let issued_by = state.intern(req.grant.as_str());
        state
            .refresh
            .insert(fp, parties.entry(issued_at, issued_by));
    }
    let approval = Approval {
        at: issued_at,
        refresh_fp: new_fp.and_then(std::num::NonZeroU64::new),
    };
    let Parties {
        org, user, client, ..
    } = parties;
    let list = state.authorizations.entry((org, user, client)).or_default();
    list.push(approval);
    // Enough to tell any eviction: a token 64 authorizations old is long gone.
    if list.len() > AUTHORIZATIONS_KEPT {
        list.drain(..list.len() - AUTHORIZATIONS_KEPT);
    }
    let live: Vec<&Approval> = list.iter().filter(|a| a.refresh_fp.is_some()).collect();
    let limit = state.approval_limit_set.map_or(APPROVAL_LIMIT, |n| n.get());
    if new_fp.is_some()
        && let Some(oldest) = live.first()
    {
        let count = live.len();
        observed.push(Observation::LiveApprovals {
            count,
            limit,
            oldest_at: oldest.at,
            evicted_at: (count > limit).then(|| live[count - limit - 1].at),
        });
    }
}

/// Once the records of an exchange are taken: forgets the other writers' shares of a
/// username's password failures that a success cleared (their deletions written), and notes
/// when this writer's share of the user's request rate was written.
pub(super) fn settle(state: &mut State, req: &RequestFacts, resp: &ResponseFacts, now: i64) {
    if let Some(u) = req.username_fp.as_deref().map(fp_key)
        && let Some(failures) = state.password_failures.get_mut(&u)
    {
        failures.settle();
        // One writer needs no round: a cleared count is its deleted record.
        if state.writer.is_empty() && failures.is_empty() {
            state.password_failures.remove(&u);
        }
    }
    if let Some(key) = state.shared_rate_key(resp)
        && let Some(rate) = state.requests_per_user.get_mut(&key)
        && rate.share_due(now)
    {
        rate.shared(now);
    }
}

/// What each interactive grant type records: the code redeemed, the password that worked,
/// whether the app asks for refresh tokens.
fn note_grant(
    state: &mut State,
    req: &RequestFacts,
    parties: &Parties,
    new_fp: Option<Fp>,
    issued_at: i64,
    now: i64,
) {
    if req.grant == GrantType::AuthorizationCode
        && let Some(code) = &req.code_fp
    {
        state.codes.insert(fp_key(code), now);
        if state.codes.len() % 1024 == 0 {
            state.codes.retain(|_, at| now - *at < CODES_KEPT_MS);
        }
    }
    if req.grant == GrantType::Password
        && let Some(u) = &req.username_fp
    {
        // A round begins even where no failure of this user was seen yet: another
        // replica's, not read here so far, must not count on past this success.
        state
            .password_failures
            .entry(fp_key(u))
            .or_default()
            .clear(now);
        state.password_success_hosts.insert(req.host.clone(), true);
    }
    // Only an interactive authorization says whether the app asks for refresh tokens: JWT
    // bearer, password and client credentials never return one, whatever the scopes.
    if req.grant == GrantType::AuthorizationCode {
        let authorization = Authorization {
            at: issued_at,
            host: parties.host.clone(),
            refresh_fp: new_fp,
            scope: parties.scope.clone(),
        };
        state
            .latest_by_client
            .insert(parties.client.to_string(), authorization);
    }
}

fn apply_failure(
    state: &mut State,
    req: &RequestFacts,
    resp: &ResponseFacts,
    now: i64,
    observed: &mut Vec<Observation>,
) {
    if req.grant == GrantType::Password && resp.error.is_some() {
        state
            .password_failures_by_host
            .entry(req.host.clone())
            .or_default()
            .add_own();
        if let Some(u) = &req.username_fp {
            let count = state
                .password_failures
                .entry(fp_key(u))
                .or_default()
                .add_own();
            observed.push(Observation::PasswordFailures(count));
        }
    }
    if req.grant == GrantType::JwtBearer
        && let Some(subject) = req.subject_fp.as_deref().map(fp_key)
    {
        state.subjects.entry(subject).or_insert(now);
        let (recent, warned) = state.jwt_failures.entry(subject).or_default();
        if let Some(count) = dead::tick(recent, warned, now) {
            observed.push(Observation::JwtFailureStorm(count));
        }
        if state.jwt_failures.len() > 10_000 {
            state
                .jwt_failures
                .retain(|_, (recent, _)| recent.back().is_some_and(|t| now - t < 60_000));
        }
    }
    if let Some(client) = req.client_id.as_deref().filter(|c| !c.is_empty()) {
        let client = state.intern(client);
        state.clients.entry(client).or_insert_with(|| ClientRecord {
            first_seen: now,
            ..ClientRecord::default()
        });
    }
    if req.grant == GrantType::RefreshToken
        && let Some(fp) = req.refresh_fp().map(fp_key)
        && let Some(entry) = state.refresh.get_mut(&fp)
    {
        entry.failures += 1;
        if let Some(org) = entry.org_id.clone() {
            let list = state
                .refresh_failures_by_org
                .entry(org.to_string())
                .or_default();
            list.push_back((now, fp));
            while list.len() > 64 {
                list.pop_front();
            }
        }
    }
}

/// What a success says about its client id: the secret that works, the refresh token lengths.
fn note_client_success(
    state: &mut State,
    client: &Sym,
    req: &RequestFacts,
    success: &SuccessFacts,
    now: i64,
) {
    if client.is_empty() {
        return;
    }
    let record = state
        .clients
        .entry(client.clone())
        .or_insert_with(|| ClientRecord {
            first_seen: now,
            ..ClientRecord::default()
        });
    if let Some(secret) = req.client_secret_fp.as_deref().map(fp_key) {
        if record.secret_fp.is_some_and(|old| old != secret) {
            record.previous_secret_ok_at = record.secret_ok_at;
        }
        record.secret_fp = Some(secret);
        record.secret_ok_at = Some(now);
    }
    if let Some(len) = success.refresh_token_len {
        record.refresh_len = Some(match record.refresh_len {
            Some((min, max)) => (min.min(len), max.max(len)),
            None => (len, len),
        });
    }
}

fn instance_host(success: &SuccessFacts) -> Option<String> {
    let url = success.instance_url.as_deref()?;
    let host = url.strip_prefix("https://")?.split('/').next()?;
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::Fingerprinter;

    const T0: i64 = 1_764_093_000_000;

    struct Wire(Fingerprinter);

    impl Wire {
        fn req(&self, body: &str) -> RequestFacts {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded".parse().unwrap(),
            );
            RequestFacts::parse(
                "login.salesforce.com",
                true,
                &headers,
                None,
                body.as_bytes(),
                &self.0,
            )
        }

        fn issued(&self, refresh: &str, with_ids: bool, at: i64) -> ResponseFacts {
            let mut body = serde_json::json!({
                "access_token": "00D000000000001!AQ",
                "refresh_token": refresh,
                "scope": "api refresh_token",
                "token_type": "Bearer",
                "issued_at": at.to_string(),
            });
            if with_ids {
                body["id"] =
                    "https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA".into();
            }
            ResponseFacts::parse(200, body.to_string().as_bytes(), &self.0)
        }

        fn fp(&self, secret: &str) -> Fp {
            fp_key(&self.0.fingerprint(secret))
        }
    }

    #[test]
    fn a_rotation_marks_the_presented_token_and_the_new_one_inherits_its_parties() {
        let wire = Wire(Fingerprinter::from_key(&[3; 32]));
        let mut state = State::default();
        let code = wire.req("grant_type=authorization_code&client_id=3MVG9web&code=c1");
        apply(&mut state, &code, &wire.issued("5Aep-first", true, T0), T0);
        let refresh =
            wire.req("grant_type=refresh_token&client_id=3MVG9web&refresh_token=5Aep-first");
        // Salesforce's refresh answer here leaves out the identity URL.
        apply(
            &mut state,
            &refresh,
            &wire.issued("5Aep-second", false, T0 + 1),
            T0 + 1,
        );
        let first = state.refresh.get(&wire.fp("5Aep-first")).unwrap();
        assert_eq!(first.uses, 1);
        assert!(first.rotated_at.is_some());
        let second = state.refresh.get(&wire.fp("5Aep-second")).unwrap();
        assert_eq!(second.org_id.as_deref(), Some("00D000000000001AAA"));
        assert_eq!(second.user_id.as_deref(), Some("005000000000001AAA"));
        assert_eq!(&*second.issued_by, "refresh_token");
    }

    #[test]
    fn the_sixth_authorization_observes_the_eviction_of_the_first() {
        let wire = Wire(Fingerprinter::from_key(&[3; 32]));
        let mut state = State::default();
        let mut last = Vec::new();
        for i in 0..6i64 {
            let code = wire.req(&format!(
                "grant_type=authorization_code&client_id=3MVG9web&code=c{i}"
            ));
            let at = T0 + i * 1000;
            last = apply(
                &mut state,
                &code,
                &wire.issued(&format!("5Aep-{i}"), true, at),
                at,
            );
        }
        let live = last.iter().find_map(|o| match o {
            Observation::LiveApprovals {
                count, evicted_at, ..
            } => Some((*count, *evicted_at)),
            _ => None,
        });
        assert_eq!(live, Some((6, Some(T0))));
    }

    /// What `GrantLedger::remember` does to the state, and the records it writes.
    fn exchange(
        state: &mut State,
        req: &RequestFacts,
        resp: &ResponseFacts,
        now: i64,
    ) -> (Vec<Observation>, Vec<crate::ledger::store::Row>) {
        let obs = apply(state, req, resp, now);
        let rows = crate::ledger::persist::rows_for(state, req, resp, now);
        settle(state, req, resp, now);
        (obs, rows)
    }

    fn failed(wire: &Wire) -> ResponseFacts {
        ResponseFacts::parse(
            400,
            br#"{"error":"invalid_grant","error_description":"authentication failure"}"#,
            &wire.0,
        )
    }
    const PW: &str = "grant_type=password&client_id=3MVG9web&client_secret=s&username=bob%40acme.com&password=pw";

    #[test]
    fn a_success_clears_failures_of_other_replicas_it_had_not_read_yet() {
        let wire = Wire(Fingerprinter::from_key(&[3; 32]));
        let (mut a, mut b) = (
            State {
                writer: "a".into(),
                ..State::default()
            },
            State {
                writer: "b".into(),
                ..State::default()
            },
        );
        let req = wire.req(PW);
        let mut b_rows = Vec::new();
        for i in 0..2 {
            b_rows.extend(exchange(&mut b, &req, &failed(&wire), T0 + i).1);
        }
        // A's success, before B's records reach it.
        let (_, a_rows) = exchange(&mut a, &req, &wire.issued("5Aep-x", true, T0 + 10), T0 + 10);
        assert!(
            a_rows
                .iter()
                .any(|r| r.kind == "password_failures" && r.key.ends_with("|a")),
            "the success begins a round: {a_rows:?}"
        );
        crate::ledger::persist::merge(&mut a, b_rows, crate::ledger::persist::Taken::Changes);
        let (obs, _) = exchange(&mut a, &req, &failed(&wire), T0 + 20);
        assert!(
            obs.contains(&Observation::PasswordFailures(1)),
            "after a success: {obs:?}"
        );
    }

    #[test]
    fn requests_after_the_last_share_are_shared_once_due_though_the_user_stopped() {
        let wire = Wire(Fingerprinter::from_key(&[3; 32]));
        let (mut a, mut b) = (
            State {
                writer: "a".into(),
                ..State::default()
            },
            State {
                writer: "b".into(),
                ..State::default()
            },
        );
        let req = wire.req("grant_type=authorization_code&client_id=3MVG9web&code=c1");
        let mut published = Vec::new();
        for i in 0..5 {
            published.extend(
                exchange(
                    &mut a,
                    &req,
                    &wire.issued("5Aep-x", true, T0 + i * 100),
                    T0 + i * 100,
                )
                .1
                .into_iter()
                .filter(|r| r.kind == "requests"),
            );
        }
        assert_eq!(published.len(), 1, "at most one share a second");
        // The user stops: the four requests after the share wait until it is due again.
        assert!(crate::ledger::persist::due_rate_rows(&mut a, T0 + 900).is_empty());
        let trailing = crate::ledger::persist::due_rate_rows(&mut a, T0 + 1_000);
        assert_eq!(trailing.len(), 1);
        assert!(crate::ledger::persist::due_rate_rows(&mut a, T0 + 5_000).is_empty());
        published.extend(trailing);
        crate::ledger::persist::merge(&mut b, published, crate::ledger::persist::Taken::Changes);
        let (obs, _) = exchange(
            &mut b,
            &req,
            &wire.issued("5Aep-y", true, T0 + 600_000),
            T0 + 600_000,
        );
        assert!(
            obs.contains(&Observation::UserRequestsLastHour {
                before: 0,
                count: 6
            }),
            "{obs:?}"
        );
    }

    #[test]
    fn an_embedded_host_count_of_an_older_build_survives_the_next_restart() {
        use crate::ledger::store::Row;
        let wire = Wire(Fingerprinter::from_key(&[3; 32]));
        let mut state = crate::ledger::persist::restore(vec![Row {
            kind: "host",
            key: "login.salesforce.com".into(),
            value: Some(
                r#"{"org":null,"org_change":null,"password_success":false,"password_failures":3}"#
                    .into(),
            ),
            at: 1,
        }]);
        assert_eq!(
            state.password_failures_by_host["login.salesforce.com"].total(),
            3
        );
        // A refresh on the host (no password failure), then a restart from what was written.
        let req = wire.req("grant_type=authorization_code&client_id=3MVG9web&code=c9");
        let (_, rows) = exchange(&mut state, &req, &wire.issued("5Aep-z", true, T0), T0);
        let restored = crate::ledger::persist::restore(rows);
        assert_eq!(
            restored
                .password_failures_by_host
                .get("login.salesforce.com")
                .map(|t| t.total()),
            Some(3)
        );
    }

    #[test]
    fn a_malformed_rate_share_is_skipped() {
        use crate::ledger::store::Row;
        let wire = Wire(Fingerprinter::from_key(&[3; 32]));
        let mut state = State {
            writer: "a".into(),
            ..State::default()
        };
        crate::ledger::persist::merge(
            &mut state,
            vec![Row {
                kind: "requests",
                key: "00D000000000001AAA|005000000000001AAA|zz".into(),
                value: Some("9223372036854775807:1".into()),
                at: 1,
            }],
            crate::ledger::persist::Taken::Changes,
        );
        let req = wire.req("grant_type=authorization_code&client_id=3MVG9web&code=c1");
        let (obs, _) = exchange(&mut state, &req, &wire.issued("5Aep-x", true, T0), T0);
        assert!(
            obs.contains(&Observation::UserRequestsLastHour {
                before: 0,
                count: 1
            }),
            "the share was not read: {obs:?}"
        );
    }

    #[test]
    fn a_host_record_stays_readable_by_older_builds() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct OldHostRecord {
            org: Option<String>,
            org_change: Option<(String, String, i64)>,
            password_success: bool,
            password_failures: u32,
        }
        let wire = Wire(Fingerprinter::from_key(&[3; 32]));
        let mut state = State::default();
        let req = wire.req("grant_type=authorization_code&client_id=3MVG9web&code=c1");
        let (_, rows) = exchange(&mut state, &req, &wire.issued("5Aep-x", true, T0), T0);
        let host = rows.iter().find(|r| r.kind == "host").unwrap();
        let v = host.value.as_deref().unwrap();
        assert!(serde_json::from_str::<OldHostRecord>(v).is_ok(), "{v}");
    }
}
