//! The runtime image that `docker/build.sh` builds, in a private Docker daemon: it packages
//! the tested binary (a stripped copy of the debug build), runs `corridor demo` on the host
//! network and answers the demo's printed requests, runs as user 65532, has its OCI labels,
//! `corridor` on `PATH`, exactly the binary's shared libraries and no shell, and stops on
//! SIGINT as PID 1. A private `dockerd` needs root and Debian's `docker.io`
//! (`scripts/test.sh` installs it); without them the test prints why and returns.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use corridor_tests::proxy::{admin_get, corridor_binary, free_addrs};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a finished command printed.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn ok(&self) -> bool {
        self.status.success()
    }

    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion, killing it and panicking after `timeout`.
fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let readers = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .map(|s| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut s) = s {
                let _ = s.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let [stdout, stderr] = readers.map(|r| r.join().expect("reader thread"));
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A private `dockerd` in a temporary directory. Dropping it removes the containers it
/// started, stops it (SIGTERM, then SIGKILL), unmounts what it left and removes the directory.
struct Daemon {
    child: Child,
    host: String,
    containers: Vec<String>,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon, or says why it cannot run here.
    fn start() -> Result<Daemon, String> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .unwrap_or("unknown");
        if uid != "0" {
            return Err(format!(
                "not root (euid {uid}): a private dockerd needs root"
            ));
        }
        for (tool, hint) in [
            (
                "dockerd",
                "install Debian's docker.io (scripts/test.sh does)",
            ),
            ("docker", "the docker CLI (Debian's docker.io) is missing"),
        ] {
            if let Err(e) = Command::new(tool).arg("--version").output() {
                return Err(format!("`{tool} --version` failed ({e}): {hint}"));
            }
        }
        // In /tmp: the sockets under it must stay under the 108-byte path limit.
        let dir = tempfile::Builder::new()
            .prefix("corridor-docker-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a temp dir in /tmp: {e}"))?;
        let p = dir.path();
        std::fs::write(p.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(p.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(p.join("daemon.json"))
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", p.join("docker.sock").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot spawn dockerd: {e}"))?;
        let mut daemon = Daemon {
            child,
            host: format!("unix://{}", p.join("docker.sock").display()),
            containers: Vec::new(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if daemon
                .docker(&["version"], Duration::from_secs(30))
                .status
                .success()
            {
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "dockerd exited ({status}); its log ends:\n{}",
                    daemon.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "dockerd did not answer within 60 s; its log ends:\n{}",
                    daemon.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `docker ARGS...` against this daemon.
    fn docker(&self, args: &[&str], timeout: Duration) -> Output {
        run(
            Command::new("docker")
                .env("DOCKER_HOST", &self.host)
                .args(args),
            timeout,
        )
    }

    /// `docker ARGS...`, which must succeed; its stdout, trimmed.
    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args, Duration::from_secs(120));
        assert!(out.ok(), "docker {args:?} failed:\n{}", out.all());
        out.stdout.trim().to_string()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            for name in &self.containers {
                let _ = self.docker(&["rm", "-f", name], Duration::from_secs(60));
            }
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // A daemon that did not stop cleanly can leave mounts (a container's /dev/shm)
        // under the directory, which would keep it from being removed.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(str::to_string)
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
    }
}

/// The absolute paths `ldd` lists for `bin`: its shared libraries and the loader.
fn shared_libraries(bin: &Path) -> Vec<String> {
    let out = run(Command::new("ldd").arg(bin), Duration::from_secs(30));
    let mut libs: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .map(|p| p.trim_start_matches('/').to_string())
        .collect();
    libs.sort();
    libs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_the_demo_as_non_root_without_a_shell() {
    // Building and starting an image copies tens of MB (vfs): keep it away from the
    // timing-sensitive tests.
    let _serial = crate::exclusive().await;
    let started = Instant::now();
    let mut daemon = match Daemon::start() {
        Ok(d) => d,
        Err(reason) => {
            eprintln!(
                "SKIPPED docker::the_image_runs_the_demo_as_non_root_without_a_shell: {reason}"
            );
            return;
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bin: PathBuf = corridor_binary();
    let image = format!("corridor:{VERSION}");

    // Build.
    let out = run(
        Command::new(root.join("docker/build.sh"))
            .env("CORRIDOR_BIN", &bin)
            .env("DOCKER_HOST", &daemon.host),
        Duration::from_secs(300),
    );
    assert!(out.ok(), "docker/build.sh failed:\n{}", out.all());
    let built = started.elapsed();

    // Tags, user, entrypoint, labels, size.
    let id = daemon.docker_ok(&["image", "inspect", "-f", "{{.Id}}", &image]);
    assert_eq!(
        daemon.docker_ok(&["image", "inspect", "-f", "{{.Id}}", "corridor:latest"]),
        id,
        "corridor:latest is not {image}"
    );
    let config: serde_json::Value = serde_json::from_str(&daemon.docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config}}",
        &image,
    ]))
    .unwrap();
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/corridor"]),
        "{config}"
    );
    let labels = &config["Labels"];
    let label = |k: &str| {
        labels[format!("org.opencontainers.image.{k}")]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(label("version"), VERSION, "{labels}");
    assert_eq!(label("title"), "corridor", "{labels}");
    assert_eq!(label("licenses"), "Apache-2.0", "{labels}");
    assert!(label("source").starts_with("https://"), "{labels}");
    let git = run(
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["rev-parse", "HEAD"]),
        Duration::from_secs(30),
    );
    if git.ok() {
        assert_eq!(label("revision"), git.stdout.trim(), "{labels}");
    } else {
        assert!(!label("revision").is_empty(), "{labels}");
    }
    let size: u64 = daemon
        .docker_ok(&["image", "inspect", "-f", "{{.Size}}", &image])
        .parse()
        .unwrap();
    // The stripped debug binary is ~45 MB; the unstripped one ~300 MB.
    assert!(
        size < 128 << 20,
        "image is {size} bytes: binary not stripped?"
    );

    // Its files: the binary, exactly its shared libraries, CA certificates, passwd, group,
    // nsswitch.conf; no shell. (`docker export` adds the mount points of the container.)
    let listing = daemon.dir.path().join("fs.tar");
    let name = format!("corridor-e2e-{}", std::process::id());
    daemon.containers.push(name.clone());
    daemon.docker_ok(&["create", "--name", &name, "--network", "host", &image]);
    daemon.docker_ok(&["export", "-o", &listing.to_string_lossy(), &name]);
    daemon.docker_ok(&["rm", &name]);
    let tar = run(
        Command::new("tar").arg("-tvf").arg(&listing),
        Duration::from_secs(30),
    );
    assert!(tar.ok(), "tar: {}", tar.all());
    let _ = std::fs::remove_file(&listing);
    let injected = [".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf"];
    let mut files: Vec<String> = tar
        .stdout
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split(" -> ").next()?.split_whitespace().last())
        .map(str::to_string)
        .filter(|f| {
            !injected.contains(&f.as_str())
                && !["dev/", "proc/", "sys/", "etc/mtab"]
                    .iter()
                    .any(|p| f.starts_with(p))
        })
        .collect();
    files.sort();
    let mut expected: Vec<String> = shared_libraries(&bin);
    expected.extend(
        [
            "etc/group",
            "etc/nsswitch.conf",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/bin/corridor",
        ]
        .map(str::to_string),
    );
    expected.sort();
    assert_eq!(files, expected, "the image's files:\n{}", tar.stdout);
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash", "bin/busybox"] {
        assert!(!files.iter().any(|f| f == shell), "{shell} in the image");
    }

    // `corridor` is on PATH (the injected sidecar runs `command: [corridor]`).
    let version = daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "corridor",
        &image,
        "--version",
    ]);
    assert_eq!(version, format!("corridor {VERSION}"));

    // The demo on the host network.
    let [listen, admin, a, b, c] = free_addrs();
    let upstreams = [a, b, c].map(|a| a.to_string()).join(",");
    let mut demo = Command::new("docker")
        .env("DOCKER_HOST", &daemon.host)
        .args(["run", "--rm", "--name", &name, "--network", "host", &image])
        .args(["demo", "--listen", &listen.to_string()])
        .args(["--admin", &admin.to_string(), "--upstreams", &upstreams])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docker run");
    let logs = Arc::new(Mutex::new(String::new()));
    for s in [
        demo.stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        demo.stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let logs = Arc::clone(&logs);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(s).lines().map_while(Result::ok) {
                let mut l = logs.lock();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(matches!(admin_get(admin, "/ready").await, Ok((200, _)))
        && logs.lock().contains("Press Ctrl-C"))
    {
        assert!(
            Instant::now() < deadline,
            "the demo container is not ready:\n{}",
            logs.lock()
        );
        assert!(
            demo.try_wait().unwrap().is_none(),
            "the demo container exited:\n{}",
            logs.lock()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Non-root, also as seen by the kernel.
    let pid = daemon.docker_ok(&["inspect", "-f", "{{.State.Pid}}", &name]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for field in ["Uid:", "Gid:"] {
        let ids: Vec<&str> = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .collect();
        assert_eq!(ids, ["65532"; 4], "{field} of the container's process");
    }

    // The demo's printed requests get the demo's answers.
    let output = logs.lock().clone();
    crate::demo::check_demo_answers(&output, |cmd| {
        let out = run(
            Command::new("sh").arg("-c").arg(cmd),
            Duration::from_secs(30),
        );
        (out.ok(), out.stdout, out.stderr)
    });

    // Ctrl-C stops it: corridor handles signals as the container's PID 1.
    daemon.docker_ok(&["kill", "--signal", "INT", &name]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while demo.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the demo container did not stop on SIGINT:\n{}",
            logs.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "docker image {image}: {size} bytes ({} MiB); daemon up and image built in {:.1} s, whole test {:.1} s",
        size >> 20,
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
