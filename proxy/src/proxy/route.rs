//! Owns the request-phase helpers of the proxy: matching a request to its
//! route and target (`select_route`), direct responses, path rewrites, and
//! the adapter through which the one header-edit implementation
//! (`HeaderMutation::apply`) edits Pingora's request and response heads.

use std::sync::Arc;

use corridor_config::{EditHeaders, HashKey, RequestView, RouteAction, SubsetError};
use http::header;
use pingora_core::protocols::http::ServerSession as Session;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::ctx::{RequestCtx, RouteRef};
use super::edge;
use crate::errors::{ErrorKind, LocalError};
use crate::lb::hash::hash_key;
use crate::residency;

/// Matches the request to a route. `Ok(Some)` is a direct response to send,
/// `Ok(None)` means forward, `Err` is a local error to answer.
pub(super) fn select_route(
    session: &Session,
    ctx: &mut RequestCtx,
) -> std::result::Result<Option<corridor_config::DirectResponse>, LocalError> {
    let req = session.req_header();
    let host = match req.uri.authority() {
        Some(a) => a.as_str(),
        None => match req.headers.get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(h)) => h,
            Some(Err(_)) => {
                return Err(LocalError::new(
                    ErrorKind::BadRequest,
                    "the Host header is not valid text",
                ))
            }
            None => "",
        },
    };
    let path = req.uri.path();
    if !path.starts_with('/') {
        return Err(LocalError::new(
            ErrorKind::BadRequest,
            format!("request target `{}` is not a path", truncate(path, 128)),
        ));
    }
    let view = RequestView {
        method: &req.method,
        path,
        query: req.uri.query(),
        headers: &req.headers,
        client: ctx.client,
    };
    let listener = Arc::clone(&ctx.listener);
    let table = &listener.table.table;
    let Some((vhost, route)) = table.find(host, &view) else {
        return Err(LocalError::new(
            ErrorKind::NoRoute,
            format!(
                "no route for {} {}{} in route table `{}`",
                req.method,
                truncate(host, 128),
                truncate(path, 256),
                table.name
            ),
        ));
    };
    ctx.route = Some(RouteRef { vhost, route });
    let r = &table.virtual_hosts[vhost].routes[route];
    if let Some(auth) = &r.authorization {
        let id = ctx.identity.as_ref().map(|i| i.spiffe_id.as_ref());
        if !auth.allows(id) {
            return Err(LocalError::new(
                ErrorKind::Forbidden,
                match id {
                    Some(id) => format!("identity {id} is not allowed on route `{}`", r.name),
                    None => format!(
                        "route `{}` requires a verified client certificate (mTLS)",
                        r.name
                    ),
                },
            ));
        }
    }
    let f = match &r.action {
        RouteAction::Direct(d) => return Ok(Some(d.clone())),
        RouteAction::Forward(f) => f,
    };
    let target_index = f.pick_target();
    // Set before subset selection, so a failure is counted and logged under this target.
    ctx.target = target_index;
    let target = &f.targets[target_index];
    let Some(mut rt) = ctx.routing.clusters.get(&target.cluster).cloned() else {
        return Err(LocalError::new(
            ErrorKind::NoEndpoint,
            format!("cluster `{}` is not defined (yet)", target.cluster),
        ));
    };
    let cluster = &rt.config;
    let candidates = target.candidates(cluster, &view).map_err(|e| {
        let why = match e {
            SubsetError::Empty => format!(
                "no endpoint of cluster `{}` matches the subset for this request",
                cluster.name
            ),
            SubsetError::NoEndpoints => format!("cluster `{}` has no endpoints", cluster.name),
        };
        LocalError::new(ErrorKind::NoEndpoint, why)
    })?;
    let mut candidates = candidates;
    // Trusted headers (of every policy and the geo country header) are
    // removed from untrusted peers' requests on every route.
    ctx.strip = residency::untrusted_headers(ctx.routing.config.store.residency(), ctx.peer);
    if let Some(res) = &r.residency {
        let routing = Arc::clone(&ctx.routing);
        let settings = routing.config.store.residency();
        // A policy that does not resolve (it never should: references are
        // validated) fails closed: nothing is forwarded.
        let Some(policy) = settings.policies.get(&res.policy) else {
            ctx.target = target_index;
            return Err(LocalError::new(
                ErrorKind::ResidencyDenied,
                format!(
                    "residency policy `{}` of this route is not defined",
                    res.policy
                ),
            ));
        };
        let geo = &settings.geo;
        // The database lookup only where the policy asks for the country.
        let country = match (&routing.geo_db, ctx.client) {
            (Some(db), Some(ip)) if policy.subject_from_geo => db.country(ip),
            _ => None,
        };
        let mut d = residency::decide(
            policy,
            geo,
            &req.headers,
            ctx.peer,
            res.class.as_deref(),
            country,
        );
        if let Some(allowed) = d.allowed {
            let mut narrowed = candidates.clone();
            narrowed.intersect(&residency::endpoints_in(&rt, allowed));
            // The weighted target has nothing allowed: another target of the
            // route may (a split across clusters in several jurisdictions).
            if narrowed.is_empty() && !policy.dry_run {
                let others = (1..f.targets.len()).map(|k| (target_index + k) % f.targets.len());
                for j in others {
                    let t = &f.targets[j];
                    let Some(other) = routing.clusters.get(&t.cluster) else {
                        continue;
                    };
                    let Ok(c) = t.candidates(&other.config, &view) else {
                        continue;
                    };
                    let mut n = c.clone();
                    n.intersect(&residency::endpoints_in(other, allowed));
                    if !n.is_empty() {
                        ctx.target = j;
                        rt = Arc::clone(other);
                        candidates = c;
                        narrowed = n;
                        break;
                    }
                }
            }
            let mut excluded = candidates.clone();
            excluded.subtract(&narrowed);
            d.excluded = excluded;
            if policy.dry_run {
                if narrowed.is_empty() {
                    residency::audit(ctx, &d, "would_deny", None);
                }
            } else {
                candidates = narrowed;
            }
        }
        ctx.residency = Some(d);
        if candidates.is_empty() {
            return Err(residency::denied(
                ctx,
                format!(
                    "no endpoint of cluster `{}` is in an allowed jurisdiction",
                    rt.config.name
                ),
            ));
        }
    }
    if r.prefer_nearest {
        let routing = &ctx.routing;
        ctx.nearest = residency::client_jurisdiction(
            &routing.config.store.residency().geo,
            routing.geo_db.as_deref(),
            &req.headers,
            ctx.peer,
            ctx.client,
        );
    }
    let cluster = &rt.config;
    if cluster.balancing.lb.policy.is_hash() {
        ctx.hash = request_hash(&cluster.balancing.lb.hash_key, req, ctx.client);
    }
    ctx.tried = corridor_config::EndpointSet::empty(cluster.endpoints.len());
    ctx.candidates = candidates;
    ctx.cluster = Some(rt);
    ctx.deadline = Some(ctx.start + f.timeout);
    Ok(None)
}

/// The request's key for a hashing balancer: a header, a cookie or the
/// trusted client address; `None` when the request has none.
fn request_hash(
    key: &HashKey,
    req: &RequestHeader,
    client: Option<std::net::IpAddr>,
) -> Option<u64> {
    match key {
        HashKey::Header(name) => req.headers.get(name).map(|v| hash_key(v.as_bytes())),
        HashKey::Cookie(name) => req
            .headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|b| *b == b'=')?;
                (&pair[..eq] == name.as_bytes()).then(|| hash_key(&pair[eq + 1..]))
            }),
        HashKey::SourceAddress => client.map(|ip| match ip {
            std::net::IpAddr::V4(v4) => hash_key(&v4.octets()),
            std::net::IpAddr::V6(v6) => hash_key(&v6.octets()),
        }),
    }
}

/// Sends a route's direct response with its header edits.
pub(super) async fn write_direct(
    session: &mut Session,
    ctx: &mut RequestCtx,
    d: corridor_config::DirectResponse,
) -> Result<()> {
    let mut resp = ResponseHeader::build(d.status, Some(4))?;
    if let Some(ct) = &d.content_type {
        resp.insert_header(header::CONTENT_TYPE, ct.clone())?;
    }
    resp.insert_header(header::CONTENT_LENGTH, d.body.len())?;
    if let Some(id) = &ctx.request_id {
        resp.insert_header(edge::X_REQUEST_ID_STR, id.clone())?;
    }
    if let Some(route) = ctx.route() {
        route.response_headers.apply(&mut Headers(&mut resp))?;
    }
    ctx.response_started = true;
    let empty = d.body.is_empty();
    session.write_response_header(Box::new(resp)).await?;
    if !empty {
        session.write_response_body(d.body, true).await?;
    }
    Ok(())
}

/// Replaces the matched prefix (or the whole path) and keeps the query.
pub(super) fn rewrite_path(
    req: &mut RequestHeader,
    matched: &str,
    replacement: &str,
) -> Result<()> {
    let path = req.uri.path();
    let rest = if matched.is_empty() {
        ""
    } else {
        path.strip_prefix(matched).unwrap_or(path)
    };
    let mut new = String::with_capacity(replacement.len() + rest.len() + 16);
    new.push_str(replacement);
    new.push_str(rest);
    if let Some(q) = req.uri.query() {
        new.push('?');
        new.push_str(q);
    }
    let mut builder = http::Uri::builder();
    if let Some(scheme) = req.uri.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = req.uri.authority() {
        builder = builder.authority(authority.clone());
    }
    let uri = builder.path_and_query(new).build().map_err(|e| {
        Error::explain(
            ErrorType::InternalError,
            format!("rewritten path is invalid: {e}"),
        )
    })?;
    req.set_uri(uri);
    Ok(())
}

/// Pingora's request or response head, taking the route's header edits
/// (`HeaderMutation::apply`, the one implementation) through Pingora's own
/// methods so that HTTP/1 header-name case stays in step.
pub(super) struct Headers<'a, T>(pub(super) &'a mut T);

macro_rules! edit_headers {
    ($t:ty) => {
        impl EditHeaders for Headers<'_, $t> {
            type Error = Box<Error>;
            fn remove(&mut self, name: &http::HeaderName) {
                self.0.remove_header(name);
            }
            fn set(&mut self, name: &http::HeaderName, value: &http::HeaderValue) -> Result<()> {
                self.0.insert_header(name.clone(), value.clone())
            }
            fn add(&mut self, name: &http::HeaderName, value: &http::HeaderValue) -> Result<()> {
                self.0
                    .append_header(name.clone(), value.clone())
                    .map(|_| ())
            }
        }
    };
}
edit_headers!(RequestHeader);
edit_headers!(ResponseHeader);

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
