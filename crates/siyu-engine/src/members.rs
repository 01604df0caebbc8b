//! Sets of profile ids as bitmaps over the dense ids: segment memberships, the live profiles, and
//! the intermediate results of a full segment evaluation (one bitmap per clause, combined with
//! word-wide `and`/`or`/`and not`). A million profiles fit in 125 KB.

use siyu_model::ProfileId;

/// A set of profile ids, with its size.
#[derive(Debug, Clone, Default)]
pub struct Members {
    bits: Vec<u64>,
    size: u64,
}

impl Members {
    pub fn contains(&self, id: ProfileId) -> bool {
        let (word, bit) = (id as usize / 64, id % 64);
        self.bits.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Sets membership; returns true when it changed.
    pub fn set(&mut self, id: ProfileId, member: bool) -> bool {
        let (word, bit) = (id as usize / 64, id % 64);
        if word >= self.bits.len() {
            if !member {
                return false;
            }
            self.bits.resize(word + 1, 0);
        }
        let was = self.bits[word] & (1 << bit) != 0;
        if was == member {
            return false;
        }
        self.bits[word] ^= 1 << bit;
        if member {
            self.size += 1;
        } else {
            self.size -= 1;
        }
        true
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Member ids in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = ProfileId> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, word)| {
            let mut w = *word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros();
                w &= w - 1;
                Some(i as ProfileId * 64 + bit as ProfileId)
            })
        })
    }

    /// How many 64-id words the set spans.
    pub fn word_len(&self) -> usize {
        self.bits.len()
    }

    /// The members among ids `64·from .. 64·(from + words)`.
    pub fn word_range(&self, from: usize, words: usize) -> Members {
        let end = (from + words).min(self.bits.len());
        let mut bits = vec![0u64; end.max(from)];
        if from < end {
            bits[from..end].copy_from_slice(&self.bits[from..end]);
        }
        Members::from_words(bits)
    }

    /// The members that `keep` keeps, a word at a time: it gets each non-empty word's index and
    /// bits and returns the bits to keep (others are dropped) — for a `keep` that decides 64
    /// profiles together, without a branch per profile.
    pub fn filter_words(&self, mut keep: impl FnMut(usize, u64) -> u64) -> Members {
        let bits = self.bits.iter().enumerate().map(|(i, &word)| if word == 0 { 0 } else { keep(i, word) & word });
        Members::from_words(bits.collect())
    }

    /// The members for which `keep` holds.
    pub fn filter(&self, mut keep: impl FnMut(ProfileId) -> bool) -> Members {
        self.filter_words(|i, word| {
            let (mut w, mut kept) = (word, 0u64);
            while w != 0 {
                let bit = w.trailing_zeros();
                w &= w - 1;
                if keep(i as ProfileId * 64 + bit as ProfileId) {
                    kept |= 1 << bit;
                }
            }
            kept
        })
    }

    /// [`Members::filter`] for a `keep` that reads memory which is rarely in cache: the
    /// members are taken 64 at a time, and `warm` is called for all of them before `keep` is,
    /// so the loads of 64 profiles are in flight together instead of one after another.
    pub fn filter_warmed(
        &self,
        mut warm: impl FnMut(ProfileId) -> u64,
        mut keep: impl FnMut(ProfileId) -> bool,
    ) -> Members {
        let mut bits = vec![0u64; self.bits.len()];
        let mut ids = [0 as ProfileId; 64];
        for (i, word) in self.bits.iter().enumerate() {
            let mut w = *word;
            let mut n = 0;
            while w != 0 {
                ids[n] = i as ProfileId * 64 + w.trailing_zeros() as ProfileId;
                w &= w - 1;
                n += 1;
            }
            let mut touched = 0u64;
            for &id in &ids[..n] {
                touched = touched.wrapping_add(warm(id));
            }
            // What was read is not needed, only that it was read.
            std::hint::black_box(touched);
            let mut kept = 0u64;
            for &id in &ids[..n] {
                if keep(id) {
                    kept |= 1 << (id % 64);
                }
            }
            bits[i] = kept;
        }
        Members::from_words(bits)
    }

    /// `self ∩ other`.
    pub fn and(&self, other: &Members) -> Members {
        Members::from_words(self.bits.iter().zip(&other.bits).map(|(a, b)| a & b).collect())
    }

    /// `self ∖ other`.
    pub fn and_not(&self, other: &Members) -> Members {
        let words = self.bits.iter().enumerate().map(|(i, a)| a & !other.bits.get(i).copied().unwrap_or(0));
        Members::from_words(words.collect())
    }

    /// `self ← self ∪ other`, in place.
    pub fn union_with(&mut self, other: &Members) {
        if self.bits.len() < other.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (word, b) in self.bits.iter_mut().zip(&other.bits) {
            *word |= b;
        }
        self.size = self.bits.iter().map(|w| u64::from(w.count_ones())).sum();
    }

    /// `self ∪ other`.
    pub fn or(&self, other: &Members) -> Members {
        let (long, short) = if self.bits.len() >= other.bits.len() { (self, other) } else { (other, self) };
        let mut bits = long.bits.clone();
        for (word, b) in bits.iter_mut().zip(&short.bits) {
            *word |= b;
        }
        Members::from_words(bits)
    }

    fn from_words(mut bits: Vec<u64>) -> Members {
        while bits.last() == Some(&0) {
            bits.pop();
        }
        let size = bits.iter().map(|w| u64::from(w.count_ones())).sum();
        Members { bits, size }
    }
}

impl PartialEq for Members {
    /// The same ids, however many trailing empty words either keeps.
    fn eq(&self, other: &Members) -> bool {
        let n = self.bits.len().max(other.bits.len());
        let word = |m: &Members, i: usize| m.bits.get(i).copied().unwrap_or(0);
        self.size == other.size && (0..n).all(|i| word(self, i) == word(other, i))
    }
}

impl Eq for Members {}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ids: &[ProfileId]) -> Members {
        let mut m = Members::default();
        for id in ids {
            m.set(*id, true);
        }
        m
    }

    #[test]
    fn set_iterate_and_count() {
        let mut m = Members::default();
        assert!(m.set(3, true));
        assert!(!m.set(3, true));
        assert!(m.set(130, true));
        assert!(!m.set(999, false));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![3, 130]);
        assert_eq!(m.size(), 2);
        assert!(m.set(3, false));
        assert!(!m.contains(3) && m.contains(130));
        assert_eq!(m.size(), 1);
    }

    #[test]
    fn set_operations_match_their_definitions() {
        let a = of(&[1, 2, 64, 65, 200]);
        let b = of(&[2, 65, 300]);
        assert_eq!(a.and(&b).iter().collect::<Vec<_>>(), vec![2, 65]);
        assert_eq!(a.and_not(&b).iter().collect::<Vec<_>>(), vec![1, 64, 200]);
        assert_eq!(a.or(&b).iter().collect::<Vec<_>>(), vec![1, 2, 64, 65, 200, 300]);
        assert_eq!(b.or(&a).size(), 6);
        let mut united = b.clone();
        united.union_with(&a);
        assert_eq!(united, a.or(&b));
        let even = a.filter(|id| id % 2 == 0);
        assert_eq!(even.iter().collect::<Vec<_>>(), vec![2, 64, 200]);
        assert_eq!(even.size(), 3);
        // Equal sets compare equal, whatever words they keep.
        assert_eq!(a.and(&of(&[1])), of(&[1]));
        let mut shrunk = of(&[1, 500]);
        shrunk.set(500, false);
        assert_eq!(shrunk, of(&[1]));
        assert_ne!(shrunk, of(&[2]));
        assert!(a.and_not(&a).is_empty());
        assert_eq!(a.word_range(1, 1).iter().collect::<Vec<_>>(), vec![64, 65]);
        assert_eq!(a.word_range(0, 9), a);
        assert!(a.word_range(7, 2).is_empty());
        assert_eq!(a.word_len(), 4);
    }
}
