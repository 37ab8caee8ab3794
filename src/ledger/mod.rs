//! What grantdoctor remembers of the token exchanges it saw: refresh tokens issued (by
//! fingerprint), to whom, by which host, with which scopes; their uses and rotations;
//! approvals per (org, user, client id) in order; redeemed codes; password failures; request
//! rates. Diagnosis reads a [`LedgerView`] of it; it never reads the ledger itself.
//!
//! Times are upstream milliseconds (the `issued_at` Salesforce returns, the `Date` it sends),
//! so clock skew between this host and Salesforce cannot distort ages.
//!
//! One mutex rather than a map per record kind: observing an exchange updates several related
//! records at once, and token-endpoint traffic is small next to a lock's cost.
//!
//! Must never: hold a secret. Keys are fingerprints; usernames are fingerprinted too.

mod apply;
pub mod backend;
mod dead;
pub mod families;
mod journal;
mod known;
mod persist;
mod rate;
mod store;
mod tally;
mod view;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::oauth::{RequestFacts, ResponseFacts};

pub use backend::RecordStore;
pub use dead::{Absorbed, BODY_KEPT_MAX, DeadToken, KeptCause, STORM_PER_MINUTE};
pub(crate) use persist::REFRESH as REFRESH_KIND;
pub(crate) use persist::kind as record_kind;
pub use store::Row;
pub(crate) use store::fold;
pub use store::{Commit, Retention, StoreHooks};
pub use view::{ConcurrentRefresh, LedgerView, SecretHistory, TokenHistory};

/// Why the ledger on disk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{}: {source}", path.display())]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Database {
        path: std::path::PathBuf,
        source: rusqlite::Error,
    },
}

/// Live approvals per (user, app) before Salesforce evicts the oldest.
pub const APPROVAL_LIMIT: usize = 5;
/// Authorizations kept per (org, user, client id).
pub(crate) const AUTHORIZATIONS_KEPT: usize = 64;

/// A shared string: hosts, client ids, org and user ids and scopes repeat across millions of
/// records, so each distinct value is stored once.
pub(crate) type Sym = Arc<str>;

/// A time in upstream milliseconds that is never zero, so `Option<Millis>` takes 8 bytes.
pub(crate) type Millis = std::num::NonZeroI64;

/// A fingerprint as the ledger keys on it: the 64 bits behind `fp_<16 hex digits>`.
pub(crate) type Fp = u64;

pub fn fp_key(fp: &str) -> Fp {
    u64::from_str_radix(fp.trim_start_matches("fp_"), 16).unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RefreshEntry {
    pub host: Sym,
    /// The host of the `instance_url` the token came with: its org's My Domain.
    pub instance_host: Option<Sym>,
    pub client_id: Sym,
    pub org_id: Option<Sym>,
    pub user_id: Option<Sym>,
    pub scope: Option<Sym>,
    pub issued_at: i64,
    pub issued_by: Sym,
    pub uses: u32,
    pub last_success: Option<Millis>,
    /// When a refresh with this token returned a new one (rotation): the token is dead.
    pub rotated_at: Option<Millis>,
    pub failures: u32,
}

impl RefreshEntry {
    /// A token just issued: never used, never failed.
    #[allow(clippy::too_many_arguments)]
    fn issued(
        host: Sym,
        instance_host: Option<Sym>,
        client_id: Sym,
        org_id: Option<Sym>,
        user_id: Option<Sym>,
        scope: Option<Sym>,
        issued_at: i64,
        issued_by: Sym,
    ) -> Self {
        Self {
            host,
            instance_host,
            client_id,
            org_id,
            user_id,
            scope,
            issued_at,
            issued_by,
            uses: 0,
            last_success: None,
            rotated_at: None,
            failures: 0,
        }
    }
}

/// One authorization of (org, user, client id), as the approval count needs it: when, and
/// which refresh token it issued (16 bytes; a user's list holds up to 64 of them).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Approval {
    pub at: i64,
    pub refresh_fp: Option<std::num::NonZeroU64>,
}

/// The newest authorization of a client id, with what the missing-scope evidence needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Authorization {
    pub at: i64,
    pub host: Sym,
    pub refresh_fp: Option<Fp>,
    pub scope: Option<Sym>,
}

type UserKey = (Sym, Sym, Sym);

/// What the ledger keeps per client id beyond its authorizations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ClientRecord {
    /// When the client id was first seen in a token request.
    pub first_seen: i64,
    /// The client secret of the last success, fingerprinted, and when.
    pub secret_fp: Option<Fp>,
    pub secret_ok_at: Option<i64>,
    /// A success with another secret before that one, and when it was last seen working.
    pub previous_secret_ok_at: Option<i64>,
    /// Shortest and longest refresh token issued to it, in characters.
    pub refresh_len: Option<(usize, usize)>,
}

/// Counts of what the ledger holds (no ids, no fingerprints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerSizes {
    pub tokens_known: usize,
    pub families: usize,
    pub live_approvals: usize,
    pub dead_tokens: usize,
}

/// What a diagnosis concluded, as the ledger keeps it: the ledger records, the rules judge.
#[derive(Debug, Clone, Default)]
pub struct Judgement {
    /// A refresh token failed on its first use and nothing else recorded explains it.
    pub first_use_unexplained: bool,
    /// Salesforce declared the presented refresh token dead and the diagnosis rests on
    /// evidence: the breaker answers its retries from now on.
    pub dead: Option<DeadToken>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub interned: std::collections::HashSet<Sym>,
    pub refresh: RefreshTable,
    pub authorizations: HashMap<UserKey, Vec<Approval>>,
    /// The newest authorization seen per client id, whoever it was for.
    pub latest_by_client: HashMap<String, Authorization>,
    pub codes: HashMap<Fp, i64>,
    pub in_flight: HashMap<Fp, (u32, Option<std::time::Instant>)>,
    /// Consecutive password failures per username (fingerprinted), by writer.
    pub password_failures: HashMap<Fp, tally::Tally>,
    pub password_success_hosts: HashMap<String, bool>,
    pub password_failures_by_host: HashMap<String, tally::Tally>,
    /// Token requests of the last hour per (org id, user id), by writer.
    pub requests_per_user: HashMap<(Sym, Sym), rate::Rate>,
    pub org_by_host: HashMap<String, String>,
    /// Host → (old org, new org, when): a new org id appeared for a host.
    pub org_changes: HashMap<String, (String, String, i64)>,
    /// Refresh failures per org id: (when, token fingerprint).
    pub refresh_failures_by_org: HashMap<String, VecDeque<(i64, Fp)>>,
    /// Per client id: refresh tokens that failed on their first use, nothing else explaining it.
    pub first_use_failures: HashMap<String, u32>,
    pub clients: HashMap<Sym, ClientRecord>,
    /// JWT subjects (fingerprinted) by when they were first seen (memory only: propagation
    /// is a matter of minutes).
    pub subjects: HashMap<Fp, i64>,
    /// Per (host, client id): subjects whose JWT bearer login succeeded.
    pub jwt_subjects_ok: HashMap<(Sym, Sym), Vec<Fp>>,
    /// Per JWT subject: failures of the last minute and when a storm was last warned about.
    pub jwt_failures: HashMap<Fp, (VecDeque<i64>, Option<i64>)>,
    pub dead: HashMap<dead::DeadKey, DeadToken>,
    /// `--approval-limit`, when not Salesforce's documented 5.
    pub approval_limit_set: Option<std::num::NonZeroUsize>,
    /// On a shared store: the refresh tokens held in memory at most (a cache of the store's
    /// records); `None`: all of them (the embedded store, loaded whole at start).
    pub refresh_cap: Option<usize>,
    /// The name this ledger's records are written under, for the counts each writer keeps a
    /// share of ([`tally`]); empty on the embedded store, which only this process writes.
    pub writer: Sym,
}

/// Refresh tokens by fingerprint: entries in one dense vector and a small index into it.
/// A map of whole entries doubles its buckets at each power of two, which at a million tokens
/// left half of ~400 MiB empty; an index of 12-byte slots costs a tenth of that.
#[derive(Debug, Default)]
pub(crate) struct RefreshTable {
    index: HashMap<Fp, u32>,
    entries: Vec<RefreshEntry>,
    /// On a shared store: presented tokens the store did not hold when fetched (a token
    /// that keeps failing must not cost a fetch each time). Inserting a token takes it out.
    pub absent: std::collections::HashSet<Fp>,
    /// On a shared store: the tokens the store may hold (every one this table ever took in,
    /// and those the store held at start), so that a token it surely lacks is not fetched.
    pub known: Option<known::Known>,
}

impl RefreshTable {
    pub fn get(&self, fp: &Fp) -> Option<&RefreshEntry> {
        self.index.get(fp).map(|&i| &self.entries[i as usize])
    }

    pub fn get_mut(&mut self, fp: &Fp) -> Option<&mut RefreshEntry> {
        self.index.get(fp).map(|&i| &mut self.entries[i as usize])
    }

    pub fn insert(&mut self, fp: Fp, entry: RefreshEntry) {
        self.absent.remove(&fp);
        if let Some(known) = &mut self.known {
            known.insert(fp);
        }
        match self.index.get(&fp) {
            Some(&i) => self.entries[i as usize] = entry,
            None => {
                self.index.insert(fp, self.entries.len() as u32);
                self.entries.push(entry);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Keeps the `keep` entries most recently active (issued, used or rotated), drops the
    /// rest: what a bounded cache forgets it can fetch again.
    pub fn evict_to(&mut self, keep: usize) {
        if self.entries.len() <= keep {
            return;
        }
        let mut by_activity: Vec<(i64, Fp)> = self
            .index
            .iter()
            .map(|(&fp, &i)| (self.entries[i as usize].active_at(), fp))
            .collect();
        let cut = by_activity.len() - keep;
        by_activity.select_nth_unstable(cut);
        let mut kept = vec![false; self.entries.len()];
        for (_, fp) in &by_activity[cut..] {
            kept[self.index[fp] as usize] = true;
        }
        // Where each kept entry lands once the others are gone.
        let mut moved_to = Vec::with_capacity(kept.len());
        let mut next = 0u32;
        for &k in &kept {
            moved_to.push(next);
            next += u32::from(k);
        }
        let mut i = 0;
        self.entries.retain(|_| {
            i += 1;
            kept[i - 1]
        });
        self.index.retain(|_, i| kept[*i as usize]);
        for i in self.index.values_mut() {
            *i = moved_to[*i as usize];
        }
    }

    /// Whether the store may hold a record of `fp` this table lacks: worth a fetch.
    pub fn worth_fetching(&self, fp: Fp) -> bool {
        self.get(&fp).is_none()
            && !self.absent.contains(&fp)
            && self.known.as_ref().is_none_or(|k| k.may_hold(fp))
    }

    /// Notes that the store did not hold `fp`, forgetting all such notes past `bound`.
    pub fn mark_absent(&mut self, fp: Fp, bound: usize) {
        if self.absent.len() >= bound {
            self.absent.clear();
        }
        self.absent.insert(fp);
    }
}

impl RefreshEntry {
    /// The last time anything happened to the token.
    fn active_at(&self) -> i64 {
        let last = |m: Option<Millis>| m.map_or(i64::MIN, Millis::get);
        self.issued_at
            .max(last(self.last_success))
            .max(last(self.rotated_at))
    }
}

/// Refresh tokens a ledger on a shared store holds in memory at most; the others are
/// fetched when a request presents one. About 150 bytes each.
pub const REFRESH_CACHED_MAX: usize = 50_000;

/// `issued_by` of a token first seen being used, its issue never observed; `issued_at` is
/// then when it was first seen.
pub const UNSEEN: &str = "unseen";

/// Codes live minutes at Salesforce; an hour of them is enough to recognise a reuse.
const CODES_KEPT_MS: i64 = 3_600_000;

/// The oldest code a ledger loading its history now still keeps (this host's clock: the
/// records' times are Salesforce's, which it follows within seconds).
pub(crate) fn codes_kept_since() -> i64 {
    wall_ms() - CODES_KEPT_MS
}

/// The oldest request-rate share that still counts (the same clock as codes).
pub(crate) fn rates_kept_since() -> i64 {
    wall_ms() - rate::HOUR_MS
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl State {
    pub fn approval_limit(&self) -> usize {
        self.approval_limit_set.map_or(APPROVAL_LIMIT, |n| n.get())
    }

    /// Forgets the least recently active refresh tokens once the cache is over its bound
    /// (or would be, with `room` more), down to three quarters of it, so that the sort is
    /// paid once per many inserts.
    pub fn trim(&mut self, room: usize) {
        if let Some(cap) = self.refresh_cap
            && self.refresh.len() + room > cap
        {
            self.refresh.evict_to(cap / 4 * 3);
        }
    }

    /// On a shared store, the (org id, user id) of the request rate a success counted in,
    /// whose share this writer publishes ([`rate`]).
    pub fn shared_rate_key(&self, resp: &ResponseFacts) -> Option<(Sym, Sym)> {
        if self.writer.is_empty() {
            return None;
        }
        let success = resp.success.as_ref()?;
        Some((
            self.interned.get(success.org_id.as_deref()?)?.clone(),
            self.interned
                .get(success.user_id.as_deref().unwrap_or(""))?
                .clone(),
        ))
    }

    /// The shared copy of `value`.
    pub fn intern(&mut self, value: &str) -> Sym {
        if let Some(existing) = self.interned.get(value) {
            return existing.clone();
        }
        let sym: Sym = Arc::from(value);
        self.interned.insert(sym.clone());
        sym
    }

    pub fn intern_opt(&mut self, value: Option<&str>) -> Option<Sym> {
        value.map(|v| self.intern(v))
    }

    /// A restored entry with its strings shared like freshly recorded ones.
    pub fn intern_entry(&mut self, entry: RefreshEntry) -> RefreshEntry {
        RefreshEntry {
            host: self.intern(&entry.host),
            instance_host: self.intern_opt(entry.instance_host.as_deref()),
            client_id: self.intern(&entry.client_id),
            org_id: self.intern_opt(entry.org_id.as_deref()),
            user_id: self.intern_opt(entry.user_id.as_deref()),
            scope: self.intern_opt(entry.scope.as_deref()),
            issued_by: self.intern(&entry.issued_by),
            ..entry
        }
    }
}

/// A fact recording an exchange brought to light that a warning may rest on. The ledger only
/// reports what it counted; diagnosis decides which facts deserve a warning and words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Token requests of this (org, user) in the last hour, this success included
    /// (`count`), and what the last one through this replica saw (`before`): on a shared
    /// store the others' requests arrive in steps.
    UserRequestsLastHour { before: usize, count: usize },
    /// A success issued a refresh token; the authorizations of this (org, user, client id)
    /// that issued one, oldest first.
    LiveApprovals {
        count: usize,
        limit: usize,
        oldest_at: i64,
        /// When there are more than `limit`: the one this authorization pushed out.
        evicted_at: Option<i64>,
    },
    /// Consecutive password-grant failures for this username, this one included.
    PasswordFailures(u32),
    /// JWT bearer logins of this subject failing in the last minute, reported when they just
    /// became a storm (at most once per quiet period).
    JwtFailureStorm(usize),
}

/// The ledger itself.
#[derive(Debug, Default)]
pub struct GrantLedger {
    state: Mutex<State>,
    store: Option<Box<dyn RecordStore>>,
    /// `--ledger-sync write-behind`: no answer waits for the disk (measures durability's cost).
    pub(crate) write_behind: bool,
}

/// Marks a refresh as in flight until dropped.
pub struct InFlight<'a> {
    ledger: &'a GrantLedger,
    fp: Fp,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.ledger.lock();
        if let Some(entry) = state.in_flight.get_mut(&self.fp) {
            entry.0 = entry.0.saturating_sub(1);
            entry.1 = Some(std::time::Instant::now());
        }
    }
}

impl GrantLedger {
    /// A ledger that lives in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A ledger persisted in `<data_dir>/ledger.sqlite3`, loaded with the history kept there.
    pub fn open(
        data_dir: &std::path::Path,
        retention: Retention,
        now: i64,
        hooks: StoreHooks,
    ) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::Dir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join("ledger.sqlite3");
        let (store, rows) = store::open(&path, retention, now, hooks)
            .map_err(|source| OpenError::Database { path, source })?;
        Ok(Self {
            state: Mutex::new(persist::restore(rows)),
            store: Some(Box::new(store)),
            write_behind: false,
        })
    }

    /// A ledger on a store other replicas share, loaded with everything it holds but the
    /// refresh tokens: at most `refresh_cached` of those are held, the others fetched when
    /// a request presents one.
    pub async fn open_shared(store: Box<dyn RecordStore>, refresh_cached: usize) -> Self {
        let mut state = State {
            refresh_cap: Some(refresh_cached.max(4)),
            writer: Sym::from(store.writer()),
            ..State::default()
        };
        state.refresh.known = Some(known::Known::default());
        let ledger = Self {
            state: Mutex::new(state),
            store: Some(store),
            write_behind: false,
        };
        if let Some(store) = &ledger.store {
            // A page at a time, each merged before the next is read.
            while let Some(rows) = store.changes().await {
                persist::merge(&mut ledger.lock(), rows, persist::Taken::Changes);
                if !store.catching_up() {
                    break;
                }
            }
            // Only after a whole first read: the tokens it left out are the ones learned.
            if !store.catching_up() {
                ledger.learn_stored_tokens(store.as_ref()).await;
            }
        }
        ledger
    }

    /// Reads which refresh tokens the store holds (their keys only, a page at a time), after
    /// the first read began: those recorded since reach this replica by the change feed. If
    /// the store fails meanwhile, every token not held stays worth a fetch.
    async fn learn_stored_tokens(&self, store: &dyn RecordStore) {
        let mut after = String::new();
        loop {
            let Some(keys) = store.keys_after(REFRESH_KIND, after.clone()).await else {
                return;
            };
            let Some(last) = keys.last().cloned() else {
                break;
            };
            let mut state = self.lock();
            if let Some(known) = &mut state.refresh.known {
                for key in &keys {
                    known.insert(fp_key(key));
                }
            }
            drop(state);
            after = last;
        }
        if let Some(known) = &mut self.lock().refresh.known {
            known.completed();
        }
    }

    /// Takes in what other replicas recorded since the last look, and the record of the
    /// `presented` refresh token when this replica does not hold it; a no-op for a store no
    /// one else writes. Called before an exchange is judged, so that a token issued, rotated
    /// or evicted through another replica is known here.
    pub async fn sync(&self, presented: Option<Fp>) {
        let Some(store) = &self.store else { return };
        if let Some(rows) = store.changes().await
            && !rows.is_empty()
        {
            persist::merge(&mut self.lock(), rows, persist::Taken::Changes);
        }
        let Some(fp) = presented else { return };
        if !self.lock().refresh.worth_fetching(fp) {
            return;
        }
        let Some(rows) = store.fetch(REFRESH_KIND, vec![families::fp_text(fp)]).await else {
            return;
        };
        let mut state = self.lock();
        if rows.is_empty() {
            let bound = state.refresh_cap.unwrap_or(usize::MAX);
            state.refresh.mark_absent(fp, bound);
            return;
        }
        // Room first: the fetched token may be older than every one held.
        state.trim(rows.len());
        persist::merge(&mut state, rows, persist::Taken::Fetched);
    }

    /// Writes the shares of users' request rates that requests since the last left
    /// behind (on a shared store, called every second): a user who stops
    /// is counted whole by the other replicas all the same.
    pub fn share_rates(&self, now: i64) {
        let Some(store) = &self.store else { return };
        let rows = persist::due_rate_rows(&mut self.lock(), now);
        if !rows.is_empty() {
            store.write(rows);
        }
    }

    /// Whether other replicas share this ledger's records.
    pub fn shared(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.shared())
    }

    /// Salesforce's approval limit as this deployment sees it (`--approval-limit`).
    pub fn with_approval_limit(self, limit: usize) -> Self {
        self.lock().approval_limit_set = std::num::NonZeroUsize::new(limit);
        self
    }

    /// Records what the diagnosis of a failed exchange concluded.
    pub fn judged(&self, req: &RequestFacts, judgement: Judgement, now: i64) {
        let mut state = self.lock();
        let fp = req.refresh_fp().map(fp_key);
        if judgement.first_use_unexplained
            && let Some(entry) = fp.and_then(|fp| state.refresh.get(&fp))
            && entry.failures == 1
        {
            let client = entry.client_id.to_string();
            *state.first_use_failures.entry(client).or_default() += 1;
        }
        let (Some(fp), Some(token)) = (fp, judgement.dead) else {
            return;
        };
        let key = (
            state.intern(&req.host),
            state.intern(req.client_id.as_deref().unwrap_or("")),
            fp,
        );
        dead::declare(&mut state, key.clone(), token);
        let row = persist::dead_row(&state, &key, now);
        drop(state);
        if let Some(store) = &self.store {
            store.write(row.into_iter().collect());
        }
    }

    /// A retry of a refresh token Salesforce declared dead for this host and client id:
    /// counted, and answered by the caller without forwarding.
    pub fn absorb_dead(&self, req: &RequestFacts, now: i64) -> Option<Absorbed> {
        let fp = fp_key(req.refresh_fp()?);
        let mut state = self.lock();
        let key = (
            state.intern(&req.host),
            state.intern(req.client_id.as_deref().unwrap_or("")),
            fp,
        );
        let absorbed = dead::absorb(&mut state, &key, now)?;
        let row = persist::dead_row(&state, &key, now);
        drop(state);
        if let Some(store) = &self.store {
            store.write(row.into_iter().collect());
        }
        Some(absorbed)
    }

    /// What the ledger holds, for the gauges: refresh tokens known, token families (org, user,
    /// client id) and their live approvals (issued refresh tokens, at most the limit each).
    pub fn sizes(&self) -> LedgerSizes {
        let state = self.lock();
        let limit = state.approval_limit();
        let live = state
            .authorizations
            .values()
            .map(|list| {
                list.iter()
                    .filter(|a| a.refresh_fp.is_some())
                    .count()
                    .min(limit)
            })
            .sum();
        LedgerSizes {
            tokens_known: state.refresh.len(),
            families: state.authorizations.len(),
            live_approvals: live,
            dead_tokens: state.dead.len(),
        }
    }

    /// How many refresh tokens the ledger knows (for logs and tests).
    pub fn known_refresh_tokens(&self) -> usize {
        self.lock().refresh.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a refresh request going upstream; the view of a concurrent one will see it.
    pub fn begin(&self, req: &RequestFacts) -> Option<InFlight<'_>> {
        let fp = fp_key(req.refresh_fp()?);
        self.lock().in_flight.entry(fp).or_default().0 += 1;
        Some(InFlight { ledger: self, fp })
    }

    /// Whether a successful refresh with this token returned a new one: under rotation the
    /// token is dead, and presenting it again revokes its whole family.
    pub fn rotated(&self, refresh_fp: Fp) -> bool {
        self.lock()
            .refresh
            .get(&refresh_fp)
            .is_some_and(|e| e.rotated_at.is_some())
    }

    /// Everything the ledger knows that bears on this exchange, taken before it is recorded.
    pub fn view(&self, req: &RequestFacts, now: i64) -> LedgerView {
        view::build(&self.lock(), req, now)
    }

    /// Records the exchange (in memory, and on disk when persisted); returns what it observed
    /// that a warning may rest on, and the commit to wait for before the client sees a new
    /// refresh token: after a crash, a rotation the disk lost would let the guard forward the
    /// dead token.
    pub fn remember(
        &self,
        req: &RequestFacts,
        resp: &ResponseFacts,
        now: i64,
    ) -> (Vec<Observation>, Option<Commit>) {
        let mut state = self.lock();
        let observed = apply::apply(&mut state, req, resp, now);
        let rows = self
            .store
            .as_ref()
            .map(|_| persist::rows_for(&state, req, resp, now));
        apply::settle(&mut state, req, resp, now);
        let (Some(store), Some(rows)) = (&self.store, rows) else {
            return (observed, None);
        };
        state.trim(0);
        drop(state);
        let issues_refresh_token = resp
            .success
            .as_ref()
            .is_some_and(|s| s.refresh_token_fp.is_some());
        // A record that issues a refresh token is waited for, shared or not: lost, it would let
        // the guard forward a dead token (after a crash, or through another replica). Others
        // reach the store within milliseconds, as in one process.
        if issues_refresh_token && !self.write_behind {
            (observed, store.write_durably(rows))
        } else {
            store.write(rows);
            (observed, None)
        }
    }
}

/// A time for evidence lines: RFC 3339 to the second, UTC.
pub fn fmt_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
