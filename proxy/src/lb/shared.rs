//! Owns the per-cluster state that outlives a configuration change while the
//! cluster keeps its name: the availability generation (bumped whenever an
//! endpoint is ejected, returns or changes health, so pickers refresh their
//! cached usable set), the round-robin sequence, the circuit breakers'
//! counters with their guards, the retry reserve, the outlier review clock
//! and the cluster's health and overload metrics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;

use super::state::Timed;
use crate::metrics::Metrics;

/// Why outlier detection ejected an endpoint (the `reason` label); the
/// discriminant indexes [`EjectReason::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EjectReason {
    /// `consecutive_5xx` in a row.
    Consecutive5xx,
    /// `consecutive_gateway_failure` in a row.
    ConsecutiveGatewayFailure,
    /// `consecutive_local_origin_failure` in a row (split errors).
    ConsecutiveLocalOriginFailure,
    /// Success rate below the cluster's mean by the stdev factor.
    SuccessRate,
    /// The same for local-origin outcomes (split errors).
    LocalOriginSuccessRate,
    /// Failure percentage at the threshold or above.
    FailurePercentage,
    /// The same for local-origin outcomes (split errors).
    LocalOriginFailurePercentage,
}

impl EjectReason {
    /// Every reason, in label order.
    pub(crate) const ALL: [EjectReason; 7] = [
        EjectReason::Consecutive5xx,
        EjectReason::ConsecutiveGatewayFailure,
        EjectReason::ConsecutiveLocalOriginFailure,
        EjectReason::SuccessRate,
        EjectReason::LocalOriginSuccessRate,
        EjectReason::FailurePercentage,
        EjectReason::LocalOriginFailurePercentage,
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            EjectReason::Consecutive5xx => "consecutive_5xx",
            EjectReason::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            EjectReason::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
            EjectReason::SuccessRate => "success_rate",
            EjectReason::LocalOriginSuccessRate => "local_origin_success_rate",
            EjectReason::FailurePercentage => "failure_percentage",
            EjectReason::LocalOriginFailurePercentage => "local_origin_failure_percentage",
        }
    }
}

/// Which limit a request or retry ran into (the `breaker` label); the
/// discriminant indexes the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breaker {
    /// `max_requests`.
    Requests,
    /// `max_pending_requests` (with `max_connections` reached).
    Pending,
    /// `max_retries` or the retry budget.
    Retries,
}

impl Breaker {
    const ALL: [Breaker; 3] = [Breaker::Requests, Breaker::Pending, Breaker::Retries];

    fn label(self) -> &'static str {
        match self {
            Breaker::Requests => "max_requests",
            Breaker::Pending => "max_pending_requests",
            Breaker::Retries => "retries",
        }
    }
}

/// A cluster's health and overload metric handles.
pub(crate) struct ClusterMetrics {
    ejections: [IntCounter; 7],
    /// Endpoints ejected now.
    pub(crate) ejected: IntGauge,
    /// Health-check transitions to healthy and to unhealthy.
    hc_transitions: [IntCounter; 2],
    overflow: [IntCounter; 3],
}

impl ClusterMetrics {
    fn new(m: &Metrics, cluster: &str) -> Self {
        let ejected = m.ejected(cluster);
        ejected.set(0);
        Self {
            ejections: EjectReason::ALL.map(|r| m.ejections(cluster, r.label())),
            ejected,
            hc_transitions: [
                m.hc_transitions(cluster, "healthy"),
                m.hc_transitions(cluster, "unhealthy"),
            ],
            overflow: Breaker::ALL.map(|b| m.overflow(cluster, b.label())),
        }
    }

    /// Counts an ejection.
    pub(crate) fn ejection(&self, r: EjectReason) {
        self.ejections[r as usize].inc();
    }

    /// Counts a health-check transition.
    pub(crate) fn hc_transition(&self, healthy: bool) {
        self.hc_transitions[usize::from(!healthy)].inc();
    }

    /// Counts a request or retry refused by a breaker.
    pub(crate) fn overflowed(&self, b: Breaker) {
        self.overflow[b as usize].inc();
    }
}

/// State of one cluster (by name) that survives configuration changes.
pub(crate) struct ClusterShared {
    /// Bumped on every change of an endpoint's usability.
    generation: AtomicU64,
    /// The round-robin sequence.
    pub(crate) rr: AtomicU64,
    /// Requests in flight (first try to end of response).
    active_requests: AtomicU32,
    /// Retries in flight.
    active_retries: AtomicU32,
    /// Connections in use by tries in flight.
    connections: AtomicU32,
    /// Requests waiting for a connection.
    pending: AtomicU32,
    /// Signalled when a connection is released.
    released: Notify,
    /// The retry reserve, in retries.
    reserve: Timed,
    /// Endpoints ejected now.
    ejected: AtomicU32,
    /// `now_ms` of the next outlier review.
    pub(crate) next_review_ms: AtomicU64,
    /// Metric handles.
    pub(crate) metrics: ClusterMetrics,
}

impl ClusterShared {
    /// Fresh state for cluster `name`.
    pub(crate) fn new(metrics: &Metrics, name: &str) -> Self {
        Self {
            generation: AtomicU64::new(0),
            rr: AtomicU64::new(0),
            active_requests: AtomicU32::new(0),
            active_retries: AtomicU32::new(0),
            connections: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            released: Notify::new(),
            reserve: Timed::default(),
            ejected: AtomicU32::new(0),
            next_review_ms: AtomicU64::new(0),
            metrics: ClusterMetrics::new(metrics, name),
        }
    }

    /// The availability generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks that an endpoint's usability changed.
    pub(crate) fn availability_changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Requests in flight.
    pub(crate) fn active_requests(&self) -> u32 {
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Admits a request unless `max` are in flight.
    pub(crate) fn admit_request(self: &Arc<Self>, max: u32) -> Option<RequestGuard> {
        take(&self.active_requests, max).then(|| RequestGuard(Arc::clone(self)))
    }

    /// Admits a retry while fewer than `max` are in flight, or, with a
    /// `reserve`, when the reserve has a token to spend.
    pub(crate) fn admit_retry(self: &Arc<Self>, max: u32, reserve: bool) -> Option<RetryGuard> {
        if take(&self.active_retries, max) {
            return Some(RetryGuard(Arc::clone(self)));
        }
        if reserve && self.update_reserve(-1.0) {
            self.active_retries.fetch_add(1, Ordering::AcqRel);
            return Some(RetryGuard(Arc::clone(self)));
        }
        None
    }

    /// Puts `share` of a token into the retry reserve (one per request, the
    /// budget's share of it).
    pub(crate) fn deposit(&self, share: f64) {
        self.update_reserve(share);
    }

    /// Adds `delta` tokens to the retry reserve, which forgets what it holds
    /// with a time constant of [`RESERVE_TTL_S`] (so it holds about the
    /// budget's share of the requests of the last ten seconds); a withdrawal
    /// fails, changing nothing, when less than a token is left.
    fn update_reserve(&self, delta: f64) -> bool {
        self.reserve.update(|old, elapsed_s| {
            old.unwrap_or(0.0) * (-elapsed_s / RESERVE_TTL_S).exp() + delta
        })
    }

    /// A connection for one try: at once while fewer than `max` are in use;
    /// else waits (as one of at most `max_pending`) until one is released or
    /// `deadline` passes.
    pub(crate) async fn connection(
        self: &Arc<Self>,
        max: u32,
        max_pending: u32,
        deadline: Instant,
    ) -> Result<ConnectionGuard, Wait> {
        if take(&self.connections, max) {
            return Ok(ConnectionGuard(Arc::clone(self)));
        }
        if !take(&self.pending, max_pending) {
            return Err(Wait::Overflow);
        }
        let _pending = PendingGuard(self);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if take(&self.connections, max) {
                return Ok(ConnectionGuard(Arc::clone(self)));
            }
            if tokio::time::timeout_at(deadline.into(), released)
                .await
                .is_err()
            {
                return Err(Wait::TimedOut);
            }
        }
    }

    /// Counts an ejection unless `cap` endpoints are ejected already.
    pub(crate) fn admit_ejection(&self, cap: u32) -> bool {
        let ok = take(&self.ejected, cap);
        if ok {
            self.metrics.ejected.inc();
        }
        ok
    }

    /// Counts an ejection's end.
    pub(crate) fn ejection_ended(&self) {
        let _ = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
        self.metrics.ejected.dec();
    }

    /// The cluster's counters for the admin API.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "active_requests": self.active_requests(),
            "active_retries": self.active_retries.load(Ordering::Relaxed),
            "connections_in_use": self.connections.load(Ordering::Relaxed),
            "pending_requests": self.pending.load(Ordering::Relaxed),
            "ejected_endpoints": self.ejected.load(Ordering::Relaxed),
        })
    }
}

/// How long (time constant, seconds) the retry reserve remembers deposits.
const RESERVE_TTL_S: f64 = 10.0;

/// Why no connection was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Too many requests wait already.
    Overflow,
    /// The deadline passed while waiting.
    TimedOut,
}

/// Increments `counter` unless it is at `max` already.
fn take(counter: &AtomicU32, max: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// A request counted in flight against `max_requests`.
pub(crate) struct RequestGuard(Arc<ClusterShared>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A retry counted in flight against the retry limit.
pub(crate) struct RetryGuard(Arc<ClusterShared>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection in use against `max_connections`.
pub(crate) struct ConnectionGuard(Arc<ClusterShared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_one();
    }
}

struct PendingGuard<'a>(&'a ClusterShared);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn limits_admit_up_to_the_maximum_and_release_on_drop() {
        let m = Metrics::new(&prometheus::Registry::new()).unwrap();
        let s = Arc::new(ClusterShared::new(&m, "c"));
        let a = s.admit_request(2).unwrap();
        let _b = s.admit_request(2).unwrap();
        assert!(s.admit_request(2).is_none());
        drop(a);
        assert!(s.admit_request(2).is_some());

        let deadline = Instant::now() + Duration::from_secs(5);
        let c1 = s.connection(1, 1, deadline).await.unwrap();
        // One may wait; a second waiter overflows at once.
        let s2 = Arc::clone(&s);
        let waiter = tokio::spawn(async move { s2.connection(1, 1, deadline).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            s.connection(1, 1, deadline).await.err(),
            Some(Wait::Overflow)
        );
        drop(c1);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        // Retries: two in flight at most; the reserve lends one more per
        // token, and deposits build tokens.
        let r1 = s.admit_retry(1, true).unwrap();
        assert!(s.admit_retry(1, true).is_none(), "the reserve is empty");
        // Six fifths: a token even after a little decay.
        for _ in 0..6 {
            s.deposit(0.2);
        }
        let r2 = s.admit_retry(1, true).expect("one token saved");
        assert!(s.admit_retry(1, true).is_none());
        assert!(s.admit_retry(1, false).is_none());
        drop((r1, r2));
        assert!(s.admit_retry(1, false).is_some());

        let soon = Instant::now() + Duration::from_millis(30);
        let _c = s.connection(1, 0, soon).await.unwrap();
        assert_eq!(s.connection(1, 1, soon).await.err(), Some(Wait::TimedOut));
    }
}
