//! Owns request routing over a compiled route table: virtual host lookup by a
//! hash of the Host (exact, then longest wildcard), then the first route whose
//! match holds. Large tables are indexed by exact path and path prefix so that
//! a lookup costs about the same with 10 routes as with 10 000.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use crate::action::{HeaderMutation, RouteAction};
use crate::request::Cidr;

/// The parts of a request that routing reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Path without the query string.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The trusted client address (see the listener's forwarding policy).
    pub client: Option<IpAddr>,
}

impl<'a> RequestView<'a> {
    /// The first value of header `name` as text.
    pub fn header(&self, name: &HeaderName) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'a, str>> {
        self.query_values(name).next()
    }

    /// Every value of query parameter `name`, percent-decoded; only values of
    /// matching names are decoded.
    pub fn query_values<'n>(&self, name: &'n str) -> impl Iterator<Item = Cow<'a, str>> + 'n
    where
        'a: 'n,
    {
        self.query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(move |pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k) == name).then(|| percent_decode(v))
            })
    }
}

/// Decodes `%XX` and `+` in a query component; borrows when nothing is encoded.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A compiled route table.
#[derive(Debug)]
pub struct RouteTable {
    /// Unique name.
    pub name: Arc<str>,
    /// Virtual hosts in configuration order.
    pub virtual_hosts: Vec<VirtualHost>,
    pub(crate) hosts: HostIndex,
    /// Names of the clusters its routes send to.
    pub clusters: std::collections::BTreeSet<Arc<str>>,
    /// Each cluster reference with the field that makes it.
    pub(crate) cluster_refs: Vec<(Arc<str>, crate::error::FieldPath<'static>)>,
    /// Each residency policy reference (resolved against the store's policies).
    pub(crate) residency_refs: Vec<ResidencyRef>,
    /// The first route that prefers the nearest endpoints, if any (it needs
    /// a source of the client's country).
    pub(crate) nearest_ref: Option<crate::error::FieldPath<'static>>,
}

/// A route's reference to a residency policy and data class.
#[derive(Debug)]
pub(crate) struct ResidencyRef {
    pub(crate) policy: Arc<str>,
    pub(crate) class: Option<Arc<str>>,
    pub(crate) path: crate::error::FieldPath<'static>,
    pub(crate) class_path: crate::error::FieldPath<'static>,
}

/// The residency policy that applies to a route.
#[derive(Debug, Clone)]
pub struct RouteResidency {
    /// The policy's name.
    pub policy: Arc<str>,
    /// The route's default data class.
    pub class: Option<Arc<str>>,
}

/// Domain → virtual host lookup.
#[derive(Debug, Default)]
pub(crate) struct HostIndex {
    pub(crate) exact: HashMap<Box<str>, usize>,
    /// Exact domains with a port, `host:port`; looked up first when the request names a port.
    pub(crate) exact_port: HashMap<Box<str>, usize>,
    /// `*.example.com` stored as `.example.com`; longest suffix wins.
    pub(crate) suffix: HashMap<Box<str>, usize>,
    pub(crate) suffix_lens: Vec<usize>,
    /// `api.*` stored as `api.`; longest prefix wins.
    pub(crate) prefix: HashMap<Box<str>, usize>,
    pub(crate) prefix_lens: Vec<usize>,
    pub(crate) any: Option<usize>,
}

impl RouteTable {
    /// The virtual host serving `host` (a Host header or :authority value).
    pub fn virtual_host(&self, host: &str) -> Option<usize> {
        let h = &self.hosts;
        if !h.exact_port.is_empty() {
            if let Some(i) = host_with_port(host).and_then(|k| h.exact_port.get(k.as_ref())) {
                return Some(*i);
            }
        }
        let host = normalize_host(host);
        if let Some(i) = h.exact.get(host.as_ref()) {
            return Some(*i);
        }
        for &len in &h.suffix_lens {
            if len < host.len() && host.is_char_boundary(host.len() - len) {
                if let Some(i) = h.suffix.get(&host[host.len() - len..]) {
                    return Some(*i);
                }
            }
        }
        for &len in &h.prefix_lens {
            if len < host.len() && host.is_char_boundary(len) {
                if let Some(i) = h.prefix.get(&host[..len]) {
                    return Some(*i);
                }
            }
        }
        h.any
    }

    /// Finds the virtual host and route for a request: `(vhost index, route index)`.
    pub fn find(&self, host: &str, req: &RequestView<'_>) -> Option<(usize, usize)> {
        let v = self.virtual_host(host)?;
        let r = self.virtual_hosts[v].find(req)?;
        Some((v, r))
    }
}

/// Lower-cases and strips the port and a trailing dot; borrows when already clean.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let no_port = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rfind(':') {
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        }
    };
    let trimmed = no_port.strip_suffix('.').unwrap_or(no_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// `host:port` lower-cased with the host's trailing dot removed, when `host` names a port.
fn host_with_port(host: &str) -> Option<Cow<'_, str>> {
    // `port` includes its colon; an IPv6 literal without a port ends in `]` and has none.
    let port = &host[host.rfind(':')?..];
    if port.len() < 2 || !port[1..].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let name = normalize_host(host);
    let mut k = String::with_capacity(name.len() + port.len());
    k.push_str(&name);
    k.push_str(port);
    Some(Cow::Owned(k))
}

/// A compiled virtual host.
#[derive(Debug)]
pub struct VirtualHost {
    /// Name, for logs.
    pub name: Arc<str>,
    /// Routes in order.
    pub routes: Vec<Route>,
    pub(crate) index: RouteIndex,
}

/// Candidate routes by path shape; each list is in ascending route order.
#[derive(Debug, Default)]
pub(crate) struct RouteIndex {
    pub(crate) exact: HashMap<Box<str>, Vec<u32>>,
    pub(crate) prefix: HashMap<Box<str>, Vec<u32>>,
    /// Distinct prefix lengths, ascending.
    pub(crate) prefix_lens: Vec<usize>,
    /// Routes matching by regex or on any path.
    pub(crate) other: Vec<u32>,
}

impl VirtualHost {
    /// Index of the first route matching `req`.
    pub fn find(&self, req: &RequestView<'_>) -> Option<usize> {
        let idx = &self.index;
        let mut best = u32::MAX;
        let scan = |list: &[u32], best: &mut u32| {
            for &i in list {
                if i >= *best {
                    break;
                }
                if self.routes[i as usize].matcher.matches(req) {
                    *best = i;
                    break;
                }
            }
        };
        if let Some(list) = idx.exact.get(req.path) {
            scan(list, &mut best);
        }
        for &len in &idx.prefix_lens {
            if len > req.path.len() {
                break;
            }
            if req.path.is_char_boundary(len) {
                if let Some(list) = idx.prefix.get(&req.path[..len]) {
                    scan(list, &mut best);
                }
            }
        }
        scan(&idx.other, &mut best);
        (best != u32::MAX).then_some(best as usize)
    }
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Name, used as the `route` metric label.
    pub name: Arc<str>,
    /// Conditions.
    pub matcher: RouteMatch,
    /// What to do.
    pub action: RouteAction,
    /// Request header edits (virtual host's, then route's).
    pub request_headers: HeaderMutation,
    /// Response header edits (virtual host's, then route's).
    pub response_headers: HeaderMutation,
    /// Its residency policy (its own or its virtual host's).
    pub residency: Option<RouteResidency>,
    /// Prefer the endpoints nearest the client (geo preferred regions, then
    /// the client's jurisdiction, then any).
    pub prefer_nearest: bool,
    /// Who may use it (its own rules or its virtual host's).
    pub authorization: Option<Arc<crate::identity::Authorization>>,
}

/// How a route matches the path.
#[derive(Debug)]
pub enum PathMatch {
    /// Any path.
    Any,
    /// Path equals.
    Exact(Box<str>),
    /// Path starts with.
    Prefix(Box<str>),
    /// Path fully matches.
    Regex(Regex),
}

/// All conditions of a route.
#[derive(Debug)]
pub struct RouteMatch {
    /// Path condition.
    pub path: PathMatch,
    /// Allowed methods; empty allows all.
    pub methods: Vec<Method>,
    /// Header conditions.
    pub headers: Vec<HeaderCondition>,
    /// Query parameter conditions.
    pub query: Vec<QueryCondition>,
    /// Client address ranges; empty allows any client.
    pub clients: Vec<Cidr>,
}

impl RouteMatch {
    /// Whether every condition holds for `req`.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => req.path == p.as_ref(),
            PathMatch::Prefix(p) => req.path.starts_with(p.as_ref()),
            PathMatch::Regex(r) => r.is_match(req.path),
        };
        path_ok
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && self.headers.iter().all(|h| h.matches(req.headers))
            && self.query.iter().all(|q| q.matches(req))
            && (self.clients.is_empty()
                || req
                    .client
                    .is_some_and(|ip| self.clients.iter().any(|c| c.contains(ip))))
    }
}

/// How a string value is compared.
#[derive(Debug)]
pub enum ValueMatch {
    /// Equal.
    Exact(Box<str>),
    /// Starts with.
    Prefix(Box<str>),
    /// Fully matches.
    Regex(Regex),
    /// Present, any value.
    Present,
    /// Absent.
    Absent,
}

impl ValueMatch {
    fn value(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => v == e.as_ref(),
            ValueMatch::Prefix(p) => v.starts_with(p.as_ref()),
            ValueMatch::Regex(r) => r.is_match(v),
            ValueMatch::Present => true,
            ValueMatch::Absent => false,
        }
    }
}

/// A condition on a header: holds when any value of the header satisfies it.
#[derive(Debug)]
pub struct HeaderCondition {
    /// Header name.
    pub name: HeaderName,
    /// Comparison.
    pub value: ValueMatch,
    /// Invert the outcome.
    pub invert: bool,
}

impl HeaderCondition {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter().peekable();
        let hit = match &self.value {
            ValueMatch::Absent => values.peek().is_none(),
            ValueMatch::Present => values.peek().is_some(),
            m => values.any(|v| v.to_str().is_ok_and(|v| m.value(v))),
        };
        hit != self.invert
    }
}

/// A condition on a query parameter.
#[derive(Debug)]
pub struct QueryCondition {
    /// Parameter name (decoded).
    pub name: Box<str>,
    /// Comparison.
    pub value: ValueMatch,
}

impl QueryCondition {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        let mut values = req.query_values(&self.name);
        match &self.value {
            ValueMatch::Absent => values.next().is_none(),
            m => values.any(|v| m.value(&v)),
        }
    }
}

/// Full-match regex: wraps the pattern in `^(?:…)$`.
pub(crate) fn full_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

#[cfg(test)]
mod tests;
