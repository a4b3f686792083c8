//! The manifests run the real binary: the control plane starts with its Deployment's
//! arguments and serves the ConfigMap's resource files (laid out as the kubelet mounts
//! a ConfigMap: symlinks through `..data`); the edge ingress and the injected sidecar
//! start with theirs (Kubernetes' `$(VAR)` expansion applied with the downward-API
//! values of a pod) and become ready on what it pushes; a request to the edge's
//! listener crosses the edge and the sidecar to a model server. Only what must move
//! is moved: listen and admin addresses to free 127.0.0.1 ports, file paths to a temp
//! dir, the control-plane URL to the local one, and in the resource files the pushed
//! listener and endpoint addresses (the Service's clusterIP becomes the sidecar's
//! listener, the model server's port a test upstream).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corridor_tests::proxy::{admin_get, free_addrs, spawn};
use corridor_tests::{Client, Upstream, UpstreamOptions, UpstreamProtocol};
use parking_lot::Mutex;
use serde_json::Value;

use super::topology::{config_map_files, resource_file_for};
use super::{args, container, find};

/// How long a process may take to answer 200 on `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The processes a test started: killed when dropped (also when the test fails,
/// then with their logs printed).
#[derive(Default)]
struct Procs(Vec<(String, Child, Arc<Mutex<String>>)>);

impl Procs {
    /// Starts `corridor ARGS` as `name`.
    fn spawn(&mut self, name: &str, argv: &[String]) {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (child, logs) = spawn(&argv);
        self.0.push((name.to_string(), child, logs));
    }

    /// Everything every process printed, by name.
    fn logs(&self) -> String {
        self.0
            .iter()
            .map(|(n, _, l)| format!("---- {n} ----\n{}", l.lock()))
            .collect()
    }

    /// Waits until `admin` answers 200 on `/ready`; fails when a process exits first.
    async fn wait_ready(&mut self, name: &str, admin: SocketAddr) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            let exited = self
                .0
                .iter_mut()
                .find_map(|(n, child, _)| Some((n.clone(), child.try_wait().ok()??)));
            if let Some((n, status)) = exited {
                panic!(
                    "{n} exited ({status}) while {name} started:\n{}",
                    self.logs()
                );
            }
            match admin_get(admin, "/ready").await {
                Ok((200, _)) => return,
                Ok((status, body)) => last = format!("{status} {body}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{name} not ready after {READY_TIMEOUT:?} ({last}):\n{}",
            self.logs()
        );
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// `container`'s args as Kubernetes runs them in a pod of `workload`: `$(VAR)`
/// expanded from its env (downward API: a made-up pod name, the workload's namespace,
/// a node name), then each value after a flag of `moves` replaced. Every argument that
/// binds, reads a file or names a server must be moved.
fn local_args(workload: &Value, container: &Value, moves: &[(&str, String)]) -> Vec<String> {
    let name = workload["metadata"]["name"].as_str().unwrap_or("pod");
    let pod = format!("{name}-7c9d8f6b5-q2x4z");
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod.clone(),
            Some("metadata.namespace") => workload["metadata"]["namespace"]
                .as_str()
                .expect("a namespace")
                .to_string(),
            Some("spec.nodeName") => "node-a".to_string(),
            Some(other) => panic!("downward API field {other} not handled here"),
            None => e["value"].as_str().unwrap_or("").to_string(),
        };
        let n = e["name"].as_str().expect("env name").to_string();
        env.push((n, value));
    }
    let mut out = args(container);
    for a in &mut out {
        for (n, v) in &env {
            *a = a.replace(&format!("$({n})"), v);
        }
        assert!(
            !a.contains("$("),
            "{a}: a variable Kubernetes would not expand"
        );
    }
    for (flag, _) in moves {
        assert!(out.iter().any(|a| a == flag), "no {flag} in {out:?}");
    }
    for i in 1..out.len() {
        let outside = out[i].starts_with('/') || out[i].contains(':');
        match moves.iter().find(|(f, _)| *f == out[i - 1]) {
            Some((_, v)) => out[i] = v.clone(),
            None => assert!(
                !outside,
                "{} {}: not moved to a local one",
                out[i - 1],
                out[i]
            ),
        }
    }
    out
}

/// Writes the ConfigMap's files into `dir` as the kubelet lays out a ConfigMap
/// volume (`..<stamp>/FILE`, `..data` → `..<stamp>`, `FILE` → `..data/FILE`), with the
/// one listener and the one endpoint of the file served to each role moved as
/// `addresses(role)` says (listener, endpoint).
fn write_config_map(dir: &Path, addresses: impl Fn(&str) -> (SocketAddr, SocketAddr)) {
    let stamp = dir.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&stamp).expect("create the ConfigMap dir");
    std::os::unix::fs::symlink(stamp.file_name().expect("name"), dir.join("..data"))
        .expect("symlink ..data");
    let files = config_map_files();
    let mut moved = 0;
    for role in ["ingress", "sidecar"] {
        let (name, mut file) = resource_file_for(role);
        let (listen, endpoint) = addresses(role);
        let listeners = file["listeners"].as_sequence_mut().expect("listeners");
        assert_eq!(listeners.len(), 1, "{name}: one listener");
        listeners[0]["address"] = listen.to_string().into();
        let clusters = file["clusters"].as_sequence_mut().expect("clusters");
        assert_eq!(clusters.len(), 1, "{name}: one cluster");
        let eps = clusters[0]["endpoints"]
            .as_sequence_mut()
            .expect("endpoints");
        assert_eq!(eps.len(), 1, "{name}: one endpoint");
        eps[0]["address"] = endpoint.to_string().into();
        let text = serde_yaml::to_string(&file).expect("YAML");
        std::fs::write(stamp.join(&name), text).expect("write a resource file");
        moved += 1;
    }
    assert_eq!(moved, files.len(), "a ConfigMap file served to no role");
    for name in files.keys() {
        std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name))
            .expect("symlink a file");
    }
}

/// Control plane, edge ingress and sidecar run with the manifests' own arguments, and a
/// request goes through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_run_corridor_and_a_request_crosses_the_edge_and_the_sidecar() {
    let model = Upstream::start(UpstreamOptions::new(
        "model-server",
        UpstreamProtocol::Http1,
    ))
    .await;
    let [cp_listen, cp_admin, edge_listen, edge_admin, side_listen, side_admin] = free_addrs();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("resources");
    std::fs::create_dir(&dir).expect("create the resource dir");
    write_config_map(&dir, |role| match role {
        // The edge's endpoint is the model-server Service, i.e. the sidecars' listener.
        "ingress" => (edge_listen, side_listen),
        _ => (side_listen, model.addr()),
    });
    let mut procs = Procs::default();

    let cp = find("control-plane.yaml", "Deployment", "corridor-control-plane");
    let cp_args = local_args(
        &cp,
        container(&cp, "control-plane"),
        &[
            ("--dir", dir.display().to_string()),
            ("--listen", cp_listen.to_string()),
            ("--admin", cp_admin.to_string()),
        ],
    );
    assert_eq!(cp_args[0], "control-plane");
    procs.spawn("control plane", &cp_args);
    procs.wait_ready("control plane", cp_admin).await;
    let (status, files) = admin_get(cp_admin, "/files").await.expect("GET /files");
    assert_eq!(status, 200, "{files}");
    let files: Value = serde_json::from_str(&files).expect("JSON");
    let files = files["files"].as_array().expect("files");
    assert_eq!(files.len(), config_map_files().len(), "{files:?}");
    for f in files {
        assert!(f["error"].is_null(), "{f}");
    }

    let control_plane = format!("http://{cp_listen}");
    let edge = find("edge-ingress.yaml", "Deployment", "corridor-edge-ingress");
    let workload = find("inference-workload.yaml", "Deployment", "model-server");
    let mut node_ids = Vec::new();
    for (name, w, c, admin) in [
        ("edge ingress", &edge, "edge-ingress", edge_admin),
        ("sidecar", &workload, "corridor-proxy", side_admin),
    ] {
        let argv = local_args(
            w,
            container(w, c),
            &[
                ("--xds", control_plane.clone()),
                ("--admin", admin.to_string()),
                (
                    "--persist",
                    tmp.path().join(format!("{c}.pb")).display().to_string(),
                ),
            ],
        );
        assert_eq!(argv[0], "run");
        node_ids.push(super::flag(&argv, "--node-id").to_string());
        procs.spawn(name, &argv);
    }
    procs.wait_ready("edge ingress", edge_admin).await;
    procs.wait_ready("sidecar", side_admin).await;
    assert_eq!(
        node_ids,
        [
            "corridor-edge-ingress-7c9d8f6b5-q2x4z.corridor-system",
            "model-server-7c9d8f6b5-q2x4z.inference"
        ]
    );
    let (_, nodes) = admin_get(cp_admin, "/nodes").await.expect("GET /nodes");
    for id in &node_ids {
        assert!(nodes.contains(id.as_str()), "{id} not in /nodes:\n{nodes}");
    }

    // Client → edge (route /v1/) → the sidecar's listener → the model server.
    let client = Client::h1(edge_listen).await.expect("connect to the edge");
    let resp = client.get("/v1/models").await.expect("GET /v1/models");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("x-upstream"), "model-server", "{:?}", resp.headers());
    assert_eq!(header("x-corridor-error"), "", "{:?}", resp.headers());
    let log = model.request_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].path_and_query, "/v1/models");
    // Outside /v1/ the edge answers itself: its routes are the pushed ones.
    let resp = client.get("/admin").await.expect("GET /admin");
    assert_eq!(resp.status(), 404);
    assert!(
        resp.headers().contains_key("x-corridor-error"),
        "{:?}",
        resp.headers()
    );
    assert_eq!(model.request_log().len(), 1);
}
