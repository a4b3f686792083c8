//! Owns `EndpointSet`, a bit set over a cluster's endpoint indices. Subsets,
//! tried endpoints and (later) residency and health filters are sets that
//! intersect without allocating for clusters of up to 128 endpoints.

use smallvec::SmallVec;

/// A set of endpoint indices within one cluster.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EndpointSet {
    words: SmallVec<[u64; 2]>,
}

impl EndpointSet {
    /// No endpoint of a cluster with `n` endpoints.
    pub fn empty(n: usize) -> Self {
        Self {
            words: SmallVec::from_elem(0, n.div_ceil(64)),
        }
    }

    /// Every endpoint of a cluster with `n` endpoints.
    pub fn full(n: usize) -> Self {
        let mut s = Self::empty(n);
        for (i, w) in s.words.iter_mut().enumerate() {
            let left = n - i * 64;
            *w = if left >= 64 {
                u64::MAX
            } else {
                (1u64 << left) - 1
            };
        }
        s
    }

    /// Adds endpoint `i`.
    pub fn insert(&mut self, i: usize) {
        let w = i / 64;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (i % 64);
    }

    /// Removes endpoint `i`.
    pub fn remove(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    /// Whether endpoint `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Keeps only endpoints also in `other`.
    pub fn intersect(&mut self, other: &EndpointSet) {
        for (i, w) in self.words.iter_mut().enumerate() {
            *w &= other.words.get(i).copied().unwrap_or(0);
        }
    }

    /// Adds every endpoint of `other`.
    pub fn union(&mut self, other: &EndpointSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (w, o) in self.words.iter_mut().zip(other.words.iter()) {
            *w |= o;
        }
    }

    /// Removes every endpoint of `other`.
    pub fn subtract(&mut self, other: &EndpointSet) {
        for (w, o) in self.words.iter_mut().zip(other.words.iter()) {
            *w &= !o;
        }
    }

    /// Removes every endpoint.
    pub fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    /// Whether the set has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Number of endpoints in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The `n`th endpoint of the set in ascending order (from 0).
    pub fn nth(&self, mut n: usize) -> Option<usize> {
        for (wi, &w) in self.words.iter().enumerate() {
            let ones = w.count_ones() as usize;
            if n < ones {
                let mut bits = w;
                for _ in 0..n {
                    bits &= bits - 1;
                }
                return Some(wi * 64 + bits.trailing_zeros() as usize);
            }
            n -= ones;
        }
        None
    }

    /// Number of endpoints in both sets.
    pub fn count_and(&self, other: &EndpointSet) -> usize {
        self.words
            .iter()
            .zip(other.words.iter())
            .map(|(a, b)| (a & b).count_ones() as usize)
            .sum()
    }

    /// Endpoint indices in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

impl std::fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_empty_and_ops() {
        let full = EndpointSet::full(130);
        assert_eq!(full.len(), 130);
        assert!(full.contains(129) && !full.contains(130));
        let mut s = EndpointSet::empty(130);
        assert!(s.is_empty());
        s.insert(3);
        s.insert(127);
        s.insert(128);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 127, 128]);
        let mut t = full.clone();
        t.subtract(&s);
        assert_eq!(t.len(), 127);
        t.intersect(&s);
        assert!(t.is_empty());
        t.union(&s);
        assert_eq!(t, s);
        s.remove(127);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 128]);
        assert_eq!(EndpointSet::full(64).len(), 64);
        assert_eq!(s.nth(0), Some(3));
        assert_eq!(s.nth(1), Some(128));
        assert_eq!(s.nth(2), None);
        assert_eq!(full.count_and(&s), 2);
        assert_eq!(EndpointSet::full(0).len(), 0);
    }
}
