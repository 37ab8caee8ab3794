//! On a shared store: which refresh tokens the store may hold a record of. A presented token
//! that no replica ever recorded (an integration older than the proxy, a token from another
//! org, a typo) is then judged without asking the database; only a token the store may
//! hold is fetched.
//!
//! A Bloom filter over the tokens' fingerprints, written here rather than taken from a crate:
//! the fingerprints are keyed hashes already, uniform over 64 bits, so their bits index the
//! filter directly (a crate would hash them again). It never forgets: a token pruned from the
//! store costs one needless fetch, after which the ledger notes it as absent. It grows by
//! adding a filter twice as large as the last, so a small deployment pays a small one.
//! Until the tokens the store held at start have been read into it, it answers "maybe".

use super::Fp;

/// Tokens the first filter is sized for; each next one holds twice as many.
const FIRST: usize = 1 << 16;
/// Bits per token (under 0.1 % false positives with [`PROBES`] probes, per filter).
const BITS_PER: usize = 16;
const PROBES: u64 = 7;

#[derive(Debug, Default)]
pub struct Known {
    filters: Vec<Filter>,
    /// Every token the store held at start has been inserted.
    complete: bool,
}

#[derive(Debug)]
struct Filter {
    words: Vec<u64>,
    /// Bits minus one (a power of two).
    mask: u64,
    capacity: usize,
    count: usize,
}

impl Filter {
    fn new(capacity: usize) -> Self {
        let bits = (capacity * BITS_PER).next_power_of_two();
        Self {
            words: vec![0; bits / 64],
            mask: bits as u64 - 1,
            capacity,
            count: 0,
        }
    }

    fn insert(&mut self, fp: Fp) {
        for bit in probes(fp, self.mask) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.count += 1;
    }

    fn contains(&self, fp: Fp) -> bool {
        probes(fp, self.mask).all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// The bit positions of `fp` under `mask`: double hashing from its two halves.
fn probes(fp: Fp, mask: u64) -> impl Iterator<Item = u64> {
    let step = fp.rotate_left(32) | 1;
    (0..PROBES).map(move |i| fp.wrapping_add(i.wrapping_mul(step)) & mask)
}

impl Known {
    pub fn insert(&mut self, fp: Fp) {
        if self.filters.iter().any(|f| f.contains(fp)) {
            return;
        }
        let full = self.filters.last().is_none_or(|f| f.count >= f.capacity);
        if full {
            let capacity = self.filters.last().map_or(FIRST, |f| f.capacity * 2);
            self.filters.push(Filter::new(capacity));
        }
        if let Some(last) = self.filters.last_mut() {
            last.insert(fp);
        }
    }

    /// Whether the store may hold a record of `fp`: `false` only when it surely does not.
    pub fn may_hold(&self, fp: Fp) -> bool {
        !self.complete || self.filters.iter().any(|f| f.contains(fp))
    }

    /// Every token the store held at start is in: from now on "no" means no.
    pub fn completed(&mut self) {
        self.complete = true;
    }

    /// Bytes the filters take.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.filters.iter().map(|f| f.words.len() * 8).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fingerprints as the keyed hash gives them: spread over all 64 bits.
    fn fp(i: u64) -> Fp {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 29)
    }

    #[test]
    fn until_complete_every_token_may_be_held_then_only_those_inserted() {
        let mut known = Known::default();
        assert!(known.may_hold(fp(1)), "before the start's tokens are read");
        known.insert(fp(1));
        known.completed();
        assert!(known.may_hold(fp(1)));
        assert!(!known.may_hold(fp(2)));
    }

    #[test]
    fn it_grows_past_its_first_size_keeping_every_token_and_few_false_positives() {
        let mut known = Known::default();
        known.completed();
        let n = (FIRST * 5) as u64;
        for i in 0..n {
            known.insert(fp(i));
        }
        assert!((0..n).all(|i| known.may_hold(fp(i))), "no false negative");
        assert_eq!(known.filters.len(), 3, "64k, 128k and 256k tokens");
        let strangers = (n..n + 100_000).filter(|&i| known.may_hold(fp(i))).count();
        assert!(strangers < 500, "{strangers} false positives in 100,000");
        assert!(known.bytes() <= 8 << 20, "{} bytes", known.bytes());
    }
}
