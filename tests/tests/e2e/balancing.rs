//! Load balancing, outlier ejection, health checks and overload protection
//! against real upstreams whose latency, failures and health are injected in
//! userspace (`Upstream::set_fault`, `Upstream::set_health`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corridor_tests::{Client, Corridor, EchoMsg, Fault, GrpcServer, Upstream, UpstreamProtocol};

use super::{
    cluster_state, endpoint_state, endpoints, exclusive, fetch_get, upstream, wait_endpoint_for,
    HEAD,
};

/// Starts `n` HTTP/1.1 upstreams named `{prefix}0..`.
async fn upstreams(prefix: &str, n: usize) -> Vec<Upstream> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(upstream(&format!("{prefix}{i}"), UpstreamProtocol::Http1).await);
    }
    out
}

fn addrs(ups: &[Upstream], extra: &str) -> Vec<(SocketAddr, String)> {
    ups.iter().map(|u| (u.addr(), extra.to_string())).collect()
}

fn eps(list: &[(SocketAddr, String)]) -> String {
    let refs: Vec<(SocketAddr, &str)> = list.iter().map(|(a, e)| (*a, e.as_str())).collect();
    endpoints(&refs)
}

/// One catch-all route to cluster `c` (`route` inside `route: {...}`), and
/// cluster `c` with block fields `cluster` (indented 4) and endpoints `list`.
fn config(list: &[(SocketAddr, String)], route: &str, cluster: &str) -> String {
    format!(
        "{HEAD}runtime: {{ worker_threads: 2 }}\n\
         route_tables:\n  - name: t\n    virtual_hosts:\n      - domains: [\"*\"]\n        routes:\n\
         \x20         - match: {{ prefix: / }}\n            route: {{ cluster: c{sep}{route} }}\n\
         clusters:\n  - name: c\n{cluster}\n    endpoints:\n{eps}",
        sep = if route.is_empty() { "" } else { ", " },
        eps = eps(list),
    )
}

/// GETs `path` `n` times on one connection; the responding upstream of each.
async fn names(c: &Client, path: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = fetch_get(c, path).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        out.push(r.header("x-upstream").to_string());
    }
    out
}

fn count(names: &[String], prefix: &str) -> usize {
    names.iter().filter(|n| n.starts_with(prefix)).count()
}

/// The `q`-quantile of `samples` (sorted in place).
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_starves_a_slow_endpoint_and_keeps_the_tail() {
    let _serial = exclusive().await;
    let ups = upstreams("e", 4).await;
    ups[0].set_fault(Fault {
        delay: Duration::from_millis(100),
        status: None,
    });
    // Two routes: /mixed/ over all four endpoints, /fast/ over the three
    // fast ones only, whose own tail is the yardstick.
    let all = eps(&addrs(&ups, ""));
    let fast = eps(&addrs(&ups[1..], ""));
    let yaml = format!(
        "{HEAD}runtime: {{ worker_threads: 2 }}\n\
         route_tables:\n  - name: t\n    virtual_hosts:\n      - domains: [\"*\"]\n        routes:\n\
         \x20         - match: {{ prefix: /mixed/ }}\n            route: {{ cluster: mixed, prefix_rewrite: / }}\n\
         \x20         - match: {{ prefix: /fast/ }}\n            route: {{ cluster: fast, prefix_rewrite: / }}\n\
         clusters:\n  - name: mixed\n    lb_policy: peak_ewma\n    endpoints:\n{all}\
         \x20 - name: fast\n    lb_policy: peak_ewma\n    endpoints:\n{fast}"
    );
    let proxy = Corridor::start(&yaml).await;
    let addr = proxy.addr;
    // Four clients in parallel: each request waits for the one before.
    let run = |path: &'static str, n: usize| async move {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            tasks.push(tokio::spawn(async move {
                let c = Client::h1(addr).await.unwrap();
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    let r = fetch_get(&c, path).await;
                    assert_eq!(r.status, 200);
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    };
    // Warm-up: every endpoint gets its first samples.
    run("/mixed/status/200", 25).await;
    let before = ups[0].requests();
    let mut mixed = Vec::new();
    let mut fast = Vec::new();
    for _ in 0..4 {
        mixed.extend(run("/mixed/status/200", 50).await);
        fast.extend(run("/fast/status/200", 50).await);
    }
    let slow_share = (ups[0].requests() - before) as f64 / mixed.len() as f64;
    let p99_mixed = quantile(&mut mixed, 0.99);
    let p99_fast = quantile(&mut fast, 0.99);
    assert!(
        slow_share < 0.01,
        "the slow endpoint got {:.2} % of 800 requests",
        slow_share * 100.0
    );
    // Scheduling noise on 2 cores can stretch a fast p99 of a millisecond
    // or two; 10 ms is still a tenth of the slow endpoint's delay.
    let bound = (p99_fast * 2).max(Duration::from_millis(10));
    assert!(
        p99_mixed <= bound,
        "client p99 {p99_mixed:?} over 2 × the fast endpoints' p99 {p99_fast:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gray_failure_is_ejected_while_its_health_check_passes() {
    let ups = upstreams("g", 4).await;
    let yaml = config(
        &addrs(&ups, ""),
        "retry_policy: { num_retries: 2, retry_on: [retriable-status-codes], retriable_status_codes: [503] }",
        "    outlier_detection: { consecutive_5xx: 3, interval: 1s, base_ejection_time: 3s, max_ejection_percent: 25 }\n\
         \x20   health_checks: [{ interval: 50ms, http_health_check: { path: /healthz } }]",
    );
    let proxy = Corridor::start(&yaml).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    // Health checks pass everywhere first (new endpoints wait for them).
    for u in &ups {
        wait_endpoint_for(
            &proxy,
            u.addr(),
            "first health check",
            Duration::from_secs(5),
            |e| e["health"] == "healthy",
        )
        .await;
    }
    assert_eq!(count(&names(&c, "/status/200", 40).await, "g"), 40);

    // g1 answers 503 to everything but /healthz.
    let bad = &ups[1];
    bad.set_fault(Fault {
        delay: Duration::ZERO,
        status: Some(503),
    });
    // Tries as the proxy counts them (the upstream also counts health checks).
    let attempts = |e: serde_json::Value| e["attempts"].as_u64().unwrap();
    let before = attempts(endpoint_state(&proxy, bad.addr()).await);
    let got = names(&c, "/status/200", 200).await;
    assert_eq!(count(&got, "g1"), 0, "no client saw the failing endpoint");
    let tries = attempts(endpoint_state(&proxy, bad.addr()).await) - before;
    assert!(
        (3..=6).contains(&tries),
        "ejected after a handful of tries, saw {tries}"
    );
    let e = wait_endpoint_for(&proxy, bad.addr(), "ejected", Duration::from_secs(1), |e| {
        e["ejected"] == true
    })
    .await;
    assert_eq!(
        e["health_check_failing"], false,
        "its health check passes: {e}"
    );
    assert_eq!(e["health"], "ejected", "{e}");
    assert_eq!(e["ejection_ms"], 3000, "the base ejection time: {e}");
    assert_eq!(
        proxy
            .metric(
                "corridor_outlier_ejections_total",
                &[("cluster", "c"), ("reason", "consecutive_5xx")]
            )
            .await,
        1.0
    );

    // Max ejection percent (25 % of 4): a second failing endpoint stays in,
    // and retries still hide it from clients.
    let second = &ups[2];
    second.set_fault(Fault {
        delay: Duration::ZERO,
        status: Some(503),
    });
    let got = names(&c, "/status/200", 60).await;
    assert_eq!(count(&got, "g1") + count(&got, "g2"), 0);
    let e2 = endpoint_state(&proxy, second.addr()).await;
    assert_eq!(e2["ejected"], false, "max_ejection_percent holds: {e2}");
    second.set_fault(Fault::default());

    // It returns after its ejection time, fails again, and the second
    // ejection lasts twice as long.
    // It returns at the first review (every 1 s) after its 3 s.
    wait_endpoint_for(&proxy, bad.addr(), "return", Duration::from_secs(6), |e| {
        e["ejected"] == false
    })
    .await;
    let got = names(&c, "/status/200", 100).await;
    assert_eq!(count(&got, "g1"), 0);
    let e = wait_endpoint_for(
        &proxy,
        bad.addr(),
        "ejected again",
        Duration::from_secs(1),
        |e| e["ejected"] == true,
    )
    .await;
    assert_eq!(e["ejection_ms"], 6000, "twice the base time: {e}");
    assert_eq!(e["ejections"], 2, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_fail_over_between_priorities_and_back_with_panic() {
    let aws = upstreams("aws", 4).await;
    let gcp = upstreams("gcp", 4).await;
    let mut list = addrs(
        &aws,
        "priority: 0, locality: { cloud: aws, region: us-east-1 }",
    );
    list.extend(addrs(
        &gcp,
        "priority: 1, locality: { cloud: gcp, region: us-east4 }",
    ));
    let yaml = config(
        &list,
        "",
        "    health_checks: [{ interval: 30ms, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: { path: /healthz } }]",
    );
    let proxy = Corridor::start(&yaml).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let wait_health = |u: &Upstream, want: &'static str| {
        let addr = u.addr();
        let proxy = &proxy;
        async move {
            wait_endpoint_for(proxy, addr, want, Duration::from_secs(5), |e| {
                e["health"] == want
            })
            .await;
        }
    };
    for u in aws.iter().chain(&gcp) {
        wait_health(u, "healthy").await;
    }
    assert_eq!(count(&names(&c, "/status/200", 100).await, "aws"), 100);

    // Half of aws unhealthy: aws keeps 50 % × 1.4 = 70 %, gcp takes the rest.
    aws[0].set_health(503);
    aws[1].set_health(503);
    wait_health(&aws[0], "unhealthy").await;
    wait_health(&aws[1], "unhealthy").await;
    let got = names(&c, "/status/200", 1000).await;
    let on_aws = count(&got, "aws");
    assert!(
        (600..=800).contains(&on_aws),
        "70 % expected on aws, got {on_aws}/1000"
    );
    assert_eq!(count(&got, "aws0") + count(&got, "aws1"), 0);

    // All of aws down: everything to gcp; then back.
    aws[2].set_health(503);
    aws[3].set_health(503);
    wait_health(&aws[2], "unhealthy").await;
    wait_health(&aws[3], "unhealthy").await;
    assert_eq!(count(&names(&c, "/status/200", 100).await, "gcp"), 100);
    for u in &aws {
        u.set_health(200);
    }
    for u in &aws {
        wait_health(u, "healthy").await;
    }
    assert_eq!(count(&names(&c, "/status/200", 100).await, "aws"), 100);

    // Panic (Envoy): aws all down and one of four gcp healthy, so the levels
    // together cannot carry the traffic and both are under 50 %: levels get
    // traffic by size, each spread over all its endpoints, unhealthy ones too.
    for u in aws.iter().chain(&gcp[1..]) {
        u.set_health(503);
    }
    for u in aws.iter().chain(&gcp[1..]) {
        wait_health(u, "unhealthy").await;
    }
    let got = names(&c, "/status/200", 800).await;
    let spread: Vec<usize> = aws
        .iter()
        .chain(&gcp)
        .map(|u| count(&got, u.name()))
        .collect();
    assert!(
        spread.iter().all(|n| *n > 40),
        "total panic spreads: {spread:?}"
    );
    assert!(
        proxy
            .metric(
                "corridor_health_check_transitions_total",
                &[("cluster", "c"), ("to", "unhealthy")]
            )
            .await
            >= 10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_keys_when_an_endpoint_joins() {
    let ups = upstreams("h", 11).await;
    for policy in ["ring_hash", "maglev"] {
        let cluster = format!("    lb_policy: {policy}\n    hash_policy: {{ header: x-user }}");
        let proxy = Corridor::start(&config(&addrs(&ups[..10], ""), "", &cluster)).await;
        let c = Client::h1(proxy.addr).await.unwrap();
        let place = |c: Client| async move {
            let mut out = HashMap::new();
            for k in 0..400 {
                let req = http::Request::get("/status/200")
                    .header("x-user", format!("user-{k}"))
                    .body(corridor_tests::client::empty())
                    .unwrap();
                let r = super::fetch(&c, req).await;
                assert_eq!(r.status, 200);
                out.insert(k, r.header("x-upstream").to_string());
            }
            out
        };
        let before = place(c).await;
        let again = place(Client::h1(proxy.addr).await.unwrap()).await;
        assert_eq!(before, again, "{policy}: the same key, the same endpoint");
        let spread: std::collections::HashSet<&String> = before.values().collect();
        assert_eq!(
            spread.len(),
            10,
            "{policy}: keys spread over every endpoint"
        );

        proxy.write_config(&config(&addrs(&ups, ""), "", &cluster));
        let newcomer = ups[10].addr();
        wait_endpoint_for(
            &proxy,
            newcomer,
            "the 11th endpoint",
            Duration::from_secs(5),
            |e| !e.is_null(),
        )
        .await;
        let after = place(Client::h1(proxy.addr).await.unwrap()).await;
        let kept = before.iter().filter(|(k, v)| after[*k] == **v).count();
        assert!(
            kept * 100 >= 85 * 400,
            "{policy}: only {kept} of 400 keys stayed"
        );
        assert!(
            after.values().any(|v| v == "h10"),
            "{policy}: the newcomer gets keys"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breakers_overflow_at_once() {
    let ups = upstreams("b", 1).await;
    let proxy = Corridor::start(&config(
        &addrs(&ups, ""),
        "",
        "    circuit_breakers: { max_requests: 2, max_connections: 100 }",
    ))
    .await;
    let hold = |proxy: &Corridor| {
        let addr = proxy.addr;
        tokio::spawn(async move {
            let c = Client::h1(addr).await.unwrap();
            fetch_get(&c, "/slow?ms=1500").await.status
        })
    };
    let a = hold(&proxy);
    let b = hold(&proxy);
    let u = &ups[0];
    let deadline = Instant::now() + Duration::from_secs(5);
    while u.in_flight() < 2 {
        assert!(Instant::now() < deadline, "two requests in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = Client::h1(proxy.addr).await.unwrap();
    let t = Instant::now();
    let r = fetch_get(&c, "/status/200").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-corridor-error"), "overflow");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_requests"));
    assert!(t.elapsed() < Duration::from_millis(500), "at once");
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (200, 200));
    assert_eq!(
        proxy
            .metric(
                "corridor_overflow_total",
                &[("cluster", "c"), ("breaker", "max_requests")]
            )
            .await,
        1.0
    );
    // (An error answer closes the client's connection.)
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.status, 200, "room again");

    // One connection and one waiting request: a third overflows, the second
    // waits for the first and then succeeds.
    proxy.write_config(&config(
        &addrs(&ups, ""),
        "",
        "    circuit_breakers: { max_connections: 1, max_pending_requests: 1 }",
    ));
    assert!(
        proxy
            .wait_for_log("configuration reloaded", Duration::from_secs(5))
            .await
    );
    let a = hold(&proxy);
    let deadline = Instant::now() + Duration::from_secs(5);
    while u.in_flight() < 1 {
        assert!(Instant::now() < deadline, "the first request in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiter = {
        let addr = proxy.addr;
        tokio::spawn(async move {
            let c = Client::h1(addr).await.unwrap();
            let t = Instant::now();
            (fetch_get(&c, "/status/200").await.status, t.elapsed())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster_state(&proxy, "c").await["pending_requests"] != 1 {
        assert!(Instant::now() < deadline, "the second request waits");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = Client::h1(proxy.addr).await.unwrap();
    let r = fetch_get(&c, "/status/200").await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_pending_requests"));
    assert_eq!(a.await.unwrap(), 200);
    let (status, waited) = waiter.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(500),
        "it waited: {waited:?}"
    );
}

/// A burst of `n` concurrent requests right after endpoint 0 of four starts
/// failing; how many clients got an error.
async fn burst_errors(breakers: &str, n: usize) -> (usize, f64) {
    let ups = upstreams("r", 4).await;
    let cluster = if breakers.is_empty() {
        String::new()
    } else {
        format!("    circuit_breakers: {breakers}")
    };
    let proxy = Corridor::start(&config(
        &addrs(&ups, ""),
        "retry_policy: { num_retries: 2, retry_on: [retriable-status-codes], retriable_status_codes: [503] }",
        &cluster,
    ))
    .await;
    // Normal traffic first.
    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..20 {
        assert_eq!(fetch_get(&c, "/status/200").await.status, 200);
    }
    // Endpoint 0 fails; the others take 300 ms, so the burst's retries overlap.
    for u in &ups[1..] {
        u.set_fault(Fault {
            delay: Duration::from_millis(300),
            status: None,
        });
    }
    ups[0].set_fault(Fault {
        delay: Duration::ZERO,
        status: Some(503),
    });
    let addr = proxy.addr;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let c = Client::h1(addr).await.unwrap();
                fetch_get(&c, "/status/200").await.status
            })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        if t.await.unwrap() != 200 {
            errors += 1;
        }
    }
    let overflow = proxy
        .metric(
            "corridor_overflow_total",
            &[("cluster", "c"), ("breaker", "retries")],
        )
        .await;
    (errors, overflow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_carries_the_first_burst_of_a_fault_where_a_fixed_limit_fails_it() {
    let _serial = exclusive().await;
    // Envoy's default breaker: three retries in flight.
    let (fixed_errors, fixed_overflow) = burst_errors("{ max_retries: 3 }", 40).await;
    assert!(
        fixed_errors > 0 && fixed_overflow > 0.0,
        "max_retries 3 turns the burst into errors: {fixed_errors} errors, {fixed_overflow} overflows"
    );
    // The default budget: 20 % of requests in flight, plus the reserve.
    let (errors, overflow) = burst_errors("", 40).await;
    assert_eq!(errors, 0, "{overflow} retries refused");
    // A budget without reserve to spend: a tiny budget refuses retries.
    let (tight_errors, tight_overflow) = burst_errors(
        "{ retry_budget: { budget_percent: 0, min_retry_concurrency: 1 } }",
        40,
    )
    .await;
    assert!(
        tight_errors > 0 && tight_overflow > 0.0,
        "{tight_errors} errors, {tight_overflow} overflows"
    );
    eprintln!(
        "burst of 40 with 1 of 4 endpoints failing: max_retries 3 → {fixed_errors} client errors; \
         default budget → {errors}; 0 % budget → {tight_errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_state_survives_a_reload_that_keeps_the_endpoint() {
    let ups = upstreams("s", 4).await;
    let od = "    outlier_detection: { consecutive_5xx: 2, interval: 50ms, base_ejection_time: 30s, max_ejection_percent: 50 }";
    let proxy = Corridor::start(&config(&addrs(&ups[..3], ""), "", od)).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    ups[0].set_fault(Fault {
        delay: Duration::ZERO,
        status: Some(500),
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoint_state(&proxy, ups[0].addr()).await["ejected"] != true {
        assert!(Instant::now() < deadline, "s0 ejected");
        fetch_get(&c, "/status/200").await;
    }
    // A reload that adds s3 keeps s0 ejected (and its count).
    proxy.write_config(&config(&addrs(&ups, ""), "", od));
    wait_endpoint_for(
        &proxy,
        ups[3].addr(),
        "reload",
        Duration::from_secs(5),
        |e| !e.is_null(),
    )
    .await;
    let e = endpoint_state(&proxy, ups[0].addr()).await;
    assert_eq!(e["ejected"], true, "{e}");
    assert_eq!(e["ejections"], 1, "{e}");
    let got = names(&c, "/status/200", 60).await;
    assert_eq!(count(&got, "s0"), 0, "still ejected after the reload");
    // Removed and added back: a fresh endpoint, not ejected.
    ups[0].set_fault(Fault::default());
    proxy.write_config(&config(&addrs(&ups[1..], ""), "", od));
    wait_endpoint_for(
        &proxy,
        ups[0].addr(),
        "removal",
        Duration::from_secs(5),
        |e| e.is_null(),
    )
    .await;
    proxy.write_config(&config(&addrs(&ups, ""), "", od));
    let e = wait_endpoint_for(
        &proxy,
        ups[0].addr(),
        "re-added",
        Duration::from_secs(5),
        |e| !e.is_null(),
    )
    .await;
    assert_eq!(e["ejected"], false, "{e}");
    assert_eq!(e["ejections"], 0, "{e}");
    assert!(count(&names(&c, "/status/200", 40).await, "s0") > 0);
    assert_eq!(
        proxy
            .metric("corridor_outlier_ejected_endpoints", &[("cluster", "c")])
            .await,
        0.0,
        "the gauge forgets the removed endpoint's ejection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_health_checks_and_per_endpoint_paths() {
    let ups = upstreams("p", 2).await;
    // p1 checks its own path, which fails; TCP passes for both.
    let mut list = addrs(&ups[..1], "");
    list.push((
        ups[1].addr(),
        "health_check: { path: /status/503 }".to_string(),
    ));
    let proxy = Corridor::start(&config(
        &list,
        "",
        "    health_checks:\n      - { interval: 30ms, http_health_check: { path: /healthz } }\n      - { interval: 30ms, tcp_health_check: {} }",
    ))
    .await;
    wait_endpoint_for(
        &proxy,
        ups[0].addr(),
        "p0 healthy",
        Duration::from_secs(5),
        |e| e["health"] == "healthy",
    )
    .await;
    let e = wait_endpoint_for(
        &proxy,
        ups[1].addr(),
        "p1 unhealthy",
        Duration::from_secs(5),
        |e| e["health"] == "unhealthy",
    )
    .await;
    assert!(
        e["health_check_error"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{e}"
    );
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(count(&names(&c, "/status/200", 20).await, "p0"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_follow_the_serving_status() {
    let a = GrpcServer::start("ga").await;
    let b = GrpcServer::start("gb").await;
    let list = vec![(a.addr(), String::new()), (b.addr(), String::new())];
    let proxy = Corridor::start(&config(
        &list,
        "",
        "    protocol: h2c\n    health_checks: [{ interval: 30ms, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: {} }]",
    ))
    .await;
    for s in [&a, &b] {
        wait_endpoint_for(&proxy, s.addr(), "serving", Duration::from_secs(5), |e| {
            e["health"] == "healthy"
        })
        .await;
    }
    b.set_serving("", false);
    let e = wait_endpoint_for(
        &proxy,
        b.addr(),
        "not serving",
        Duration::from_secs(5),
        |e| e["health"] == "unhealthy",
    )
    .await;
    assert!(
        e["health_check_error"]
            .as_str()
            .unwrap_or("")
            .contains("NOT_SERVING"),
        "{e}"
    );
    let mut client = corridor_tests::grpc::connect(proxy.addr).await.unwrap();
    let before = b.calls();
    for seq in 0..20 {
        let reply = client
            .unary(EchoMsg {
                text: "hi".into(),
                seq,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.text, "hi from ga");
    }
    assert_eq!(b.calls(), before, "the unhealthy server gets no calls");
    // Back to serving: back in rotation.
    b.set_serving("", true);
    wait_endpoint_for(
        &proxy,
        b.addr(),
        "serving again",
        Duration::from_secs(5),
        |e| e["health"] == "healthy",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_tls_clusters_speak_tls_and_verify_the_name() {
    let pki = corridor_tests::TestPki::new("hc-ca");
    let up = Upstream::tls("t", &pki.leaf(&["up.test"])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    // The second endpoint's certificate is for another name.
    let wrong = Upstream::tls("w", &pki.leaf(&["other.test"])).await;
    let yaml = format!(
        "{HEAD}route_tables: [{{ name: t, virtual_hosts: [{{ domains: [\"*\"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]\n\
         clusters:\n  - name: c\n    tls: {{ sni: up.test, ca_file: \"{ca}\" }}\n\
         \x20   health_checks: [{{ interval: 30ms, unhealthy_threshold: 1, http_health_check: {{ path: /healthz }} }}]\n\
         \x20   endpoints:\n      - {{ address: \"{a}\" }}\n      - {{ address: \"{b}\" }}\n",
        ca = ca.display(),
        a = up.addr(),
        b = wrong.addr(),
    );
    let proxy = Corridor::start_with_dir(&yaml, dir).await;
    wait_endpoint_for(
        &proxy,
        up.addr(),
        "healthy over TLS",
        Duration::from_secs(5),
        |e| e["health"] == "healthy",
    )
    .await;
    let e = wait_endpoint_for(
        &proxy,
        wrong.addr(),
        "the wrong name fails",
        Duration::from_secs(5),
        |e| e["health"] == "unhealthy",
    )
    .await;
    assert!(
        e["health_check_error"]
            .as_str()
            .unwrap_or("")
            .contains("tls"),
        "{e}"
    );
    assert_eq!(
        wrong.requests(),
        0,
        "no HTTP request went to the unverified server"
    );
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(count(&names(&c, "/status/200", 10).await, "t"), 10);
}
