//! Data residency (D5) against real upstreams in two jurisdictions: EU
//! personal data never reaches a US endpoint through failures, retries,
//! ejection or panic; Corridor's own failures of the allowed endpoints are
//! answered 451 with the policy named; untrusted clients cannot change the
//! decision; other traffic fails over.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corridor_tests::{Client, Corridor, Fault, Upstream, UpstreamOptions, UpstreamProtocol};

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
