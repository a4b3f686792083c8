//! Owns assembling and running the Pingora server: the listeners service (one
//! runtime whose accept loops come and go with the configuration), the admin
//! service, and the lifecycle service; and the process settings Pingora reads
//! (threads, grace periods).

use std::sync::Arc;

use async_trait::async_trait;
use corridor_config::Snapshot;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;

use crate::admin::Admin;
use crate::lifecycle::Lifecycle;
use crate::shared::Shared;

/// Upstream connections kept idle per process (Pingora's default is 128).
const UPSTREAM_POOL_SIZE: usize = 1024;

/// The Pingora settings for a snapshot's process settings.
pub(crate) fn server_conf(snap: &Snapshot) -> ServerConf {
    ServerConf {
        threads: snap.runtime.worker_threads.max(1),
        // The lifecycle service exits as soon as in-flight requests finish;
        // this is only the upper bound (Pingora's default is 300 s).
        grace_period_seconds: Some(snap.runtime.drain_timeout.as_secs().max(1) + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: UPSTREAM_POOL_SIZE,
        // Corridor decides retries; this only bounds Pingora's loop (11 tries max).
        max_retries: 16,
        work_stealing: true,
        ..ServerConf::default()
    }
}

/// Runs the accept loops of every listener in this service's runtime.
struct ListenerService {
    shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for ListenerService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.shared.listeners.run(shutdown).await;
    }
}

/// Builds every service for the shared state and runs until shutdown.
/// Returns only after a shutdown completes (SIGTERM drains and exits from the
/// lifecycle service; SIGINT stops at once).
pub fn run(shared: Arc<Shared>) -> anyhow::Result<()> {
    let snap = shared.snapshot();
    let conf = server_conf(&snap);
    let threads = conf.threads;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut listeners = background_service(
        "listeners",
        ListenerService {
            shared: Arc::clone(&shared),
        },
    );
    listeners.threads = Some(threads);
    server.add_service(listeners);

    let mut admin = Service::new(
        "admin".to_string(),
        HttpServer::new_app(Admin::new(Arc::clone(&shared))),
    );
    admin.add_tcp(&snap.admin.address.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

    if let Some(x) = &snap.xds {
        let mut xds = background_service(
            "control stream",
            crate::xds::XdsService::new(Arc::clone(&shared), x.clone()),
        );
        xds.threads = Some(1);
        server.add_service(xds);
    }

    let mut health = background_service("health", crate::health::Health::new(Arc::clone(&shared)));
    health.threads = Some(1);
    server.add_service(health);

    let mut lifecycle = background_service("lifecycle", Lifecycle::new(Arc::clone(&shared)));
    lifecycle.threads = Some(1);
    server.add_service(lifecycle);

    if !snap.admin.address.ip().is_loopback() {
        tracing::warn!(
            admin = %snap.admin.address,
            token = snap.admin.config_dump_token_file.is_some(),
            "the admin listener is not on loopback: /metrics and /config_dump are reachable from the network; \
             bind it to 127.0.0.1 or set admin.config_dump_token_file"
        );
    }
    tracing::info!(
        listeners = ?shared.listeners.serving().iter().map(|(n, a)| format!("{n}={a}")).collect::<Vec<_>>(),
        admin = %snap.admin.address,
        version = %snap.version,
        threads,
        "corridor starting"
    );
    server.run(RunArgs::default());
    crate::logging::flush();
    Ok(())
}
