//! Owns assembling and running the Pingora server: one proxy service per
//! listener (h1 + h2c, or TLS with ALPN), the admin service, and the lifecycle
//! service; and the process settings Pingora reads (threads, grace periods).

use std::sync::Arc;

use anyhow::Context as _;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig, ALPN};
use pingora_core::protocols::http::v2::server::default_h2_options;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy_service_with_name;

use crate::admin::Admin;
use crate::lifecycle::Lifecycle;
use crate::proxy::Corridor;
use crate::shared::Shared;

/// Upstream connections kept idle per process (Pingora's default is 128).
const UPSTREAM_POOL_SIZE: usize = 1024;

/// Builds every service for the shared state and runs until shutdown.
/// Returns only after a shutdown completes (SIGTERM drains and exits from the
/// lifecycle service; SIGINT stops at once).
pub fn run(shared: Arc<Shared>) -> anyhow::Result<()> {
    let snap = shared.snapshot();
    let threads = snap.runtime.worker_threads.max(1);
    let conf = ServerConf {
        threads,
        // The lifecycle service exits as soon as in-flight requests finish;
        // this is only the upper bound (Pingora's default is 300 s).
        grace_period_seconds: Some(snap.runtime.drain_timeout.as_secs().max(1) + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: UPSTREAM_POOL_SIZE,
        // Corridor decides retries; this only bounds Pingora's loop (11 tries max).
        max_retries: 16,
        work_stealing: true,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = Arc::clone(&server.configuration);

    for (i, l) in snap.listeners.iter().enumerate() {
        let mut svc = http_proxy_service_with_name(
            &conf,
            Corridor::new(Arc::clone(&shared), i),
            &format!("listener {}", l.name),
        );
        if let Some(app) = svc.app_logic_mut() {
            let mut options = HttpServerOptions::default();
            options.h2c = l.tls.is_none() && l.protocols.h2c;
            // Illegal bytes in a request-target are rejected, not percent-encoded and
            // forwarded; CONNECT reaches Corridor's checks, which answer 405 themselves.
            options.reject_illegal_request_target = true;
            options.allow_connect_method_proxying = true;
            // HTTP/2 authority conflicts reach Corridor's checks and get its own 400.
            options.h2_defer_authority_validation = true;
            app.server_options = Some(options);
            // The listener's limits are checked per request (and follow reloads); the
            // codec's bound, set once here with room to spare, caps what it decodes first.
            let mut h2 = default_h2_options();
            let limits = &l.http.limits;
            let list = 2 * (limits.max_headers_bytes + 32 * limits.max_headers_count);
            h2.max_header_list_size(list.clamp(64 * 1024, 4 * 1024 * 1024) as u32);
            app.h2_options = Some(h2);
        }
        // Unbuffered writes: every body chunk (an SSE event, a token) leaves at once.
        let mut endpoint = ListenerConfig::tcp(l.address.to_string()).l4_buffer(L4BufferSettings {
            read: None,
            write: Some(0),
        });
        if let (Some(tls), Some(Some(resolver))) = (&l.tls, shared.certs.get(i)) {
            // Paths stay empty: the resolver serves the certificate and a reload swaps it.
            let mut settings = TlsSettings::intermediate("", "")
                .with_context(|| format!("listener {}: TLS setup", l.name))?;
            settings.set_cert_resolver(Arc::clone(resolver) as _);
            let h2 = tls.alpn.iter().any(|a| a.as_ref() == "h2");
            let h1 = tls.alpn.iter().any(|a| a.as_ref() == "http/1.1");
            settings.set_alpn(match (h2, h1) {
                (true, true) => ALPN::H2H1,
                (true, false) => ALPN::H2,
                _ => ALPN::H1,
            });
            endpoint = endpoint.tls(settings);
        }
        svc.add_listener(endpoint);
        svc.threads = Some(threads);
        server.add_service(svc);
    }

    let mut admin = Service::new(
        "admin".to_string(),
        HttpServer::new_app(Admin::new(Arc::clone(&shared))),
    );
    admin.add_tcp(&snap.admin.address.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

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
        listeners = ?snap.listeners.iter().map(|l| format!("{}={}", l.name, l.address)).collect::<Vec<_>>(),
        admin = %snap.admin.address,
        version = %snap.version,
        threads,
        "corridor starting"
    );
    server.run(RunArgs::default());
    crate::logging::flush();
    Ok(())
}
