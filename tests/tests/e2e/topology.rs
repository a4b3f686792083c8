//! `docker/topology.sh`, the three-cloud topology, run as a user runs it: the script starts
//! the control plane, the edge ingress, three sidecars and the model servers with the tested
//! binary (`CORRIDOR_BIN`), on free 127.0.0.1 ports. Requests to the edge reach the cloud
//! their model is routed to, through that cloud's sidecar; EU-class requests reach only the
//! EU cloud and fail closed (451) where no EU endpoint serves the model; the sidecars speak
//! only mTLS and admit only the edge's SPIFFE identity. SIGTERM to the script's process group
//! stops every process, frees every port and removes the work dir; a failing test kills the
//! group (the guard's drop).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{fetch, Reply};
use corridor_tests::proxy::{admin_get, corridor_binary, free_addr, metric_sum, spawn_captured};
use corridor_tests::Client;

/// How long the script may take to print that it is ready (a debug build on a busy
/// 2-core machine; it takes about 2 s on an idle one).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The running script, its process group killed on drop.
struct Topology {
    child: Child,
    pgid: i32,
    output: Arc<Mutex<String>>,
}

impl Topology {
    fn start(edge_port: u16) -> Topology {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/topology.sh");
        let (child, output) = spawn_captured(
            Command::new("bash")
                .arg(&script)
                .env("CORRIDOR_BIN", corridor_binary())
                .env("TOPOLOGY_EDGE_PORT", edge_port.to_string())
                .env("TOPOLOGY_READY_TIMEOUT", "100")
                .env_remove("TOPOLOGY_BASE_PORT")
                .env_remove("TOPOLOGY_EXIT_AFTER_READY")
                .process_group(0),
        )
        .unwrap_or_else(|e| panic!("spawn {}: {e}", script.display()));
        let pgid = i32::try_from(child.id()).expect("pid fits i32");
        Topology {
            child,
            pgid,
            output,
        }
    }

    fn output(&self) -> String {
        self.output.lock().clone()
    }

    /// Waits for `topology: ready`; panics with the output if the script exits or times out.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        while !self.output().contains("\ntopology: ready\n") {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "topology.sh exited ({status}) before it was ready:\n{}",
                    self.output()
                );
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "topology.sh not ready after {READY_TIMEOUT:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The work dir it printed.
    fn work_dir(&self) -> PathBuf {
        let out = self.output();
        let line = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("work dir"))
            .unwrap_or_else(|| panic!("no work dir printed:\n{out}"));
        PathBuf::from(line.split_whitespace().next().expect("a path"))
    }

    /// Sends `sig` to the script's whole process group (`kill -SIG -- -PGID`).
    fn signal_group(&self, sig: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg("--")
            .arg(format!("-{}", self.pgid))
            .stderr(Stdio::null())
            .status();
    }

    /// Waits for the script itself to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // A test that failed midway: let the script tear down (it removes its temp dir),
        // then make sure nothing of the group survives.
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal_group(libc::SIGTERM);
            let _ = self.wait_exit(Duration::from_secs(10));
        }
        if !group_members(self.pgid).is_empty() {
            self.signal_group(libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids whose process group is `pgid` (from /proc/<pid>/stat; zombies included).
fn group_members(pgid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            pids.push(pid);
        }
    }
    pids
}

/// `KEY=ADDR` lines of the script's ports.env.
fn ports(work: &Path) -> BTreeMap<String, SocketAddr> {
    let text = std::fs::read_to_string(work.join("ports.env"))
        .unwrap_or_else(|e| panic!("reading {}/ports.env: {e}", work.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("an address")))
        .collect()
}

/// POST a chat completion for `model` to the edge, with `extra` headers.
async fn chat(edge: SocketAddr, model: &str, extra: &[(&str, &str)]) -> Reply {
    let c = Client::h1(edge).await.expect("connect to the edge");
    let mut req = http::Request::post("/v1/chat/completions").header("x-model", model);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    fetch(
        &c,
        req.body(corridor_tests::client::full(body.into_bytes()))
            .unwrap(),
    )
    .await
}

/// Which cloud served a 200 (`cloud/region` from the body, checked against the
/// model server's header and the sidecar's SPIFFE ID).
fn served_by(r: &Reply, model: &str) -> String {
    assert_eq!(
        r.status,
        200,
        "{model}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let body = r.json();
    let served = body["served_by"].as_str().expect("served_by").to_string();
    let cloud = served.split('/').next().unwrap_or_default();
    assert_eq!(r.header("x-upstream-cloud"), cloud, "{model}: {body}");
    assert_eq!(
        r.header("x-corridor-sidecar"),
        format!("spiffe://{cloud}.corridor.test/corridor/sidecar"),
        "{model} passed through its cloud's sidecar"
    );
    assert_eq!(body["model"], model);
    served
}

/// A rustls client trusting `ca` and presenting `svid` (leaf + CA) with `key`, if given.
fn client_tls(pki: &Path, ca: &str, svid: Option<&str>) -> Arc<rustls::ClientConfig> {
    let pem = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem(pki.join("bundles").join(format!("{ca}.pem")))[..])
    {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(corridor_tests::pki::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match svid {
        None => builder.with_no_client_auth(),
        Some(who) => {
            let chain = rustls_pemfile::certs(&mut &pem(pki.join(who).join("svid.pem"))[..])
                .collect::<Result<Vec<_>, _>>()
                .expect("SVID PEM");
            let key = rustls_pemfile::private_key(&mut &pem(pki.join(who).join("svid.key"))[..])
                .expect("key PEM")
                .expect("a key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("SVID and key match")
        }
    };
    Arc::new(config)
}

/// GET /v1/models on the Azure sidecar over TLS as `svid`: the reply, or the error.
async fn sidecar_get(sidecar: SocketAddr, pki: &Path, svid: Option<&str>) -> Result<Reply, String> {
    let c = Client::tls(
        sidecar,
        "sidecar.azure.corridor.test",
        client_tls(pki, "azure", svid),
    )
    .await
    .map_err(|e| format!("connect: {e:#}"))?;
    let resp = c
        .get("/v1/models")
        .await
        .map_err(|e| format!("request: {e:#}"))?;
    let (parts, body) = resp.into_parts();
    let body = corridor_tests::client::read_all(body)
        .await
        .map_err(|e| format!("body: {e:#}"))?;
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        version: parts.version,
        body,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_cloud_topology_routes_by_model_keeps_eu_data_in_the_eu_and_tears_down() {
    // Six processes and a PKI start in a burst: keep it away from the timing tests.
    let _serial = crate::exclusive().await;
    let edge_port = free_addr().port();
    let mut topo = Topology::start(edge_port);
    tokio::task::block_in_place(|| topo.wait_ready());
    let work = topo.work_dir();
    let ports = ports(&work);
    let edge = ports["EDGE"];
    assert_eq!(edge.port(), edge_port, "TOPOLOGY_EDGE_PORT is honoured");
    assert_eq!(ports.len(), 15, "{ports:?}");
    let out = topo.output();
    for want in [
        "curl -s http://",
        "-H 'x-data-class: pii'",
        "451 residency_denied",
        "spiffe://azure.corridor.test/corridor/sidecar",
    ] {
        assert!(out.contains(want), "the banner lacks {want:?}:\n{out}");
    }
    // The script, the model servers, the control plane, the edge and three sidecars.
    let members = group_members(topo.pgid);
    assert!(members.len() >= 7, "{members:?}\n{out}");

    // Each model family reaches its cloud, through that cloud's sidecar.
    for (model, cloud) in [
        ("llama-3-70b", "oci/us-ashburn-1"),
        ("claude-3-5-sonnet", "aws/us-east-1"),
        ("mistral-large", "azure/westeurope"),
        ("phi-3", "azure/westeurope"),
    ] {
        for _ in 0..3 {
            assert_eq!(served_by(&chat(edge, model, &[]).await, model), cloud);
        }
    }
    // gpt-* is split between AWS (US) and Azure (EU): both serve it (a 50/50 draw;
    // 24 draws all on one side has probability 2^-23).
    let mut gpt = BTreeSet::new();
    for _ in 0..24 {
        gpt.insert(served_by(&chat(edge, "gpt-4o", &[]).await, "gpt-4o"));
    }
    assert_eq!(
        gpt,
        BTreeSet::from(["aws/us-east-1".to_string(), "azure/westeurope".to_string()])
    );

    // EU data (x-data-class: pii, trusted from 127.0.0.1) only ever reaches the EU.
    const PII: &[(&str, &str)] = &[("x-data-class", "pii")];
    for _ in 0..20 {
        let r = chat(edge, "gpt-4o", PII).await;
        assert_eq!(served_by(&r, "gpt-4o"), "azure/westeurope");
    }
    for _ in 0..3 {
        let r = chat(edge, "mistral-large", PII).await;
        assert_eq!(served_by(&r, "mistral-large"), "azure/westeurope");
    }
    // ... and fails closed where no EU endpoint serves the model: 451, nothing forwarded.
    for (model, cluster) in [
        ("llama-3-70b", "models-oci"),
        ("claude-3-5-sonnet", "models-aws"),
    ] {
        let r = chat(edge, model, PII).await;
        assert_eq!(
            r.status,
            451,
            "{model}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("x-corridor-error"), "residency_denied");
        assert_eq!(r.header("x-upstream-cloud"), "", "nothing was forwarded");
        let body = r.json();
        assert_eq!(body["error"]["type"], "residency_denied", "{body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        for want in ["eu-data", "pii", "EU", cluster] {
            assert!(msg.contains(want), "{model}: {msg}");
        }
    }
    let (status, metrics) = admin_get(ports["EDGE_ADMIN"], "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        metric_sum(
            &metrics,
            "corridor_residency_denied_total",
            &[("policy", "eu-data"), ("data_class", "pii")]
        ),
        2.0,
        "{metrics}"
    );

    // The sidecars: mTLS only, and only the edge's SPIFFE identity. The edge's own SVID is
    // served (what the edge presents on every hop above) ...
    let sidecar = ports["AZURE_SIDECAR"];
    let pki = work.join("pki");
    let r = sidecar_get(sidecar, &pki, Some("edge")).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["served_by"], "azure/westeurope");
    // ... another identity of the same trust domain is authenticated and refused (403) ...
    let r = sidecar_get(sidecar, &pki, Some("control-plane"))
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["error"]["type"], "forbidden", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spiffe://oci.corridor.test/corridor/control-plane"),
        "{body}"
    );
    // ... a valid SVID of an untrusted domain, no certificate, and plain text never get an answer.
    for svid in [Some("aws-sidecar"), None] {
        let r = sidecar_get(sidecar, &pki, svid).await;
        assert!(
            r.is_err(),
            "{svid:?} was answered: {}",
            r.map(|r| r.status).unwrap()
        );
    }
    assert!(
        super::try_get(sidecar, "/v1/models").await.is_none(),
        "a plain-text request to the sidecar was answered"
    );

    // SIGTERM to the process group: everything stops, ports free, work dir gone.
    let stop = Instant::now();
    topo.signal_group(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| topo.wait_exit(Duration::from_secs(20)))
        .unwrap_or_else(|| panic!("topology.sh still running 20 s after SIGTERM"));
    assert_eq!(status.code(), Some(143), "{}", topo.output());
    let took = stop.elapsed();
    let left = group_members(topo.pgid);
    assert!(left.is_empty(), "processes left: {left:?}");
    for (name, addr) in &ports {
        std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("{name} {addr} still bound after teardown: {e}"));
    }
    assert!(!work.exists(), "{} was not removed", work.display());
    assert!(
        !topo.output().contains("did not stop on SIGTERM"),
        "{}",
        topo.output()
    );
    eprintln!("topology: torn down in {took:?}");
}
