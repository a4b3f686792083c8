//! `corridor demo`: the embedded default starts, prints curl commands, and
//! every printed command works when pasted into a shell (real curl).

use std::process::Command;
use std::time::{Duration, Instant};

use corridor_tests::proxy::{admin_get, free_addrs, spawn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_curl_commands_work() {
    let [listen, admin, a, b, c] = free_addrs();
    let ups = [a, b, c];
    let ups_arg = ups.map(|a| a.to_string()).join(",");
    let (mut child, logs) = spawn(&[
        "demo",
        "--listen",
        &listen.to_string(),
        "--admin",
        &admin.to_string(),
        "--upstreams",
        &ups_arg,
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(admin_get(admin, "/ready").await, Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "demo not ready:\n{}",
            logs.lock()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "demo exited:\n{}",
            logs.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = logs.lock().clone();
    let commands = check_demo_answers(&output, |cmd| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .expect("run sh");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    for cmd in &commands {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .expect("run sh");
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "`{cmd}` failed"
        );
    }
    let stream_cmd = commands
        .iter()
        .find(|c| c.contains("\"stream\":true"))
        .unwrap();
    let out = String::from_utf8_lossy(
        &Command::new("sh")
            .arg("-c")
            .arg(stream_cmd)
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        out.matches("data: ").count() >= 5 && out.contains("azure/westeurope"),
        "{out}"
    );

    // Ctrl-C stops it.
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "demo did not stop on Ctrl-C");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks the requests `corridor demo` printed in `output` (its `curl` lines, comments cut):
/// each kind of request is there and `run` (success, stdout, stderr of `sh -c CMD`) gets the
/// demo's answer to it. Returns the printed commands.
pub(crate) fn check_demo_answers(
    output: &str,
    run: impl Fn(&str) -> (bool, String, String),
) -> Vec<String> {
    let commands: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .map(|l| l.split("  #").next().unwrap().trim().to_string())
        .collect();
    assert!(commands.len() >= 8, "too few commands printed:\n{output}");
    let expectations = [
        ("/v1/models", "served_by"),
        (
            "x-model: gpt-4o' -d '{\"model\":\"gpt-4o\",\"messages\"",
            "azure/westeurope",
        ),
        ("x-model: claude", "aws/us-east-1"),
        ("x-model: llama", "oci/us-ashburn-1"),
        ("\"stream\":true", "data: [DONE]"),
        ("/nowhere", "no_route"),
        ("/metrics", "corridor_requests_total"),
        ("/config_dump", "\"version\""),
    ];
    for (needle, expected) in expectations {
        let cmd = commands
            .iter()
            .find(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no printed command contains {needle:?}:\n{output}"));
        let (ok, stdout, stderr) = run(cmd);
        assert!(ok, "`{cmd}` failed: {stderr}");
        assert!(stdout.contains(expected), "`{cmd}` printed:\n{stdout}");
    }
    commands
}
