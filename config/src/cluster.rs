//! Owns compiled clusters: endpoints with locality and labels (D4), the label
//! index, endpoint sets, and subset selection from fixed labels and request
//! values. Picking one endpoint from a set is the balancer's job (proxy crate).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::balancing::{Balancing, EndpointHealthCheck};
use crate::endpoint_set::EndpointSet;
use crate::route::RequestView;

/// Protocol spoken to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over TLS (ALPN h2).
    H2,
    /// HTTP/2 with prior knowledge over plaintext.
    H2c,
}

/// TLS settings towards a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// SNI and verified name; an endpoint's `hostname` overrides it.
    pub sni: Arc<str>,
    /// PEM file of trusted roots; `None` means the system roots.
    pub ca_file: Option<Arc<str>>,
    /// Skip verification (tests only).
    pub insecure_skip_verify: bool,
    /// Client certificate chain and key files (mTLS), if any.
    pub client_cert: Option<(Arc<str>, Arc<str>)>,
    /// Identities the upstream must present (SPIFFE IDs or DNS names); empty: any.
    pub expected_identities: Vec<Arc<str>>,
}

/// Where an endpoint runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// Cloud provider, for example `aws`.
    pub cloud: Arc<str>,
    /// Region, for example `us-east-1`.
    pub region: Arc<str>,
    /// Zone within the region.
    pub zone: Arc<str>,
}

/// One upstream address of a cluster.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Identity that survives config pushes: `cluster/address`.
    pub id: Arc<str>,
    /// Socket address.
    pub address: SocketAddr,
    /// Locality.
    pub locality: Locality,
    /// Labels, including `cloud`, `region` and `zone` from the locality.
    pub labels: BTreeMap<Arc<str>, Arc<str>>,
    /// Relative weight (≥ 1).
    pub weight: u32,
    /// Priority level; 0 is preferred.
    pub priority: u32,
    /// TLS name for this endpoint, if it differs from the cluster's.
    pub hostname: Option<Arc<str>>,
    /// Weight of the endpoint's locality, when locality weights are given.
    pub locality_weight: Option<u32>,
    /// How active health checks reach it.
    pub health_check: EndpointHealthCheck,
}

/// A cluster's endpoints with their label index: compiled from the cluster's
/// inline list or from an `Endpoints` resource, and replaced whole when the
/// endpoints change (route tables are not touched).
#[derive(Debug, Default)]
pub struct EndpointTable {
    /// Endpoints; an index into this list identifies an endpoint within this table.
    pub list: Vec<Endpoint>,
    /// Label key → value → endpoints carrying it.
    pub(crate) labels: HashMap<Arc<str>, HashMap<Arc<str>, EndpointSet>>,
}

impl EndpointTable {
    /// Indexes `list` by label.
    pub fn new(list: Vec<Endpoint>) -> Self {
        let n = list.len();
        let mut labels: HashMap<Arc<str>, HashMap<Arc<str>, EndpointSet>> = HashMap::new();
        for (i, e) in list.iter().enumerate() {
            for (k, v) in &e.labels {
                labels
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_insert_with(|| EndpointSet::empty(n))
                    .insert(i);
            }
        }
        Self { list, labels }
    }
}

impl std::ops::Deref for EndpointTable {
    type Target = [Endpoint];

    fn deref(&self) -> &[Endpoint] {
        &self.list
    }
}

/// A compiled cluster: its settings and its current endpoints. Cheap to clone
/// (the endpoint table is shared), so an endpoint update makes a new cluster
/// without copying or recompiling anything else.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Unique name.
    pub name: Arc<str>,
    /// Current endpoints (the cluster's inline ones, or its `Endpoints` resource).
    pub endpoints: Arc<EndpointTable>,
    /// Protocol to the endpoints.
    pub protocol: UpstreamProtocol,
    /// TLS, when the endpoints speak it.
    pub tls: Option<UpstreamTls>,
    /// Connect (TCP + TLS) timeout.
    pub connect_timeout: Duration,
    /// Close pooled connections idle this long.
    pub pool_idle_timeout: Duration,
    /// Streams per HTTP/2 connection.
    pub max_h2_streams: usize,
    /// Balancing policy, priority/locality handling, health and overload
    /// settings (shared: an endpoint update does not copy them).
    pub balancing: Arc<Balancing>,
}

impl Cluster {
    /// Every endpoint of the cluster.
    pub fn all(&self) -> EndpointSet {
        EndpointSet::full(self.endpoints.len())
    }

    /// Whether any endpoint carries label `key`.
    pub fn has_label(&self, key: &str) -> bool {
        self.endpoints.labels.contains_key(key)
    }

    /// Whether the settings (everything but the endpoints) equal `other`'s.
    pub fn same_settings(&self, other: &Cluster) -> bool {
        self.name == other.name
            && self.protocol == other.protocol
            && self.tls == other.tls
            && self.connect_timeout == other.connect_timeout
            && self.pool_idle_timeout == other.pool_idle_timeout
            && self.max_h2_streams == other.max_h2_streams
            && self.balancing == other.balancing
    }

    /// Endpoints whose labels include all of `labels`.
    pub fn matching(&self, labels: &BTreeMap<Arc<str>, Arc<str>>) -> EndpointSet {
        let mut set = self.all();
        for (k, v) in labels {
            match self.endpoints.labels.get(k).and_then(|vals| vals.get(v)) {
                Some(s) => set.intersect(s),
                None => return EndpointSet::empty(self.endpoints.len()),
            }
        }
        set
    }

    /// Endpoints whose label `key` equals `value`, or with `glob`, whose label
    /// value is a glob pattern matching `value`.
    fn with_label_value(&self, key: &str, value: &str, glob: bool) -> EndpointSet {
        let n = self.endpoints.len();
        let Some(values) = self.endpoints.labels.get(key) else {
            return EndpointSet::empty(n);
        };
        if !glob {
            return values
                .get(value)
                .cloned()
                .unwrap_or_else(|| EndpointSet::empty(n));
        }
        let mut out = EndpointSet::empty(n);
        for (pattern, set) in values {
            if glob_match(pattern, value) {
                out.union(set);
            }
        }
        out
    }
}

/// Where a request label's value comes from.
#[derive(Debug, Clone)]
pub enum LabelSource {
    /// A request header.
    Header(http::HeaderName),
    /// A query parameter.
    Query(Arc<str>),
}

/// A label whose required value comes from the request.
#[derive(Debug, Clone)]
pub struct RequestLabel {
    /// Where to read the value.
    pub source: LabelSource,
    /// The endpoint label compared with it.
    pub label: Arc<str>,
    /// Endpoint label values are glob patterns.
    pub glob: bool,
}

/// What to do when a subset is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Fail the request (503).
    None,
    /// Use every endpoint.
    Any,
    /// Use the default subset.
    DefaultSubset,
}

/// One cluster a route can send to, by name, with its subset selector. The
/// subset is resolved against the cluster's endpoints at the time of the
/// request, so endpoint updates never touch route tables, and a subset with
/// no endpoints yet is not an error (its fallback applies until they arrive).
#[derive(Debug, Clone)]
pub struct Target {
    /// Name of the cluster.
    pub cluster: Arc<str>,
    /// Relative weight among the route's targets.
    pub weight: u32,
    /// Labels every selected endpoint must carry (empty: all endpoints).
    pub labels: BTreeMap<Arc<str>, Arc<str>>,
    /// Labels read from the request.
    pub from_request: Arc<[RequestLabel]>,
    /// Fallback when the subset is empty.
    pub fallback: Fallback,
    /// Labels of the default subset.
    pub default_subset: BTreeMap<Arc<str>, Arc<str>>,
}

/// Why no endpoint set could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubsetError {
    /// The subset selected by the request is empty and the fallback is `none`.
    Empty,
    /// The cluster has no endpoints at all.
    NoEndpoints,
}

impl Target {
    /// The endpoints this request may use in `cluster`, applying the fallback.
    pub fn candidates(
        &self,
        cluster: &Cluster,
        req: &RequestView<'_>,
    ) -> Result<EndpointSet, SubsetError> {
        if cluster.endpoints.is_empty() {
            return Err(SubsetError::NoEndpoints);
        }
        let mut set = if self.labels.is_empty() {
            cluster.all()
        } else {
            cluster.matching(&self.labels)
        };
        for rl in self.from_request.iter() {
            if set.is_empty() {
                break;
            }
            let value = match &rl.source {
                LabelSource::Header(name) => req.header(name).map(std::borrow::Cow::Borrowed),
                LabelSource::Query(name) => req.query_param(name),
            };
            match value {
                Some(v) => set.intersect(&cluster.with_label_value(&rl.label, &v, rl.glob)),
                None => set.clear(),
            }
        }
        if !set.is_empty() {
            return Ok(set);
        }
        match self.fallback {
            Fallback::None => Err(SubsetError::Empty),
            Fallback::Any => Ok(cluster.all()),
            Fallback::DefaultSubset => {
                let d = cluster.matching(&self.default_subset);
                if d.is_empty() {
                    Err(SubsetError::Empty)
                } else {
                    Ok(d)
                }
            }
        }
    }
}

/// Glob match with `*` (any run) and `?` (one character); no allocation.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests;
