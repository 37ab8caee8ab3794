//! Counts that several writers add to: a username's consecutive password failures, a host's
//! password failures. Each writer keeps its own share as a record of its own (key
//! `subject|writer`, or `subject` for the embedded store's single writer), so that replicas
//! counting the same user in the same instant never overwrite each other's failures: the
//! count is the sum of the shares.
//!
//! Clearing a count (a password that worked) starts a new round: the writer that clears
//! writes its share at 0 with the round's start (`count@round`), and every share of an
//! earlier round no longer counts, whether or not the clearing writer had seen it yet. A
//! writer that learns of a newer round drops its own share and counts on from there. The
//! clearing writer also deletes the other shares it knew of, in the same write as its
//! round: only then, as no share of the new round can have been written before the round
//! itself, can a deletion not remove one.
//!
//! The embedded store has one writer: its count is one record, deleted when cleared, with
//! no round.

use super::Sym;

/// Rounds and counts past this are not read: no clock gets there, and arithmetic on them
/// must not overflow.
const ROUND_MAX: i64 = i64::MAX / 4;

/// One writer's share as its record holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    pub count: u32,
    /// When the round it counts in began (0: before any clearing).
    pub round: i64,
}

impl Share {
    pub fn parse(value: &str) -> Option<Self> {
        let (count, round) = value.split_once('@').unwrap_or((value, "0"));
        let round: i64 = round.parse().ok()?;
        Some(Self {
            count: count.parse().ok()?,
            round: (0..=ROUND_MAX).contains(&round).then_some(round)?,
        })
    }

    /// The record's value: the count alone in the first round (as records were written
    /// before rounds were kept).
    pub fn value(&self) -> String {
        match self.round {
            0 => self.count.to_string(),
            round => format!("{}@{round}", self.count),
        }
    }
}

/// One subject's count, by writer, in the newest round known.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    round: i64,
    /// This ledger's share.
    own: u32,
    /// The other writers' shares of this round, none at 0.
    others: Vec<(Sym, u32)>,
    /// Writers whose shares this ledger's clearing ended: deleted by the write that goes
    /// with it ([`Tally::rows`]), then forgotten ([`Tally::settle`]).
    cleared: Vec<Sym>,
}

impl Tally {
    pub fn total(&self) -> u32 {
        self.others
            .iter()
            .fold(self.own, |sum, (_, n)| sum.saturating_add(*n))
    }

    /// Nothing counted and nothing to write.
    pub fn is_empty(&self) -> bool {
        self.own == 0 && self.others.is_empty() && self.cleared.is_empty()
    }

    /// Counts one more in this ledger's share; returns the sum.
    pub fn add_own(&mut self) -> u32 {
        self.own = self.own.saturating_add(1);
        self.total()
    }

    /// The share of `writer` as known here.
    pub fn share_of(&self, writer: &str, own_writer: &str) -> u32 {
        if writer == own_writer {
            return self.own;
        }
        self.others
            .iter()
            .find(|(w, _)| &**w == writer)
            .map_or(0, |(_, n)| *n)
    }

    /// Starts a new round at `now` (later than the last, whatever the clocks): every share
    /// is cleared, and the other writers' shares known here are deleted by the write that
    /// goes with it ([`Tally::rows`]).
    pub fn clear(&mut self, now: i64) {
        self.round = now.clamp(0, ROUND_MAX).max(self.round.saturating_add(1));
        self.own = 0;
        let ended = self.others.drain(..).map(|(w, _)| w);
        self.cleared.extend(ended);
    }

    /// Takes in a writer's share as its record says (`None`: deleted). A share of an
    /// earlier round is stale; one of a later round starts that round here. This ledger's
    /// own share is only ever deleted by a writer that began a round, which comes with the
    /// deletion and zeroes it: the deletion alone is not read (it may be of an older round).
    pub fn merge(&mut self, writer: &str, own_writer: &str, share: Option<Share>) {
        let Some(share) = share else {
            if writer != own_writer {
                set_share(&mut self.others, writer, None);
            }
            return;
        };
        if share.round < self.round {
            return;
        }
        if share.round > self.round {
            self.round = share.round;
            self.own = 0;
            self.others.clear();
        }
        if writer == own_writer {
            self.own = share.count;
        } else {
            set_share(
                &mut self.others,
                writer,
                (share.count > 0).then_some(share.count),
            );
        }
    }

    /// The records that write this ledger's share and delete the shares its clearing
    /// ended, as (key, share). This ledger's share at 0 in a cleared round is written all
    /// the same on a shared store: it is what tells the others the round began.
    pub fn rows<'a>(
        &'a self,
        subject: &'a str,
        own_writer: &'a str,
    ) -> impl Iterator<Item = (String, Option<Share>)> + 'a {
        let round = if own_writer.is_empty() { 0 } else { self.round };
        let share = Share {
            count: self.own,
            round,
        };
        let own = (
            share_key(subject, own_writer),
            (share.count > 0 || share.round > 0).then_some(share),
        );
        let cleared = self.cleared.iter().map(|w| (share_key(subject, w), None));
        std::iter::once(own).chain(cleared)
    }

    /// Forgets the shares a clearing ended once their deletions are written.
    pub fn settle(&mut self) {
        self.cleared.clear();
    }
}

/// Sets `writer`'s entry among `shares` (`None`: removes it).
pub(crate) fn set_share<T>(shares: &mut Vec<(Sym, T)>, writer: &str, share: Option<T>) {
    let at = shares.iter().position(|(w, _)| &**w == writer);
    match (at, share) {
        (Some(i), Some(share)) => shares[i].1 = share,
        (Some(i), None) => {
            shares.swap_remove(i);
        }
        (None, Some(share)) => shares.push((Sym::from(writer), share)),
        (None, None) => {}
    }
}

/// The key of `writer`'s share of `subject`'s count.
pub(crate) fn share_key(subject: &str, writer: &str) -> String {
    if writer.is_empty() {
        subject.to_owned()
    } else {
        format!("{subject}|{writer}")
    }
}

/// (subject, writer) of a share's key; a key without a writer is the embedded store's
/// (and every record written before shares were kept per writer).
pub(crate) fn parse_share_key(key: &str) -> (&str, &str) {
    key.split_once('|').unwrap_or((key, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `to` learns from `from`'s records.
    fn read(to: &mut Tally, to_writer: &str, from: &Tally, from_writer: &str) {
        for (key, share) in from.rows("fp_aa", from_writer) {
            let (subject, writer) = parse_share_key(&key);
            assert_eq!(subject, "fp_aa");
            to.merge(writer, to_writer, share);
        }
    }

    #[test]
    fn shares_of_writers_counting_at_once_add_up() {
        let (mut a, mut b) = (Tally::default(), Tally::default());
        a.add_own();
        a.add_own();
        // B counts before A's records reach it: with one record per user, B's 1 would
        // overwrite A's 2.
        assert_eq!(b.add_own(), 1);
        read(&mut b, "B", &a, "A");
        read(&mut a, "A", &b, "B");
        assert_eq!((a.total(), b.total()), (3, 3));
        assert_eq!(b.add_own(), 4);
    }

    #[test]
    fn a_clearing_ends_every_share_of_its_round_even_one_its_writer_never_saw() {
        let (mut a, mut b, mut c) = (Tally::default(), Tally::default(), Tally::default());
        a.add_own();
        c.add_own();
        read(&mut b, "B", &a, "A");
        b.clear(5_000);
        assert_eq!(b.total(), 0);
        let rows: Vec<_> = b.rows("fp_aa", "B").collect();
        assert_eq!(
            rows,
            [
                (
                    "fp_aa|B".to_owned(),
                    Some(Share {
                        count: 0,
                        round: 5_000
                    })
                ),
                ("fp_aa|A".to_owned(), None)
            ]
        );
        b.settle();
        // C's share, of the round before, reaches A before or after B's clearing: either
        // way it no longer counts.
        let mut late = a.clone();
        read(&mut a, "A", &c, "C");
        read(&mut a, "A", &b, "B");
        read(&mut late, "A", &b, "B");
        read(&mut late, "A", &c, "C");
        assert_eq!((a.total(), late.total()), (0, 0));
        read(&mut b, "B", &c, "C");
        assert_eq!(b.total(), 0);
        // C learns of the round and counts on from it.
        read(&mut c, "C", &b, "B");
        assert_eq!(c.add_own(), 1);
        read(&mut a, "A", &c, "C");
        assert_eq!(a.add_own(), 2);
    }

    #[test]
    fn rounds_advance_even_when_a_clock_does_not() {
        let mut t = Tally::default();
        t.clear(5_000);
        t.clear(4_000);
        assert_eq!(t.round, 5_001);
    }

    #[test]
    fn a_deleted_share_of_another_writer_is_gone_and_a_deletion_of_this_writers_alone_is_not_read()
    {
        let mut t = Tally::default();
        t.merge("B", "A", Some(Share { count: 2, round: 0 }));
        t.add_own();
        t.merge("B", "A", None);
        assert_eq!(t.total(), 1);
        // Only a writer beginning a round deletes this writer's share, and its round
        // comes with the deletion.
        t.merge("A", "A", None);
        assert_eq!(t.total(), 1);
        t.merge("C", "A", Some(Share { count: 0, round: 7 }));
        assert_eq!(t.total(), 0);
    }

    #[test]
    fn a_round_learned_from_another_writer_deletes_no_share_of_it() {
        let (mut a, mut b) = (Tally::default(), Tally::default());
        b.clear(5_000);
        read(&mut a, "A", &b, "B");
        b.settle();
        // B counts in its round; A counts before B's record reaches it.
        assert_eq!(b.add_own(), 1);
        let b_rows: Vec<_> = b.rows("fp_aa", "B").collect();
        assert_eq!(a.add_own(), 1);
        let a_rows: Vec<_> = a.rows("fp_aa", "A").collect();
        assert_eq!(a_rows.len(), 1, "A writes its own share only: {a_rows:?}");
        a.settle();
        // Whichever commits first, both failures count everywhere.
        for (key, share) in b_rows {
            a.merge(parse_share_key(&key).1, "A", share);
        }
        for (key, share) in a_rows {
            b.merge(parse_share_key(&key).1, "B", share);
        }
        assert_eq!((a.total(), b.total()), (2, 2));
    }

    #[test]
    fn the_embedded_store_keeps_one_record_a_count_deleted_when_cleared() {
        let mut t = Tally::default();
        t.add_own();
        t.add_own();
        assert_eq!(
            t.rows("fp_aa", "").collect::<Vec<_>>(),
            [("fp_aa".to_owned(), Some(Share { count: 2, round: 0 }))]
        );
        t.clear(5_000);
        assert_eq!(
            t.rows("fp_aa", "").collect::<Vec<_>>(),
            [("fp_aa".to_owned(), None)]
        );
        t.settle();
        assert!(t.is_empty());
    }

    #[test]
    fn rounds_out_of_any_clock_s_reach_are_not_read() {
        assert_eq!(Share::parse(&format!("1@{}", i64::MAX)), None);
        assert_eq!(Share::parse("1@-5"), None);
        let mut t = Tally::default();
        t.merge(
            "B",
            "A",
            Some(Share {
                count: 1,
                round: ROUND_MAX,
            }),
        );
        t.clear(i64::MAX);
        assert!(t.round > ROUND_MAX);
    }

    #[test]
    fn records_of_the_first_round_keep_the_form_they_had() {
        assert_eq!(share_key("fp_aa", ""), "fp_aa");
        assert_eq!(parse_share_key("fp_aa"), ("fp_aa", ""));
        assert_eq!(
            parse_share_key("host.example|0a1b"),
            ("host.example", "0a1b")
        );
        assert_eq!(Share::parse("3"), Some(Share { count: 3, round: 0 }));
        assert_eq!(Share { count: 3, round: 0 }.value(), "3");
        let later = Share { count: 2, round: 9 };
        assert_eq!(Share::parse(&later.value()), Some(later));
        assert_eq!(Share::parse("x@1"), None);
    }
}
