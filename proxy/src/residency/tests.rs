//! Property test: over random topologies across four jurisdictions, random
//! health and ejection, random policies' inputs and retry sequences, no pick
//! ever lands outside the jurisdictions the policy allows.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use corridor_config::{load_str, DiskFiles, EndpointSet};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::*;
use crate::lb::{pick, PickRequest};
use crate::metrics::Metrics;
use crate::routing::Routing;

const PLACES: [&str; 5] = [
    "region: eu-r",
    "region: us-r",
    "region: uk-r",
    "region: ap-r",
    "region: nowhere",
];
const POLICIES: [&str; 6] = [
    "round_robin",
    "random",
    "least_request",
    "peak_ewma",
    "ring_hash",
    "maglev",
];
const CLASSES: [&str; 4] = ["pii", "public", "health", "secret"];
const SUBJECTS: [&str; 5] = ["EU", "UK", "US", "DE", "ZZ"];

/// One endpoint: place, priority, weight, ejected, failing its health check.
type Spec = (usize, u32, u32, bool, bool);

fn runtime(
    eps: &[Spec],
    policy: usize,
    panic: bool,
    restrict: bool,
) -> (Arc<Routing>, Arc<ClusterRuntime>) {
    let list: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, (place, prio, w, _, _))| {
            format!(
                "{{ address: \"10.0.0.{}:80\", locality: {{ cloud: c, {} }}, priority: {prio}, weight: {w} }}",
                i + 1,
                PLACES[*place]
            )
        })
        .collect();
    let text = format!(
        "listeners: [{{ name: l, address: \"127.0.0.1:1\", route_table: t }}]\n\
         route_tables: [{{ name: t, virtual_hosts: [{{ domains: [\"*\"], residency_policy: p, routes: [{{ route: {{ cluster: c }} }}] }}] }}]\n\
         geo: {{ jurisdictions: [EU, US, UK, APAC], countries: {{ DE: EU }}, regions: {{ eu-r: EU, us-r: US, uk-r: UK, ap-r: APAC }}, \
           preferred_regions: {{ EU: {{ regions: [uk-r, c/eu-r] }}, US: {{ regions: [us-r, ap-r] }}, UK: {{ regions: [eu-r] }} }} }}\n\
         residency_policies: [{{ name: p, unclassified: {}, \
           data_class_header: {{ header: x-class, trusted_from: [127.0.0.1] }}, \
           subject_header: {{ header: x-subject, trusted_from: [127.0.0.1] }}, \
           tenants: {{ header: {{ header: x-tenant, trusted_from: [127.0.0.1] }}, \
             tenants: {{ acme: {{ data_class: pii, jurisdiction: UK }}, globex: {{ data_class: public }} }} }}, rules: [\
             {{ data_classes: [pii], allowed_jurisdictions: [EU] }}, \
             {{ data_classes: [pii], subject_jurisdictions: [UK], allowed_jurisdictions: [UK, EU] }}, \
             {{ data_classes: [health], allowed_jurisdictions: [US] }}, \
             {{ data_classes: [public], allowed_jurisdictions: [EU, US, UK, APAC] }} ] }}]\n\
         clusters: [{{ name: c, lb_policy: {}, common_lb_config: {{ healthy_panic_threshold: {} }}, endpoints: [{}] }}]\n",
        if restrict { "restrict" } else { "allow" },
        POLICIES[policy],
        if panic { 50 } else { 0 },
        list.join(", ")
    );
    let snap = load_str(&text, "prop").unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let routing =
        Arc::new(Routing::build(Arc::new(snap), None, &metrics, &DiskFiles, false).unwrap());
    let rt = Arc::clone(routing.clusters.values().next().unwrap());
    for (i, (_, _, _, ejected, failing)) in eps.iter().enumerate() {
        if *ejected {
            rt.states[i]
                .ejected_until
                .store(u64::MAX, Ordering::Relaxed);
        }
        if *failing {
            rt.states[i].hc_failing.store(1, Ordering::Relaxed);
        }
    }
    rt.shared.availability_changed();
    (routing, rt)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_pick_leaves_the_allowed_jurisdictions(
        eps in prop::collection::vec((0usize..5, 0u32..3, 1u32..4, any::<bool>(), any::<bool>()), 1..16),
        policy in 0usize..6,
        panic in any::<bool>(),
        restrict in any::<bool>(),
        requests in prop::collection::vec(
            (
                prop::collection::vec(0usize..4, 0..3),
                prop::collection::vec(0usize..5, 0..3),
                any::<u64>(),
                prop::option::of(0u8..4),
            ),
            1..8,
        ),
    ) {
        let (routing, rt) = runtime(&eps, policy, panic, restrict);
        let settings = routing.config.store.residency();
        let geo = &settings.geo;
        let p = settings.policies.values().next().unwrap();
        let peer = Some("127.0.0.1".parse().unwrap());
        for (classes, subjects, key, nearest) in requests {
            let mut headers = HeaderMap::new();
            for c in &classes {
                headers.append("x-class", HeaderValue::from_static(CLASSES[*c]));
            }
            for s in &subjects {
                headers.append("x-subject", HeaderValue::from_static(SUBJECTS[*s]));
            }
            let d = decide(p, geo, &headers, peer, None, None);
            let Some(allowed) = d.allowed else {
                prop_assert!(classes.is_empty() && !restrict);
                continue;
            };
            let mut candidates = rt.config.all();
            candidates.intersect(&endpoints_in(&rt, allowed));
            // A first try and three retries, each excluding what was tried.
            let mut tried = EndpointSet::empty(rt.states.len());
            for _ in 0..4 {
                let req = PickRequest { candidates: &candidates, tried: &tried, hash: Some(key), nearest };
                let Some(i) = pick(&rt, &req) else { break };
                // The endpoint's jurisdiction from the generated topology, not
                // from the code under test.
                let j = ["EU", "US", "UK", "APAC"]
                    .get(eps[i].0)
                    .and_then(|name| geo.jurisdiction(name));
                prop_assert!(
                    j.is_some_and(|j| allowed & (1 << j) != 0),
                    "endpoint {} in {:?} picked; allowed {}",
                    i, j, d.allowed_names()
                );
                tried.insert(i);
            }
        }
    }
}

#[test]
fn the_strictest_reading_wins() {
    let (routing, _) = runtime(&[(0, 0, 1, false, false)], 0, true, false);
    let settings = routing.config.store.residency();
    let p = settings.policies.values().next().unwrap();
    let geo = &settings.geo;
    let peer = Some("127.0.0.1".parse().unwrap());
    let names = |pairs: &[(&'static str, &'static str)], peer| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        decide(p, geo, &h, peer, None, None).allowed_names()
    };
    assert_eq!(names(&[("x-class", "public")], peer), "APAC,EU,UK,US");
    assert_eq!(
        names(&[("x-class", "public"), ("x-class", "pii")], peer),
        "EU"
    );
    assert_eq!(
        names(&[("x-class", "pii"), ("x-subject", "UK")], peer),
        "EU,UK"
    );
    // A country code maps through geo.countries; two subjects: both must allow.
    assert_eq!(
        names(
            &[("x-class", "pii"), ("x-subject", "UK"), ("x-subject", "DE")],
            peer
        ),
        "EU"
    );
    // An unknown subject: the strictest reading.
    assert_eq!(
        names(&[("x-class", "public"), ("x-subject", "ZZ")], peer),
        "-"
    );
    // A tenant brings its class and home jurisdiction; it adds to the
    // request's own class; an unknown tenant is the strictest reading.
    assert_eq!(names(&[("x-tenant", "acme")], peer), "EU,UK");
    assert_eq!(
        names(&[("x-tenant", "acme"), ("x-class", "public")], peer),
        "EU,UK"
    );
    assert_eq!(names(&[("x-tenant", "globex")], peer), "APAC,EU,UK,US");
    assert_eq!(names(&[("x-tenant", "initech")], peer), "-");
    assert_eq!(
        names(&[("x-tenant", "acme")], Some("10.9.9.9".parse().unwrap())),
        "any"
    );
    // Every trusted header of the configuration is removed from an
    // untrusted peer's requests, whichever policy the route has.
    let stripped = untrusted_headers(settings, Some("10.9.9.9".parse().unwrap()));
    let mut names_stripped: Vec<&str> = stripped.iter().map(|h| h.as_str()).collect();
    names_stripped.sort_unstable();
    assert_eq!(
        names_stripped,
        [
            "x-class",
            "x-subject",
            "x-tenant",
            "x_class",
            "x_subject",
            "x_tenant"
        ]
    );
    assert!(untrusted_headers(settings, peer).is_empty());
    // Unclassified with `allow`: no restriction; untrusted headers are ignored.
    assert_eq!(names(&[], peer), "any");
    assert_eq!(
        names(&[("x-class", "pii")], Some("10.9.9.9".parse().unwrap())),
        "any"
    );
}

/// The per-request cost of a residency decision and the jurisdiction filter
/// (`cargo test -p corridor-proxy --release --lib -- --ignored --nocapture decision_cost`).
#[test]
#[ignore = "a measurement, not a check"]
fn decision_cost() {
    let eps: Vec<Spec> = (0..100).map(|i| (i % 4, 0, 1, false, false)).collect();
    let (routing, rt) = runtime(&eps, 0, true, false);
    let settings = routing.config.store.residency();
    let p = settings.policies.values().next().unwrap();
    let peer = Some("127.0.0.1".parse().unwrap());
    let mut h = HeaderMap::new();
    h.append("x-class", HeaderValue::from_static("pii"));
    h.append("x-subject", HeaderValue::from_static("UK"));
    let n = 1_000_000;
    let start = std::time::Instant::now();
    let mut kept = 0;
    for _ in 0..n {
        let d = decide(p, &settings.geo, std::hint::black_box(&h), peer, None, None);
        let mut c = rt.config.all();
        c.intersect(&endpoints_in(&rt, d.allowed.unwrap_or(u64::MAX)));
        kept += c.len();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("decision + filter at 100 endpoints: {ns:.0} ns ({kept} kept)");
}
