//! The admin listener and observability: `/ready`, `/live`, `/metrics` with
//! per-route counters, latency histograms, active requests and streams, bytes
//! and reloads; `/config_dump`; and the access log in text and JSON.

use std::time::Duration;

use corridor_tests::client;
use corridor_tests::{BodyReader, Client, Corridor, UpstreamProtocol};
use http::Request;

use super::{fetch, fetch_get, single_route, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_config_dump() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(&[(up.addr(), "")], "", "")).await;
    assert_eq!(proxy.admin_get("/ready").await, (200, "ready\n".into()));
    assert_eq!(proxy.admin_get("/live").await.0, 200);
    assert_eq!(proxy.admin_get("/nope").await.0, 404);

    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..3 {
        assert_eq!(fetch_get(&c, "/status/200").await.status, 200);
    }
    assert_eq!(fetch_get(&c, "/status/503").await.status, 503);
    let body = client::full(vec![1u8; 1000]);
    assert_eq!(
        fetch(&c, Request::post("/echo").body(body).unwrap())
            .await
            .body
            .len(),
        1000
    );

    let route = [("route", "r"), ("cluster", "c")];
    // A request is counted when it is logged, just after its response is
    // sent: wait for the last one rather than race it.
    super::eventually("the five requests to be logged", || async {
        let m = proxy.metrics().await;
        let sum = |name: &str, labels: &[(&str, &str)]| {
            corridor_tests::proxy::metric_sum(&m, name, labels)
        };
        sum("corridor_request_duration_seconds_count", &route) == 5.0
            && sum("corridor_active_requests", &[]) == 0.0
    })
    .await;
    let m = proxy.metrics().await;
    let get =
        |name: &str, labels: &[(&str, &str)]| corridor_tests::proxy::metric_sum(&m, name, labels);
    assert_eq!(
        get(
            "corridor_requests_total",
            &[route[0], route[1], ("status_class", "2xx")]
        ),
        4.0
    );
    assert_eq!(
        get(
            "corridor_requests_total",
            &[route[0], route[1], ("status_class", "5xx")]
        ),
        1.0
    );
    assert_eq!(get("corridor_request_duration_seconds_count", &route), 5.0);
    assert!(m.contains("corridor_request_duration_seconds_bucket{cluster=\"c\",route=\"r\",status_class=\"2xx\",le=\"0.005\"}"));
    assert_eq!(get("corridor_request_body_bytes_total", &route), 1000.0);
    assert!(get("corridor_response_body_bytes_total", &route) >= 1000.0);
    assert_eq!(get("corridor_active_requests", &[]), 0.0);
    assert_eq!(
        get("corridor_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert!(get("process_resident_memory_bytes", &[]) > 0.0);

    // While a stream is open it is an active request and an active stream.
    let resp = c
        .send(
            Request::get("/sse?n=100&interval_ms=20")
                .body(client::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut r = BodyReader::new(resp.into_body());
    r.next_sse().await.unwrap();
    assert_eq!(proxy.metric("corridor_active_requests", &[]).await, 1.0);
    assert_eq!(proxy.metric("corridor_active_streams", &[]).await, 1.0);
    drop(r);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while proxy.metric("corridor_active_streams", &[]).await != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "stream gauge never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, body) = proxy.admin_get("/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["version"].as_str().unwrap().len(), 16);
    assert!(dump["loaded_at"].as_str().unwrap().ends_with('Z'), "{dump}");
    assert_eq!(dump["source"], proxy.config_path.display().to_string());
    let res = &dump["resources"];
    assert_eq!(res["Listener"][0]["name"], "main");
    assert_eq!(res["Listener"][0]["version"].as_str().unwrap().len(), 16);
    assert_eq!(
        res["Cluster"][0]["resource"]["endpoints"][0]["address"],
        up.addr().to_string()
    );
    assert_eq!(
        res["RouteTable"][0]["resource"]["virtual_hosts"][0]["routes"][0]["match"]["prefix"],
        "/"
    );
    assert_eq!(dump["listeners_serving"][0]["name"], "main");
    assert_eq!(dump["warming"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_in_json_and_text() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    for format in ["json", "text"] {
        let config = single_route(&[(up.addr(), "")], "", "")
            .replace("admin:\n  address: \"{{ADMIN}}\"", &format!("admin:\n  address: \"{{{{ADMIN}}}}\"\n  access_log: {{ enabled: true, format: {format} }}"));
        let proxy = Corridor::start(&config).await;
        let c = Client::h2c(proxy.addr).await.unwrap();
        assert_eq!(fetch_get(&c, "/status/201?x=1").await.status, 201);
        assert!(
            proxy
                .wait_for_log("/status/201", Duration::from_secs(3))
                .await,
            "{}",
            proxy.logs()
        );
        let logs = proxy.logs();
        let line = logs.lines().find(|l| l.contains("/status/201")).unwrap();
        if format == "json" {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["target"], "access");
            assert_eq!(v["status"], 201);
            assert_eq!(v["method"], "GET");
            assert_eq!(v["path"], "/status/201");
            assert_eq!(v["route"], "r");
            assert_eq!(v["cluster"], "c");
            assert_eq!(v["upstream"], up.addr().to_string());
            assert_eq!(v["protocol"], "HTTP/2.0");
            assert_eq!(v["attempts"], 1);
        } else {
            for field in [
                "access:",
                "method=GET",
                "status=201",
                "route=\"r\"",
                "attempts=1",
            ] {
                assert!(line.contains(field), "{field} missing in {line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_token_and_a_warning_for_an_admin_listener_off_loopback() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let config = single_route(&[(up.addr(), "")], "", "").replace(
        "admin:\n  address: \"{{ADMIN}}\"",
        &format!(
            "admin:\n  address: \"0.0.0.0:{{{{ADMIN_PORT}}}}\"\n  config_dump_token_file: \"{}\"",
            token_file.display()
        ),
    );
    let proxy = Corridor::start_with_dir(&config, dir).await;
    assert!(
        proxy
            .wait_for_log(
                "the admin listener is not on loopback",
                Duration::from_secs(3)
            )
            .await,
        "{}",
        proxy.logs()
    );
    let get = |auth: Option<&'static str>| {
        let admin = proxy.admin;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
            let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
            let req =
                format!("GET /config_dump HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret-token"),
        Some("Bearer s3cret-token-and-more"),
    ] {
        let out = get(auth).await;
        assert!(out.starts_with("HTTP/1.1 401"), "{auth:?}: {out}");
        assert!(!out.contains("resources"), "{auth:?}: {out}");
    }
    let out = get(Some("Bearer s3cret-token")).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("\"resources\""),
        "{out}"
    );
    // The auth-scheme is case-insensitive (RFC 9110 §11.1).
    let out = get(Some("bearer s3cret-token")).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // /clusters (endpoint addresses) is behind the same token.
    let (status, body) = proxy.admin_get("/clusters").await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("endpoints"), "{body}");
    // Health and metrics stay open.
    assert_eq!(proxy.admin_get("/ready").await.0, 200);
    assert_eq!(proxy.admin_get("/metrics").await.0, 200);
}

/// The log writer is stuck (nobody reads Corridor's stdout): requests still complete at
/// once, and the lines that did not fit the queue are counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_log_writer_never_blocks_requests() {
    use std::process::{Command, Stdio};
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let (addr, admin) = (
        corridor_tests::proxy::free_addr(),
        corridor_tests::proxy::free_addr(),
    );
    let template = single_route(&[(up.addr(), "")], "", "").replace(
        "admin:\n  address: \"{{ADMIN}}\"",
        "admin:\n  address: \"{{ADMIN}}\"\n  access_log: { enabled: true, format: json, queue_lines: 16 }",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corridor.yaml");
    std::fs::write(
        &path,
        corridor_tests::proxy::fill(&template, addr, addr, admin),
    )
    .unwrap();
    let mut child = Command::new(corridor_tests::proxy::corridor_binary())
        .args(["run", "-c", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped()) // held, never read: the pipe fills and the writer blocks
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stdout = child.stdout.take();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while corridor_tests::proxy::admin_get(admin, "/ready")
        .await
        .map(|r| r.0)
        != Ok(200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "corridor did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = Client::h1(addr).await.unwrap();
    // ~2000 access lines of ~500 bytes each: far more than a 64 KiB pipe holds.
    let start = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..2000 {
        let t = std::time::Instant::now();
        assert_eq!(fetch_get(&c, "/status/200").await.status, 200);
        slowest = slowest.max(t.elapsed());
    }
    let (_, metrics) = corridor_tests::proxy::admin_get(admin, "/metrics")
        .await
        .unwrap();
    let dropped =
        corridor_tests::proxy::metric_sum(&metrics, "corridor_log_lines_dropped_total", &[]);
    assert!(dropped > 0.0, "no line was dropped:\n{metrics}");
    // No request waited for the writer: none took anywhere near the time a blocked write
    // would have (forever), and all finished promptly.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request took {slowest:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}
