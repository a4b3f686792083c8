//! Owns picking one endpoint for one try (D6): the one eligibility filter
//! (the request's candidates, minus endpoints already tried, minus ejected
//! and unhealthy ones unless the level is in panic), nearest-first steps for
//! routes that prefer the client's regions (always inside the candidates),
//! priority spill-over and zone preference with Envoy's overprovisioning
//! factor, and then the cluster's policy: smooth weighted round robin,
//! weighted random, least request (P2C), peak-EWMA (P2C), ring hash or Maglev.
//!
//! Per-endpoint runtime state is in `state`, per-cluster state that survives
//! changes (availability generation, breakers) in `shared`, passive health in
//! `outlier`, and the consistent-hash tables in `hash`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use corridor_config::{Cluster, EndpointSet, LbPolicy, Locality};
use smallvec::SmallVec;

use crate::routing::ClusterRuntime;

pub(crate) mod hash;
pub(crate) mod outlier;
pub(crate) mod shared;
pub(crate) mod state;

/// What a pick needs from the request.
#[derive(Debug)]
pub struct PickRequest<'a> {
    /// Endpoints the request may use (its subset, narrowed by residency).
    pub candidates: &'a EndpointSet,
    /// Endpoints earlier tries of this request used.
    pub tried: &'a EndpointSet,
    /// The request's key for hashing policies.
    pub hash: Option<u64>,
    /// The client's jurisdiction, on a route that prefers the nearest endpoints.
    pub nearest: Option<u8>,
}

/// The balancer's precomputed view of a cluster's endpoints (built with each
/// endpoint table), and its cache of which endpoints are usable.
pub(crate) struct Balancer {
    /// Endpoints per priority level, lowest priority number first.
    levels: Vec<EndpointSet>,
    /// This Corridor's zone and region (minus zone) endpoints, when the
    /// locality is known and zone preference is on.
    local: Option<[EndpointSet; 2]>,
    /// Effective weight per endpoint (endpoint × locality weight share).
    weights: Vec<u32>,
    /// Every endpoint has the same effective weight.
    uniform: bool,
    /// Ring or Maglev table for hashing policies.
    table: Table,
    /// Endpoints neither ejected nor failing a health check, as of a generation.
    usable: ArcSwap<Usable>,
    /// Endpoints per jurisdiction (index as in the configuration's geo).
    by_jurisdiction: Vec<EndpointSet>,
    /// Per client jurisdiction, the steps of nearest-first routing: each
    /// preferred region's endpoints in order, then the rest of the
    /// jurisdiction's (empty steps left out).
    nearest: Vec<Vec<EndpointSet>>,
}

enum Table {
    None,
    Ring(hash::Ring),
    Maglev(hash::Maglev),
}

struct Usable {
    generation: u64,
    set: EndpointSet,
}

impl Balancer {
    /// The jurisdiction of endpoint `i`, if it has one.
    pub(crate) fn jurisdiction_of(&self, i: usize) -> Option<u8> {
        self.by_jurisdiction
            .iter()
            .position(|s| s.contains(i))
            .map(|j| j as u8)
    }

    /// The endpoints in the jurisdictions of `allowed`.
    pub(crate) fn in_jurisdictions(
        &self,
        allowed: corridor_config::JurisdictionSet,
        n: usize,
    ) -> EndpointSet {
        let mut out = EndpointSet::empty(n);
        for (j, set) in self.by_jurisdiction.iter().enumerate() {
            if allowed & (1 << j) != 0 {
                out.union(set);
            }
        }
        out
    }

    /// The view of `c`'s endpoints, with `local` as this Corridor's locality
    /// and `geo` placing endpoints in jurisdictions.
    pub(crate) fn new(c: &Cluster, local: &Locality, geo: &corridor_config::Geo) -> Self {
        let eps = &c.endpoints;
        let n = eps.len();
        let mut prios: Vec<u32> = eps.iter().map(|e| e.priority).collect();
        prios.sort_unstable();
        prios.dedup();
        let levels = prios
            .iter()
            .map(|p| {
                let mut s = EndpointSet::empty(n);
                for (i, e) in eps.iter().enumerate() {
                    if e.priority == *p {
                        s.insert(i);
                    }
                }
                s
            })
            .collect();
        let common = &c.balancing.common;
        let local = (common.zone_aware && !local.region.is_empty()).then(|| {
            let mut zone = EndpointSet::empty(n);
            let mut region = EndpointSet::empty(n);
            for (i, e) in eps.iter().enumerate() {
                let l = &e.locality;
                if l.cloud == local.cloud && l.region == local.region {
                    if !local.zone.is_empty() && l.zone == local.zone {
                        zone.insert(i);
                    } else {
                        region.insert(i);
                    }
                }
            }
            [zone, region]
        });
        let weights = effective_weights(c);
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let ids: Vec<(&str, u32)> = eps
            .iter()
            .zip(&weights)
            .map(|(e, w)| (e.id.as_ref(), *w))
            .collect();
        let lb = &c.balancing.lb;
        let table = match lb.policy {
            LbPolicy::RingHash => Table::Ring(hash::Ring::new(&ids, lb.ring_min, lb.ring_max)),
            LbPolicy::Maglev => Table::Maglev(hash::Maglev::new(&ids, lb.maglev_table_size)),
            _ => Table::None,
        };
        let mut by_jurisdiction = vec![EndpointSet::empty(n); geo.jurisdictions.len()];
        for (i, e) in eps.iter().enumerate() {
            if let Some(j) = geo.of_endpoint(e) {
                by_jurisdiction[usize::from(j)].insert(i);
            }
        }
        let nearest = nearest_steps(c, geo, &by_jurisdiction);
        Self {
            by_jurisdiction,
            nearest,
            levels,
            local,
            weights,
            uniform,
            table,
            usable: ArcSwap::from_pointee(Usable {
                generation: u64::MAX,
                set: EndpointSet::default(),
            }),
        }
    }
}

/// The nearest-first steps of each client jurisdiction: its preferred
/// regions' endpoints (a region matches `cloud/region` or `region`), then its
/// other endpoints.
fn nearest_steps(
    c: &Cluster,
    geo: &corridor_config::Geo,
    by_jurisdiction: &[EndpointSet],
) -> Vec<Vec<EndpointSet>> {
    let n = c.endpoints.len();
    (0..by_jurisdiction.len())
        .map(|j| {
            let mut steps = Vec::new();
            let mut taken = EndpointSet::empty(n);
            let regions = geo.preferred_regions.get(&(j as u8));
            for region in regions.into_iter().flatten() {
                let mut step = EndpointSet::empty(n);
                for (i, e) in c.endpoints.iter().enumerate() {
                    let l = &e.locality;
                    let full = region.split_once('/').is_some_and(|(cloud, r)| {
                        l.cloud.as_ref() == cloud && l.region.as_ref() == r
                    });
                    if !taken.contains(i) && (full || l.region == *region) {
                        step.insert(i);
                    }
                }
                if !step.is_empty() {
                    taken.union(&step);
                    steps.push(step);
                }
            }
            let mut rest = by_jurisdiction[j].clone();
            rest.subtract(&taken);
            if !rest.is_empty() {
                steps.push(rest);
            }
            steps
        })
        .collect()
}

/// Endpoint weight times its locality's weight share: with locality weights,
/// each locality's endpoints together weigh its weight, split by their own.
fn effective_weights(c: &Cluster) -> Vec<u32> {
    let eps = &c.endpoints;
    if eps.iter().all(|e| e.locality_weight.is_none()) {
        return eps.iter().map(|e| e.weight).collect();
    }
    let mut sums: Vec<(&Locality, u64)> = Vec::new();
    for e in eps.iter() {
        match sums.iter_mut().find(|(l, _)| **l == e.locality) {
            Some((_, s)) => *s += u64::from(e.weight),
            None => sums.push((&e.locality, u64::from(e.weight))),
        }
    }
    eps.iter()
        .map(|e| {
            let sum = sums
                .iter()
                .find(|(l, _)| **l == e.locality)
                .map_or(1, |(_, s)| *s);
            let lw = u64::from(e.locality_weight.unwrap_or(1));
            // Scaled so that small shares keep their proportions.
            ((lw * u64::from(e.weight) * 10_000) / sum.max(1)).clamp(1, u64::from(u32::MAX)) as u32
        })
        .collect()
}

/// Picks the endpoint for one try, or `None` when no endpoint is left (no
/// candidate at all, or none usable with panic mode off).
pub(crate) fn pick(rt: &ClusterRuntime, req: &PickRequest<'_>) -> Option<usize> {
    if req.candidates.is_empty() {
        return None;
    }
    // Prefer endpoints not tried yet; when all were, any candidate.
    let mut pool = req.candidates.clone();
    pool.subtract(req.tried);
    let retry = !req.tried.is_empty();
    // Nearest first: the first step with a usable endpoint not tried yet,
    // balanced among its usable endpoints; the whole pool is the last step.
    if let Some(steps) = req.nearest.and_then(|j| rt.lb.nearest.get(usize::from(j))) {
        // One view of usability for finding the step and balancing in it.
        let near = with_usable(rt, |usable| {
            steps.iter().find_map(|step| {
                let mut s = pool.clone();
                s.intersect(step);
                s.intersect(usable);
                if s.is_empty() {
                    return None;
                }
                eligible(rt, &s, usable, req.hash)
            })
        });
        if let Some(set) = near {
            return Some(choose(rt, &set, req.hash, retry));
        }
    }
    if pool.is_empty() {
        pool = req.candidates.clone();
    }
    let set = with_usable(rt, |usable| eligible(rt, &pool, usable, req.hash))?;
    Some(choose(rt, &set, req.hash, retry))
}

/// Runs `f` with the set of usable endpoints, refreshing the cached set when
/// an endpoint's usability changed since it was computed.
fn with_usable<R>(rt: &ClusterRuntime, f: impl FnOnce(&EndpointSet) -> R) -> R {
    let generation = rt.shared.generation();
    let cached = rt.lb.usable.load();
    if cached.generation == generation {
        return f(&cached.set);
    }
    let mut set = EndpointSet::empty(rt.states.len());
    for (i, s) in rt.states.iter().enumerate() {
        if s.usable() {
            set.insert(i);
        }
    }
    let fresh = Arc::new(Usable { generation, set });
    rt.lb.usable.store(Arc::clone(&fresh));
    f(&fresh.set)
}

/// The endpoints the policy chooses among: a priority level drawn by its
/// share of traffic, its usable endpoints (all of them when the level is in
/// panic), narrowed to this Corridor's zone or region while those have
/// capacity. Hashing policies draw with the request's key, so a key keeps
/// its level, and skip the zone preference (as Envoy).
fn eligible(
    rt: &ClusterRuntime,
    pool: &EndpointSet,
    usable: &EndpointSet,
    hash: Option<u64>,
) -> Option<EndpointSet> {
    let common = &rt.config.balancing.common;
    let levels = &rt.lb.levels;
    let hashing = rt.config.balancing.lb.policy.is_hash();
    let local = rt.lb.local.as_ref().filter(|_| !hashing);
    // Fast path: one level, no zone preference, every candidate usable.
    if levels.len() <= 1 && local.is_none() && pool.count_and(usable) == pool.len() {
        return Some(pool.clone());
    }
    let op = f64::from(common.overprovisioning) / 100.0;
    // (total, usable) per level, within the pool.
    let groups: SmallVec<[(usize, usize); 4]> = if levels.len() <= 1 {
        smallvec::smallvec![(pool.len(), pool.count_and(usable))]
    } else {
        levels
            .iter()
            .map(|mask| {
                let mut l = pool.clone();
                l.intersect(mask);
                (l.len(), l.count_and(usable))
            })
            .collect()
    };
    // Envoy: levels only panic when all of them together cannot take the
    // load (their capped health sums under 100 %); a level in panic then
    // spreads over all its endpoints; when every level is in panic, levels
    // are drawn by size.
    let total_health: f64 = groups.iter().map(|g| health(*g, op)).sum();
    let panic_mode = total_health < 100.0;
    let in_panic = |(total, usable): (usize, usize)| {
        panic_mode && total > 0 && (usable as f64) * 100.0 < common.panic_threshold * total as f64
    };
    let all_panic = groups.iter().filter(|g| g.0 > 0).all(|g| in_panic(*g));
    let r = unit(hash, 1);
    let li = if all_panic {
        draw_by_size(&groups, r)?
    } else {
        draw_by_health(&groups, op, r)?
    };
    let level = if levels.len() <= 1 {
        pool.clone()
    } else {
        let mut l = pool.clone();
        l.intersect(&levels[li]);
        l
    };
    let base = if in_panic(groups[li]) {
        level.clone()
    } else {
        let mut h = level.clone();
        h.intersect(usable);
        h
    };
    if base.is_empty() {
        return None;
    }
    let Some(local) = local else {
        return Some(base);
    };
    let level_size = levels.get(li).map_or(rt.states.len(), EndpointSet::len);
    if (level_size as u32) < common.zone_min_cluster_size {
        return Some(base);
    }
    // Zone, then region, then the rest, each taking what its healthy share
    // (× overprovisioning) covers.
    let mut rest = level.clone();
    rest.subtract(&local[0]);
    rest.subtract(&local[1]);
    let tiers = [&local[0], &local[1], &rest];
    let counts: SmallVec<[(usize, usize); 4]> = tiers
        .iter()
        .map(|t| (level.count_and(t), base.count_and(t)))
        .collect();
    let ti = draw_by_health(&counts, op, unit(hash, 2))?;
    let mut out = base;
    out.intersect(tiers[ti]);
    Some(out)
}

/// A group's capped health in percent: usable share × overprovisioning.
fn health((total, usable): (usize, usize), op: f64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (usable as f64 * 100.0 * op / total as f64).min(100.0)
    }
}

/// A number in [0, 1): from the request's hash (salted, so that levels and
/// zones draw independently) or at random.
fn unit(hash: Option<u64>, salt: u64) -> f64 {
    match hash {
        Some(h) => {
            let mut z = h ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
        None => fastrand::f64(),
    }
}

/// Draws a group (priority level or locality tier) by its share of traffic
/// with `r` in [0, 1): each group in order takes min(remaining, its health);
/// when the healths sum under 100 % they are scaled up. `None` when no group
/// has a usable endpoint. `groups` are (total, usable).
fn draw_by_health(groups: &[(usize, usize)], op: f64, r: f64) -> Option<usize> {
    let sum: f64 = groups.iter().map(|g| health(*g, op)).sum();
    if sum <= 0.0 {
        return None;
    }
    let scale = if sum < 100.0 { 100.0 / sum } else { 1.0 };
    let mut r = r * 100.0;
    let mut remaining = 100.0;
    let mut last = None;
    for (i, g) in groups.iter().enumerate() {
        let h = health(*g, op);
        if h <= 0.0 {
            continue;
        }
        let share = (h * scale).min(remaining);
        if r < share {
            return Some(i);
        }
        r -= share;
        remaining -= share;
        last = Some(i);
        if remaining <= 0.0 {
            break;
        }
    }
    last
}

/// Draws a group by its number of endpoints, with `r` in [0, 1).
fn draw_by_size(groups: &[(usize, usize)], r: f64) -> Option<usize> {
    let all: usize = groups.iter().map(|g| g.0).sum();
    let mut pos = (r * all as f64) as usize;
    for (i, g) in groups.iter().enumerate() {
        if pos < g.0 {
            return Some(i);
        }
        pos -= g.0;
    }
    groups.iter().rposition(|g| g.0 > 0)
}

/// Applies the cluster's policy to a non-empty set.
fn choose(rt: &ClusterRuntime, set: &EndpointSet, hash: Option<u64>, retry: bool) -> usize {
    let lb = &rt.config.balancing.lb;
    let first = || set.nth(0).unwrap_or(0);
    if set.len() == 1 {
        return first();
    }
    match lb.policy {
        LbPolicy::RoundRobin if !retry => round_robin(rt, set),
        // A retry leaves the shared sequence alone: were retries to advance
        // it, with every request retrying once every first try would land on
        // the same (failing) endpoint.
        LbPolicy::RoundRobin | LbPolicy::Random => draw(rt, set),
        LbPolicy::LeastRequest => {
            let n = lb.choice_count.max(2);
            let mut best = draw(rt, set);
            for _ in 1..n {
                let c = draw_other(rt, set, best);
                // Fewer in flight per unit of weight wins:
                // active(c) / w(c) < active(best) / w(best), without division.
                let (ac, ab) = (rt.states[c].active(), rt.states[best].active());
                let (wc, wb) = (rt.lb.weights[c].max(1), rt.lb.weights[best].max(1));
                if u64::from(ac) * u64::from(wb) < u64::from(ab) * u64::from(wc) {
                    best = c;
                }
            }
            best
        }
        LbPolicy::PeakEwma => {
            let now = state::now_ms();
            let cost = |i| cost(rt, i, now);
            let a = draw(rt, set);
            let b = draw_other(rt, set, a);
            if cost(b) < cost(a) {
                b
            } else {
                a
            }
        }
        LbPolicy::RingHash | LbPolicy::Maglev => {
            let Some(key) = hash else {
                // No key (for example the header is missing): any endpoint.
                return draw(rt, set);
            };
            let eligible = |i: usize| set.contains(i);
            let found = match &rt.lb.table {
                Table::Ring(r) => r.pick(key, eligible),
                Table::Maglev(m) => m.pick(key, eligible),
                Table::None => None,
            };
            found.unwrap_or_else(first)
        }
    }
}

/// Peak-EWMA cost of endpoint `i`: latency × (in flight + 1) / weight, and
/// with ORCA, ÷ (1 − reported utilization).
fn cost(rt: &ClusterRuntime, i: usize, now: u64) -> f64 {
    let lb = &rt.config.balancing.lb;
    let s = &rt.states[i];
    let rtt = s.peak_rtt_us(
        lb.default_rtt.as_secs_f64() * 1e6,
        lb.decay.as_secs_f64(),
        now,
    );
    let mut c = rtt * f64::from(s.active() + 1) / f64::from(rt.lb.weights[i].max(1));
    if lb.orca {
        c /= 1.0 - f64::from(s.utilization()).min(0.95);
    }
    c
}

/// Smooth weighted round robin over the shared sequence: equal weights take
/// turns strictly; unequal weights follow a golden-ratio sequence over the
/// weight line, so a heavy endpoint's turns interleave with the others'.
fn round_robin(rt: &ClusterRuntime, set: &EndpointSet) -> usize {
    let n = rt
        .shared
        .rr
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if rt.lb.uniform {
        return set.nth((n % set.len() as u64) as usize).unwrap_or(0);
    }
    let total: u64 = set.iter().map(|i| u64::from(rt.lb.weights[i])).sum();
    let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let pos = ((u128::from(x) * u128::from(total)) >> 64) as u64;
    weighted_at(rt, set, pos)
}

/// A draw proportional to effective weight.
fn draw(rt: &ClusterRuntime, set: &EndpointSet) -> usize {
    if rt.lb.uniform {
        return set.nth(fastrand::usize(..set.len())).unwrap_or(0);
    }
    let total: u64 = set.iter().map(|i| u64::from(rt.lb.weights[i])).sum();
    weighted_at(rt, set, fastrand::u64(..total.max(1)))
}

/// A draw that is not `not` (a few tries; Envoy draws with replacement, so
/// a slow endpoint would still win every pick in which it is drawn twice).
fn draw_other(rt: &ClusterRuntime, set: &EndpointSet, not: usize) -> usize {
    let mut c = draw(rt, set);
    for _ in 0..3 {
        if c != not {
            break;
        }
        c = draw(rt, set);
    }
    c
}

/// The endpoint at position `pos` of the set's weight line.
fn weighted_at(rt: &ClusterRuntime, set: &EndpointSet, mut pos: u64) -> usize {
    let mut last = 0;
    for i in set.iter() {
        let w = u64::from(rt.lb.weights[i]);
        if pos < w {
            return i;
        }
        pos -= w;
        last = i;
    }
    last
}

/// One cluster's balancer outside a running proxy, exactly as requests use
/// it (for benchmarks and tools): built from a compiled snapshot.
pub struct ClusterBalancer(Arc<ClusterRuntime>);

impl ClusterBalancer {
    /// The balancer of cluster `name` in `snapshot`; `None` without it.
    pub fn new(snapshot: Arc<corridor_config::Snapshot>, name: &str) -> Option<Self> {
        let metrics = crate::metrics::Metrics::new(&prometheus::Registry::new()).ok()?;
        let routing = crate::routing::Routing::build(
            snapshot,
            None,
            &metrics,
            &corridor_config::DiskFiles,
            false,
        )
        .ok()?;
        routing.clusters.get(name).cloned().map(Self)
    }

    /// Picks an endpoint index for one try.
    pub fn pick(&self, req: &PickRequest<'_>) -> Option<usize> {
        pick(&self.0, req)
    }

    /// Records a response with `status` after `latency` from endpoint `i`.
    pub fn record(&self, i: usize, status: u16, latency: std::time::Duration) {
        self.0
            .record(i, state::Outcome::Status(status), Some(latency));
    }

    /// Every endpoint of the cluster, as a candidate set.
    pub fn all(&self) -> EndpointSet {
        self.0.config.all()
    }
}

/// The utilization in an ORCA `endpoint-load-metrics` header value, TEXT
/// (`TEXT cpu_utilization=0.3, application_utilization=0.5`) or JSON form:
/// `application_utilization` when reported, else `cpu_utilization`.
pub(crate) fn parse_orca(v: &[u8]) -> Option<f32> {
    let v = std::str::from_utf8(v).ok()?.trim();
    let (app, cpu) = if let Some(text) = v.strip_prefix("TEXT ") {
        let mut app = None;
        let mut cpu = None;
        for pair in text.split(',') {
            let (k, val) = pair.trim().split_once('=')?;
            let val = val.trim().parse::<f32>().ok();
            match k.trim() {
                "application_utilization" => app = val,
                "cpu_utilization" => cpu = val,
                _ => {}
            }
        }
        (app, cpu)
    } else if let Some(json) = v.strip_prefix("JSON ") {
        let j: serde_json::Value = serde_json::from_str(json).ok()?;
        let f = |k: &str| {
            j.get(k)
                .or_else(|| j.get(k.replace("_u", "U").as_str()))
                .and_then(serde_json::Value::as_f64)
                .map(|x| x as f32)
        };
        (f("application_utilization"), f("cpu_utilization"))
    } else {
        return None;
    };
    app.filter(|u| *u > 0.0)
        .or(cpu)
        .filter(|u| u.is_finite() && *u >= 0.0)
}

#[cfg(test)]
mod tests;
