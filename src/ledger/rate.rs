//! Token requests per (org, user) in the last hour, counted across every writer of a shared
//! store: Salesforce's login limit is per user, whichever replica the requests went through.
//! This ledger keeps its own requests exactly; each writer publishes its share as a record of
//! its own (key `org|user|writer`) holding its last hour in minutes, at most every
//! [`SHARE_EVERY`] per user (a request rate needs no fresher view, and a record per request
//! would double a busy user's writes). The embedded store, written by one process, keeps no
//! such records: its own requests are all there are.

use std::collections::VecDeque;

use super::Sym;

pub(crate) const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;
/// The least time between two records of one writer's share of a user's requests.
pub(crate) const SHARE_EVERY: i64 = 1_000;
/// Minutes past this (about 17,000 years from the epoch) are not read: no clock gets there.
const MINUTE_MAX: i64 = 1 << 33;
/// The most minutes a share is read with: an hour and a little.
const MINUTES_MAX: usize = 2 * 60;

/// Requests in the last hour by minute, from `first` (minutes since the epoch).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Minutes {
    first: i64,
    counts: Vec<u32>,
}

impl Minutes {
    /// `first:c0,c1,…`
    pub fn parse(value: &str) -> Option<Self> {
        let (first, counts) = value.split_once(':')?;
        let first: i64 = first.parse().ok()?;
        let counts = counts
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()
            .ok()?;
        let sane = (0..=MINUTE_MAX).contains(&first) && counts.len() <= MINUTES_MAX;
        sane.then_some(Self { first, counts })
    }

    pub fn value(&self) -> String {
        let counts: Vec<String> = self.counts.iter().map(u32::to_string).collect();
        format!("{}:{}", self.first, counts.join(","))
    }

    /// Requests in minutes that overlap the hour before `now`.
    fn within_hour(&self, now: i64) -> usize {
        let since = (now - HOUR_MS).div_euclid(MINUTE_MS);
        self.counts
            .iter()
            .zip(self.first..)
            .filter(|(_, minute)| *minute >= since)
            .map(|(n, _)| *n as usize)
            .sum()
    }

    fn of(times: &VecDeque<i64>) -> Self {
        let mut minutes = Self::default();
        for t in times {
            let minute = t.div_euclid(MINUTE_MS);
            if minutes.counts.is_empty() {
                minutes.first = minute;
            }
            // Times arrive in order (upstream time may step back a little: it then counts in
            // the minute before).
            let at = (minute - minutes.first).max(0) as usize;
            if minutes.counts.len() <= at {
                minutes.counts.resize(at + 1, 0);
            }
            minutes.counts[at] += 1;
        }
        minutes
    }
}

/// One user's requests of the last hour.
#[derive(Debug, Default, Clone)]
pub(crate) struct Rate {
    own: VecDeque<i64>,
    others: Vec<(Sym, Minutes)>,
    /// When this writer's share was last written.
    shared_at: Option<i64>,
    /// Requests counted since it was.
    unshared: bool,
    /// The count the last request here saw.
    seen: usize,
}

impl Rate {
    /// Counts a request at `now`; returns (the count the last request here saw, the count
    /// of the last hour with this request).
    pub fn count(&mut self, now: i64) -> (usize, usize) {
        self.own.push_back(now);
        while self.own.front().is_some_and(|t| now - t >= HOUR_MS) {
            self.own.pop_front();
        }
        self.unshared = true;
        // A writer gone quiet (a replica stopped) has nothing left in the hour.
        self.others.retain(|(_, m)| m.within_hour(now) > 0);
        let total = self.own.len()
            + self
                .others
                .iter()
                .map(|(_, m)| m.within_hour(now))
                .sum::<usize>();
        // What came before is what the last request here saw: a threshold that other
        // writers' requests crossed since is crossed, as far as this ledger can tell, by this
        // request (each writer notices it once). A count that fell as the hour slid on rose
        // by this request alone.
        let before = std::mem::replace(&mut self.seen, total);
        (before.min(total.saturating_sub(1)), total)
    }

    /// Whether this writer's share is due to be written at `now` (on a shared store).
    pub fn share_due(&self, now: i64) -> bool {
        self.shared_at.is_none_or(|at| now - at >= SHARE_EVERY)
    }

    /// This writer's share, as its record holds it.
    pub fn share(&self) -> Minutes {
        Minutes::of(&self.own)
    }

    pub fn shared(&mut self, now: i64) {
        self.shared_at = Some(now);
        self.unshared = false;
    }

    /// Whether requests counted here wait for their share to be written: at most a second
    /// after the last was, by the next exchange or [`crate::ledger::GrantLedger::share_rates`].
    pub fn unshared(&self) -> bool {
        self.unshared
    }

    /// Takes in another writer's share (`None`: deleted).
    pub fn merge(&mut self, writer: &str, minutes: Option<Minutes>) {
        super::tally::set_share(&mut self.others, writer, minutes);
    }
}

/// The key of `writer`'s share of (org, user)'s requests.
pub(crate) fn share_key(org: &str, user: &str, writer: &str) -> String {
    format!("{org}|{user}|{writer}")
}

/// (org, user, writer) of a share's key.
pub(crate) fn parse_share_key(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.splitn(3, '|');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn a_share_holds_the_last_hour_by_minute_and_reads_back() {
        let mut rate = Rate::default();
        for t in [T0, T0 + 1, T0 + MINUTE_MS, T0 + 3 * MINUTE_MS] {
            rate.count(t);
        }
        let share = rate.share();
        assert_eq!(share.counts, [2, 1, 0, 1]);
        assert_eq!(Minutes::parse(&share.value()), Some(share.clone()));
        assert_eq!(share.within_hour(T0 + 3 * MINUTE_MS), 4);
        assert_eq!(share.within_hour(T0 + HOUR_MS + 2 * MINUTE_MS), 1);
        assert_eq!(Minutes::parse("12:1,x"), None);
        assert_eq!(Minutes::parse("12"), None);
    }

    #[test]
    fn the_count_adds_every_writers_share_and_reports_what_came_before() {
        let mut a = Rate::default();
        let mut b = Rate::default();
        for i in 0..5 {
            b.count(T0 + i);
        }
        assert_eq!(a.count(T0 + 10), (0, 1));
        a.merge("b", Some(b.share()));
        // B's five arrived since A's last request: a threshold they and this request
        // crossed is crossed here.
        assert_eq!(a.count(T0 + 11), (1, 7));
        assert_eq!(a.count(T0 + 12), (7, 8));
        a.merge("b", None);
        assert_eq!(a.count(T0 + 13), (3, 4));
    }

    #[test]
    fn a_share_is_written_at_most_once_a_second() {
        let mut rate = Rate::default();
        assert!(rate.share_due(T0));
        rate.shared(T0);
        assert!(!rate.share_due(T0 + SHARE_EVERY - 1));
        assert!(rate.share_due(T0 + SHARE_EVERY));
        assert_eq!(share_key("00D1", "0051", "ab"), "00D1|0051|ab");
        assert_eq!(
            parse_share_key("00D1|0051|ab"),
            Some(("00D1", "0051", "ab"))
        );
        assert_eq!(parse_share_key("00D1|0051"), None);
    }
}
