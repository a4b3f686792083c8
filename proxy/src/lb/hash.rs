//! Owns the consistent-hash pickers (ring hash and Maglev) with Envoy's
//! semantics: the stable request-key hash, building a Ketama ring or a Maglev
//! lookup table from a cluster's weighted endpoints, and the lookup that maps a
//! key to an endpoint, stepping past endpoints the caller rules out without
//! moving the keys of the others. Placement derives from each endpoint's stable
//! id, never its index, so adding or removing an endpoint moves few keys.

use std::fmt;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Splitmix64's increment; successive ring points of an endpoint step by it.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
/// Seed mixed into an endpoint's id hash for its Maglev offset.
const MAGLEV_OFFSET_SEED: u64 = 0x6f66_6673_6574_0001;
/// Seed mixed into an endpoint's id hash for its Maglev skip.
const MAGLEV_SKIP_SEED: u64 = 0x736b_6970_0000_0002;
/// Seeds re-hashing a key whose Maglev entry is ineligible, tried before walking.
const MAGLEV_RETRY_SEEDS: [u64; 3] = [
    0x2545_f491_4f6c_dd1d,
    0x6a09_e667_f3bc_c909,
    0xbb67_ae85_84ca_a73b,
];
/// Marks a Maglev slot not yet claimed while the table is built.
const EMPTY: u32 = u32::MAX;
/// Most endpoints a table holds (indices are `u32`, `EMPTY` reserved); the rest are ignored.
const MAX_ENDPOINTS: usize = (u32::MAX - 1) as usize;

/// Splitmix64's finalizer: a bijective 64-bit mix with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a 64 of `bytes`, unmixed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// Stable 64-bit hash of a request key (header value, cookie, client address bytes).
pub(crate) fn hash_key(bytes: &[u8]) -> u64 {
    mix64(fnv1a(bytes))
}

/// A Ketama ring over a cluster's endpoints.
pub(crate) struct Ring {
    /// Ring positions, ascending.
    hashes: Vec<u64>,
    /// The endpoint index owning each position of `hashes`.
    owners: Vec<u32>,
    /// Endpoints with at least one entry, to tell quickly that none is eligible.
    present: Vec<u32>,
}

impl Ring {
    /// Builds the ring for endpoints given as (stable id, weight ≥ 1), in endpoint-index order.
    ///
    /// Envoy's sizing: with `min_share` the smallest weight share, the ring has
    /// `scale = min(ceil(min_size × min_share) / min_share, max_size)` entries
    /// and each endpoint `round(share × scale)` of them, at least one (so more
    /// endpoints than `max_size` exceed it by one entry each). Endpoint `i`'s
    /// points are the first `count` outputs of a generator seeded by its id, so
    /// a changed count adds or drops only its last points. Weight 0 counts as 1.
    pub(crate) fn new(endpoints: &[(&str, u32)], min_size: u64, max_size: u64) -> Ring {
        let endpoints = &endpoints[..endpoints.len().min(MAX_ENDPOINTS)];
        let counts = ring_counts(endpoints, min_size, max_size);
        let total: u64 = counts.iter().sum();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for ((&(id, _), &count), index) in endpoints.iter().zip(&counts).zip(0u32..) {
            let mut state = hash_key(id.as_bytes());
            for _ in 0..count {
                state = state.wrapping_add(GOLDEN_GAMMA);
                points.push((mix64(state), index));
            }
        }
        // Ties (equal 64-bit positions) fall to the lower index, deterministically.
        points.sort_unstable();
        let (hashes, owners) = points.into_iter().unzip();
        let present = (0u32..).take(endpoints.len()).collect();
        Ring {
            hashes,
            owners,
            present,
        }
    }

    /// The endpoint index for `key`: the first ring entry at or after the key's hash (wrapping) whose endpoint is `eligible`; None when no eligible endpoint is on the ring.
    pub(crate) fn pick(&self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self.hashes.partition_point(|&h| h < key);
        walk(&self.owners, start, &self.present, &eligible)
    }
}

impl fmt::Debug for Ring {
    /// Summarises the ring (its entries are too many to print).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("entries", &self.hashes.len())
            .field("endpoints", &self.present.len())
            .finish()
    }
}

/// Ring points per endpoint, Envoy's way (but for the power-of-two step
/// below), computed exactly in integers.
fn ring_counts(endpoints: &[(&str, u32)], min_size: u64, max_size: u64) -> Vec<u64> {
    let weights: Vec<u128> = endpoints
        .iter()
        .map(|&(_, w)| u128::from(w.max(1)))
        .collect();
    let Some(&min_w) = weights.iter().min() else {
        return Vec::new();
    };
    let total: u128 = weights.iter().sum();
    let min_size = u128::from(min_size.max(1));
    let max_size = u128::from(max_size);
    // With min_share = min_w / total: k = ceil(min_size × min_share) entries go
    // to the lightest endpoint, so scale = k × total / min_w and endpoint i
    // gets k × w_i / min_w, unless scale exceeds max_size; then scale =
    // max_size and endpoint i gets max_size × w_i / total. Below, each count
    // is w_i × num / den. (k ≤ 2^64 and total < 2^64, so no product overflows.)
    // k is rounded up to a power of two (Envoy takes it as is): then adding or
    // removing an endpoint rarely changes k, so the other endpoints keep
    // their points and their keys; the ring is between min_size and twice it.
    let k = (min_size * min_w).div_ceil(total).next_power_of_two();
    let (num, den) = if k * total <= max_size * min_w {
        (k, min_w)
    } else {
        (max_size, total)
    };
    let rounded: Vec<u128> = weights
        .iter()
        .map(|&w| ((2 * w * num + den) / (2 * den)).max(1))
        .collect();
    // Rounding up can overshoot max_size by a few entries; flooring cannot
    // (but for the one entry every endpoint keeps).
    let counts = if rounded.iter().sum::<u128>() <= max_size {
        rounded
    } else {
        weights.iter().map(|&w| (w * num / den).max(1)).collect()
    };
    counts
        .into_iter()
        .map(|c| u64::try_from(c).unwrap_or(u64::MAX))
        .collect()
}

/// A Maglev lookup table over a cluster's endpoints.
pub(crate) struct Maglev {
    /// The endpoint index owning each slot; `table_size` slots, or none.
    table: Vec<u32>,
    /// Endpoints owning at least one slot, to tell quickly that none is eligible.
    present: Vec<u32>,
}

/// One endpoint's state while a Maglev table is filled.
struct Filler {
    /// The endpoint's index.
    index: u32,
    /// The next slot of the endpoint's permutation.
    slot: u64,
    /// The permutation's step, coprime with the table size.
    skip: u64,
    /// The endpoint's weight (at least 1).
    weight: u64,
    /// Claims so far × the largest weight; it claims in rounds where `round × weight` reaches this.
    target: u64,
    /// Slots claimed.
    claimed: u64,
}

impl Maglev {
    /// Builds the table (size `table_size`, a prime; caller validated it) for (stable id, weight) endpoints, weighted as Envoy's Maglev does (weighted fill: each round, an endpoint claims entries in proportion to its weight relative to the largest weight).
    ///
    /// Each endpoint's permutation (offset, skip) derives from its id. A skip
    /// sharing a factor with a non-prime size becomes 1, so the fill always
    /// ends. Weight 0 counts as 1. An empty list or size 0 gives an empty table.
    pub(crate) fn new(endpoints: &[(&str, u32)], table_size: u64) -> Maglev {
        let endpoints = &endpoints[..endpoints.len().min(MAX_ENDPOINTS)];
        let size = match usize::try_from(table_size) {
            Ok(size) if size > 0 && !endpoints.is_empty() => size,
            _ => {
                return Maglev {
                    table: Vec::new(),
                    present: Vec::new(),
                }
            }
        };
        let m = table_size;
        // Endpoints take turns in id order, not index order, so that the table
        // depends only on the set of (id, weight) (as Envoy sorts since #28055).
        let mut order: Vec<u32> = (0u32..).take(endpoints.len()).collect();
        order.sort_by_key(|&i| endpoints[i as usize].0);
        let mut fillers: Vec<Filler> = order
            .iter()
            .map(|&index| {
                let (id, weight) = endpoints[index as usize];
                let h = hash_key(id.as_bytes());
                let slot = mix64(h ^ MAGLEV_OFFSET_SEED) % m;
                let skip = if m > 1 {
                    mix64(h ^ MAGLEV_SKIP_SEED) % (m - 1) + 1
                } else {
                    1
                };
                Filler {
                    index,
                    slot,
                    skip: if gcd(skip, m) == 1 { skip } else { 1 },
                    weight: u64::from(weight.max(1)),
                    target: 0,
                    claimed: 0,
                }
            })
            .collect();
        let max_weight = fillers.iter().map(|f| f.weight).max().unwrap_or(1);
        let mut table = vec![EMPTY; size];
        let mut filled = 0;
        // The heaviest endpoint claims every round, so this ends within `size` rounds.
        let mut round: u64 = 1;
        while filled < size {
            for f in &mut fillers {
                if filled == size {
                    break;
                }
                if round.saturating_mul(f.weight) < f.target {
                    continue;
                }
                f.target = f.target.saturating_add(max_weight);
                // The permutation visits every slot within `m` steps and one is free.
                loop {
                    let at = f.slot as usize;
                    f.slot += f.skip;
                    if f.slot >= m {
                        f.slot -= m;
                    }
                    if table[at] == EMPTY {
                        table[at] = f.index;
                        break;
                    }
                }
                f.claimed += 1;
                filled += 1;
            }
            round += 1;
        }
        let mut present: Vec<u32> = fillers
            .iter()
            .filter(|f| f.claimed > 0)
            .map(|f| f.index)
            .collect();
        present.sort_unstable();
        Maglev { table, present }
    }

    /// The endpoint for `key`; when the table's endpoint is not `eligible`, a deterministic fallback that keeps keys of eligible endpoints where they were (e.g. probe the table at hash_i(key) for a few seeds, then walk forward); None when no endpoint is eligible.
    pub(crate) fn pick(&self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let m = self.table.len() as u64;
        if m == 0 {
            return None;
        }
        let slot = (key % m) as usize;
        let first = *self.table.get(slot)? as usize;
        if eligible(first) {
            return Some(first);
        }
        for seed in MAGLEV_RETRY_SEEDS {
            let other = *self.table.get((mix64(key ^ seed) % m) as usize)? as usize;
            if eligible(other) {
                return Some(other);
            }
        }
        walk(&self.table, slot + 1, &self.present, &eligible)
    }
}

impl fmt::Debug for Maglev {
    /// Summarises the table (its slots are too many to print).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("table_size", &self.table.len())
            .field("endpoints", &self.present.len())
            .finish()
    }
}

/// Greatest common divisor.
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The first `eligible` endpoint in `owners` from `start` on, wrapping; after
/// as many misses as `present` has endpoints, checks once that any is eligible.
fn walk(
    owners: &[u32],
    start: usize,
    present: &[u32],
    eligible: &impl Fn(usize) -> bool,
) -> Option<usize> {
    let (before, after) = owners.split_at(start.min(owners.len()));
    for (misses, &owner) in after.iter().chain(before).enumerate() {
        if misses == present.len() && !present.iter().any(|&e| eligible(e as usize)) {
            return None;
        }
        if eligible(owner as usize) {
            return Some(owner as usize);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys per statistical test.
    const KEYS: usize = 100_000;
    /// Envoy's default minimum ring size.
    const MIN_RING: u64 = 1024;
    /// Envoy's default maximum ring size.
    const MAX_RING: u64 = 8 * 1024 * 1024;
    /// Envoy's default Maglev table size.
    const TABLE: u64 = 65_537;

    /// Either picker, so each property is tested on both.
    enum Picker {
        /// Ring hash with Envoy's default sizes.
        Ring(Ring),
        /// Maglev with Envoy's default table size.
        Maglev(Maglev),
    }

    /// Which picker to build.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        /// Ring hash.
        Ring,
        /// Maglev.
        Maglev,
    }

    /// Both kinds.
    const KINDS: [Kind; 2] = [Kind::Ring, Kind::Maglev];

    impl Picker {
        /// Builds a picker of `kind` over `endpoints`.
        fn new(kind: Kind, endpoints: &[(&str, u32)]) -> Picker {
            match kind {
                Kind::Ring => Picker::Ring(Ring::new(endpoints, MIN_RING, MAX_RING)),
                Kind::Maglev => Picker::Maglev(Maglev::new(endpoints, TABLE)),
            }
        }

        /// Picks for `key` among `eligible`.
        fn pick(&self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
            match self {
                Picker::Ring(r) => r.pick(key, eligible),
                Picker::Maglev(m) => m.pick(key, eligible),
            }
        }
    }

    /// Endpoint ids `cluster-a/10.0.0.{i}:8000` for `range`.
    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range
            .map(|i| format!("cluster-a/10.0.0.{i}:8000"))
            .collect()
    }

    /// (id, weight) pairs from ids and weights.
    fn weighted<'a>(ids: &'a [String], weights: &[u32]) -> Vec<(&'a str, u32)> {
        ids.iter()
            .map(String::as_str)
            .zip(weights.iter().copied())
            .collect()
    }

    /// The ids with weight 1 each.
    fn even(ids: &[String]) -> Vec<(&str, u32)> {
        weighted(ids, &vec![1; ids.len()])
    }

    /// `KEYS` request keys, hashed as the proxy hashes them.
    fn keys() -> Vec<u64> {
        (0..KEYS)
            .map(|i| hash_key(format!("session-{i}").as_bytes()))
            .collect()
    }

    /// The id each key lands on, all endpoints eligible.
    fn placement<'a>(kind: Kind, endpoints: &[(&'a str, u32)], keys: &[u64]) -> Vec<&'a str> {
        let picker = Picker::new(kind, endpoints);
        keys.iter()
            .map(|&k| match picker.pick(k, |_| true) {
                Some(i) => endpoints[i].0,
                None => panic!("{kind:?}: no pick with every endpoint eligible"),
            })
            .collect()
    }

    /// Fraction of keys on the same id in both placements (among those `filter` keeps).
    fn same_share(a: &[&str], b: &[&str], filter: impl Fn(&str) -> bool) -> f64 {
        let (mut same, mut all) = (0usize, 0usize);
        for (x, y) in a.iter().zip(b) {
            if filter(x) {
                all += 1;
                same += usize::from(x == y);
            }
        }
        same as f64 / all as f64
    }

    /// Each endpoint's share of `keys`, in percent.
    fn shares(kind: Kind, endpoints: &[(&str, u32)], keys: &[u64]) -> Vec<f64> {
        let picker = Picker::new(kind, endpoints);
        let mut counts = vec![0usize; endpoints.len()];
        for &k in keys {
            if let Some(i) = picker.pick(k, |_| true) {
                counts[i] += 1;
            }
        }
        counts
            .iter()
            .map(|&c| 100.0 * c as f64 / keys.len() as f64)
            .collect()
    }

    #[test]
    /// FNV-1a matches the published test vectors, and the mixed hash is pinned.
    fn hash_is_fnv1a_and_pinned() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(hash_key(b"foobar"), mix64(0x8594_4171_f739_67e8));
        assert_ne!(hash_key(b"a"), hash_key(b"b"));
    }

    #[test]
    /// Adding an 11th endpoint to 10 keeps most keys in place (ideal: 10/11).
    ///
    /// Both keep at least 85 %. (With Envoy's exact sizing each old endpoint
    /// of the ring would drop from 103 to 94 points and about 8 % more keys
    /// would move; the power-of-two step keeps 128 points each.)
    fn adding_an_endpoint_keeps_most_keys() {
        let keys = keys();
        let all = ids(0..11);
        for (kind, floor) in [(Kind::Ring, 0.85), (Kind::Maglev, 0.85)] {
            let before = placement(kind, &even(&all[..10]), &keys);
            let appended = placement(kind, &even(&all), &keys);
            // The new endpoint first: indices shift, ids do not.
            let mut reordered = all.clone();
            reordered.rotate_right(1);
            let prepended = placement(kind, &even(&reordered), &keys);
            let stay = same_share(&before, &appended, |_| true);
            println!(
                "{kind:?}: adding 1 to 10 keeps {:.2} % of keys",
                stay * 100.0
            );
            assert!(stay >= floor, "{kind:?}: only {stay:.4} stay");
            let moved = appended.iter().zip(&prepended).filter(|(a, b)| a != b);
            assert_eq!(moved.count(), 0, "{kind:?}: reordering moved keys");
            let to_new = same_share(&appended, &vec![all[10].as_str(); KEYS], |_| true);
            assert!(
                (0.07..0.11).contains(&to_new),
                "{kind:?}: the new endpoint takes {to_new:.4}"
            );
        }
    }

    #[test]
    /// Removing one endpoint of 10 moves its keys and nearly only those.
    ///
    /// Both keep at least 98 % of the others' keys (the ring keeps 128 points
    /// per endpoint for 9 and 10 endpoints alike).
    fn removing_an_endpoint_moves_mostly_its_keys() {
        let keys = keys();
        let all = ids(0..10);
        let gone = all[3].clone();
        let rest: Vec<String> = all.iter().filter(|id| **id != gone).cloned().collect();
        for (kind, floor) in [(Kind::Ring, 0.98), (Kind::Maglev, 0.98)] {
            let before = placement(kind, &even(&all), &keys);
            let after = placement(kind, &even(&rest), &keys);
            assert!(after.iter().all(|id| *id != gone));
            let stay = same_share(&before, &after, |id| id != gone);
            println!(
                "{kind:?}: removing 1 of 10 keeps {:.2} % of the others' keys",
                stay * 100.0
            );
            assert!(
                stay >= floor,
                "{kind:?}: only {stay:.4} of the others' keys stay"
            );
        }
    }

    #[test]
    /// Weights 1, 2, 3, 4 give 10/20/30/40 % (Maglev ±2 points, ring ±5).
    fn weights_set_shares() {
        let keys = keys();
        let all = ids(0..4);
        let endpoints = weighted(&all, &[1, 2, 3, 4]);
        for (kind, tolerance) in [(Kind::Ring, 5.0), (Kind::Maglev, 2.0)] {
            let got = shares(kind, &endpoints, &keys);
            println!("{kind:?}: weights 1,2,3,4 give {got:.2?} %");
            for (i, share) in got.iter().enumerate() {
                let want = 10.0 * (i + 1) as f64;
                assert!(
                    (share - want).abs() <= tolerance,
                    "{kind:?}: endpoint {i} has {share:.2} %, want {want} ± {tolerance}"
                );
            }
        }
    }

    #[test]
    /// Even weights give near-equal shares (Maglev ±1 point of 10 %, ring ±3).
    fn even_weights_spread_evenly() {
        let keys = keys();
        let all = ids(0..10);
        for (kind, tolerance) in [(Kind::Ring, 3.0), (Kind::Maglev, 1.0)] {
            let got = shares(kind, &even(&all), &keys);
            println!("{kind:?}: 10 even endpoints get {got:.2?} %");
            for (i, share) in got.iter().enumerate() {
                assert!(
                    (share - 10.0).abs() <= tolerance,
                    "{kind:?}: endpoint {i} has {share:.2} %"
                );
            }
        }
    }

    #[test]
    /// An ineligible endpoint's keys spread to the others; no other key moves.
    fn ineligible_endpoint_keys_move_alone() {
        let keys = keys();
        let all = ids(0..10);
        let endpoints = even(&all);
        for kind in KINDS {
            let picker = Picker::new(kind, &endpoints);
            let mut moved_to = vec![0usize; endpoints.len()];
            for &k in &keys {
                let home = picker.pick(k, |_| true);
                let now = picker.pick(k, |i| i != 3);
                if home == Some(3) {
                    match now {
                        Some(i) if i != 3 => moved_to[i] += 1,
                        other => panic!("{kind:?}: key of 3 went to {other:?}"),
                    }
                } else {
                    assert_eq!(now, home, "{kind:?}: a key of another endpoint moved");
                }
            }
            let total: usize = moved_to.iter().sum();
            println!("{kind:?}: keys of endpoint 3 went to {moved_to:?}");
            assert!(total > KEYS / 20, "{kind:?}: endpoint 3 had {total} keys");
            for (i, &n) in moved_to.iter().enumerate() {
                if i != 3 {
                    assert!(n > total / 40, "{kind:?}: endpoint {i} got {n} of {total}");
                }
            }
            assert_eq!(picker.pick(keys[0], |_| false), None);
            // Only one eligible: every key finds it.
            assert!(keys[..1000]
                .iter()
                .all(|&k| picker.pick(k, |i| i == 7) == Some(7)));
        }
    }

    #[test]
    /// Two builds from the same input pick the same endpoints.
    fn builds_are_deterministic() {
        let keys = keys();
        let all = ids(0..20);
        let weights: Vec<u32> = (1..=20).collect();
        let endpoints = weighted(&all, &weights);
        for kind in KINDS {
            let (a, b) = (Picker::new(kind, &endpoints), Picker::new(kind, &endpoints));
            for &k in &keys {
                assert_eq!(a.pick(k, |_| true), b.pick(k, |_| true));
                assert_eq!(a.pick(k, |i| i % 3 != 0), b.pick(k, |i| i % 3 != 0));
            }
        }
    }

    #[test]
    /// The ring honours min_size and max_size and gives every endpoint a point.
    fn ring_sizes() {
        let all = ids(0..10);
        let ring = Ring::new(&even(&all), 1024, MAX_RING);
        assert_eq!(
            ring.hashes.len(),
            1280,
            "ceil(102.4) = 103, rounded up to 128 each"
        );
        let ring = Ring::new(&weighted(&all[..2], &[1, 1000]), 1024, 4096);
        assert_eq!(
            ring.hashes.len(),
            2002,
            "the light endpoint gets ceil(1024 / 1001)"
        );
        let ring = Ring::new(&weighted(&all[..2], &[1, 1000]), 4096, 4096);
        assert_eq!(ring.hashes.len(), 4096, "capped at max_size");
        assert_eq!(ring.owners.iter().filter(|&&o| o == 0).count(), 4);
        let ring = Ring::new(&weighted(&all[..2], &[1, 1_000_000]), 16, 64);
        assert_eq!(ring.owners.iter().filter(|&&o| o == 0).count(), 1);
        assert!(ring.hashes.len() <= 64);
        assert!(ring.hashes.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    /// Degenerate input builds without panicking and picks nothing or something sane.
    fn degenerate_input() {
        let all = ids(0..3);
        assert_eq!(Ring::new(&[], 1024, MAX_RING).pick(1, |_| true), None);
        assert_eq!(Maglev::new(&[], TABLE).pick(1, |_| true), None);
        assert_eq!(Maglev::new(&even(&all), 0).pick(1, |_| true), None);
        assert_eq!(
            Maglev::new(&even(&all), 1).pick(u64::MAX, |_| true),
            Some(0)
        );
        // A non-prime size still fills every slot.
        let m = Maglev::new(&even(&all), 100);
        assert!(m.table.iter().all(|&e| e < 3));
        // Weight 0 counts as 1; sizes 0 still give every endpoint a point.
        let zero = weighted(&all, &[0, 0, 0]);
        assert_eq!(Ring::new(&zero, 0, 0).hashes.len(), 3);
        assert_eq!(Maglev::new(&zero, 7).table.len(), 7);
        for key in [0, u64::MAX] {
            assert!(Ring::new(&zero, 0, 0).pick(key, |_| true).is_some());
        }
        println!("{:?} {:?}", Ring::new(&zero, 8, 8), Maglev::new(&zero, 7));
    }
}
