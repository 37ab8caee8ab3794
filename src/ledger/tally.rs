//! Counts that several writers add to: a username's consecutive password failures, a host's
//! password failures. Each writer keeps its own share as a record of its own (key
//! `subject|writer`, or `subject` for the embedded store's single writer), so that replicas
//! counting the same user in the same instant never overwrite each other's failures: the
//! count is the sum of the shares.
//!
//! Clearing a count (a password that worked) starts a new round: the writer that clears
//! writes its share at 0 with the round's start (`count@round`), and every share of an
//! earlier round no longer counts, whether or not the clearing writer had seen it yet. A
//! writer that learns of a newer round drops its own share and counts on from there.

use super::Sym;

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
        Some(Self {
            count: count.parse().ok()?,
            round: round.parse().ok()?,
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
    /// The other writers' shares; a share at 0 is a deletion not yet written.
    others: Vec<(Sym, u32)>,
}

impl Tally {
    pub fn total(&self) -> u32 {
        self.others
            .iter()
            .fold(self.own, |sum, (_, n)| sum.saturating_add(*n))
    }

    /// Counts one more in this ledger's share; returns the sum.
    pub fn add_own(&mut self) -> u32 {
        self.own = self.own.saturating_add(1);
        self.total()
    }

    /// Starts a new round at `now` (later than the last, whatever the clocks): every share
    /// is cleared, and the other writers' shares known here are deleted by the next write
    /// ([`Tally::rows`]).
    pub fn clear(&mut self, now: i64) {
        self.round = now.max(self.round + 1);
        self.own = 0;
        for (_, n) in &mut self.others {
            *n = 0;
        }
    }

    /// Takes in a writer's share as its record says (`None`: deleted). A share of an
    /// earlier round is stale; one of a later round starts that round here.
    pub fn merge(&mut self, writer: &str, own_writer: &str, share: Option<Share>) {
        if let Some(share) = share {
            if share.round < self.round {
                return;
            }
            if share.round > self.round {
                self.round = share.round;
                self.own = 0;
                self.others.clear();
            }
        }
        let count = share.map(|s| s.count);
        if writer == own_writer {
            self.own = count.unwrap_or(0);
            return;
        }
        set_share(&mut self.others, writer, count);
    }

    /// The records that write this ledger's share and delete the cleared shares of others,
    /// as (key, share). This ledger's share at 0 in a cleared round is written all the same:
    /// it is what tells the others the round began.
    pub fn rows<'a>(
        &'a self,
        subject: &'a str,
        own_writer: &'a str,
    ) -> impl Iterator<Item = (String, Option<Share>)> + 'a {
        let share = Share {
            count: self.own,
            round: self.round,
        };
        let own = (
            share_key(subject, own_writer),
            (share.count > 0 || share.round > 0).then_some(share),
        );
        let cleared = self
            .others
            .iter()
            .filter(|(_, n)| *n == 0)
            .map(|(w, _)| (share_key(subject, w), None));
        std::iter::once(own).chain(cleared)
    }

    /// Forgets cleared shares once their deletions are written.
    pub fn settle(&mut self) {
        self.others.retain(|(_, n)| *n > 0);
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
    fn a_deleted_share_of_another_writer_is_gone_and_this_writers_own_is_zeroed() {
        let mut t = Tally::default();
        t.merge("B", "A", Some(Share { count: 2, round: 0 }));
        t.add_own();
        t.merge("B", "A", None);
        assert_eq!(t.total(), 1);
        t.merge("A", "A", None);
        assert_eq!(t.total(), 0);
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
