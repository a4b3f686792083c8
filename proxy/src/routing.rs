//! Owns `Routing`: a compiled config snapshot plus what the data plane derives
//! from it once per load (upstream peer templates, balancer state carried over
//! from the previous load, per-route metric handles). One `ArcSwap<Routing>`
//! is the only thing a request loads.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use corridor_config::{Cluster, ConfigError, RouteAction, Snapshot, UpstreamProtocol};
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use prometheus::{IntCounter, IntGauge};

use crate::lb::{picker_for, Picker};
use crate::metrics::{Metrics, RouteStats};
use crate::tls;

/// What a request needs, derived from one snapshot.
pub(crate) struct Routing {
    /// The compiled configuration.
    pub(crate) config: Arc<Snapshot>,
    /// Per cluster, parallel to `config.clusters`.
    pub(crate) clusters: Vec<ClusterRuntime>,
    /// Per route and target: `stats[table][vhost][route][target]`.
    pub(crate) stats: Vec<Vec<Vec<Vec<RouteStats>>>>,
    /// Stats of requests that matched no route.
    pub(crate) no_route: RouteStats,
    /// Hash of the upstream CA files read for this state, to notice rotation.
    pub(crate) ca_fingerprint: u64,
    /// Requests in flight (the process-wide gauge).
    pub(crate) active_requests: IntGauge,
    /// Responses streaming (the process-wide gauge).
    pub(crate) active_streams: IntGauge,
}

/// Data-plane state of one cluster.
pub(crate) struct ClusterRuntime {
    /// Balancer; kept across loads while the cluster keeps its name and policy.
    pub(crate) picker: Arc<dyn Picker>,
    /// Peer template per endpoint.
    pub(crate) peers: Vec<HttpPeer>,
    /// Connect failures of this cluster.
    pub(crate) connect_failures: IntCounter,
}

impl Routing {
    /// Derives the data-plane state for `config`, reusing balancer state from `prev`.
    pub(crate) fn build(
        config: Arc<Snapshot>,
        prev: Option<&Routing>,
        metrics: &Metrics,
    ) -> Result<Routing, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let old: HashMap<&str, &Arc<dyn Picker>> = prev
            .map(|p| {
                p.config
                    .clusters
                    .iter()
                    .zip(&p.clusters)
                    .map(|(c, rt)| (c.name.as_ref(), &rt.picker))
                    .collect()
            })
            .unwrap_or_default();
        let mut clusters = Vec::with_capacity(config.clusters.len());
        let mut ca_hash = std::hash::DefaultHasher::new();
        for (ci, c) in config.clusters.iter().enumerate() {
            let picker = match old.get(c.name.as_ref()) {
                Some(p) if p.policy() == c.lb_policy => Arc::clone(p),
                _ => picker_for(c.lb_policy),
            };
            let peers = match peer_templates(c, &mut ca_hash) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(ConfigError::new(
                        format!("clusters[{ci}].tls.ca_file"),
                        e.to_string(),
                    ));
                    Vec::new()
                }
            };
            clusters.push(ClusterRuntime {
                picker,
                peers,
                connect_failures: metrics.connect_failures(&c.name),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let stats = config
            .route_tables
            .iter()
            .map(|t| {
                t.virtual_hosts
                    .iter()
                    .map(|v| {
                        v.routes
                            .iter()
                            .map(|r| match &r.action {
                                RouteAction::Forward(f) => f
                                    .targets
                                    .iter()
                                    .map(|t| {
                                        metrics
                                            .route_stats(&r.name, &config.clusters[t.cluster].name)
                                    })
                                    .collect(),
                                RouteAction::Direct(_) => vec![metrics.route_stats(&r.name, "")],
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Ok(Routing {
            ca_fingerprint: std::hash::Hasher::finish(&ca_hash),
            no_route: metrics.route_stats("", ""),
            active_requests: metrics.active_requests.clone(),
            active_streams: metrics.active_streams.clone(),
            config,
            clusters,
            stats,
        })
    }
}

/// Builds the `HttpPeer` for each endpoint of a cluster; the CA certificates
/// read are fed to `ca_hash` so a reload notices a rotated bundle.
fn peer_templates(
    c: &Cluster,
    ca_hash: &mut impl std::hash::Hasher,
) -> Result<Vec<HttpPeer>, tls::TlsError> {
    let ca = match c.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        Some(file) => Some(tls::load_ca(file)?),
        None => None,
    };
    // Pingora's pool key covers address, scheme, SNI, verification flags and the
    // client certificate, but not the trust roots: two clusters with the same
    // address and SNI but different CA bundles (or protocols) must not share
    // pooled connections, so those go into the peer's group key.
    let mut group = std::hash::DefaultHasher::new();
    (c.protocol as u8).hash(&mut group);
    c.tls
        .as_ref()
        .map(|t| t.insecure_skip_verify)
        .hash(&mut group);
    for cert in ca.iter().flat_map(|certs| certs.iter()) {
        ca_hash.write(cert.borrow_raw_cert());
        group.write(cert.borrow_raw_cert());
    }
    let group_key = group.finish();
    Ok(c.endpoints
        .iter()
        .map(|e| {
            let sni = match (&e.hostname, &c.tls) {
                (Some(h), Some(_)) => h.to_string(),
                (None, Some(t)) => t.sni.to_string(),
                _ => String::new(),
            };
            let mut peer = HttpPeer::new(e.address, c.tls.is_some(), sni);
            peer.group_key = group_key;
            let o = &mut peer.options;
            o.alpn = match c.protocol {
                UpstreamProtocol::Http1 => ALPN::H1,
                UpstreamProtocol::H2 | UpstreamProtocol::H2c => ALPN::H2,
            };
            o.connection_timeout = Some(c.connect_timeout);
            o.total_connection_timeout = Some(c.connect_timeout);
            o.idle_timeout = Some(c.pool_idle_timeout);
            o.max_h2_streams = c.max_h2_streams;
            if let Some(t) = &c.tls {
                o.verify_cert = !t.insecure_skip_verify;
                o.verify_hostname = !t.insecure_skip_verify;
                o.ca = ca.clone();
            }
            peer
        })
        .collect())
}
