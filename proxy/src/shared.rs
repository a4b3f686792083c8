//! Owns the process-wide state every service shares: the current `Routing`
//! behind one `ArcSwap`, the listener sockets, metrics and the drain flag; and
//! applying a new resource store atomically (all or nothing), whether it came
//! from the configuration file or the control stream.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::UNIX_EPOCH;

use arc_swap::ArcSwap;
use corridor_config::{Change, ConfigError, ConfigErrors, DiskFiles, Files, Snapshot, Store};
use prometheus::Registry;

use crate::listeners::Listeners;
use crate::metrics::Metrics;
use crate::routing::Routing;

/// What a reload or push changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing: the same configuration and certificates.
    Unchanged,
    /// A new configuration snapshot is serving.
    Config,
    /// Same configuration; rotated listener certificates or upstream CA
    /// bundles are in use.
    TlsFilesReloaded,
}

/// Changes applied to the configuration file's bootstrap each time it is read
/// (command-line flags that override it).
pub type Overrides = Arc<dyn Fn(&mut corridor_config::proto::Bootstrap) + Send + Sync>;

/// State shared by the proxy, admin, reload and control-stream services.
pub struct Shared {
    me: Weak<Shared>,
    routing: ArcSwap<Routing>,
    /// Data-plane metrics.
    pub metrics: Metrics,
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Listener sockets and their accept loops.
    pub(crate) listeners: Listeners,
    draining: AtomicBool,
    /// The file the configuration is read from, if any.
    pub config_file: Option<PathBuf>,
    reload_lock: parking_lot::Mutex<()>,
    files: Arc<dyn Files>,
    /// The first complete configuration has arrived (always true without a control stream).
    configured: AtomicBool,
    /// Command-line settings applied to the file on every reload.
    overrides: parking_lot::Mutex<Option<Overrides>>,
    /// Control-stream state for the admin API, once a client runs.
    pub(crate) xds: parking_lot::Mutex<Option<corridor_xds::ClientStatus>>,
    /// Replaced configurations that requests may still hold. They are freed by
    /// [`Shared::reclaim`] on a control thread rather than by the last request
    /// on a worker (freeing ten thousand routes takes milliseconds). A removed
    /// listener's draining accept loop still frees its last table itself.
    retired: parking_lot::Mutex<Vec<Arc<Routing>>>,
    /// Expiries of the control stream's TLS files (`xds/client`, `xds/ca`),
    /// read at start and by the hourly check (they are read per connect, not
    /// per install).
    xds_expiries: parking_lot::Mutex<Vec<(String, i64)>>,
}

impl Shared {
    /// Builds the state for the first store, binding its listener sockets.
    pub fn new(
        store: Store,
        config_file: Option<PathBuf>,
        registry: Registry,
    ) -> Result<Arc<Shared>, ConfigErrors> {
        let source = source_name(config_file.as_ref());
        let fail = |errors: Vec<ConfigError>| ConfigErrors {
            source_name: source.clone(),
            errors,
        };
        let metrics = Metrics::new(&registry).map_err(|e| {
            fail(vec![ConfigError::new(
                "",
                format!("metrics registration failed: {e}"),
            )])
        })?;
        let files: Arc<dyn Files> = Arc::new(DiskFiles);
        let snapshot = Arc::new(store.snapshot());
        let routing = Routing::build(
            Arc::clone(&snapshot),
            None,
            &metrics,
            &snapshot.store.files(&*files),
            true,
        )
        .map_err(fail)?;
        let configured = snapshot.xds.is_none();
        let conf = Arc::new(crate::server::server_conf(&snapshot));
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            routing: ArcSwap::from_pointee(routing),
            metrics,
            registry,
            listeners: Listeners::new(conf, snapshot.runtime.drain_timeout),
            draining: AtomicBool::new(false),
            config_file,
            reload_lock: parking_lot::Mutex::new(()),
            files,
            configured: AtomicBool::new(configured),
            overrides: parking_lot::Mutex::new(None),
            xds: parking_lot::Mutex::new(None),
            retired: parking_lot::Mutex::new(Vec::new()),
            xds_expiries: parking_lot::Mutex::new(Vec::new()),
        });
        let routing = shared.routing();
        let prepared = shared
            .listeners
            .prepare(
                &snapshot,
                &routing,
                &shared,
                &snapshot.store.files(&*shared.files),
                true,
            )
            .map_err(fail)?;
        shared.listeners.commit(prepared, &shared.routing());
        shared.check_cert_expiries();
        shared.metrics.reload(true);
        shared.metrics.config_loaded_at.set(unix_time(&snapshot));
        Ok(shared)
    }

    /// Sets `corridor_cert_expiry_seconds` for every certificate in use and
    /// warns of those expiring within 14 days (errors for expired ones): at
    /// every change, and hourly from the lifecycle service.
    pub(crate) fn refresh_cert_expiries(&self) {
        let mut all = self.listeners.cert_expiries();
        all.extend(self.routing().cert_expiries());
        all.extend(self.xds_expiries.lock().iter().cloned());
        self.metrics.cert_expiries(&all);
    }

    /// Reads the control stream's certificate files again, then does what
    /// `refresh_cert_expiries` does (at start, then hourly).
    pub(crate) fn check_cert_expiries(&self) {
        let mut xds = Vec::new();
        if let Some(tls) = self.snapshot().xds.as_ref().and_then(|x| x.tls.as_ref()) {
            let read = |f: &str| crate::tls::read_certs(&DiskFiles, f).unwrap_or_default();
            if let Some((cert, _)) = &tls.client_cert {
                let leaf = read(cert)
                    .first()
                    .and_then(|c| crate::identity::not_after(c));
                xds.extend(leaf.map(|t| ("xds/client".to_string(), t)));
            }
            if let Some(ca) = &tls.ca_file {
                let certs = read(ca);
                let at = crate::identity::earliest_not_after(certs.iter().map(|c| c.as_ref()));
                xds.extend(at.map(|t| ("xds/ca".to_string(), t)));
            }
        }
        *self.xds_expiries.lock() = xds;
        self.refresh_cert_expiries();
    }

    /// The current routing state (one atomic load).
    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.routing.load().config)
    }

    /// The files seam TLS material is read through.
    pub fn files(&self) -> &dyn Files {
        &*self.files
    }

    /// Applies a change to the current store (a control-stream push: references
    /// may warm). Rejected changes leave everything as it was.
    pub fn apply_change(&self, change: Change, source: &str) -> Result<Applied, ConfigErrors> {
        let _guard = self.reload_lock.lock();
        let start = std::time::Instant::now();
        let current = self.snapshot();
        let next = current
            .store
            .apply(change, &*self.files, false)
            .map_err(|errors| self.failed(source, errors))?;
        let applied = self.install(next, source, false);
        self.metrics.config_applied("xds", start.elapsed());
        applied
    }

    /// Applies a new store, or rejects it whole and keeps serving the old one.
    /// An unchanged configuration still re-reads listener certificates and
    /// upstream CA files when `reread_tls`, so rotated files take effect.
    pub fn apply(
        &self,
        next: Store,
        source: &str,
        reread_tls: bool,
    ) -> Result<Applied, ConfigErrors> {
        let _guard = self.reload_lock.lock();
        self.install(next, source, reread_tls)
    }

    fn failed(&self, source: &str, errors: Vec<ConfigError>) -> ConfigErrors {
        self.metrics.reload(false);
        ConfigErrors {
            source_name: source.to_string(),
            errors,
        }
    }

    /// Installs `next`; the caller holds the reload lock.
    fn install(
        &self,
        next: Store,
        source: &str,
        reread_tls: bool,
    ) -> Result<Applied, ConfigErrors> {
        let current = self.routing.load_full();
        let restart = current
            .config
            .store
            .settings()
            .restart_needed_for(next.settings());
        if !restart.is_empty() {
            return Err(self.failed(source, restart));
        }
        let snapshot = Arc::new(next.snapshot());
        let same = snapshot.version == current.config.version;
        // Pushed Secrets are read through the files seam: a changed Secret
        // is read again like a rotated file.
        let reread_tls = reread_tls || snapshot.store.secrets_differ(&current.config.store);
        let tls_files = snapshot.store.files(&*self.files);
        let routing = Routing::build(
            Arc::clone(&snapshot),
            Some(&current),
            &self.metrics,
            &tls_files,
            reread_tls,
        )
        .map_err(|e| self.failed(source, e))?;
        let Some(me) = self.me.upgrade() else {
            return Err(self.failed(
                source,
                vec![ConfigError::new("", "the process is shutting down")],
            ));
        };
        let prepared = self
            .listeners
            .prepare(&snapshot, &routing, &me, &tls_files, reread_tls)
            .map_err(|e| self.failed(source, e))?;
        let rotated = prepared.certs_changed || routing.ca_fingerprint != current.ca_fingerprint;
        let routing = Arc::new(routing);
        self.routing.store(Arc::clone(&routing));
        routing.activate(&self.metrics);
        self.listeners.commit(prepared, &routing);
        self.refresh_cert_expiries();
        self.retired.lock().push(current);
        self.reclaim();
        if same && !rotated {
            return Ok(Applied::Unchanged);
        }
        self.metrics.reload(true);
        if same {
            return Ok(Applied::TlsFilesReloaded);
        }
        self.metrics.config_loaded_at.set(unix_time(&snapshot));
        Ok(Applied::Config)
    }

    /// Re-reads the configuration file and applies it over the current store
    /// (resources pushed by the control stream stay).
    pub fn reload_file(&self) -> Result<Applied, ConfigErrors> {
        let Some(path) = &self.config_file else {
            return Ok(Applied::Unchanged);
        };
        let name = path.display().to_string();
        let _guard = self.reload_lock.lock();
        let start = std::time::Instant::now();
        let (mut bootstrap, map) =
            corridor_config::read_bootstrap(path).map_err(|e| self.failed(&name, e.errors))?;
        if let Some(overrides) = self.overrides.lock().clone() {
            overrides(&mut bootstrap);
        }
        let settings = Store::settings_of(&bootstrap, &*self.files).map_err(|(_, e)| {
            self.metrics.reload(false);
            corridor_config::locate_errors(e, &map, &name)
        })?;
        let current = self.snapshot();
        let strict = settings.xds.is_none();
        let next = current
            .store
            .with_settings(settings, &bootstrap)
            .apply(Change::from_bootstrap(&bootstrap), &*self.files, strict)
            .map_err(|e| {
                self.metrics.reload(false);
                corridor_config::locate_errors(e, &map, &name)
            })?;
        let applied = self.install(next, &name, true);
        self.metrics.config_applied("file", start.elapsed());
        applied
    }

    /// Sets what is applied to the file's bootstrap on every reload (the
    /// command-line flags that override it at start).
    pub fn set_overrides(&self, overrides: Overrides) {
        *self.overrides.lock() = Some(overrides);
    }

    /// Re-reads listener certificates and upstream CA bundles for the current
    /// configuration (their files changed; there is no configuration file to reload).
    pub fn reread_tls(&self) -> Result<Applied, ConfigErrors> {
        let _guard = self.reload_lock.lock();
        let store = (*self.snapshot().store).clone();
        self.install(store, "TLS files", true)
    }

    /// Frees the replaced configurations that no request holds any more; the
    /// control threads call it after every change and periodically.
    pub fn reclaim(&self) {
        let unused: Vec<Arc<Routing>> = {
            let mut retired = self.retired.lock();
            let (unused, held) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|r| Arc::strong_count(r) == 1);
            *retired = held;
            unused
        };
        drop(unused);
    }

    /// Marks the first complete configuration as arrived (`/ready` may turn 200).
    pub fn set_configured(&self) {
        self.configured.store(true, Ordering::Release);
    }

    /// Whether the first complete configuration has arrived.
    pub fn is_configured(&self) -> bool {
        self.configured.load(Ordering::Acquire)
    }

    /// Marks the process as draining (`/ready` turns 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

fn source_name(file: Option<&PathBuf>) -> String {
    file.map_or_else(|| "<embedded>".to_string(), |p| p.display().to_string())
}

fn unix_time(s: &Snapshot) -> i64 {
    s.loaded_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corridor_config::testing::{cluster, endpoints, route_table, scale_resources};
    use corridor_config::{proto, Origin, Resource, Upsert};

    fn push(shared: &Shared, upserts: Vec<Resource>) {
        let change = Change {
            upserts: upserts.into_iter().map(|r| Upsert::pushed(r, "")).collect(),
            origin: Origin::Xds,
            ..Change::default()
        };
        shared.apply_change(change, "test").expect("applies");
    }

    #[test]
    fn an_update_rebuilds_only_the_clusters_it_touches() {
        let shared = Shared::new(Store::empty(), None, Registry::new()).unwrap();
        push(
            &shared,
            (0..3).flat_map(|c| [cluster(c), endpoints(c, 0)]).collect(),
        );
        let before = shared.routing();
        push(&shared, vec![endpoints(1, 1)]);
        let after = shared.routing();
        assert_eq!(
            after
                .config
                .store
                .changed_clusters_since(&before.config.store)
                .map(|c| c.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
            Some(vec!["c0001".to_string()]),
            "the store names the one cluster the update touched"
        );
        for c in ["c0000", "c0002"] {
            assert!(Arc::ptr_eq(&before.clusters[c], &after.clusters[c]), "{c}");
        }
        let rebuilt = &after.clusters["c0001"];
        assert!(!Arc::ptr_eq(&before.clusters["c0001"], rebuilt));
        assert_eq!(rebuilt.config.endpoints[0].address.port(), 8001);
        assert!(Arc::ptr_eq(
            &rebuilt.config,
            shared.snapshot().cluster("c0001").unwrap()
        ));
        let change = Change {
            removals: vec![(corridor_config::Kind::Cluster, "c0002".into())],
            origin: Origin::Xds,
            ..Change::default()
        };
        shared.apply_change(change, "test").unwrap();
        let last = shared.routing();
        assert!(!last.clusters.contains_key("c0002"));
        assert_eq!(last.clusters.len(), 2);
        assert!(Arc::ptr_eq(
            &after.clusters["c0000"],
            &last.clusters["c0000"]
        ));
    }

    /// Times whole control-stream applies (store, snapshot, routing, listeners)
    /// at the scale benchmark's size. Run with
    /// `cargo test -p corridor-proxy --release --lib -- --ignored --nocapture apply_cost`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn apply_cost_at_scale() {
        let shared = Shared::new(Store::empty(), None, Registry::new()).unwrap();
        let mut upserts = scale_resources();
        upserts.push(Resource::Listener(proto::Listener {
            name: "main".into(),
            address: "127.0.0.1:0".into(),
            route_table: "big".into(),
            ..Default::default()
        }));
        push(&shared, upserts);
        let mut times = Vec::new();
        for gen in 1..=200 {
            let t = std::time::Instant::now();
            push(&shared, vec![endpoints(7, gen)]);
            times.push(t.elapsed());
        }
        times.sort();
        let mut table_times = Vec::new();
        for gen in 1..=9 {
            let next = route_table(gen);
            let t = std::time::Instant::now();
            push(&shared, vec![next]);
            table_times.push(t.elapsed());
        }
        table_times.sort();
        println!(
            "one-endpoint apply_change: median {:?}, p90 {:?}; 10k-route table: median {:?}",
            times[times.len() / 2],
            times[times.len() * 9 / 10],
            table_times[table_times.len() / 2]
        );
        assert_eq!(
            shared.snapshot().cluster("c0007").unwrap().endpoints.len(),
            50
        );
    }
}
