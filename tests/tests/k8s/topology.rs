//! The pieces of `docker/k8s/` point at each other: the control-plane URL that the
//! edge ingress and the injected sidecar use is the control plane's Service; every
//! Service selects pods and targets a port they declare; the ports the control plane
//! pushes (the ConfigMap's resource files) are the ones the Services send to; probes
//! hit the admin listeners; grace periods outlast the drain; every Corridor container
//! has the least-privilege security context; no Kubernetes API access anywhere. Also:
//! the ConfigMap's resource files pass `corridor validate --resources`, and
//! `inference-workload.yaml` is exactly `corridor inject -f inference-workload.source.yaml`.

use std::collections::BTreeMap;
use std::process::Command;

use corridor_tests::proxy::{corridor_binary, run_cli};
use serde_json::{json, Value};

use super::{args, container, container_port, find, flag, pod_spec, port_of};

/// The default `--control-plane` of `corridor inject`.
pub const CONTROL_PLANE_URL: &str = "http://corridor-control-plane.corridor-system:18000";

/// Corridor's default `runtime.drain_timeout` in seconds (no manifest sets another).
const DRAIN_TIMEOUT_SECS: u64 = 10;

/// The control plane's ConfigMap: resource file name → text.
pub fn config_map_files() -> BTreeMap<String, String> {
    let cm = find(
        "control-plane.yaml",
        "ConfigMap",
        "corridor-control-plane-resources",
    );
    let data = cm["data"].as_object().expect("the ConfigMap has data");
    assert!(!data.is_empty(), "the ConfigMap has no file");
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_string()))
        .collect()
}

/// The resource file of the ConfigMap served to nodes of `role`, parsed.
pub fn resource_file_for(role: &str) -> (String, serde_yaml::Value) {
    let mut found = config_map_files().into_iter().filter_map(|(name, text)| {
        let v: serde_yaml::Value = serde_yaml::from_str(&text).expect("resource file YAML");
        let roles = v["nodes"]["roles"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        roles
            .iter()
            .any(|r| r.as_str() == Some(role))
            .then_some((name, v))
    });
    let first = found
        .next()
        .unwrap_or_else(|| panic!("no resource file for role {role}"));
    assert!(
        found.next().is_none(),
        "several resource files for role {role}"
    );
    first
}

/// The one listener address and the one endpoint address of a resource file.
fn listener_and_endpoint(file: &serde_yaml::Value) -> (String, String) {
    let one = |list: &serde_yaml::Value, what: &str| -> String {
        let items = list.as_sequence().unwrap_or_else(|| panic!("no {what}"));
        assert_eq!(items.len(), 1, "{what}: {items:?}");
        items[0]["address"].as_str().expect("address").to_string()
    };
    let eps = &file["clusters"][0]["endpoints"];
    (one(&file["listeners"], "listeners"), one(eps, "endpoints"))
}

/// Whether `labels` has every pair of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The containers of a workload's pod template that run `corridor` (init containers too).
fn corridor_containers(workload: &Value) -> Vec<&Value> {
    let spec = pod_spec(workload);
    ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[k].as_array().into_iter().flatten())
        .filter(|c| c["command"] == json!(["corridor"]))
        .collect()
}

/// Names, ports, probes, selectors and privileges agree across the manifests.
#[test]
fn the_manifests_point_at_each_other() {
    let all = super::applied();
    let cp = find("control-plane.yaml", "Deployment", "corridor-control-plane");
    let cp_c = container(&cp, "control-plane");
    let cp_args = args(cp_c);
    assert_eq!(cp_args[0], "control-plane");
    // The ConfigMap is mounted where --dir reads.
    let mount = cp_c["volumeMounts"]
        .as_array()
        .and_then(|ms| {
            ms.iter()
                .find(|m| m["mountPath"] == flag(&cp_args, "--dir"))
        })
        .expect("--dir is a volume mount");
    let volume = pod_spec(&cp)["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == mount["name"]))
        .expect("the mounted volume");
    assert_eq!(
        volume["configMap"]["name"],
        "corridor-control-plane-resources"
    );
    // The control plane's Service is the URL inject writes and the edge uses.
    let svc = find("control-plane.yaml", "Service", "corridor-control-plane");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        format!(
            "http://{}.{}:{}",
            svc["metadata"]["name"].as_str().unwrap_or(""),
            svc["metadata"]["namespace"].as_str().unwrap_or(""),
            port["port"]
        ),
        CONTROL_PLANE_URL
    );
    assert_eq!(
        container_port(cp_c, &port["targetPort"]),
        port_of(flag(&cp_args, "--listen"))
    );
    // Probes hit the admin listener, on paths it serves.
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &cp_c[probe]["httpGet"];
        assert!(["/ready", "/nodes", "/files"].contains(&get["path"].as_str().unwrap_or("")));
        assert_eq!(
            container_port(cp_c, &get["port"]),
            port_of(flag(&cp_args, "--admin"))
        );
    }

    // The edge ingress: subscribed to that Service as an ingress node.
    let edge = find("edge-ingress.yaml", "Deployment", "corridor-edge-ingress");
    let edge_c = container(&edge, "edge-ingress");
    let edge_args = args(edge_c);
    assert_eq!(edge_args[0], "run");
    assert_eq!(flag(&edge_args, "--xds"), CONTROL_PLANE_URL);
    assert_eq!(flag(&edge_args, "--role"), "ingress");
    assert_eq!(
        flag(&edge_args, "--node-id"),
        "$(POD_NAME).$(POD_NAMESPACE)"
    );
    assert_eq!(edge["spec"]["replicas"], 2);
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/live")] {
        let get = &edge_c[probe]["httpGet"];
        assert_eq!(get["path"], path);
        assert_eq!(
            container_port(edge_c, &get["port"]),
            port_of(flag(&edge_args, "--admin"))
        );
    }
    let grace = pod_spec(&edge)["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("a grace period");
    assert!(grace > DRAIN_TIMEOUT_SECS, "grace {grace} s");
    // Its LoadBalancer sends port 80 to the listener the control plane pushes to it.
    let edge_svc = find("edge-ingress.yaml", "Service", "corridor-edge-ingress");
    assert_eq!(edge_svc["spec"]["type"], "LoadBalancer");
    let p = &edge_svc["spec"]["ports"][0];
    assert_eq!(p["port"], 80);
    let (_, ingress_file) = resource_file_for("ingress");
    let (edge_listener, edge_endpoint) = listener_and_endpoint(&ingress_file);
    assert_eq!(
        container_port(edge_c, &p["targetPort"]),
        port_of(&edge_listener)
    );
    let pdb = find(
        "edge-ingress.yaml",
        "PodDisruptionBudget",
        "corridor-edge-ingress",
    );
    assert!(selects(
        &pdb["spec"]["selector"]["matchLabels"],
        &edge["spec"]["template"]["metadata"]["labels"]
    ));

    // The inference workload: its Service is the edge's endpoint and sends to the
    // sidecar's pushed listener, which sends to the model server on localhost.
    let model = find("inference-workload.yaml", "Deployment", "model-server");
    let sidecar = container(&model, "corridor-proxy");
    let sidecar_args = args(sidecar);
    assert_eq!(flag(&sidecar_args, "--xds"), CONTROL_PLANE_URL);
    assert_eq!(flag(&sidecar_args, "--role"), "sidecar");
    let model_svc = find("inference-workload.yaml", "Service", "model-server");
    let mp = &model_svc["spec"]["ports"][0];
    assert_eq!(
        edge_endpoint,
        format!(
            "{}:{}",
            model_svc["spec"]["clusterIP"].as_str().unwrap_or(""),
            mp["port"]
        )
    );
    let (_, sidecar_file) = resource_file_for("sidecar");
    let (sidecar_listener, local_model) = listener_and_endpoint(&sidecar_file);
    assert_eq!(
        mp["targetPort"].as_u64(),
        Some(u64::from(port_of(&sidecar_listener)))
    );
    assert!(local_model.starts_with("127.0.0.1:"), "{local_model}");
    assert_eq!(
        container_port(container(&model, "model"), &json!("model")),
        port_of(&local_model)
    );

    // Every Service selects the pods of a workload in its namespace and targets a
    // port they have.
    let workloads: Vec<&Value> = all.iter().filter(|d| d["kind"] == "Deployment").collect();
    for svc in all.iter().filter(|d| d["kind"] == "Service") {
        let w = workloads
            .iter()
            .find(|w| {
                w["metadata"]["namespace"] == svc["metadata"]["namespace"]
                    && selects(
                        &svc["spec"]["selector"],
                        &w["spec"]["template"]["metadata"]["labels"],
                    )
            })
            .unwrap_or_else(|| panic!("{}: selects no pods", super::kind_name(svc)));
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            let declared = pod_spec(w)["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    p["targetPort"].is_u64()
                        || c["ports"]
                            .as_array()
                            .is_some_and(|ps| ps.iter().any(|q| q["name"] == p["targetPort"]))
                });
            assert!(declared, "{}: port {p}", super::kind_name(svc));
        }
    }
    // Every NetworkPolicy selects pods, and the namespace labels it relies on are set.
    for np in all.iter().filter(|d| d["kind"] == "NetworkPolicy") {
        let ns = &np["metadata"]["namespace"];
        assert!(
            workloads.iter().any(|w| w["metadata"]["namespace"] == *ns
                && selects(
                    &np["spec"]["podSelector"]["matchLabels"],
                    &w["spec"]["template"]["metadata"]["labels"]
                )),
            "{}: selects no pods",
            super::kind_name(np)
        );
        let text = np.to_string();
        if text.contains("corridor.dev/mesh") {
            for ns in ["corridor-system", "inference"] {
                let doc = all
                    .iter()
                    .find(|d| d["kind"] == "Namespace" && d["metadata"]["name"] == ns)
                    .unwrap_or_else(|| panic!("no Namespace {ns}"));
                assert_eq!(doc["metadata"]["labels"]["corridor.dev/mesh"], "enabled");
            }
        }
    }

    // Least privilege: no Kubernetes API access, the injector's security context on
    // every Corridor container, grace periods above the drain timeout.
    let hardened = json!({
        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
        "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    });
    for d in &all {
        let kind = d["kind"].as_str().unwrap_or("");
        assert!(
            !["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"].contains(&kind),
            "Corridor does not call the Kubernetes API: {}",
            super::kind_name(d)
        );
        if kind == "ServiceAccount" {
            assert_eq!(
                d["automountServiceAccountToken"],
                false,
                "{}",
                super::kind_name(d)
            );
        }
    }
    let mut corridors = 0;
    for w in &workloads {
        let spec = pod_spec(w);
        assert_eq!(
            spec["automountServiceAccountToken"],
            false,
            "{}",
            super::kind_name(w)
        );
        let sa = spec["serviceAccountName"]
            .as_str()
            .expect("a service account");
        assert!(
            all.iter().any(|d| d["kind"] == "ServiceAccount"
                && d["metadata"]["name"] == sa
                && d["metadata"]["namespace"] == w["metadata"]["namespace"]),
            "{}: no ServiceAccount {sa}",
            super::kind_name(w)
        );
        for c in corridor_containers(w) {
            corridors += 1;
            assert_eq!(c["securityContext"], hardened, "{}", super::kind_name(w));
            let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
            assert!(grace > DRAIN_TIMEOUT_SECS, "{}", super::kind_name(w));
        }
    }
    assert_eq!(corridors, 3, "control plane, edge ingress, sidecar");
}

/// `corridor validate --resources` accepts the ConfigMap's files and rejects a broken one.
#[test]
fn the_config_map_resource_files_pass_corridor_validate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut paths = Vec::new();
    for (name, text) in config_map_files() {
        let path = dir.path().join(&name);
        std::fs::write(&path, text).expect("write");
        paths.push(path.display().to_string());
    }
    let mut argv = vec!["validate", "--resources"];
    argv.extend(paths.iter().map(String::as_str));
    let (status, out, err) = run_cli(&argv);
    assert!(status.success(), "{out}{err}");
    for p in &paths {
        assert!(out.contains(&format!("{p}: ok")), "{out}{err}");
    }
    // The same validator rejects a broken copy (the check can fail): a host name
    // where an address must be.
    let (name, _) = resource_file_for("ingress");
    let text = &config_map_files()[&name];
    let bad = text.replacen("\"0.0.0.0:8080\"", "\"edge:8080\"", 1);
    assert_ne!(&bad, text);
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, bad).expect("write");
    let (status, out, err) = run_cli(&["validate", "--resources", &broken.display().to_string()]);
    assert!(!status.success(), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("listeners[0].address"),
        "{out}{err}"
    );
}

/// `inference-workload.yaml` is byte for byte what `corridor inject` writes for its source.
#[test]
fn inference_workload_is_the_output_of_corridor_inject() {
    let source = super::k8s_path("inference-workload.source.yaml");
    let target = super::k8s_path("inference-workload.yaml");
    let out = Command::new(corridor_binary())
        .args(["inject", "-f"])
        .arg(&source)
        .output()
        .expect("run corridor inject");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Deployment/model-server: injected"),
        "{stderr}"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&target, &stdout).expect("write inference-workload.yaml");
    }
    assert!(
        stdout == super::read(&target),
        "{} differs from `corridor inject -f {}` (UPDATE_GOLDEN=1 rewrites it):\n{stdout}",
        target.display(),
        source.display()
    );
}
