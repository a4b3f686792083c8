//! The reference ADS server: serves a [`Source`] to any number of
//! subscribers over both variants, one task per stream, and records each
//! stream's ACK/NACK state in a [`NodeRegistry`].
//!
//! # Semantics
//!
//! - **SotW.** On a type's first request the stream subscribes (wildcard if
//!   `resource_names` is empty or contains `*`) and is sent the full set,
//!   always, even after a reconnect. `version_info` is [`set_version`] of the
//!   (name, version) pairs, so it is stable across restarts; each response
//!   has a fresh nonce. After a change notification every subscribed type
//!   whose version differs from the last one sent is resent, even if the
//!   previous response is still unanswered. A request whose `response_nonce`
//!   is not the latest sent for its type is stale and ignored entirely. A
//!   matching one is an ACK (recorded) or, with `error_detail`, a NACK
//!   (recorded; the same version is not resent, only a change is). A changed
//!   `resource_names` in a non-stale request changes the subscription.
//!   Types in [`ServerOptions::sotw_incremental_types`] (Corridor's
//!   RouteTable and Endpoints, like Envoy's RDS and EDS) are complete only
//!   in a stream's first response; later ones carry just the resources whose
//!   version changed (possibly none), and an omitted resource is not deleted.
//!   Resources go out as plain `Any`s unless
//!   [`ServerOptions::wrap_sotw_resources`] wraps them in
//!   `envoy.service.discovery.v3.Resource` (name, version, body).
//! - **Delta.** Per stream and type the server tracks what the client holds
//!   (name -> version), seeded from `initial_resource_versions`. The first
//!   request subscribes: wildcard if `resource_names_subscribe` is empty or
//!   contains `*`; later requests add and remove names (and `*`), even with a
//!   stale nonce. Responses carry only resources whose version differs from
//!   what the client holds, and `removed_resources` for names it holds that
//!   the source no longer has. The first request of a type is always
//!   answered, even with nothing to send, so the client sees a response;
//!   afterwards only real differences are sent. The tracked state is updated
//!   when a response is sent, so a NACKed version is not resent until it
//!   changes. `system_version_info` is [`set_version`] of the subscribed set.
//! - Unknown types are served whatever the source returns for them
//!   (normally an empty set). Requests without a type URL are ignored; at
//!   most [`ServerOptions::max_types_per_stream`] types per stream.
//! - Change notifications are coalesced: a stream busy sending sees only
//!   the latest generation. A client that reads nothing for
//!   [`ServerOptions::send_timeout`] loses its stream.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3 as disc;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::NodeRegistry;
use crate::source::{ResourceMap, Source};
use crate::{set_version, Any, Node, Variant, RESOURCE_WRAPPER_TYPE_URL};

use disc::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use disc::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};

/// Responses queued per stream before the stream task waits for the client.
const RESPONSE_BUFFER: usize = 16;

/// Server knobs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// SotW: wrap each resource in an `envoy.service.discovery.v3.Resource`
    /// (name, version, body) instead of sending the plain `Any`.
    pub wrap_sotw_resources: bool,
    /// Largest message accepted or sent, in bytes.
    pub max_message_size: usize,
    /// How long a response may wait for a client that reads nothing.
    pub send_timeout: Duration,
    /// How long closed streams stay in the registry.
    pub disconnected_retention: Duration,
    /// At most this many closed streams stay in the registry.
    pub max_disconnected: usize,
    /// Types a single stream may subscribe to; further ones are ignored.
    pub max_types_per_stream: usize,
    /// SotW types sent incrementally, as Envoy sends RDS and EDS: after the
    /// first response on a stream, a response carries only the resources
    /// whose version differs from what the stream was last sent (after a
    /// NACK: every resource), and leaving one out does not delete it (a
    /// client may drop it when a later stream's first response leaves it
    /// out). Listener- and cluster-like types must stay complete.
    pub sotw_incremental_types: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            wrap_sotw_resources: false,
            max_message_size: 64 << 20,
            send_timeout: Duration::from_secs(60),
            disconnected_retention: Duration::from_secs(600),
            max_disconnected: 1024,
            max_types_per_stream: 64,
            sotw_incremental_types: Vec::new(),
        }
    }
}

struct Shared {
    source: Arc<dyn Source>,
    registry: Arc<NodeRegistry>,
    opts: ServerOptions,
    nonce_tag: u32,
    nonces: AtomicU64,
    streams: AtomicU64,
    closing: watch::Sender<bool>,
}

impl Shared {
    fn next_nonce(&self) -> String {
        let n = self.nonces.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:08x}-{n}", self.nonce_tag)
    }
}

/// An ADS server over a [`Source`]; cheap to clone (clones share everything).
#[derive(Clone)]
pub struct AdsServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer")
            .field("opts", &self.shared.opts)
            .finish_non_exhaustive()
    }
}

/// The tonic service of an [`AdsServer`], to mount with [`AdsServer::service`].
#[derive(Clone)]
pub struct AdsService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AdsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsService").finish_non_exhaustive()
    }
}

impl AdsServer {
    /// A server over `source` with default options.
    pub fn new(source: Arc<dyn Source>) -> Self {
        Self::with_options(source, ServerOptions::default())
    }

    /// A server over `source` with `opts`.
    pub fn with_options(source: Arc<dyn Source>, opts: ServerOptions) -> Self {
        let registry = Arc::new(NodeRegistry::new(
            opts.disconnected_retention,
            opts.max_disconnected,
        ));
        AdsServer {
            shared: Arc::new(Shared {
                source,
                registry,
                opts,
                nonce_tag: fastrand::u32(..),
                nonces: AtomicU64::new(0),
                streams: AtomicU64::new(0),
                closing: watch::channel(false).0,
            }),
        }
    }

    /// The gRPC service, to add to a `tonic::transport::Server` next to others.
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<AdsService> {
        AggregatedDiscoveryServiceServer::new(AdsService {
            shared: Arc::clone(&self.shared),
        })
        .max_decoding_message_size(self.shared.opts.max_message_size)
        .max_encoding_message_size(self.shared.opts.max_message_size)
    }

    /// The subscribers and their ACK/NACK state.
    pub fn registry(&self) -> Arc<NodeRegistry> {
        Arc::clone(&self.shared.registry)
    }

    /// Ends every open stream and refuses new ones (for shutdown: tonic's
    /// graceful shutdown waits for open streams, which ADS streams never end).
    pub fn close_streams(&self) {
        self.shared.closing.send_replace(true);
    }
}

/// Serves `server` on the connections `incoming` yields (for example TLS
/// connections already handshaken) until `shutdown` completes, then closes
/// the streams.
pub async fn serve_incoming<S, IO, F>(
    incoming: S,
    server: AdsServer,
    shutdown: F,
) -> Result<(), tonic::transport::Error>
where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send,
{
    let closer = server.clone();
    let signal = async move {
        shutdown.await;
        closer.close_streams();
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(server.service())
        .serve_with_incoming_shutdown(incoming, signal)
        .await
}

/// Serves `server` on `listener` (plain TCP) until `shutdown` completes, then
/// closes the streams and the listener and waits for connections to drain.
pub async fn serve<F>(
    listener: TcpListener,
    server: AdsServer,
    shutdown: F,
) -> Result<(), tonic::transport::Error>
where
    F: Future<Output = ()> + Send,
{
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    serve_incoming(incoming, server, shutdown).await
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        if *self.shared.closing.borrow() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let peer = peer_of(&request);
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let stream = SotwStream {
            common: StreamCommon::new(&self.shared, peer, tx),
            types: Vec::new(),
        };
        tokio::spawn(drive(stream, request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if *self.shared.closing.borrow() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let peer = peer_of(&request);
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let stream = DeltaStream {
            common: StreamCommon::new(&self.shared, peer, tx),
            types: Vec::new(),
        };
        tokio::spawn(drive(stream, request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The client went away or stopped reading: end the stream.
struct Gone;

/// What differs between a state-of-the-world and a delta stream; [`drive`]
/// runs either.
trait AdsStream: Send {
    type Request: Send + 'static;
    type Response: Send + 'static;
    fn common(&self) -> &StreamCommon<Self::Response>;
    /// Handles one request from the client.
    fn request(&mut self, req: Self::Request) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Pushes whatever changed in the source.
    fn changed(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;
}

/// Runs a stream until the client leaves, a send fails or the server shuts down.
async fn drive<S: AdsStream>(mut s: S, mut inbound: Streaming<S::Request>) {
    let mut changes = Some(s.common().shared.source.changes());
    if let Some(rx) = changes.as_mut() {
        rx.borrow_and_update();
    }
    let mut closing = s.common().shared.closing.subscribe();
    if !*closing.borrow_and_update() {
        loop {
            let id = s.common().id;
            let step = match next_event(&mut inbound, &mut changes, &mut closing, id).await {
                Event::Request(req) => s.request(req).await,
                Event::Changed => s.changed().await,
                Event::End => break,
            };
            if step.is_err() {
                break;
            }
        }
    }
    s.common().finish();
}

impl AdsStream for SotwStream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    fn common(&self) -> &StreamCommon<DiscoveryResponse> {
        &self.common
    }
    fn request(&mut self, req: DiscoveryRequest) -> impl Future<Output = Result<(), Gone>> + Send {
        self.on_request(req)
    }
    fn changed(&mut self) -> impl Future<Output = Result<(), Gone>> + Send {
        self.push_all()
    }
}

impl AdsStream for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    fn common(&self) -> &StreamCommon<DeltaDiscoveryResponse> {
        &self.common
    }
    fn request(
        &mut self,
        req: DeltaDiscoveryRequest,
    ) -> impl Future<Output = Result<(), Gone>> + Send {
        self.on_request(req)
    }
    fn changed(&mut self) -> impl Future<Output = Result<(), Gone>> + Send {
        self.push_all()
    }
}

/// The peer's address and verified identity: from the connection a TLS
/// acceptor handed over (`serve_incoming`), else from plain TCP.
fn peer_of<T>(request: &Request<T>) -> (Option<SocketAddr>, Option<Arc<str>>) {
    match request.extensions().get::<crate::transport::PeerInfo>() {
        Some(p) => (Some(p.remote), p.identity.clone()),
        None => (request.remote_addr(), None),
    }
}

/// What both variants keep per stream.
struct StreamCommon<R> {
    shared: Arc<Shared>,
    id: u64,
    peer: (Option<SocketAddr>, Option<Arc<str>>),
    node: Node,
    registered: bool,
    tx: mpsc::Sender<Result<R, Status>>,
}

impl<R> StreamCommon<R> {
    fn new(
        shared: &Arc<Shared>,
        peer: (Option<SocketAddr>, Option<Arc<str>>),
        tx: mpsc::Sender<Result<R, Status>>,
    ) -> Self {
        StreamCommon {
            shared: Arc::clone(shared),
            id: shared.streams.fetch_add(1, Ordering::Relaxed) + 1,
            peer,
            node: Node::default(),
            registered: false,
            tx,
        }
    }

    /// Records the node on the stream's first request.
    fn register(&mut self, node: Option<Node>, variant: Variant) {
        if self.registered {
            return;
        }
        if let Some(node) = node {
            self.node = node;
        }
        self.shared
            .registry
            .register(self.id, &self.node, variant, self.peer.clone());
        self.registered = true;
        tracing::info!(stream = self.id, node = %self.node.id, variant = variant.as_str(), "xDS subscriber connected");
    }

    async fn send(&self, msg: R) -> Result<(), Gone> {
        self.tx
            .send_timeout(Ok(msg), self.shared.opts.send_timeout)
            .await
            .map_err(|_| Gone)
    }

    fn finish(&self) {
        if self.registered {
            self.shared.registry.disconnected(self.id);
            tracing::info!(stream = self.id, node = %self.node.id, "xDS subscriber disconnected");
        }
    }
}

/// One step of a stream loop.
enum Event<Q> {
    Request(Q),
    Changed,
    End,
}

/// Waits for the next request, change notification or shutdown.
async fn next_event<Q>(
    inbound: &mut Streaming<Q>,
    changes: &mut Option<watch::Receiver<u64>>,
    closing: &mut watch::Receiver<bool>,
    id: u64,
) -> Event<Q> {
    loop {
        tokio::select! {
            r = closing.changed() => {
                if r.is_err() || *closing.borrow() {
                    return Event::End;
                }
            }
            msg = inbound.next() => return match msg {
                Some(Ok(req)) => Event::Request(req),
                Some(Err(status)) => {
                    tracing::debug!(stream = id, code = ?status.code(), message = status.message(), "xDS stream error");
                    Event::End
                }
                None => Event::End,
            },
            r = async { match changes.as_mut() { Some(rx) => rx.changed().await, None => std::future::pending().await } } => {
                match r {
                    Ok(()) => {
                        if let Some(rx) = changes.as_mut() {
                            rx.borrow_and_update();
                        }
                        return Event::Changed;
                    }
                    // The source dropped its sender: no more changes.
                    Err(_) => *changes = None,
                }
            }
        }
    }
}

/// A SotW subscription: wildcard (`None`) or explicit names.
fn sotw_names(names: &[String]) -> Option<BTreeSet<String>> {
    if names.is_empty() || names.iter().any(|n| n == "*") {
        None
    } else {
        Some(names.iter().cloned().collect())
    }
}

struct SotwType {
    type_url: String,
    names: Option<BTreeSet<String>>,
    sent_version: Option<String>,
    nonce: String,
    /// Sent incrementally: see [`ServerOptions::sotw_incremental_types`].
    incremental: bool,
    /// Incremental types: name -> version of what this stream was sent.
    sent: HashMap<String, String>,
}

struct SotwStream {
    common: StreamCommon<DiscoveryResponse>,
    types: Vec<SotwType>,
}

impl SotwStream {
    async fn on_request(&mut self, mut req: DiscoveryRequest) -> Result<(), Gone> {
        self.common.register(req.node.take(), Variant::Sotw);
        let c = &self.common;
        if req.type_url.is_empty() {
            tracing::debug!(stream = c.id, "ignoring a request without a type URL");
            return Ok(());
        }
        let index = match self.types.iter().position(|t| t.type_url == req.type_url) {
            Some(i) => {
                let t = &mut self.types[i];
                if req.response_nonce != t.nonce {
                    tracing::debug!(stream = c.id, type_url = %t.type_url, nonce = %req.response_nonce, "ignoring a stale request");
                    return Ok(());
                }
                match &req.error_detail {
                    Some(e) => {
                        tracing::warn!(stream = c.id, node = %c.node.id, type_url = %t.type_url, nonce = %t.nonce, message = %e.message, "NACK");
                        c.shared.registry.nacked(c.id, &t.type_url, &e.message);
                        // The client kept what it had before: the next
                        // response carries every resource again.
                        t.sent.clear();
                    }
                    None => c
                        .shared
                        .registry
                        .acked(c.id, &t.type_url, &req.version_info),
                }
                let names = sotw_names(&req.resource_names);
                if names == t.names {
                    return Ok(());
                }
                t.names = names;
                i
            }
            None => {
                if self.types.len() >= c.shared.opts.max_types_per_stream {
                    tracing::warn!(stream = c.id, type_url = %req.type_url, "too many types on one stream; ignoring");
                    return Ok(());
                }
                self.types.push(SotwType {
                    names: sotw_names(&req.resource_names),
                    incremental: c.shared.opts.sotw_incremental_types.contains(&req.type_url),
                    type_url: req.type_url,
                    sent_version: None,
                    nonce: String::new(),
                    sent: HashMap::new(),
                });
                self.types.len() - 1
            }
        };
        self.push(index).await
    }

    async fn push_all(&mut self) -> Result<(), Gone> {
        for i in 0..self.types.len() {
            self.push(i).await?;
        }
        Ok(())
    }

    /// Sends type `index`'s set if its version differs from the last one sent.
    async fn push(&mut self, index: usize) -> Result<(), Gone> {
        let c = &self.common;
        let Some(t) = self.types.get_mut(index) else {
            return Ok(());
        };
        let set: Arc<ResourceMap> = c.shared.source.resources(&c.node, &t.type_url);
        let selected: Vec<(&String, &(String, Any))> = set
            .iter()
            .filter(|(name, _)| t.names.as_ref().is_none_or(|names| names.contains(*name)))
            .collect();
        let version = set_version(selected.iter().map(|(n, (v, _))| (n.as_str(), v.as_str())));
        if t.sent_version.as_deref() == Some(version.as_str()) {
            return Ok(());
        }
        let wrap = c.shared.opts.wrap_sotw_resources;
        let changed =
            |(name, (v, _)): &&(&String, &(String, Any))| t.sent.get(name.as_str()) != Some(v);
        let partial = t.incremental && t.sent_version.is_some();
        let resources: Vec<Any> = selected
            .iter()
            .filter(|r| !partial || changed(r))
            .map(|(name, (v, body))| {
                if wrap {
                    let wrapper = disc::Resource {
                        name: (*name).clone(),
                        version: v.clone(),
                        resource: Some(body.clone()),
                        ..Default::default()
                    };
                    Any {
                        type_url: RESOURCE_WRAPPER_TYPE_URL.to_string(),
                        value: wrapper.encode_to_vec(),
                    }
                } else {
                    body.clone()
                }
            })
            .collect();
        let nonce = c.shared.next_nonce();
        let count = resources.len();
        c.shared
            .registry
            .sent(c.id, &t.type_url, &version, &nonce, count);
        tracing::debug!(stream = c.id, type_url = %t.type_url, %version, %nonce, count, "sending");
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources,
            type_url: t.type_url.clone(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        if t.incremental {
            t.sent = selected
                .iter()
                .map(|(n, (v, _))| ((*n).clone(), v.clone()))
                .collect();
        }
        t.sent_version = Some(version);
        t.nonce = nonce;
        c.send(resp).await
    }
}

struct DeltaType {
    type_url: String,
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client holds, as far as the server knows: name -> version.
    client_has: HashMap<String, String>,
    sent_version: String,
    nonce: String,
    answered: bool,
}

impl DeltaType {
    fn subscribe(&mut self, subscribe: Vec<String>, unsubscribe: Vec<String>) {
        for name in subscribe {
            if name == "*" {
                self.wildcard = true;
            } else {
                self.names.insert(name);
            }
        }
        for name in unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                self.names.remove(&name);
            }
        }
        // The client drops what it no longer subscribes to.
        let (wildcard, names) = (self.wildcard, &self.names);
        self.client_has
            .retain(|name, _| wildcard || names.contains(name));
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

struct DeltaStream {
    common: StreamCommon<DeltaDiscoveryResponse>,
    types: Vec<DeltaType>,
}

impl DeltaStream {
    async fn on_request(&mut self, mut req: DeltaDiscoveryRequest) -> Result<(), Gone> {
        self.common.register(req.node.take(), Variant::Delta);
        let c = &self.common;
        if req.type_url.is_empty() {
            tracing::debug!(stream = c.id, "ignoring a request without a type URL");
            return Ok(());
        }
        let subscribe = std::mem::take(&mut req.resource_names_subscribe);
        let unsubscribe = std::mem::take(&mut req.resource_names_unsubscribe);
        let index = match self.types.iter().position(|t| t.type_url == req.type_url) {
            Some(i) => {
                let t = &mut self.types[i];
                if !req.response_nonce.is_empty() {
                    if req.response_nonce != t.nonce {
                        tracing::debug!(stream = c.id, type_url = %t.type_url, nonce = %req.response_nonce, "stale nonce");
                    } else if let Some(e) = &req.error_detail {
                        tracing::warn!(stream = c.id, node = %c.node.id, type_url = %t.type_url, nonce = %t.nonce, message = %e.message, "NACK");
                        c.shared.registry.nacked(c.id, &t.type_url, &e.message);
                    } else {
                        c.shared.registry.acked(c.id, &t.type_url, &t.sent_version);
                    }
                }
                if subscribe.is_empty() && unsubscribe.is_empty() {
                    return Ok(());
                }
                t.subscribe(subscribe, unsubscribe);
                i
            }
            None => {
                if self.types.len() >= c.shared.opts.max_types_per_stream {
                    tracing::warn!(stream = c.id, type_url = %req.type_url, "too many types on one stream; ignoring");
                    return Ok(());
                }
                let mut t = DeltaType {
                    // Legacy wildcard: no names on the first request.
                    wildcard: subscribe.is_empty(),
                    type_url: req.type_url,
                    names: BTreeSet::new(),
                    client_has: std::mem::take(&mut req.initial_resource_versions),
                    sent_version: String::new(),
                    nonce: String::new(),
                    answered: false,
                };
                t.subscribe(subscribe, unsubscribe);
                self.types.push(t);
                self.types.len() - 1
            }
        };
        self.push(index).await
    }

    async fn push_all(&mut self) -> Result<(), Gone> {
        for i in 0..self.types.len() {
            self.push(i).await?;
        }
        Ok(())
    }

    /// Sends type `index`'s differences from what the client holds, if any
    /// (or an empty first answer).
    async fn push(&mut self, index: usize) -> Result<(), Gone> {
        let c = &self.common;
        let Some(t) = self.types.get_mut(index) else {
            return Ok(());
        };
        let set: Arc<ResourceMap> = c.shared.source.resources(&c.node, &t.type_url);
        let mut added = Vec::new();
        for (name, (version, body)) in set.iter() {
            if t.wants(name) && t.client_has.get(name) != Some(version) {
                added.push(disc::Resource {
                    name: name.clone(),
                    version: version.clone(),
                    resource: Some(body.clone()),
                    ..Default::default()
                });
            }
        }
        let mut removed: Vec<String> = t
            .client_has
            .keys()
            .filter(|name| !set.contains_key(*name))
            .cloned()
            .collect();
        removed.sort();
        if added.is_empty() && removed.is_empty() && t.answered {
            return Ok(());
        }
        let version = set_version(
            set.iter()
                .filter(|(name, _)| t.wants(name))
                .map(|(n, (v, _))| (n.as_str(), v.as_str())),
        );
        for r in &added {
            t.client_has.insert(r.name.clone(), r.version.clone());
        }
        for name in &removed {
            t.client_has.remove(name);
        }
        let nonce = c.shared.next_nonce();
        c.shared
            .registry
            .sent(c.id, &t.type_url, &version, &nonce, t.client_has.len());
        tracing::debug!(stream = c.id, type_url = %t.type_url, %version, %nonce, added = added.len(), removed = removed.len(), "sending");
        let resp = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: added,
            type_url: t.type_url.clone(),
            removed_resources: removed,
            nonce: nonce.clone(),
            ..Default::default()
        };
        t.sent_version = version;
        t.nonce = nonce;
        t.answered = true;
        c.send(resp).await
    }
}
