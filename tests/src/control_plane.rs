//! Owns running the real reference control plane (`corridor control-plane`)
//! for a test: a temp directory of resource files the test writes, removes
//! and rewrites atomically, its ADS and admin ports, `/nodes`, and stopping
//! and restarting it on the same ports.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::proxy::{admin_get, free_addrs, spawn};

/// A running `corridor control-plane`, killed on drop.
pub struct ControlPlane {
    child: Option<Child>,
    /// The ADS (gRPC) address.
    pub addr: SocketAddr,
    /// The admin address (`/nodes`, `/files`).
    pub admin: SocketAddr,
    logs: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
    /// Extra command-line arguments (for example TLS flags).
    args: Vec<String>,
}

impl ControlPlane {
    /// Starts a control plane over a directory holding `files` (name, YAML).
    pub async fn start(files: &[(&str, &str)]) -> ControlPlane {
        Self::start_with_args(files, &[]).await
    }

    /// Starts a control plane with extra command-line arguments.
    pub async fn start_with_args(files: &[(&str, &str)], args: &[&str]) -> ControlPlane {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, yaml) in files {
            std::fs::write(dir.path().join(name), yaml).expect("write resource file");
        }
        let [addr, admin] = free_addrs();
        let mut cp = ControlPlane {
            child: None,
            addr,
            admin,
            logs: Arc::new(Mutex::new(String::new())),
            dir,
            args: args.iter().map(|a| (*a).to_string()).collect(),
        };
        cp.launch().await;
        cp
    }

    /// `http://<ads address>`, for `--xds`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The resource directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn launch(&mut self) {
        let (addr, admin) = (self.addr.to_string(), self.admin.to_string());
        let mut args = vec![
            "control-plane",
            "--dir",
            self.dir.path().to_str().expect("utf-8 path"),
            "--listen",
            &addr,
            "--admin",
            &admin,
        ];
        args.extend(self.args.iter().map(String::as_str));
        let (child, logs) = spawn(&args);
        self.child = Some(child);
        self.logs = logs;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = admin_get(self.admin, "/ready").await {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("control plane exited with {status}:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("control plane not ready:\n{}", self.logs());
    }

    /// Writes (or replaces, atomically) a resource file.
    pub fn write(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write resource file");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename resource file");
    }

    /// Removes a resource file.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove resource file");
    }

    /// `/nodes` as JSON.
    pub async fn nodes(&self) -> serde_json::Value {
        let (status, body) = admin_get(self.admin, "/nodes")
            .await
            .unwrap_or_else(|e| panic!("/nodes: {e}"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("/nodes is JSON")
    }

    /// The last NACK of each type the first node reported: `(type URL, message)`.
    pub async fn last_nacks(&self) -> Vec<(String, String)> {
        let nodes = self.nodes().await;
        let types = nodes["nodes"][0]["types"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        types
            .iter()
            .filter_map(|t| {
                let message = t["last_nack"].as_str()?;
                Some((t["type_url"].as_str()?.to_string(), message.to_string()))
            })
            .collect()
    }

    /// `/files`: each resource file and why it is not served, if it is not.
    pub async fn files(&self) -> String {
        let (status, body) = admin_get(self.admin, "/files")
            .await
            .unwrap_or_else(|e| panic!("/files: {e}"));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().clone()
    }

    /// Stops it (SIGKILL), keeping its directory and ports.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- control plane output ----\n{}---- end of control plane output ----",
                self.logs()
            );
        }
    }
}
