//! The ADS client: one gRPC stream carrying every subscribed type, in either
//! variant, handing validated updates to a [`Sink`] and answering each
//! response with an ACK or a NACK; reconnects forever with full-jitter
//! exponential backoff.
//!
//! # Semantics (Envoy's)
//!
//! - On every (re)connect the client asks the sink what it holds
//!   ([`Sink::known`]) and subscribes to each type in [`ClientConfig::types`]
//!   order; the node goes on the first request of the stream only. SotW sends
//!   the last ACKed `version_info`; delta sends `initial_resource_versions`.
//! - A subscription is a wildcard unless [`ClientConfig::subscriptions`] names
//!   resources for that type (legacy wildcard: an empty name list on the first
//!   request, which every server understands).
//! - A response for a type that is not subscribed is **ignored** (logged and
//!   counted in [`StatusSnapshot::ignored_responses`](crate::StatusSnapshot)), as
//!   Envoy does; it is neither ACKed nor NACKed.
//! - The engine checks the envelope only: every body's type URL equals the
//!   response's, names are unique (where known), delta resources have a name
//!   and a body, and no name is both added and removed. A violation NACKs the
//!   whole response without calling the sink. Otherwise the sink decides:
//!   `Ok` ACKs, `Err(detail)` NACKs with `detail` as `error_detail.message`
//!   (code 3, `INVALID_ARGUMENT`). A NACK repeats the previous ACKed version.
//! - Responses are processed one at a time, in order; the sink runs on the
//!   blocking pool so a slow `apply` does not stall the runtime, and a panic
//!   in it becomes a NACK.
//! - A stream ends on a transport error, on the server closing it, on a
//!   server that stops reading requests for [`ClientConfig::send_timeout`], or
//!   (if set) on silence for [`ClientConfig::response_timeout`]. The client
//!   then sleeps a full-jitter delay in `[0, min(max, base * 2^n)]` and
//!   reconnects; `n` resets after a stream in which at least one response was
//!   ACKed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3 as disc;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;
use crate::status::ClientStatus;
use crate::{truncate, Any, Node, Resource, Variant, NACK_CODE, RESOURCE_WRAPPER_TYPE_URL};

use disc::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use disc::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};

/// Longest `error_detail` message sent in a NACK; longer sink errors are cut.
pub const MAX_ERROR_DETAIL: usize = 4096;

/// Room for requests waiting to go out on the stream.
const OUTBOUND_BUFFER: usize = 256;

/// What a response asks the sink to apply, for one type.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// State of the world: `resources` replaces everything held for
    /// `type_url` (for types a server sends incrementally, as Envoy's RDS and
    /// EDS, only the first response on a stream is complete: see
    /// [`crate::server::ServerOptions::sotw_incremental_types`]).
    Full {
        /// The resource type.
        type_url: String,
        /// The response's `version_info`.
        version_info: String,
        /// Every resource of the type (names may be empty: see the crate docs).
        resources: Vec<Resource>,
        /// The first response of this type that arrived on this stream (even
        /// if it could not be decoded): the only one known to be complete.
        first: bool,
    },
    /// Delta: add or replace `added`, drop `removed`; keep the rest.
    Delta {
        /// The resource type.
        type_url: String,
        /// The response's `system_version_info` (informational).
        system_version_info: String,
        /// Resources added or changed; each has a name.
        added: Vec<Resource>,
        /// Names of resources removed (may name resources not held: ignore those).
        removed: Vec<String>,
    },
}

impl Update {
    /// The type the update is for.
    pub fn type_url(&self) -> &str {
        match self {
            Update::Full { type_url, .. } | Update::Delta { type_url, .. } => type_url,
        }
    }
}

/// What the sink holds for one type, reported on each (re)connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// The last ACKed SotW `version_info` (empty if none).
    pub version_info: String,
    /// Delta: the (name, version) of every resource held, sent as `initial_resource_versions`.
    pub resources: Vec<(String, String)>,
}

/// Where the client delivers updates; implemented by the config store.
pub trait Sink: Send + Sync + 'static {
    /// Applies an update for one type. `Err(detail)` NACKs with that message
    /// (the sink must keep its previous state); `Ok` ACKs. Runs on the
    /// blocking pool; may take milliseconds.
    fn apply(&self, update: Update) -> Result<(), String>;

    /// What is held for `type_url`; called once per type on every (re)connect,
    /// before subscribing.
    fn known(&self, type_url: &str) -> Known;
}

/// How to reach the control plane and what to subscribe to.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server, `http://host:port` (a bare `host:port` gets `http://`).
    pub server: String,
    /// The node identity sent on the first request of each stream.
    pub node: Node,
    /// Use `DeltaAggregatedResources` instead of `StreamAggregatedResources`.
    pub delta: bool,
    /// Type URLs to subscribe to, in order (e.g. Cluster, Endpoints, RouteTable, Listener).
    pub types: Vec<String>,
    /// Explicit resource names per type; a type absent here (or with no names) is a wildcard.
    pub subscriptions: HashMap<String, Vec<String>>,
    /// First reconnection delay ceiling.
    pub backoff_base: Duration,
    /// Largest reconnection delay ceiling.
    pub backoff_max: Duration,
    /// Limit for the TCP/HTTP2 connect and for opening the stream.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval on the connection (detects dead peers).
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// If set, a stream silent for this long is dropped and reconnected.
    /// Off by default: a server may legitimately have nothing to say.
    pub response_timeout: Option<Duration>,
    /// How long an ACK may wait for room in the request stream before the
    /// stream is considered wedged and reconnected.
    pub send_timeout: Duration,
    /// Largest message accepted or sent, in bytes.
    pub max_message_size: usize,
    /// Opens the connection (for example TLS); `None` is plain TCP.
    pub connector: Option<crate::transport::Connector>,
}

impl ClientConfig {
    /// A wildcard subscription to `types` on `server` with default timings.
    pub fn new(server: impl Into<String>, node: Node, types: Vec<String>) -> Self {
        ClientConfig {
            server: server.into(),
            node,
            delta: false,
            types,
            subscriptions: HashMap::new(),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            response_timeout: None,
            send_timeout: Duration::from_secs(30),
            max_message_size: 64 << 20,
            connector: None,
        }
    }

    fn variant(&self) -> Variant {
        if self.delta {
            Variant::Delta
        } else {
            Variant::Sotw
        }
    }

    /// The explicit names for a type; empty means wildcard.
    fn names(&self, type_url: &str) -> Vec<String> {
        self.subscriptions
            .get(type_url)
            .cloned()
            .unwrap_or_default()
    }

    fn uri(&self) -> String {
        let uri = if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("http://{}", self.server)
        };
        // The connector secures the connection; tonic itself speaks
        // HTTP/2 over whatever it returns.
        match (&self.connector, uri.strip_prefix("https://")) {
            (Some(_), Some(rest)) => format!("http://{rest}"),
            _ => uri,
        }
    }
}

/// An ADS client; [`Client::run`] loops forever, reconnecting.
pub struct Client {
    cfg: ClientConfig,
    sink: Arc<dyn Sink>,
    status: ClientStatus,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Why a stream ended, and whether it was worth resetting the backoff.
struct StreamEnd {
    reason: String,
}

impl<T: Into<String>> From<T> for StreamEnd {
    fn from(reason: T) -> Self {
        StreamEnd {
            reason: reason.into(),
        }
    }
}

/// Per-type SotW subscription state for one stream.
struct SotwType {
    type_url: String,
    names: Vec<String>,
    acked_version: String,
    /// A response of this type has arrived on this stream.
    answered: bool,
}

/// Per-type delta subscription state for one stream.
struct DeltaType {
    type_url: String,
    /// What the sink holds after the last ACK: name -> version.
    held: HashMap<String, String>,
}

impl Client {
    /// A client for `cfg` delivering to `sink`. Nothing happens until [`Client::run`].
    pub fn new(cfg: ClientConfig, sink: Arc<dyn Sink>) -> Self {
        let status = ClientStatus::new(&cfg.server, cfg.variant(), &cfg.types);
        Client { cfg, sink, status }
    }

    /// A handle on the client's state, valid after `run` starts and forever.
    pub fn status(&self) -> ClientStatus {
        self.status.clone()
    }

    /// Runs on the current task: connect, subscribe, process, reconnect.
    /// Never returns; drop or abort the task to stop it.
    pub async fn run(self) {
        let mut backoff = Backoff::new(self.cfg.backoff_base, self.cfg.backoff_max);
        loop {
            let mut acked = false;
            let end = if self.cfg.delta {
                self.delta_stream(&mut acked).await
            } else {
                self.sotw_stream(&mut acked).await
            };
            if acked {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                server = %self.cfg.server,
                reason = %end.reason,
                delay_ms = delay.as_millis() as u64,
                "xDS stream ended; reconnecting"
            );
            self.status.stream_ended(end.reason);
            tokio::time::sleep(delay).await;
        }
    }

    /// Spawns [`Client::run`] on the current runtime.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn connect(&self) -> Result<Channel, StreamEnd> {
        let uri = self.cfg.uri();
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("bad server address {uri:?}: {}", chain(&e)))?
            .connect_timeout(self.cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.cfg.keepalive_interval)
            .keep_alive_timeout(self.cfg.keepalive_timeout)
            .keep_alive_while_idle(true);
        let connecting = async {
            match &self.cfg.connector {
                Some(c) => endpoint.connect_with_connector(c.clone()).await,
                None => endpoint.connect().await,
            }
        };
        match tokio::time::timeout(self.cfg.connect_timeout, connecting).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(format!("connecting to {uri}: {}", chain(&e)).into()),
            Err(_) => Err(format!("connecting to {uri}: timed out").into()),
        }
    }

    /// Waits (up to the connect timeout) for the server to open a stream.
    async fn open<T>(
        &self,
        open: impl std::future::Future<
            Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
        >,
    ) -> Result<tonic::Streaming<T>, StreamEnd> {
        match tokio::time::timeout(self.cfg.connect_timeout, open).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(format!(
                "opening the stream: {:?}: {}",
                status.code(),
                status.message()
            )
            .into()),
            Err(_) => Err("opening the stream: timed out".into()),
        }
    }

    fn grpc(&self, channel: Channel) -> AggregatedDiscoveryServiceClient<Channel> {
        AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(self.cfg.max_message_size)
            .max_encoding_message_size(self.cfg.max_message_size)
    }

    /// The next response, or why the stream is over.
    async fn receive<T>(&self, inbound: &mut tonic::Streaming<T>) -> Result<T, StreamEnd> {
        let next = match self.cfg.response_timeout {
            Some(limit) => match tokio::time::timeout(limit, inbound.message()).await {
                Ok(next) => next,
                Err(_) => return Err(format!("no response for {limit:?}").into()),
            },
            None => inbound.message().await,
        };
        match next {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err("the server closed the stream".into()),
            Err(status) => {
                Err(format!("stream error: {:?}: {}", status.code(), status.message()).into())
            }
        }
    }

    async fn send<T>(&self, tx: &mpsc::Sender<T>, req: T) -> Result<(), StreamEnd> {
        match tx.send_timeout(req, self.cfg.send_timeout).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => {
                Err(format!("the server read no request for {:?}", self.cfg.send_timeout).into())
            }
            Err(SendTimeoutError::Closed(_)) => Err("the request stream closed".into()),
        }
    }

    /// Runs the sink on the blocking pool; a panic becomes an error.
    async fn apply(&self, update: Update) -> Result<(), String> {
        let sink = Arc::clone(&self.sink);
        let result = match tokio::task::spawn_blocking(move || sink.apply(update)).await {
            Ok(result) => result,
            Err(e) => Err(format!("the sink failed: {e}")),
        };
        result.map_err(|detail| truncate(detail, MAX_ERROR_DETAIL))
    }

    async fn sotw_stream(&self, acked: &mut bool) -> StreamEnd {
        let channel = match self.connect().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let mut types: Vec<SotwType> = self
            .cfg
            .types
            .iter()
            .map(|t| SotwType {
                type_url: t.clone(),
                names: self.cfg.names(t),
                acked_version: self.sink.known(t).version_info,
                answered: false,
            })
            .collect();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER.max(types.len() + 1));
        for (i, t) in types.iter().enumerate() {
            let req = DiscoveryRequest {
                version_info: t.acked_version.clone(),
                node: (i == 0).then(|| self.cfg.node.clone()),
                resource_names: t.names.clone(),
                type_url: t.type_url.clone(),
                ..Default::default()
            };
            if tx.try_send(req).is_err() {
                return "request buffer full".into();
            }
        }
        let mut grpc = self.grpc(channel);
        let mut inbound = match self
            .open(grpc.stream_aggregated_resources(ReceiverStream::new(rx)))
            .await
        {
            Ok(inbound) => inbound,
            Err(end) => return end,
        };
        self.status.set_connected(true);
        tracing::info!(server = %self.cfg.server, "xDS SotW stream open");

        loop {
            let mut resp: DiscoveryResponse = match self.receive(&mut inbound).await {
                Ok(r) => r,
                Err(end) => return end,
            };
            let Some(ty) = types.iter_mut().find(|t| t.type_url == resp.type_url) else {
                tracing::warn!(type_url = %resp.type_url, "ignoring a response for a type not subscribed");
                self.status.ignored();
                continue;
            };
            let nonce = std::mem::take(&mut resp.nonce);
            let version = std::mem::take(&mut resp.version_info);
            let anys = std::mem::take(&mut resp.resources);
            // Only the first response of a type on a stream is known to be
            // complete, whether or not it could be decoded or applied.
            let first = !std::mem::replace(&mut ty.answered, true);
            let outcome = match sotw_resources(&ty.type_url, &version, anys) {
                Ok(resources) => {
                    let count = resources.len();
                    let update = Update::Full {
                        type_url: ty.type_url.clone(),
                        version_info: version.clone(),
                        resources,
                        first,
                    };
                    self.apply(update).await.map(|()| count)
                }
                Err(detail) => Err(truncate(detail, MAX_ERROR_DETAIL)),
            };
            match outcome {
                Ok(count) => {
                    ty.acked_version = version.clone();
                    let ack = DiscoveryRequest {
                        version_info: version.clone(),
                        resource_names: ty.names.clone(),
                        type_url: ty.type_url.clone(),
                        response_nonce: nonce.clone(),
                        ..Default::default()
                    };
                    *acked = true;
                    self.status.acked(&ty.type_url, &version, &nonce, count);
                    if let Err(end) = self.send(&tx, ack).await {
                        return end;
                    }
                    tracing::debug!(type_url = %ty.type_url, %version, %nonce, "ACK");
                }
                Err(detail) => {
                    tracing::warn!(type_url = %ty.type_url, %version, %nonce, %detail, "NACK");
                    let nack = DiscoveryRequest {
                        version_info: ty.acked_version.clone(),
                        resource_names: ty.names.clone(),
                        type_url: ty.type_url.clone(),
                        response_nonce: nonce.clone(),
                        error_detail: Some(nack_status(&detail)),
                        ..Default::default()
                    };
                    self.status.nacked(&ty.type_url, &nonce, &detail);
                    if let Err(end) = self.send(&tx, nack).await {
                        return end;
                    }
                }
            }
        }
    }

    async fn delta_stream(&self, acked: &mut bool) -> StreamEnd {
        let channel = match self.connect().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let mut types: Vec<DeltaType> = self
            .cfg
            .types
            .iter()
            .map(|t| DeltaType {
                type_url: t.clone(),
                held: self.sink.known(t).resources.into_iter().collect(),
            })
            .collect();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER.max(types.len() + 1));
        for (i, t) in types.iter().enumerate() {
            let req = DeltaDiscoveryRequest {
                node: (i == 0).then(|| self.cfg.node.clone()),
                type_url: t.type_url.clone(),
                resource_names_subscribe: self.cfg.names(&t.type_url),
                initial_resource_versions: t.held.clone(),
                ..Default::default()
            };
            if tx.try_send(req).is_err() {
                return "request buffer full".into();
            }
        }
        let mut grpc = self.grpc(channel);
        let mut inbound = match self
            .open(grpc.delta_aggregated_resources(ReceiverStream::new(rx)))
            .await
        {
            Ok(inbound) => inbound,
            Err(end) => return end,
        };
        self.status.set_connected(true);
        tracing::info!(server = %self.cfg.server, "xDS delta stream open");

        loop {
            let resp: DeltaDiscoveryResponse = match self.receive(&mut inbound).await {
                Ok(r) => r,
                Err(end) => return end,
            };
            let Some(ty) = types.iter_mut().find(|t| t.type_url == resp.type_url) else {
                tracing::warn!(type_url = %resp.type_url, "ignoring a response for a type not subscribed");
                self.status.ignored();
                continue;
            };
            let DeltaDiscoveryResponse {
                system_version_info: version,
                resources,
                removed_resources,
                removed_resource_names,
                nonce,
                ..
            } = resp;
            let removed_extra = removed_resource_names.into_iter().map(|n| n.name);
            let outcome = match delta_resources(
                &ty.type_url,
                resources,
                removed_resources.into_iter().chain(removed_extra),
            ) {
                Ok((added, removed)) => {
                    let changes: Vec<(String, String)> = added
                        .iter()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect();
                    let update = Update::Delta {
                        type_url: ty.type_url.clone(),
                        system_version_info: version.clone(),
                        added,
                        removed: removed.clone(),
                    };
                    self.apply(update).await.map(|()| (changes, removed))
                }
                Err(detail) => Err(truncate(detail, MAX_ERROR_DETAIL)),
            };
            match outcome {
                Ok((changes, removed)) => {
                    let ack = DeltaDiscoveryRequest {
                        type_url: ty.type_url.clone(),
                        response_nonce: nonce.clone(),
                        ..Default::default()
                    };
                    ty.held.extend(changes);
                    for name in &removed {
                        ty.held.remove(name);
                    }
                    *acked = true;
                    self.status
                        .acked(&ty.type_url, &version, &nonce, ty.held.len());
                    if let Err(end) = self.send(&tx, ack).await {
                        return end;
                    }
                    tracing::debug!(type_url = %ty.type_url, %version, %nonce, "ACK");
                }
                Err(detail) => {
                    tracing::warn!(type_url = %ty.type_url, %version, %nonce, %detail, "NACK");
                    let nack = DeltaDiscoveryRequest {
                        type_url: ty.type_url.clone(),
                        response_nonce: nonce.clone(),
                        error_detail: Some(nack_status(&detail)),
                        ..Default::default()
                    };
                    self.status.nacked(&ty.type_url, &nonce, &detail);
                    if let Err(end) = self.send(&tx, nack).await {
                        return end;
                    }
                }
            }
        }
    }
}

/// The `error_detail` of a NACK.
fn nack_status(detail: &str) -> RpcStatus {
    RpcStatus {
        code: NACK_CODE,
        message: detail.to_string(),
        details: Vec::new(),
    }
}

/// An error and its sources, `a: b: c` (tonic's top-level messages are terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Checks and unwraps the resources of a SotW response of type `type_url`.
fn sotw_resources(type_url: &str, version: &str, anys: Vec<Any>) -> Result<Vec<Resource>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(anys.len());
    for (i, any) in anys.into_iter().enumerate() {
        let resource = if any.type_url == RESOURCE_WRAPPER_TYPE_URL {
            let wrapper = disc::Resource::decode(any.value.as_slice())
                .map_err(|e| format!("resource {i}: undecodable Resource wrapper: {e}"))?;
            let Some(body) = wrapper.resource else {
                return Err(format!(
                    "resource {i} ({:?}): Resource wrapper without a resource",
                    wrapper.name
                ));
            };
            if body.type_url != type_url {
                return Err(format!(
                    "resource {i} ({:?}) has type {:?} in a response of type {type_url}",
                    wrapper.name, body.type_url
                ));
            }
            let version = if wrapper.version.is_empty() {
                version.to_string()
            } else {
                wrapper.version
            };
            Resource {
                name: wrapper.name,
                version,
                body,
            }
        } else if any.type_url != type_url {
            return Err(format!(
                "resource {i} has type {:?} in a response of type {type_url}",
                any.type_url
            ));
        } else {
            Resource {
                name: String::new(),
                version: version.to_string(),
                body: any,
            }
        };
        if !resource.name.is_empty() && !seen.insert(resource.name.clone()) {
            return Err(format!(
                "duplicate resource name {:?} (resource {i})",
                resource.name
            ));
        }
        out.push(resource);
    }
    Ok(out)
}

/// Checks the added and removed resources of a delta response of type `type_url`.
fn delta_resources(
    type_url: &str,
    resources: Vec<disc::Resource>,
    removed: impl Iterator<Item = String>,
) -> Result<(Vec<Resource>, Vec<String>), String> {
    let mut seen = HashSet::new();
    let mut added = Vec::with_capacity(resources.len());
    for (i, r) in resources.into_iter().enumerate() {
        let name = if r.name.is_empty() {
            r.resource_name.map(|n| n.name).unwrap_or_default()
        } else {
            r.name
        };
        if name.is_empty() {
            return Err(format!("resource {i} has no name"));
        }
        let Some(body) = r.resource else {
            return Err(format!("resource {i} ({name:?}) has no body"));
        };
        if body.type_url != type_url {
            return Err(format!(
                "resource {i} ({name:?}) has type {:?} in a response of type {type_url}",
                body.type_url
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(format!("duplicate resource name {name:?} (resource {i})"));
        }
        added.push(Resource {
            name,
            version: r.version,
            body,
        });
    }
    let mut gone = HashSet::new();
    let mut removed_names = Vec::new();
    for name in removed {
        if seen.contains(&name) {
            return Err(format!("resource {name:?} is both added and removed"));
        }
        if gone.insert(name.clone()) {
            removed_names.push(name);
        }
    }
    Ok((added, removed_names))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "type.googleapis.com/corridor.v1.Cluster";

    fn any(type_url: &str, value: &[u8]) -> Any {
        Any {
            type_url: type_url.into(),
            value: value.to_vec(),
        }
    }

    fn wrapped(name: &str, version: &str, body: Any) -> Any {
        let w = disc::Resource {
            name: name.into(),
            version: version.into(),
            resource: Some(body),
            ..Default::default()
        };
        any(RESOURCE_WRAPPER_TYPE_URL, &w.encode_to_vec())
    }

    #[test]
    fn sotw_plain_and_wrapped() {
        let got = sotw_resources(
            T,
            "v1",
            vec![
                any(T, b"a"),
                wrapped("b", "", any(T, b"b")),
                wrapped("c", "7", any(T, b"c")),
            ],
        )
        .unwrap();
        assert_eq!(got[0].name, "");
        assert_eq!(got[0].version, "v1");
        assert_eq!(got[1].name, "b");
        assert_eq!(got[1].version, "v1");
        assert_eq!(got[2].version, "7");
        assert_eq!(got[2].body.value, b"c");
    }

    #[test]
    fn sotw_rejects_bad_envelopes() {
        let e = sotw_resources(T, "v", vec![any(T, b"a"), any("x", b"")]).unwrap_err();
        assert!(e.contains("resource 1"), "{e}");
        let e = sotw_resources(T, "v", vec![wrapped("a", "", any("x", b""))]).unwrap_err();
        assert!(e.contains("\"a\""), "{e}");
        let e = sotw_resources(T, "v", vec![any(RESOURCE_WRAPPER_TYPE_URL, &[0xff, 0xff])])
            .unwrap_err();
        assert!(e.contains("undecodable"), "{e}");
        let e = sotw_resources(
            T,
            "v",
            vec![wrapped("a", "", any(T, b"")), wrapped("a", "", any(T, b""))],
        )
        .unwrap_err();
        assert!(e.contains("duplicate"), "{e}");
        // Plain Anys have no name, so no duplicate check applies.
        assert!(sotw_resources(T, "v", vec![any(T, b""), any(T, b"")]).is_ok());
    }

    fn res(name: &str, body: Option<Any>) -> disc::Resource {
        disc::Resource {
            name: name.into(),
            version: "1".into(),
            resource: body,
            ..Default::default()
        }
    }

    #[test]
    fn delta_checks() {
        let (added, removed) = delta_resources(
            T,
            vec![res("a", Some(any(T, b"")))],
            ["b".to_string(), "b".to_string()].into_iter(),
        )
        .unwrap();
        assert_eq!(added.len(), 1);
        assert_eq!(removed, vec!["b".to_string()]);
        let cases = [
            (vec![res("", Some(any(T, b"")))], vec![], "no name"),
            (vec![res("a", None)], vec![], "no body"),
            (vec![res("a", Some(any("x", b"")))], vec![], "has type"),
            (
                vec![res("a", Some(any(T, b""))), res("a", Some(any(T, b"")))],
                vec![],
                "duplicate",
            ),
            (
                vec![res("a", Some(any(T, b"")))],
                vec!["a".to_string()],
                "both",
            ),
        ];
        for (resources, removed, want) in cases {
            let e = delta_resources(T, resources, removed.into_iter()).unwrap_err();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }

    #[test]
    fn bare_address_gets_a_scheme() {
        let mut cfg = ClientConfig::new("127.0.0.1:1", Node::default(), vec![]);
        assert_eq!(cfg.uri(), "http://127.0.0.1:1");
        cfg.server = "http://x:2".into();
        assert_eq!(cfg.uri(), "http://x:2");
    }
}
