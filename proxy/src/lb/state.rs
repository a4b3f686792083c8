//! Owns per-endpoint runtime state: what happened on each attempt (requests in
//! flight, attempts, failures, latency to response headers), kept outside the
//! immutable configuration and carried across configuration changes that keep
//! the endpoint. Balancing policies and outlier detection read it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Weight of the newest sample in the latency average, in 1/1024ths.
const EWMA_NEW: u64 = 256;

/// How one attempt on an endpoint ended, as far as the endpoint is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Response headers arrived with this status (5xx counts as a failure).
    Status(u16),
    /// The connection could not be established.
    ConnectFailure,
    /// The connection or stream broke after it was established.
    Reset,
    /// No response headers within the try's timeout.
    Timeout,
}

impl Outcome {
    fn failed(self) -> bool {
        match self {
            Outcome::Status(s) => s >= 500,
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout => true,
        }
    }
}

/// The runtime state of one endpoint of one cluster.
#[derive(Debug, Default)]
pub(crate) struct EndpointState {
    active: AtomicU32,
    attempts: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Moving average of the time to response headers, in µs (0: none yet).
    latency_ewma_us: AtomicU64,
}

impl EndpointState {
    /// Counts an attempt as in flight until the returned guard is dropped
    /// (also when the request is cancelled).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Records how an attempt ended and, with response headers, how long they took.
    pub(crate) fn record(&self, outcome: Outcome, latency: Option<Duration>) {
        if outcome.failed() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        } else {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if let Some(l) = latency {
            let sample = u64::try_from(l.as_micros()).unwrap_or(u64::MAX).max(1);
            // A lost race between two updates loses one sample, nothing more.
            let old = self.latency_ewma_us.load(Ordering::Relaxed);
            let new = if old == 0 {
                sample
            } else {
                (old * (1024 - EWMA_NEW) + sample * EWMA_NEW) / 1024
            };
            self.latency_ewma_us.store(new, Ordering::Relaxed);
        }
    }

    /// Attempts in flight.
    pub(crate) fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// The state as JSON, for the admin API.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let ewma = self.latency_ewma_us.load(Ordering::Relaxed);
        serde_json::json!({
            "active": self.active(),
            "attempts": self.attempts.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "consecutive_failures": self.consecutive_failures.load(Ordering::Relaxed),
            "latency_ewma_ms": (ewma > 0).then(|| ewma as f64 / 1000.0),
        })
    }
}

/// An attempt in flight on an endpoint; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<EndpointState>);

impl InFlight {
    /// The endpoint's state.
    pub(crate) fn state(&self) -> &EndpointState {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_counts_in_flight_and_outcomes_count_failures() {
        let s = Arc::new(EndpointState::default());
        let a = s.begin();
        let b = s.begin();
        assert_eq!(s.active(), 2);
        a.state()
            .record(Outcome::Status(503), Some(Duration::from_millis(10)));
        a.state().record(Outcome::ConnectFailure, None);
        drop(a);
        assert_eq!(s.active(), 1);
        let j = s.to_json();
        assert_eq!(j["failures"], 2);
        assert_eq!(j["consecutive_failures"], 2);
        assert_eq!(j["latency_ewma_ms"], 10.0);
        b.state()
            .record(Outcome::Status(200), Some(Duration::from_millis(20)));
        drop(b);
        let j = s.to_json();
        assert_eq!(j["active"], 0);
        assert_eq!(j["attempts"], 2);
        assert_eq!(j["consecutive_failures"], 0);
        assert_eq!(j["latency_ewma_ms"], 12.5);
    }
}
