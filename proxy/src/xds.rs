//! Owns Corridor's side of the control stream: the sink that turns ADS
//! updates into store changes (NACKing with every error's resource name and
//! field path, and changing nothing then), readiness (`/ready` waits for the
//! first complete configuration or `initial_fetch_timeout`), and fail-static
//! persistence of what the control plane sent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use corridor_config::proto::{PersistedResource, PersistedResources};
use corridor_config::{Change, Kind, Origin, Resource, Upsert, XdsSettings};
use corridor_xds::{Client, ClientConfig, ClientStatus, Known, Node, Sink, Update};
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prost::Message as _;

use crate::shared::Shared;

/// How often pushed state is written to the fail-static file (at most).
const PERSIST_INTERVAL: Duration = Duration::from_millis(500);

/// The node Corridor announces: id, cluster, locality, and metadata with
/// `cloud`, `region`, `zone` and `role` (what control-plane selectors match).
pub fn node(x: &XdsSettings) -> Node {
    let text = |s: &str| Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    };
    let mut fields = std::collections::BTreeMap::new();
    for (k, v) in [
        ("cloud", x.cloud.as_ref()),
        ("region", x.region.as_ref()),
        ("zone", x.zone.as_ref()),
        ("role", x.role.as_str()),
    ] {
        if !v.is_empty() {
            fields.insert(k.to_string(), text(v));
        }
    }
    Node {
        id: x.node_id.to_string(),
        cluster: x.node_cluster.to_string(),
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        locality: Some(core::Locality {
            region: x.region.to_string(),
            zone: x.zone.to_string(),
            sub_zone: String::new(),
        }),
        user_agent_name: "corridor".to_string(),
        user_agent_version_type: Some(core::node::UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").to_string(),
        )),
        ..Node::default()
    }
}

/// Applies control-stream updates to the shared store.
struct StoreSink {
    shared: Arc<Shared>,
    /// Last applied SotW `version_info` per type.
    versions: parking_lot::Mutex<HashMap<String, String>>,
    /// Pushed state changed since it was last persisted.
    dirty: Arc<AtomicBool>,
}

impl StoreSink {
    /// The change an update asks for, or why it cannot be decoded. A
    /// state-of-the-world resource that names itself with the version the
    /// store holds is kept without being decoded again.
    fn change(&self, update: Update) -> Result<(Kind, Change), String> {
        let kind = Kind::from_type_url(update.type_url())
            .ok_or_else(|| format!("unknown resource type {}", update.type_url()))?;
        let mut errors = Vec::new();
        let mut change = Change {
            origin: Origin::Xds,
            ..Change::default()
        };
        let mut decode =
            |i: usize, r: corridor_xds::Resource, version: String| match Resource::decode(
                kind,
                &r.body.value,
            ) {
                Ok(res) if !r.name.is_empty() && r.name != res.name() => errors.push(format!(
                    "resources[{i}]: named `{}` but the {} inside is named `{}`",
                    r.name,
                    kind.name(),
                    res.name()
                )),
                Ok(res) => change.upserts.push(Upsert::pushed(res, version)),
                Err(e) => {
                    let name = if r.name.is_empty() {
                        format!("resources[{i}]")
                    } else {
                        format!("{}({})", kind.name(), r.name)
                    };
                    errors.push(format!("{name}: {e}"));
                }
            };
        match update {
            Update::Full {
                version_info,
                resources,
                first,
                ..
            } => {
                // Route tables and endpoints may come a few at a time (Envoy's
                // RDS and EDS semantics): only a stream's first response
                // replaces them all; later ones leave out what did not change.
                if first || !kind.sotw_incremental() {
                    change.full = vec![kind];
                }
                let snap = self.shared.snapshot();
                for (i, r) in resources.into_iter().enumerate() {
                    if !r.name.is_empty()
                        && !r.version.is_empty()
                        && snap
                            .store
                            .version_of(kind, &r.name, Origin::Xds)
                            .is_some_and(|v| *v == *r.version)
                    {
                        change.unchanged.push((kind, r.name));
                        continue;
                    }
                    let version = if r.version.is_empty() {
                        version_info.clone()
                    } else {
                        r.version.clone()
                    };
                    decode(i, r, version);
                }
            }
            Update::Delta { added, removed, .. } => {
                for (i, r) in added.into_iter().enumerate() {
                    let version = r.version.clone();
                    decode(i, r, version);
                }
                change.removals = removed.into_iter().map(|n| (kind, n)).collect();
            }
        }
        if errors.is_empty() {
            Ok((kind, change))
        } else {
            Err(errors.join("\n"))
        }
    }
}

impl Sink for StoreSink {
    fn apply(&self, update: Update) -> Result<(), String> {
        // Applies run on the control runtime's blocking pool. Until the first
        // complete configuration there is no traffic to yield to.
        if self.shared.is_configured() {
            crate::lifecycle::lower_thread_priority("control stream");
        }
        let sotw_version = match &update {
            Update::Full { version_info, .. } => Some(version_info.clone()),
            Update::Delta { .. } => None,
        };
        let type_url = update.type_url().to_string();
        let (kind, change) = self.change(update).inspect_err(|e| {
            let kind = Kind::from_type_url(&type_url).map_or("unknown", Kind::name);
            self.shared.metrics.xds_update(kind, false);
            tracing::warn!(type_url, "control-plane update rejected:\n{e}");
        })?;
        let start = std::time::Instant::now();
        match self
            .shared
            .apply_change(change, &format!("control stream {}", kind.name()))
        {
            Ok(applied) => {
                let took = start.elapsed();
                self.shared.metrics.xds_update(kind.name(), true);
                if let Some(v) = sotw_version {
                    self.versions.lock().insert(type_url, v);
                }
                self.dirty.store(true, Ordering::Release);
                tracing::info!(
                    r#type = kind.name(),
                    ?applied,
                    version = %self.shared.snapshot().version,
                    took_us = took.as_micros() as u64,
                    "control-plane update applied"
                );
                Ok(())
            }
            Err(e) => {
                self.shared.metrics.xds_update(kind.name(), false);
                tracing::warn!(
                    r#type = kind.name(),
                    "control-plane update rejected, still serving the previous configuration:\n{e}"
                );
                Err(e
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
    }

    fn known(&self, type_url: &str) -> Known {
        let Some(kind) = Kind::from_type_url(type_url) else {
            return Known::default();
        };
        let snap = self.shared.snapshot();
        Known {
            version_info: self
                .versions
                .lock()
                .get(type_url)
                .cloned()
                .unwrap_or_default(),
            resources: snap
                .store
                .resources_from(kind, Origin::Xds)
                .into_iter()
                .map(|(n, v, _)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// Runs the ADS client, readiness and persistence for the process.
pub struct XdsService {
    shared: Arc<Shared>,
    settings: XdsSettings,
    client: parking_lot::Mutex<Option<Client>>,
    status: ClientStatus,
    dirty: Arc<AtomicBool>,
}

impl XdsService {
    /// A client for `settings` applying to `shared`.
    pub fn new(shared: Arc<Shared>, settings: XdsSettings) -> Self {
        let types = Kind::ALL.iter().map(|k| k.type_url().to_string()).collect();
        let mut cfg = ClientConfig::new(settings.server.to_string(), node(&settings), types);
        cfg.delta = settings.delta;
        cfg.connector = settings.tls.clone().map(crate::control_tls::connector);
        let dirty = Arc::new(AtomicBool::new(false));
        let sink = Arc::new(StoreSink {
            shared: Arc::clone(&shared),
            versions: parking_lot::Mutex::new(HashMap::new()),
            dirty: Arc::clone(&dirty),
        });
        let client = Client::new(cfg, sink);
        let status = client.status();
        *shared.xds.lock() = Some(status.clone());
        if let Err(e) = shared
            .registry
            .register(Box::new(shared.metrics.xds_connected.clone()))
        {
            tracing::warn!("corridor_xds_connected not registered: {e}");
        }
        Self {
            shared,
            settings,
            client: parking_lot::Mutex::new(Some(client)),
            status,
            dirty,
        }
    }
}

/// Writes the pushed resources to the fail-static `file` when they changed.
fn persist(shared: &Shared, file: &Path, dirty: &AtomicBool) {
    if !dirty.swap(false, Ordering::AcqRel) {
        return;
    }
    let snap = shared.snapshot();
    let mut out = PersistedResources::default();
    for kind in Kind::ALL {
        for (_, version, r) in snap.store.resources_from(kind, Origin::Xds) {
            out.resources.push(PersistedResource {
                type_url: kind.type_url().to_string(),
                version: version.to_string(),
                value: r.encode(),
            });
        }
    }
    if let Err(e) = write_atomic(file, &out.encode_to_vec()) {
        tracing::warn!(file = %file.display(), "cannot persist the pushed configuration: {e}");
    }
}

/// Whether nothing has arrived from the control stream yet.
fn nothing_pushed(shared: &Shared) -> bool {
    let snap = shared.snapshot();
    Kind::ALL
        .iter()
        .all(|k| snap.store.resources_from(*k, Origin::Xds).is_empty())
}

/// Fail static: serve the persisted resources (the control plane did not answer in time).
fn restore_persisted(shared: &Shared, file: &Path) {
    if !file.exists() || !nothing_pushed(shared) {
        return;
    }
    let result = restore(file).and_then(|change| {
        shared
            .apply_change(change, "persisted configuration")
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(_) => tracing::warn!(
            file = %file.display(),
            "the control plane did not answer within initial_fetch_timeout: serving the persisted configuration"
        ),
        Err(e) => {
            tracing::error!(file = %file.display(), "cannot serve the persisted configuration: {e}")
        }
    }
}

#[async_trait]
impl BackgroundService for XdsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(client) = self.client.lock().take() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let status = self.status.clone();
        let wait = self.settings.initial_fetch_timeout;
        let persist_file = self.settings.persist_file.clone();
        tokio::spawn(async move {
            let complete = async {
                status.wait_ready().await;
                // A listener whose route table has not arrived is not ready yet.
                while shared
                    .snapshot()
                    .store
                    .warming()
                    .iter()
                    .any(|w| w.kind == Kind::Listener)
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            if tokio::time::timeout(wait, complete).await.is_err() {
                tracing::warn!(
                    timeout = ?wait,
                    "no complete configuration from the control plane within initial_fetch_timeout; ready with what there is"
                );
                if let Some(file) = persist_file {
                    let shared = Arc::clone(&shared);
                    let file = PathBuf::from(file.as_ref());
                    let _ = tokio::task::spawn_blocking(move || restore_persisted(&shared, &file))
                        .await;
                }
            }
            shared.set_configured();
            // The service's runtime has one thread, where the client receives
            // and decodes: from now on it yields to the workers.
            crate::lifecycle::lower_thread_priority("control stream");
        });
        let run = client.spawn();
        let mut tick = tokio::time::interval(PERSIST_INTERVAL);
        let persist_now = || {
            let file = self.settings.persist_file.clone()?;
            let (shared, dirty) = (Arc::clone(&self.shared), Arc::clone(&self.dirty));
            Some(tokio::task::spawn_blocking(move || {
                persist(&shared, Path::new(file.as_ref()), &dirty)
            }))
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(write) = persist_now() {
                        let _ = write.await;
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        run.abort();
        if let Some(write) = persist_now() {
            let _ = write.await;
        }
    }
}

/// The change that restores persisted resources, or why the file is unusable.
pub fn restore(file: &Path) -> Result<Change, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    let set = PersistedResources::decode(bytes.as_slice()).map_err(|e| format!("corrupt: {e}"))?;
    let mut change = Change {
        origin: Origin::Xds,
        ..Change::default()
    };
    for (i, r) in set.resources.iter().enumerate() {
        let kind = Kind::from_type_url(&r.type_url)
            .ok_or_else(|| format!("resources[{i}]: unknown type {}", r.type_url))?;
        let res = Resource::decode(kind, &r.value).map_err(|e| format!("resources[{i}]: {e}"))?;
        change.upserts.push(Upsert::pushed(res, r.version.clone()));
    }
    Ok(change)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    // Owner-only: pushed Secrets carry private keys.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}
