//! Owns `Snapshot`, the immutable compiled configuration that the data plane
//! serves from, and its process-level parts (listeners, admin, runtime).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cluster::Cluster;
use crate::error::ConfigError;
use crate::request::{Cidr, HttpLimits, PathOptions};
use crate::route::RouteTable;
use crate::store::Store;

/// A compiled, immutable configuration: the resources of a `Store` that are
/// ready to serve. Requests hold an `Arc` of what was derived from it for
/// their whole life, so a swap never changes a request in flight.
#[derive(Debug)]
pub struct Snapshot {
    /// Hash of every served resource's kind, name and content, as hex.
    pub version: Arc<str>,
    /// When it was assembled.
    pub loaded_at: SystemTime,
    /// Downstream listeners, by name.
    pub listeners: Vec<Arc<Listener>>,
    /// Route tables, sorted by name.
    pub route_tables: Vec<Arc<RouteTable>>,
    /// Clusters with their current endpoints, by name (a persistent map:
    /// the next snapshot shares every cluster that did not change).
    pub clusters: imbl::OrdMap<Arc<str>, Arc<Cluster>>,
    /// Admin and logging.
    pub admin: AdminSettings,
    /// Process settings.
    pub runtime: RuntimeSettings,
    /// The control stream, when configured.
    pub xds: Option<XdsSettings>,
    /// The store it was assembled from: per-resource versions and sources.
    pub store: Arc<Store>,
}

impl Snapshot {
    /// The route table named `name`.
    pub fn route_table(&self, name: &str) -> Option<&Arc<RouteTable>> {
        let i = self
            .route_tables
            .binary_search_by(|t| t.name.as_ref().cmp(name))
            .ok()?;
        Some(&self.route_tables[i])
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Arc<Listener>> {
        self.listeners.iter().find(|l| l.name.as_ref() == name)
    }
}

/// Process-level settings of a bootstrap: read at start, never pushed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Admin and logging.
    pub admin: AdminSettings,
    /// Threads and drain.
    pub runtime: RuntimeSettings,
    /// The control stream, when configured.
    pub xds: Option<XdsSettings>,
    /// Where this Corridor runs (zone-aware balancing).
    pub locality: crate::cluster::Locality,
    /// Jurisdictions and the geo tables (residency policies are resources
    /// of the store: `Store::residency`).
    pub geo: Arc<crate::residency::Geo>,
}

impl Settings {
    /// Why `next` cannot replace `self` without a restart (process settings,
    /// the admin socket, the log format or the control stream), one error per
    /// field; empty when it can.
    pub fn restart_needed_for(&self, next: &Settings) -> Vec<ConfigError> {
        let mut out = Vec::new();
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
        if self.xds != next.xds {
            out.push(ConfigError::new(
                "xds",
                "the control-stream settings are read when the process starts; they change only on restart",
            ));
        }
        out
    }
}

/// Role sent to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdsRole {
    /// Next to an inference pod.
    Sidecar,
    /// At a region's edge.
    Ingress,
}

impl XdsRole {
    /// The name sent in node metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            XdsRole::Sidecar => "sidecar",
            XdsRole::Ingress => "ingress",
        }
    }
}

/// Where configuration is pushed from.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsSettings {
    /// Control-plane URL.
    pub server: Arc<str>,
    /// Node id.
    pub node_id: Arc<str>,
    /// Node cluster.
    pub node_cluster: Arc<str>,
    /// Cloud of this Corridor.
    pub cloud: Arc<str>,
    /// Region of this Corridor.
    pub region: Arc<str>,
    /// Zone of this Corridor.
    pub zone: Arc<str>,
    /// Sidecar or ingress.
    pub role: XdsRole,
    /// Speak the delta variant.
    pub delta: bool,
    /// How long `/ready` waits for the first complete configuration.
    pub initial_fetch_timeout: Duration,
    /// Fail-static file, if any.
    pub persist_file: Option<Arc<str>>,
    /// TLS to the control plane, if any (`https://`).
    pub tls: Option<XdsTls>,
}

/// TLS towards the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsTls {
    /// PEM file of trusted roots; `None` means the system roots.
    pub ca_file: Option<Arc<str>>,
    /// Client certificate chain and key files (mTLS), if any.
    pub client_cert: Option<(Arc<str>, Arc<str>)>,
    /// Server name sent and verified.
    pub sni: Arc<str>,
    /// Identities the control plane must present; empty: any.
    pub expected_identities: Vec<Arc<str>>,
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
    /// Client certificate verification (mTLS), if any.
    pub client_auth: Option<crate::identity::ClientAuth>,
    /// What happens to `x-forwarded-client-cert`.
    pub forward_client_cert: crate::identity::ForwardClientCert,
}

/// A downstream listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Unique name.
    pub name: Arc<str>,
    /// Bound address.
    pub address: SocketAddr,
    /// Plaintext protocols.
    pub protocols: Protocols,
    /// TLS, if terminated here.
    pub tls: Option<ListenerTls>,
    /// Name of its route table.
    pub route_table: Arc<str>,
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
