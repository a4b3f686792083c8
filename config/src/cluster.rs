//! Owns compiled clusters: endpoints with locality and labels (D4), the label
//! index, endpoint sets, and subset selection from fixed labels and request
//! values. Picking one endpoint from a set is the balancer's job (proxy crate).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// How a cluster picks among the endpoints of a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Weighted random.
    Random,
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
}

/// A compiled cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Unique name.
    pub name: Arc<str>,
    /// Endpoints; an index into this list identifies an endpoint within this snapshot.
    pub endpoints: Vec<Endpoint>,
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
    /// Endpoint picking policy.
    pub lb_policy: LbPolicy,
    /// Label key → value → endpoints carrying it.
    pub(crate) labels: HashMap<Arc<str>, HashMap<Arc<str>, EndpointSet>>,
}

impl Cluster {
    /// Every endpoint of the cluster.
    pub fn all(&self) -> EndpointSet {
        EndpointSet::full(self.endpoints.len())
    }

    /// Whether any endpoint carries label `key`.
    pub fn has_label(&self, key: &str) -> bool {
        self.labels.contains_key(key)
    }

    /// Endpoints whose labels include all of `labels`.
    pub fn matching(&self, labels: &BTreeMap<Arc<str>, Arc<str>>) -> EndpointSet {
        let mut set = self.all();
        for (k, v) in labels {
            match self.labels.get(k).and_then(|vals| vals.get(v)) {
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
        let Some(values) = self.labels.get(key) else {
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

/// One cluster a route can send to, with its precomputed subsets.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index of the cluster in the snapshot.
    pub cluster: usize,
    /// Relative weight among the route's targets.
    pub weight: u32,
    /// Endpoints matching the route's fixed labels (all endpoints when none).
    pub fixed: EndpointSet,
    /// Labels read from the request.
    pub from_request: Arc<[RequestLabel]>,
    /// Fallback when the subset is empty.
    pub fallback: Fallback,
    /// Endpoints of the default subset.
    pub default_subset: EndpointSet,
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
        let mut set = self.fixed.clone();
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
            Fallback::DefaultSubset if !self.default_subset.is_empty() => {
                Ok(self.default_subset.clone())
            }
            Fallback::DefaultSubset => Err(SubsetError::Empty),
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
