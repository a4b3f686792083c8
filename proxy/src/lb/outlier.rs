//! Owns outlier detection (passive health) with Envoy's semantics: the
//! consecutive-failure detectors run on every try's outcome (`on_outcome`,
//! data path, lock-free); ejection expiry, the multiplier's decay and the
//! success-rate and failure-percentage detectors run once per interval
//! (`review`, on the health thread).

use std::sync::atomic::Ordering;

use corridor_config::OutlierDetection;

use super::shared::{ClusterShared, EjectReason};
use super::state::{now_ms, EndpointState, Outcome};
use crate::routing::ClusterRuntime;

/// Counts one try's outcome on endpoint `i` and runs the consecutive
/// detectors when outlier detection is on.
pub(crate) fn on_outcome(rt: &ClusterRuntime, i: usize, outcome: Outcome) {
    let od = rt.config.balancing.outlier.as_ref();
    let split = od.is_some_and(|o| o.split_external_local_origin_errors);
    let Some(st) = rt.states.get(i) else { return };
    let c = &st.outlier;
    let inc = |a: &std::sync::atomic::AtomicU32| a.fetch_add(1, Ordering::Relaxed) + 1;
    let (mut n5xx, mut ngw, mut nlocal) = (0, 0, 0);
    match outcome {
        Outcome::Status(s) => {
            if split {
                // A response means the connection worked.
                c.consecutive_local.store(0, Ordering::Relaxed);
                inc(&c.local_ok);
            }
            if s >= 500 {
                inc(&c.failed);
                n5xx = inc(&c.consecutive_5xx);
                if matches!(s, 502..=504) {
                    ngw = inc(&c.consecutive_gateway);
                } else {
                    c.consecutive_gateway.store(0, Ordering::Relaxed);
                }
            } else {
                inc(&c.ok);
                c.consecutive_5xx.store(0, Ordering::Relaxed);
                c.consecutive_gateway.store(0, Ordering::Relaxed);
            }
        }
        _ if split => {
            inc(&c.local_failed);
            nlocal = inc(&c.consecutive_local);
        }
        // Without the split, a local-origin failure counts as a gateway error.
        _ => {
            inc(&c.failed);
            n5xx = inc(&c.consecutive_5xx);
            ngw = inc(&c.consecutive_gateway);
        }
    }
    // The counters are kept (and shown) without outlier detection too.
    let Some(od) = od else { return };
    // Equality: a streak triggers one attempt, however long it goes on.
    if n5xx == od.consecutive_5xx {
        try_eject(
            rt,
            i,
            od,
            EjectReason::Consecutive5xx,
            od.enforcing_consecutive_5xx,
        );
    }
    if ngw == od.consecutive_gateway_failure {
        try_eject(
            rt,
            i,
            od,
            EjectReason::ConsecutiveGatewayFailure,
            od.enforcing_consecutive_gateway_failure,
        );
    }
    if nlocal == od.consecutive_local_origin_failure {
        try_eject(
            rt,
            i,
            od,
            EjectReason::ConsecutiveLocalOriginFailure,
            od.enforcing_consecutive_local_origin_failure,
        );
    }
}

/// Ejects endpoint `i` if the enforcement roll and `max_ejection_percent`
/// allow (Envoy: the ejection must keep the ejected share at or under it;
/// with `always_eject_one_host`, one endpoint can always be ejected).
fn try_eject(
    rt: &ClusterRuntime,
    i: usize,
    od: &OutlierDetection,
    reason: EjectReason,
    enforcing: u32,
) -> bool {
    if enforcing == 0 || (enforcing < 100 && fastrand::u32(0..100) >= enforcing) {
        return false;
    }
    let st = &rt.states[i];
    if st.ejected() || st.retired.load(Ordering::Acquire) {
        return false;
    }
    let total = rt.states.len() as u64;
    let mut cap = (u64::from(od.max_ejection_percent) * total / 100) as u32;
    if od.always_eject_one_host {
        cap = cap.max(1);
    }
    if !rt.shared.admit_ejection(cap) {
        return false;
    }
    let multiplier = st.multiplier.load(Ordering::Relaxed) + 1;
    let mut time = od
        .base_ejection_time
        .saturating_mul(multiplier)
        .min(od.max_ejection_time);
    if !od.max_ejection_time_jitter.is_zero() {
        let j = od.max_ejection_time_jitter.as_millis() as u64;
        time += std::time::Duration::from_millis(fastrand::u64(0..=j));
    }
    let ms = time.as_millis() as u64;
    st.ejection_ms.store(ms, Ordering::Relaxed);
    if st
        .ejected_until
        .compare_exchange(0, now_ms() + ms, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        rt.shared.ejection_ended();
        return false;
    }
    // Retired meanwhile (a change removed it): undo, once.
    if st.retired.load(Ordering::Acquire) {
        uneject(&rt.shared, st);
        return false;
    }
    // The multiplier stops growing once the ejection time is at its cap.
    let cap =
        (od.max_ejection_time.as_millis() / od.base_ejection_time.as_millis().max(1)) as u32 + 1;
    st.multiplier.store(multiplier.min(cap), Ordering::Relaxed);
    st.ejections.fetch_add(1, Ordering::Relaxed);
    reset_streaks(st);
    rt.shared.metrics.ejection(reason);
    rt.shared.availability_changed();
    tracing::warn!(
        cluster = %rt.config.name,
        endpoint = %rt.config.endpoints[i].address,
        reason = reason.label(),
        ejected_for_ms = ms,
        "outlier detection ejected an endpoint"
    );
    true
}

fn reset_streaks(st: &EndpointState) {
    let c = &st.outlier;
    c.consecutive_5xx.store(0, Ordering::Relaxed);
    c.consecutive_gateway.store(0, Ordering::Relaxed);
    c.consecutive_local.store(0, Ordering::Relaxed);
}

/// Returns endpoint `st` of a cluster to service (ejection over, or a
/// passing health check that may uneject).
pub(crate) fn uneject(shared: &ClusterShared, st: &EndpointState) {
    if st.ejected_until.swap(0, Ordering::AcqRel) != 0 {
        reset_streaks(st);
        shared.ejection_ended();
        shared.availability_changed();
    }
}

/// The interval's work for one cluster, when it is due: returns ejected
/// endpoints whose time is up, decays multipliers, runs the success-rate and
/// failure-percentage detectors and starts a new interval.
pub(crate) fn review(rt: &ClusterRuntime, now: u64) {
    let Some(od) = rt.config.balancing.outlier.as_ref() else {
        return;
    };
    let due = rt.shared.next_review_ms.load(Ordering::Relaxed);
    if now < due {
        return;
    }
    let interval = od.interval.as_millis() as u64;
    rt.shared
        .next_review_ms
        .store(now + interval.max(1), Ordering::Relaxed);
    if due == 0 {
        // The first review starts the first interval.
        take_interval(rt);
        return;
    }
    for st in &rt.states {
        let until = st.ejected_until.load(Ordering::Relaxed);
        if until != 0 {
            if now >= until {
                uneject(&rt.shared, st);
                tracing::info!(cluster = %rt.config.name, "an ejected endpoint returns");
            }
        } else {
            let _ = st
                .multiplier
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| m.checked_sub(1));
        }
    }
    let counts = take_interval(rt);
    let external: Vec<(u32, u32)> = counts.iter().map(|c| (c.0, c.1)).collect();
    detect_rates(rt, od, &external, false);
    if od.split_external_local_origin_errors {
        let local: Vec<(u32, u32)> = counts.iter().map(|c| (c.2, c.3)).collect();
        detect_rates(rt, od, &local, true);
    }
}

/// Each endpoint's (ok, failed, local ok, local failed) of the interval just
/// ended; resets them.
fn take_interval(rt: &ClusterRuntime) -> Vec<(u32, u32, u32, u32)> {
    rt.states
        .iter()
        .map(|s| {
            let c = &s.outlier;
            (
                c.ok.swap(0, Ordering::Relaxed),
                c.failed.swap(0, Ordering::Relaxed),
                c.local_ok.swap(0, Ordering::Relaxed),
                c.local_failed.swap(0, Ordering::Relaxed),
            )
        })
        .collect()
}

/// Success-rate (outliers below mean − stdev × factor) and failure-percentage
/// detection over one interval's `(ok, failed)` counts.
fn detect_rates(rt: &ClusterRuntime, od: &OutlierDetection, counts: &[(u32, u32)], local: bool) {
    let (sr_enforcing, fp_enforcing) = if local {
        (
            od.enforcing_local_origin_success_rate,
            od.enforcing_failure_percentage_local_origin,
        )
    } else {
        (od.enforcing_success_rate, od.enforcing_failure_percentage)
    };
    let rates = |volume: u32| -> Vec<(usize, f64)> {
        counts
            .iter()
            .enumerate()
            .filter(|(i, (ok, failed))| {
                ok + failed >= volume && rt.states.get(*i).is_some_and(|s| !s.ejected())
            })
            .map(|(i, (ok, failed))| (i, f64::from(*ok) * 100.0 / f64::from(ok + failed)))
            .collect()
    };
    let sr = rates(od.success_rate_request_volume);
    if sr.len() >= od.success_rate_minimum_hosts as usize && !sr.is_empty() {
        let n = sr.len() as f64;
        let mean = sr.iter().map(|(_, r)| r).sum::<f64>() / n;
        let var = sr.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
        let threshold = mean - var.sqrt() * f64::from(od.success_rate_stdev_factor) / 1000.0;
        for (i, r) in &sr {
            if *r < threshold {
                let reason = if local {
                    EjectReason::LocalOriginSuccessRate
                } else {
                    EjectReason::SuccessRate
                };
                try_eject(rt, *i, od, reason, sr_enforcing);
            }
        }
    }
    let fp = rates(od.failure_percentage_request_volume);
    if fp.len() >= od.failure_percentage_minimum_hosts as usize {
        for (i, r) in &fp {
            if 100.0 - r >= f64::from(od.failure_percentage_threshold) {
                let reason = if local {
                    EjectReason::LocalOriginFailurePercentage
                } else {
                    EjectReason::FailurePercentage
                };
                try_eject(rt, *i, od, reason, fp_enforcing);
            }
        }
    }
}
