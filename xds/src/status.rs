//! The client's observable state: connection, reconnects, and per type the
//! last ACKed version, last nonce, last NACK; plus the "every type ACKed at
//! least once" readiness watch. Cheap to clone and read from any thread.

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::Variant;

/// Per-type state of a client subscription.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeStatus {
    /// The subscribed type URL.
    pub type_url: String,
    /// The last ACKed `version_info` (SotW) or `system_version_info` (delta).
    pub version_info: String,
    /// The nonce of the last response received for this type.
    pub last_nonce: String,
    /// When the last ACK was sent.
    pub last_ack_at: Option<SystemTime>,
    /// The `error_detail` message of the last NACK sent (kept after later ACKs; compare times).
    pub last_nack: Option<String>,
    /// When the last NACK was sent.
    pub nack_at: Option<SystemTime>,
    /// Resources held after the last ACK (SotW: in the last ACKed response; delta: tracked names).
    pub resources: usize,
    /// ACKs sent since the client started.
    pub acks: u64,
    /// NACKs sent since the client started.
    pub nacks: u64,
}

/// A plain copy of the client's state, for rendering.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusSnapshot {
    /// The control-plane address.
    pub server: String,
    /// SotW or delta.
    pub variant: Variant,
    /// Whether a stream is currently open.
    pub connected: bool,
    /// When the current (or last) stream was opened.
    pub connected_at: Option<SystemTime>,
    /// Streams that ended (error, close, timeout) or connection attempts that failed; each is retried.
    pub reconnects: u64,
    /// Why the last stream ended or the last connection attempt failed.
    pub last_error: Option<String>,
    /// Responses ignored because their type was not subscribed.
    pub ignored_responses: u64,
    /// Whether every subscribed type has been ACKed at least once.
    pub ready: bool,
    /// Per type, in subscription order.
    pub types: Vec<TypeStatus>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<StatusSnapshot>,
    ready: watch::Sender<bool>,
}

/// A shared, cheap-to-clone handle on a client's state.
#[derive(Clone, Debug)]
pub struct ClientStatus {
    inner: Arc<Inner>,
}

impl ClientStatus {
    /// A fresh status for a client of `server` subscribing to `types`.
    pub(crate) fn new(server: &str, variant: Variant, types: &[String]) -> Self {
        let snapshot = StatusSnapshot {
            server: server.to_string(),
            variant,
            connected: false,
            connected_at: None,
            reconnects: 0,
            last_error: None,
            ignored_responses: 0,
            ready: types.is_empty(),
            types: types
                .iter()
                .map(|t| TypeStatus {
                    type_url: t.clone(),
                    ..TypeStatus::default()
                })
                .collect(),
        };
        let (ready, _) = watch::channel(snapshot.ready);
        ClientStatus {
            inner: Arc::new(Inner {
                state: Mutex::new(snapshot),
                ready,
            }),
        }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.inner.state.lock().clone()
    }

    /// The state of one type, if subscribed.
    pub fn type_status(&self, type_url: &str) -> Option<TypeStatus> {
        self.inner
            .state
            .lock()
            .types
            .iter()
            .find(|t| t.type_url == type_url)
            .cloned()
    }

    /// Whether every subscribed type has been ACKed at least once.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// A watch that flips to `true` once every subscribed type has been ACKed
    /// at least once (it never flips back).
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    /// Waits until every subscribed type has been ACKed at least once.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready();
        // The sender lives in `self`, so this only ends with `true`.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        let mut s = self.inner.state.lock();
        s.connected = connected;
        if connected {
            s.connected_at = Some(SystemTime::now());
        }
    }

    pub(crate) fn stream_ended(&self, error: String) {
        let mut s = self.inner.state.lock();
        s.connected = false;
        s.reconnects = s.reconnects.saturating_add(1);
        s.last_error = Some(error);
    }

    pub(crate) fn ignored(&self) {
        let mut s = self.inner.state.lock();
        s.ignored_responses = s.ignored_responses.saturating_add(1);
    }

    pub(crate) fn acked(&self, type_url: &str, version: &str, nonce: &str, resources: usize) {
        let ready = {
            let mut s = self.inner.state.lock();
            if let Some(t) = s.types.iter_mut().find(|t| t.type_url == type_url) {
                t.version_info = version.to_string();
                t.last_nonce = nonce.to_string();
                t.last_ack_at = Some(SystemTime::now());
                t.resources = resources;
                t.acks = t.acks.saturating_add(1);
            }
            let ready = s.types.iter().all(|t| t.last_ack_at.is_some());
            s.ready |= ready;
            s.ready
        };
        if ready && !*self.inner.ready.borrow() {
            self.inner.ready.send_replace(true);
        }
    }

    pub(crate) fn nacked(&self, type_url: &str, nonce: &str, detail: &str) {
        let mut s = self.inner.state.lock();
        if let Some(t) = s.types.iter_mut().find(|t| t.type_url == type_url) {
            t.last_nonce = nonce.to_string();
            t.last_nack = Some(detail.to_string());
            t.nack_at = Some(SystemTime::now());
            t.nacks = t.nacks.saturating_add(1);
        }
    }
}
