//! Shutdown: SIGTERM stops accepting, lets in-flight requests finish, and exits
//! as soon as they are done — bounded by the drain timeout, not Pingora's
//! 300 s default.

use std::time::{Duration, Instant};

use corridor_tests::{Client, Corridor, UpstreamProtocol};

use super::{fetch_get, single_route, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let mut proxy = Corridor::start(&single_route(&[(up.addr(), "")], "", "")).await;
    let addr = proxy.addr;
    let since = Instant::now();
    let in_flight = tokio::spawn(async move {
        let c = Client::h1(addr).await.unwrap();
        fetch_get(&c, "/slow?ms=1500").await
    });
    up.wait_request("/slow", since, Duration::from_secs(5))
        .await
        .expect("request reached upstream");

    let term = Instant::now();
    proxy.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Pingora closes every listener on SIGTERM, the admin one included: a readiness
    // probe sees a refused connection (or a 503 if it raced the close).
    match corridor_tests::proxy::admin_get(proxy.admin, "/ready").await {
        Ok((status, _)) => assert_eq!(status, 503, "not ready while draining"),
        Err(e) => assert!(e.contains("refused"), "{e}"),
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections are accepted while draining"
    );
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request completes");
    let status = proxy
        .wait_exit(Duration::from_secs(4))
        .await
        .expect("exits after draining");
    assert!(status.success(), "{status}");
    let took = term.elapsed();
    assert!(
        took < Duration::from_millis(1500 + 1500),
        "exited {took:?} after SIGTERM (drain timeout 5s)"
    );
    assert!(
        proxy.logs().contains("drained; exiting"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_proxy_exits_at_once_and_a_stuck_one_at_the_drain_timeout() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let mut idle = Corridor::start(&single_route(&[(up.addr(), "")], "", "")).await;
    let term = Instant::now();
    idle.signal(libc::SIGTERM);
    idle.wait_exit(Duration::from_secs(3))
        .await
        .expect("idle proxy exits");
    assert!(
        term.elapsed() < Duration::from_secs(1),
        "idle exit took {:?}",
        term.elapsed()
    );

    let config =
        single_route(&[(up.addr(), "")], "", "").replace("drain_timeout: 5s", "drain_timeout: 1s");
    let mut stuck = Corridor::start(&config).await;
    let addr = stuck.addr;
    let since = Instant::now();
    let hung = tokio::spawn(async move {
        let c = Client::h1(addr).await.unwrap();
        c.get("/hang").await.map(|r| r.status())
    });
    up.wait_request("/hang", since, Duration::from_secs(5))
        .await
        .unwrap();
    let term = Instant::now();
    stuck.signal(libc::SIGTERM);
    stuck
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits at the drain timeout");
    let took = term.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?} with a 1 s drain timeout"
    );
    assert!(
        stuck.logs().contains("drain timeout reached"),
        "{}",
        stuck.logs()
    );
    assert!(hung.await.unwrap().is_err(), "the stuck request is cut");
}
