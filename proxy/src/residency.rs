//! Owns the per-request residency decision (D5): reads the data classes and
//! subject jurisdictions a request carries (trusted headers only from
//! trusted peers, the route's default class, the client's country), asks the
//! route's policy which endpoint jurisdictions may serve it, and narrows the
//! request's candidates before any pick. Nothing after this (retries,
//! priority failover, panic mode, hash rings) sees an endpoint outside it.

use std::net::IpAddr;
use std::sync::Arc;

use corridor_config::{EndpointSet, Geo, JurisdictionSet, ResidencyPolicy, TrustedHeader};
use http::{HeaderMap, HeaderName};
use smallvec::SmallVec;

use crate::routing::ClusterRuntime;

/// What the policy decided for one request.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    /// The policy.
    pub(crate) policy: Arc<ResidencyPolicy>,
    /// The data classes, as read (`-` for none).
    pub(crate) classes: String,
    /// The subject jurisdictions, as read (`-` for none).
    pub(crate) subjects: String,
    /// Endpoint jurisdictions allowed; `None`: no restriction.
    pub(crate) allowed: Option<JurisdictionSet>,
    /// The policy took endpoints away from the request's candidates.
    pub(crate) excluded: bool,
    /// Names of the allowed jurisdictions, for messages.
    pub(crate) allowed_names: String,
}

/// Reads the request's classes and subjects and decides. `peer` is the
/// connection's address (trusted headers are honoured only from their
/// peers), `country` the client's country from a database, if any.
pub(crate) fn decide(
    policy: &Arc<ResidencyPolicy>,
    geo: &Geo,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    route_class: Option<&str>,
    country: Option<[u8; 2]>,
) -> Decision {
    let mut classes: SmallVec<[Option<usize>; 2]> = SmallVec::new();
    let mut class_names: SmallVec<[&str; 2]> = SmallVec::new();
    if let Some(h) = policy.class_header.as_ref().filter(|h| h.trusts(peer)) {
        for v in values(headers, &h.name) {
            classes.push(policy.class(v));
            class_names.push(v);
        }
    }
    if classes.is_empty() {
        if let Some(c) = route_class {
            classes.push(policy.class(c));
            class_names.push(c);
        }
    }
    let mut subjects: SmallVec<[u8; 2]> = SmallVec::new();
    let mut unknown_subject = false;
    if let Some(h) = policy.subject_header.as_ref().filter(|h| h.trusts(peer)) {
        for v in values(headers, &h.name) {
            match geo.jurisdiction(v).or_else(|| geo.country(v.as_bytes())) {
                Some(j) => subjects.push(j),
                None => unknown_subject = true,
            }
        }
    }
    if policy.subject_from_geo {
        let from_header = geo
            .country_header
            .as_ref()
            .filter(|h| h.trusts(peer))
            .and_then(|h| values(headers, &h.name).next())
            .and_then(|v| geo.country(v.as_bytes()));
        if let Some(j) = from_header.or_else(|| country.and_then(|c| geo.country(&c))) {
            subjects.push(j);
        }
    }
    subjects.sort_unstable();
    subjects.dedup();
    let mut allowed = policy.decide(&classes, &subjects);
    // A subject header that names no known place: the strictest reading.
    if unknown_subject {
        allowed = Some(allowed.unwrap_or(u64::MAX) & policy.strictest(None));
    }
    let join = |v: &[&str]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    let subject_names: SmallVec<[&str; 2]> = subjects
        .iter()
        .map(|j| geo.jurisdictions[*j as usize].as_ref())
        .collect();
    Decision {
        policy: Arc::clone(policy),
        classes: join(&class_names),
        subjects: join(&subject_names),
        allowed,
        excluded: false,
        allowed_names: allowed.map_or_else(|| "any".to_string(), |a| join(&geo.names(a))),
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

/// The endpoints of `rt` whose jurisdiction is in `allowed`.
pub(crate) fn endpoints_in(rt: &ClusterRuntime, allowed: JurisdictionSet) -> EndpointSet {
    rt.lb.in_jurisdictions(allowed, rt.states.len())
}

/// The trusted headers of a policy (and the geo country header) that `peer`
/// may not set: they are removed before the request is forwarded.
pub(crate) fn untrusted_headers(
    policy: &ResidencyPolicy,
    geo: &Geo,
    peer: Option<IpAddr>,
) -> SmallVec<[HeaderName; 2]> {
    let untrusted = |h: &Option<TrustedHeader>| {
        h.as_ref()
            .filter(|h| !h.trusts(peer))
            .map(|h| h.name.clone())
    };
    [
        untrusted(&policy.class_header),
        untrusted(&policy.subject_header),
        untrusted(&geo.country_header),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The local error for a request the policy stops: 451, naming the policy,
/// the data class, the subject's jurisdiction, what is allowed, and `why`.
pub(crate) fn denied(ctx: &crate::proxy::RequestCtx, why: String) -> crate::errors::LocalError {
    let message = match &ctx.residency {
        Some(d) => format!(
            "residency policy `{}` allows data class {} of a subject in {} only on endpoints in {}: {why}",
            d.policy.name, d.classes, d.subjects, d.allowed_names
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
    tracing::info!(
        target: "corridor::residency",
        request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
        route = ctx.route().map_or("", |r| r.name.as_ref()),
        policy = %d.policy.name,
        data_class = %d.classes,
        subject_jurisdiction = %d.subjects,
        allowed = %d.allowed_names,
        decision,
        endpoint_jurisdiction = endpoint_jurisdiction.unwrap_or("-"),
        dry_run = d.policy.dry_run,
        "residency"
    );
}

#[cfg(test)]
mod tests;
