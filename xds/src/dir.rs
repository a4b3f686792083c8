//! Owns `DirSource`, what `corridor control-plane` serves: a directory of
//! YAML/JSON `ResourceFile`s, each validated with Corridor's own validator
//! (an invalid file is reported with `file:line:column` and its previous good
//! version keeps being served), re-read when a file changes, and filtered
//! per node by each file's `nodes` selector (id, cloud, region, zone, role).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use corridor_config::proto::{self, NodeSelector};
use corridor_config::{Change, ConfigErrors, Store};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::source::{ResourceMap, Source};
use crate::{Any, Node};

/// One file of the directory as last read.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Resources served from it (its last good version).
    pub resources: usize,
    /// Why its current content is not served, if it is not.
    pub error: Option<String>,
    /// When it was last read.
    pub read_at: SystemTime,
}

/// A file's last good content.
#[derive(Debug)]
struct Good {
    selector: NodeSelector,
    /// Per type: name -> (version, Any).
    types: HashMap<&'static str, Vec<(String, String, Any)>>,
}

#[derive(Default)]
struct State {
    /// Stamps of the files seen, to notice changes.
    stamps: BTreeMap<PathBuf, (SystemTime, u64)>,
    files: BTreeMap<PathBuf, Arc<Good>>,
    reports: BTreeMap<PathBuf, FileReport>,
    /// Views already built, keyed by which files a node matches.
    views: HashMap<Vec<usize>, Arc<HashMap<String, Arc<ResourceMap>>>>,
}

/// Serves a directory of resource files.
pub struct DirSource {
    dir: PathBuf,
    state: Mutex<State>,
    generation: watch::Sender<u64>,
}

impl DirSource {
    /// A source over `dir`, read once now.
    pub fn new(dir: impl Into<PathBuf>) -> Arc<DirSource> {
        let s = Arc::new(DirSource {
            dir: dir.into(),
            state: Mutex::new(State::default()),
            generation: watch::channel(0).0,
        });
        s.rescan();
        s
    }

    /// Re-reads files that changed, appeared or vanished; notifies
    /// subscribers when what is served changed. Returns whether it did.
    pub fn rescan(&self) -> bool {
        let mut seen = BTreeMap::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let path = e.path();
                    let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
                    if !matches!(ext, "yaml" | "yml" | "json") {
                        continue;
                    }
                    if let Ok(m) = std::fs::metadata(&path) {
                        let stamp = (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len());
                        seen.insert(path, stamp);
                    }
                }
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "cannot read the resource directory: {e}");
                return false;
            }
        }
        let mut state = self.state.lock();
        if seen == state.stamps {
            return false;
        }
        let mut changed = false;
        let gone: Vec<PathBuf> = state
            .files
            .keys()
            .filter(|p| !seen.contains_key(*p))
            .cloned()
            .collect();
        for p in gone {
            tracing::info!(file = %p.display(), "resource file removed");
            state.files.remove(&p);
            state.reports.remove(&p);
            changed = true;
        }
        for (path, stamp) in &seen {
            if state.stamps.get(path) == Some(stamp) {
                continue;
            }
            let (good, report) = read_file(path);
            match good {
                Some(g) => {
                    let same = state
                        .files
                        .get(path)
                        .is_some_and(|old| same_content(old, &g));
                    if !same {
                        tracing::info!(file = %path.display(), resources = report.resources, "resource file loaded");
                        state.files.insert(path.clone(), Arc::new(g));
                        changed = true;
                    }
                }
                None => {
                    let kept = state.files.get(path).map_or(0, |g| count(g));
                    tracing::error!(
                        file = %path.display(),
                        "resource file rejected, not pushed (serving its previous version, {kept} resources):\n{}",
                        report.error.as_deref().unwrap_or("")
                    );
                }
            }
            let mut report = report;
            if report.error.is_some() {
                report.resources = state.files.get(path).map_or(0, |g| count(g));
            }
            state.reports.insert(path.clone(), report);
        }
        state.stamps = seen;
        if changed {
            state.views.clear();
            drop(state);
            self.generation.send_modify(|g| *g = g.wrapping_add(1));
        }
        changed
    }

    /// What the last read of each file found.
    pub fn reports(&self) -> Vec<FileReport> {
        self.state.lock().reports.values().cloned().collect()
    }

    /// Watches the directory, rescanning every `interval`, until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: std::time::Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = Arc::clone(&self);
            // Reading and validating files is blocking work.
            if tokio::task::spawn_blocking(move || me.rescan())
                .await
                .is_err()
            {
                tracing::error!("resource directory scan panicked");
            }
        }
    }

    /// The per-type view for a node, shared by every node matching the same files.
    fn view(&self, node: &Node) -> Arc<HashMap<String, Arc<ResourceMap>>> {
        let meta = metadata(node);
        let mut state = self.state.lock();
        let matching: Vec<usize> = state
            .files
            .values()
            .enumerate()
            .filter(|(_, g)| selects(&g.selector, &node.id, &meta))
            .map(|(i, _)| i)
            .collect();
        if let Some(v) = state.views.get(&matching) {
            return Arc::clone(v);
        }
        let mut types: HashMap<String, ResourceMap> = HashMap::new();
        for (i, (path, good)) in state.files.iter().enumerate() {
            if !matching.contains(&i) {
                continue;
            }
            for (type_url, list) in &good.types {
                let map = types.entry((*type_url).to_string()).or_default();
                for (name, version, any) in list {
                    if map.contains_key(name) {
                        tracing::warn!(file = %path.display(), name, type_url, node = node.id, "resource defined by two files matching this node; the first file (by name) wins");
                        continue;
                    }
                    map.insert(name.clone(), (version.clone(), any.clone()));
                }
            }
        }
        let view: Arc<HashMap<String, Arc<ResourceMap>>> =
            Arc::new(types.into_iter().map(|(t, m)| (t, Arc::new(m))).collect());
        state.views.insert(matching, Arc::clone(&view));
        view
    }
}

impl Source for DirSource {
    fn resources(&self, node: &Node, type_url: &str) -> Arc<ResourceMap> {
        self.view(node).get(type_url).cloned().unwrap_or_default()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

fn count(g: &Good) -> usize {
    g.types.values().map(Vec::len).sum()
}

fn same_content(a: &Good, b: &Good) -> bool {
    a.selector == b.selector
        && a.types.len() == b.types.len()
        && a.types.iter().all(|(t, list)| {
            b.types.get(t).is_some_and(|other| {
                other.len() == list.len()
                    && other
                        .iter()
                        .zip(list)
                        .all(|(x, y)| x.0 == y.0 && x.1 == y.1)
            })
        })
}

/// Reads and validates one file.
fn read_file(path: &Path) -> (Option<Good>, FileReport) {
    let name = path.display().to_string();
    let mut report = FileReport {
        path: path.to_path_buf(),
        resources: 0,
        error: None,
        read_at: SystemTime::now(),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            report.error = Some(format!("{name}: cannot read: {e}"));
            return (None, report);
        }
    };
    match validate(&text, &name) {
        Ok(good) => {
            report.resources = count(&good);
            (Some(good), report)
        }
        Err(e) => {
            report.error = Some(e.to_string());
            (None, report)
        }
    }
}

/// Parses a resource file and checks every resource with the proxy's
/// validator; returns how many resources it holds, or every error with its
/// `file:line:column` and field path.
pub fn check_file(text: &str, name: &str) -> Result<usize, ConfigErrors> {
    validate(text, name).map(|g| count(&g))
}

/// Parses a resource file and checks every resource with the proxy's validator.
fn validate(text: &str, name: &str) -> Result<Good, ConfigErrors> {
    let (file, map) = corridor_config::parse_resource_file(text, name)?;
    let bootstrap = proto::Bootstrap {
        listeners: file.listeners,
        route_tables: file.route_tables,
        clusters: file.clusters,
        endpoints: file.endpoints,
        residency_policies: file.residency_policies,
        secrets: file.secrets,
        ..proto::Bootstrap::default()
    };
    let change = Change::from_bootstrap(&bootstrap);
    Store::for_control_plane()
        // Certificate and CA paths name files on the proxies, not here.
        .apply(change.clone(), &corridor_config::UncheckedPaths, false)
        .map_err(|e| corridor_config::locate_errors(e, &map, name))?;
    let mut types: HashMap<&'static str, Vec<(String, String, Any)>> = HashMap::new();
    for u in change.upserts {
        let kind = u.resource.kind();
        let value = u.resource.encode();
        let version = format!("{:016x}", corridor_config::fnv(&value));
        types.entry(kind.type_url()).or_default().push((
            u.resource.name().to_string(),
            version,
            Any {
                type_url: kind.type_url().to_string(),
                value,
            },
        ));
    }
    for list in types.values_mut() {
        list.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(Good {
        selector: file.nodes.unwrap_or_default(),
        types,
    })
}

/// A node's string metadata.
fn metadata(node: &Node) -> HashMap<String, String> {
    use envoy_types::pb::google::protobuf::value::Kind as V;
    node.metadata
        .as_ref()
        .map(|m| {
            m.fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(V::StringValue(s)) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `sel` selects a node with this id and metadata.
fn selects(sel: &NodeSelector, id: &str, meta: &HashMap<String, String>) -> bool {
    let field = |list: &[String], key: &str| {
        list.is_empty() || meta.get(key).is_some_and(|v| list.iter().any(|x| x == v))
    };
    (sel.ids.is_empty() || sel.ids.iter().any(|x| x == id))
        && field(&sel.clouds, "cloud")
        && field(&sel.regions, "region")
        && field(&sel.zones, "zone")
        && field(&sel.roles, "role")
}
