//! Offline schema validation: each document is decoded into the `k8s-openapi` type its
//! `apiVersion` and `kind` name (Kubernetes 1.37 API, the crate's `v1_37` feature) and
//! serialized back; `k8s-openapi` ignores unknown fields when decoding, so any field of
//! the document that did not survive the round trip is one Kubernetes does not know
//! (a typo, a wrong indentation level) and fails, named by file, document, kind/name
//! and field path. Wrong types fail in the decoding; unknown kinds fail too. `kind:
//! List` (as `kubectl get -o yaml` writes) is checked item by item.
//!
//! A key whose value is null counts as absent, as it does for Kubernetes
//! (`creationTimestamp: null` in `kubectl get -o yaml` output).

use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
use k8s_openapi::api::{networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// Decodes `doc` as a `T` and serializes it back.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

/// `doc` through the `k8s-openapi` type of its `apiVersion` and `kind`.
fn round_trip(api: &str, kind: &str, doc: &Value) -> Result<Value, String> {
    match (api, kind) {
        ("v1", "Namespace") => typed::<core::Namespace>(doc),
        ("v1", "ServiceAccount") => typed::<core::ServiceAccount>(doc),
        ("v1", "ConfigMap") => typed::<core::ConfigMap>(doc),
        ("v1", "Secret") => typed::<core::Secret>(doc),
        ("v1", "Service") => typed::<core::Service>(doc),
        ("v1", "Pod") => typed::<core::Pod>(doc),
        ("v1", "ReplicationController") => typed::<core::ReplicationController>(doc),
        ("apps/v1", "Deployment") => typed::<apps::Deployment>(doc),
        ("apps/v1", "StatefulSet") => typed::<apps::StatefulSet>(doc),
        ("apps/v1", "DaemonSet") => typed::<apps::DaemonSet>(doc),
        ("apps/v1", "ReplicaSet") => typed::<apps::ReplicaSet>(doc),
        ("batch/v1", "Job") => typed::<batch::Job>(doc),
        ("batch/v1", "CronJob") => typed::<batch::CronJob>(doc),
        ("networking.k8s.io/v1", "NetworkPolicy") => typed::<networking::NetworkPolicy>(doc),
        ("policy/v1", "PodDisruptionBudget") => typed::<policy::PodDisruptionBudget>(doc),
        ("rbac.authorization.k8s.io/v1", "Role") => typed::<rbac::Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => typed::<rbac::RoleBinding>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => typed::<rbac::ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            typed::<rbac::ClusterRoleBinding>(doc)
        }
        _ => Err(format!(
            "unknown kind: apiVersion {api:?}, kind {kind:?} is not a type this test decodes"
        )),
    }
}

/// `base.key` (`key` at the top), or `base["key"]` for a key that is not a plain
/// word, such as a label or a resource name (`limits["nvidia.com/gpu"]`).
fn field(base: &str, key: &str) -> String {
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("{base}[{key:?}]")
    } else if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// Adds to `out` every field of `input` that is missing from `output` (the typed
/// round trip) or came back different, with its path under `at`.
fn diff(input: &Value, output: &Value, at: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                match o.get(k) {
                    Some(w) => diff(v, w, &field(at, k), out),
                    None => out.push(format!("{}: unknown field", field(at, k))),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) if i.len() == o.len() => {
            for (n, (v, w)) in i.iter().zip(o).enumerate() {
                diff(v, w, &format!("{at}[{n}]"), out);
            }
        }
        // Kubernetes reads a number as a quantity (`nvidia.com/gpu: 1`), as k8s-openapi does.
        (Value::Number(n), Value::String(q)) if n.to_string() == *q => {}
        _ if input != output => out.push(format!("{at}: {input} came back as {output}")),
        _ => {}
    }
}

/// The problems of one document (or List item) at `at`, each naming its kind/name.
fn check(doc: &Value, at: &str, out: &mut Vec<String>) {
    let api = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    let who = format!(
        "{}{kind}/{}",
        if at.is_empty() {
            String::new()
        } else {
            format!("{at} ")
        },
        doc["metadata"]["name"].as_str().unwrap_or("?")
    );
    if (api, kind) == ("v1", "List") {
        let Some(fields) = doc.as_object() else {
            out.push(format!("{who}: not a mapping"));
            return;
        };
        for (k, v) in fields {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => match typed::<ListMeta>(v) {
                    Ok(back) => diff(v, &back, &field(at, "metadata"), out),
                    Err(e) => out.push(format!("{who}: metadata: {e}")),
                },
                "items" => {
                    for (n, item) in v.as_array().into_iter().flatten().enumerate() {
                        let item_at = if at.is_empty() {
                            format!("items[{n}]")
                        } else {
                            format!("{at}.items[{n}]")
                        };
                        check(item, &item_at, out);
                    }
                }
                _ => out.push(format!("{who}: {}: unknown field", field(at, k))),
            }
        }
        return;
    }
    let mut found = Vec::new();
    match round_trip(api, kind, doc) {
        Ok(back) => diff(doc, &back, "", &mut found),
        Err(e) => found.push(e),
    }
    out.extend(found.into_iter().map(|p| format!("{who}: {p}")));
}

/// Every problem of every document of `path`, sorted by document then text:
/// `FILE: document N (KIND/NAME: ...)`.
pub fn problems(path: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for (n, doc) in super::documents(path) {
        let mut found = Vec::new();
        check(&doc, "", &mut found);
        found.sort();
        out.extend(
            found
                .into_iter()
                .map(|p| format!("{}: document {n} ({p})", path.display())),
        );
    }
    out
}

/// Every document of `docker/k8s/` and of the inject goldens is a valid Kubernetes object.
#[test]
fn every_manifest_and_inject_golden_decodes_into_the_kubernetes_types_with_no_unknown_field() {
    let manifests = super::manifest_files();
    let names: Vec<String> = manifests
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect();
    for want in [
        "control-plane.yaml",
        "edge-ingress.yaml",
        "inference-workload.source.yaml",
        "inference-workload.yaml",
        "network-policy.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "docker/k8s/{want} is missing: {names:?}"
        );
    }
    let goldens = super::golden_files();
    assert!(goldens.len() >= 8, "the inject goldens: {goldens:?}");
    let mut all = Vec::new();
    let mut documents = 0;
    for path in manifests.iter().chain(&goldens) {
        documents += super::documents(path).len();
        all.extend(problems(path));
    }
    assert!(documents >= 30, "only {documents} documents decoded");
    assert!(
        all.is_empty(),
        "not valid Kubernetes 1.37 objects:\n{}",
        all.join("\n")
    );
}

/// Writes `text` to a temp file and returns its problems, the path replaced by `X`.
fn problems_of(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.yaml");
    std::fs::write(&path, text).expect("write");
    problems(&path)
        .into_iter()
        .map(|p| p.replace(&path.display().to_string(), "X"))
        .collect()
}

/// The checker itself finds what it is for: misspelt and misplaced fields (nested,
/// in lists, in a List's items), a wrong type, an unknown kind.
#[test]
fn the_checker_rejects_unknown_fields_wrong_types_and_unknown_kinds() {
    let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labells: {app: web}}
spec:
  replica: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx
          imagePullPolicyy: Always
          securityContext: {runAsNonRoot: true}
        - name: side
          image: corridor
          resources: {requests: {cpu: 100m, nvidia.com/gpu: 1}, limit: {cpu: 1}}
          env: [{name: A, value: x, valueFrom: {fieldRef: {fieldPath: a}, secretKeyRef: {name: s, key: k, optionl: true}}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: web}]}
---
apiVersion: example.com/v1
kind: Frobnicator
metadata: {name: f}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: c}
    date: {a: b}
";
    assert_eq!(
        problems_of(text),
        [
            "X: document 1 (Deployment/web: metadata.labells: unknown field)",
            "X: document 1 (Deployment/web: spec.replica: unknown field)",
            "X: document 1 (Deployment/web: spec.template.spec.containers[0].imagePullPolicyy: unknown field)",
            "X: document 1 (Deployment/web: spec.template.spec.containers[1].env[0].valueFrom.secretKeyRef.optionl: unknown field)",
            "X: document 1 (Deployment/web: spec.template.spec.containers[1].resources.limit: unknown field)",
            "X: document 2 (Service/web: invalid type: string \"web\", expected i32)",
            "X: document 3 (Frobnicator/f: unknown kind: apiVersion \"example.com/v1\", kind \"Frobnicator\" is not a type this test decodes)",
            "X: document 4 (items[0] ConfigMap/c: date: unknown field)",
        ]
    );
    // Valid documents, with nulls (absent to Kubernetes), pass.
    let ok = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, creationTimestamp: null}\ndata: {a: \"1\"}\n";
    assert_eq!(problems_of(ok), Vec::<String>::new());
}
