//! Owns the per-request state (`RequestCtx`) that Pingora threads through every
//! phase: the snapshot the request started with, the matched route, the tries
//! so far and what was sent.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use corridor_config::{EndpointSet, Forward, ListenerHttp, Route, RouteAction, Target};
use http::HeaderValue;

use crate::errors::LocalError;
use crate::lb::shared::{ConnectionGuard, RequestGuard, RetryGuard};
use crate::lb::state::{InFlight, Outcome};
use crate::metrics::RouteStats;
use crate::routing::{ClusterRuntime, ListenerRuntime, Routing};

/// The matched route: virtual host and route indices in the listener's table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteRef {
    pub(crate) vhost: usize,
    pub(crate) route: usize,
}

/// State of one request across phases and retries.
pub struct RequestCtx {
    /// The listener (and its route table) the request arrived on.
    pub(crate) listener: Arc<ListenerRuntime>,
    pub(crate) start: Instant,
    /// The connection's peer address.
    pub(crate) peer: Option<IpAddr>,
    /// The client's verified identity (mTLS listeners).
    pub(crate) identity: Option<std::sync::Arc<crate::identity::PeerIdentity>>,
    /// The peer is one of the listener's trusted proxies.
    pub(crate) trusted_peer: bool,
    /// The trusted client address (the peer, or from trusted forwarding headers).
    pub(crate) client: Option<IpAddr>,
    /// The request's `x-request-id`, as forwarded and returned.
    pub(crate) request_id: Option<HeaderValue>,

    pub(crate) route: Option<RouteRef>,
    /// Index of the chosen target within the route's targets.
    pub(crate) target: usize,
    /// The chosen target's cluster.
    pub(crate) cluster: Option<Arc<ClusterRuntime>>,
    /// Endpoints this request may use (subset after fallback).
    pub(crate) candidates: EndpointSet,
    /// Endpoints already tried.
    pub(crate) tried: EndpointSet,
    /// Tries started (1 = first try).
    pub(crate) attempts: u32,
    /// Endpoint of the current try.
    pub(crate) endpoint: Option<usize>,
    /// Deadline for response headers.
    pub(crate) deadline: Option<Instant>,
    /// Response headers were sent to the client.
    pub(crate) response_started: bool,
    /// The current try failed with a status we chose to retry.
    pub(crate) status_retry: bool,
    /// A free retry after a stale pooled connection was used.
    pub(crate) stale_retry_used: bool,
    /// A failure Corridor answered for itself.
    pub(crate) local_error: Option<LocalError>,
    /// Status received from the upstream (0 if none).
    pub(crate) upstream_status: u16,
    /// The response is counted in `corridor_active_streams`.
    streaming: bool,
    /// The current try, counted in flight on its endpoint until the next try
    /// or the end of the request (dropping it ends the count, also on cancel).
    pub(crate) in_flight: Option<InFlight>,
    /// When the current try started; `None` once its outcome is recorded.
    pub(crate) try_started: Option<Instant>,
    /// The request's key for hashing balancers.
    pub(crate) hash: Option<u64>,
    /// The client's jurisdiction, on a route that prefers the nearest endpoints.
    pub(crate) nearest: Option<u8>,
    /// The request counted against the cluster's `max_requests`.
    pub(crate) request_guard: Option<RequestGuard>,
    /// The current try's connection, counted against `max_connections`.
    pub(crate) connection: Option<ConnectionGuard>,
    /// The retry in flight, counted against the retry limit until its outcome.
    pub(crate) retry_guard: Option<RetryGuard>,
    /// The route's residency decision.
    pub(crate) residency: Option<crate::residency::Decision>,
    /// Trusted headers this client may not set: removed before forwarding.
    pub(crate) strip: smallvec::SmallVec<[http::HeaderName; 2]>,
    /// The routing state the request started with; kept to the end. Declared
    /// last so that it is dropped last: the listener and cluster above are
    /// released first, and the configuration they belong to is then freed
    /// by the control thread's reclaim, not here.
    pub(crate) routing: Arc<Routing>,
}

impl RequestCtx {
    /// A context for a new request holding `routing`; counts it as active.
    pub(crate) fn new(routing: Arc<Routing>, listener: Arc<ListenerRuntime>) -> Self {
        routing.active_requests.inc();
        Self {
            routing,
            listener,
            start: Instant::now(),
            peer: None,
            identity: None,
            trusted_peer: false,
            client: None,
            request_id: None,
            route: None,
            target: 0,
            cluster: None,
            candidates: EndpointSet::default(),
            tried: EndpointSet::default(),
            attempts: 0,
            endpoint: None,
            deadline: None,
            response_started: false,
            status_retry: false,
            stale_retry_used: false,
            local_error: None,
            upstream_status: 0,
            streaming: false,
            in_flight: None,
            try_started: None,
            hash: None,
            nearest: None,
            request_guard: None,
            connection: None,
            retry_guard: None,
            residency: None,
            strip: smallvec::SmallVec::new(),
        }
    }

    /// Tells the current try's endpoint how the try ended; only the first
    /// outcome of a try counts (a retried status also ends in an error).
    pub(crate) fn record_try(&mut self, outcome: Outcome) {
        let (Some(rt), Some(i), Some(started)) =
            (&self.cluster, self.endpoint, self.try_started.take())
        else {
            return;
        };
        let latency = matches!(outcome, Outcome::Status(_)).then(|| started.elapsed());
        rt.record(i, outcome, latency);
        // A retry stops counting against the retry limit once it has an outcome.
        self.retry_guard = None;
    }

    /// The listener's request handling settings.
    pub(crate) fn http(&self) -> &ListenerHttp {
        &self.listener.config.http
    }

    /// What an error response for this request may carry.
    pub(crate) fn error_info(&self) -> crate::errors::ErrorInfo<'_> {
        crate::errors::ErrorInfo {
            request_id: self.request_id.as_ref(),
            detail: self.http().error_detail,
        }
    }

    /// The matched route.
    pub(crate) fn route(&self) -> Option<&Route> {
        let r = self.route?;
        Some(&self.listener.table.table.virtual_hosts[r.vhost].routes[r.route])
    }

    /// The matched route's forwarding settings.
    pub(crate) fn forward(&self) -> Option<&Forward> {
        match &self.route()?.action {
            RouteAction::Forward(f) => Some(f),
            RouteAction::Direct(_) => None,
        }
    }

    /// The chosen target.
    pub(crate) fn target(&self) -> Option<&Target> {
        self.forward().map(|f| &f.targets[self.target])
    }

    /// Metric handles for this request's route and target.
    pub(crate) fn stats(&self) -> &RouteStats {
        match self.route {
            Some(r) => self.listener.table.stats(r.vhost, r.route, self.target),
            None => &self.routing.no_route,
        }
    }

    /// Name of the cluster of the chosen target, or "".
    pub(crate) fn cluster_name(&self) -> &str {
        self.target().map_or("", |t| t.cluster.as_ref())
    }

    /// Address of the current endpoint, if a try started.
    pub(crate) fn endpoint_addr(&self) -> Option<std::net::SocketAddr> {
        let i = self.endpoint?;
        Some(self.cluster.as_ref()?.config.endpoints.get(i)?.address)
    }

    /// The jurisdiction of the current try's endpoint, if it has one.
    pub(crate) fn endpoint_jurisdiction(&self) -> Option<&str> {
        let i = self.endpoint?;
        let rt = self.cluster.as_ref()?;
        let geo = &self.routing.config.store.residency().geo;
        let j = rt.lb.jurisdiction_of(i)?;
        geo.jurisdictions.get(usize::from(j)).map(|s| s.as_ref())
    }

    /// Counts the response as streaming until the request ends.
    pub(crate) fn start_streaming(&mut self) {
        if !self.streaming {
            self.routing.active_streams.inc();
            self.streaming = true;
        }
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        self.routing.active_requests.dec();
        if self.streaming {
            self.routing.active_streams.dec();
        }
    }
}
