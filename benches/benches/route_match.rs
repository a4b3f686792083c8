//! Route matching cost with 10, 1 000 and 10 000 routes (target: 10 000 routes
//! cost at most 2× of 10), plus host lookup and subset selection.
//!
//! cargo bench -p corridor-benches --bench route_match

use std::hint::black_box;

use corridor_config::{load_str, RequestView, RouteAction, Snapshot};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method};

/// A table of `n` prefix routes, a few exact and header routes, and a
/// catch-all last; hosts include wildcards.
fn table(n: usize) -> Snapshot {
    let mut routes = String::new();
    for i in 0..n {
        match i % 10 {
            0 => routes.push_str(&format!("          - {{ match: {{ path: /exact/{i} }}, route: {{ cluster: c }} }}\n")),
            1 => routes.push_str(&format!(
                "          - {{ match: {{ prefix: /svc{i}/, headers: [{{ name: x-model, prefix: gpt- }}] }}, route: {{ cluster: c }} }}\n"
            )),
            _ => routes.push_str(&format!("          - {{ match: {{ prefix: /svc{i}/ }}, route: {{ cluster: c }} }}\n")),
        }
    }
    routes.push_str("          - { name: fallback, route: { cluster: c } }\n");
    let text = format!(
        r#"
listeners: [{{ name: l, address: "127.0.0.1:1", route_table: t }}]
clusters:
  - name: c
    endpoints:
      - {{ address: "127.0.0.1:2", labels: {{ model: "gpt-*" }} }}
      - {{ address: "127.0.0.1:3", labels: {{ model: "claude-*" }} }}
      - {{ address: "127.0.0.1:4", labels: {{ model: "llama-*" }} }}
route_tables:
  - name: t
    virtual_hosts:
      - {{ domains: [a.example.com, "*.b.example.com"], routes: [{{ route: {{ cluster: c }} }}] }}
      - domains: ["*"]
        routes:
{routes}"#
    );
    load_str(&text, "bench").expect("bench config is valid")
}

fn route_match(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("x-model", HeaderValue::from_static("gpt-4o"));
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1_000, 10_000] {
        let snap = table(n);
        let t = &snap.route_tables[0];
        // A path near the end of the table, one that only the catch-all matches.
        let late = format!("/svc{}/v1/chat/completions", n - 2);
        for (name, path) in [
            ("late_prefix", late.as_str()),
            ("fallthrough", "/nothing/here"),
        ] {
            group.bench_with_input(BenchmarkId::new(name, n), &path, |b, path| {
                b.iter(|| {
                    let req = RequestView {
                        method: &Method::POST,
                        path: black_box(path),
                        query: None,
                        headers: &headers,
                        client: None,
                    };
                    black_box(t.find(black_box("api.example.com:8080"), &req))
                })
            });
        }
    }
    group.finish();
}

fn host_and_subset(c: &mut Criterion) {
    let snap = table(10);
    let t = &snap.route_tables[0];
    c.bench_function("virtual_host/wildcard", |b| {
        b.iter(|| black_box(t.virtual_host(black_box("x.y.b.example.com"))))
    });

    let subset_yaml = include_str!("../../examples/demo.yaml");
    let demo = load_str(subset_yaml, "demo").expect("demo config is valid");
    let route = demo.route_tables[0].virtual_hosts[0]
        .routes
        .iter()
        .find(|r| r.name.as_ref() == "chat")
        .expect("chat route");
    let RouteAction::Forward(f) = &route.action else {
        panic!("chat forwards")
    };
    let target = &f.targets[0];
    let cluster = demo.cluster(&target.cluster).expect("chat cluster");
    let mut headers = HeaderMap::new();
    headers.insert("x-model", HeaderValue::from_static("claude-3-5-sonnet"));
    c.bench_function("subset/glob_model_header", |b| {
        b.iter(|| {
            let req = RequestView {
                method: &Method::POST,
                path: "/v1/chat/completions",
                query: None,
                headers: &headers,
                client: None,
            };
            black_box(target.candidates(cluster, &req))
        })
    });
}

criterion_group!(benches, route_match, host_and_subset);
criterion_main!(benches);
