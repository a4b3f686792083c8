//! Owns validating and compiling route tables: domains into the host index,
//! routes into the path index, forwarding actions into targets with
//! precomputed subsets and timeouts. Match conditions are compiled in
//! `matcher.rs`; retries, direct responses and header edits in `action.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::action::{compile_direct, mutation, retry_policy};
use super::matcher::{compile_match, header_name};
use super::{duration, enum_value, Ctx};
use crate::action::{Forward, HeaderMutation, RouteAction};
use crate::cluster::{Fallback, LabelSource, RequestLabel, Target};
use crate::error::FieldPath;
use crate::identity::{check_trust_domain, parse_spiffe_id, Authorization, Principal};
use crate::proto;
use crate::route::{
    HostIndex, PathMatch, ResidencyRef, Route, RouteIndex, RouteMatch, RouteResidency, RouteTable,
    VirtualHost,
};

/// Default deadline to response headers.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest silence on a stream (Envoy's stream idle timeout).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Routes compiled between two yields of the thread (about 0.3 ms of work).
const YIELD_EVERY: usize = 256;

/// Compiles one route table; clusters are named, not looked up, so the table
/// compiles on its own (see `RouteTable::clusters`).
pub(crate) fn compile_route_table(
    cx: &mut Ctx,
    t: &proto::RouteTable,
    p: &FieldPath<'_>,
) -> RouteTable {
    let mut clusters = std::collections::BTreeSet::new();
    let mut residency_refs = Vec::new();
    let mut nearest_ref = None;
    cx.cluster_refs.clear();
    let mut hosts = HostIndex::default();
    let mut domain_owner: HashMap<String, usize> = HashMap::new();
    let mut vhost_names = HashSet::new();
    let mut vhosts = Vec::with_capacity(t.virtual_hosts.len());
    let mut compiled = 0usize;
    for (v, vh) in t.virtual_hosts.iter().enumerate() {
        let vp = p.item("virtual_hosts", v);
        let name: Arc<str> = if vh.name.is_empty() {
            format!("{}/{v}", t.name).into()
        } else {
            if !vhost_names.insert(vh.name.as_str()) {
                cx.err(
                    &vp.field("name"),
                    format!(
                        "virtual host name `{}` is used twice in this table",
                        vh.name
                    ),
                );
            }
            vh.name.as_str().into()
        };
        if vh.domains.is_empty() {
            cx.err(
                &vp.field("domains"),
                "at least one domain is required (\"*\" matches any host)",
            );
        }
        for (d, domain) in vh.domains.iter().enumerate() {
            let dp = vp.item("domains", d);
            let lower = domain.to_ascii_lowercase();
            if let Some(prev) = domain_owner.insert(lower.clone(), v) {
                cx.err(
                    &dp,
                    format!("domain `{domain}` is already served by virtual_hosts[{prev}]"),
                );
                continue;
            }
            add_domain(cx, &dp, &mut hosts, &lower, v);
        }
        let vh_req = mutation(
            cx,
            vh.request_headers.as_ref(),
            &vp.field("request_headers"),
        );
        let vh_resp = mutation(
            cx,
            vh.response_headers.as_ref(),
            &vp.field("response_headers"),
        );
        let vh_auth = vh
            .authorization
            .as_ref()
            .and_then(|a| compile_authorization(cx, a, &vp.field("authorization")));
        let mut routes = Vec::with_capacity(vh.routes.len());
        let mut route_names = HashSet::new();
        for (r, route) in vh.routes.iter().enumerate() {
            compiled += 1;
            if compiled.is_multiple_of(YIELD_EVERY) {
                // A big table takes milliseconds: let a worker that shares
                // this core serve its requests between chunks.
                std::thread::yield_now();
            }
            let rp = vp.item("routes", r);
            let rname: Arc<str> = if route.name.is_empty() {
                format!("{name}/{r}").into()
            } else {
                if !route_names.insert(route.name.as_str()) {
                    cx.err(
                        &rp.field("name"),
                        format!(
                            "route name `{}` is used twice in this virtual host",
                            route.name
                        ),
                    );
                }
                route.name.as_str().into()
            };
            if let Some(mut compiled) = compile_route(cx, route, &rp, rname, &vh_req, &vh_resp) {
                if let RouteAction::Forward(f) = &compiled.action {
                    clusters.extend(f.targets.iter().map(|t| t.cluster.clone()));
                }
                // The route's residency policy, else its virtual host's.
                let (policy, ppath) = if route.residency_policy.is_empty() {
                    (
                        vh.residency_policy.as_str(),
                        vp.field("residency_policy").to_static(),
                    )
                } else {
                    (
                        route.residency_policy.as_str(),
                        rp.field("residency_policy").to_static(),
                    )
                };
                let class = (!route.data_class.is_empty())
                    .then(|| Arc::<str>::from(route.data_class.as_str()));
                if policy.is_empty() {
                    if class.is_some() {
                        cx.err(
                            &rp.field("data_class"),
                            "a data class needs a residency policy (on the route or its virtual host)",
                        );
                    }
                } else {
                    let policy: Arc<str> = policy.into();
                    residency_refs.push(ResidencyRef {
                        policy: policy.clone(),
                        class: class.clone(),
                        path: ppath,
                        class_path: rp.field("data_class").to_static(),
                    });
                    compiled.residency = Some(RouteResidency { policy, class });
                }
                compiled.authorization = match &route.authorization {
                    Some(a) => compile_authorization(cx, a, &rp.field("authorization")),
                    None => vh_auth.clone(),
                };
                if compiled.prefer_nearest && nearest_ref.is_none() {
                    nearest_ref = Some(rp.field("prefer_nearest").to_static());
                }
                routes.push(compiled);
            }
        }
        let index = index_routes(&routes);
        vhosts.push(VirtualHost {
            name,
            routes,
            index,
        });
    }
    hosts.suffix_lens.sort_unstable_by(|a, b| b.cmp(a));
    hosts.suffix_lens.dedup();
    hosts.prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
    hosts.prefix_lens.dedup();
    RouteTable {
        name: t.name.as_str().into(),
        virtual_hosts: vhosts,
        hosts,
        clusters,
        cluster_refs: std::mem::take(&mut cx.cluster_refs),
        residency_refs,
        nearest_ref,
    }
}

fn add_domain(cx: &mut Ctx, path: &FieldPath<'_>, hosts: &mut HostIndex, domain: &str, v: usize) {
    let name_chars = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if domain == "*" {
        hosts.any = Some(v);
    } else if let Some(suffix) = domain.strip_prefix('*') {
        if !name_chars(suffix) {
            cx.err(
                path,
                format!("invalid domain `{domain}`; a wildcard looks like \"*.example.com\" (without a port)"),
            );
            return;
        }
        hosts.suffix_lens.push(suffix.len());
        hosts.suffix.insert(suffix.into(), v);
    } else if let Some(prefix) = domain.strip_suffix('*') {
        if !name_chars(prefix) {
            cx.err(
                path,
                format!("invalid domain `{domain}`; a wildcard looks like \"api.*\""),
            );
            return;
        }
        hosts.prefix_lens.push(prefix.len());
        hosts.prefix.insert(prefix.into(), v);
    } else {
        // host, host:port, [v6] or [v6]:port
        let (host, port) = match domain.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((inner, tail)) if inner.parse::<std::net::Ipv6Addr>().is_ok() => (
                    &domain[..inner.len() + 2],
                    tail.strip_prefix(':')
                        .or(Some(tail).filter(|t| !t.is_empty())),
                ),
                _ => ("", None),
            },
            None => match domain.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (domain, None),
            },
        };
        let host_ok = host.starts_with('[') || name_chars(host);
        let port_ok = port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            cx.err(
                path,
                format!(
                    "invalid domain `{domain}`; use a host name (optionally with :port), \"*.suffix\", \"prefix.*\" or \"*\"; IPv6 addresses go in brackets"
                ),
            );
            return;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        match port {
            Some(p) => hosts.exact_port.insert(format!("{host}:{p}").into(), v),
            None => hosts.exact.insert(host.into(), v),
        };
    }
}

fn compile_route(
    cx: &mut Ctx,
    r: &proto::Route,
    p: &FieldPath<'_>,
    name: Arc<str>,
    vh_req: &HeaderMutation,
    vh_resp: &HeaderMutation,
) -> Option<Route> {
    let matcher = compile_match(cx, r.r#match.as_ref(), &p.field("match"));
    let action = match &r.action {
        Some(proto::route::Action::Route(a)) => {
            compile_forward(cx, a, &p.field("route"), &matcher).map(RouteAction::Forward)
        }
        Some(proto::route::Action::DirectResponse(d)) => {
            compile_direct(cx, d, &p.field("direct_response")).map(RouteAction::Direct)
        }
        None => {
            cx.err(
                p,
                "a route needs an action: `route` (forward to a cluster) or `direct_response`",
            );
            None
        }
    };
    let mut request_headers = vh_req.clone();
    request_headers.extend(&mutation(
        cx,
        r.request_headers.as_ref(),
        &p.field("request_headers"),
    ));
    let mut response_headers = vh_resp.clone();
    response_headers.extend(&mutation(
        cx,
        r.response_headers.as_ref(),
        &p.field("response_headers"),
    ));
    Some(Route {
        name,
        matcher,
        action: action?,
        request_headers,
        response_headers,
        residency: None,
        prefer_nearest: r.prefer_nearest,
        authorization: None,
    })
}

fn compile_forward(
    cx: &mut Ctx,
    a: &proto::RouteAction,
    p: &FieldPath<'_>,
    matcher: &RouteMatch,
) -> Option<Box<Forward>> {
    use proto::route_action::ClusterSpecifier as CS;
    let mut picked: Vec<(Arc<str>, u32)> = Vec::new();
    let lookup = |cx: &mut Ctx, name: &str, path: FieldPath<'_>| -> Option<Arc<str>> {
        if name.is_empty() {
            cx.err(&path, "a cluster name is required");
            None
        } else {
            let name: Arc<str> = name.into();
            cx.cluster_refs.push((name.clone(), path.to_static()));
            Some(name)
        }
    };
    match &a.cluster_specifier {
        Some(CS::Cluster(name)) => {
            if let Some(c) = lookup(cx, name, p.field("cluster")) {
                picked.push((c, 1));
            }
        }
        Some(CS::WeightedClusters(w)) => {
            let wcp = p.field("weighted_clusters");
            let wp = wcp.field("clusters");
            if w.clusters.is_empty() {
                cx.err(&wp, "at least one cluster is required");
            }
            let mut seen = HashSet::new();
            for (i, cw) in w.clusters.iter().enumerate() {
                let cp = wp.index(i);
                if !seen.insert(cw.name.as_str()) {
                    cx.err(
                        &cp.field("name"),
                        format!("cluster `{}` is listed twice", cw.name),
                    );
                    continue;
                }
                if cw.weight > 1_000_000 {
                    cx.err(
                        &cp.field("weight"),
                        format!("weight {} is too large (at most 1000000)", cw.weight),
                    );
                    continue;
                }
                if cw.weight == 0 {
                    cx.err(&cp.field("weight"), "weight must be at least 1");
                    continue;
                }
                if let Some(c) = lookup(cx, &cw.name, cp.field("name")) {
                    picked.push((c, cw.weight));
                }
            }
        }
        None => {
            cx.err(p, "set `cluster` or `weighted_clusters`");
            return None;
        }
    }

    let targets: Vec<Target> = picked
        .into_iter()
        .map(|(cluster, weight)| {
            subset_target(cx, a.subset.as_ref(), &p.field("subset"), cluster, weight)
        })
        .collect();

    let prefix_rewrite = if a.prefix_rewrite.is_empty() {
        None
    } else if !a.prefix_rewrite.starts_with('/') {
        cx.err(
            &p.field("prefix_rewrite"),
            format!("`{}` must start with `/`", a.prefix_rewrite),
        );
        None
    } else {
        let matched = match &matcher.path {
            PathMatch::Prefix(pre) => pre.clone(),
            _ => "".into(),
        };
        Some((matched, a.prefix_rewrite.as_str().into()))
    };
    let host_rewrite = if a.host_rewrite.is_empty() {
        None
    } else {
        match HeaderValue::from_str(&a.host_rewrite) {
            Ok(v) if !a.host_rewrite.contains(['/', ' ']) => Some(v),
            _ => {
                cx.err(
                    &p.field("host_rewrite"),
                    format!("invalid host `{}`", a.host_rewrite),
                );
                None
            }
        }
    };
    let timeout =
        duration(cx, &p.field("timeout"), a.timeout.as_ref(), true).unwrap_or(DEFAULT_TIMEOUT);
    let idle_timeout = duration(cx, &p.field("idle_timeout"), a.idle_timeout.as_ref(), true)
        .unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let retry = retry_policy(cx, a.retry_policy.as_ref(), &p.field("retry_policy"));
    if targets.is_empty() {
        return None;
    }
    Some(Box::new(Forward {
        total_weight: targets.iter().map(|t| u64::from(t.weight)).sum(),
        targets,
        prefix_rewrite,
        host_rewrite,
        timeout,
        idle_timeout,
        retry,
    }))
}

fn subset_target(
    cx: &mut Ctx,
    s: Option<&proto::SubsetSelector>,
    p: &FieldPath<'_>,
    cluster: Arc<str>,
    weight: u32,
) -> Target {
    let Some(s) = s else {
        return Target {
            cluster,
            weight,
            labels: BTreeMap::new(),
            from_request: Arc::from([]),
            fallback: Fallback::None,
            default_subset: BTreeMap::new(),
        };
    };
    // Labels are checked for form only: whether endpoints carry them is known
    // only when endpoints arrive, and an empty subset falls back until then.
    let check_key = |cx: &mut Ctx, key: &str, path: FieldPath<'_>| {
        if key.is_empty() {
            cx.err(&path, "a label name is required");
        }
    };
    let to_map = |m: &BTreeMap<String, String>| -> BTreeMap<Arc<str>, Arc<str>> {
        m.iter()
            .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
            .collect()
    };
    for k in s.labels.keys() {
        check_key(cx, k, p.entry("labels", k));
    }
    let mut from_request = Vec::new();
    for (i, rl) in s.from_request.iter().enumerate() {
        let rp = p.item("from_request", i);
        check_key(cx, &rl.label, rp.field("label"));
        use proto::request_label::Source;
        let source = match &rl.source {
            Some(Source::Header(h)) => {
                header_name(cx, &rp.field("header"), h).map(LabelSource::Header)
            }
            Some(Source::QueryParameter(q)) if !q.is_empty() => {
                Some(LabelSource::Query(q.as_str().into()))
            }
            Some(Source::QueryParameter(_)) => {
                cx.err(
                    &rp.field("query_parameter"),
                    "a query parameter name is required",
                );
                None
            }
            None => {
                cx.err(&rp, "set `header` or `query_parameter`");
                None
            }
        };
        if let Some(source) = source {
            from_request.push(RequestLabel {
                source,
                label: rl.label.as_str().into(),
                glob: rl.glob,
            });
        }
    }
    use proto::subset_selector::Fallback as PF;
    let fallback = match enum_value::<PF>(cx, &p.field("fallback"), s.fallback) {
        None | Some(PF::Unspecified | PF::None) => Fallback::None,
        Some(PF::Any) => Fallback::Any,
        Some(PF::DefaultSubset) => Fallback::DefaultSubset,
    };
    for k in s.default_subset.keys() {
        check_key(cx, k, p.entry("default_subset", k));
    }
    if fallback == Fallback::DefaultSubset && s.default_subset.is_empty() {
        cx.err(
            &p.field("default_subset"),
            "fallback default_subset needs `default_subset` labels",
        );
    }
    if fallback != Fallback::DefaultSubset && !s.default_subset.is_empty() {
        cx.err(
            &p.field("fallback"),
            "`default_subset` is set but unused; set `fallback: default_subset`",
        );
    }
    Target {
        cluster,
        weight,
        labels: to_map(&s.labels),
        from_request: from_request.into(),
        fallback,
        default_subset: to_map(&s.default_subset),
    }
}

fn index_routes(routes: &[Route]) -> RouteIndex {
    let mut idx = RouteIndex::default();
    for (i, r) in routes.iter().enumerate() {
        let i = i as u32;
        match &r.matcher.path {
            PathMatch::Exact(p) => idx.exact.entry(p.clone()).or_default().push(i),
            PathMatch::Prefix(p) => {
                idx.prefix_lens.push(p.len());
                idx.prefix.entry(p.clone()).or_default().push(i);
            }
            PathMatch::Any | PathMatch::Regex(_) => idx.other.push(i),
        }
    }
    idx.prefix_lens.sort_unstable();
    idx.prefix_lens.dedup();
    idx
}

/// Compiles an authorization block: every principal must be a valid SPIFFE
/// ID, trust domain or `spiffe://` prefix, and the list must not be empty
/// (an empty list would refuse everyone; leave the block out instead).
fn compile_authorization(
    cx: &mut Ctx,
    a: &proto::Authorization,
    p: &FieldPath<'_>,
) -> Option<Arc<Authorization>> {
    use proto::principal::Principal as P;
    if a.allow.is_empty() {
        cx.err(
            &p.field("allow"),
            "list the identities allowed (spiffe_id, trust_domain or spiffe_id_prefix)",
        );
        return None;
    }
    let mut allow = Vec::with_capacity(a.allow.len());
    for (i, pr) in a.allow.iter().enumerate() {
        let ip = p.item("allow", i);
        match &pr.principal {
            Some(P::SpiffeId(id)) => match parse_spiffe_id(id) {
                Ok(_) => allow.push(Principal::Id(id.as_str().into())),
                Err(e) => cx.err(&ip.field("spiffe_id"), e),
            },
            Some(P::TrustDomain(d)) => match check_trust_domain(d) {
                Ok(()) => allow.push(Principal::Domain(d.as_str().into())),
                Err(e) => cx.err(&ip.field("trust_domain"), e),
            },
            Some(P::SpiffeIdPrefix(x)) => {
                // The domain part must be complete: `spiffe://aws.corr` would
                // also match `spiffe://aws.corridor.evil/...`.
                // The prefix must end at a segment boundary too:
                // `.../ns/inference` would also match `.../ns/inference-evil`.
                let domain_done = x
                    .strip_prefix("spiffe://")
                    .and_then(|r| r.find('/'))
                    .is_some_and(|i| check_trust_domain(&x["spiffe://".len()..][..i]).is_ok());
                if !domain_done {
                    cx.err(
                        &ip.field("spiffe_id_prefix"),
                        format!("`{x}` must start with spiffe://<trust-domain>/"),
                    );
                } else if !x.ends_with('/') {
                    cx.err(
                        &ip.field("spiffe_id_prefix"),
                        format!("`{x}` must end with `/` (a prefix of whole path segments)"),
                    );
                } else {
                    allow.push(Principal::Prefix(x.as_str().into()));
                }
            }
            None => cx.err(
                &ip,
                "give one of spiffe_id, trust_domain or spiffe_id_prefix",
            ),
        }
    }
    Some(Arc::new(Authorization { allow }))
}
