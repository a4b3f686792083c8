//! Owns the process-wide state every service shares: the current `Routing`
//! behind one `ArcSwap`, listener certificates, metrics and the drain flag; and
//! applying a new configuration atomically (all or nothing).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use arc_swap::ArcSwap;
use corridor_config::{ConfigError, ConfigErrors, Snapshot};
use prometheus::Registry;

use crate::metrics::Metrics;
use crate::routing::Routing;
use crate::tls::{load_certified_key, ReloadableCert};

/// What a reload changed.
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

/// State shared by the proxy, admin and reload services.
pub struct Shared {
    routing: ArcSwap<Routing>,
    /// Data-plane metrics.
    pub metrics: Metrics,
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Certificate resolver per listener (None for plaintext listeners).
    pub(crate) certs: Vec<Option<Arc<ReloadableCert>>>,
    draining: AtomicBool,
    /// The file the configuration is read from, if any.
    pub config_file: Option<PathBuf>,
    reload_lock: parking_lot::Mutex<()>,
}

impl Shared {
    /// Builds the state for the first snapshot.
    pub fn new(
        snapshot: Snapshot,
        config_file: Option<PathBuf>,
        registry: Registry,
    ) -> Result<Arc<Shared>, ConfigErrors> {
        let source = source_name(config_file.as_ref());
        let metrics = Metrics::new(&registry).map_err(|e| {
            ConfigErrors::single(
                &source,
                ConfigError::new("", format!("metrics registration failed: {e}")),
            )
        })?;
        let keys = load_listener_certs(&snapshot).map_err(|errors| ConfigErrors {
            source_name: source.clone(),
            errors,
        })?;
        let certs = keys
            .into_iter()
            .map(|k| k.map(|k| Arc::new(ReloadableCert::new(k))))
            .collect();
        let config = Arc::new(snapshot);
        let routing = Routing::build(config, None, &metrics).map_err(|errors| ConfigErrors {
            source_name: source.clone(),
            errors,
        })?;
        metrics.reload(true);
        metrics.config_loaded_at.set(unix_time(&routing.config));
        Ok(Arc::new(Shared {
            routing: ArcSwap::from_pointee(routing),
            metrics,
            registry,
            certs,
            draining: AtomicBool::new(false),
            config_file,
            reload_lock: parking_lot::Mutex::new(()),
        }))
    }

    /// The current routing state (one atomic load).
    pub(crate) fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.routing.load().config)
    }

    /// Applies a new snapshot, or rejects it whole and keeps serving the old one.
    /// An unchanged configuration still re-reads listener certificates and
    /// upstream CA files, so rotated files take effect.
    pub fn apply(&self, snapshot: Snapshot, source: &str) -> Result<Applied, ConfigErrors> {
        let _guard = self.reload_lock.lock();
        let fail = |errors: Vec<ConfigError>| {
            self.metrics.reload(false);
            ConfigErrors {
                source_name: source.to_string(),
                errors,
            }
        };
        let current = self.routing.load_full();
        let keys = load_listener_certs(&snapshot).map_err(fail)?;
        if current.config.version == snapshot.version {
            // Same configuration: pick up rotated listener certificates and
            // upstream CA bundles, keep everything else.
            let rebuilt =
                Routing::build(Arc::clone(&current.config), Some(&current), &self.metrics)
                    .map_err(fail)?;
            let ca_changed = rebuilt.ca_fingerprint != current.ca_fingerprint;
            if ca_changed {
                self.routing.store(Arc::new(rebuilt));
            }
            let rotated = self.store_certs(keys) || ca_changed;
            if rotated {
                self.metrics.reload(true);
            }
            return Ok(if rotated {
                Applied::TlsFilesReloaded
            } else {
                Applied::Unchanged
            });
        }
        let restart = current.config.restart_needed_for(&snapshot);
        if !restart.is_empty() {
            return Err(fail(restart));
        }
        let routing =
            Routing::build(Arc::new(snapshot), Some(&current), &self.metrics).map_err(fail)?;
        self.store_certs(keys);
        self.metrics
            .config_loaded_at
            .set(unix_time(&routing.config));
        self.routing.store(Arc::new(routing));
        self.metrics.reload(true);
        Ok(Applied::Config)
    }

    /// Installs listener certificates; true if any differed from those served.
    fn store_certs(&self, keys: Vec<Option<Arc<rustls::sign::CertifiedKey>>>) -> bool {
        let mut changed = false;
        for (slot, key) in self.certs.iter().zip(keys) {
            if let (Some(slot), Some(key)) = (slot, key) {
                if slot.current().cert != key.cert {
                    changed = true;
                }
                slot.store(key);
            }
        }
        changed
    }

    /// Re-reads the configuration file and applies it.
    pub fn reload_file(&self) -> Result<Applied, ConfigErrors> {
        let Some(path) = &self.config_file else {
            return Ok(Applied::Unchanged);
        };
        match corridor_config::load_file(path) {
            Ok(snapshot) => self.apply(snapshot, &path.display().to_string()),
            Err(e) => {
                self.metrics.reload(false);
                Err(e)
            }
        }
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

/// Loads every TLS listener's certificate; errors name the listener field.
fn load_listener_certs(
    s: &Snapshot,
) -> Result<Vec<Option<Arc<rustls::sign::CertifiedKey>>>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(s.listeners.len());
    for (i, l) in s.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else {
            out.push(None);
            continue;
        };
        match load_certified_key(&tls.cert_file, &tls.key_file) {
            Ok(k) => out.push(Some(k)),
            Err(e) => {
                let field = if e.file == tls.key_file.as_ref() {
                    "key_file"
                } else {
                    "cert_file"
                };
                errors.push(ConfigError::new(
                    format!("listeners[{i}].tls.{field}"),
                    e.to_string(),
                ));
                out.push(None);
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
