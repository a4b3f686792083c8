//! The Kubernetes manifests of `docker/k8s/`, validated offline (no cluster can run
//! here): every document of `docker/k8s/*.yaml` and of the `corridor inject` goldens
//! (`tests/fixtures/inject/*.expected.yaml`) decoded into the `k8s-openapi` types with
//! unknown fields rejected ([`schema`]), plain scalars that Kubernetes' YAML 1.1 reader
//! would read differently rejected ([`yaml11`]), the pieces pointing at each other
//! (Services, ports, probes, the control-plane URL, the ConfigMap's resources;
//! [`topology`]), and the real `corridor` binary run with the manifests' own arguments:
//! the control plane serving the ConfigMap's files, the edge ingress and the injected
//! sidecar subscribed to it, a request crossing both ([`run`]).
//!
//! A separate test target from `e2e` so that the `k8s-openapi` types are compiled and
//! linked into this small binary only (`cargo test -p corridor-tests --test k8s`).
//! `UPDATE_GOLDEN=1` rewrites `docker/k8s/inference-workload.yaml` from
//! `corridor inject -f docker/k8s/inference-workload.source.yaml`.

mod run;
mod schema;
mod topology;
mod yaml11;

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

/// The repository's root directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the repository")
        .to_path_buf()
}

/// `docker/k8s/NAME`.
pub fn k8s_path(name: &str) -> PathBuf {
    repo().join("docker/k8s").join(name)
}

/// The files of `dir` whose names end with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(suffix)))
        .collect();
    files.sort();
    files
}

/// Every `docker/k8s/*.yaml`.
pub fn manifest_files() -> Vec<PathBuf> {
    files_ending(&repo().join("docker/k8s"), ".yaml")
}

/// Every `tests/fixtures/inject/*.expected.yaml` (what `corridor inject` writes).
pub fn golden_files() -> Vec<PathBuf> {
    files_ending(&repo().join("tests/fixtures/inject"), ".expected.yaml")
}

/// A file's text.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents of a YAML stream as JSON, numbered from 1 (empty documents are
/// counted but left out).
pub fn documents(path: &Path) -> Vec<(usize, Value)> {
    let text = read(path);
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let yaml = serde_yaml::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{}: document {}: {e}", path.display(), i + 1));
        if yaml.is_null() {
            continue;
        }
        let json = serde_json::to_value(&yaml)
            .unwrap_or_else(|e| panic!("{}: document {}: {e}", path.display(), i + 1));
        docs.push((i + 1, json));
    }
    docs
}

/// `kind/name` of a document.
pub fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The document `kind`/`name` of `docker/k8s/FILE`.
pub fn find(file: &str, kind: &str, name: &str) -> Value {
    documents(&k8s_path(file))
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("docker/k8s/{file} has no {kind}/{name}"))
}

/// Every document of every `docker/k8s/*.yaml` but the inject source (whose
/// injected form is `inference-workload.yaml`): what `kubectl apply` creates.
pub fn applied() -> Vec<Value> {
    manifest_files()
        .iter()
        .filter(|p| !p.to_str().is_some_and(|s| s.ends_with(".source.yaml")))
        .flat_map(|p| documents(p).into_iter().map(|(_, d)| d))
        .collect()
}

/// A workload's pod template spec.
pub fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// Container `name` of a workload's pod template.
pub fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    pod_spec(workload)["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{}: no container {name}", kind_name(workload)))
}

/// A container's `args` as strings.
pub fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("the container has args")
        .iter()
        .map(|a| a.as_str().expect("string args").to_string())
        .collect()
}

/// The value after `flag` in `args`.
pub fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    args.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

/// The port of `HOST:PORT`.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr}: not HOST:PORT"))
}

/// The number a container port reference (a number or a port name) stands for.
pub fn container_port(container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).expect("a port number");
    }
    container["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == *port))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("container {} has no port {port}", container["name"]))
}
