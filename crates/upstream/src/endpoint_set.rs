//! A compact set of endpoint indices (one bit per endpoint), used for health bitmaps.
//!
//! The words are plain `u64`s so a publisher can ship them to other shards however it likes
//! (see [`crate::health`]); `contains` is one shift and mask on the request path.

/// A bitset over endpoint indices `0..len`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointSet {
    words: Vec<u64>,
    len: usize,
}

impl EndpointSet {
    /// The empty set over `len` endpoints.
    pub fn empty(len: usize) -> Self {
        EndpointSet {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// The set of all `len` endpoints.
    pub fn full(len: usize) -> Self {
        let mut set = Self::empty(len);
        for i in 0..len {
            set.insert(i);
        }
        set
    }

    /// Rebuild from published words; bits at or beyond `len` are dropped.
    pub fn from_words(words: &[u64], len: usize) -> Self {
        let mut set = Self::empty(len);
        for (dst, src) in set.words.iter_mut().zip(words) {
            *dst = *src;
        }
        set.clear_tail();
        set
    }

    /// The raw words, 64 endpoints each, lowest index in the lowest bit.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// How many endpoints the set ranges over (not how many are in it).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the set ranges over no endpoints at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Is endpoint `i` in the set? Out-of-range indices are not.
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Add endpoint `i`; returns whether it changed the set. Out-of-range is a no-op.
    pub fn insert(&mut self, i: usize) -> bool {
        if i >= self.len {
            return false;
        }
        let before = self.words[i / 64];
        self.words[i / 64] |= 1 << (i % 64);
        before != self.words[i / 64]
    }

    /// Remove endpoint `i`; returns whether it changed the set.
    pub fn remove(&mut self, i: usize) -> bool {
        if i >= self.len {
            return false;
        }
        let before = self.words[i / 64];
        self.words[i / 64] &= !(1 << (i % 64));
        before != self.words[i / 64]
    }

    /// How many endpoints are in the set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The members, in index order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| self.contains(i))
    }

    fn clear_tail(&mut self) {
        let extra = self.words.len() * 64 - self.len;
        if extra > 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= u64::MAX >> extra;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_contains_across_word_boundaries() {
        let mut s = EndpointSet::empty(130);
        for i in [0, 63, 64, 127, 129] {
            assert!(s.insert(i));
            assert!(!s.insert(i), "second insert of {i} changes nothing");
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63, 64, 127, 129]);
        assert!(s.remove(64));
        assert!(!s.contains(64));
        assert!(!s.contains(130), "out of range is never a member");
        assert!(!s.insert(500));
        assert_eq!(s.count(), 4);
    }

    #[test]
    fn full_and_round_trip_through_words_drop_stray_bits() {
        let s = EndpointSet::full(70);
        assert_eq!(s.count(), 70);
        let back = EndpointSet::from_words(&[u64::MAX, u64::MAX], 70);
        assert_eq!(back, s);
        assert_eq!(EndpointSet::from_words(s.words(), 3).count(), 3);
    }
}
