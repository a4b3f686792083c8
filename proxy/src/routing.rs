//! Owns `Routing`: a compiled config snapshot plus what the data plane derives
//! from it (upstream peer templates, balancer state, per-route metric
//! handles), keyed by resource name. Everything derived from a resource that
//! did not change is reused from the previous `Routing`, so an endpoint update
//! rebuilds one cluster's peers and nothing else. One `ArcSwap<Routing>` is
//! the only thing a request loads.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use corridor_config::{
    Cluster, ConfigError, FieldPath, Files, Geo, Listener, Locality, RouteAction, RouteTable,
    Snapshot, UpstreamProtocol,
};
use imbl::OrdMap;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::WrappedX509;
use prometheus::{IntCounter, IntGauge};

use crate::lb::shared::ClusterShared;
use crate::lb::state::{EndpointState, Outcome, PeakParams};
use crate::lb::{outlier, Balancer};
use crate::metrics::{Metrics, RouteStats};
use crate::tls;

/// What a request needs, derived from one snapshot.
pub(crate) struct Routing {
    /// The compiled configuration.
    pub(crate) config: Arc<Snapshot>,
    /// Served listeners by name, each with its route table.
    pub(crate) listeners: HashMap<Arc<str>, Arc<ListenerRuntime>>,
    /// Clusters by name (a persistent map: the next routing shares every
    /// cluster an update did not touch).
    pub(crate) clusters: OrdMap<Arc<str>, Arc<ClusterRuntime>>,
    /// Stats of requests that matched no route.
    pub(crate) no_route: RouteStats,
    /// Hash of the upstream CA certificates in use, to notice rotation.
    pub(crate) ca_fingerprint: u64,
    /// This Corridor's locality the balancers were built for.
    locality: Locality,
    /// The geo tables the balancers were built with.
    geo: Arc<Geo>,
    /// The client-country database (`geo.mmdb_file`), kept across changes
    /// that keep its path.
    pub(crate) geo_db: Option<Arc<crate::geo::GeoSource>>,
    /// What installing this routing changes in state it shares with the
    /// previous one (done by [`Routing::activate`], once it serves).
    settle: parking_lot::Mutex<Vec<Settle>>,
    /// Requests in flight (the process-wide gauge).
    pub(crate) active_requests: IntGauge,
    /// Responses streaming (the process-wide gauge).
    pub(crate) active_streams: IntGauge,
    /// Residency denials by policy and data class.
    pub(crate) residency_denied: prometheus::IntCounterVec,
}

/// A change to shared endpoint state that waits until a new routing serves
/// (a change that is then rejected must not have touched it).
enum Settle {
    /// A cluster's runtime was rebuilt from `old`.
    Rebuilt {
        new: Arc<ClusterRuntime>,
        old: Arc<ClusterRuntime>,
    },
    /// A cluster was removed.
    Removed(Arc<ClusterRuntime>),
}

/// A served listener and the route table it routes with.
pub(crate) struct ListenerRuntime {
    /// Its settings.
    pub(crate) config: Arc<Listener>,
    /// Its route table.
    pub(crate) table: Arc<TableRuntime>,
}

/// A route table with its metric handles, resolved on a route's first
/// request (a table of 10 000 routes costs nothing in metrics until used).
pub(crate) struct TableRuntime {
    /// The compiled table.
    pub(crate) table: Arc<RouteTable>,
    /// Per route and target: `stats[vhost][route][target]`.
    stats: Vec<Vec<Vec<OnceLock<RouteStats>>>>,
    metrics: Metrics,
}

/// Data-plane state of one cluster.
pub(crate) struct ClusterRuntime {
    /// The cluster with its current endpoints.
    pub(crate) config: Arc<Cluster>,
    /// The balancer's view of the endpoints (shared with the previous
    /// runtime when neither they nor the settings changed).
    pub(crate) lb: Arc<Balancer>,
    /// This Corridor's locality the balancer was built for.
    local: Locality,
    /// The geo tables the balancer was built with.
    geo: Arc<Geo>,
    /// State kept across changes while the cluster keeps its name.
    pub(crate) shared: Arc<ClusterShared>,
    /// Peer template per endpoint.
    pub(crate) peers: Vec<HttpPeer>,
    /// Runtime state per endpoint (same order as the endpoints), carried over
    /// from the previous runtime for every endpoint it had at the same address.
    pub(crate) states: Vec<Arc<EndpointState>>,
    /// Connect failures of this cluster.
    pub(crate) connect_failures: IntCounter,
    /// Trust roots read for it.
    ca: Option<Arc<[WrappedX509]>>,
    /// Its client certificate and key (mTLS to the upstream).
    client_cert: Option<Arc<pingora_core::utils::tls::CertKey>>,
    /// Hash of its name and trust roots, to notice a rotated bundle.
    ca_hash: u64,
    /// When its client certificate and its earliest CA expire (Unix
    /// seconds), read once when they are loaded.
    expiry: (Option<i64>, Option<i64>),
}

impl Routing {
    /// When each upstream certificate in use expires: `cluster/<name>/client`
    /// for a client certificate, `cluster/<name>/ca` for the earliest CA of
    /// its trust roots.
    pub(crate) fn cert_expiries(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for (name, c) in &self.clusters {
            let (client, ca) = c.expiry;
            out.extend(client.map(|t| (format!("cluster/{name}/client"), t)));
            out.extend(ca.map(|t| (format!("cluster/{name}/ca"), t)));
        }
        out
    }

    /// Derives the data-plane state for `config`, reusing what `prev` derived
    /// from unchanged resources. `reread_tls` reads CA bundles again even for
    /// unchanged clusters (a file reload, to pick up rotated bundles).
    pub(crate) fn build(
        config: Arc<Snapshot>,
        prev: Option<&Routing>,
        metrics: &Metrics,
        files: &dyn Files,
        reread_tls: bool,
    ) -> Result<Routing, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut settle = Vec::new();
        let locality = config.store.settings().locality.clone();
        let geo = Arc::clone(&config.store.residency().geo);
        // A new locality changes every balancer's zone preference, new geo
        // tables every endpoint's jurisdiction.
        let rebuild_all =
            reread_tls || prev.is_some_and(|p| p.locality != locality || *p.geo != *geo);
        let mut build =
            |c: &Arc<Cluster>, old: Option<&Arc<ClusterRuntime>>| match ClusterRuntime::new(
                c,
                old.map(|o| &**o),
                metrics,
                files,
                reread_tls,
                &locality,
                &geo,
            ) {
                Ok(rt) => {
                    let rt = Arc::new(rt);
                    if let Some(o) = old {
                        settle.push(Settle::Rebuilt {
                            new: Arc::clone(&rt),
                            old: Arc::clone(o),
                        });
                    }
                    Some(rt)
                }
                Err(e) => {
                    errors.push(ConfigError::new(
                        FieldPath::resource("Cluster", &c.name)
                            .field("tls")
                            .field("ca_file")
                            .to_string(),
                        e.to_string(),
                    ));
                    None
                }
            };
        let (clusters, ca_fingerprint) = match prev {
            // The store says which clusters the change touched: rebuild those.
            Some(p) if !rebuild_all => match config.store.changed_clusters_since(&p.config.store) {
                Some(changed) => {
                    let mut clusters = p.clusters.clone();
                    let mut fingerprint = p.ca_fingerprint;
                    for name in changed {
                        let old = p.clusters.get(name);
                        let new = match config.clusters.get(name) {
                            Some(c) if old.is_some_and(|o| Arc::ptr_eq(&o.config, c)) => continue,
                            Some(c) => build(c, old),
                            None => None,
                        };
                        if let Some(o) = old {
                            fingerprint = fingerprint.wrapping_sub(o.ca_hash);
                        }
                        match new {
                            Some(rt) => {
                                fingerprint = fingerprint.wrapping_add(rt.ca_hash);
                                clusters.insert(name.clone(), rt);
                            }
                            None => {
                                clusters.remove(name);
                            }
                        }
                    }
                    (clusters, fingerprint)
                }
                None => full(&config, prev, false, &mut build),
            },
            _ => full(&config, prev, rebuild_all, &mut build),
        };
        let geo_db = match geo.mmdb_file.as_deref() {
            None => None,
            Some(path) => match prev.and_then(|p| p.geo_db.as_ref()) {
                Some(old) if old.path() == std::path::Path::new(path) => Some(Arc::clone(old)),
                _ => match crate::geo::GeoSource::open(path) {
                    Ok(g) => Some(Arc::new(g)),
                    Err(e) => {
                        errors.push(ConfigError::new("geo.mmdb_file", e));
                        None
                    }
                },
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        if let Some(p) = prev {
            for (name, rt) in &p.clusters {
                if !clusters.contains_key(name) {
                    settle.push(Settle::Removed(Arc::clone(rt)));
                }
            }
        }
        let mut tables: HashMap<&str, Arc<TableRuntime>> = HashMap::new();
        for t in &config.route_tables {
            let old = prev
                .and_then(|p| {
                    p.listeners
                        .values()
                        .find(|l| Arc::ptr_eq(&l.table.table, t))
                })
                .map(|l| Arc::clone(&l.table));
            let rt = old.unwrap_or_else(|| Arc::new(TableRuntime::new(t, metrics)));
            tables.insert(t.name.as_ref(), rt);
        }
        let mut listeners = HashMap::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let Some(table) = tables.get(l.route_table.as_ref()) else {
                continue;
            };
            let old = prev.and_then(|p| p.listeners.get(&l.name));
            let rt = match old {
                Some(o) if Arc::ptr_eq(&o.config, l) && Arc::ptr_eq(&o.table, table) => {
                    Arc::clone(o)
                }
                _ => Arc::new(ListenerRuntime {
                    config: Arc::clone(l),
                    table: Arc::clone(table),
                }),
            };
            listeners.insert(l.name.clone(), rt);
        }
        Ok(Routing {
            ca_fingerprint,
            locality,
            geo,
            geo_db,
            settle: parking_lot::Mutex::new(settle),
            no_route: metrics.route_stats("", ""),
            active_requests: metrics.active_requests.clone(),
            active_streams: metrics.active_streams.clone(),
            residency_denied: metrics.residency_denied.clone(),
            config,
            listeners,
            clusters,
        })
    }
}

impl Routing {
    /// Applies what this routing changes in shared endpoint state, now that
    /// it serves: states carried over are brought in line with the new
    /// settings, removed endpoints are retired (and their ejections and
    /// metrics dropped). Runs once; later calls do nothing.
    pub(crate) fn activate(&self, metrics: &Metrics) {
        for s in std::mem::take(&mut *self.settle.lock()) {
            match s {
                Settle::Rebuilt { new, old } => settle_rebuilt(&new, &old, metrics),
                Settle::Removed(old) => {
                    retire(&old, 0..old.states.len(), metrics);
                    metrics.remove_cluster(&old.config.name);
                }
            }
        }
    }
}

/// Every cluster's runtime, reusing what `prev` has for unchanged clusters
/// (unless `rebuild_all`), and the sum of their CA hashes (order-independent).
fn full(
    config: &Snapshot,
    prev: Option<&Routing>,
    rebuild_all: bool,
    build: &mut impl FnMut(&Arc<Cluster>, Option<&Arc<ClusterRuntime>>) -> Option<Arc<ClusterRuntime>>,
) -> (OrdMap<Arc<str>, Arc<ClusterRuntime>>, u64) {
    let mut clusters = OrdMap::new();
    let mut fingerprint = 0u64;
    for (name, c) in &config.clusters {
        let old = prev.and_then(|p| p.clusters.get(name));
        let same = old.filter(|o| !rebuild_all && Arc::ptr_eq(&o.config, c));
        if let Some(rt) = same.cloned().or_else(|| build(c, old)) {
            fingerprint = fingerprint.wrapping_add(rt.ca_hash);
            clusters.insert(name.clone(), rt);
        }
    }
    (clusters, fingerprint)
}

impl TableRuntime {
    fn new(t: &Arc<RouteTable>, metrics: &Metrics) -> Self {
        let stats = t
            .virtual_hosts
            .iter()
            .map(|v| {
                v.routes
                    .iter()
                    .map(|r| {
                        let n = match &r.action {
                            RouteAction::Forward(f) => f.targets.len(),
                            RouteAction::Direct(_) => 1,
                        };
                        (0..n).map(|_| OnceLock::new()).collect()
                    })
                    .collect()
            })
            .collect();
        Self {
            table: Arc::clone(t),
            stats,
            metrics: metrics.clone(),
        }
    }

    /// Metric handles of a route's target.
    pub(crate) fn stats(&self, vhost: usize, route: usize, target: usize) -> &RouteStats {
        self.stats[vhost][route][target].get_or_init(|| {
            let r = &self.table.virtual_hosts[vhost].routes[route];
            let cluster = match &r.action {
                RouteAction::Forward(f) => f.targets[target].cluster.as_ref(),
                RouteAction::Direct(_) => "",
            };
            self.metrics.route_stats(&r.name, cluster)
        })
    }
}

impl ClusterRuntime {
    /// State for `c`, keeping the balancer of `old` when the policy is the same
    /// and its trust roots when the TLS settings are (unless `reread_tls`).
    fn new(
        c: &Arc<Cluster>,
        old: Option<&ClusterRuntime>,
        metrics: &Metrics,
        files: &dyn Files,
        reread_tls: bool,
        local: &Locality,
        geo: &Arc<Geo>,
    ) -> Result<ClusterRuntime, tls::TlsError> {
        let shared = match old {
            Some(o) => Arc::clone(&o.shared),
            None => Arc::new(ClusterShared::new(metrics, &c.name)),
        };
        let ca = match (c.tls.as_ref().and_then(|t| t.ca_file.as_ref()), old) {
            (None, _) => None,
            (Some(_), Some(o)) if !reread_tls && o.config.tls == c.tls => o.ca.clone(),
            (Some(file), _) => Some(tls::load_ca(files, file)?),
        };
        let client_cert = match (c.tls.as_ref().and_then(|t| t.client_cert.as_ref()), old) {
            (None, _) => None,
            (Some(_), Some(o)) if !reread_tls && o.config.tls == c.tls => o.client_cert.clone(),
            (Some((cert, key)), _) => Some(tls::load_client_cert(files, cert, key)?),
        };
        let expiry = match old {
            Some(o)
                if o.ca.as_ref().map(Arc::as_ptr) == ca.as_ref().map(Arc::as_ptr)
                    && o.client_cert.as_ref().map(Arc::as_ptr)
                        == client_cert.as_ref().map(Arc::as_ptr) =>
            {
                o.expiry
            }
            _ => (
                client_cert
                    .as_ref()
                    .and_then(|k| crate::identity::not_after(k.leaf().borrow_raw_cert())),
                crate::identity::earliest_not_after(
                    ca.iter()
                        .flat_map(|certs| certs.iter())
                        .map(|c| c.borrow_raw_cert().as_slice()),
                ),
            ),
        };
        let mut h = std::hash::DefaultHasher::new();
        c.name.hash(&mut h);
        for cert in ca.iter().flat_map(|certs| certs.iter()) {
            h.write(cert.borrow_raw_cert());
        }
        if let Some(k) = &client_cert {
            h.write(k.leaf().borrow_raw_cert());
        }
        // Endpoint identity is `cluster/address` (`Endpoint::id`).
        let kept: HashMap<&str, &Arc<EndpointState>> = old
            .map(|o| {
                o.config
                    .endpoints
                    .iter()
                    .map(|e| e.id.as_ref())
                    .zip(&o.states)
                    .collect()
            })
            .unwrap_or_default();
        let states: Vec<Arc<EndpointState>> = c
            .endpoints
            .iter()
            .map(|e| match kept.get(e.id.as_ref()) {
                Some(s) => Arc::clone(s),
                None => {
                    let s = EndpointState::default();
                    let _ = s
                        .latency
                        .set(metrics.endpoint_latency(&c.name, &e.address.to_string()));
                    // Every check counts as failing until it first passes (Envoy).
                    let bits = hc_mask(c, e);
                    s.hc_failing
                        .store(bits, std::sync::atomic::Ordering::Relaxed);
                    s.hc_unproven
                        .store(bits, std::sync::atomic::Ordering::Relaxed);
                    Arc::new(s)
                }
            })
            .collect();
        // The balancer depends on the endpoints, the settings and the locality only.
        let lb = match old {
            Some(o)
                if Arc::ptr_eq(&o.config.endpoints, &c.endpoints)
                    && o.config.balancing == c.balancing
                    && o.local == *local
                    && Arc::ptr_eq(&o.geo, geo) =>
            {
                Arc::clone(&o.lb)
            }
            _ => Arc::new(Balancer::new(c, local, geo)),
        };
        Ok(ClusterRuntime {
            ca_hash: if ca.is_some() || client_cert.is_some() {
                h.finish()
            } else {
                0
            },
            peers: peer_templates(c, ca.as_ref(), client_cert.as_ref()),
            lb,
            local: local.clone(),
            geo: Arc::clone(geo),
            shared,
            states,
            connect_failures: metrics.connect_failures(&c.name),
            config: Arc::clone(c),
            ca,
            client_cert,
            expiry,
        })
    }
}

impl ClusterRuntime {
    /// TLS for this cluster's health probes (the client configuration and a
    /// hash that changes with the trust roots); `None` for plaintext clusters.
    pub(crate) fn probe_tls(&self) -> Option<(Arc<rustls::ClientConfig>, u64)> {
        let t = self.config.tls.as_ref()?;
        let config = tls::probe_client_config(
            self.ca.as_deref(),
            t.insecure_skip_verify,
            self.client_cert.as_deref(),
        );
        Some((config, self.ca_hash ^ u64::from(t.insecure_skip_verify)))
    }

    /// Records how a try on endpoint `i` ended: the endpoint's state, its
    /// latency histogram and outlier detection.
    pub(crate) fn record(&self, i: usize, outcome: Outcome, latency: Option<std::time::Duration>) {
        let Some(st) = self.states.get(i) else { return };
        let lb = &self.config.balancing.lb;
        st.record(
            outcome,
            latency,
            PeakParams {
                penalty: lb.default_rtt,
                decay_s: lb.decay.as_secs_f64(),
            },
        );
        outlier::on_outcome(self, i, outcome);
    }
}

/// The health-check bits an endpoint is subject to: one per check, none
/// when the endpoint opts out.
pub(crate) fn hc_mask(c: &Cluster, e: &corridor_config::Endpoint) -> u32 {
    let n = c.balancing.health_checks.len();
    if n == 0 || e.health_check.disabled {
        0
    } else {
        u32::MAX >> (32 - n.min(32))
    }
}

/// Brings states carried from `old` in line with `new`'s settings (checks
/// or outlier detection removed), and retires the endpoints `new` dropped.
fn settle_rebuilt(new: &ClusterRuntime, old: &ClusterRuntime, metrics: &Metrics) {
    use std::sync::atomic::Ordering;
    let c = &new.config;
    let mut changed = false;
    for (e, s) in c.endpoints.iter().zip(&new.states) {
        let mask = hc_mask(c, e);
        if s.hc_failing.fetch_and(mask, Ordering::AcqRel) & !mask != 0 {
            changed = true;
        }
        s.hc_unproven.fetch_and(mask, Ordering::AcqRel);
        if c.balancing.outlier.is_none() && s.ejected() {
            crate::lb::outlier::uneject(&new.shared, s);
        }
    }
    let kept: std::collections::HashSet<*const EndpointState> =
        new.states.iter().map(Arc::as_ptr).collect();
    let gone = (0..old.states.len()).filter(|i| !kept.contains(&Arc::as_ptr(&old.states[*i])));
    retire(old, gone, metrics);
    if changed {
        new.shared.availability_changed();
    }
}

/// Retires the endpoints (by index) that left `rt`'s cluster: outlier
/// detection leaves them alone, their ejection ends and their series go.
fn retire(rt: &ClusterRuntime, gone: impl Iterator<Item = usize>, metrics: &Metrics) {
    use std::sync::atomic::Ordering;
    for i in gone {
        let s = &rt.states[i];
        s.retired.store(true, Ordering::Release);
        crate::lb::outlier::uneject(&rt.shared, s);
        metrics.remove_endpoint(&rt.config.name, &rt.config.endpoints[i].address.to_string());
    }
}

/// Builds the `HttpPeer` for each endpoint of a cluster.
fn peer_templates(
    c: &Cluster,
    ca: Option<&Arc<[WrappedX509]>>,
    client_cert: Option<&Arc<pingora_core::utils::tls::CertKey>>,
) -> Vec<HttpPeer> {
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
        group.write(cert.borrow_raw_cert());
    }
    // Connections verified for one set of identities, or made with one
    // client certificate, never serve another (Pingora's own key compares
    // client certificates by serial number only).
    if let Some(t) = &c.tls {
        t.expected_identities.hash(&mut group);
    }
    if let Some(k) = client_cert {
        group.write(k.leaf().borrow_raw_cert());
    }
    let group_key = group.finish();
    c.endpoints
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
                // A SPIFFE SVID carries no DNS name: when only SPIFFE IDs are
                // expected, the chain is verified and the ID checked instead.
                let spiffe_only = !t.expected_identities.is_empty()
                    && t.expected_identities
                        .iter()
                        .all(|i| i.starts_with("spiffe://"));
                o.verify_cert = !t.insecure_skip_verify;
                o.verify_hostname = !t.insecure_skip_verify && !spiffe_only;
                o.ca = ca.cloned();
            }
            peer.client_cert_key = client_cert.cloned();
            peer
        })
        .collect()
}
