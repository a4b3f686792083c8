//! Retries and timeouts: connect failures move to another endpoint, configured
//! statuses are retried on a different endpoint each try (and the last answer
//! passes through), non-idempotent requests only when the route opts in,
//! nothing once response bytes were sent, refused streams and resets, per-try
//! timeouts and the request deadline.

use std::time::{Duration, Instant};

use corridor_tests::client;
use corridor_tests::proxy::refused_addr;
use corridor_tests::{Client, Corridor, UpstreamProtocol};
use http::Request;

use super::{fetch, fetch_get, single_route, upstream, HEAD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_retry_on_another_endpoint() {
    let live = upstream("live", UpstreamProtocol::Http1).await;
    let (_reserved, dead) = refused_addr(); // bound, never listening: connection refused
    let config = single_route(
        &[(dead, ""), (live.addr(), "")],
        "retry_policy: { num_retries: 2, retry_on: [connect-failure] }",
        "",
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    for i in 0..10 {
        // POST too: a refused connection never reached the application.
        let req = Request::post("/echo")
            .body(client::full(format!("n{i}")))
            .unwrap();
        let r = fetch(&c, req).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("x-upstream"), "live");
    }
    assert_eq!(live.requests(), 10);
    assert!(
        proxy
            .metric(
                "corridor_upstream_connect_failures_total",
                &[("cluster", "c")]
            )
            .await
            >= 5.0
    );
    assert!(
        proxy
            .metric("corridor_retries_total", &[("reason", "connect_failure")])
            .await
            >= 5.0
    );

    // Without a retry policy the refused connection is the answer: 503 in Corridor's format.
    let proxy = Corridor::start(&single_route(&[(dead, "")], "", "")).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let r = fetch_get(&c, "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-corridor-error"), "upstream_connect_failed");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("could not connect to cluster `c`"), "{msg}");
    assert!(
        !msg.contains(&dead.to_string()),
        "internal addresses stay out of client errors: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_retry_on_a_different_endpoint_each_try() {
    let ups = [
        upstream("a", UpstreamProtocol::Http1).await,
        upstream("b", UpstreamProtocol::Http1).await,
        upstream("c", UpstreamProtocol::Http1).await,
    ];
    let eps: Vec<_> = ups.iter().map(|u| (u.addr(), "")).collect();
    let config = single_route(
        &eps,
        "retry_policy: { num_retries: 3, retry_on: [retriable-status-codes], retriable_status_codes: [503, 429] }",
        "",
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    // Every endpoint fails its first request for this key: the first three tries go to
    // three different endpoints (all 503), the fourth to one of them again (200).
    let r = fetch_get(&c, "/flaky?key=k1&fail=1&status=503").await;
    let mut counts: Vec<u64> = ups.iter().map(|u| u.requests()).collect();
    assert_eq!(r.status, 200, "{counts:?}");
    counts.sort();
    assert_eq!(
        counts,
        [1, 1, 2],
        "no endpoint was tried twice while another was untried"
    );

    // Retries exhausted: the last upstream answer passes through unchanged.
    let r = fetch_get(&c, "/flaky?key=k2&fail=5&status=429").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.header("x-corridor-error"),
        "",
        "an upstream answer, not Corridor's"
    );
    assert_eq!(r.json()["status"], 429);
    assert_eq!(
        ups.iter().map(|u| u.requests()).sum::<u64>(),
        8,
        "4 + 4 tries"
    );
    assert_eq!(
        proxy
            .metric("corridor_retries_total", &[("reason", "status")])
            .await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_requests_retry_only_when_the_route_opts_in() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let eps = [(a.addr(), ""), (b.addr(), "")];
    let policy = "num_retries: 2, retry_on: [5xx, reset]";
    let proxy = Corridor::start(&single_route(
        &eps,
        &format!("retry_policy: {{ {policy} }}"),
        "",
    ))
    .await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let post = |key: &str| {
        Request::post(format!("/flaky?key={key}&fail=1&status=500"))
            .body(client::full("x"))
            .unwrap()
    };
    let r = fetch(&c, post("p1")).await;
    assert_eq!(r.status, 500, "POST is not retried by default");
    assert_eq!(a.requests() + b.requests(), 1);
    let r = fetch_get(&c, "/flaky?key=g1&fail=1&status=500").await;
    assert_eq!(r.status, 200, "GET is");
    // Each endpoint fails its first request for a key: a, b, then a again.
    assert_eq!(a.requests() + b.requests(), 4);

    let proxy = Corridor::start(&single_route(
        &eps,
        &format!("retry_policy: {{ {policy}, retry_non_idempotent: true }}"),
        "",
    ))
    .await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let r = fetch(&c, post("p2")).await;
    assert_eq!(r.status, 200, "POST retried once the route opts in");
    let log: Vec<_> = [&a, &b]
        .iter()
        .flat_map(|u| u.request_log())
        .filter(|r| r.path_and_query.contains("key=p2"))
        .collect();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| r.method == "POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_retried_once_response_bytes_reached_the_client() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let config = single_route(
        &[(up.addr(), "")],
        "retry_policy: { num_retries: 3, retry_on: [reset, 5xx] }",
        "",
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let resp = c
        .send(
            Request::get("/sse?n=10&interval_ms=10&abort_after=3")
                .body(client::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut r = corridor_tests::BodyReader::new(resp.into_body());
    let mut events = 0;
    let end = loop {
        match r.next_sse().await {
            Ok(Some(_)) => events += 1,
            other => break other,
        }
    };
    assert_eq!(events, 3, "the three events before the failure arrive once");
    assert!(
        end.is_err(),
        "the stream fails instead of restarting: {end:?}"
    );
    assert_eq!(up.requests(), 1, "no second try after bytes were sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_refused_streams() {
    let h1 = upstream("h1", UpstreamProtocol::Http1).await;
    let h2 = upstream("h2", UpstreamProtocol::H2c).await;
    let h2b = upstream("h2b", UpstreamProtocol::H2c).await;
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - match: {{ prefix: /h2/ }}
            route: {{ cluster: h2, prefix_rewrite: /, retry_policy: {{ num_retries: 1, retry_on: [refused-stream] }} }}
          - route: {{ cluster: h1, retry_policy: {{ num_retries: 2, retry_on: [reset] }} }}
clusters:
  - {{ name: h1, endpoints: [{{ address: "{h1}" }}] }}
  - {{ name: h2, protocol: h2c, endpoints: [{{ address: "{h2}" }}, {{ address: "{h2b}" }}] }}
"#,
        h1 = h1.addr(),
        h2 = h2.addr(),
        h2b = h2b.addr()
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let r = fetch_get(&c, "/reset").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-corridor-error"), "upstream_reset");
    assert_eq!(h1.requests(), 3, "one try and two retries");

    // A refused stream is retried on the other endpoint, which refuses too: 2 tries.
    let c = Client::h2c(proxy.addr).await.unwrap();
    let r = fetch_get(&c, "/h2/refuse").await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(h2.requests() + h2b.requests(), 2);
    assert_eq!(
        (h2.requests(), h2b.requests()),
        (1, 1),
        "the retry went to the other endpoint"
    );
    assert_eq!(
        proxy
            .metric("corridor_retries_total", &[("reason", "refused_stream")])
            .await,
        1.0
    );
}

/// The route's deadline holds while the request body still streams: a client that
/// keeps sending pieces of its body to an upstream that never answers gets its 504
/// at the deadline, not after its body ends (each piece used to restart the
/// upstream read, and its timer), on HTTP/1.1 and HTTP/2 clusters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_holds_while_the_request_body_streams() {
    for (name, protocol, cluster) in [
        ("h1", UpstreamProtocol::Http1, ""),
        ("h2c", UpstreamProtocol::H2c, "    protocol: h2c"),
    ] {
        let up = upstream(name, protocol).await;
        let config = single_route(&[(up.addr(), "")], "timeout: 1s", cluster);
        let proxy = Corridor::start(&config).await;
        let c = Client::h1(proxy.addr).await.unwrap();
        let (tx, body) = client::channel();
        // A piece every 100 ms for 6 s, far past the deadline.
        let sender = tokio::spawn(async move {
            for _ in 0..60 {
                if tx.send("piece ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let start = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            fetch(&c, Request::post("/hang").body(body).unwrap()),
        )
        .await
        .expect("an answer");
        let took = start.elapsed();
        sender.abort();
        assert_eq!(r.status, 504, "{name}");
        assert_eq!(r.header("x-corridor-error"), "upstream_timeout", "{name}");
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_millis(3_000),
            "{name}: a 1 s deadline answered after {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_and_request_deadline() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - match: {{ prefix: /try/ }}
            route:
              cluster: c
              prefix_rewrite: /
              retry_policy: {{ num_retries: 1, retry_on: [reset], per_try_timeout: 300ms }}
          - route: {{ cluster: c, timeout: 500ms }}
clusters:
  - {{ name: c, endpoints: [{{ address: "{a}" }}] }}
"#,
        a = up.addr()
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();

    let start = Instant::now();
    let r = fetch_get(&c, "/try/hang").await;
    let took = start.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-corridor-error"), "upstream_timeout");
    assert_eq!(up.requests(), 2, "a second try after the first timed out");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "two 300 ms tries took {took:?}"
    );

    let c = Client::h1(proxy.addr).await.unwrap();
    let start = Instant::now();
    let r = fetch_get(&c, "/hang").await;
    let took = start.elapsed();
    assert_eq!(r.status, 504);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "500 ms deadline took {took:?}"
    );

    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(
        fetch_get(&c, "/slow?ms=100").await.status,
        200,
        "a response within the deadline passes"
    );
}
