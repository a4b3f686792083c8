//! The `corridor` command line as a user runs it: validate, help, version, and
//! refusing to start on an invalid file. (Building this test also makes cargo
//! build the binary that the end-to-end suite in `tests/` runs.)

use std::process::Command;

fn corridor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corridor"))
        .args(args)
        .output()
        .expect("run corridor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_every_example() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("examples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples found in {dir}");
    let args: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(String::as_str))
        .collect();
    let (code, out, err) = corridor(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains(": ok (version ")).count(),
        files.len(),
        "{out}"
    );
}

#[test]
fn validate_reports_all_errors_with_positions_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listeners:\n  - name: l\n    address: nowhere\n    route_table: t\nclusters:\n  - name: c\n    endpoints: [{ address: 10.0.0.1 }]\n",
    )
    .unwrap();
    let (code, out, err) = corridor(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let b = bad.display();
    assert!(
        err.contains(&format!(
            "{b}:3:14: listeners[0].address: invalid address `nowhere`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{b}:4:18: listeners[0].route_table: route table `t` is not defined"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{b}:7:28: clusters[0].endpoints[0].address: invalid address `10.0.0.1`"
        )),
        "{err}"
    );
    assert!(err.trim_end().ends_with("3 errors"), "{err}");
}

#[test]
fn run_refuses_an_invalid_file_and_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listeners: [ { name: l, adress: 127.0.0.1:1 } ]\n").unwrap();
    let (code, _, err) = corridor(&["run", "-c", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown field `adress` in Listener; did you mean `address`?"),
        "{err}"
    );
    assert!(err.contains("not starting"), "{err}");
    let (code, _, err) = corridor(&["run", "-c", "/nonexistent/corridor.yaml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/corridor.yaml: cannot read file"),
        "{err}"
    );
}

#[test]
fn help_has_examples_and_version_prints() {
    let (code, out, _) = corridor(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["run", "demo", "validate", "Examples:", "corridor demo"] {
        assert!(out.contains(cmd), "missing {cmd:?} in help:\n{out}");
    }
    let (code, out, _) = corridor(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("corridor {}", env!("CARGO_PKG_VERSION"))
    );
}
