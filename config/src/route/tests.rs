use http::{HeaderMap, HeaderValue, Method};

use crate::load::load_str;
use crate::snapshot::Snapshot;

fn table(routes: &str, domains: &str) -> Snapshot {
    let text = format!(
        r#"
listeners: [{{ name: l, address: "127.0.0.1:1", route_table: t }}]
clusters: [{{ name: c, endpoints: [{{ address: "127.0.0.1:2" }}] }}]
route_tables:
  - name: t
    virtual_hosts:
{domains}
      - name: main
        domains: ["*"]
        routes:
{routes}
"#
    );
    load_str(&text, "t").unwrap_or_else(|e| panic!("{e}"))
}

fn find(
    s: &Snapshot,
    host: &str,
    method: &Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let req = super::RequestView {
        method,
        path,
        query,
        headers: &h,
        client: None,
    };
    let t = &s.route_tables[0];
    let (v, r) = t.find(host, &req)?;
    Some(t.virtual_hosts[v].routes[r].name.to_string())
}

#[test]
fn host_lookup_exact_then_longest_wildcard_then_any() {
    let domains = r#"
      - name: exact
        domains: [api.example.com]
        routes: [{ name: exact, route: { cluster: c } }]
      - name: deep
        domains: ["*.eu.example.com"]
        routes: [{ name: deep, route: { cluster: c } }]
      - name: wild
        domains: ["*.example.com"]
        routes: [{ name: wild, route: { cluster: c } }]
      - name: pre
        domains: ["internal.*"]
        routes: [{ name: pre, route: { cluster: c } }]"#;
    let s = table("          - { name: any, route: { cluster: c } }", domains);
    let get = Method::GET;
    assert_eq!(
        find(&s, "api.example.com", &get, "/", &[]).as_deref(),
        Some("exact")
    );
    assert_eq!(
        find(&s, "API.Example.COM:8443", &get, "/", &[]).as_deref(),
        Some("exact")
    );
    assert_eq!(
        find(&s, "api.example.com.", &get, "/", &[]).as_deref(),
        Some("exact")
    );
    assert_eq!(
        find(&s, "x.eu.example.com", &get, "/", &[]).as_deref(),
        Some("deep")
    );
    assert_eq!(
        find(&s, "a.b.example.com", &get, "/", &[]).as_deref(),
        Some("wild")
    );
    assert_eq!(
        find(&s, "example.com", &get, "/", &[]).as_deref(),
        Some("any")
    );
    assert_eq!(
        find(&s, "internal.corp", &get, "/", &[]).as_deref(),
        Some("pre")
    );
    assert_eq!(find(&s, "[::1]:80", &get, "/", &[]).as_deref(), Some("any"));
}

#[test]
fn first_matching_route_wins_across_index_buckets() {
    let routes = r#"
          - { name: r0-regex, match: { regex: "/v1/models/[a-z]+" }, route: { cluster: c } }
          - { name: r1-exact, match: { path: /v1/models/abc }, route: { cluster: c } }
          - { name: r2-prefix-post, match: { prefix: /v1/, methods: [post] }, route: { cluster: c } }
          - { name: r3-prefix-hdr, match: { prefix: /v1/chat, headers: [{ name: x-model, prefix: gpt- }] }, route: { cluster: c } }
          - name: r4-absent
            match: { prefix: /v1/chat, headers: [{ name: x-tenant, absent: true }] }
            route: { cluster: c }
          - name: r5-query
            match: { prefix: /v1, query_parameters: [{ name: "api version", exact: "2024 10" }] }
            route: { cluster: c }
          - name: r6-inverted
            match: { prefix: /, headers: [{ name: x-debug, exact: "1", invert: true }] }
            route: { cluster: c }"#;
    let s = table(routes, "");
    let (get, post) = (Method::GET, Method::POST);
    assert_eq!(
        find(&s, "h", &get, "/v1/models/abc", &[]).as_deref(),
        Some("r0-regex")
    );
    assert_eq!(
        find(&s, "h", &get, "/v1/models/ABC", &[]).as_deref(),
        Some("r6-inverted")
    );
    assert_eq!(
        find(&s, "h", &post, "/v1/chat/completions", &[]).as_deref(),
        Some("r2-prefix-post")
    );
    assert_eq!(
        find(
            &s,
            "h",
            &get,
            "/v1/chat/completions",
            &[("x-model", "gpt-4o"), ("x-tenant", "t")]
        )
        .as_deref(),
        Some("r3-prefix-hdr")
    );
    assert_eq!(
        find(
            &s,
            "h",
            &get,
            "/v1/chat/completions",
            &[("x-model", "claude")]
        )
        .as_deref(),
        Some("r4-absent")
    );
    assert_eq!(
        find(
            &s,
            "h",
            &get,
            "/v1/x?api+version=2024%2010",
            &[("x-tenant", "t")]
        )
        .as_deref(),
        Some("r5-query")
    );
    assert_eq!(
        find(&s, "h", &get, "/other", &[("x-debug", "0")]).as_deref(),
        Some("r6-inverted")
    );
    assert_eq!(find(&s, "h", &get, "/other", &[("x-debug", "1")]), None);
}

#[test]
fn ten_thousand_routes_keep_first_match_order() {
    let mut routes = String::new();
    for i in 0..10_000 {
        routes.push_str(&format!("          - {{ name: p{i}, match: {{ prefix: /svc{i}/ }}, route: {{ cluster: c }} }}\n"));
        if i == 5000 {
            routes.push_str("          - { name: early-exact, match: { path: /svc9999/x }, route: { cluster: c } }\n");
        }
    }
    let s = table(&routes, "");
    let get = Method::GET;
    assert_eq!(find(&s, "h", &get, "/svc42/a", &[]).as_deref(), Some("p42"));
    assert_eq!(
        find(&s, "h", &get, "/svc9999/x", &[]).as_deref(),
        Some("early-exact")
    );
    assert_eq!(
        find(&s, "h", &get, "/svc9999/y", &[]).as_deref(),
        Some("p9999")
    );
    assert_eq!(find(&s, "h", &get, "/nothing", &[]), None);
}

#[test]
fn percent_decoding_borrows_when_clean() {
    assert!(matches!(
        super::percent_decode("plain"),
        std::borrow::Cow::Borrowed(_)
    ));
    assert_eq!(super::percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
}
