//! Shared per-server state of an [`Upstream`](super::Upstream): counters, the bounded
//! request log, the cancellation record and the per-request [`Tracker`] that feeds it,
//! and the per-connection record of received bytes ([`WireLog`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Version};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::wire::WireLog;

/// How many requests [`State::log`] keeps (the oldest are dropped first).
const LOG_CAPACITY: usize = 1000;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Request method.
    pub method: Method,
    /// Path and query exactly as received (`/sse?n=3`).
    pub path_and_query: String,
    /// Protocol version the request arrived with.
    pub version: Version,
    /// All request headers (for HTTP/2, `:authority` is not a header; see `authority`).
    pub headers: HeaderMap,
    /// URI authority (HTTP/2 `:authority`, or an absolute-form HTTP/1.1 target), if any.
    pub authority: Option<String>,
    /// Id of the upstream connection it arrived on (1, 2, ... in accept order).
    pub connection: u64,
    /// When the upstream started handling it.
    pub at: Instant,
}

impl RecordedRequest {
    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
    }
}

/// A response that did not finish because the peer went away (or the upstream shut down).
#[derive(Debug, Clone)]
pub struct Cancellation {
    /// Request path without the query (`/hang`).
    pub path: String,
    /// Request path and query.
    pub path_and_query: String,
    /// Protocol version of the request.
    pub version: Version,
    /// Id of the upstream connection the request arrived on.
    pub connection: u64,
    /// When the request arrived.
    pub started: Instant,
    /// When the upstream noticed the request/stream was gone (the handler or body was dropped).
    pub at: Instant,
    /// Whether response headers had been handed to hyper (false: dropped while pending).
    pub headers_sent: bool,
    /// Response body bytes handed to hyper for this response before it was dropped.
    pub body_bytes: u64,
}

/// Server-wide state shared by the accept loop, connections, handlers and bodies.
pub(crate) struct State {
    pub(crate) name: String,
    pub(crate) requests: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    log: Mutex<VecDeque<RecordedRequest>>,
    cancellations: Mutex<Vec<Cancellation>>,
    pub(crate) flaky: Mutex<HashMap<String, u64>>,
    /// When each event of a tagged `/sse?tag=T` stream was handed to hyper.
    pub(crate) sse_sent: Mutex<HashMap<String, Vec<Instant>>>,
    /// Bumped on every logged request and every cancellation, so waiters never miss one.
    changed: watch::Sender<u64>,
    /// The bytes each connection read from its peer (after TLS), in accept order.
    pub(crate) wire: Arc<WireLog>,
    /// Injected on every request but `/healthz`.
    pub(crate) fault: Mutex<Fault>,
    /// What `/healthz` answers.
    pub(crate) health_status: std::sync::atomic::AtomicU16,
}

/// A fault injected into every request of an upstream (but its `/healthz`):
/// a delay before the behaviour runs, then optionally a fixed status instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fault {
    /// Added before answering.
    pub delay: std::time::Duration,
    /// Answer this status (with a small JSON body) instead of the behaviour.
    pub status: Option<u16>,
}

impl State {
    /// Fresh state for a server called `name`.
    pub(crate) fn new(name: String) -> Arc<State> {
        Arc::new(State {
            name,
            requests: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            log: Mutex::new(VecDeque::with_capacity(64)),
            cancellations: Mutex::new(Vec::new()),
            flaky: Mutex::new(HashMap::new()),
            sse_sent: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            wire: Arc::new(WireLog::new()),
            fault: Mutex::new(Fault::default()),
            health_status: std::sync::atomic::AtomicU16::new(200),
        })
    }

    /// Appends to the bounded request log and counts the request.
    pub(crate) fn record(&self, req: RecordedRequest) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        {
            let mut log = self.log.lock();
            if log.len() == LOG_CAPACITY {
                log.pop_front();
            }
            log.push_back(req);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// A copy of the request log, oldest first.
    pub(crate) fn log(&self) -> Vec<RecordedRequest> {
        self.log.lock().iter().cloned().collect()
    }

    /// A copy of all cancellations, in the order they were noticed.
    pub(crate) fn cancellations(&self) -> Vec<Cancellation> {
        self.cancellations.lock().clone()
    }

    fn push_cancellation(&self, c: Cancellation) {
        self.cancellations.lock().push(c);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Waits until `find` returns something, re-checking after every state change.
    pub(crate) async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut find: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribe before the first check so a change in between is not missed.
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(found) = find(self) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // Timed out (or, impossibly, the sender is gone): one last look.
                _ => return find(self),
            }
        }
    }

    /// The first logged request with this path (no query) that arrived at or after `since`.
    pub(crate) fn find_request(&self, path: &str, since: Instant) -> Option<RecordedRequest> {
        self.log
            .lock()
            .iter()
            .find(|r| r.path() == path && r.at >= since)
            .cloned()
    }

    /// The first cancellation with this path (no query) noticed at or after `since`.
    pub(crate) fn find_cancellation(&self, path: &str, since: Instant) -> Option<Cancellation> {
        self.cancellations
            .lock()
            .iter()
            .find(|c| c.path == path && c.at >= since)
            .cloned()
    }
}

/// Follows one request from arrival to the end of its response body.
///
/// Dropped without [`Tracker::complete`] means the peer went away (or the server was shut
/// down) while the handler was pending or the body was still streaming: that is recorded
/// as a [`Cancellation`] at the moment of the drop.
pub(crate) struct Tracker {
    state: Arc<State>,
    path_and_query: String,
    version: Version,
    connection: u64,
    started: Instant,
    headers_sent: bool,
    body_bytes: u64,
    done: bool,
}

impl Tracker {
    /// Starts tracking a request; counts it as in flight until dropped.
    pub(crate) fn new(
        state: Arc<State>,
        path_and_query: String,
        version: Version,
        connection: u64,
    ) -> Tracker {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Tracker {
            state,
            path_and_query,
            version,
            connection,
            started: Instant::now(),
            headers_sent: false,
            body_bytes: 0,
            done: false,
        }
    }

    /// Marks the response as fully handed over (or deliberately aborted): no cancellation.
    pub(crate) fn complete(&mut self) {
        self.done = true;
    }

    /// Notes that hyper has started pulling the body, so the headers are out.
    pub(crate) fn headers_sent(&mut self) {
        self.headers_sent = true;
    }

    /// Counts body bytes handed to hyper (per response and server-wide); returns the
    /// response's total so far.
    pub(crate) fn sent(&mut self, n: usize) -> u64 {
        self.body_bytes += n as u64;
        self.state.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        self.body_bytes
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.done {
            return;
        }
        let path = self
            .path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
            .to_owned();
        self.state.push_cancellation(Cancellation {
            path,
            path_and_query: std::mem::take(&mut self.path_and_query),
            version: self.version,
            connection: self.connection,
            started: self.started,
            at: Instant::now(),
            headers_sent: self.headers_sent,
            body_bytes: self.body_bytes,
        });
    }
}
