//! Owns the health thread: the outlier detectors' interval reviews, the
//! active health checks, and the GeoIP database's reload checks. One task per (endpoint, check) probes at the
//! check's interval (plus jitter) and flips the endpoint's health after the
//! unhealthy or healthy threshold; tasks follow the configuration (started,
//! kept or stopped on every change) and write into the endpoint state the
//! balancer reads, so a check never runs on a request's path.

mod probe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use corridor_config::{EndpointHealthCheck, HealthCheck, HealthCheckKind};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::task::JoinHandle;

use crate::lb::outlier;
use crate::lb::shared::ClusterShared;
use crate::lb::state::{now_ms, EndpointState};
use crate::routing::{ClusterRuntime, Routing};
use crate::shared::Shared;
use probe::{ProbeKind, ProbeTarget};
use rustls::pki_types::ServerName;

/// How often outlier reviews are considered (each cluster runs at its own interval).
const TICK: Duration = Duration::from_millis(25);

/// Ticks between checks of the GeoIP database file for a new version (500 ms).
const GEO_CHECK_TICKS: u64 = 20;

/// The health service.
pub struct Health {
    shared: Arc<Shared>,
}

impl Health {
    /// A health service over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// Identifies one check of one endpoint of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CheckKey {
    cluster: Arc<str>,
    endpoint: Arc<str>,
    check: usize,
}

/// Everything a running check depends on; a change restarts it.
#[derive(Clone)]
struct CheckSpec {
    state: Arc<EndpointState>,
    shared: Arc<ClusterShared>,
    target: ProbeTarget,
    same: Identity,
}

/// What makes two specs the same check (compared on every change).
#[derive(Clone, PartialEq)]
struct Identity {
    state: usize,
    shared: usize,
    check: HealthCheck,
    endpoint: EndpointHealthCheck,
    addr: SocketAddr,
    h2: bool,
    tls: Option<(u64, String)>,
    expected: Arc<[Arc<str>]>,
    uneject_on_pass: bool,
}

struct Running {
    spec: CheckSpec,
    task: JoinHandle<()>,
}

#[async_trait]
impl BackgroundService for Health {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut checks: HashMap<CheckKey, Running> = HashMap::new();
        let mut reviewed: Vec<Arc<ClusterRuntime>> = Vec::new();
        // The routing last reconciled: weak, so that it is not kept alive,
        // yet its allocation is, and a newer routing cannot take its address.
        let mut seen: Weak<Routing> = Weak::new();
        let mut ticks = 0u64;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let routing = self.shared.routing();
            ticks += 1;
            if ticks.is_multiple_of(GEO_CHECK_TICKS) {
                if let Some(db) = &routing.geo_db {
                    match db.check() {
                        Ok(true) => {
                            tracing::info!(file = %db.path().display(), "GeoIP database reloaded")
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!("{e}; the previous GeoIP database keeps serving"),
                    }
                }
            }
            if !std::ptr::eq(seen.as_ptr(), Arc::as_ptr(&routing)) {
                seen = Arc::downgrade(&routing);
                reviewed = routing
                    .clusters
                    .values()
                    .filter(|rt| rt.config.balancing.outlier.is_some())
                    .cloned()
                    .collect();
                reconcile(&routing, &mut checks);
            }
            drop(routing);
            let now = now_ms();
            for rt in &reviewed {
                outlier::review(rt, now);
            }
        }
        for (_, r) in checks.drain() {
            r.task.abort();
        }
    }
}

/// Starts, keeps or stops check tasks so that they match `routing`. A
/// stopped check's bit is cleared once its task can no longer run (this
/// thread runs the tasks, so an aborted one is never polled again).
fn reconcile(routing: &Routing, checks: &mut HashMap<CheckKey, Running>) {
    let mut wanted: HashMap<CheckKey, CheckSpec> = HashMap::new();
    for rt in routing.clusters.values() {
        let b = &rt.config.balancing;
        if b.health_checks.is_empty() {
            continue;
        }
        let tls = rt.probe_tls();
        let expected: Arc<[Arc<str>]> = rt
            .config
            .tls
            .as_ref()
            .map_or_else(|| Arc::from([]), |t| t.expected_identities.clone().into());
        let uneject_on_pass = b
            .outlier
            .as_ref()
            .is_some_and(|o| o.successful_active_health_check_uneject_host);
        for (i, e) in rt.config.endpoints.iter().enumerate() {
            if e.health_check.disabled {
                continue;
            }
            let mut addr: SocketAddr = e.address;
            if let Some(p) = e.health_check.port {
                addr.set_port(p);
            }
            // The endpoint's TLS name, else the cluster's, else its address.
            let tls = tls.as_ref().map(|(config, hash)| {
                let name = e
                    .hostname
                    .as_deref()
                    .or(rt.config.tls.as_ref().map(|t| t.sni.as_ref()))
                    .filter(|n| !n.is_empty())
                    .and_then(|n| ServerName::try_from(n.to_string()).ok())
                    .unwrap_or_else(|| ServerName::IpAddress(e.address.ip().into()));
                (Arc::clone(config), name, *hash)
            });
            for (ci, check) in b.health_checks.iter().enumerate() {
                let h2 = match check.kind {
                    HealthCheckKind::Grpc { .. } => true,
                    _ => rt.config.protocol != corridor_config::UpstreamProtocol::Http1,
                };
                let state = Arc::clone(&rt.states[i]);
                let same = Identity {
                    state: Arc::as_ptr(&state) as usize,
                    shared: Arc::as_ptr(&rt.shared) as usize,
                    check: check.clone(),
                    endpoint: e.health_check.clone(),
                    addr,
                    h2,
                    tls: tls.as_ref().map(|(_, n, h)| (*h, n.to_str().into_owned())),
                    expected: Arc::clone(&expected),
                    uneject_on_pass,
                };
                wanted.insert(
                    CheckKey {
                        cluster: rt.config.name.clone(),
                        endpoint: e.id.clone(),
                        check: ci,
                    },
                    CheckSpec {
                        state,
                        shared: Arc::clone(&rt.shared),
                        target: ProbeTarget {
                            addr,
                            h2,
                            tls: tls.clone().map(|(c, n, _)| (c, n)),
                            expected_identities: Arc::clone(&expected),
                        },
                        same,
                    },
                );
            }
        }
    }
    checks.retain(|k, r| {
        let keep = wanted.get(k).is_some_and(|w| w.same == r.spec.same);
        if !keep {
            r.task.abort();
            if !wanted.contains_key(k) {
                // The check is gone: its verdict goes with it.
                let bit = 1u32 << k.check;
                let st = &r.spec.state;
                st.hc_unproven.fetch_and(!bit, Ordering::AcqRel);
                if st.hc_failing.fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
                    r.spec.shared.availability_changed();
                }
            }
        }
        keep
    });
    for (k, spec) in wanted {
        if checks.contains_key(&k) {
            continue;
        }
        let kind = probe_kind(
            &spec.same.check.kind,
            &spec.same.endpoint,
            &k.cluster,
            &spec.target,
        );
        let task = tokio::spawn(run_check(k.clone(), spec.clone(), kind));
        checks.insert(k, Running { spec, task });
    }
}

/// The probe for a check, with the endpoint's own path and the default host.
fn probe_kind(
    kind: &HealthCheckKind,
    ep: &EndpointHealthCheck,
    cluster: &str,
    target: &ProbeTarget,
) -> ProbeKind {
    let default_host = || match &target.tls {
        Some((_, name)) => name.to_str().into_owned(),
        None => cluster.to_string(),
    };
    match kind {
        HealthCheckKind::Http {
            path,
            host,
            expected,
        } => ProbeKind::Http {
            path: ep.path.as_deref().unwrap_or(path).to_string(),
            host: host.as_deref().map_or_else(default_host, str::to_string),
            expected: expected.clone(),
        },
        HealthCheckKind::Grpc { service, authority } => ProbeKind::Grpc {
            service: service.to_string(),
            authority: authority
                .as_deref()
                .map_or_else(default_host, str::to_string),
        },
        HealthCheckKind::Tcp => ProbeKind::Tcp,
    }
}

/// Probes one endpoint for one check until stopped, moving its health bit
/// after the thresholds (a new endpoint turns healthy on its first pass).
async fn run_check(key: CheckKey, spec: CheckSpec, kind: ProbeKind) {
    let bit = 1u32 << key.check;
    let c = &spec.same.check;
    let (mut passes, mut fails) = (0u32, 0u32);
    loop {
        let result = probe::probe(&kind, &spec.target, c.timeout).await;
        let st = &spec.state;
        match result {
            Ok(()) => {
                fails = 0;
                passes += 1;
                let failing = st.hc_failing.load(Ordering::Relaxed) & bit != 0;
                let first = st.hc_unproven.fetch_and(!bit, Ordering::AcqRel) & bit != 0;
                if failing && (first || passes >= c.healthy_threshold) {
                    let before = st.hc_failing.fetch_and(!bit, Ordering::AcqRel);
                    if before == bit {
                        *st.hc_last_error.lock() = None;
                        spec.shared.metrics.hc_transition(true);
                        tracing::info!(cluster = %key.cluster, endpoint = %spec.target.addr, "health check passes: endpoint healthy");
                    }
                    spec.shared.availability_changed();
                }
                if spec.same.uneject_on_pass && st.ejected() {
                    outlier::uneject(&spec.shared, st);
                }
            }
            Err(reason) => {
                passes = 0;
                fails += 1;
                st.hc_unproven.fetch_and(!bit, Ordering::AcqRel);
                let failing = st.hc_failing.load(Ordering::Relaxed) & bit != 0;
                if !failing && fails >= c.unhealthy_threshold {
                    let before = st.hc_failing.fetch_or(bit, Ordering::AcqRel);
                    if before == 0 {
                        spec.shared.metrics.hc_transition(false);
                        tracing::warn!(cluster = %key.cluster, endpoint = %spec.target.addr, %reason, "health check fails: endpoint unhealthy");
                    }
                    spec.shared.availability_changed();
                }
                if failing || fails >= c.unhealthy_threshold {
                    *st.hc_last_error.lock() = Some(reason);
                }
            }
        }
        let mut wait = c.interval;
        if !c.interval_jitter.is_zero() {
            wait += Duration::from_millis(fastrand::u64(0..=c.interval_jitter.as_millis() as u64));
        }
        if c.interval_jitter_percent > 0 {
            let max = c.interval.as_millis() as u64 * u64::from(c.interval_jitter_percent) / 100;
            wait += Duration::from_millis(fastrand::u64(0..=max));
        }
        tokio::time::sleep(wait).await;
    }
}
