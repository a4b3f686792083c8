//! The control stream end to end: the real `corridor control-plane` pushes to
//! real `corridor run` processes over ADS (state of the world and delta).
//! Route changes move traffic within a second with no failed request;
//! invalid pushes are NACKed (visible on both sides) while traffic continues;
//! the proxy outlives the control plane and converges when it returns;
//! delta adds and removes endpoints and clusters without recompiling route
//! tables; per-node views; fail-static boot from the persisted configuration.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corridor_tests::{Client, ControlPlane, Corridor, TestPki, UpstreamProtocol};

use super::{eventually, exclusive, fetch_get, upstream, wait_upstream};

/// A bootstrap with one static listener (routing with pushed table `t`) and
/// the control stream; `extra` goes into the `xds` section.
fn bootstrap(cp: &ControlPlane, node: &str, extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "{{{{LISTEN}}}}"
    route_table: t
admin:
  address: "{{{{ADMIN}}}}"
runtime:
  worker_threads: 2
  drain_timeout: 5s
xds:
  server: "{}"
  node_id: {node}
  initial_fetch_timeout: 3s
{extra}"#,
        cp.url()
    )
}

fn route_table(cluster: &str) -> String {
    format!(
        r#"
route_tables:
  - name: t
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ prefix: / }}
            route: {{ cluster: {cluster} }}
"#
    )
}

fn cluster(name: &str, eps: &[SocketAddr]) -> String {
    let eps: String = eps
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect();
    format!("clusters:\n  - name: {name}\n    endpoints:\n{eps}")
}

async fn config_dump(proxy: &Corridor) -> serde_json::Value {
    let (status, body) = proxy.admin_get("/config_dump").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The proxy's control-stream status of one type (`Listener`, `Cluster`...).
fn xds_type<'a>(dump: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    dump["xds"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["type_url"]
                .as_str()
                .unwrap()
                .ends_with(&format!(".{kind}"))
        })
        .unwrap_or_else(|| panic!("no {kind} in {dump}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_route_change_moves_traffic_within_a_second_without_a_failed_request() {
    let _x = exclusive().await;
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let clusters = format!(
        "{}{}",
        cluster("ca", &[a.addr()]),
        cluster("cb", &[b.addr()]).replace("clusters:\n", "")
    );
    let cp = ControlPlane::start(&[
        ("clusters.yaml", &clusters),
        ("routes.yaml", &route_table("ca")),
    ])
    .await;
    let proxy = Corridor::start(&bootstrap(&cp, "sidecar-1", "")).await;
    assert!(wait_upstream(proxy.addr, "a", Duration::from_secs(5))
        .await
        .is_some());

    // Steady load on kept-alive connections while the route changes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let c = Client::h1(proxy.addr).await.unwrap();
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = fetch_get(&c, "/status/200").await;
                let counter = if r.status == 200 { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cp.write("routes.yaml", &route_table("cb"));
    let took = wait_upstream(proxy.addr, "b", Duration::from_secs(5))
        .await
        .expect("traffic never moved to the new cluster");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert!(
        took < Duration::from_secs(1),
        "traffic followed the push after {took:?}"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during the push"
    );
    assert!(ok.load(Ordering::Relaxed) > 20, "the load did not run");
    let nodes = cp.nodes().await;
    assert_eq!(nodes["nodes"][0]["node_id"], "sidecar-1");
    assert_eq!(nodes["nodes"][0]["metadata"]["role"], "sidecar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_push_is_nacked_on_both_sides_and_traffic_continues() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let cp = ControlPlane::start(&[
        ("clusters.yaml", &cluster("ca", &[a.addr()])),
        ("routes.yaml", &route_table("ca")),
    ])
    .await;
    let proxy = Corridor::start(&bootstrap(&cp, "sidecar-1", "")).await;
    assert!(wait_upstream(proxy.addr, "a", Duration::from_secs(5))
        .await
        .is_some());

    // A file the validator rejects is reported with its position and not pushed.
    cp.write(
        "bad.yaml",
        "clusters:\n  - name: broken\n    endpoints: [{ address: \"nowhere\" }]\n",
    );
    eventually("the control plane to report bad.yaml", || async {
        let (_, body) = corridor_tests::proxy::admin_get(cp.admin, "/files")
            .await
            .unwrap();
        body.contains("bad.yaml:3:")
            && body.contains("clusters[0].endpoints[0].address: invalid address `nowhere`")
    })
    .await;

    // Valid alone, but the proxy cannot apply it: its port is taken there.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    cp.write(
        "listener.yaml",
        &format!("listeners:\n  - name: extra\n    address: \"{busy}\"\n    route_table: t\n"),
    );
    eventually("the NACK to reach /nodes", || async {
        let nodes = cp.nodes().await;
        nodes["nodes"][0]["types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| {
                t["type_url"].as_str().unwrap().ends_with(".Listener")
                    && t["last_nack"]
                        .as_str()
                        .is_some_and(|m| m.contains("Listener(extra).address: cannot listen on"))
            })
    })
    .await;
    let dump = config_dump(&proxy).await;
    let listener = xds_type(&dump, "Listener");
    assert!(
        listener["last_nack"]
            .as_str()
            .unwrap()
            .contains(&format!("cannot listen on {busy}")),
        "{listener}"
    );
    assert_eq!(listener["nacks"], 1, "{listener}");
    assert_eq!(
        proxy
            .metric(
                "corridor_xds_updates_total",
                &[("type", "Listener"), ("result", "nack")]
            )
            .await,
        1.0
    );
    assert!(
        proxy
            .metric(
                "corridor_xds_updates_total",
                &[("type", "Cluster"), ("result", "ack")]
            )
            .await
            >= 1.0
    );
    assert!(dump["resources"]["Listener"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["name"] != "extra"));
    assert_eq!(dump["resources"]["Cluster"].as_array().unwrap().len(), 1);
    // Traffic is unaffected.
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.header("x-upstream"), "a");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_outlives_the_control_plane_and_converges_when_it_returns() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let mut cp = ControlPlane::start(&[
        ("clusters.yaml", &cluster("c", &[a.addr()])),
        ("routes.yaml", &route_table("c")),
    ])
    .await;
    let proxy = Corridor::start(&bootstrap(&cp, "sidecar-1", "")).await;
    assert!(wait_upstream(proxy.addr, "a", Duration::from_secs(5))
        .await
        .is_some());
    cp.kill();
    // Keeps serving the last good configuration.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..10 {
        assert_eq!(fetch_get(&c, "/status/200").await.header("x-upstream"), "a");
    }
    eventually("the proxy to notice the control plane is gone", || async {
        config_dump(&proxy).await["xds"]["connected"] == false
    })
    .await;
    assert_eq!(proxy.admin_get("/ready").await.0, 200);
    assert_eq!(proxy.metric("corridor_xds_connected", &[]).await, 0.0);
    // The endpoints changed while it was away.
    cp.write("clusters.yaml", &cluster("c", &[b.addr()]));
    cp.restart().await;
    assert!(
        wait_upstream(proxy.addr, "b", Duration::from_secs(10))
            .await
            .is_some(),
        "{}",
        proxy.logs()
    );
    let dump = config_dump(&proxy).await;
    assert_eq!(dump["xds"]["connected"], true);
    assert!(dump["xds"]["reconnects"].as_u64().unwrap() >= 1, "{dump}");
    assert_eq!(proxy.metric("corridor_xds_connected", &[]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_adds_and_removes_endpoints_and_clusters_without_recompiling_routes() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let d = upstream("d", UpstreamProtocol::Http1).await;
    let endpoints = |addrs: &[SocketAddr]| {
        let eps: String = addrs
            .iter()
            .map(|a| format!("      - address: \"{a}\"\n"))
            .collect();
        format!("endpoints:\n  - cluster: c\n    endpoints:\n{eps}")
    };
    let cp = ControlPlane::start(&[
        ("clusters.yaml", "clusters:\n  - name: c\n"),
        ("endpoints.yaml", &endpoints(&[a.addr()])),
        ("routes.yaml", &route_table("c")),
    ])
    .await;
    let proxy = Corridor::start(&bootstrap(&cp, "sidecar-1", "  delta: true\n")).await;
    assert!(wait_upstream(proxy.addr, "a", Duration::from_secs(5))
        .await
        .is_some());
    let dump = config_dump(&proxy).await;
    assert_eq!(dump["xds"]["variant"], "delta");
    let compile_id =
        |dump: &serde_json::Value| dump["resources"]["RouteTable"][0]["compile_id"].clone();
    let table_before = compile_id(&dump);
    assert!(table_before.as_u64().is_some(), "{dump}");

    // Add an endpoint: both serve.
    cp.write("endpoints.yaml", &endpoints(&[a.addr(), b.addr()]));
    eventually("both endpoints to serve", || async {
        let c = Client::h1(proxy.addr).await.unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            seen.insert(
                fetch_get(&c, "/status/200")
                    .await
                    .header("x-upstream")
                    .to_string(),
            );
        }
        seen.contains("a") && seen.contains("b")
    })
    .await;
    // Remove one: only the other serves.
    cp.write("endpoints.yaml", &endpoints(&[b.addr()]));
    eventually("the removed endpoint to stop serving", || async {
        let c = Client::h1(proxy.addr).await.unwrap();
        for _ in 0..8 {
            if fetch_get(&c, "/status/200").await.header("x-upstream") != "b" {
                return false;
            }
        }
        true
    })
    .await;
    let dump = config_dump(&proxy).await;
    assert_eq!(
        compile_id(&dump),
        table_before,
        "an endpoint-only update recompiled the route table"
    );
    let eps = xds_type(&dump, "Endpoints");
    assert!(eps["last_nack"].is_null(), "{eps}");

    // Add a cluster and a route to it, then remove both.
    let with_d = route_table("c").replace(
        "          - name: r\n",
        "          - name: to-d\n            match: { prefix: /d/ }\n            route: { cluster: cd }\n          - name: r\n",
    );
    cp.write("d.yaml", &cluster("cd", &[d.addr()]));
    cp.write("routes.yaml", &with_d);
    eventually("the new cluster to serve", || async {
        let c = Client::h1(proxy.addr).await.unwrap();
        fetch_get(&c, "/d/status/200").await.header("x-upstream") == "d"
    })
    .await;
    cp.write("routes.yaml", &route_table("c"));
    cp.remove("d.yaml");
    // The control plane may send the cluster's removal before the route
    // table without its route: wait for both.
    eventually("the removed cluster and its route to go", || async {
        let dump = config_dump(&proxy).await;
        let cluster_gone = dump["resources"]["Cluster"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "cd");
        cluster_gone && !dump["resources"]["RouteTable"].to_string().contains("to-d")
    })
    .await;
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(
        fetch_get(&c, "/d/status/200").await.header("x-upstream"),
        "b"
    );
}

/// State of the world sends endpoints as Envoy sends EDS: after the first
/// response, only the Endpoints that changed; the proxy keeps the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_endpoint_updates_carry_only_the_changed_endpoints() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let e = upstream("e", UpstreamProtocol::Http1).await;
    let endpoints = |cluster: &str, addr: SocketAddr| {
        format!("endpoints:\n  - cluster: {cluster}\n    endpoints:\n      - address: \"{addr}\"\n")
    };
    let routes = route_table("c").replace(
        "          - name: r\n",
        "          - name: to-e\n            match: { prefix: /e/ }\n            route: { cluster: ce }\n          - name: r\n",
    );
    let cp = ControlPlane::start(&[
        ("clusters.yaml", "clusters:\n  - name: c\n  - name: ce\n"),
        ("endpoints-c.yaml", &endpoints("c", a.addr())),
        ("endpoints-e.yaml", &endpoints("ce", e.addr())),
        ("routes.yaml", &routes),
    ])
    .await;
    let proxy = Corridor::start(&bootstrap(&cp, "sidecar-sotw", "")).await;
    assert!(wait_upstream(proxy.addr, "a", Duration::from_secs(5))
        .await
        .is_some());
    let sent = |nodes: &serde_json::Value| {
        nodes["nodes"][0]["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type_url"].as_str().unwrap().ends_with(".Endpoints"))
            .map(|t| (t["resources"].as_u64(), t["acked_version"].clone()))
    };
    let (count, _) = sent(&cp.nodes().await).expect("Endpoints subscribed");
    assert_eq!(count, Some(2), "the first response is complete");

    cp.write("endpoints-c.yaml", &endpoints("c", b.addr()));
    assert!(wait_upstream(proxy.addr, "b", Duration::from_secs(10))
        .await
        .is_some());
    eventually("the update to be ACKed", || async {
        let dump = config_dump(&proxy).await;
        let acked = xds_type(&dump, "Endpoints")["version_info"].clone();
        assert!(acked.as_str().is_some_and(|v| !v.is_empty()), "{dump}");
        sent(&cp.nodes().await) == Some((Some(1), acked))
    })
    .await;
    // The endpoints the response left out still serve.
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(
        fetch_get(&c, "/e/status/200").await.header("x-upstream"),
        "e"
    );
    let dump = config_dump(&proxy).await;
    let held: Vec<&str> = dump["resources"]["Endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["c", "ce"], "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_their_own_view_and_pushed_listeners_come_and_go() {
    let aws = upstream("aws", UpstreamProtocol::Http1).await;
    let oci = upstream("oci", UpstreamProtocol::Http1).await;
    let side = corridor_tests::proxy::free_addr();
    let cp = ControlPlane::start(&[
        ("clusters.yaml", "clusters:\n  - name: c\n"),
        ("routes.yaml", &route_table("c")),
        (
            "aws.yaml",
            &format!("nodes: {{ clouds: [aws] }}\nendpoints:\n  - cluster: c\n    endpoints: [{{ address: \"{}\" }}]\n", aws.addr()),
        ),
        (
            "oci.yaml",
            &format!("nodes: {{ clouds: [oci], roles: [ingress] }}\nendpoints:\n  - cluster: c\n    endpoints: [{{ address: \"{}\" }}]\n", oci.addr()),
        ),
    ])
    .await;
    let in_aws = Corridor::start(&bootstrap(
        &cp,
        "sidecar-aws",
        "  locality: { cloud: aws, region: eu-west-1 }\n  role: sidecar\n",
    ))
    .await;
    let in_oci = Corridor::start(&bootstrap(
        &cp,
        "ingress-oci",
        "  locality: { cloud: oci, region: us-ashburn-1 }\n  role: ingress\n",
    ))
    .await;
    assert!(wait_upstream(in_aws.addr, "aws", Duration::from_secs(5))
        .await
        .is_some());
    assert!(wait_upstream(in_oci.addr, "oci", Duration::from_secs(5))
        .await
        .is_some());

    // A listener pushed to the ingress only.
    cp.write(
        "side.yaml",
        &format!("nodes: {{ ids: [ingress-oci] }}\nlisteners:\n  - name: side\n    address: \"{side}\"\n    route_table: t\n"),
    );
    assert!(wait_upstream(side, "oci", Duration::from_secs(5))
        .await
        .is_some());
    let dump = config_dump(&in_aws).await;
    assert!(dump["resources"]["Listener"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["name"] != "side"));
    cp.remove("side.yaml");
    eventually("the pushed listener to stop accepting", || async {
        tokio::net::TcpStream::connect(side).await.is_err()
    })
    .await;
    let nodes = cp.nodes().await;
    assert_eq!(nodes["connected"], 2, "{nodes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_boots_from_its_persisted_configuration_without_a_control_plane() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let dir = tempfile::tempdir().unwrap();
    let persist = dir.path().join("pushed.pb");
    let mut cp = ControlPlane::start(&[
        ("clusters.yaml", &cluster("c", &[a.addr()])),
        ("routes.yaml", &route_table("c")),
    ])
    .await;
    let template = bootstrap(
        &cp,
        "sidecar-1",
        &format!("  persist_file: \"{}\"\n", persist.display()),
    );
    {
        let proxy = Corridor::start(&template).await;
        assert!(wait_upstream(proxy.addr, "a", Duration::from_secs(5))
            .await
            .is_some());
        eventually("the pushed configuration to be persisted", || async {
            persist.exists()
        })
        .await;
    }
    cp.kill();
    // No control plane: the proxy boots from the persisted resources and serves.
    let proxy = Corridor::start(&template).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.header("x-upstream"), "a");
    assert!(
        proxy
            .wait_for_log(
                "serving the persisted configuration",
                Duration::from_secs(5)
            )
            .await,
        "{}",
        proxy.logs()
    );
    let dump = config_dump(&proxy).await;
    assert_eq!(dump["xds"]["connected"], false);
    assert_eq!(dump["resources"]["RouteTable"][0]["origin"], "xds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_control_plane_ready_waits_for_the_initial_fetch_timeout() {
    let cp = ControlPlane::start(&[]).await;
    let url = cp.url();
    drop(cp);
    let dir = tempfile::tempdir().unwrap();
    let admin = corridor_tests::proxy::free_addr();
    let (mut child, logs) = corridor_tests::proxy::spawn(&[
        "run",
        "--xds",
        &url,
        "--node-id",
        "lonely",
        "--admin",
        &admin.to_string(),
        "--persist",
        dir.path().join("none.pb").to_str().unwrap(),
    ]);
    let start = Instant::now();
    let mut first_ready = None;
    while start.elapsed() < Duration::from_secs(25) {
        if let Ok((status, _)) = corridor_tests::proxy::admin_get(admin, "/ready").await {
            if status == 200 {
                first_ready = Some(start.elapsed());
                break;
            }
            assert_eq!(status, 503);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let logs = logs.lock().clone();
    let took = first_ready.unwrap_or_else(|| panic!("never ready:\n{logs}"));
    // The default initial_fetch_timeout is 15 s (as Envoy's).
    assert!(
        took >= Duration::from_secs(14),
        "ready after {took:?}:\n{logs}"
    );
    assert!(logs.contains("initial_fetch_timeout"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_of_a_pushed_listener_rotate_without_a_file() {
    let old_ca = TestPki::new("old");
    let new_ca = TestPki::new("new");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let install = |pki: &TestPki| {
        let leaf = pki.leaf(&["proxy.test"]);
        // Key first, then the certificate, each replaced atomically.
        for (path, data) in [(&key, leaf.key_pem.clone()), (&cert, leaf.chain_pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, data).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    };
    install(&old_ca);
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let listen = corridor_tests::proxy::free_addr();
    let cp = ControlPlane::start(&[
        ("clusters.yaml", &cluster("c", &[up.addr()])),
        ("routes.yaml", &route_table("c")),
        (
            "listener.yaml",
            &format!(
                "listeners:\n  - name: tls\n    address: \"{listen}\"\n    route_table: t\n    tls: {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
                cert.display(),
                key.display()
            ),
        ),
    ])
    .await;
    let admin = corridor_tests::proxy::free_addr();
    let (mut child, logs) = corridor_tests::proxy::spawn(&[
        "run",
        "--xds",
        &cp.url(),
        "--node-id",
        "tls-only",
        "--admin",
        &admin.to_string(),
    ]);
    let connect = |pki: &TestPki| Client::tls(listen, "proxy.test", pki.client_config(&[b"h2"]));
    eventually("the pushed TLS listener to serve", || async {
        match connect(&old_ca).await {
            Ok(c) => fetch_get(&c, "/status/200").await.status == 200,
            Err(_) => false,
        }
    })
    .await;
    install(&new_ca);
    eventually("the rotated certificate to be served", || async {
        connect(&new_ca).await.is_ok()
    })
    .await;
    assert!(connect(&old_ca).await.is_err());
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        logs.lock().contains("TLS files reloaded"),
        "{}",
        logs.lock()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_flags_survive_a_file_reload() {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let cp = ControlPlane::start(&[
        ("clusters.yaml", &cluster("c", &[a.addr()])),
        ("routes.yaml", &route_table("c")),
    ])
    .await;
    // The file has no `xds` section: the flags add it.
    let file = r#"
listeners: [{ name: main, address: "{{LISTEN}}", route_table: t }]
admin: { address: "{{ADMIN}}" }
runtime: { worker_threads: 2, drain_timeout: 5s }
"#;
    let url = cp.url();
    let proxy = Corridor::start_with_args(
        file,
        tempfile::tempdir().unwrap(),
        &["--xds", &url, "--node-id", "flags", "--cloud", "aws"],
    )
    .await;
    assert!(wait_upstream(proxy.addr, "a", Duration::from_secs(5))
        .await
        .is_some());
    assert_eq!(cp.nodes().await["nodes"][0]["metadata"]["cloud"], "aws");
    // A reload keeps the flags: the change applies, nothing needs a restart.
    proxy.write_config(&file.replace(
        "route_table: t }",
        "route_table: t, http: { max_request_headers_count: 50 } }",
    ));
    assert!(
        proxy
            .wait_for_log("configuration reloaded", Duration::from_secs(5))
            .await,
        "{}",
        proxy.logs()
    );
    assert!(!proxy.logs().contains("rejected"), "{}", proxy.logs());
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.header("x-upstream"), "a");
}
