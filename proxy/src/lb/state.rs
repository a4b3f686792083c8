//! Owns per-endpoint runtime state: what happened on each attempt (requests in
//! flight, attempts, failures, latency to response headers, the peak-EWMA
//! estimate, outlier counters) and whether the endpoint is ejected or failing
//! its active health checks. It lives outside the immutable configuration and
//! is carried across configuration changes that keep the endpoint. Balancing
//! policies, outlier detection and the admin API read it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::Histogram;

/// Weight of the newest sample in the displayed latency average, in 1/1024ths.
const EWMA_NEW: u64 = 256;

/// Milliseconds on a monotonic clock, never 0 (0 can mean "never"). On
/// Linux the coarse clock (a few ms of resolution, a fraction of the cost
/// of a precise read): pickers read it on every pick.
#[cfg(target_os = "linux")]
pub(crate) fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64).wrapping_mul(1000) + (t.tv_nsec as u64) / 1_000_000 + 1
}

/// Milliseconds since the process's first use of this clock, never 0.
#[cfg(not(target_os = "linux"))]
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

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
    /// Whether the attempt failed (a 5xx, or a local-origin failure).
    pub(crate) fn failed(self) -> bool {
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
    /// Displayed moving average of the time to response headers, in µs (0: none yet).
    latency_ewma_us: AtomicU64,
    /// Peak-EWMA estimate in µs.
    peak: Timed,
    /// Last reported ORCA utilization (f32 bits; 0 = none).
    orca: AtomicU32,
    /// Outlier detection counters.
    pub(crate) outlier: OutlierCounters,
    /// Ejected by outlier detection until this `now_ms` (0: not ejected).
    pub(crate) ejected_until: AtomicU64,
    /// Ejection multiplier (Envoy's `num_ejections`): grows per ejection,
    /// shrinks per interval spent in.
    pub(crate) multiplier: AtomicU32,
    /// Ejections so far.
    pub(crate) ejections: AtomicU64,
    /// Bit `i` set: failing active health check `i` (or not checked yet).
    pub(crate) hc_failing: AtomicU32,
    /// Failing active health checks reported through the admin API.
    pub(crate) hc_last_error: parking_lot::Mutex<Option<String>>,
    /// Per-endpoint histogram of the time to response headers.
    pub(crate) latency: OnceLock<Histogram>,
    /// Bit `i` set: check `i` has not passed yet since the endpoint was
    /// added (its first pass makes it healthy at once, as in Envoy).
    pub(crate) hc_unproven: AtomicU32,
    /// The endpoint left its cluster; outlier detection leaves it alone.
    pub(crate) retired: AtomicBool,
    /// Length of the current (or last) ejection in ms.
    pub(crate) ejection_ms: AtomicU64,
}

/// Outlier detection's counters of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct OutlierCounters {
    /// 5xx (and, unless split, local-origin failures) in a row.
    pub(crate) consecutive_5xx: AtomicU32,
    /// 502/503/504 (and, unless split, local-origin failures) in a row.
    pub(crate) consecutive_gateway: AtomicU32,
    /// Local-origin failures in a row (split mode).
    pub(crate) consecutive_local: AtomicU32,
    /// This interval: successes and failures of external origin.
    pub(crate) ok: AtomicU32,
    /// See `ok`.
    pub(crate) failed: AtomicU32,
    /// This interval: local-origin successes and failures (split mode).
    pub(crate) local_ok: AtomicU32,
    /// See `local_ok`.
    pub(crate) local_failed: AtomicU32,
}

impl EndpointState {
    /// Counts an attempt as in flight until the returned guard is dropped
    /// (also when the request is cancelled).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Records how an attempt ended and, with response headers, how long they
    /// took; for peak-EWMA a failure counts as at least `peak.penalty`.
    pub(crate) fn record(&self, outcome: Outcome, latency: Option<Duration>, peak: PeakParams) {
        let failed = outcome.failed();
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
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
            if let Some(h) = self.latency.get() {
                h.observe(l.as_secs_f64());
            }
        }
        // A failure never looks faster than the penalty: a fast-failing
        // endpoint must not attract a latency-aware balancer.
        let sample = match (latency, failed) {
            (Some(l), false) => Some(l),
            (l, true) => Some(l.unwrap_or_default().max(peak.penalty)),
            (None, false) => None,
        };
        if let Some(s) = sample {
            self.observe_rtt(s.as_secs_f64() * 1e6, peak.decay_s);
        }
    }

    /// Feeds one latency sample (µs) into the peak-EWMA estimate: a sample
    /// above the (decayed) estimate replaces it; a lower one is averaged in
    /// with weight 1 − e^(−elapsed/decay) (tower's and Linkerd's PeakEwma).
    fn observe_rtt(&self, sample_us: f64, decay_s: f64) {
        self.peak.update(|old, elapsed_s| match old {
            Some(rtt) if sample_us < rtt => {
                let w = (-elapsed_s / decay_s).exp();
                rtt * w + sample_us * (1.0 - w)
            }
            _ => sample_us,
        });
    }

    /// The peak-EWMA latency estimate in µs, decayed towards zero for the
    /// time since its last sample (an idle endpoint is tried again), or
    /// `default_us` without samples.
    pub(crate) fn peak_rtt_us(&self, default_us: f64, decay_s: f64, now: u64) -> f64 {
        match self.peak.read(now) {
            None => default_us,
            Some((rtt, elapsed_s)) => rtt * (-elapsed_s / decay_s).exp(),
        }
    }

    /// Remembers the utilization an endpoint reported (ORCA).
    pub(crate) fn set_utilization(&self, u: f32) {
        self.orca
            .store(u.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// The last reported utilization (0 when none).
    pub(crate) fn utilization(&self) -> f32 {
        f32::from_bits(self.orca.load(Ordering::Relaxed))
    }

    /// Attempts in flight.
    pub(crate) fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether outlier detection has ejected the endpoint.
    pub(crate) fn ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    /// Whether the endpoint fails (or has not yet passed) an active health check.
    pub(crate) fn hc_failing(&self) -> bool {
        self.hc_failing.load(Ordering::Relaxed) != 0
    }

    /// Whether the balancer may pick the endpoint (outside panic mode).
    pub(crate) fn usable(&self) -> bool {
        !self.ejected() && !self.hc_failing()
    }

    /// The state as JSON, for the admin API (`decay_s`: the cluster's peak-EWMA decay).
    pub(crate) fn to_json(&self, decay_s: f64) -> serde_json::Value {
        let ewma = self.latency_ewma_us.load(Ordering::Relaxed);
        let until = self.ejected_until.load(Ordering::Relaxed);
        let health = if self.hc_failing() {
            "unhealthy"
        } else if until != 0 {
            "ejected"
        } else {
            "healthy"
        };
        serde_json::json!({
            "health": health,
            "ejected": until != 0,
            "ejected_for_ms": (until != 0).then(|| until.saturating_sub(now_ms())),
            "ejection_ms": (until != 0).then(|| self.ejection_ms.load(Ordering::Relaxed)),
            "ejections": self.ejections.load(Ordering::Relaxed),
            "health_check_failing": self.hc_failing(),
            "health_check_error": self.hc_last_error.lock().clone(),
            "active": self.active(),
            "attempts": self.attempts.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "consecutive_5xx": self.outlier.consecutive_5xx.load(Ordering::Relaxed),
            "latency_ewma_ms": (ewma > 0).then(|| ewma as f64 / 1000.0),
            "peak_ewma_ms": self
                .peak
                .read(now_ms())
                .map(|_| self.peak_rtt_us(0.0, decay_s, now_ms()) / 1000.0),
        })
    }
}

/// A cluster's peak-EWMA parameters, as recording needs them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeakParams {
    /// The least latency a failure counts as (the default RTT).
    pub(crate) penalty: Duration,
    /// Decay time constant in seconds.
    pub(crate) decay_s: f64,
}

/// A value that changes with time, with the time it was last set, in one
/// atomic word (f32 value, low 32 bits of `now_ms`), updated lock-free.
#[derive(Debug, Default)]
pub(crate) struct Timed(AtomicU64);

impl Timed {
    /// The value and the seconds since it was set, as of `now`; `None` if
    /// never set. A time before the stored one (another thread read the
    /// clock later) counts as no time passed.
    pub(crate) fn read(&self, now: u64) -> Option<(f64, f64)> {
        let cur = self.0.load(Ordering::Relaxed);
        (cur != 0).then(|| Self::split(cur, now))
    }

    fn split(cur: u64, now: u64) -> (f64, f64) {
        let value = f64::from(f32::from_bits((cur >> 32) as u32));
        let elapsed = (now as u32).wrapping_sub(cur as u32) as i32;
        (value, f64::from(elapsed.max(0)) / 1000.0)
    }

    /// Replaces the value with `f(old value, seconds since it was set)`;
    /// `f` returning a negative value leaves it unchanged and returns false.
    pub(crate) fn update(&self, mut f: impl FnMut(Option<f64>, f64) -> f64) -> bool {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let now = now_ms();
            let (old, elapsed) = if cur == 0 {
                (None, 0.0)
            } else {
                let (v, e) = Self::split(cur, now);
                (Some(v), e)
            };
            let next = f(old, elapsed);
            if next < 0.0 {
                return false;
            }
            // Never store 0 (it means "never set").
            let bits = u64::from((next as f32).to_bits()) << 32 | (now & 0xffff_ffff).max(1);
            match self
                .0
                .compare_exchange_weak(cur, bits, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// An attempt in flight on an endpoint; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<EndpointState>);

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
        let p = PeakParams {
            penalty: Duration::from_millis(30),
            decay_s: 10.0,
        };
        s.record(Outcome::Status(503), Some(Duration::from_millis(10)), p);
        s.record(Outcome::ConnectFailure, None, p);
        drop(a);
        assert_eq!(s.active(), 1);
        let j = s.to_json(10.0);
        assert_eq!(j["failures"], 2);
        assert_eq!(j["latency_ewma_ms"], 10.0);
        s.record(Outcome::Status(200), Some(Duration::from_millis(20)), p);
        drop(b);
        let j = s.to_json(10.0);
        assert_eq!(j["active"], 0);
        assert_eq!(j["attempts"], 2);
        assert_eq!(j["latency_ewma_ms"], 12.5);
    }

    #[test]
    fn peak_ewma_jumps_to_peaks_and_decays_when_idle() {
        let s = EndpointState::default();
        assert_eq!(s.peak_rtt_us(30_000.0, 10.0, now_ms()), 30_000.0);
        let p = PeakParams {
            penalty: Duration::from_millis(30),
            decay_s: 10.0,
        };
        s.record(Outcome::Status(200), Some(Duration::from_millis(5)), p);
        let first = s.peak_rtt_us(30_000.0, 10.0, now_ms());
        assert!((4_900.0..=5_000.0).contains(&first), "{first}");
        // A peak replaces the estimate at once.
        s.record(Outcome::Status(200), Some(Duration::from_millis(100)), p);
        assert!(s.peak_rtt_us(30_000.0, 10.0, now_ms()) > 99_000.0);
        // A fast failure counts as the penalty at least.
        let f = EndpointState::default();
        f.record(Outcome::Status(503), Some(Duration::from_micros(200)), p);
        assert!(f.peak_rtt_us(1.0, 10.0, now_ms()) > 29_000.0);
        // With a tiny decay constant the estimate fades while idle.
        std::thread::sleep(Duration::from_millis(20));
        assert!(s.peak_rtt_us(30_000.0, 0.005, now_ms()) < 5_000.0);
    }
}
