//! Owns running the real `corridor` binary for a test: ephemeral ports filled
//! into a YAML template, a config file in a temp dir, readiness via the admin
//! listener, captured logs, signals, and reading its metrics and memory.
//!
//! Templates use `{{LISTEN}}` for the first listener, `{{LISTEN2}}` for a
//! second one and `{{ADMIN}}` for the admin listener; each becomes
//! `127.0.0.1:<free port>`. `{{ADMIN_PORT}}` is the admin port alone.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a test waits for Corridor to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `corridor run -c FILE` process, killed on drop.
pub struct Corridor {
    child: Option<Child>,
    /// The first listener.
    pub addr: SocketAddr,
    /// The second listener, when the template has `{{LISTEN2}}`.
    pub addr2: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The configuration file it serves.
    pub config_path: PathBuf,
    logs: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// Path of the `corridor` binary: `$CORRIDOR_BIN`, or the one cargo built next
/// to this test executable (`cargo test --workspace` builds it).
pub fn corridor_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRIDOR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("corridor");
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` (which builds the binary) or set CORRIDOR_BIN",
        bin.display()
    );
    bin
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_addr() -> SocketAddr {
    free_addrs::<1>()[0]
}

/// `N` different free ports on 127.0.0.1, for listeners a test's process binds
/// later. They come from below the kernel's ephemeral range (32768 and up by
/// default), so an outgoing connection cannot take one before it is bound (a
/// port from `bind(0)` could: that made a listener fail with "address in use"),
/// and from a counter shared by every test of this process, so no two tests get
/// the same port. Each is checked free when picked.
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Start where another test process (a second `cargo test` at once) is unlikely to.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    std::array::from_fn(|_| loop {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if std::net::TcpListener::bind(addr).is_ok() {
            break addr;
        }
    })
}

/// An address that refuses connections for as long as the returned socket
/// lives: the port is bound but never listened on, so no other test can take
/// it and a connect is refused at once.
pub fn refused_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = sock.local_addr().expect("local addr");
    (sock, addr)
}

impl Corridor {
    /// Starts Corridor with `template` and waits until `/ready` answers 200.
    pub async fn start(template: &str) -> Corridor {
        Self::start_with_dir(template, tempfile::tempdir().expect("temp dir")).await
    }

    /// Like `start`, with files (certificates...) already placed in `dir`.
    pub async fn start_with_dir(template: &str, dir: tempfile::TempDir) -> Corridor {
        Self::start_with_args(template, dir, &[]).await
    }

    /// Like `start_with_dir`, with more arguments after `run -c FILE`.
    pub async fn start_with_args(
        template: &str,
        mut dir: tempfile::TempDir,
        args: &[&str],
    ) -> Corridor {
        let mut last_logs = String::new();
        for _ in 0..3 {
            let [addr, addr2, admin] = free_addrs();
            let yaml = fill(template, addr, addr2, admin);
            let config_path = dir.path().join("corridor.yaml");
            std::fs::write(&config_path, &yaml).expect("write config");
            let mut argv = vec!["run", "-c", config_path.to_str().expect("utf-8 path")];
            argv.extend_from_slice(args);
            let (child, logs) = spawn(&argv);
            let mut c = Corridor {
                child: Some(child),
                addr,
                addr2,
                admin,
                config_path,
                logs,
                _dir: dir,
            };
            match c.wait_ready().await {
                Ok(()) => return c,
                Err(logs)
                    if logs.contains("cannot listen")
                        || logs.contains("Address already in use") =>
                {
                    last_logs = logs;
                    dir = c.take_dir();
                }
                Err(logs) => panic!("corridor did not become ready:\n{logs}"),
            }
        }
        panic!("corridor could not bind free ports three times:\n{last_logs}");
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self._dir, dir)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return Err(format!("exited with {status}:\n{}", self.logs()));
            }
            if let Ok((200, _)) = admin_get(self.admin, "/ready").await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "not ready after {READY_TIMEOUT:?}:\n{}",
            self.logs()
        ))
    }

    /// `http://<listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().clone()
    }

    /// Waits until the logs contain `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs.lock().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// GET on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        admin_get(self.admin, path)
            .await
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}\n{}", self.logs()))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.1
    }

    /// Sum of the samples of `name` whose labels include every `label="value"` in `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics().await, name, labels)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal (`libc::SIGHUP`, `libc::SIGTERM`...).
    pub fn signal(&self, sig: i32) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Replaces the configuration file atomically (write then rename).
    pub fn write_config(&self, template: &str) {
        let yaml = fill(template, self.addr, self.addr2, self.admin);
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Corridor {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- corridor output ----\n{}---- end of corridor output ----",
                self.logs()
            );
        }
    }
}

/// Runs `corridor ARGS...` to completion: exit status, stdout, stderr.
pub fn run_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(corridor_binary())
        .args(args)
        .output()
        .expect("run corridor");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns `corridor ARGS...` with output captured into a shared buffer.
pub fn spawn(args: &[&str]) -> (Child, Arc<Mutex<String>>) {
    spawn_captured(Command::new(corridor_binary()).args(args).env(
        "RUST_LOG",
        std::env::var("CORRIDOR_TEST_LOG").unwrap_or_else(|_| "info".into()),
    ))
    .expect("spawn corridor")
}

/// Spawns `cmd` (stdin closed) with its stdout and stderr captured, line by line, into
/// one shared buffer.
pub fn spawn_captured(cmd: &mut Command) -> std::io::Result<(Child, Arc<Mutex<String>>)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let logs = Arc::new(Mutex::new(String::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let logs = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut l = logs.lock();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    Ok((child, logs))
}

/// Fills a config template: `{{LISTEN}}`, `{{LISTEN2}}` and `{{ADMIN}}` become addresses,
/// `{{ADMIN_PORT}}` the admin port alone (to bind it on another interface).
pub fn fill(template: &str, addr: SocketAddr, addr2: SocketAddr, admin: SocketAddr) -> String {
    template
        .replace("{{LISTEN}}", &addr.to_string())
        .replace("{{LISTEN2}}", &addr2.to_string())
        .replace("{{ADMIN}}", &admin.to_string())
        .replace("{{ADMIN_PORT}}", &admin.port().to_string())
}

/// A plain HTTP/1.1 GET over a fresh connection: status and body.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad response: {text}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Sums the samples of metric `name` matching all `labels` in Prometheus text.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A `/proc/<pid>/status` field in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
