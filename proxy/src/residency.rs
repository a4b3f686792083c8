//! Owns the per-request residency decision (D5): reads the data classes and
//! subject jurisdictions a request carries (trusted headers only from
//! trusted peers, a tenant's class and home, the route's default class, the
//! client's country), asks the
//! route's policy which endpoint jurisdictions may serve it, and narrows the
//! request's candidates before any pick. Nothing after this (retries,
//! priority failover, panic mode, hash rings) sees an endpoint outside it.

use std::net::IpAddr;
use std::sync::Arc;

use corridor_config::{EndpointSet, Geo, JurisdictionSet, ResidencyPolicy};
use http::{HeaderMap, HeaderName};
use smallvec::SmallVec;

use crate::routing::ClusterRuntime;

/// What the policy decided for one request. The labels for messages and
/// audit lines are built only when one is written.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    /// The policy.
    pub(crate) policy: Arc<ResidencyPolicy>,
    /// The geo tables the decision used.
    geo: Arc<Geo>,
    /// The data classes read: known ones by index, unknown ones by name.
    classes: SmallVec<[Class; 2]>,
    /// The subject jurisdictions read.
    subjects: SmallVec<[u8; 2]>,
    /// Endpoint jurisdictions allowed; `None`: no restriction.
    pub(crate) allowed: Option<JurisdictionSet>,
    /// The candidates the policy took away from the request.
    pub(crate) excluded: EndpointSet,
}

/// A data class as read from a request.
#[derive(Debug, Clone)]
enum Class {
    Known(usize),
    Unknown(Box<str>),
}

impl Decision {
    /// Whether the policy stopped this request: it is enforced and took away
    /// endpoints of `rt` that could serve now (usable ones). Only then is a
    /// failure of the allowed endpoints a residency denial rather than an
    /// outage.
    pub(crate) fn stopped(&self, rt: &ClusterRuntime) -> bool {
        !self.policy.dry_run
            && self
                .excluded
                .iter()
                .any(|i| rt.states.get(i).is_some_and(|s| s.usable()))
    }

    /// The data classes for a metric label: known names only (`unknown`
    /// for any other value), so that clients cannot grow the series.
    pub(crate) fn class_label(&self) -> String {
        let names: SmallVec<[&str; 2]> = self
            .classes
            .iter()
            .map(|c| match c {
                Class::Known(i) => self.policy.classes[*i].as_ref(),
                Class::Unknown(_) => "unknown",
            })
            .collect();
        join(&names)
    }

    /// The data classes, comma-separated (`-` for none).
    pub(crate) fn classes(&self) -> String {
        let names: SmallVec<[&str; 2]> = self
            .classes
            .iter()
            .map(|c| match c {
                Class::Known(i) => self.policy.classes[*i].as_ref(),
                Class::Unknown(n) => n,
            })
            .collect();
        join(&names)
    }

    /// The subject jurisdictions (`-` for none).
    pub(crate) fn subjects(&self) -> String {
        let names: SmallVec<[&str; 2]> = self
            .subjects
            .iter()
            .map(|j| self.geo.jurisdictions[usize::from(*j)].as_ref())
            .collect();
        join(&names)
    }

    /// The geo tables the decision used.
    pub(crate) fn geo(&self) -> &Geo {
        &self.geo
    }

    /// The allowed jurisdictions (`any` without restriction, `-` for none).
    pub(crate) fn allowed_names(&self) -> String {
        self.allowed
            .map_or_else(|| "any".to_string(), |a| join(&self.geo.names(a)))
    }
}

fn join(v: &[&str]) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.join(",")
    }
}

/// Reads the request's classes and subjects and decides. `peer` is the
/// connection's address (trusted headers are honoured only from their
/// peers), `country` the client's country from a database, if any.
pub(crate) fn decide(
    policy: &Arc<ResidencyPolicy>,
    geo: &Arc<Geo>,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    route_class: Option<&str>,
    country: Option<[u8; 2]>,
) -> Decision {
    let mut classes: SmallVec<[Class; 2]> = SmallVec::new();
    let read = |name: &str| match policy.class(name) {
        Some(i) => Class::Known(i),
        None => Class::Unknown(name.into()),
    };
    if let Some(h) = policy.class_header.as_ref().filter(|h| h.trusts(peer)) {
        classes.extend(values(headers, &h.name).map(read));
    }
    let mut subjects: SmallVec<[u8; 2]> = SmallVec::new();
    let mut unknown_subject = false;
    // A tenant adds its class and its home jurisdiction; an unknown tenant
    // from a trusted peer is the strictest reading.
    if let Some(t) = policy.tenants.as_ref().filter(|t| t.header.trusts(peer)) {
        for v in values(headers, &t.header.name) {
            match t.table.get(v) {
                Some((class, home)) => {
                    if let Some(c) = class {
                        classes.push(Class::Known(*c));
                    }
                    subjects.extend(*home);
                }
                None => {
                    classes.push(Class::Unknown(format!("tenant:{v}").into()));
                }
            }
        }
    }
    if classes.is_empty() {
        classes.extend(route_class.map(read));
    }
    if let Some(h) = policy.subject_header.as_ref().filter(|h| h.trusts(peer)) {
        for v in values(headers, &h.name) {
            match geo.jurisdiction(v).or_else(|| geo.country(v.as_bytes())) {
                Some(j) => subjects.push(j),
                None => unknown_subject = true,
            }
        }
    }
    if policy.subject_from_geo {
        // Every country the header gives and the database's: all count (a
        // known subject can only widen what is allowed, so none may win alone).
        if let Some(h) = geo.country_header.as_ref().filter(|h| h.trusts(peer)) {
            for v in values(headers, &h.name) {
                match geo.country(v.as_bytes()) {
                    Some(j) => subjects.push(j),
                    None => unknown_subject = true,
                }
            }
        }
        if let Some(j) = country.and_then(|c| geo.country(&c)) {
            subjects.push(j);
        }
    }
    subjects.sort_unstable();
    subjects.dedup();
    let indices: SmallVec<[Option<usize>; 2]> = classes
        .iter()
        .map(|c| match c {
            Class::Known(i) => Some(*i),
            Class::Unknown(_) => None,
        })
        .collect();
    let mut allowed = policy.decide(&indices, &subjects);
    // A subject header that names no known place: the strictest reading.
    if unknown_subject {
        allowed = Some(allowed.unwrap_or(u64::MAX) & policy.strictest(None));
    }
    Decision {
        policy: Arc::clone(policy),
        geo: Arc::clone(geo),
        classes,
        subjects,
        allowed,
        excluded: EndpointSet::default(),
    }
}

/// Every value of header `name`, split at commas and trimmed.
fn values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The client's jurisdiction for nearest-first routing: the first country of
/// the trusted country header that the tables know, else the database's for
/// the trusted client address. A preference, not a rule: residency is
/// decided separately, from every value.
pub(crate) fn client_jurisdiction(
    geo: &Geo,
    db: Option<&crate::geo::GeoSource>,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
) -> Option<u8> {
    let from_header = geo
        .country_header
        .as_ref()
        .filter(|h| h.trusts(peer))
        .and_then(|h| values(headers, &h.name).find_map(|v| geo.country(v.as_bytes())));
    from_header.or_else(|| geo.country(&db?.country(client?)?))
}

/// The endpoints of `rt` whose jurisdiction is in `allowed`.
pub(crate) fn endpoints_in(rt: &ClusterRuntime, allowed: JurisdictionSet) -> EndpointSet {
    rt.lb.in_jurisdictions(allowed, rt.states.len())
}

/// Every trusted header of the configuration (of each policy, and the geo
/// country header) that `peer` may not set: they are removed from its
/// requests on every route before forwarding.
pub(crate) fn untrusted_headers(
    settings: &corridor_config::Residency,
    peer: Option<IpAddr>,
) -> SmallVec<[HeaderName; 2]> {
    settings
        .trusted_headers
        .iter()
        .filter(|h| !h.trusts(peer))
        .map(|h| h.name.clone())
        .collect()
}

/// The local error for a request the policy stops: 451, naming the policy,
/// the data class, the subject's jurisdiction, what is allowed, and `why`.
pub(crate) fn denied(ctx: &crate::proxy::RequestCtx, why: String) -> crate::errors::LocalError {
    let message = match &ctx.residency {
        Some(d) => format!(
            "residency policy `{}` allows data class {} of a subject in {} only on endpoints in {}: {why}",
            d.policy.name,
            d.classes(),
            d.subjects(),
            d.allowed_names()
        ),
        None => why,
    };
    crate::errors::LocalError::new(crate::errors::ErrorKind::ResidencyDenied, message)
}

/// Writes one audit line for a residency decision (target
/// `corridor::residency`): request id, route, policy, class, subject,
/// decision and, when a try started, the endpoint's jurisdiction.
pub(crate) fn audit(
    ctx: &crate::proxy::RequestCtx,
    d: &Decision,
    decision: &str,
    endpoint_jurisdiction: Option<&str>,
) {
    if !tracing::enabled!(target: "corridor::residency", tracing::Level::INFO) {
        return;
    }
    tracing::info!(
        target: "corridor::residency",
        request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
        route = ctx.route().map_or("", |r| r.name.as_ref()),
        policy = %d.policy.name,
        data_class = %d.classes(),
        subject_jurisdiction = %d.subjects(),
        allowed = %d.allowed_names(),
        decision,
        endpoint_jurisdiction = endpoint_jurisdiction.unwrap_or("-"),
        dry_run = d.policy.dry_run,
        "residency"
    );
}

/// Writes the audit line of a request denied because its route's policy
/// `policy` does not resolve (no decision was made).
pub(crate) fn audit_unresolved(ctx: &crate::proxy::RequestCtx, policy: &str) {
    tracing::info!(
        target: "corridor::residency",
        request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
        route = ctx.route().map_or("", |r| r.name.as_ref()),
        policy,
        data_class = "-",
        subject_jurisdiction = "-",
        allowed = "-",
        decision = "deny",
        endpoint_jurisdiction = "-",
        reason = "the policy is not defined",
        "residency"
    );
}

#[cfg(test)]
mod tests;
