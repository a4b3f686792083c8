use std::sync::atomic::Ordering;
use std::time::Duration;

use corridor_config::{load_str, DiskFiles};

use super::state::Outcome;
use super::*;
use crate::metrics::Metrics;
use crate::routing::Routing;

/// The runtime of cluster `c` with `endpoints`, further cluster fields
/// `extra` and top-level fields `top`.
fn runtime_with(endpoints: &str, extra: &str, top: &str) -> Arc<ClusterRuntime> {
    let text = format!(
        "listeners: [{{ name: l, address: \"127.0.0.1:1\", route_table: t }}]\n\
         route_tables: [{{ name: t, virtual_hosts: [{{ domains: [\"*\"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]\n\
         clusters: [{{ name: c, endpoints: [{endpoints}] {extra} }}]\n{top}"
    );
    let snap = load_str(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let routing = Routing::build(Arc::new(snap), None, &metrics, &DiskFiles, false)
        .unwrap_or_else(|e| panic!("{e:?}"));
    Arc::clone(routing.clusters.values().next().unwrap())
}

fn runtime(endpoints: &str, extra: &str) -> Arc<ClusterRuntime> {
    runtime_with(endpoints, extra, "")
}

/// `n` endpoints 127.0.0.1:2.. with `fields` each.
fn eps(n: usize, fields: impl Fn(usize) -> String) -> String {
    (0..n)
        .map(|i| format!("{{ address: \"127.0.0.1:{}\" {} }}", 2 + i, fields(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pick_with(
    rt: &ClusterRuntime,
    candidates: &EndpointSet,
    tried: &EndpointSet,
    hash: Option<u64>,
) -> Option<usize> {
    pick(
        rt,
        &PickRequest {
            candidates,
            tried,
            hash,
            nearest: None,
        },
    )
}

fn first_try(rt: &ClusterRuntime) -> usize {
    let all = rt.config.all();
    let none = EndpointSet::empty(rt.states.len());
    pick_with(rt, &all, &none, None).expect("an endpoint")
}

fn shares(rt: &ClusterRuntime, n: usize) -> Vec<usize> {
    let mut counts = vec![0; rt.states.len()];
    for _ in 0..n {
        counts[first_try(rt)] += 1;
    }
    counts
}

fn eject(rt: &ClusterRuntime, i: usize) {
    rt.states[i]
        .ejected_until
        .store(u64::MAX, Ordering::Relaxed);
    rt.shared.availability_changed();
}

fn fail_health(rt: &ClusterRuntime, i: usize) {
    rt.states[i].hc_failing.store(1, Ordering::Relaxed);
    rt.shared.availability_changed();
}

#[test]
fn round_robin_takes_strict_turns_and_interleaves_weights() {
    let rt = runtime(&eps(3, |_| String::new()), "");
    let seq: Vec<usize> = (0..6).map(|_| first_try(&rt)).collect();
    assert_eq!(seq, [0, 1, 2, 0, 1, 2]);

    let rt = runtime(
        r#"{ address: "127.0.0.1:2", weight: 3 }, { address: "127.0.0.1:3" }"#,
        "",
    );
    let seq: Vec<usize> = (0..400).map(|_| first_try(&rt)).collect();
    let heavy = seq.iter().filter(|i| **i == 0).count();
    assert!((298..=302).contains(&heavy), "{heavy} of 400");
    let longest = seq
        .split(|i| *i == 1)
        .map(<[usize]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest <= 4,
        "smooth: at most 4 heavy picks in a row, saw {longest}"
    );
}

#[test]
fn retries_prefer_untried_then_next_priority() {
    let rt = runtime(
        r#"{ address: "127.0.0.1:2" }, { address: "127.0.0.1:3" }, { address: "127.0.0.1:4", priority: 1 }"#,
        "",
    );
    let all = rt.config.all();
    let mut tried = EndpointSet::empty(3);
    let next = |tried: &EndpointSet| pick_with(&rt, &all, tried, None);
    let first = next(&tried).unwrap();
    assert!(first < 2, "priority 0 first");
    tried.insert(first);
    let second = next(&tried).unwrap();
    assert!(
        second < 2 && second != first,
        "the other priority-0 endpoint next"
    );
    tried.insert(second);
    assert_eq!(next(&tried), Some(2), "then priority 1");
    tried.insert(2);
    assert!(next(&tried).is_some(), "all tried: reuse rather than fail");
}

#[test]
fn random_stays_within_candidates() {
    let rt = runtime(&eps(3, |_| String::new()), ", lb_policy: random");
    let mut only = EndpointSet::empty(3);
    only.insert(1);
    only.insert(2);
    let none = EndpointSet::empty(3);
    let seen: std::collections::HashSet<usize> = (0..200)
        .map(|_| pick_with(&rt, &only, &none, None).unwrap())
        .collect();
    assert_eq!(seen, [1, 2].into_iter().collect());
}

#[test]
fn a_failing_endpoint_is_not_always_the_first_try() {
    // Every request fails on its first try and retries. With one shared
    // sequence for first tries and retries, every first try would land on
    // the same endpoint.
    let rt = runtime(&eps(2, |_| String::new()), "");
    let all = rt.config.all();
    let mut first = [0; 2];
    for _ in 0..200 {
        let mut tried = EndpointSet::empty(2);
        let a = first_try(&rt);
        first[a] += 1;
        tried.insert(a);
        let b = pick_with(&rt, &all, &tried, None).unwrap();
        assert_ne!(a, b);
    }
    assert!(first[0] > 40 && first[1] > 40, "first tries {first:?}");
}

#[test]
fn least_request_avoids_the_busy_endpoint() {
    let rt = runtime(&eps(4, |_| String::new()), ", lb_policy: least_request");
    let _busy: Vec<_> = (0..5).map(|_| rt.states[0].begin()).collect();
    let counts = shares(&rt, 4000);
    // Endpoint 0 wins only when it is drawn again and again (P2C draws a
    // second endpoint other than the first).
    assert!(counts[0] < 40, "{counts:?}");
    assert!(counts[1..].iter().all(|c| *c > 1000), "{counts:?}");
}

#[test]
fn peak_ewma_sends_almost_nothing_to_the_slow_endpoint() {
    let rt = runtime(&eps(4, |_| String::new()), ", lb_policy: peak_ewma");
    for _ in 0..5 {
        rt.record(0, Outcome::Status(200), Some(Duration::from_millis(100)));
        for i in 1..4 {
            rt.record(i, Outcome::Status(200), Some(Duration::from_millis(1)));
        }
    }
    let counts = shares(&rt, 4000);
    assert!(counts[0] < 40, "slow endpoint got {counts:?}");
    // A fast failure is no cheaper than the default RTT (30 ms).
    let rt = runtime(&eps(4, |_| String::new()), ", lb_policy: peak_ewma");
    for _ in 0..5 {
        rt.record(0, Outcome::Status(503), Some(Duration::from_micros(100)));
        for i in 1..4 {
            rt.record(i, Outcome::Status(200), Some(Duration::from_millis(1)));
        }
    }
    let counts = shares(&rt, 4000);
    assert!(counts[0] < 40, "fast-failing endpoint got {counts:?}");
}

#[test]
fn ejected_endpoints_are_skipped_until_panic() {
    let rt = runtime(&eps(4, |_| String::new()), "");
    eject(&rt, 0);
    let counts = shares(&rt, 400);
    assert_eq!(counts[0], 0, "{counts:?}");
    // One of four usable: 25 % < the 50 % panic threshold, so all four again.
    eject(&rt, 1);
    fail_health(&rt, 2);
    let counts = shares(&rt, 400);
    assert!(counts.iter().all(|c| *c > 50), "panic spreads: {counts:?}");
}

#[test]
fn priorities_spill_over_by_healthy_share_times_1_4() {
    let rt = runtime(&eps(8, |i| format!(", priority: {}", i / 4)), "");
    let level1 = |c: &[usize]| c[4..].iter().sum::<usize>();
    assert_eq!(
        level1(&shares(&rt, 1000)),
        0,
        "all healthy: priority 0 only"
    );
    // Half of priority 0 unhealthy: it keeps 50 % × 1.4 = 70 %.
    fail_health(&rt, 0);
    fail_health(&rt, 1);
    let c = shares(&rt, 10_000);
    let spilled = level1(&c);
    assert!((2600..=3400).contains(&spilled), "30 % expected: {c:?}");
    assert_eq!(c[0] + c[1], 0);
    // One of four left: 35 %, and no panic, because priority 1 takes the
    // rest (Envoy: levels panic only when together they cannot).
    fail_health(&rt, 2);
    let c = shares(&rt, 10_000);
    assert!(
        (3000..=4000).contains(&c[3]),
        "35 % expected on endpoint 3: {c:?}"
    );
    assert_eq!(c[0] + c[1] + c[2], 0, "no panic: {c:?}");
    // All of priority 0 down: everything to priority 1.
    fail_health(&rt, 3);
    assert_eq!(level1(&shares(&rt, 1000)), 1000);
    // Every level in panic (none of priority 0, one of four of priority 1):
    // levels by size, each spread over all its endpoints.
    for i in 5..8 {
        fail_health(&rt, i);
    }
    let c = shares(&rt, 8000);
    assert!(
        c.iter().all(|n| (700..=1300).contains(n)),
        "total panic: {c:?}"
    );
}

#[test]
fn without_panic_nothing_unhealthy_is_picked() {
    let rt = runtime(
        &eps(2, |_| String::new()),
        ", common_lb_config: { healthy_panic_threshold: 0 }",
    );
    eject(&rt, 0);
    assert_eq!(shares(&rt, 100), [0, 100]);
    eject(&rt, 1);
    let all = rt.config.all();
    let none = EndpointSet::empty(2);
    assert_eq!(pick_with(&rt, &all, &none, None), None);
}

#[test]
fn a_hash_key_keeps_its_priority_level_when_one_degrades() {
    let rt = runtime(
        &eps(8, |i| format!(", priority: {}", i / 4)),
        ", lb_policy: maglev",
    );
    fail_health(&rt, 0);
    fail_health(&rt, 1);
    let all = rt.config.all();
    let none = EndpointSet::empty(8);
    for k in 0..200u64 {
        let h = Some(hash::hash_key(&k.to_le_bytes()));
        let first = pick_with(&rt, &all, &none, h);
        for _ in 0..5 {
            assert_eq!(pick_with(&rt, &all, &none, h), first, "key {k}");
        }
    }
}

#[test]
fn the_local_zone_is_preferred_while_it_has_capacity() {
    let zone = |i: usize| ["a", "b"][i % 2];
    let rt = runtime_with(
        &eps(8, |i| {
            format!(
                ", locality: {{ cloud: aws, region: r1, zone: {} }}",
                zone(i)
            )
        }),
        "",
        "locality: { cloud: aws, region: r1, zone: a }\n",
    );
    let c = shares(&rt, 2000);
    let local: usize = (0..8).filter(|i| i % 2 == 0).map(|i| c[i]).sum();
    assert_eq!(local, 2000, "{c:?}");
    // Half the local zone unhealthy: it keeps 70 %.
    fail_health(&rt, 0);
    fail_health(&rt, 2);
    let c = shares(&rt, 10_000);
    let local: usize = (0..8).filter(|i| i % 2 == 0).map(|i| c[i]).sum();
    assert!((6300..=7700).contains(&local), "{c:?}");
}

#[test]
fn locality_weights_split_traffic_by_locality() {
    let rt = runtime(
        &eps(4, |i| {
            format!(
                ", locality: {{ cloud: gcp, region: r, zone: {} }}",
                if i == 0 { "a" } else { "b" }
            )
        }),
        ", locality_weights: [ { locality: { cloud: gcp, region: r, zone: a }, weight: 3 }, \
           { locality: { cloud: gcp, region: r, zone: b }, weight: 1 } ]",
    );
    let c = shares(&rt, 8000);
    assert!((5600..=6400).contains(&c[0]), "zone a weighs 3 of 4: {c:?}");
}

#[test]
fn hashing_policies_are_consistent_and_skip_ejected_endpoints() {
    for policy in ["ring_hash", "maglev"] {
        let rt = runtime(
            &eps(5, |_| String::new()),
            &format!(", lb_policy: {policy}"),
        );
        let all = rt.config.all();
        let none = EndpointSet::empty(5);
        let pick_key =
            |k: u64| pick_with(&rt, &all, &none, Some(hash::hash_key(&k.to_le_bytes()))).unwrap();
        let before: Vec<usize> = (0..1000).map(pick_key).collect();
        assert_eq!(before, (0..1000).map(pick_key).collect::<Vec<_>>());
        eject(&rt, 2);
        let after: Vec<usize> = (0..1000).map(pick_key).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b == 2 {
                assert_ne!(*a, 2, "{policy}");
            } else {
                assert_eq!(a, b, "{policy}: only the ejected endpoint's keys move");
            }
        }
    }
}

#[test]
fn orca_header_values_parse() {
    assert_eq!(
        parse_orca(b"TEXT cpu_utilization=0.3, application_utilization=0.5"),
        Some(0.5)
    );
    assert_eq!(parse_orca(b"TEXT cpu_utilization=0.25"), Some(0.25));
    assert_eq!(parse_orca(br#"JSON {"cpu_utilization": 0.75}"#), Some(0.75));
    assert_eq!(parse_orca(b"BIN abc"), None);
    assert_eq!(parse_orca(b"TEXT garbage"), None);
}

#[test]
fn consecutive_5xx_ejects_and_the_review_returns_the_endpoint() {
    let rt = runtime(
        &eps(4, |_| String::new()),
        ", outlier_detection: { interval: 1s, base_ejection_time: 10s, max_ejection_percent: 25 }",
    );
    let st = &rt.states[0];
    let until = || st.ejected_until.load(Ordering::Relaxed);
    outlier::review(&rt, state::now_ms()); // starts the first interval
    for _ in 0..4 {
        rt.record(0, Outcome::Status(503), None);
    }
    assert!(!st.ejected(), "four 5xx are not five");
    rt.record(0, Outcome::Status(503), None);
    assert!(st.ejected(), "the fifth ejects");
    assert_eq!(st.ejection_ms.load(Ordering::Relaxed), 10_000);
    // Max ejection percent: 25 % of four is one endpoint.
    for _ in 0..5 {
        rt.record(1, Outcome::ConnectFailure, None);
    }
    assert!(!rt.states[1].ejected(), "max_ejection_percent holds");
    // Reviews return it once its time is up, and not before.
    outlier::review(&rt, until() - 1);
    assert!(st.ejected());
    outlier::review(&rt, until() + 1_001);
    assert!(!st.ejected());
    // Ejected again at once: twice as long (the multiplier is still 1).
    for _ in 0..5 {
        rt.record(0, Outcome::Status(500), None);
    }
    assert_eq!(st.ejection_ms.load(Ordering::Relaxed), 20_000);
    // Each interval spent in service shrinks the multiplier by one: after
    // two, the next ejection is back at the base time.
    let back = until() + 1;
    outlier::review(&rt, back + 1_001);
    assert!(!st.ejected());
    outlier::review(&rt, back + 2_002);
    outlier::review(&rt, back + 3_003);
    for _ in 0..5 {
        rt.record(0, Outcome::Status(500), None);
    }
    assert_eq!(st.ejection_ms.load(Ordering::Relaxed), 10_000);
    // Without always_eject_one_host, 10 % of four ejects nothing (Envoy).
    let rt = runtime(&eps(4, |_| String::new()), ", outlier_detection: {}");
    for _ in 0..5 {
        rt.record(0, Outcome::Status(503), None);
    }
    assert!(!rt.states[0].ejected());
    let rt = runtime(
        &eps(4, |_| String::new()),
        ", outlier_detection: { always_eject_one_host: true }",
    );
    for _ in 0..5 {
        rt.record(0, Outcome::Status(503), None);
    }
    assert!(rt.states[0].ejected());
}

#[test]
fn success_rate_and_failure_percentage_detect_at_the_interval() {
    // Five endpoints with volume: one at 60 % success among four at 100 %.
    let rt = runtime(
        &eps(6, |_| String::new()),
        ", outlier_detection: { interval: 1s, success_rate_request_volume: 20, max_ejection_percent: 50 }",
    );
    let now = state::now_ms();
    outlier::review(&rt, now); // the first review starts the first interval
    for i in 0..5 {
        for n in 0..20 {
            let status = if i == 0 && n % 5 < 2 { 500 } else { 200 };
            rt.record(i, Outcome::Status(status), None);
        }
    }
    // Endpoint 5 has too little volume to count.
    rt.record(5, Outcome::Status(500), None);
    outlier::review(&rt, now + 1001);
    assert!(rt.states[0].ejected(), "success rate 60 % is an outlier");
    assert!((1..6).all(|i| !rt.states[i].ejected()));

    // Failure percentage (enforcing 0 by default, so turned on here): 90 %
    // failures with split local-origin errors counts connect failures apart.
    let rt = runtime(
        &eps(5, |_| String::new()),
        ", outlier_detection: { interval: 1s, enforcing_success_rate: 0, \
           enforcing_failure_percentage_local_origin: 100, failure_percentage_request_volume: 10, \
           split_external_local_origin_errors: true, consecutive_local_origin_failure: 1000, \
           max_ejection_percent: 50 }",
    );
    outlier::review(&rt, now);
    for i in 0..5 {
        for n in 0..10 {
            let outcome = if i == 1 && n < 9 {
                Outcome::ConnectFailure
            } else {
                Outcome::Status(200)
            };
            rt.record(i, outcome, None);
        }
    }
    outlier::review(&rt, now + 1001);
    assert!(rt.states[1].ejected(), "90 % local-origin failures ≥ 85 %");
    assert!(!rt.states[0].ejected());
}

#[test]
fn split_local_origin_failures_have_their_own_streak() {
    let rt = runtime(
        &eps(4, |_| String::new()),
        ", outlier_detection: { split_external_local_origin_errors: true, consecutive_local_origin_failure: 3, always_eject_one_host: true }",
    );
    rt.record(0, Outcome::ConnectFailure, None);
    rt.record(0, Outcome::Timeout, None);
    // Any response, a 5xx too, means the connection worked: the local
    // streak starts over (Envoy), and a 5xx alone does not count for it...
    rt.record(0, Outcome::Status(503), None);
    rt.record(0, Outcome::Reset, None);
    rt.record(0, Outcome::ConnectFailure, None);
    assert!(!rt.states[0].ejected());
    rt.record(0, Outcome::Timeout, None);
    assert!(
        rt.states[0].ejected(),
        "three local-origin failures in a row"
    );
    // ...and without the split, local-origin failures count as 5xx.
    let rt = runtime(
        &eps(4, |_| String::new()),
        ", outlier_detection: { always_eject_one_host: true }",
    );
    for _ in 0..5 {
        rt.record(0, Outcome::ConnectFailure, None);
    }
    assert!(rt.states[0].ejected());
}

#[test]
fn orca_utilization_steers_peak_ewma() {
    let rt = runtime(
        &eps(2, |_| String::new()),
        ", lb_policy: peak_ewma, peak_ewma: { orca: true }",
    );
    for i in 0..2 {
        rt.record(i, Outcome::Status(200), Some(Duration::from_millis(2)));
    }
    rt.states[0].set_utilization(0.9);
    let counts = shares(&rt, 2000);
    // With two endpoints P2C compares them whenever both are drawn (half
    // the picks); endpoint 0 costs 10× and loses every such comparison.
    assert!(counts[0] < 700, "{counts:?}");
}

#[test]
fn a_change_touches_carried_state_only_once_it_serves() {
    let yaml = |extra: &str| {
        format!(
            "listeners: [{{ name: l, address: \"127.0.0.1:1\", route_table: t }}]\n\
             route_tables: [{{ name: t, virtual_hosts: [{{ domains: [\"*\"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]\n\
             clusters: [{{ name: c, endpoints: [{}] {extra} }}]\n",
            eps(2, |_| String::new())
        )
    };
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let build = |text: &str, prev: Option<&Routing>| {
        let snap = load_str(text, "t").unwrap_or_else(|e| panic!("{e}"));
        Routing::build(Arc::new(snap), prev, &metrics, &DiskFiles, false)
            .unwrap_or_else(|e| panic!("{e:?}"))
    };
    let first = build(
        &yaml(", outlier_detection: { consecutive_5xx: 1, always_eject_one_host: true }"),
        None,
    );
    first.activate(&metrics);
    let rt = Arc::clone(first.clusters.values().next().unwrap());
    rt.record(0, Outcome::Status(500), None);
    assert!(rt.states[0].ejected());
    // Built but not (yet) serving, as when a later check rejects it: the
    // ejection stands.
    let second = build(&yaml(""), Some(&first));
    assert!(
        rt.states[0].ejected(),
        "an unserved change must not un-eject"
    );
    // Serving: outlier detection is off, so the ejection ends.
    second.activate(&metrics);
    assert!(!rt.states[0].ejected());
    assert!(Arc::ptr_eq(
        &rt.states[0],
        &second.clusters.values().next().unwrap().states[0]
    ));
}

#[test]
fn nearest_first_takes_preferred_regions_then_the_jurisdiction_then_any() {
    // 0, 1: gcp/europe-west1; 2: azure/westeurope; 3: gcp/europe-west4 (EU,
    // not listed); 4: aws/us-east-1.
    let places = [
        "cloud: gcp, region: europe-west1",
        "cloud: gcp, region: europe-west1",
        "cloud: azure, region: westeurope",
        "cloud: gcp, region: europe-west4",
        "cloud: aws, region: us-east-1",
    ];
    let rt = runtime_with(
        &eps(5, |i| format!(", locality: {{ {} }}", places[i])),
        "",
        "geo: { jurisdictions: [EU, US], regions: { europe-west1: EU, westeurope: EU, europe-west4: EU, us-east-1: US }, \
         preferred_regions: { EU: { regions: [gcp/europe-west1, westeurope] } } }\n",
    );
    assert_eq!(rt.lb.jurisdiction_of(0), Some(0), "EU is bit 0");
    let all = rt.config.all();
    let nearest = |tried: &EndpointSet| {
        pick(
            &rt,
            &PickRequest {
                candidates: &all,
                tried,
                hash: None,
                nearest: Some(0),
            },
        )
    };
    let none = EndpointSet::empty(5);
    let mut seen = [0; 5];
    for _ in 0..20 {
        seen[nearest(&none).unwrap()] += 1;
    }
    assert_eq!(
        seen,
        [10, 10, 0, 0, 0],
        "the first preferred region, balanced"
    );
    // Retries move on: the rest of the first step, then the next step.
    let mut tried = none.clone();
    tried.insert(0);
    assert_eq!(nearest(&tried), Some(1));
    tried.insert(1);
    assert_eq!(nearest(&tried), Some(2));
    tried.insert(2);
    assert_eq!(nearest(&tried), Some(3), "then the rest of the EU");
    tried.insert(3);
    assert_eq!(nearest(&tried), Some(4), "then anywhere");
    // An ejected or unhealthy step is skipped without panic mode.
    eject(&rt, 0);
    fail_health(&rt, 1);
    assert_eq!(nearest(&none), Some(2));
    eject(&rt, 2);
    assert_eq!(nearest(&none), Some(3));
    // A US client, with no preferred regions listed: its jurisdiction first.
    let us = pick(
        &rt,
        &PickRequest {
            candidates: &all,
            tried: &none,
            hash: None,
            nearest: Some(1),
        },
    );
    assert_eq!(us, Some(4));
    // Nearest never widens the candidates (residency narrows them first).
    let mut only_us = EndpointSet::empty(5);
    only_us.insert(4);
    let r = pick(
        &rt,
        &PickRequest {
            candidates: &only_us,
            tried: &none,
            hash: None,
            nearest: Some(0),
        },
    );
    assert_eq!(r, Some(4));
}
