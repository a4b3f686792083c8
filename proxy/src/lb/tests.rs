use corridor_config::load_str;

use super::*;

fn cluster(endpoints: &str) -> Arc<Cluster> {
    let text = format!(
        "listeners: [{{ name: l, address: \"127.0.0.1:1\", route_table: t }}]\n\
         route_tables: [{{ name: t, virtual_hosts: [{{ domains: [\"*\"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]\n\
         clusters: [{{ name: c, endpoints: [{endpoints}] }}]\n"
    );
    let snap = load_str(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    Arc::clone(snap.clusters.values().next().unwrap())
}

#[test]
fn round_robin_honours_weights() {
    let c = cluster(r#"{ address: "127.0.0.1:2", weight: 3 }, { address: "127.0.0.1:3" }"#);
    let rr = RoundRobin::default();
    let mut counts = [0; 2];
    for _ in 0..400 {
        counts[pick(&rr, &c, &c.all(), &EndpointSet::empty(2)).unwrap()] += 1;
    }
    assert_eq!(counts, [300, 100]);
}

#[test]
fn retries_prefer_untried_then_next_priority() {
    let c = cluster(
        r#"{ address: "127.0.0.1:2" }, { address: "127.0.0.1:3" }, { address: "127.0.0.1:4", priority: 1 }"#,
    );
    let rr = RoundRobin::default();
    let mut tried = EndpointSet::empty(3);
    let first = pick(&rr, &c, &c.all(), &tried).unwrap();
    assert!(first < 2, "priority 0 first");
    tried.insert(first);
    let second = pick(&rr, &c, &c.all(), &tried).unwrap();
    assert!(
        second < 2 && second != first,
        "the other priority-0 endpoint next"
    );
    tried.insert(second);
    assert_eq!(pick(&rr, &c, &c.all(), &tried), Some(2), "then priority 1");
    tried.insert(2);
    assert!(
        pick(&rr, &c, &c.all(), &tried).is_some(),
        "all tried: reuse rather than fail"
    );
    assert_eq!(pick(&rr, &c, &EndpointSet::empty(3), &tried), None);
}

#[test]
fn random_stays_within_candidates() {
    let c = cluster(
        r#"{ address: "127.0.0.1:2" }, { address: "127.0.0.1:3" }, { address: "127.0.0.1:4" }"#,
    );
    let mut only = EndpointSet::empty(3);
    only.insert(1);
    only.insert(2);
    let seen: std::collections::HashSet<usize> = (0..200)
        .map(|_| pick(&Random, &c, &only, &EndpointSet::empty(3)).unwrap())
        .collect();
    assert_eq!(seen, [1, 2].into_iter().collect());
}

#[test]
fn a_failing_endpoint_is_not_always_the_first_try() {
    // Two endpoints; every request fails on its first try and retries. With one
    // shared counter for first tries and retries, every first try would land on
    // the same endpoint.
    let c = cluster(r#"{ address: "127.0.0.1:2" }, { address: "127.0.0.1:3" }"#);
    let rr = RoundRobin::default();
    let mut first = [0; 2];
    for _ in 0..200 {
        let mut tried = EndpointSet::empty(2);
        let a = pick(&rr, &c, &c.all(), &tried).unwrap();
        first[a] += 1;
        tried.insert(a);
        let b = pick(&rr, &c, &c.all(), &tried).unwrap();
        assert_ne!(a, b);
    }
    assert!(first[0] > 40 && first[1] > 40, "first tries {first:?}");
}
