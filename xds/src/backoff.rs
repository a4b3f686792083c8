//! Reconnection delays: full-jitter exponential backoff between a base and a cap.

use std::time::Duration;

/// Full jitter: the n-th delay is uniform in `[0, min(max, base * 2^n)]`.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `max`.
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The current ceiling, before jitter.
    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay, and one step further up.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = u64::try_from(self.ceiling().as_nanos()).unwrap_or(u64::MAX);
        self.attempt = self.attempt.saturating_add(1).min(32);
        Duration::from_nanos(fastrand::u64(0..=cap))
    }

    /// Back to the first step (after a stream that worked).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(100);
        let mut b = Backoff::new(base, max);
        for _ in 0..100 {
            assert!(b.next_delay() <= max);
        }
        assert_eq!(b.ceiling(), max);
        b.reset();
        assert_eq!(b.ceiling(), base);
        assert!(b.next_delay() <= base);
        assert_eq!(b.ceiling(), base * 2);
    }

    #[test]
    fn zero_base_is_fine() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}
