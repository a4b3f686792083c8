//! The cost of one endpoint pick at 100 endpoints (target: < 200 ns), per
//! policy, through the same filter and policy code requests use: the subset,
//! the tries so far, the usable set, priorities, then the policy; and
//! round robin with a nearest-first step (a route with `prefer_nearest`).
//!
//! cargo bench -p corridor-benches --bench pick

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use corridor_config::{load_str, EndpointSet};
use corridor_proxy::{ClusterBalancer, PickRequest};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// A cluster `c` of `n` endpoints in two zones of region aws/r (in
/// jurisdiction EU, its preferred region), with `extra` cluster fields.
fn balancer(n: usize, extra: &str) -> ClusterBalancer {
    let eps: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{ address: \"10.0.{}.{}:8000\", locality: {{ cloud: aws, region: r, zone: z{} }} }}",
                i / 250,
                i % 250,
                i % 2
            )
        })
        .collect();
    let text = format!(
        "listeners: [{{ name: l, address: \"127.0.0.1:1\", route_table: t }}]\n\
         route_tables: [{{ name: t, virtual_hosts: [{{ domains: [\"*\"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]\n\
         clusters: [{{ name: c, endpoints: [{}] {extra} }}]\n\
         geo: {{ jurisdictions: [EU], regions: {{ r: EU }}, preferred_regions: {{ EU: {{ regions: [aws/r] }} }} }}\n",
        eps.join(", ")
    );
    let snap = load_str(&text, "bench").unwrap_or_else(|e| panic!("{e}"));
    ClusterBalancer::new(Arc::new(snap), "c").expect("cluster c")
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick_100_endpoints");
    for (name, extra, nearest) in [
        ("round_robin", "", None),
        ("round_robin_nearest", "", Some(0)),
        ("random", ", lb_policy: random", None),
        ("least_request", ", lb_policy: least_request", None),
        ("peak_ewma", ", lb_policy: peak_ewma", None),
        ("ring_hash", ", lb_policy: ring_hash", None),
        ("maglev", ", lb_policy: maglev", None),
        (
            "peak_ewma_outlier_hc",
            ", lb_policy: peak_ewma, outlier_detection: {}, common_lb_config: { zone_aware: { enabled: false } }",
            None,
        ),
    ] {
        let b = balancer(100, extra);
        for i in 0..100 {
            b.record(i, 200, Duration::from_micros(500 + i as u64 * 10));
        }
        let all = b.all();
        let none = EndpointSet::empty(100);
        let mut key = 0u64;
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let req = PickRequest {
                    candidates: &all,
                    tried: &none,
                    hash: Some(key),
                    nearest,
                };
                black_box(b.pick(black_box(&req)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
