//! Routing: virtual hosts, path/header/query matches, subsets chosen by request
//! labels, weighted clusters, rewrites, header edits, direct responses, and
//! every client/upstream protocol pairing (h1, h2c, TLS with ALPN).

use bytes::Bytes;
use corridor_tests::client;
use corridor_tests::{Client, Corridor, TestPki, Upstream, UpstreamProtocol};
use http::{Request, Version};
use std::time::Duration;

use super::{endpoints, fetch, fetch_get, single_route, upstream, HEAD};

fn get(uri: &str) -> Request<corridor_tests::Body> {
    Request::get(uri).body(client::empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_header_picks_the_cloud_subset_with_default_fallback() {
    let oci = upstream("oci", UpstreamProtocol::Http1).await;
    let aws = upstream("aws", UpstreamProtocol::H2c).await;
    let azure = upstream("azure", UpstreamProtocol::Auto).await;
    let eps = endpoints(&[
        (
            oci.addr(),
            r#"locality: { cloud: oci, region: us-ashburn-1 }, labels: { model: "llama-*" }"#,
        ),
        (
            aws.addr(),
            r#"locality: { cloud: aws, region: us-east-1 }, labels: { model: "claude-*" }"#,
        ),
        (
            azure.addr(),
            r#"locality: { cloud: azure, region: westeurope }, labels: { model: "gpt-*" }"#,
        ),
    ]);
    // OCI and Azure speak HTTP/1.1 and share a cluster split by the model label; AWS
    // speaks h2c, so Claude models reach it by a header-prefix route.
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - name: claude
            match: {{ prefix: /, headers: [{{ name: x-model, prefix: claude- }}] }}
            route: {{ cluster: aws }}
          - name: chat
            route:
              cluster: h1
              subset:
                from_request: [{{ header: x-model, label: model, glob: true }}]
                fallback: default_subset
                default_subset: {{ cloud: oci }}
clusters:
  - name: h1
    endpoints:
{eps}
  - name: aws
    protocol: h2c
    endpoints:
{aws_ep}
"#,
        eps = eps
            .lines()
            .filter(|l| !l.contains(&aws.addr().to_string()))
            .collect::<Vec<_>>()
            .join("\n"),
        aws_ep = endpoints(&[(
            aws.addr(),
            r#"locality: { cloud: aws }, labels: { model: "claude-*" }"#
        )]),
    );
    let proxy = Corridor::start(&config).await;
    for c in [
        Client::h1(proxy.addr).await.unwrap(),
        Client::h2c(proxy.addr).await.unwrap(),
    ] {
        for (model, cloud, proto) in [
            ("gpt-4o", "azure", "HTTP/1.1"),
            ("gpt-4o-mini", "azure", "HTTP/1.1"),
            ("claude-3-5-sonnet", "aws", "HTTP/2"),
            ("llama-3-70b", "oci", "HTTP/1.1"),
            ("mistral-large", "oci", "HTTP/1.1"),
        ] {
            let req = Request::post("/echo")
                .header("x-model", model)
                .body(client::full(r#"{"messages":[]}"#))
                .unwrap();
            let r = fetch(&c, req).await;
            assert_eq!(r.status, 200, "{model}");
            assert_eq!(
                r.header("x-upstream"),
                cloud,
                "{model} via {:?}",
                c.version()
            );
            assert_eq!(r.header("x-upstream-protocol"), proto, "{model}");
        }
        let r = fetch_get(&c, "/echo").await;
        assert_eq!(
            r.header("x-upstream"),
            "oci",
            "no x-model header falls back to the default subset"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_paths_headers_and_queries_pick_routes() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - name: api
        domains: [api.example.com, "*.api.example.com"]
        routes:
          - {{ name: exact, match: {{ path: /status/200 }}, route: {{ cluster: b }} }}
          - {{ name: regex, match: {{ regex: "/v[0-9]+/echo" }}, route: {{ cluster: a }} }}
          - name: canary
            match: {{ prefix: /, headers: [{{ name: x-canary, present: true }}] }}
            route: {{ cluster: b }}
          - name: query
            match: {{ prefix: /, query_parameters: [{{ name: env, exact: staging }}] }}
            route: {{ cluster: b }}
          - {{ name: rest, match: {{ prefix: /, methods: [GET, POST] }}, route: {{ cluster: a }} }}
clusters:
  - {{ name: a, endpoints: [{{ address: "{a}" }}] }}
  - {{ name: b, endpoints: [{{ address: "{b}" }}] }}
"#,
        a = a.addr(),
        b = b.addr()
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let send =
        |host: &'static str, uri: &'static str, hdr: Option<(&'static str, &'static str)>| {
            let mut r = Request::get(uri).header("host", host);
            if let Some((k, v)) = hdr {
                r = r.header(k, v);
            }
            fetch(&c, r.body(client::empty()).unwrap())
        };
    assert_eq!(
        send("api.example.com", "/status/200", None)
            .await
            .header("x-upstream"),
        "b"
    );
    assert_eq!(
        send("API.example.com:8080", "/v12/echo", None)
            .await
            .header("x-upstream"),
        "a"
    );
    let r = send("eu.api.example.com", "/slow?ms=1", Some(("x-canary", "1"))).await;
    assert_eq!(r.header("x-upstream"), "b");
    assert_eq!(
        send("api.example.com", "/slow?env=staging&ms=1", None)
            .await
            .header("x-upstream"),
        "b"
    );
    assert_eq!(
        send("api.example.com", "/slow?env=prod&ms=1", None)
            .await
            .header("x-upstream"),
        "a"
    );

    let r = send("other.example.com", "/status/200", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-corridor-error"), "no_route");
    assert_eq!(r.header("content-type"), "application/json");
    let body = r.json();
    assert_eq!(body["error"]["type"], "no_route");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("other.example.com/status/200"), "{msg}");

    let del = Request::delete("/x")
        .header("host", "api.example.com")
        .body(client::empty())
        .unwrap();
    assert_eq!(fetch(&c, del).await.status, 404, "DELETE matches no route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_header_edits_and_direct_responses() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        request_headers: {{ add: [{{ name: x-from-vhost, value: v }}], set: [{{ name: x-drop, value: v }}] }}
        response_headers: {{ set: [{{ name: x-served-by, value: corridor }}] }}
        routes:
          - name: legacy
            match: {{ prefix: /api/legacy }}
            route: {{ cluster: c, prefix_rewrite: /echo, host_rewrite: internal.svc }}
            request_headers:
              set: [{{ name: x-tenant, value: acme }}]
              remove: [x-secret, x-drop]
            response_headers:
              add: [{{ name: x-route, value: legacy }}]
              remove: [x-upstream-protocol]
          - name: teapot
            match: {{ path: /teapot }}
            direct_response: {{ status: 418, body: "short and stout", content_type: text/plain }}
          - name: empty
            match: {{ path: /nothing }}
            direct_response: {{ status: 204 }}
clusters:
  - {{ name: c, endpoints: [{{ address: "{a}" }}] }}
"#,
        a = up.addr()
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let req = Request::post("/api/legacy?x=1")
        .header("x-secret", "hunter2")
        .header("x-tenant", "evil")
        .body(client::full("payload"))
        .unwrap();
    let r = fetch(&c, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-path"), "/echo?x=1");
    assert_eq!(r.header("x-echo-host"), "internal.svc");
    assert_eq!(r.header("x-echo-x-tenant"), "acme");
    assert_eq!(r.header("x-echo-x-from-vhost"), "v");
    assert_eq!(
        r.header("x-echo-x-secret"),
        "",
        "removed header must not reach the upstream"
    );
    assert_eq!(r.header("x-route"), "legacy");
    assert_eq!(r.header("x-served-by"), "corridor");
    assert!(r.headers.get("x-upstream-protocol").is_none());
    assert_eq!(r.body, Bytes::from("payload"));

    let r = fetch_get(&c, "/teapot").await;
    assert_eq!(r.status, 418);
    assert_eq!(r.header("content-type"), "text/plain");
    assert_eq!(r.header("x-served-by"), "corridor");
    assert_eq!(r.body, Bytes::from("short and stout"));
    assert_eq!(fetch_get(&c, "/nothing").await.status, 204);
    assert!(
        up.request_log().iter().all(|r| r.path() != "/teapot"),
        "direct responses never reach upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_traffic() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - route: {{ weighted_clusters: {{ clusters: [{{ name: a, weight: 3 }}, {{ name: b, weight: 1 }}] }} }}
clusters:
  - {{ name: a, endpoints: [{{ address: "{a}" }}] }}
  - {{ name: b, endpoints: [{{ address: "{b}" }}] }}
"#,
        a = a.addr(),
        b = b.addr()
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h2c(proxy.addr).await.unwrap();
    let n = 400;
    let mut to_a = 0;
    for _ in 0..n {
        if fetch(&c, get("/status/200")).await.header("x-upstream") == "a" {
            to_a += 1;
        }
    }
    // Binomial(400, 0.75): mean 300, sd 8.7; 250..350 is beyond 5 sd.
    assert!((250..=350).contains(&to_a), "a got {to_a} of {n}");
    assert_eq!(a.requests() + b.requests(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_and_upstream_protocol_pairing() {
    let pki = TestPki::new("pairing");
    let leaf = pki.leaf(&["upstream.test", "127.0.0.1"]);
    let h1 = upstream("h1", UpstreamProtocol::Http1).await;
    let h2c = upstream("h2c", UpstreamProtocol::H2c).await;
    let tls = Upstream::tls("tls", &leaf).await;
    let ca = pki.ca_path();
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ prefix: /h1/ }}, route: {{ cluster: h1, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /h2c/ }}, route: {{ cluster: h2c, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /h2tls/ }}, route: {{ cluster: h2tls, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /h1tls/ }}, route: {{ cluster: h1tls, prefix_rewrite: / }} }}
clusters:
  - {{ name: h1, endpoints: [{{ address: "{h1}" }}] }}
  - {{ name: h2c, protocol: h2c, endpoints: [{{ address: "{h2c}" }}] }}
  - name: h2tls
    protocol: h2
    tls: {{ sni: upstream.test, ca_file: "{ca}" }}
    endpoints: [{{ address: "{tls}" }}]
  - name: h1tls
    tls: {{ sni: upstream.test, ca_file: "{ca}" }}
    endpoints: [{{ address: "{tls}" }}]
"#,
        h1 = h1.addr(),
        h2c = h2c.addr(),
        tls = tls.addr(),
        ca = ca.display(),
    );
    let proxy = Corridor::start(&config).await;
    for client in [
        Client::h1(proxy.addr).await.unwrap(),
        Client::h2c(proxy.addr).await.unwrap(),
    ] {
        for (prefix, upstream_proto) in [
            ("h1", "HTTP/1.1"),
            ("h2c", "HTTP/2"),
            ("h2tls", "HTTP/2"),
            ("h1tls", "HTTP/1.1"),
        ] {
            let body = Bytes::from(vec![b'x'; 100_000]);
            let req = Request::post(format!("/{prefix}/echo"))
                .body(client::full(body.clone()))
                .unwrap();
            let r = fetch(&client, req).await;
            assert_eq!(r.status, 200, "{prefix} via {:?}", client.version());
            assert_eq!(r.header("x-upstream-protocol"), upstream_proto, "{prefix}");
            assert_eq!(r.body, body, "{prefix} via {:?}", client.version());
        }
    }
}

/// Asserts how many requests each code path served.
async fn paths(proxy: &Corridor, lean: f64, pingora: f64) {
    let name = "corridor_requests_by_path_total";
    let got = (
        proxy.metric(name, &[("path", "lean")]).await,
        proxy.metric(name, &[("path", "proxy")]).await,
    );
    assert_eq!(got, (lean, pingora), "(lean, proxy) requests");
}

/// Corridor forwards the common case (an HTTP/1.x or HTTP/2 client, any cluster, no
/// upgrade, `CONNECT` or `Expect`) on its own lean path and hands the rest to
/// Pingora's proxy, which runs the same phases; answers are the same either way. The
/// path of each request is counted in `corridor_requests_by_path_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_path_serves_the_common_case_and_hands_over_the_rest() {
    let h1 = upstream("h1", UpstreamProtocol::Http1).await;
    let h2c = upstream("h2c", UpstreamProtocol::H2c).await;
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ prefix: /h1/ }}, route: {{ cluster: h1, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /h2c/ }}, route: {{ cluster: h2c, prefix_rewrite: / }} }}
          - {{ match: {{ path: /teapot }}, direct_response: {{ status: 418, body: "short and stout" }} }}
clusters:
  - {{ name: h1, endpoints: [{{ address: "{h1}" }}] }}
  - {{ name: h2c, protocol: h2c, endpoints: [{{ address: "{h2c}" }}] }}
"#,
        h1 = h1.addr(),
        h2c = h2c.addr(),
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let c2 = Client::h2c(proxy.addr).await.unwrap();
    // Lean: every client and cluster protocol pairing with a body, and an answer
    // Corridor gives itself.
    for (client, name) in [(&c, "h1 client"), (&c2, "h2 client")] {
        for (prefix, protocol) in [("h1", "HTTP/1.1"), ("h2c", "HTTP/2")] {
            let req = Request::post(format!("/{prefix}/echo"))
                .body(client::full("payload"))
                .unwrap();
            let r = fetch(client, req).await;
            assert_eq!(r.status, 200, "{name} to {prefix}");
            assert_eq!(
                r.header("x-upstream-protocol"),
                protocol,
                "{name} to {prefix}"
            );
            assert_eq!(r.body, Bytes::from("payload"), "{name} to {prefix}");
        }
    }
    assert_eq!(fetch_get(&c, "/teapot").await.status, 418);
    paths(&proxy, 5.0, 0.0).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Pingora's proxy: `Expect: 100-continue` (its interim answer is Pingora's) and
    // `CONNECT` (which Corridor's checks then refuse).
    for (request, answer) in [
        (
            &b"POST /h1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nfour"[..],
            "HTTP/1.1 200",
        ),
        (
            &b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"[..],
            "HTTP/1.1 405",
        ),
    ] {
        let mut raw = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        raw.write_all(request).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut got))
            .await
            .expect("an answer in time")
            .unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.contains(answer), "{got}");
        if answer.ends_with("200") {
            assert!(got.ends_with("four"), "{got}");
        }
    }
    paths(&proxy, 5.0, 2.0).await;
    // Each upstream got exactly the requests routed to it, whichever path carried them.
    assert_eq!(h1.requests(), 3);
    assert_eq!(h2c.requests(), 2);
}

/// An upstream that answers before it has read the whole request body (the echo
/// streams the body back as it arrives) does not cost the client its HTTP/1.1
/// connection: the exchange ends with both bodies complete, so the connection is kept
/// and carries the next request (Envoy decides at the end of the exchange too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_request_body_ends_keeps_the_connection() {
    for (name, protocol, cluster) in [
        ("h1", UpstreamProtocol::Http1, ""),
        ("h2c", UpstreamProtocol::H2c, "    protocol: h2c"),
    ] {
        let up = upstream(name, protocol).await;
        let proxy = Corridor::start(&single_route(&[(up.addr(), "")], "", cluster)).await;
        let c = Client::h1(proxy.addr).await.unwrap();
        let (tx, body) = client::channel();
        tx.send("first ").await.unwrap();
        // The request body is still open, so this head left the upstream before its end.
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            c.send(Request::post("/echo").body(body).unwrap()),
        )
        .await
        .expect("the response head arrives while the request body is open")
        .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let connection = resp
            .headers()
            .get("connection")
            .and_then(|v| v.to_str().ok());
        assert_eq!(connection, Some("keep-alive"), "{name}");
        tx.send("second").await.unwrap();
        tx.finish();
        let echoed = client::read_all(resp.into_body()).await.unwrap();
        assert_eq!(echoed, Bytes::from("first second"), "{name}");

        let r = fetch(&c, get("/status/204")).await;
        assert_eq!(
            r.status, 204,
            "{name}: the same connection carries the next request"
        );
        assert_eq!(up.requests(), 2, "{name}");
    }
}

/// Upstream connections are pooled between requests and closed once they have been
/// idle for the cluster's `pool.idle_timeout`; the next request opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_are_reused_then_closed_at_the_idle_timeout() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let idle = Duration::from_millis(600);
    let cluster = "    pool: { idle_timeout: 600ms }";
    let proxy = Corridor::start(&single_route(&[(up.addr(), "")], "", cluster)).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..5 {
        assert_eq!(fetch(&c, get("/status/200")).await.status, 200);
    }
    // The connection went back to the pool before its last response reached the client.
    let idle_from = std::time::Instant::now();
    assert_eq!(
        up.connections_accepted(),
        1,
        "one pooled connection carries every request"
    );
    assert_eq!(up.open_connections(), 1);
    while up.open_connections() > 0 {
        assert!(
            idle_from.elapsed() < idle + Duration::from_secs(5),
            "the idle connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let closed_after = idle_from.elapsed();
    // Allow for the time between the release and the client's reading the response.
    assert!(
        closed_after + Duration::from_millis(100) >= idle,
        "closed after {closed_after:?}, before the idle timeout"
    );
    assert_eq!(fetch(&c, get("/status/200")).await.status, 200);
    assert_eq!(
        up.connections_accepted(),
        2,
        "the next request opens a new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_negotiates_h2_and_http1_by_alpn() {
    let pki = TestPki::new("listener");
    let leaf = pki.leaf(&["proxy.test"]);
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write_leaf(&leaf, "proxy");
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let config = format!(
        r#"
listeners:
  - name: tls
    address: "{{{{LISTEN}}}}"
    tls: {{ cert_file: "{cert}", key_file: "{key}" }}
    route_table: t
admin: {{ address: "{{{{ADMIN}}}}" }}
route_tables: [{{ name: t, virtual_hosts: [{{ domains: ["*"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]
clusters: [{{ name: c, endpoints: [{{ address: "{up}" }}] }}]
"#,
        cert = files.chain.display(),
        key = files.key.display(),
        up = up.addr()
    );
    let proxy = Corridor::start_with_dir(&config, dir).await;
    for (alpn, version) in [
        (&b"h2"[..], Version::HTTP_2),
        (&b"http/1.1"[..], Version::HTTP_11),
    ] {
        let cfg = pki.client_config(&[alpn]);
        let c = Client::tls(proxy.addr, "proxy.test", cfg).await.unwrap();
        assert_eq!(c.version(), version);
        let r = fetch_get(&c, "/status/200").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.version, version);
        assert_eq!(r.header("x-upstream"), "up");
    }
    let other = TestPki::new("other");
    let untrusted = Client::tls(proxy.addr, "proxy.test", other.client_config(&[b"h2"])).await;
    assert!(
        untrusted.is_err(),
        "a client that does not trust the CA must fail the handshake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_subset_with_fallback_none_is_a_503_json_error() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let config = single_route(
        &[(up.addr(), "labels: { gpu: h100 }")],
        "subset: { from_request: [{ header: x-gpu, label: gpu }] }",
        "",
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let req = Request::get("/status/200")
        .header("x-gpu", "h100")
        .body(client::empty())
        .unwrap();
    assert_eq!(fetch(&c, req).await.status, 200);
    let req = Request::get("/status/200")
        .header("x-gpu", "tpu")
        .body(client::empty())
        .unwrap();
    let r = fetch(&c, req).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-corridor-error"), "no_endpoint");
    let body = r.json();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("matches the subset"),
        "{body}"
    );
    assert_eq!(up.requests(), 1);
}

/// Two clusters with the same address and SNI but different CA bundles: a connection that
/// one cluster verified and pooled is never reused by the other, which must verify itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_with_different_trust_never_share_pooled_connections() {
    let trusted = corridor_tests::TestPki::new("trusted-ca");
    let other = corridor_tests::TestPki::new("other-ca");
    let leaf = trusted.leaf(&["up.test"]);
    let up = corridor_tests::Upstream::tls("up", &leaf).await;
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good.pem"), dir.path().join("bad.pem"));
    std::fs::write(&good, trusted.ca_pem()).unwrap();
    std::fs::write(&bad, other.ca_pem()).unwrap();
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ prefix: /a/ }}, route: {{ cluster: a, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /b/ }}, route: {{ cluster: b, prefix_rewrite: / }} }}
clusters:
  - {{ name: a, tls: {{ sni: up.test, ca_file: "{good}" }}, endpoints: [{{ address: "{addr}" }}] }}
  - {{ name: b, tls: {{ sni: up.test, ca_file: "{bad}" }}, endpoints: [{{ address: "{addr}" }}] }}
"#,
        good = good.display(),
        bad = bad.display(),
        addr = up.addr()
    );
    let proxy = Corridor::start_with_dir(&config, dir).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/a/status/200").await.status, 200);
    assert_eq!(up.open_connections(), 1, "cluster a's connection is pooled");
    let r = fetch_get(&c, "/b/status/200").await;
    assert_eq!(
        r.status,
        503,
        "cluster b does not trust the upstream: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("x-corridor-error"), "upstream_connect_failed");
    assert_eq!(
        up.requests(),
        1,
        "only cluster a's request reached the upstream"
    );
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/a/status/200").await.status, 200);
}

/// A weighted route whose picked target has no endpoint for the request's subset counts the
/// failure under that target's cluster, not the route's first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_failures_on_weighted_routes_count_under_the_picked_cluster() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - name: w
            match: {{ prefix: / }}
            route:
              weighted_clusters: {{ clusters: [{{ name: x, weight: 1 }}, {{ name: y, weight: 1 }}] }}
              subset: {{ from_request: [{{ header: x-model, label: model }}] }}
clusters:
  - {{ name: x, endpoints: [{{ address: "{addr}", labels: {{ model: m1 }} }}] }}
  - {{ name: y, endpoints: [{{ address: "{addr}", labels: {{ model: m2 }} }}] }}
"#,
        addr = up.addr()
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let mut failed = 0;
    for _ in 0..40 {
        let req = Request::get("/status/200")
            .header("x-model", "m1")
            .body(client::empty())
            .unwrap();
        if fetch(&c, req).await.status == 503 {
            failed += 1;
        }
    }
    assert!(
        failed > 0 && failed < 40,
        "both targets were picked ({failed} failures)"
    );
    // A request is counted when its log phase runs, just after its response
    // is sent: wait until all 40 are in.
    let count_in = |m: &str, cluster: &str, class: &str| {
        corridor_tests::proxy::metric_sum(
            m,
            "corridor_requests_total",
            &[
                ("route", "w"),
                ("cluster", cluster),
                ("status_class", class),
            ],
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let m = loop {
        let m = proxy.metrics().await;
        let total = count_in(&m, "x", "2xx") + count_in(&m, "y", "5xx") + count_in(&m, "x", "5xx");
        if total >= 40.0 || std::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let count = |cluster: &str, class: &str| count_in(&m, cluster, class);
    assert_eq!(count("y", "5xx"), f64::from(failed), "{m}");
    assert_eq!(count("x", "5xx"), 0.0, "{m}");
    assert_eq!(count("x", "2xx"), f64::from(40 - failed), "{m}");
}
