//! Owns picking one endpoint from a candidate set (D6). `Picker` is the seam for
//! balancing policies: round robin and random today, latency-aware P2C next.
//! Priority handling and "a different endpoint each try" live here too, so
//! every policy gets them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use corridor_config::{Cluster, EndpointSet, LbPolicy};

/// A balancing policy: picks among `eligible`, all of one priority level.
pub trait Picker: Send + Sync + std::fmt::Debug {
    /// Returns an endpoint index from `eligible` (never empty).
    fn pick(&self, cluster: &Cluster, eligible: &EndpointSet) -> usize;
    /// The same for a retry (`eligible` leaves out what was tried when it can).
    /// By default the policy picks as for a first try.
    fn pick_retry(&self, cluster: &Cluster, eligible: &EndpointSet) -> usize {
        self.pick(cluster, eligible)
    }
    /// The policy this picker implements, to reuse its state across snapshots.
    fn policy(&self) -> LbPolicy;
}

/// Creates the picker for a policy.
pub fn picker_for(policy: LbPolicy) -> Arc<dyn Picker> {
    match policy {
        LbPolicy::RoundRobin => Arc::new(RoundRobin::default()),
        LbPolicy::Random => Arc::new(Random),
    }
}

/// Picks for one request try: prefers endpoints not yet tried, then the lowest
/// priority level among them, and asks the cluster's policy among those (a
/// retry through [`Picker::pick_retry`]).
pub fn pick(
    picker: &dyn Picker,
    cluster: &Cluster,
    candidates: &EndpointSet,
    tried: &EndpointSet,
) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    let retry = !tried.is_empty();
    let mut fresh = candidates.clone();
    fresh.subtract(tried);
    let pool = if fresh.is_empty() { candidates } else { &fresh };
    let min_priority = pool.iter().map(|i| cluster.endpoints[i].priority).min()?;
    let choose = |set: &EndpointSet| {
        if retry {
            picker.pick_retry(cluster, set)
        } else {
            picker.pick(cluster, set)
        }
    };
    if pool
        .iter()
        .all(|i| cluster.endpoints[i].priority == min_priority)
    {
        return Some(choose(pool));
    }
    let mut level = pool.clone();
    for i in pool.iter() {
        if cluster.endpoints[i].priority != min_priority {
            level.remove(i);
        }
    }
    Some(choose(&level))
}

/// Weighted round robin over a shared counter.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Picker for RoundRobin {
    fn pick(&self, cluster: &Cluster, eligible: &EndpointSet) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        weighted_nth(cluster, eligible, n)
    }

    /// A retry picks at random (weighted) and leaves the shared sequence
    /// alone: were retries to advance it, with every request retrying once
    /// every first try would land on the same (failing) endpoint.
    fn pick_retry(&self, cluster: &Cluster, eligible: &EndpointSet) -> usize {
        Random.pick(cluster, eligible)
    }

    fn policy(&self) -> LbPolicy {
        LbPolicy::RoundRobin
    }
}

/// Weighted random.
#[derive(Debug, Default)]
pub struct Random;

impl Picker for Random {
    fn pick(&self, cluster: &Cluster, eligible: &EndpointSet) -> usize {
        weighted_nth(cluster, eligible, fastrand::usize(..))
    }

    fn policy(&self) -> LbPolicy {
        LbPolicy::Random
    }
}

/// The endpoint at position `n` (mod total weight) of the weighted sequence.
fn weighted_nth(cluster: &Cluster, eligible: &EndpointSet, n: usize) -> usize {
    let total: u64 = eligible
        .iter()
        .map(|i| u64::from(cluster.endpoints[i].weight))
        .sum();
    let mut r = (n as u64) % total.max(1);
    let mut last = 0;
    for i in eligible.iter() {
        let w = u64::from(cluster.endpoints[i].weight);
        if r < w {
            return i;
        }
        r -= w;
        last = i;
    }
    last
}

pub(crate) mod state;

#[cfg(test)]
mod tests;
