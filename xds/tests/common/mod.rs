//! Shared test support: a recording sink, resource builders, a restartable
//! server on a fixed port, and polling waits (never fixed sleeps).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corridor_xds::{
    serve, type_url, AdsServer, Any, ClientConfig, Known, MemorySource, Node, ServerOptions, Sink,
    Update,
};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous deadline for anything that should happen "soon" on a noisy machine.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn cluster() -> String {
    type_url("Cluster")
}

pub fn endpoints() -> String {
    type_url("Endpoints")
}

/// A resource body whose value is `name=payload`, which [`TestSink`] understands.
pub fn body(type_url: &str, name: &str, payload: &str) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: format!("{name}={payload}").into_bytes(),
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls `cond` every 10 ms until it holds, panicking after [`DEADLINE`].
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond() {
            return;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client config with fast reconnection for tests.
pub fn client_config(
    addr: SocketAddr,
    node_id: &str,
    delta: bool,
    types: &[String],
) -> ClientConfig {
    let node = Node {
        id: node_id.to_string(),
        cluster: "test-cluster".to_string(),
        ..Default::default()
    };
    let mut cfg = ClientConfig::new(format!("http://{addr}"), node, types.to_vec());
    cfg.delta = delta;
    cfg.backoff_base = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg
}

/// What the sink holds for one type.
#[derive(Clone, Debug, Default)]
pub struct Held {
    pub version_info: String,
    /// name -> (version, payload)
    pub resources: BTreeMap<String, (String, String)>,
}

/// A sink that decodes `name=payload` bodies, rejects payloads starting with
/// `reject` and bodies that are not UTF-8, and records every update.
#[derive(Default)]
pub struct TestSink {
    held: Mutex<HashMap<String, Held>>,
    log: Mutex<Vec<(Update, bool)>>,
}

impl TestSink {
    pub fn held(&self, type_url: &str) -> Held {
        self.held.lock().get(type_url).cloned().unwrap_or_default()
    }

    pub fn names(&self, type_url: &str) -> Vec<String> {
        self.held(type_url).resources.keys().cloned().collect()
    }

    pub fn payload(&self, type_url: &str, name: &str) -> Option<String> {
        self.held(type_url)
            .resources
            .get(name)
            .map(|(_, p)| p.clone())
    }

    pub fn version(&self, type_url: &str, name: &str) -> Option<String> {
        self.held(type_url)
            .resources
            .get(name)
            .map(|(v, _)| v.clone())
    }

    /// Number of `apply` calls so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().len()
    }

    /// The updates from `apply` call number `from` on, with whether each was accepted.
    pub fn log_since(&self, from: usize) -> Vec<(Update, bool)> {
        self.log
            .lock()
            .get(from..)
            .map(|s| s.to_vec())
            .unwrap_or_default()
    }

    fn decode(r: &corridor_xds::Resource) -> Result<(String, String), String> {
        let text =
            std::str::from_utf8(&r.body.value).map_err(|_| "body is not UTF-8".to_string())?;
        let (name, payload) = text
            .split_once('=')
            .ok_or_else(|| format!("body {text:?} has no '='"))?;
        if !r.name.is_empty() && r.name != name {
            return Err(format!("name {:?} does not match body {name:?}", r.name));
        }
        if payload.starts_with("reject") {
            return Err(format!("rejected {name}: {payload}"));
        }
        Ok((name.to_string(), payload.to_string()))
    }

    fn try_apply(&self, update: &Update) -> Result<(), String> {
        let mut all = self.held.lock();
        match update {
            Update::Full {
                type_url,
                version_info,
                resources,
                ..
            } => {
                let mut next = Held {
                    version_info: version_info.clone(),
                    ..Held::default()
                };
                for r in resources {
                    let (name, payload) = Self::decode(r)?;
                    if next
                        .resources
                        .insert(name.clone(), (r.version.clone(), payload))
                        .is_some()
                    {
                        return Err(format!("duplicate {name}"));
                    }
                }
                all.insert(type_url.clone(), next);
            }
            Update::Delta {
                type_url,
                system_version_info,
                added,
                removed,
            } => {
                let mut next = all.get(type_url).cloned().unwrap_or_default();
                next.version_info = system_version_info.clone();
                for r in added {
                    let (name, payload) = Self::decode(r)?;
                    next.resources.insert(name, (r.version.clone(), payload));
                }
                for name in removed {
                    next.resources.remove(name);
                }
                all.insert(type_url.clone(), next);
            }
        }
        Ok(())
    }
}

impl Sink for TestSink {
    fn apply(&self, update: Update) -> Result<(), String> {
        let result = self.try_apply(&update);
        self.log.lock().push((update, result.is_ok()));
        result
    }

    fn known(&self, type_url: &str) -> Known {
        let held = self.held(type_url);
        Known {
            version_info: held.version_info,
            resources: held
                .resources
                .into_iter()
                .map(|(name, (version, _))| (name, version))
                .collect(),
        }
    }
}

/// Binds 127.0.0.1 on `port` (0 = any), retrying while the old socket lingers.
pub async fn bind(port: u16) -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) if start.elapsed() < DEADLINE => {
                eprintln!("bind 127.0.0.1:{port}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
        }
    }
}

/// A reference server running on a task, stoppable so that a new one can
/// take the same port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub server: AdsServer,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(source: Arc<MemorySource>, opts: ServerOptions, port: u16) -> Self {
        let listener = bind(port).await;
        let addr = listener.local_addr().expect("local addr");
        let server = AdsServer::with_options(source, opts);
        let (stop, stopped) = oneshot::channel::<()>();
        let s = server.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = serve(listener, s, shutdown).await {
                eprintln!("server error: {e}");
            }
        });
        TestServer {
            addr,
            server,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the server: streams end, the listener closes; waits for the drain.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .is_err()
        {
            eprintln!("server did not drain in time; aborting");
            self.task.abort();
        }
    }
}
