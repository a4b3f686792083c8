use crate::load::load_str;

const BASE: &str = r#"
listeners:
  - name: main
    address: 127.0.0.1:8080
    route_table: t
route_tables:
  - name: t
    virtual_hosts:
      - name: api
        domains: [api.example.com]
        routes:
          - match: { prefix: / }
            route: { cluster: c }
      - name: other
        domains: ["*"]
        routes:
          - match: { prefix: /a }
            route: { cluster: c }
          - match: { prefix: /b }
            route: { cluster: c }
          - match: { prefix: /c }
            route: { cluster: c }
          - match:
              prefix: /d
              headers:
                - name: x-model
                  regex: "gpt-(4"
            route: { cluster: c }
clusters:
  - name: c
    endpoints:
      - address: 127.0.0.1:9000
        locality: { cloud: aws, region: us-east-1 }
        labels: { model: gpt-4 }
"#;

#[test]
fn the_demo_example_compiles() {
    let text = include_str!("../../../examples/demo.yaml");
    let snap = load_str(text, "demo.yaml").unwrap();
    assert_eq!(snap.listeners.len(), 1);
    assert_eq!(snap.clusters.values().next().unwrap().endpoints.len(), 3);
    assert_eq!(snap.version.len(), 16);
}

#[test]
fn bad_regex_names_file_line_column_and_field_path() {
    let errs = load_str(BASE, "corridor.yaml").unwrap_err();
    assert_eq!(errs.errors.len(), 1, "{errs}");
    let line = errs.to_string();
    assert!(
        line.starts_with(
            "corridor.yaml:27:26: route_tables[0].virtual_hosts[1].routes[3].match.headers[0].regex: invalid regex: "
        ),
        "{line}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = r#"
listeners:
  - name: main
    address: localhost:80
    route_table: missing
  - name: main
    address: 127.0.0.1:81
    route_table: t
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*", "*"]
        routes:
          - match: { prefix: nope }
            route:
              cluster: ghost
          - route:
              cluster: c
              subset: { labels: { gpu: h100 } }
          - route:
              cluster: c
              retry_policy: { retry_on: [sometimes], num_retries: 99 }
clusters:
  - name: c
    protocol: h2
    endpoints:
      - address: 127.0.0.1:9000
      - address: 127.0.0.1:9000
      - address: 10.0.0.1
        weight: 0
"#;
    let errs = load_str(text, "x.yaml").unwrap_err();
    let s = errs.to_string();
    for needle in [
        "x.yaml:4:14: listeners[0].address: invalid address `localhost:80`; host names are not resolved",
        "x.yaml:5:18: listeners[0].route_table: route table `missing` is not defined in route_tables",
        "x.yaml:6:11: listeners[1].name: listener name `main` is used twice",
        "x.yaml:12:24: route_tables[0].virtual_hosts[0].domains[1]: domain `*` is already served by virtual_hosts[0]",
        "x.yaml:14:30: route_tables[0].virtual_hosts[0].routes[0].match.prefix: `nope` must start with `/`",
        "x.yaml:16:24: route_tables[0].virtual_hosts[0].routes[0].route.cluster: cluster `ghost` is not defined in clusters",
        "route_tables[0].virtual_hosts[0].routes[2].route.retry_policy.num_retries: 99 retries is too many",
        "route_tables[0].virtual_hosts[0].routes[2].route.retry_policy.retry_on[0]: unknown retry condition `sometimes`",
        "x.yaml:25:15: clusters[0].protocol: protocol h2 needs tls",
        "x.yaml:28:18: clusters[0].endpoints[1].address: endpoint 127.0.0.1:9000 is listed twice in cluster `c`",
        "clusters[0].endpoints[2].address: invalid address `10.0.0.1`",
        "clusters[0].endpoints[2].weight: weight must be at least 1",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    }
    // A subset label no endpoint carries yet is not an error: endpoints may
    // arrive later, and the subset's fallback applies until they do.
    assert!(!s.contains("gpu"), "{s}");
    assert!(s.ends_with("12 errors"), "{s}");
}

#[test]
fn tls_files_must_exist_and_sni_is_needed() {
    let text = r#"
listeners:
  - name: l
    address: 127.0.0.1:8443
    tls: { cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem, alpn: [h3] }
    route_table: t
route_tables: [{ name: t, virtual_hosts: [{ domains: ["*"], routes: [{ route: { cluster: c } }] }] }]
clusters:
  - name: c
    protocol: h2
    tls: {}
    endpoints: [{ address: "127.0.0.1:1" }]
"#;
    let s = load_str(text, "t.yaml").unwrap_err().to_string();
    assert!(
        s.contains("listeners[0].tls.cert_file: cannot read `/nonexistent/cert.pem`"),
        "{s}"
    );
    assert!(
        s.contains("listeners[0].tls.alpn[0]: unsupported ALPN `h3`"),
        "{s}"
    );
    assert!(
        s.contains("clusters[0].tls.sni: a server name is needed"),
        "{s}"
    );
}

#[test]
fn defaults_are_applied() {
    let text = BASE.replace("gpt-(4", "gpt-4.*");
    let snap = load_str(&text, "ok.yaml").unwrap();
    let crate::RouteAction::Forward(f) = &snap.route_tables[0].virtual_hosts[0].routes[0].action
    else {
        panic!("forward")
    };
    assert_eq!(f.timeout, std::time::Duration::from_secs(60));
    assert_eq!(f.idle_timeout, std::time::Duration::from_secs(300));
    assert_eq!(f.retry.num_retries, 0);
    let l = &snap.listeners[0];
    assert!(l.protocols.http1 && l.protocols.h2c);
    assert_eq!(snap.admin.address.to_string(), crate::DEFAULT_ADMIN_ADDRESS);
    assert_eq!(
        snap.runtime.drain_timeout,
        std::time::Duration::from_secs(10)
    );
    let c = &snap.clusters.values().next().unwrap();
    assert_eq!(c.connect_timeout, std::time::Duration::from_secs(5));
    assert_eq!(
        c.endpoints[0].labels.get("cloud").map(|v| v.as_ref()),
        Some("aws")
    );
}

#[test]
fn same_config_same_version() {
    let text = BASE.replace("gpt-(4", "gpt-4.*");
    let a = load_str(&text, "a").unwrap();
    let b = load_str(&text, "b").unwrap();
    let c = load_str(&text.replace("9000", "9001"), "c").unwrap();
    assert_eq!(a.version, b.version);
    assert_ne!(a.version, c.version);
}

#[test]
fn plaintext_listeners_always_speak_http1() {
    let text = BASE.replace("gpt-(4", "gpt-4").replace(
        "    route_table: t\n",
        "    protocols: [h2c]\n    route_table: t\n",
    );
    let s = load_str(&text, "p.yaml").unwrap_err().to_string();
    assert!(
        s.contains("listeners[0].protocols: http1 cannot be turned off"),
        "{s}"
    );
}

/// A config with one listener (`listener` extra fields), one route (`route` extra fields,
/// and `matcher` inside `match`) and one cluster.
fn one_route(listener: &str, matcher: &str, route: &str) -> String {
    format!(
        r#"
listeners: [{{ name: l, address: "127.0.0.1:1", route_table: t{listener} }}]
clusters: [{{ name: c, endpoints: [{{ address: "127.0.0.1:2" }}] }}]
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes: [{{ match: {{ prefix: /{matcher} }}, route: {{ cluster: c{route} }} }}]
"#
    )
}

#[test]
fn query_matchers_are_as_strict_as_header_matchers() {
    for (cond, ok) in [
        ("", false),
        ("present: false", false),
        ("absent: false", false),
        ("present: true", true),
        ("absent: true", true),
        ("exact: v", true),
    ] {
        for kind in ["headers", "query_parameters"] {
            let m = format!(", {kind}: [{{ name: x, {cond} }}]");
            let text = one_route("", &m, "");
            let res = load_str(&text, "q.yaml");
            assert_eq!(
                res.is_ok(),
                ok,
                "{kind} {{ {cond} }}: {:?}",
                res.err().map(|e| e.to_string())
            );
            if let Err(e) = res {
                assert!(e.to_string().contains(&format!("match.{kind}[0]")), "{e}");
            }
        }
    }
}

#[test]
fn retriable_statuses_need_the_retriable_status_codes_condition() {
    let text = one_route(
        "",
        "",
        ", retry_policy: { num_retries: 2, retry_on: [5xx], retriable_status_codes: [429] }",
    );
    let e = load_str(&text, "r.yaml").unwrap_err().to_string();
    assert!(
        e.contains("retry_policy.retriable_status_codes: these statuses are retried only when retry_on lists \"retriable-status-codes\""),
        "{e}"
    );
    let text = one_route("", "", ", retry_policy: { num_retries: 2, retry_on: [retriable-status-codes], retriable_status_codes: [429] }");
    let snap = load_str(&text, "r.yaml").unwrap();
    let crate::RouteAction::Forward(f) = &snap.route_tables[0].virtual_hosts[0].routes[0].action
    else {
        panic!("forward")
    };
    assert!(f.retry.retries_status(429) && !f.retry.retries_status(503));
}

#[test]
fn enum_numbers_outside_the_schema_are_rejected_with_their_field() {
    // A pushed resource is decoded from protobuf, where any number fits an enum field.
    let text = one_route("", "", ", subset: { fallback: any }");
    let (mut b, _) = crate::parse_bootstrap(&text, "e").unwrap();
    b.clusters[0].lb_policy = 99;
    b.clusters[0].protocol = 42;
    if let Some(crate::proto::route::Action::Route(r)) =
        &mut b.route_tables[0].virtual_hosts[0].routes[0].action
    {
        r.subset.as_mut().unwrap().fallback = 7;
    }
    b.admin = Some(crate::proto::Admin {
        access_log: Some(crate::proto::AccessLog {
            format: 5,
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = crate::compile_bootstrap(b, "push").unwrap_err().to_string();
    for needle in [
        "push: clusters[0].lb_policy: 99 is not a known value of this enum",
        "push: clusters[0].protocol: 42 is not a known value of this enum",
        "push: route_tables[0].virtual_hosts[0].routes[0].route.subset.fallback: 7 is not a known value",
        "push: admin.access_log.format: 5 is not a known value",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
}

#[test]
fn listener_http_settings_are_validated() {
    let text = one_route(
        ", http: { max_request_headers_count: 1000, forwarding: { mode: trusted, trusted_cidrs: [\"10.0.0.1/8\", nonsense] }, path_normalization: { escaped_slashes: keep } }",
        "",
        "",
    );
    let e = load_str(&text, "h.yaml").unwrap_err().to_string();
    for needle in [
        "listeners[0].http.max_request_headers_count: 1000 is over the maximum of 256",
        "listeners[0].http.forwarding.trusted_cidrs[0]: `10.0.0.1/8` is not a CIDR: host bits are set",
        "listeners[0].http.forwarding.trusted_cidrs[1]: `nonsense` is not a CIDR",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    let e = load_str(
        &one_route(", http: { forwarding: { mode: trusted } }", "", ""),
        "h.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("mode trusted needs the CIDRs"), "{e}");
    let e = load_str(
        &one_route(", http: { forwarding: { trusted_hops: 2 } }", "", ""),
        "h.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("trusted_hops applies only to mode trusted"),
        "{e}"
    );
    let snap = load_str(
        &one_route(
            ", http: { error_detail: minimal, max_request_body_bytes: 10 }",
            "",
            "",
        ),
        "h.yaml",
    )
    .unwrap();
    let http = &snap.listeners[0].http;
    assert_eq!(http.error_detail, crate::ErrorDetail::Minimal);
    assert_eq!(http.limits.max_body_bytes, Some(10));
    assert_eq!(http.limits.max_headers_count, 100);
}

#[test]
fn domains_with_ports_match_only_that_port_and_wildcards_take_none() {
    let text = r#"
listeners: [{ name: l, address: "127.0.0.1:1", route_table: t }]
clusters: [{ name: c, endpoints: [{ address: "127.0.0.1:2" }] }]
route_tables:
  - name: t
    virtual_hosts:
      - { name: tls, domains: ["api.example.com:8443", "[::1]:8443"], routes: [{ name: tls, route: { cluster: c } }] }
      - { name: plain, domains: ["api.example.com", "[::1]"], routes: [{ name: plain, route: { cluster: c } }] }
"#;
    let snap = load_str(text, "d.yaml").unwrap();
    let t = &snap.route_tables[0];
    let vhost = |h: &str| {
        t.virtual_host(h)
            .map(|i| t.virtual_hosts[i].name.to_string())
    };
    assert_eq!(vhost("api.example.com:8443").as_deref(), Some("tls"));
    assert_eq!(vhost("API.Example.com.:8443").as_deref(), Some("tls"));
    assert_eq!(vhost("api.example.com:443").as_deref(), Some("plain"));
    assert_eq!(vhost("api.example.com").as_deref(), Some("plain"));
    assert_eq!(vhost("[::1]:8443").as_deref(), Some("tls"));
    assert_eq!(vhost("[::1]").as_deref(), Some("plain"));
    for bad in [
        "*.example.com:8443",
        "api.*:80",
        "api.example.com:",
        "api.example.com:http",
        "::1",
    ] {
        let text =
            one_route("", "", "").replace("domains: [\"*\"]", &format!("domains: [\"{bad}\"]"));
        let e = load_str(&text, "d.yaml").unwrap_err().to_string();
        assert!(e.contains("domains[0]: invalid domain"), "{bad}: {e}");
    }
}

/// A file with one cluster `c` whose fields are `fields` (YAML flow, after the endpoints).
fn one_cluster(fields: &str) -> String {
    format!(
        "listeners: [{{ name: l, address: \"127.0.0.1:1\", route_table: t }}]\n\
         route_tables: [{{ name: t, virtual_hosts: [{{ domains: [\"*\"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]\n\
         clusters: [{{ name: c, endpoints: [{{ address: \"127.0.0.1:2\" }}], {fields} }}]\n"
    )
}

#[test]
fn balancing_settings_get_envoys_defaults() {
    let snap = load_str(
        &one_cluster("lb_policy: peak_ewma, outlier_detection: {}, health_checks: [{ tcp_health_check: {} }]"),
        "c.yaml",
    )
    .unwrap();
    let b = &snap.clusters.values().next().unwrap().balancing;
    assert_eq!(b.lb.policy, crate::LbPolicy::PeakEwma);
    assert_eq!(b.lb.default_rtt, std::time::Duration::from_millis(30));
    assert_eq!(b.lb.decay, std::time::Duration::from_secs(10));
    assert_eq!(
        b.outlier.as_ref(),
        Some(&crate::OutlierDetection::default())
    );
    let od = b.outlier.as_ref().unwrap();
    assert_eq!(
        (
            od.consecutive_5xx,
            od.max_ejection_percent,
            od.enforcing_consecutive_gateway_failure
        ),
        (5, 10, 0)
    );
    assert_eq!(b.health_checks[0].unhealthy_threshold, 3);
    assert_eq!(b.common.panic_threshold, 50.0);
    assert_eq!(b.common.overprovisioning, 140);
    assert_eq!(b.breakers.max_requests, 1024);
    assert_eq!(
        b.breakers.retries,
        crate::RetryLimit::Budget {
            percent: 20.0,
            min_concurrency: 3
        }
    );
    // Without outlier_detection there is no ejection; max_retries alone is Envoy's fixed breaker.
    let snap = load_str(
        &one_cluster("circuit_breakers: { max_retries: 3 }"),
        "c.yaml",
    )
    .unwrap();
    let b = &snap.clusters.values().next().unwrap().balancing;
    assert!(b.outlier.is_none());
    assert_eq!(b.breakers.retries, crate::RetryLimit::Fixed(3));
}

#[test]
fn bad_balancing_settings_name_their_field() {
    let errs = load_str(
        &one_cluster(
            "hash_policy: { header: x-user }, maglev: { table_size: 65536 }, \
             outlier_detection: { max_ejection_percent: 150, consecutive_5xx: 0 }, \
             health_checks: [{ interval: 1s }, { http_health_check: { path: health, expected_statuses: [{ start: 300, end: 200 }] } }], \
             circuit_breakers: { max_requests: 0, max_retries: 2, retry_budget: {} }, \
             common_lb_config: { healthy_panic_threshold: 120 }, \
             locality_weights: [{ locality: { cloud: aws }, weight: 0 }]",
        ),
        "c.yaml",
    )
    .unwrap_err()
    .to_string();
    for want in [
        "clusters[0].hash_policy: `hash_policy` applies to lb_policy ring_hash or maglev, but this cluster uses round_robin",
        "clusters[0].maglev: `maglev` applies to lb_policy maglev",
        "clusters[0].maglev.table_size: table_size 65536 must be a prime",
        "clusters[0].outlier_detection.max_ejection_percent: 150 is not a percentage",
        "clusters[0].outlier_detection.consecutive_5xx: must be at least 1",
        "clusters[0].health_checks[0]: a health check needs one of",
        "clusters[0].health_checks[1].http_health_check.path: a path starting with `/` is required",
        "clusters[0].health_checks[1].http_health_check.expected_statuses[0]: [300, 200) is not a range",
        "clusters[0].circuit_breakers.max_requests: 0 would refuse every request",
        "clusters[0].circuit_breakers.max_retries: max_retries and retry_budget exclude each other",
        "clusters[0].common_lb_config.healthy_panic_threshold: 120 is not a percentage",
        "clusters[0].locality_weights[0].weight: weight 0 is out of range",
    ] {
        assert!(errs.contains(want), "missing `{want}` in:\n{errs}");
    }
    assert!(
        errs.starts_with("c.yaml:3:"),
        "positions point into the file:\n{errs}"
    );
}

#[test]
fn bad_policies_are_rejected_with_their_field() {
    let text = r#"
listeners: [{ name: l, address: "127.0.0.1:1", route_table: t }]
geo: { jurisdictions: [EU, US], countries: { DE: EU, de: EU, Germany: EU }, regions: { europe-west1: EUR },
       preferred_regions: { EU: { regions: [gcp/, europe-west1, europe-west1] }, MARS: { regions: [x] } } }
residency_policies:
  - name: p
    subject_from_geo: true
    data_class_header: { header: x-data-class }
    rules: [{ data_classes: [pii], allowed_jurisdictions: [EU, MARS] }]
  - name: q
    rules: [{ data_classes: [pii], allowed_jurisdictions: [EU] }]
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        residency_policy: nope
        routes:
          - { route: { cluster: c } }
          - { residency_policy: q, data_class: health, route: { cluster: c } }
          - { residency_policy: p, route: { cluster: c } }
          - { prefer_nearest: true, route: { cluster: c } }
clusters: [{ name: c, endpoints: [{ address: "127.0.0.1:2" }] }]
"#;
    let err = load_str(text, "r.yaml").unwrap_err().to_string();
    for want in [
        "geo.countries[\"Germany\"]: `Germany` is not a two-letter ISO 3166 country code",
        "residency_policies[0].data_class_header.trusted_from: name the peers allowed",
        "geo.regions[\"europe-west1\"]: jurisdiction `EUR` is not in geo.jurisdictions (EU, US)",
        "is listed twice (codes ignore case)",
        "residency_policies[0].subject_from_geo: needs a source of the client's country",
        "residency_policies[0].rules[0].allowed_jurisdictions[1]: unknown jurisdiction `MARS`",
        "route_tables[0].virtual_hosts[0].residency_policy: unknown residency policy `nope`",
        "route_tables[0].virtual_hosts[0].routes[1].data_class: data class `health` is not one that policy `q` defines",
        "geo.preferred_regions[\"EU\"].regions[0]: `gcp/` is neither a region nor cloud/region",
        "geo.preferred_regions[\"EU\"].regions[2]: region `europe-west1` is listed twice",
        "geo.preferred_regions[\"MARS\"]: unknown jurisdiction `MARS`",
        "route_tables[0].virtual_hosts[0].routes[3].prefer_nearest: needs the client's country: set geo.country_header or geo.mmdb_file",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    // A policy with errors of its own is not also reported as unknown.
    assert!(!err.contains("unknown residency policy `p`"), "{err}");
}

#[test]
fn bad_client_auth_and_authorization_are_rejected_with_their_field() {
    let text = r#"
listeners:
  - name: l
    address: "127.0.0.1:1"
    route_table: t
    tls:
      cert_file: /nonexistent/cert.pem
      key_file: /nonexistent/key.pem
      client_auth: { trust_bundles: [{ trust_domain: AWS, ca_file: /nonexistent/ca.pem }, { trust_domain: gcp.corridor, ca_file: "" }, { trust_domain: gcp.corridor, ca_file: x }] }
  - name: plain
    address: "127.0.0.1:2"
    route_table: t
    tls: { cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem, forward_client_cert: sanitize_set }
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        authorization: { allow: [] }
        routes:
          - authorization: { allow: [{ spiffe_id: "https://x" }, { spiffe_id_prefix: "spiffe://aws.corr" }, { trust_domain: "a b" }, {}, { spiffe_id_prefix: "spiffe://aws.corridor/ns/inference" }] }
            route: { cluster: c }
clusters:
  - name: c
    endpoints: [{ address: "127.0.0.1:3" }]
    tls: { sni: up.test, cert_file: /nonexistent/c.pem, expected_identities: ["spiffe://aws.corridor/", "bad name"] }
  - name: d
    endpoints: [{ address: "127.0.0.1:4" }]
    tls: { insecure_skip_verify: true, expected_identities: [up.test] }
"#;
    let err = load_str(text, "m.yaml").unwrap_err().to_string();
    for want in [
        "listeners[0].tls.client_auth.trust_bundles[0].trust_domain: trust domain `AWS` may hold only lower-case letters",
        "listeners[0].tls.client_auth.trust_bundles[1].ca_file: a file path is required",
        "listeners[0].tls.client_auth.trust_bundles[2].trust_domain: trust domain `gcp.corridor` is listed twice",
        "listeners[1].tls.forward_client_cert: needs client_auth",
        "route_tables[0].virtual_hosts[0].authorization.allow: list the identities allowed",
        "route_tables[0].virtual_hosts[0].routes[0].authorization.allow[0].spiffe_id: `https://x` is not a SPIFFE ID",
        "route_tables[0].virtual_hosts[0].routes[0].authorization.allow[1].spiffe_id_prefix: `spiffe://aws.corr` must start with spiffe://<trust-domain>/",
        "route_tables[0].virtual_hosts[0].routes[0].authorization.allow[2].trust_domain: trust domain `a b` may hold only",
        "route_tables[0].virtual_hosts[0].routes[0].authorization.allow[3]: give one of spiffe_id, trust_domain or spiffe_id_prefix",
        "route_tables[0].virtual_hosts[0].routes[0].authorization.allow[4].spiffe_id_prefix: `spiffe://aws.corridor/ns/inference` must end with `/`",
        "clusters[0].tls.key_file: cert_file needs its key_file",
        "clusters[0].tls.expected_identities[0]: `spiffe://aws.corridor/`: the path must not end with `/`",
        "clusters[0].tls.expected_identities[1]: `bad name` is neither a SPIFFE ID nor a DNS name",
        "clusters[1].tls.expected_identities: an identity cannot be checked with insecure_skip_verify",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
}

#[test]
fn control_stream_tls_and_secret_references_are_checked_with_their_paths() {
    let text = r#"
listeners:
  - name: a
    address: "127.0.0.1:1"
    route_table: t
    tls: { secret: s, cert_file: /x.pem, client_auth: { trust_bundles: [{ trust_domain: aws.corridor, secret: b, ca_file: /y.pem }] } }
  - name: b
    address: "127.0.0.1:2"
    route_table: t
    tls: { cert_file: "secret:s#certificate_chain", key_file: /k.pem }
route_tables: [{ name: t, virtual_hosts: [{ domains: ["*"], routes: [{ direct_response: { status: 200 } }] }] }]
xds:
  server: "http://127.0.0.1:18000"
  node_id: n
  tls: { cert_file: /c.pem, expected_identities: ["spiffe://oci.corridor/"] }
"#;
    let err = load_str(text, "x.yaml").unwrap_err().to_string();
    for want in [
        "xds.server: tls needs an https:// server URL",
        "xds.tls.key_file: cert_file needs its key_file",
        "xds.tls.expected_identities[0]: `spiffe://oci.corridor/`: the path must not end with `/`",
        "listeners[0].tls.secret: give either a Secret or cert_file and key_file, not both",
        "listeners[0].tls.client_auth.trust_bundles[0].secret: give either a Secret or ca_file, not both",
        "listeners[1].tls.cert_file: `secret:s#certificate_chain` is not a file path; name a Secret in the `secret` field",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn identity_jurisdictions_are_checked_and_the_longest_prefix_wins() {
    let text = r#"
listeners: [{ name: a, address: "127.0.0.1:1", route_table: t }]
route_tables: [{ name: t, virtual_hosts: [{ domains: ["*"], routes: [{ direct_response: { status: 200 } }] }] }]
geo:
  jurisdictions: [EU, US]
  identity_jurisdictions:
    - { trust_domain: aws.corridor, jurisdiction: US }
    - { spiffe_id_prefix: "spiffe://aws.corridor/eu/", jurisdiction: EU }
    - { spiffe_id_prefix: "spiffe://aws.corridor/eu/de/", jurisdiction: US }
"#;
    let snap = load_str(text, "g.yaml").unwrap();
    let geo = &snap.store.residency().geo;
    let of = |id: &str| {
        geo.of_identity(id)
            .map(|j| geo.jurisdictions[usize::from(j)].to_string())
    };
    assert_eq!(of("spiffe://aws.corridor/eu/x").as_deref(), Some("EU"));
    assert_eq!(of("spiffe://aws.corridor/eu/de/x").as_deref(), Some("US"));
    assert_eq!(of("spiffe://aws.corridor/us/x").as_deref(), Some("US"));
    assert_eq!(of("spiffe://gcp.corridor/eu/x"), None);
    let bad = text.replace(
        "    - { trust_domain: aws.corridor, jurisdiction: US }\n",
        "    - { trust_domain: aws.corridor, jurisdiction: MARS }\n    - { trust_domain: x, spiffe_id_prefix: \"spiffe://x/\", jurisdiction: EU }\n    - { spiffe_id_prefix: \"spiffe://aws.corridor/eu\", jurisdiction: EU }\n",
    );
    let err = load_str(&bad, "g.yaml").unwrap_err().to_string();
    for want in [
        "geo.identity_jurisdictions[0].jurisdiction: unknown jurisdiction `MARS`",
        "geo.identity_jurisdictions[1]: give one of trust_domain and spiffe_id_prefix",
        "geo.identity_jurisdictions[2].spiffe_id_prefix: `spiffe://aws.corridor/eu` must start with spiffe://<trust-domain>/ and end with `/`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
