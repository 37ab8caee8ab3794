//! Token families for the operator's page: per (org, user, client id), the refresh tokens the
//! ledger knows, which of them still hold one of the user's approvals, which the approval
//! limit pushed out, which rotated into which, and what the dead-token breaker holds.
//!
//! Read-only, and built on demand: it walks every known refresh token once under the ledger's
//! lock, which at a million tokens costs tens of milliseconds — a page load, never an exchange.
//! On a shared store it reads the fleet's most recent tokens first (one statement).
//!
//! Must never: return a token. Only ids, fingerprints (`fp_…`), times and counts leave here.

use std::collections::HashMap;

use serde::Serialize;

use super::{Fp, GrantLedger, RefreshEntry, State, Sym, UNSEEN};

/// Live tokens untouched this long are flagged idle: refresh token policies commonly expire
/// them (and a user who has not come back in a month is worth a look either way).
pub const IDLE_AFTER_MS: i64 = 30 * 24 * 3_600_000;

/// A rotation's new token carries Salesforce's `issued_at`, the old one our `Date`-based time:
/// the two differ by the round trip and the `Date` header's whole seconds.
const ROTATION_MATCH_MS: i64 = 5_000;

/// On a shared store, the refresh tokens read for the view beside those held: the most
/// recently changed in the fleet (one indexed read, about a megabyte).
pub const RECENT_TOKENS: i64 = 5_000;

/// One (org, user, client id) as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyView {
    pub org_id: String,
    pub user_id: String,
    /// Shortened as the log line shortens it.
    pub client_id: String,
    /// The host of the newest token.
    pub host: String,
    pub approval_limit: usize,
    /// Approvals whose newest token is issued, not rotated, not known dead, not evicted.
    pub live_approvals: usize,
    /// Approvals (chains of rotations) the ledger knows, oldest first.
    pub chains: Vec<Vec<String>>,
    pub tokens: Vec<FamilyToken>,
    /// Newest tokens of approvals beyond the limit: Salesforce revoked them when a newer
    /// approval was made, whether or not the application has tried them since.
    pub predicted_evictions: Vec<String>,
    /// At the limit: the token the next authorization revokes.
    pub next_eviction: Option<String>,
    /// Live tokens with no success and no issue for more than 30 days.
    pub idle: Vec<String>,
    pub breaker: Vec<BreakerEntry>,
    pub last_use: Option<i64>,
    pub failures: u32,
    /// Issued → used → rotated → failed / evicted / dead, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

/// One refresh token of a family.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyToken {
    pub fp: String,
    /// When Salesforce issued it, if the issue was seen; otherwise only `first_seen` is known.
    pub issued_at: Option<i64>,
    pub first_seen: i64,
    /// The grant that issued it (`authorization_code`, `refresh_token`…), or `unseen`.
    pub issued_by: String,
    pub uses: u32,
    pub last_success: Option<i64>,
    pub rotated_at: Option<i64>,
    /// The token this one rotated into, when the ledger can tell.
    pub rotated_into: Option<String>,
    pub failures: u32,
    /// `live`, `rotated`, `evicted` or `dead`.
    pub state: &'static str,
}

/// A token the dead-token breaker answers for.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerEntry {
    pub fp: String,
    pub died_at: i64,
    pub event_id: String,
    pub cause: Option<String>,
    pub absorbed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub at: i64,
    /// `issued`, `used`, `rotated`, `failed`, `evicted` or `dead`.
    pub what: &'static str,
    pub fp: String,
}

type FamilyKey = (Sym, Sym, Sym);

pub fn fp_text(fp: Fp) -> String {
    format!("fp_{fp:016x}")
}

impl GrantLedger {
    /// The families with the most recent activity first, at most `limit` of them. On a
    /// shared store, a replica holds only some of the fleet's tokens: the most recently
    /// changed ones in the store ([`RECENT_TOKENS`]) are read for the view too (and not kept),
    /// so every replica shows the families the fleet saw. When the store cannot be read,
    /// what this replica holds.
    pub async fn families(&self, limit: usize, now: i64) -> Vec<FamilyView> {
        // Only a shared store answers: an embedded one's records are all held.
        let read = match &self.store {
            Some(store) => store.recent(super::REFRESH_KIND, RECENT_TOKENS).await,
            None => None,
        };
        self.families_with(read.unwrap_or_default(), limit, now)
    }

    /// The families of the tokens held and of `stored` (records of refresh tokens; a token
    /// held is taken as held: its record may not be committed yet). The records are parsed
    /// before the lock is taken, and not interned: the view holds them only while it is built.
    fn families_with(&self, stored: Vec<super::Row>, limit: usize, now: i64) -> Vec<FamilyView> {
        let parsed: HashMap<Fp, RefreshEntry> = stored
            .into_iter()
            .filter_map(|row| {
                let entry = serde_json::from_str::<RefreshEntry>(row.value.as_deref()?).ok()?;
                Some((super::fp_key(&row.key), entry))
            })
            .collect();
        let guard = self.lock();
        let extra: Vec<(Fp, &RefreshEntry)> = parsed
            .iter()
            .filter(|(fp, _)| guard.refresh.get(fp).is_none())
            .map(|(fp, entry)| (*fp, entry))
            .collect();
        let state = &*guard;
        let held = state
            .refresh
            .index
            .iter()
            .map(|(&fp, &i)| (fp, &state.refresh.entries[i as usize]));
        let mut members: HashMap<FamilyKey, Vec<(Fp, &RefreshEntry)>> = HashMap::new();
        for (fp, entry) in held.chain(extra) {
            let (Some(org), Some(user)) = (&entry.org_id, &entry.user_id) else {
                continue;
            };
            members
                .entry((org.clone(), user.clone(), entry.client_id.clone()))
                .or_default()
                .push((fp, entry));
        }
        let mut families: Vec<FamilyView> = members
            .into_iter()
            .map(|(key, tokens)| family(state, &key, tokens, now))
            .collect();
        families.sort_by_key(|f| std::cmp::Reverse(activity(f)));
        families.truncate(limit);
        families
    }
}

fn activity(family: &FamilyView) -> i64 {
    family
        .timeline
        .iter()
        .map(|t| t.at)
        .max()
        .unwrap_or_default()
}

/// Links each rotation's new token to the token it replaced: the new one was issued by a
/// refresh, the old one rotated at (about) that moment. Returns child → parent.
fn rotations(tokens: &[(Fp, &RefreshEntry)]) -> HashMap<Fp, Fp> {
    let mut parent_of = HashMap::new();
    let mut taken = std::collections::HashSet::new();
    for (fp, entry) in tokens {
        if &*entry.issued_by != "refresh_token" {
            continue;
        }
        let parent = tokens
            .iter()
            .filter(|(other, _)| other != fp && !taken.contains(other))
            .filter_map(|(other, e)| Some((*other, (e.rotated_at?.get() - entry.issued_at).abs())))
            .filter(|(_, gap)| *gap <= ROTATION_MATCH_MS)
            .min_by_key(|(_, gap)| *gap);
        if let Some((parent, _)) = parent {
            taken.insert(parent);
            parent_of.insert(*fp, parent);
        }
    }
    parent_of
}

/// Chains of rotations, oldest approval first: each starts at a token no rotation produced.
fn chains(tokens: &[(Fp, &RefreshEntry)], parent_of: &HashMap<Fp, Fp>) -> Vec<Vec<Fp>> {
    let child_of: HashMap<Fp, Fp> = parent_of.iter().map(|(c, p)| (*p, *c)).collect();
    let mut roots: Vec<(i64, Fp)> = tokens
        .iter()
        .filter(|(fp, _)| !parent_of.contains_key(fp))
        .map(|(fp, e)| (e.issued_at, *fp))
        .collect();
    roots.sort_unstable();
    roots
        .into_iter()
        .map(|(_, root)| {
            let mut chain = vec![root];
            while let Some(next) = child_of.get(chain.last().expect("a chain has a root")) {
                if chain.contains(next) {
                    break;
                }
                chain.push(*next);
            }
            chain
        })
        .collect()
}

fn family(
    state: &State,
    key: &FamilyKey,
    mut tokens: Vec<(Fp, &RefreshEntry)>,
    now: i64,
) -> FamilyView {
    tokens.sort_by_key(|(fp, e)| (e.issued_at, *fp));
    let by_fp: HashMap<Fp, &RefreshEntry> = tokens.iter().copied().collect();
    let parent_of = rotations(&tokens);
    let chains = chains(&tokens, &parent_of);
    let limit = state.approval_limit();
    let beyond = chains.len().saturating_sub(limit);
    let host = &tokens.last().expect("a family has a token").1.host;
    let is_dead = |fp: Fp| state.dead.contains_key(&(host.clone(), key.2.clone(), fp));
    let mut predicted_evictions = Vec::new();
    let mut live_heads = Vec::new();
    let mut states: HashMap<Fp, &'static str> = HashMap::new();
    for (i, chain) in chains.iter().enumerate() {
        for fp in chain {
            let entry = by_fp[fp];
            let state = if entry.rotated_at.is_some() {
                "rotated"
            } else if i < beyond {
                predicted_evictions.push(fp_text(*fp));
                "evicted"
            } else if is_dead(*fp) {
                "dead"
            } else {
                live_heads.push(*fp);
                "live"
            };
            states.insert(*fp, state);
        }
    }
    let next_eviction = (live_heads.len() >= limit).then(|| fp_text(live_heads[0]));
    let idle = live_heads
        .iter()
        .filter(|fp| {
            let e = by_fp[*fp];
            now - e.last_success.map_or(e.issued_at, |t| t.get()) > IDLE_AFTER_MS
        })
        .map(|fp| fp_text(*fp))
        .collect();
    let child_of: HashMap<Fp, Fp> = parent_of.iter().map(|(c, p)| (*p, *c)).collect();
    let family_tokens = tokens
        .iter()
        .map(|(fp, e)| token_view(*fp, e, states[fp], child_of.get(fp).copied()))
        .collect();
    FamilyView {
        org_id: key.0.to_string(),
        user_id: key.1.to_string(),
        client_id: crate::oauth::short_client_id(&key.2),
        host: host.to_string(),
        approval_limit: limit,
        live_approvals: live_heads.len(),
        chains: chains
            .iter()
            .map(|c| c.iter().map(|fp| fp_text(*fp)).collect())
            .collect(),
        tokens: family_tokens,
        predicted_evictions,
        next_eviction,
        idle,
        breaker: breaker_entries(state, key, &by_fp),
        last_use: tokens
            .iter()
            .filter_map(|(_, e)| e.last_success.map(|t| t.get()))
            .max(),
        failures: tokens.iter().map(|(_, e)| e.failures).sum(),
        timeline: timeline(state, &tokens, &chains, beyond, key),
    }
}

fn token_view(fp: Fp, e: &RefreshEntry, state: &'static str, child: Option<Fp>) -> FamilyToken {
    FamilyToken {
        fp: fp_text(fp),
        issued_at: (&*e.issued_by != UNSEEN).then_some(e.issued_at),
        first_seen: e.issued_at,
        issued_by: e.issued_by.to_string(),
        uses: e.uses,
        last_success: e.last_success.map(|t| t.get()),
        rotated_at: e.rotated_at.map(|t| t.get()),
        rotated_into: child.map(fp_text),
        failures: e.failures,
        state,
    }
}

fn breaker_entries(
    state: &State,
    key: &FamilyKey,
    by_fp: &HashMap<Fp, &RefreshEntry>,
) -> Vec<BreakerEntry> {
    let mut entries: Vec<BreakerEntry> = state
        .dead
        .iter()
        .filter(|((_, client, fp), _)| *client == key.2 && by_fp.contains_key(fp))
        .map(|((_, _, fp), dead)| BreakerEntry {
            fp: fp_text(*fp),
            died_at: dead.died_at,
            event_id: dead.event_id.clone(),
            cause: dead.causes.first().map(|c| c.id.clone()),
            absorbed: dead.absorbed,
        })
        .collect();
    entries.sort_by_key(|e| e.died_at);
    entries
}

/// What happened to the family, in order. Failure times come from the per-org failure list
/// (the newest 64 per org); a token's own record keeps only a count.
fn timeline(
    state: &State,
    tokens: &[(Fp, &RefreshEntry)],
    chains: &[Vec<Fp>],
    beyond: usize,
    key: &FamilyKey,
) -> Vec<TimelineEntry> {
    let mut out = Vec::new();
    let mut push = |at: i64, what, fp: Fp| {
        out.push(TimelineEntry {
            at,
            what,
            fp: fp_text(fp),
        })
    };
    for (fp, e) in tokens {
        push(e.issued_at, "issued", *fp);
        if let Some(t) = e.last_success {
            push(t.get(), "used", *fp);
        }
        if let Some(t) = e.rotated_at {
            push(t.get(), "rotated", *fp);
        }
    }
    // An approval is evicted when the approval `limit` places newer is made.
    let limit = chains.len() - beyond;
    for (i, chain) in chains.iter().enumerate().take(beyond) {
        let newer = chains[i + limit][0];
        let at = tokens
            .iter()
            .find(|(fp, _)| *fp == newer)
            .map(|(_, e)| e.issued_at);
        if let (Some(at), Some(head)) = (at, chain.last()) {
            push(at, "evicted", *head);
        }
    }
    let members: std::collections::HashSet<Fp> = tokens.iter().map(|(fp, _)| *fp).collect();
    if let Some(failures) = state.refresh_failures_by_org.get(&*key.0) {
        for (at, fp) in failures.iter().filter(|(_, fp)| members.contains(fp)) {
            push(*at, "failed", *fp);
        }
    }
    for ((_, client, fp), dead) in &state.dead {
        if *client == key.2 && members.contains(fp) {
            push(dead.died_at, "dead", *fp);
        }
    }
    // Upstream `Date` times are whole seconds, Salesforce's `issued_at` milliseconds: within
    // one second, order by what must come first rather than by a truncated clock.
    let stage = |what: &str| {
        ["issued", "used", "rotated", "evicted", "failed", "dead"]
            .iter()
            .position(|s| *s == what)
    };
    out.sort_by_key(|t| (t.at / 1000, stage(t.what), t.at));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3_600_000;

    fn token(state: &mut State, issued_at: i64, issued_by: &str) -> RefreshEntry {
        RefreshEntry::issued(
            state.intern("login.salesforce.com"),
            None,
            state.intern("3MVG9web"),
            Some(state.intern("00Dorg")),
            Some(state.intern("005alice")),
            None,
            issued_at,
            state.intern(issued_by),
        )
    }

    /// Six authorizations a day apart, the newest then rotated once.
    fn ledger() -> GrantLedger {
        let ledger = GrantLedger::new();
        {
            let mut state = ledger.lock();
            for i in 1..=6u64 {
                let entry = token(&mut state, i as i64 * DAY, "authorization_code");
                state.refresh.insert(i, entry);
            }
            let rotated = 6 * DAY + 3_600_000;
            if let Some(sixth) = state.refresh.get_mut(&6) {
                sixth.uses = 1;
                sixth.last_success = super::super::Millis::new(rotated);
                sixth.rotated_at = super::super::Millis::new(rotated);
            }
            let successor = token(&mut state, rotated + 900, "refresh_token");
            state.refresh.insert(7, successor);
        }
        ledger
    }

    #[test]
    fn the_sixth_approval_evicts_the_first_and_a_rotation_continues_its_chain() {
        let families = ledger().families_with(Vec::new(), 10, 8 * DAY);
        assert_eq!(families.len(), 1);
        let f = &families[0];
        assert_eq!((f.live_approvals, f.approval_limit), (5, 5));
        assert_eq!(f.predicted_evictions, vec![fp_text(1)]);
        assert_eq!(f.next_eviction, Some(fp_text(2)));
        assert_eq!(f.chains.last().unwrap(), &vec![fp_text(6), fp_text(7)]);
        let sixth = f.tokens.iter().find(|t| t.fp == fp_text(6)).unwrap();
        assert_eq!(
            (sixth.state, sixth.rotated_into.clone()),
            ("rotated", Some(fp_text(7)))
        );
        assert!(
            f.timeline
                .iter()
                .any(|t| t.what == "evicted" && t.fp == fp_text(1))
        );
        assert!(f.idle.is_empty());
    }

    #[test]
    fn live_tokens_untouched_for_a_month_are_idle() {
        let families = ledger().families_with(Vec::new(), 10, 40 * DAY);
        let idle = &families[0].idle;
        // Tokens 2 to 5 were issued over 30 days before; 7 was issued on day 6 too.
        assert_eq!(idle.len(), 5, "{idle:?}");
        assert!(!idle.contains(&fp_text(1)), "evicted, not idle");
    }

    #[test]
    fn nothing_but_fingerprints_ids_and_times_is_returned() {
        let text = serde_json::to_string(&ledger().families_with(Vec::new(), 10, 8 * DAY)).unwrap();
        assert!(text.contains("\"fp_0000000000000001\""));
        assert!(!text.contains("refresh_token\":\""), "{text}");
    }
}
