//! Hot reload: a changed file or SIGHUP swaps the snapshot atomically; requests
//! in flight finish on the snapshot they started with; an invalid file is
//! rejected, logged with its positions and counted while the old config keeps
//! serving; listeners come and go at run time (the admin socket needs a
//! restart); TLS certificates rotate in place.

use std::time::{Duration, Instant};

use corridor_tests::{Client, Corridor, TestPki, UpstreamProtocol};

use super::{fetch_get, first_sse_event, single_route, try_get, upstream};

/// Polls `GET path` until the `x-upstream` header equals `want`.
async fn wait_served_by(proxy: &Corridor, path: &str, want: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let c = Client::h1(proxy.addr).await.unwrap();
        if fetch_get(&c, path).await.header("x-upstream") == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn version(proxy: &Corridor) -> String {
    let (status, body) = proxy.admin_get("/config_dump").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["version"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_swaps_the_config_and_a_bad_one_is_rejected() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(&[(a.addr(), "")], "", "")).await;
    let v1 = version(&proxy).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.header("x-upstream"), "a");

    proxy.write_config(&single_route(&[(b.addr(), "")], "", ""));
    assert!(
        wait_served_by(&proxy, "/status/200", "b", Duration::from_secs(5)).await,
        "{}",
        proxy.logs()
    );
    let v2 = version(&proxy).await;
    assert_ne!(v1, v2);
    assert_eq!(
        proxy
            .metric("corridor_config_reloads_total", &[("result", "ok")])
            .await,
        2.0
    );

    // Invalid: every error is logged with its position; b keeps serving.
    let bad = single_route(
        &[(b.addr(), "weight: 0")],
        "retry_policy: { retry_on: [sometimes] }",
        "",
    );
    proxy.write_config(&bad);
    assert!(
        proxy
            .wait_for_log("configuration rejected", Duration::from_secs(5))
            .await,
        "{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    let file = proxy.config_path.display().to_string();
    assert!(
        logs.contains(&format!("{file}:19:61: route_tables[0]"))
            && logs.contains("unknown retry condition `sometimes`"),
        "{logs}"
    );
    assert!(
        logs.contains("clusters[0].endpoints[0].weight: weight must be at least 1"),
        "{logs}"
    );
    assert_eq!(
        proxy
            .metric("corridor_config_reloads_total", &[("result", "failed")])
            .await,
        1.0
    );
    assert_eq!(version(&proxy).await, v2, "the old snapshot keeps serving");
    assert_eq!(fetch_get(&c, "/status/200").await.header("x-upstream"), "b");

    // Fixed again: accepted.
    proxy.write_config(&single_route(&[(a.addr(), "")], "", ""));
    assert!(wait_served_by(&proxy, "/status/200", "a", Duration::from_secs(5)).await);
    assert_eq!(version(&proxy).await, v1, "same content, same version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(&[(a.addr(), "")], "", "")).await;
    // Rewrite in place with the same size and the old mtime, so that only the signal
    // can make Corridor notice.
    let path = &proxy.config_path;
    let old = std::fs::read_to_string(path).unwrap();
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let (a_port, b_port) = (a.addr().port().to_string(), b.addr().port().to_string());
    assert_eq!(
        a_port.len(),
        b_port.len(),
        "ephemeral ports have the same width"
    );
    std::fs::write(path, old.replace(&a_port, &b_port)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        wait_served_by(&proxy, "/status/200", "a", Duration::from_millis(100)).await,
        "not reloaded without the signal"
    );

    proxy.signal(libc::SIGHUP);
    assert!(
        wait_served_by(&proxy, "/status/200", "b", Duration::from_secs(5)).await,
        "{}",
        proxy.logs()
    );
    // The log line follows the swap: wait for it rather than race it.
    assert!(
        proxy.wait_for_log("SIGHUP", Duration::from_secs(5)).await,
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_finish_on_the_snapshot_they_started_with() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(&[(a.addr(), "")], "", "")).await;
    let (_c, mut stream) = first_sse_event(proxy.addr, "/sse?n=30&interval_ms=50").await;

    // The new config has no route to `a` at all.
    let gone = r#"
listeners: [{ name: main, address: "{{LISTEN}}", route_table: t }]
admin: { address: "{{ADMIN}}" }
runtime: { worker_threads: 2, drain_timeout: 5s }
route_tables: [{ name: t, virtual_hosts: [{ domains: ["*"], routes: [{ direct_response: { status: 410, body: gone } }] }] }]
"#;
    proxy.write_config(gone);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c2 = Client::h1(proxy.addr).await.unwrap();
        if fetch_get(&c2, "/status/200").await.status == 410 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload did not happen: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rest = 0;
    while stream.next_sse().await.unwrap().is_some() {
        rest += 1;
    }
    assert_eq!(
        rest, 29,
        "the stream that started before the reload completes"
    );
}

/// Polls until `addr` answers `GET /status/200` with 200 (`want`) or refuses
/// connections (`!want`). (A connection the kernel queued just before the
/// listener closed is reset rather than answered; polling goes on until
/// connections are refused.)
async fn wait_listening(addr: std::net::SocketAddr, want: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let done = if want {
            try_get(addr, "/status/200").await.map(|r| r.status) == Some(200)
        } else {
            tokio::net::TcpStream::connect(addr).await.is_err()
        };
        if done {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_at_run_time() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let base = single_route(&[(a.addr(), "")], "", "");
    let proxy = Corridor::start(&base).await;
    let side = "  - name: side\n    address: \"{{LISTEN2}}\"\n    route_table: t\n";
    let both = base.replacen("admin:", &format!("{side}admin:"), 1);
    proxy.write_config(&both);
    assert!(wait_listening(proxy.addr2, true).await, "{}", proxy.logs());

    // A stream in flight on `main` when `main` is removed runs to its end.
    let (_c, mut stream) = first_sse_event(proxy.addr, "/sse?n=20&interval_ms=50").await;
    let only_side = both.replace(
        "  - name: main\n    address: \"{{LISTEN}}\"\n    route_table: t\n",
        "",
    );
    assert_ne!(only_side, both);
    proxy.write_config(&only_side);
    assert!(
        wait_listening(proxy.addr, false).await,
        "the removed listener still accepts: {}",
        proxy.logs()
    );
    let mut rest = 0;
    while stream.next_sse().await.unwrap().is_some() {
        rest += 1;
    }
    assert_eq!(rest, 19, "the stream on the removed listener completes");
    assert!(wait_listening(proxy.addr2, true).await);

    // A port another process holds rejects the change; nothing else changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = only_side.replacen(
        "admin:",
        &format!(
            "  - name: busy\n    address: \"{}\"\n    route_table: t\nadmin:",
            taken.local_addr().unwrap()
        ),
        1,
    );
    proxy.write_config(&busy);
    assert!(
        proxy
            .wait_for_log("cannot listen on", Duration::from_secs(5))
            .await,
        "{}",
        proxy.logs()
    );
    assert!(
        proxy
            .logs()
            .contains("Listener(busy).address: cannot listen on"),
        "{}",
        proxy.logs()
    );
    assert!(wait_listening(proxy.addr2, true).await);

    // The admin socket is not a listener resource: moving it needs a restart.
    let admin_moved =
        only_side.replace("{{ADMIN}}", &corridor_tests::proxy::free_addr().to_string());
    proxy.write_config(&admin_moved);
    assert!(
        proxy
            .wait_for_log(
                "the admin socket changes only on restart",
                Duration::from_secs(5)
            )
            .await,
        "{}",
        proxy.logs()
    );
    assert!(wait_listening(proxy.addr2, true).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_certificates_rotate_without_restart() {
    let old_ca = TestPki::new("old");
    let new_ca = TestPki::new("new");
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let install = |pki: &TestPki| {
        let leaf = pki.leaf(&["proxy.test"]);
        std::fs::write(&cert, leaf.chain_pem()).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
    };
    install(&old_ca);
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let config = format!(
        r#"
listeners:
  - {{ name: tls, address: "{{{{LISTEN}}}}", tls: {{ cert_file: "{cert}", key_file: "{key}" }}, route_table: t }}
admin: {{ address: "{{{{ADMIN}}}}" }}
route_tables: [{{ name: t, virtual_hosts: [{{ domains: ["*"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]
clusters: [{{ name: c, endpoints: [{{ address: "{up}" }}] }}]
"#,
        cert = cert.display(),
        key = key.display(),
        up = up.addr()
    );
    let proxy = Corridor::start_with_dir(&config, dir).await;
    let connect =
        |pki: &TestPki| Client::tls(proxy.addr, "proxy.test", pki.client_config(&[b"h2"]));
    let c = connect(&old_ca).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.status, 200);
    assert!(connect(&new_ca).await.is_err());

    install(&new_ca);
    let deadline = Instant::now() + Duration::from_secs(5);
    while connect(&new_ca).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "new certificate not served: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        connect(&old_ca).await.is_err(),
        "new handshakes only get the new certificate"
    );
    assert_eq!(
        fetch_get(&c, "/status/200").await.status,
        200,
        "an existing connection keeps working"
    );
    assert!(
        proxy
            .wait_for_log("TLS files reloaded", Duration::from_secs(5))
            .await,
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_ca_bundles_rotate_without_restart() {
    let old_ca = TestPki::new("old-upstream-ca");
    let new_ca = TestPki::new("new-upstream-ca");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("upstream-ca.pem");
    std::fs::write(&bundle, &old_ca.leaf(&["up.test"]).ca_pem).unwrap();
    let up = corridor_tests::Upstream::tls("up", &old_ca.leaf(&["up.test"])).await;
    let addr = up.addr();
    let config = single_route(
        &[(addr, "")],
        "",
        &format!(
            "    tls: {{ sni: up.test, ca_file: \"{}\" }}",
            bundle.display()
        ),
    );
    let proxy = Corridor::start_with_dir(&config, dir).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.status, 200);

    // The upstream moves to a certificate from the new CA: untrusted until the bundle changes.
    up.shutdown().await;
    let mut opts = corridor_tests::UpstreamOptions::new("up2", UpstreamProtocol::Tls);
    opts.tls = Some(new_ca.leaf(&["up.test"]));
    opts.bind = Some(addr);
    let _up2 = corridor_tests::Upstream::start(opts).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let r = fetch_get(&c, "/status/200").await;
    assert_eq!(
        r.status, 503,
        "an untrusted upstream certificate fails the connect"
    );

    std::fs::write(&bundle, &new_ca.leaf(&["up.test"]).ca_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = Client::h1(proxy.addr).await.unwrap();
        let r = fetch_get(&c, "/status/200").await;
        if r.status == 200 {
            assert_eq!(r.header("x-upstream"), "up2");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new CA bundle not used: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proxy
            .wait_for_log("TLS files reloaded", Duration::from_secs(5))
            .await,
        "{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_closes_what_is_still_open_at_the_drain_timeout() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let base =
        single_route(&[(up.addr(), "")], "", "").replace("drain_timeout: 5s", "drain_timeout: 1s");
    let side = "  - name: side\n    address: \"{{LISTEN2}}\"\n    route_table: t\n";
    let both = base.replacen("admin:", &format!("{side}admin:"), 1);
    let proxy = Corridor::start(&both).await;
    let addr2 = proxy.addr2;
    let since = Instant::now();
    let hung = tokio::spawn(async move {
        let c = Client::h1(addr2).await.unwrap();
        c.get("/hang").await.map(|r| r.status())
    });
    up.wait_request("/hang", since, Duration::from_secs(5))
        .await
        .unwrap();
    proxy.write_config(&base);
    let removed = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), hung)
        .await
        .expect("the hung request on the removed listener is closed")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    let took = removed.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the 1 s drain timeout"
    );
    // The listener that stays is untouched.
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.status, 200);
}
