//! Interop: a control plane that is not Corridor's, a Python grpcio ADS server
//! built from Envoy's own protos (`xds-protos`, see `tests/interop/`), drives
//! the real proxy over both ADS variants and sees its ACKs, and its NACKs of
//! an undecodable resource and of a resource of the wrong type, while traffic
//! keeps flowing.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corridor_tests::{Client, Corridor, UpstreamProtocol};

use super::{fetch_get, upstream, wait_upstream};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

/// The interop venv's python, set up (idempotently) by the project's script,
/// once per test process: the tests run in parallel and would otherwise
/// create the same venv at the same time.
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(setup_python).clone()
}

fn setup_python() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/setup-python.sh"))
        .output()
        .expect("run scripts/setup-python.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/setup-python.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the script prints the python path")
            .trim(),
    )
}

/// The Python ADS server, killed on drop.
struct PyServer {
    child: Child,
    port: u16,
    control: PathBuf,
    events: PathBuf,
    _dir: tempfile::TempDir,
}

impl PyServer {
    fn start(control: &serde_json::Value) -> PyServer {
        let dir = tempfile::tempdir().unwrap();
        let (ctl, events) = (
            dir.path().join("control.json"),
            dir.path().join("events.jsonl"),
        );
        std::fs::write(&ctl, control.to_string()).unwrap();
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/interop/ads_server.py"))
            .args(["--port", "0", "--control"])
            .arg(&ctl)
            .arg("--log")
            .arg(&events)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ads_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("ads_server.py printed {line:?}"));
        PyServer {
            child,
            port,
            control: ctl,
            events,
            _dir: dir,
        }
    }

    fn set(&self, control: &serde_json::Value) {
        let tmp = self.control.with_extension("tmp");
        std::fs::write(&tmp, control.to_string()).unwrap();
        std::fs::rename(&tmp, &self.control).unwrap();
    }

    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for an event matching `pred`.
    async fn wait(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {what} event in:\n{:#?}", self.events());
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn control(version: &str, upstream: SocketAddr, bad: bool) -> serde_json::Value {
    let mut resources = vec![
        serde_json::json!({"type": "Cluster", "json": {"name": "c", "endpoints": [{"address": upstream.to_string()}]}}),
        serde_json::json!({"type": "RouteTable", "json": {"name": "t", "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]}}),
    ];
    if bad {
        resources.push(serde_json::json!({"type": "Cluster", "name": "bad", "raw_hex": "ffff"}));
    }
    serde_json::json!({"version": version, "resources": resources})
}

async fn served_by(addr: SocketAddr, want: &str) -> bool {
    wait_upstream(addr, want, Duration::from_secs(10))
        .await
        .is_some()
}

async fn drive(delta: bool) {
    let a = upstream("a", UpstreamProtocol::Http1).await;
    let b = upstream("b", UpstreamProtocol::Http1).await;
    let server = PyServer::start(&control("1", a.addr(), false));
    let template = format!(
        r#"
listeners: [{{ name: main, address: "{{{{LISTEN}}}}", route_table: t }}]
admin: {{ address: "{{{{ADMIN}}}}" }}
runtime: {{ worker_threads: 2, drain_timeout: 5s }}
xds: {{ server: "http://127.0.0.1:{}", node_id: interop, delta: {delta} }}
"#,
        server.port
    );
    let proxy = Corridor::start(&template).await;
    assert!(served_by(proxy.addr, "a").await, "{}", proxy.logs());
    let variant = if delta { "delta" } else { "sotw" };
    for kind in ["Cluster", "RouteTable", "Endpoints", "Listener"] {
        server
            .wait(&format!("{kind} ack"), |e| {
                e["event"] == "ack"
                    && e["variant"] == variant
                    && e["node"] == "interop"
                    && e["type_url"].as_str().unwrap_or("").ends_with(kind)
            })
            .await;
    }

    // An undecodable resource is NACKed with its name, and nothing changes.
    server.set(&control("2", a.addr(), true));
    let nack = server
        .wait("Cluster nack", |e| {
            e["event"] == "nack" && e["response_version"] == "2"
        })
        .await;
    let error = nack["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot decode a Cluster"), "{nack}");
    if delta {
        assert!(error.contains("Cluster(bad)"), "{nack}");
    }
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.header("x-upstream"), "a");

    // A Listener inside a Cluster response is NACKed by the client engine.
    let mut wrong = control("2w", a.addr(), false);
    wrong["resources"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "type": "Cluster", "name": "misfiled",
            "type_url": "type.googleapis.com/corridor.v1.Listener", "raw_hex": ""
        }));
    server.set(&wrong);
    let nack = server
        .wait("wrong-type nack", |e| {
            e["event"] == "nack" && e["response_version"] == "2w"
        })
        .await;
    assert!(
        nack["error"]
            .as_str()
            .unwrap_or_default()
            .contains("has type \"type.googleapis.com/corridor.v1.Listener\" in a response of type type.googleapis.com/corridor.v1.Cluster"),
        "{nack}"
    );
    assert_eq!(fetch_get(&c, "/status/200").await.header("x-upstream"), "a");

    // Fixed: ACKed, and traffic follows.
    server.set(&control("3", b.addr(), false));
    assert!(served_by(proxy.addr, "b").await, "{}", proxy.logs());
    server
        .wait("ack of version 3", |e| {
            e["event"] == "ack"
                && e["response_version"] == "3"
                && e["type_url"].as_str().unwrap_or("").ends_with("Cluster")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_ads_server_drives_corridor_state_of_the_world() {
    drive(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_ads_server_drives_corridor_delta() {
    drive(true).await;
}
