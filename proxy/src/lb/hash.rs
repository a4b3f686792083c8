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
mod tests;
