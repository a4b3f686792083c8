//! Data residency (D5) against real upstreams in two jurisdictions: EU
//! personal data never reaches a US endpoint through failures, retries,
//! ejection or panic; Corridor's own failures of the allowed endpoints are
//! answered 451 with the policy named, each 451 counted and audited once;
//! untrusted clients cannot change the decision; other traffic fails over;
//! routes prefer the regions nearest the client within what residency
//! allows; a policy pushed by the control plane takes effect without a
//! restart and a bad one is NACKed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corridor_tests::{
    Client, ControlPlane, Corridor, Fault, Upstream, UpstreamOptions, UpstreamProtocol,
};

use super::{fetch, upstream, HEAD};

/// Two EU endpoints (priority 0, region europe-west1) and two US endpoints
/// (priority 1, `jurisdiction: US` label); policy `eu-pii` on every route:
/// PII stays in the EU unless its subject is in the US; class and subject
/// headers are trusted from `trusted`.
fn config(eu: &[SocketAddr], us: &[SocketAddr], trusted: &str, route_extra: &str) -> String {
    let mut eps = String::new();
    for a in eu {
        eps.push_str(&format!(
            "      - {{ address: \"{a}\", locality: {{ cloud: gcp, region: europe-west1 }} }}\n"
        ));
    }
    for a in us {
        eps.push_str(&format!(
            "      - {{ address: \"{a}\", priority: 1, labels: {{ jurisdiction: US }} }}\n"
        ));
    }
    format!(
        r#"{HEAD}runtime: {{ worker_threads: 2 }}
geo:
  jurisdictions: [EU, US]
  regions: {{ europe-west1: EU }}
residency_policies:
  - name: eu-pii
    data_class_header: {{ header: x-data-class, trusted_from: ["{trusted}"] }}
    subject_header: {{ header: x-subject, trusted_from: ["{trusted}"] }}
    rules:
      - {{ data_classes: [pii], allowed_jurisdictions: [EU] }}
      - {{ data_classes: [pii], subject_jurisdictions: [US], allowed_jurisdictions: [US, EU] }}
      - {{ data_classes: [public], allowed_jurisdictions: [EU, US] }}
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        residency_policy: eu-pii
        routes:
          - match: {{ prefix: / }}
            {route_extra}
            route:
              cluster: c
              retry_policy: {{ num_retries: 3, retry_on: [connect-failure, retriable-status-codes], retriable_status_codes: [503] }}
clusters:
  - name: c
    outlier_detection: {{ consecutive_5xx: 2, interval: 100ms, base_ejection_time: 500ms, max_ejection_percent: 100 }}
    endpoints:
{eps}"#
    )
}

/// GET /status/200 with `headers`; status and the responding upstream.
async fn get(c: &Client, headers: &[(&str, &str)]) -> (u16, String, serde_json::Value) {
    let mut b = http::Request::get("/status/200");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = fetch(c, b.body(corridor_tests::client::empty()).unwrap()).await;
    let json = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, r.header("x-upstream").to_string(), json)
}

const PII_EU: &[(&str, &str)] = &[("x-data-class", "pii"), ("x-subject", "EU")];
const PUBLIC: &[(&str, &str)] = &[("x-data-class", "public")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eu_personal_data_never_leaves_the_eu_through_failures() {
    let eu = [
        upstream("eu0", UpstreamProtocol::Http1).await,
        upstream("eu1", UpstreamProtocol::Http1).await,
    ];
    let us = [
        upstream("us0", UpstreamProtocol::Http1).await,
        upstream("us1", UpstreamProtocol::Http1).await,
    ];
    let eu_addrs: Vec<SocketAddr> = eu.iter().map(Upstream::addr).collect();
    let us_addrs: Vec<SocketAddr> = us.iter().map(Upstream::addr).collect();
    let proxy = Corridor::start(&config(&eu_addrs, &us_addrs, "127.0.0.1/32", "")).await;
    let us_requests = || us.iter().map(Upstream::requests).sum::<u64>();
    let c = Client::h1(proxy.addr).await.unwrap();

    // Healthy: PII from an EU subject on EU endpoints.
    for _ in 0..10 {
        let (status, from, _) = get(&c, PII_EU).await;
        assert_eq!((status, from.starts_with("eu")), (200, true), "{from}");
    }

    // Every EU endpoint answers 503: retries and ejection stay in the EU, and
    // in panic mode too (both EU endpoints ejected, the level has none usable).
    for u in &eu {
        u.set_fault(Fault {
            delay: Duration::ZERO,
            status: Some(503),
        });
    }
    let before = us_requests();
    for _ in 0..20 {
        let (status, from, _) = get(&c, PII_EU).await;
        assert_eq!(status, 503, "the EU endpoints' own answer passes through");
        assert!(from.starts_with("eu"), "{from}");
    }
    assert_eq!(us_requests(), before, "no PII request reached the US");
    // Other traffic fails over to the US.
    let (status, from, _) = get(&c, PUBLIC).await;
    assert_eq!((status, from.starts_with("us")), (200, true), "{from}");

    // The EU refuses connections: 451, naming the policy, class and subject.
    let eu_ports = eu_addrs.clone();
    for u in &eu {
        u.shutdown().await;
    }
    let before = us_requests();
    let c = Client::h1(proxy.addr).await.unwrap();
    let (status, _, body) = get(&c, PII_EU).await;
    assert_eq!(status, 451, "{body}");
    assert_eq!(body["error"]["type"], "residency_denied");
    let msg = body["error"]["message"].as_str().unwrap();
    for want in ["eu-pii", "pii", "EU"] {
        assert!(msg.contains(want), "{msg}");
    }
    for _ in 0..5 {
        let c = Client::h1(proxy.addr).await.unwrap();
        assert_eq!(get(&c, PII_EU).await.0, 451);
    }
    assert_eq!(us_requests(), before, "no PII request reached the US");
    assert_eq!(
        proxy
            .metric(
                "corridor_residency_denied_total",
                &[("policy", "eu-pii"), ("data_class", "pii")]
            )
            .await,
        6.0,
        "one count per 451"
    );
    assert!(
        proxy
            .wait_for_log("decision=\"deny\"", Duration::from_secs(5))
            .await
            || proxy
                .wait_for_log("decision=deny", Duration::from_secs(1))
                .await,
        "an audit line for the denial"
    );
    let c = Client::h1(proxy.addr).await.unwrap();
    let (status, from, _) = get(&c, PUBLIC).await;
    assert_eq!((status, from.starts_with("us")), (200, true), "{from}");

    // An EU endpoint returns: PII is served again within seconds.
    let mut opts = UpstreamOptions::new("eu0-again", UpstreamProtocol::Http1);
    opts.bind = Some(eu_ports[0]);
    let _back = Upstream::start(opts).await;
    let start = Instant::now();
    loop {
        let c = Client::h1(proxy.addr).await.unwrap();
        let (status, from, _) = get(&c, PII_EU).await;
        if status == 200 {
            assert_eq!(from, "eu0-again");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "PII served again: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_clients_cannot_change_the_decision_and_conflicts_are_strict() {
    let eu = upstream("eu", UpstreamProtocol::Http1).await;
    let us = upstream("us", UpstreamProtocol::Http1).await;
    // The headers are trusted only from 10.0.0.0/8: this client is not, so
    // the route's default class (pii) applies whatever it sends.
    let proxy = Corridor::start(&config(
        &[eu.addr()],
        &[us.addr()],
        "10.0.0.0/8",
        "data_class: pii",
    ))
    .await;
    eu.set_fault(Fault {
        delay: Duration::ZERO,
        status: Some(503),
    });
    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..10 {
        let (status, from, _) = get(
            &c,
            &[
                ("x-data-class", "public"),
                ("x_data_class", "public"),
                ("x-subject", "US"),
                ("x-forwarded-for", "10.1.2.3"),
            ],
        )
        .await;
        assert_eq!(
            (status, from.as_str()),
            (503, "eu"),
            "the default class holds"
        );
    }
    assert_eq!(us.requests(), 0);
    let seen = eu.request_log();
    assert!(
        seen.iter()
            .all(|r| ["x-data-class", "x_data_class", "x-subject"]
                .iter()
                .all(|h| r.headers.get(*h).is_none())),
        "untrusted class and subject headers are removed, also spelled with underscores"
    );

    // Trusted, but conflicting: two class headers, one pii, one public; the
    // strict reading wins (EU only for an EU subject).
    let eu2 = upstream("eu2", UpstreamProtocol::Http1).await;
    let us2 = upstream("us2", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&config(&[eu2.addr()], &[us2.addr()], "127.0.0.1/32", "")).await;
    eu2.set_fault(Fault {
        delay: Duration::ZERO,
        status: Some(503),
    });
    let c = Client::h1(proxy.addr).await.unwrap();
    for conflict in [
        &[
            ("x-data-class", "public"),
            ("x-data-class", "pii"),
            ("x-subject", "EU"),
        ][..],
        &[("x-data-class", "public, pii"), ("x-subject", "EU")][..],
        // An unknown class is the strictest class.
        &[("x-data-class", "secret"), ("x-subject", "EU")][..],
        // Two subjects: the narrower (EU) wins for pii.
        &[
            ("x-data-class", "pii"),
            ("x-subject", "US"),
            ("x-subject", "EU"),
        ][..],
    ] {
        let (status, from, _) = get(&c, conflict).await;
        assert_eq!((status, from.as_str()), (503, "eu2"), "{conflict:?}");
    }
    assert_eq!(us2.requests(), 0);
    // Unconflicted public traffic does fail over.
    let (status, from, _) = get(&c, PUBLIC).await;
    assert_eq!((status, from.as_str()), (200, "us2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_country_comes_from_a_geoip_database_reloaded_live() {
    let eu = upstream("eu", UpstreamProtocol::Http1).await;
    let us = upstream("us", UpstreamProtocol::Http1).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("country.mmdb");
    corridor_tests::geo::write_country_db(&db, &[("127.0.0.0/8", "DE")]).unwrap();
    let yaml = format!(
        r#"{HEAD}geo:
  countries: {{ DE: EU, US: US }}
  regions: {{ europe-west1: EU, us-east1: US }}
  mmdb_file: "{db}"
residency_policies:
  - name: by-subject
    subject_from_geo: true
    rules:
      - {{ data_classes: [pii], subject_jurisdictions: [EU], allowed_jurisdictions: [EU] }}
      - {{ data_classes: [pii], subject_jurisdictions: [US], allowed_jurisdictions: [US] }}
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ residency_policy: by-subject, data_class: pii, route: {{ cluster: c }} }}
clusters:
  - name: c
    endpoints:
      - {{ address: "{eu}", locality: {{ region: europe-west1 }} }}
      - {{ address: "{us}", locality: {{ region: us-east1 }} }}
"#,
        db = db.display(),
        eu = eu.addr(),
        us = us.addr(),
    );
    let proxy = Corridor::start_with_dir(&yaml, dir).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..6 {
        let (status, from, _) = get(&c, &[]).await;
        assert_eq!((status, from.as_str()), (200, "eu"), "a client in DE");
    }
    // The database now places the client in the US: swapped without restart.
    let next = db.with_extension("next");
    corridor_tests::geo::write_country_db(&next, &[("127.0.0.0/8", "US")]).unwrap();
    std::fs::rename(&next, &db).unwrap();
    let start = Instant::now();
    loop {
        let (status, from, _) = get(&c, &[]).await;
        assert_eq!(status, 200);
        if from == "us" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the reloaded database places the client in the US"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..6 {
        let (status, from, _) = get(&c, &[]).await;
        assert_eq!((status, from.as_str()), (200, "us"));
    }
    // A corrupt file keeps the last good database serving.
    std::fs::write(&db, b"not a database").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, from, _) = get(&c, &[]).await;
    assert_eq!((status, from.as_str()), (200, "us"));
    assert!(
        proxy
            .wait_for_log(
                "previous GeoIP database keeps serving",
                Duration::from_secs(5)
            )
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_serves_restricted_data_from_the_allowed_target() {
    let eu = upstream("eu", UpstreamProtocol::Http1).await;
    let us = upstream("us", UpstreamProtocol::Http1).await;
    let yaml = format!(
        r#"{HEAD}geo:
  jurisdictions: [EU, US]
  regions: {{ europe-west1: EU }}
residency_policies:
  - name: eu-pii
    data_class_header: {{ header: x-data-class, trusted_from: ["127.0.0.1/32"] }}
    rules:
      - {{ data_classes: [pii], allowed_jurisdictions: [EU] }}
      - {{ data_classes: [public], allowed_jurisdictions: [EU, US] }}
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        residency_policy: eu-pii
        routes:
          - route: {{ weighted_clusters: {{ clusters: [{{ name: eu, weight: 10 }}, {{ name: us, weight: 90 }}] }} }}
clusters:
  - {{ name: eu, endpoints: [{{ address: "{eu}", locality: {{ region: europe-west1 }} }}] }}
  - {{ name: us, endpoints: [{{ address: "{us}", labels: {{ jurisdiction: US }} }}] }}
"#,
        eu = eu.addr(),
        us = us.addr(),
    );
    let proxy = Corridor::start(&yaml).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..30 {
        let (status, from, _) = get(&c, &[("x-data-class", "pii")]).await;
        assert_eq!(
            (status, from.as_str()),
            (200, "eu"),
            "PII takes the allowed target"
        );
    }
    assert_eq!(us.requests(), 0);
    // Other data keeps the weights.
    let mut to_us = 0;
    for _ in 0..60 {
        let (status, from, _) = get(&c, &[("x-data-class", "public")]).await;
        assert_eq!(status, 200);
        to_us += usize::from(from == "us");
    }
    assert!(
        to_us > 30,
        "the 90 % target still gets public traffic: {to_us}/60"
    );
}

/// Residency audit lines of `decision` in the proxy's log.
fn audit_lines(proxy: &Corridor, decision: &str) -> usize {
    let quoted = format!("decision=\"{decision}\"");
    let bare = format!("decision={decision} ");
    proxy
        .logs()
        .lines()
        .filter(|l| l.contains("corridor::residency") && (l.contains(&quoted) || l.contains(&bare)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_and_audit_lines_match_one_for_one_and_allowed_lines_are_sampled() {
    let eu = upstream("eu", UpstreamProtocol::Http1).await;
    let yaml = format!(
        r#"{HEAD}geo: {{ jurisdictions: [EU, US] }}
residency_policies:
  - name: every
    rules: [{{ data_classes: [pii], allowed_jurisdictions: [EU] }}, {{ data_classes: [health], allowed_jurisdictions: [US] }}]
  - name: none
    audit_sample_rate: 0
    rules: [{{ data_classes: [pii], allowed_jurisdictions: [EU] }}]
  - name: half
    audit_sample_rate: 0.5
    rules: [{{ data_classes: [pii], allowed_jurisdictions: [EU] }}]
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ prefix: /every/pii/ }}, residency_policy: every, data_class: pii, route: {{ cluster: c, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /every/health/ }}, residency_policy: every, data_class: health, route: {{ cluster: c, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /none/ }}, residency_policy: none, data_class: pii, route: {{ cluster: c, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /half/ }}, residency_policy: half, data_class: pii, route: {{ cluster: c, prefix_rewrite: / }} }}
clusters:
  - name: c
    endpoints:
      - {{ address: "{eu}", labels: {{ jurisdiction: EU }} }}
      - {{ address: "127.0.0.1:9", labels: {{ jurisdiction: US }} }}
"#,
        eu = eu.addr(),
    );
    let proxy = Corridor::start(&yaml).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let send = |path: &'static str| {
        let c = &c;
        async move {
            let r = super::fetch_get(c, path).await;
            r.status
        }
    };
    // Allowed classified requests: a line each at rate 1, none at rate 0.
    for _ in 0..7 {
        assert_eq!(send("/every/pii/status/200").await, 200);
        assert_eq!(send("/none/status/200").await, 200);
    }
    for _ in 0..200 {
        assert_eq!(send("/half/status/200").await, 200);
    }
    // Health data may only go to the US endpoint, which refuses connections:
    // 451 each time (the policy excluded the EU endpoint, which could serve).
    let mut denied = 0;
    for _ in 0..9 {
        let c = Client::h1(proxy.addr).await.unwrap();
        let status = super::fetch_get(&c, "/every/health/status/200")
            .await
            .status;
        assert_eq!(status, 451);
        denied += 1;
    }
    let counted = proxy
        .metric(
            "corridor_residency_denied_total",
            &[("policy", "every"), ("data_class", "health")],
        )
        .await;
    assert_eq!(counted, f64::from(denied));
    let deadline = Instant::now() + Duration::from_secs(5);
    while audit_lines(&proxy, "deny") < denied as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let any extra line arrive before counting exactly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        audit_lines(&proxy, "deny"),
        denied as usize,
        "one audit line per 451"
    );
    let logs = proxy.logs();
    let allowed_by = |policy: &str| {
        let p = format!("policy={policy} ");
        logs.lines()
            .filter(|l| {
                l.contains("corridor::residency")
                    && l.contains("decision=\"allow\"")
                    && l.contains(&p)
            })
            .count()
    };
    assert_eq!(allowed_by("every"), 7, "every allowed request at rate 1");
    // Binomial(200, 0.5): 60..=140 is more than 5 standard deviations wide.
    let half = allowed_by("half");
    assert!((60..=140).contains(&half), "{half} of 200 at rate 0.5");
    assert_eq!(audit_lines(&proxy, "allow"), 7 + half, "none at rate 0");
    assert!(
        !proxy
            .logs()
            .lines()
            .any(|l| l.contains("corridor::residency") && l.contains("policy=none")),
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_prefer_the_regions_nearest_the_client() {
    let west1 = upstream("gcp-europe-west1", UpstreamProtocol::Http1).await;
    let westeu = upstream("azure-westeurope", UpstreamProtocol::Http1).await;
    let us = upstream("aws-us-east-1", UpstreamProtocol::Http1).await;
    let yaml = format!(
        r#"{HEAD}geo:
  countries: {{ DE: EU, FR: EU, US: US }}
  regions: {{ europe-west1: EU, westeurope: EU, us-east-1: US }}
  country_header: {{ header: x-country, trusted_from: [127.0.0.1] }}
  preferred_regions: {{ EU: {{ regions: [gcp/europe-west1, azure/westeurope] }} }}
residency_policies:
  - name: eu-pii
    data_class_header: {{ header: x-data-class, trusted_from: [127.0.0.1] }}
    rules: [{{ data_classes: [pii], allowed_jurisdictions: [EU] }}]
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        residency_policy: eu-pii
        routes:
          - match: {{ prefix: / }}
            prefer_nearest: true
            route:
              cluster: c
              retry_policy: {{ num_retries: 2, retry_on: [connect-failure] }}
clusters:
  - name: c
    endpoints:
      - {{ address: "{a}", locality: {{ cloud: gcp, region: europe-west1 }} }}
      - {{ address: "{b}", locality: {{ cloud: azure, region: westeurope }} }}
      - {{ address: "{c}", locality: {{ cloud: aws, region: us-east-1 }} }}
"#,
        a = west1.addr(),
        b = westeu.addr(),
        c = us.addr(),
    );
    let proxy = Corridor::start(&yaml).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let served = |headers: &'static [(&'static str, &'static str)]| {
        let c = &c;
        async move {
            let (status, from, _) = get(c, headers).await;
            assert_eq!(status, 200);
            from
        }
    };
    // EU clients: the first preferred region; US clients: their jurisdiction.
    for _ in 0..6 {
        assert_eq!(served(&[("x-country", "DE")]).await, "gcp-europe-west1");
        assert_eq!(served(&[("x-country", "us")]).await, "aws-us-east-1");
    }
    // Without a known country, no preference: every endpoint serves.
    let mut anywhere = std::collections::HashSet::new();
    for _ in 0..9 {
        anywhere.insert(served(&[]).await);
    }
    assert_eq!(anywhere.len(), 3, "{anywhere:?}");
    // The first region goes away: the next preferred region (a retry after
    // the refused connection), never the US though it is healthy.
    west1.shutdown().await;
    for _ in 0..6 {
        let c = Client::h1(proxy.addr).await.unwrap();
        let (status, from, _) = get(&c, &[("x-country", "FR")]).await;
        assert_eq!((status, from.as_str()), (200, "azure-westeurope"));
    }
    // Both EU regions gone: a public request from an EU client fails over to
    // the US; the same client's PII is refused (residency wins over nearness).
    westeu.shutdown().await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let (status, from, _) = get(&c, &[("x-country", "DE")]).await;
    assert_eq!((status, from.as_str()), (200, "aws-us-east-1"));
    let c = Client::h1(proxy.addr).await.unwrap();
    let (status, _, body) = get(&c, &[("x-country", "DE"), ("x-data-class", "pii")]).await;
    assert_eq!(status, 451, "{body}");
    assert_eq!(
        us.requests(),
        6 + 1 + 3,
        "US requests: 6 US clients, 1 failover, 3 of 9 unpreferred"
    );
}

/// A proxy whose geo tables are in its bootstrap, with the route table, the
/// clusters and the residency policy pushed by the reference control plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_policy_takes_effect_without_restart_and_a_bad_one_is_nacked() {
    let eu = upstream("eu", UpstreamProtocol::Http1).await;
    let us = upstream("us", UpstreamProtocol::Http1).await;
    let clusters = format!(
        "clusters:\n  - name: c\n    endpoints:\n      - {{ address: \"{}\", labels: {{ jurisdiction: EU }} }}\n      - {{ address: \"{}\", labels: {{ jurisdiction: US }} }}\n",
        eu.addr(),
        us.addr()
    );
    let routes = |policy: &str| {
        format!(
            "route_tables:\n  - name: t\n    virtual_hosts:\n      - domains: [\"*\"]\n{policy}        routes: [{{ match: {{ prefix: / }}, route: {{ cluster: c }} }}]\n"
        )
    };
    let policy = |allowed: &str| {
        format!(
            "residency_policies:\n  - name: pii\n    data_class_header: {{ header: x-data-class, trusted_from: [127.0.0.1] }}\n    rules: [{{ data_classes: [pii], allowed_jurisdictions: [{allowed}] }}]\n"
        )
    };
    let cp =
        ControlPlane::start(&[("clusters.yaml", &clusters), ("routes.yaml", &routes(""))]).await;
    let bootstrap = format!(
        "{HEAD}runtime: {{ worker_threads: 2 }}\ngeo: {{ jurisdictions: [EU, US] }}\nxds: {{ server: \"{}\", node_id: n1, initial_fetch_timeout: 3s }}\n",
        cp.url()
    );
    let proxy = Corridor::start(&bootstrap).await;
    const PII: &[(&str, &str)] = &[("x-data-class", "pii")];
    let froms = |n: usize| {
        let addr = proxy.addr;
        async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..n {
                let c = Client::h1(addr).await.unwrap();
                let (status, from, _) = get(&c, PII).await;
                if status == 200 {
                    seen.insert(from);
                } else {
                    seen.insert(status.to_string());
                }
            }
            seen
        }
    };
    super::eventually("both endpoints to serve", || async {
        froms(4).await.len() == 2
    })
    .await;

    // The policy arrives with the route table that names it.
    cp.write("policy.yaml", &policy("EU"));
    cp.write("routes.yaml", &routes("        residency_policy: pii\n"));
    super::eventually("PII to stay in the EU", || async {
        froms(4).await == ["eu".to_string()].into()
    })
    .await;
    assert_eq!(froms(10).await, ["eu".to_string()].into());

    // A changed policy moves PII without a restart.
    cp.write("policy.yaml", &policy("US"));
    super::eventually("PII to move to the US", || async {
        froms(4).await == ["us".to_string()].into()
    })
    .await;

    // A policy naming a jurisdiction this proxy does not know passes the
    // control plane (it does not know the proxies' geo tables) and is
    // NACKed by the proxy, which keeps the last good policy.
    cp.write("policy.yaml", &policy("MARS"));
    let want =
        "ResidencyPolicy(pii).rules[0].allowed_jurisdictions[0]: unknown jurisdiction `MARS`";
    super::eventually("the NACK to reach the control plane", || async {
        cp.last_nacks()
            .await
            .iter()
            .any(|(t, m)| t.ends_with(".ResidencyPolicy") && m.contains(want))
    })
    .await;
    let nacks = proxy
        .metric(
            "corridor_xds_updates_total",
            &[("type", "ResidencyPolicy"), ("result", "nack")],
        )
        .await;
    assert!(nacks >= 1.0);
    assert_eq!(froms(10).await, ["us".to_string()].into());

    // A policy the control plane itself can reject is not pushed.
    cp.write(
        "policy.yaml",
        &policy("EU").replace("    rules:", "    audit_sample_rate: 2\n    rules:"),
    );
    super::eventually("the control plane to report policy.yaml", || async {
        cp.files()
            .await
            .contains("residency_policies[0].audit_sample_rate: 2 is not a share between 0 and 1")
    })
    .await;
    assert_eq!(froms(6).await, ["us".to_string()].into());
    let after = proxy
        .metric(
            "corridor_xds_updates_total",
            &[("type", "ResidencyPolicy"), ("result", "nack")],
        )
        .await;
    assert_eq!(after, nacks, "the control plane did not push it");

    // The policy goes away while the route table still names it: the table
    // keeps serving with the policy it was served with (make before break),
    // until its new version without a policy arrives.
    cp.remove("policy.yaml");
    super::eventually("the policy to be removed", || async {
        let (_, body) = proxy.admin_get("/config_dump").await;
        let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
        dump["resources"]["ResidencyPolicy"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    })
    .await;
    assert_eq!(froms(6).await, ["us".to_string()].into());
    cp.write("routes.yaml", &routes(""));
    super::eventually("both endpoints to serve again", || async {
        froms(4).await.len() == 2
    })
    .await;
}
