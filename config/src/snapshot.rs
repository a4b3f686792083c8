//! Owns `Snapshot`, the immutable compiled configuration that the data plane
//! serves from, and its process-level parts (listeners, admin, runtime).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cluster::Cluster;
use crate::error::ConfigError;
use crate::proto;
use crate::request::{Cidr, HttpLimits, PathOptions};
use crate::route::RouteTable;

/// A compiled, immutable configuration. Requests hold an `Arc<Snapshot>` for
/// their whole life, so a swap never changes a request in flight.
#[derive(Debug)]
pub struct Snapshot {
    /// Content hash of the configuration, as hex.
    pub version: Arc<str>,
    /// When it was compiled.
    pub loaded_at: SystemTime,
    /// Downstream listeners.
    pub listeners: Vec<Listener>,
    /// Route tables; listeners refer to them by index.
    pub route_tables: Vec<RouteTable>,
    /// Clusters; route targets refer to them by index.
    pub clusters: Vec<Arc<Cluster>>,
    /// Admin and logging.
    pub admin: AdminSettings,
    /// Process settings.
    pub runtime: RuntimeSettings,
    /// The configuration it was compiled from, for `/config_dump`.
    pub source: proto::Bootstrap,
}

impl Snapshot {
    /// Why `next` cannot replace `self` without a restart (a changed socket,
    /// ALPN, process settings or log format), one error per field; empty when it can.
    pub fn restart_needed_for(&self, next: &Snapshot) -> Vec<ConfigError> {
        let mut out = Vec::new();
        if self.listeners.len() != next.listeners.len() {
            out.push(ConfigError::new(
                "listeners",
                format!(
                    "the number of listeners changed from {} to {}; listener sockets change only on restart",
                    self.listeners.len(),
                    next.listeners.len()
                ),
            ));
            return out;
        }
        for (i, (a, b)) in self.listeners.iter().zip(&next.listeners).enumerate() {
            if a.name != b.name
                || a.address != b.address
                || a.protocols != b.protocols
                || a.tls.is_some() != b.tls.is_some()
            {
                out.push(ConfigError::new(
                    format!("listeners[{i}]"),
                    format!(
                        "listener `{}` ({}) changed its name, address, protocols or TLS; listener sockets change only on restart",
                        a.name, a.address
                    ),
                ));
            }
        }
        for (i, (a, b)) in self.listeners.iter().zip(&next.listeners).enumerate() {
            if let (Some(ta), Some(tb)) = (&a.tls, &b.tls) {
                if ta.alpn != tb.alpn {
                    out.push(ConfigError::new(
                        format!("listeners[{i}].tls.alpn"),
                        "ALPN is fixed when the listener starts; it changes only on restart",
                    ));
                }
            }
        }
        if self.runtime.worker_threads != next.runtime.worker_threads
            || self.runtime.drain_timeout != next.runtime.drain_timeout
        {
            out.push(ConfigError::new(
                "runtime",
                "process settings change only on restart",
            ));
        }
        if self.admin.log_queue_lines != next.admin.log_queue_lines {
            out.push(ConfigError::new(
                "admin.access_log.queue_lines",
                "the log queue is set when the process starts; it changes only on restart",
            ));
        }
        if self.admin.log_format != next.admin.log_format {
            out.push(ConfigError::new(
                "admin.access_log.format",
                "the log format is set when the process starts; it changes only on restart",
            ));
        }
        if self.admin.address != next.admin.address {
            out.push(ConfigError::new(
                "admin.address",
                format!(
                    "changed from {} to {}; the admin socket changes only on restart",
                    self.admin.address, next.admin.address
                ),
            ));
        }
        out
    }
}

/// Plaintext protocols of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    /// HTTP/1.x.
    pub http1: bool,
    /// HTTP/2 prior knowledge.
    pub h2c: bool,
}

/// TLS on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// PEM certificate chain.
    pub cert_file: Arc<str>,
    /// PEM private key.
    pub key_file: Arc<str>,
    /// ALPN offered, in order.
    pub alpn: Vec<Arc<str>>,
}

/// A downstream listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique name.
    pub name: Arc<str>,
    /// Bound address.
    pub address: SocketAddr,
    /// Plaintext protocols.
    pub protocols: Protocols,
    /// TLS, if terminated here.
    pub tls: Option<ListenerTls>,
    /// Index of its route table.
    pub route_table: usize,
    /// How requests are checked and annotated before routing.
    pub http: ListenerHttp,
}

/// Request handling of a listener: limits, paths, forwarding headers, request
/// ids and error detail. Read per request, so a reload changes it at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerHttp {
    /// Head and body limits.
    pub limits: HttpLimits,
    /// Path normalization.
    pub paths: PathOptions,
    /// Forwarding headers and the trusted client address.
    pub forwarding: Forwarding,
    /// Keep a client's `x-request-id` even from untrusted peers.
    pub preserve_external_request_id: bool,
    /// What Corridor's own error responses reveal.
    pub error_detail: ErrorDetail,
}

impl Default for ListenerHttp {
    fn default() -> Self {
        Self {
            limits: HttpLimits::default(),
            paths: PathOptions::default(),
            forwarding: Forwarding::default(),
            preserve_external_request_id: false,
            error_detail: ErrorDetail::Full,
        }
    }
}

/// How forwarding headers are treated on a listener.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Forwarding {
    /// What is believed and what is sent upstream.
    pub mode: ForwardingMode,
    /// Peers whose forwarding headers and request ids are believed.
    pub trusted: Arc<[Cidr]>,
    /// Most X-Forwarded-For entries walked past in `Trusted` mode; 0 is no limit.
    pub trusted_hops: u32,
}

impl Forwarding {
    /// Whether `peer` is one of the trusted proxies.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }
}

/// Forwarding header modes (see `corridor.v1.Forwarding.Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardingMode {
    /// Keep the client's headers, append the peer; the client is the peer.
    #[default]
    Append,
    /// Believe X-Forwarded-For from trusted peers; others get `Replace`.
    Trusted,
    /// Drop the client's headers and send Corridor's own.
    Replace,
    /// Drop them and send none.
    Strip,
}

/// What Corridor's error bodies reveal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDetail {
    /// Type, message and request id.
    Full,
    /// Type and request id only.
    Minimal,
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable key=value.
    Text,
    /// One JSON object per line.
    Json,
}

/// Admin listener and logging.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Admin listener address.
    pub address: SocketAddr,
    /// Access log on?
    pub access_log: bool,
    /// Access log format.
    pub log_format: LogFormat,
    /// Lines queued for the log writer before lines are dropped.
    pub log_queue_lines: usize,
    /// File with the bearer token `/config_dump` requires, if any.
    pub config_dump_token_file: Option<Arc<str>>,
}

/// Process-level settings.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Worker threads per listener.
    pub worker_threads: usize,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: Duration,
}
