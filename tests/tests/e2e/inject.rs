//! `corridor inject` golden tests: the real binary on real-world manifests in
//! `tests/fixtures/inject/` (several documents, existing sidecars and init
//! containers, a List, a CronJob, an opted-out and an already-injected
//! workload), each output compared byte for byte with `NAME.expected.yaml`
//! and injected again to check that nothing changes; invalid input fails with
//! the document and the place named and nothing on stdout.
//!
//! `UPDATE_GOLDEN=1 cargo test -p corridor-tests --test e2e inject` rewrites
//! the expected files from the binary's output (then read the diff).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use corridor_tests::proxy::corridor_binary;
use serde::Deserialize as _;

/// Each fixture and the flags it is injected with.
const CASES: &[(&str, &[&str])] = &[
    // Deployment + Service + ConfigMap; cloud and region from the pod labels.
    ("multi-document", &[]),
    // An existing sidecar and two init containers; a grace period of 10 s raised.
    ("statefulset-sidecar-init", &[]),
    // An https control plane with a certificate Secret; locality from flags.
    (
        "daemonset",
        &[
            "--control-plane",
            "https://corridor-control-plane.corridor-system:18000",
            "--cert-secret",
            "gpu-inference-certs",
            "--cloud",
            "aws",
            "--region",
            "us-east-1",
            "--zone",
            "us-east-1a",
        ],
    ),
    // A bare Pod; a declared proxy port, another image, other resources.
    (
        "pod",
        &[
            "--proxy-port",
            "15001",
            "--image",
            "registry.example.com/corridor:0.1.0",
            "--cpu-limit",
            "none",
            "--memory-limit",
            "128Mi",
        ],
    ),
    // Runs to completion: the sidecar is a native sidecar (initContainers).
    ("cronjob", &[]),
    // `kubectl get -o yaml`: a List of a Deployment, a Service and a Job.
    ("list", &[]),
    // The control plane, annotated corridor.dev/inject: disabled.
    ("opted-out", &[]),
    // The output of an earlier `corridor inject`: left exactly as it is.
    ("already-injected", &[]),
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/inject")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `corridor inject ARGS` with `stdin`: exit code, stdout, stderr.
fn inject(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(corridor_binary())
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run corridor inject");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.to_string();
    // Write from another thread: the child may fill its stdout first.
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("corridor inject output");
    writer.join().expect("stdin writer").expect("write stdin");
    (
        out.status.code(),
        String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    )
}

/// Injects `name`.yaml from the file, compares with the golden file (or
/// rewrites it under UPDATE_GOLDEN), and injects the output again; the first
/// run's stderr.
fn check_case(name: &str, flags: &[&str]) -> String {
    let input = fixture(&format!("{name}.yaml"));
    let golden = fixture(&format!("{name}.expected.yaml"));
    let path = input.display().to_string();
    let args: Vec<&str> = ["-f", path.as_str()].iter().chain(flags).copied().collect();
    let (code, out, err) = inject(&args, "");
    assert_eq!(code, Some(0), "{name}: stderr:\n{err}");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &out).expect("write the golden file");
    }
    let expected = read(&golden);
    assert!(
        out == expected,
        "{name}: the output differs from {} (UPDATE_GOLDEN=1 rewrites it):\n{out}",
        golden.display()
    );
    // Injecting the output again changes nothing, byte for byte.
    let again: Vec<&str> = ["-f", "-"].iter().chain(flags).copied().collect();
    let (code, twice, err2) = inject(&again, &out);
    assert_eq!(code, Some(0), "{name} (second pass): stderr:\n{err2}");
    assert!(
        twice == out,
        "{name}: injecting the output again changed it:\n{twice}"
    );
    err
}

#[test]
fn golden_outputs_and_injecting_twice_changes_nothing() {
    for (name, flags) in CASES {
        check_case(name, flags);
    }
}

#[test]
fn each_workload_is_reported_on_stderr() {
    let err = check_case("list", &[]);
    let notes: Vec<&str> = err.lines().collect();
    assert_eq!(
        notes,
        [
            "corridor inject: document 1: Deployment/embedder: injected",
            "corridor inject: document 1: Job/reindex-2024-11-02: injected",
        ]
    );
    let err = check_case("opted-out", &[]);
    assert_eq!(
        err.trim_end(),
        "corridor inject: document 1: Deployment/corridor-control-plane: corridor.dev/inject: disabled, left as it is"
    );
}

/// How many `corridor-proxy` containers `yaml` has (a port of that name is not one).
fn sidecars(yaml: &str) -> usize {
    let lines: Vec<&str> = yaml.lines().collect();
    lines
        .windows(2)
        .filter(|w| {
            w[0].ends_with("- name: corridor-proxy") && w[1].trim_start().starts_with("image: ")
        })
        .count()
}

#[test]
fn already_injected_and_opted_out_manifests_keep_their_sidecars_as_they_are() {
    let input = read(&fixture("already-injected.yaml"));
    assert_eq!(
        read(&fixture("already-injected.expected.yaml")),
        input,
        "an injected manifest is written back byte for byte"
    );
    assert_eq!(sidecars(&input), 1);
    let opted_out = read(&fixture("opted-out.expected.yaml"));
    assert!(!opted_out.contains("corridor-proxy"), "{opted_out}");
    for (name, _) in CASES {
        let out = read(&fixture(&format!("{name}.expected.yaml")));
        let annotations = out.matches("corridor.dev/injected: ").count();
        assert_eq!(
            sidecars(&out),
            annotations,
            "{name}: one annotation per sidecar"
        );
    }
}

#[test]
fn stdin_gives_the_same_output_as_the_file() {
    let input = read(&fixture("multi-document.yaml"));
    let (code, out, err) = inject(&["-f", "-"], &input);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, read(&fixture("multi-document.expected.yaml")));
    assert_eq!(
        err.trim_end(),
        "corridor inject: document 1: Deployment/chat-frontend: injected"
    );
}

#[test]
fn invalid_yaml_names_the_document_and_the_line() {
    let path = fixture("invalid-yaml.yaml").display().to_string();
    let (code, out, err) = inject(&["-f", &path], "");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "", "nothing on stdout");
    assert!(
        err.starts_with(&format!(
            "corridor inject: {path}: document 2: invalid YAML: did not find expected ',' or ']' at line 11 column 3"
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_malformed_pod_template_names_the_workload_the_line_and_the_field() {
    let path = fixture("malformed-template.yaml").display().to_string();
    let (code, out, err) = inject(&["-f", &path], "");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "", "nothing on stdout");
    assert_eq!(
        err,
        format!(
            "corridor inject: {path}: document 2 (Deployment/web), line 19 column 9: \
             spec.template.spec.containers: expected a list of containers, found a mapping\n"
        )
    );
    // The same through stdin, and a template that is not a mapping inside a List.
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: batch/v1\n  kind: CronJob\n  metadata: {name: nightly}\n  spec:\n    schedule: '@daily'\n    jobTemplate:\n      spec:\n        template: [oops]\n";
    let (code, out, err) = inject(&["-f", "-"], list);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert_eq!(
        err,
        "corridor inject: stdin: document 1 (CronJob/nightly), line 11 column 19: \
         items[0].spec.jobTemplate.spec.template: expected a mapping, found a list\n"
    );
}

#[test]
fn bad_flags_and_unreadable_input_fail_cleanly() {
    let path = fixture("pod.yaml").display().to_string();
    for (args, want) in [
        (
            vec!["-f", path.as_str(), "--memory-limit", "lots"],
            "--memory-limit \"lots\": not a Kubernetes quantity",
        ),
        (
            vec!["-f", path.as_str(), "--control-plane", "cp:18000"],
            "--control-plane \"cp:18000\": write it as a URL",
        ),
        (
            vec!["-f", path.as_str(), "--admin-port", "8888"],
            "port 8888 is taken by container \"jupyter\"; choose another --admin-port",
        ),
        (
            vec!["-f", "/nonexistent/deploy.yaml"],
            "cannot read /nonexistent/deploy.yaml",
        ),
    ] {
        let (code, out, err) = inject(&args, "");
        assert_eq!((code, out.as_str()), (Some(1), ""), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, out, err) = inject(&["--help"], "");
    assert_eq!(code, Some(0), "{err}");
    for needle in [
        "Explicit-proxy mode",
        "no iptables rules, no init container",
        "YAML comments",
        "corridor.dev/inject: disabled",
        "--cert-secret <NAME>",
    ] {
        assert!(out.contains(needle), "--help lacks {needle:?}:\n{out}");
    }
}

/// The sidecar's `args` in an injected manifest, as strings.
fn sidecar_args(manifests: &str) -> Vec<String> {
    for doc in serde_yaml::Deserializer::from_str(manifests) {
        let doc = serde_yaml::Value::deserialize(doc).expect("the golden file is YAML");
        let spec = &doc["spec"]["template"]["spec"];
        for c in spec["containers"].as_sequence().into_iter().flatten() {
            if c["name"].as_str() == Some("corridor-proxy") {
                return c["args"]
                    .as_sequence()
                    .expect("the sidecar has args")
                    .iter()
                    .map(|a| a.as_str().expect("string args").to_string())
                    .collect();
            }
        }
    }
    panic!("no corridor-proxy container in a pod template");
}

/// The command line `inject` writes is one `corridor run` accepts: run as written
/// (only addresses and file paths moved to this test's), the sidecar starts and
/// answers its liveness probe, with a plain and with an https control plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injected_sidecar_command_line_starts_corridor() {
    let pki = corridor_tests::TestPki::new("inject");
    let leaf = pki.leaf(&["sidecar.test"]);
    let files = pki.write_leaf(&leaf, "sidecar");
    let ca = pki.ca_path();
    for name in ["multi-document", "daemonset"] {
        let mut args = sidecar_args(&read(&fixture(&format!("{name}.expected.yaml"))));
        assert_eq!(args.first().map(String::as_str), Some("run"), "{name}");
        let admin = corridor_tests::proxy::free_addr();
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens there: the sidecar keeps serving while it retries.
        let (_socket, control_plane) = corridor_tests::proxy::refused_addr();
        for i in 1..args.len() {
            let new = match args[i - 1].as_str() {
                "--admin" => admin.to_string(),
                "--persist" => dir.path().join("pushed.pb").display().to_string(),
                "--xds" => {
                    let scheme = args[i].split("://").next().unwrap_or("http").to_string();
                    format!("{scheme}://{control_plane}")
                }
                "--xds-ca-file" => ca.display().to_string(),
                "--xds-cert-file" => files.cert.display().to_string(),
                "--xds-key-file" => files.key.display().to_string(),
                _ => continue,
            };
            args[i] = new;
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (mut child, logs) = corridor_tests::proxy::spawn(&args);
        let mut live = None;
        for _ in 0..100 {
            if let Ok((status, _)) = corridor_tests::proxy::admin_get(admin, "/live").await {
                live = Some(status);
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{name}: corridor {args:?} exited ({status}):\n{}",
                    logs.lock()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(live, Some(200), "{name}: {args:?}\n{}", logs.lock());
    }
}
