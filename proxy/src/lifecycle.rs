//! Owns the process lifecycle around the proxy: reloading the configuration
//! file when it (or a listener certificate) changes or on SIGHUP, and draining on shutdown (stop accepting,
//! let in-flight requests finish up to the drain timeout, then exit).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::shared::{Applied, Shared};

/// How often the configuration file is checked for changes.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The nice value of the threads that apply configuration (file reloads and
/// the control stream). Where they share a core with a worker (a sidecar
/// limited to one CPU), a compile of ten thousand routes then takes its CPU
/// from idle time first: with the core saturated it gets about a tenth of it,
/// so requests keep their latency and the change lands a little later. The
/// control stream lowers its threads once the first complete configuration
/// has arrived (before that there is no traffic to protect). In a container
/// nice only ranks the proxy's own threads; outside one it also ranks them
/// below every other process at nice 0.
const CONTROL_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`CONTROL_NICE`] (Linux
/// sets nice per thread). Failure only costs latency under load, so it is logged.
#[cfg(target_os = "linux")]
pub(crate) fn lower_thread_priority(what: &str) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), CONTROL_NICE) {
        tracing::debug!("cannot lower the {what} thread's priority: {e}");
    }
}

/// Elsewhere nice is per process: the control threads keep their priority.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_thread_priority(_what: &str) {}

/// Reloads configuration and drains on shutdown.
pub struct Lifecycle {
    shared: Arc<Shared>,
}

impl Lifecycle {
    /// A lifecycle service over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn reload(&self, why: &str) {
        let result = if self.shared.config_file.is_some() {
            self.shared.reload_file()
        } else {
            self.shared.reread_tls()
        };
        match result {
            Ok(Applied::Config) => tracing::info!(
                version = %self.shared.snapshot().version,
                trigger = why,
                "configuration reloaded"
            ),
            Ok(Applied::TlsFilesReloaded) => tracing::info!(trigger = why, "TLS files reloaded"),
            Ok(Applied::Unchanged) => tracing::debug!(trigger = why, "configuration unchanged"),
            Err(errors) => tracing::error!(
                trigger = why,
                errors = errors.errors.len(),
                "configuration rejected, still serving version {}:\n{errors}",
                self.shared.snapshot().version
            ),
        }
    }

    async fn drain(&self) {
        self.shared.start_draining();
        let limit = self.shared.snapshot().runtime.drain_timeout;
        let start = Instant::now();
        let active = &self.shared.metrics.active_requests;
        tracing::info!(in_flight = active.get(), timeout = ?limit, "draining: no new connections accepted");
        while active.get() > 0 && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if active.get() > 0 {
            tracing::warn!(
                in_flight = active.get(),
                "drain timeout reached; exiting with requests in flight"
            );
        } else {
            tracing::info!(took = ?start.elapsed(), "drained; exiting");
        }
        crate::logging::flush();
        std::process::exit(0);
    }
}

/// What identifies a version of a file on disk (following symlinks, so a
/// Kubernetes-style `..data` swap is seen).
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Stamps of the configuration file (if any), every listener certificate,
/// key and client trust bundle, and every upstream CA bundle and client
/// certificate: watched with or without a file, so certificates rotate
/// under a control stream too.
fn stamps(shared: &Shared) -> Vec<Option<(SystemTime, u64, u64)>> {
    let snap = shared.snapshot();
    let tls_files = snap
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| {
            let bundles = t
                .client_auth
                .iter()
                .flat_map(|a| a.trust_bundles.iter().map(|(_, f)| f.clone()));
            [t.cert_file.clone(), t.key_file.clone()]
                .into_iter()
                .chain(bundles)
        })
        .chain(
            snap.clusters
                .values()
                .filter_map(|c| c.tls.as_ref())
                .flat_map(|t| {
                    let client = t
                        .client_cert
                        .iter()
                        .flat_map(|(c, k)| [c.clone(), k.clone()]);
                    t.ca_file.clone().into_iter().chain(client)
                }),
        );
    shared
        .config_file
        .iter()
        .map(|c| stamp(c))
        .chain(tls_files.map(|f| stamp(Path::new(f.as_ref()))))
        .collect()
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        lower_thread_priority("lifecycle");
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP, reload on signal is off: {e}");
                None
            }
        };
        let mut last = stamps(&self.shared);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        // Certificates expire without any change: warn hourly.
        let mut expiry_check = tokio::time::interval(Duration::from_secs(3600));
        expiry_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        expiry_check.tick().await;
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        self.drain().await;
                        return;
                    }
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    last = stamps(&self.shared);
                    self.reload("SIGHUP");
                }
                _ = expiry_check.tick() => self.shared.check_cert_expiries(),
                _ = tick.tick() => {
                    self.shared.reclaim();
                    let now = stamps(&self.shared);
                    if now != last {
                        last = now;
                        self.reload("file change");
                    }
                }
            }
        }
    }
}
