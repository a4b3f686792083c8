//! Owns what a matched route does: forward (targets, rewrites, timeouts,
//! retries) or answer directly, and the header edits applied on the way.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cluster::Target;

/// What a route does.
#[derive(Debug)]
pub enum RouteAction {
    /// Send upstream.
    Forward(Box<Forward>),
    /// Answer from the proxy.
    Direct(DirectResponse),
}

/// Forwarding settings of a route.
#[derive(Debug)]
pub struct Forward {
    /// Target clusters with weights and subsets.
    pub targets: Vec<Target>,
    /// Sum of target weights.
    pub total_weight: u64,
    /// Path prefix replacement: `(matched prefix, replacement)`; for exact and
    /// regex routes the whole path is replaced.
    pub prefix_rewrite: Option<(Box<str>, Box<str>)>,
    /// Host sent upstream.
    pub host_rewrite: Option<HeaderValue>,
    /// Deadline from request start to response headers, across tries.
    pub timeout: Duration,
    /// Longest silence on the upstream stream.
    pub idle_timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
}

impl Forward {
    /// Index of a target picked by weight (one draw per request).
    pub fn pick_target(&self) -> usize {
        if self.targets.len() == 1 {
            return 0;
        }
        let mut r = fastrand::u64(0..self.total_weight.max(1));
        for (i, t) in self.targets.iter().enumerate() {
            let w = u64::from(t.weight);
            if r < w {
                return i;
            }
            r -= w;
        }
        self.targets.len() - 1
    }
}

/// A response produced by the proxy.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    /// Status code.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
    /// Content-Type when there is a body.
    pub content_type: Option<HeaderValue>,
}

/// Conditions under which a try is retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// TCP/TLS connect failed or timed out.
    pub connect_failure: bool,
    /// HTTP/2 REFUSED_STREAM.
    pub refused_stream: bool,
    /// Connection reset or closed, or no response headers in time.
    pub reset: bool,
    /// Any 5xx status.
    pub server_error: bool,
    /// 502, 503, 504.
    pub gateway_error: bool,
    /// The statuses listed in `RetryPolicy::statuses`.
    pub status_codes: bool,
}

/// A route's retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub num_retries: u32,
    /// Failure conditions retried.
    pub on: RetryOn,
    /// Statuses retried.
    pub statuses: Arc<[u16]>,
    /// Bound on each try's wait for response headers.
    pub per_try_timeout: Option<Duration>,
    /// Backoff base.
    pub base_interval: Duration,
    /// Backoff cap.
    pub max_interval: Duration,
    /// Retry POST/PATCH and other non-idempotent methods too.
    pub non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            num_retries: 0,
            on: RetryOn::default(),
            statuses: Arc::from([]),
            per_try_timeout: None,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            non_idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// Whether a response with `status` may be retried.
    pub fn retries_status(&self, status: u16) -> bool {
        (self.on.status_codes && self.statuses.contains(&status))
            || (self.on.server_error && (500..600).contains(&status))
            || (self.on.gateway_error && matches!(status, 502..=504))
    }

    /// Fully jittered exponential backoff before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_interval
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let cap = exp.min(self.max_interval);
        let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// One header edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Remove every value.
    Remove(HeaderName),
    /// Replace every value.
    Set(HeaderName, HeaderValue),
    /// Append a value.
    Add(HeaderName, HeaderValue),
}

/// Header edits in the order they apply. Each configured block contributes
/// its removes, then sets, then adds; blocks apply virtual host first, then
/// route, so the route has the last word.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutation {
    /// The edits, in order.
    pub ops: Vec<HeaderOp>,
}

impl HeaderMutation {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends `other`'s edits after these.
    pub fn extend(&mut self, other: &HeaderMutation) {
        self.ops.extend(other.ops.iter().cloned());
    }

    /// Applies the edits in order to `headers` (a `HeaderMap`, or the data
    /// plane's request and response heads).
    pub fn apply<H: EditHeaders>(&self, headers: &mut H) -> Result<(), H::Error> {
        for op in &self.ops {
            match op {
                HeaderOp::Remove(name) => headers.remove(name),
                HeaderOp::Set(name, value) => headers.set(name, value)?,
                HeaderOp::Add(name, value) => headers.add(name, value)?,
            }
        }
        Ok(())
    }
}

/// Headers that take [`HeaderMutation`] edits.
pub trait EditHeaders {
    /// Why an edit failed.
    type Error;
    /// Removes every value of `name`.
    fn remove(&mut self, name: &HeaderName);
    /// Replaces every value of `name` with `value`.
    fn set(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Self::Error>;
    /// Appends `value` to `name`.
    fn add(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Self::Error>;
}

impl EditHeaders for HeaderMap {
    type Error = std::convert::Infallible;

    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }

    fn set(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Self::Error> {
        self.insert(name.clone(), value.clone());
        Ok(())
    }

    fn add(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), Self::Error> {
        self.append(name.clone(), value.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = RetryPolicy::default();
        for retry in 1..20 {
            let b = p.backoff(retry);
            assert!(b <= Duration::from_millis(250), "retry {retry}: {b:?}");
        }
        assert!(p.backoff(1) <= Duration::from_millis(25));
        let spread: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(spread.len() > 10, "backoff is not jittered: {spread:?}");
    }

    #[test]
    fn status_conditions() {
        let p = RetryPolicy {
            statuses: Arc::from([429u16]),
            on: RetryOn {
                gateway_error: true,
                status_codes: true,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(p.retries_status(429) && p.retries_status(503));
        assert!(!p.retries_status(500) && !p.retries_status(200));
        // Listed statuses apply only with the retriable-status-codes condition.
        let off = RetryPolicy {
            on: RetryOn::default(),
            ..p
        };
        assert!(!off.retries_status(429));
    }

    #[test]
    fn mutation_order() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        let vhost = HeaderMutation {
            ops: vec![
                HeaderOp::Remove(HeaderName::from_static("x-gone")),
                HeaderOp::Set(
                    HeaderName::from_static("x-a"),
                    HeaderValue::from_static("new"),
                ),
                HeaderOp::Add(
                    HeaderName::from_static("x-a"),
                    HeaderValue::from_static("more"),
                ),
                HeaderOp::Set(
                    HeaderName::from_static("x-b"),
                    HeaderValue::from_static("host"),
                ),
            ],
        };
        let route = HeaderMutation {
            ops: vec![HeaderOp::Remove(HeaderName::from_static("x-b"))],
        };
        let mut m = vhost.clone();
        m.extend(&route);
        let Ok(()) = m.apply(&mut h);
        let vals: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(vals, ["new", "more"]);
        assert!(!h.contains_key("x-gone"));
        assert!(
            !h.contains_key("x-b"),
            "the route's remove comes after the host's set"
        );
    }
}
