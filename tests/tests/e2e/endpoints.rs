//! Per-endpoint runtime state as `/clusters` shows it: every try reaches its
//! endpoint's counters, including tries a retry recovered; requests in flight
//! are counted until they end, also when the client goes away; the state
//! survives a reload that keeps the endpoint and goes with a removed one.

use corridor_tests::proxy::refused_addr;
use corridor_tests::{Client, Corridor, UpstreamProtocol};

use super::{endpoint_state, fetch_get, first_sse_event, single_route, upstream, wait_endpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_try_reaches_its_endpoint_even_when_a_retry_hides_it() {
    let live = upstream("live", UpstreamProtocol::Http1).await;
    let (_reserved, dead) = refused_addr();
    let config = single_route(
        &[(dead, ""), (live.addr(), "")],
        "retry_policy: { num_retries: 2, retry_on: [connect-failure, retriable-status-codes], retriable_status_codes: [503] }",
        "",
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..10 {
        assert_eq!(fetch_get(&c, "/status/200").await.status, 200);
    }
    let d = wait_endpoint(&proxy, dead, "the dead endpoint's tries", |e| {
        e["active"] == 0
    })
    .await;
    let l = wait_endpoint(&proxy, live.addr(), "the live endpoint's tries", |e| {
        e["active"] == 0 && e["attempts"] == 10
    })
    .await;
    let dead_tries = d["attempts"].as_u64().unwrap();
    assert!(dead_tries >= 1, "{d}");
    assert_eq!(d["failures"].as_u64(), Some(dead_tries), "{d}");
    assert_eq!(d["consecutive_5xx"].as_u64(), Some(dead_tries), "{d}");
    assert!(
        d["latency_ewma_ms"].is_null(),
        "no response, no latency: {d}"
    );
    assert_eq!(l["failures"], 0, "{l}");
    assert!(l["latency_ewma_ms"].as_f64().unwrap() > 0.0, "{l}");

    // A status the retry recovers is still the endpoint's failure: the
    // endpoint fails its first request for this key, the retry gets 200.
    let proxy = Corridor::start(&single_route(
        &[(live.addr(), "")],
        "retry_policy: { num_retries: 1, retry_on: [retriable-status-codes], retriable_status_codes: [503] }",
        "",
    ))
    .await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let r = fetch_get(&c, "/flaky?key=k&fail=1&status=503").await;
    assert_eq!(r.status, 200);
    let l = wait_endpoint(&proxy, live.addr(), "the recovered 503", |e| {
        e["active"] == 0 && e["attempts"] == 2
    })
    .await;
    assert_eq!(l["failures"], 1, "the client never saw it: {l}");
    assert_eq!(
        l["consecutive_5xx"], 0,
        "the success after it resets the run: {l}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_counts_end_with_the_request_and_state_outlives_a_reload() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(&[(a.addr(), "")], "", "")).await;

    // A stream in flight counts until the client goes away mid-stream.
    let (c, stream) = first_sse_event(proxy.addr, "/sse?n=100&interval_ms=50").await;
    assert_eq!(endpoint_state(&proxy, a.addr()).await["active"], 1);
    drop(stream);
    drop(c);
    wait_endpoint(&proxy, a.addr(), "the cancelled stream to end", |e| {
        e["active"] == 0
    })
    .await;

    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..3 {
        assert_eq!(fetch_get(&c, "/status/500").await.status, 500);
    }
    let before = wait_endpoint(&proxy, a.addr(), "the failures", |e| e["failures"] == 3).await;
    assert_eq!(before["attempts"], 4);

    // A reload that keeps `a` (and adds `b`) keeps its state.
    proxy.write_config(&single_route(&[(a.addr(), ""), (b.addr(), "")], "", ""));
    wait_endpoint(&proxy, b.addr(), "the reload", |e| !e.is_null()).await;
    let kept = endpoint_state(&proxy, a.addr()).await;
    assert_eq!(kept["attempts"], 4, "{kept}");
    assert_eq!(kept["consecutive_5xx"], 3, "{kept}");
    assert_eq!(endpoint_state(&proxy, b.addr()).await["attempts"], 0);

    // Removed, then added back: it starts afresh.
    proxy.write_config(&single_route(&[(b.addr(), "")], "", ""));
    wait_endpoint(&proxy, a.addr(), "the removal", |e| e.is_null()).await;
    proxy.write_config(&single_route(&[(a.addr(), ""), (b.addr(), "")], "", ""));
    let fresh = wait_endpoint(&proxy, a.addr(), "the re-added endpoint", |e| !e.is_null()).await;
    assert_eq!(fresh["attempts"], 0, "{fresh}");
}
