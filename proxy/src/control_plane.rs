//! Owns `corridor control-plane`: the reference control plane. It serves a
//! directory of resource files over ADS (state of the world and delta) to
//! every subscriber, per node, pushes each change, and answers an admin API:
//! `/nodes` (each node, versions ACKed, pending nonce, last NACK), `/files`
//! (each file and why it is not served) and `/ready`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use corridor_config::Kind;
use corridor_xds::{AdsServer, DirSource, NodeRegistry};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// How often the directory is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Serves `dir` on `listen` (ADS, over TLS when `tls` is given) and `admin`
/// (HTTP) until SIGINT or SIGTERM.
pub fn run_control_plane(
    dir: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    tls: Option<crate::ServerTls>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("control-plane")
        .build()?;
    runtime.block_on(async move {
        if !dir.is_dir() {
            anyhow::bail!("{} is not a directory", dir.display());
        }
        let source = DirSource::new(&dir);
        for r in source.reports() {
            if let Some(e) = &r.error {
                tracing::error!(file = %r.path.display(), "not served:\n{e}");
            }
        }
        tokio::spawn(Arc::clone(&source).watch(WATCH_INTERVAL));
        // State of the world names each resource (name, version): a proxy then
        // skips decoding what it already holds at that version. Route tables
        // and endpoints go out incrementally, as Envoy's RDS and EDS do.
        let server = AdsServer::with_options(
            Arc::clone(&source) as _,
            corridor_xds::ServerOptions {
                wrap_sotw_resources: true,
                sotw_incremental_types: Kind::ALL
                    .into_iter()
                    .filter(|k| k.sotw_incremental())
                    .map(|k| k.type_url().to_string())
                    .collect(),
                ..corridor_xds::ServerOptions::default()
            },
        );
        let registry = server.registry();
        let ads = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let admin_listener = tokio::net::TcpListener::bind(admin)
            .await
            .map_err(|e| anyhow::anyhow!("admin: cannot listen on {admin}: {e}"))?;
        tokio::spawn(serve_admin(admin_listener, registry, Arc::clone(&source)));
        tracing::info!(dir = %dir.display(), ads = %listen, admin = %admin, "control plane serving");
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("control plane stopping");
        };
        match tls {
            Some(tls) => {
                // Fail at start on files that cannot serve.
                tls.server_config().map_err(|e| anyhow::anyhow!("--tls: {e}"))?;
                corridor_xds::serve_incoming(tls.incoming(ads), server, shutdown).await?;
            }
            None => corridor_xds::serve(ads, server, shutdown).await?,
        }
        Ok(())
    })
}

async fn serve_admin(
    listener: tokio::net::TcpListener,
    registry: Arc<NodeRegistry>,
    source: Arc<DirSource>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let registry = Arc::clone(&registry);
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let body = match req.uri().path() {
                    "/nodes" => Some(nodes_json(&registry)),
                    "/files" => Some(files_json(&source)),
                    "/ready" => Some(serde_json::json!("ready")),
                    _ => None,
                };
                let resp =
                    match body {
                        Some(v) => hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(
                                serde_json::to_vec_pretty(&v).unwrap_or_default(),
                            ))),
                        None => hyper::Response::builder().status(404).body(Full::new(
                            Bytes::from_static(b"not found; try /nodes /files /ready\n"),
                        )),
                    };
                async move {
                    Ok::<_, Infallible>(
                        resp.unwrap_or_else(|_| hyper::Response::new(Full::default())),
                    )
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn time(t: Option<SystemTime>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| {
        humantime::format_rfc3339_millis(t).to_string().into()
    })
}

/// Each subscriber stream: node, variant, and per type the versions sent and
/// ACKed, the pending nonce and the last NACK.
fn nodes_json(registry: &NodeRegistry) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = registry
        .snapshot()
        .into_iter()
        .map(|n| {
            let types: Vec<serde_json::Value> = n
                .types
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "type_url": t.type_url,
                        "sent_version": t.sent_version,
                        "acked_version": t.acked_version,
                        "pending_nonce": t.pending_nonce,
                        "last_ack_at": time(t.last_ack_at),
                        "last_nack": t.last_nack,
                        "last_nack_at": time(t.nack_at),
                        "resources": t.resources,
                        "responses": t.responses,
                        "acks": t.acks,
                        "nacks": t.nacks,
                    })
                })
                .collect();
            serde_json::json!({
                "node_id": n.node_id,
                "cluster": n.cluster,
                "metadata": n.metadata,
                "peer": n.peer.map(|p| p.to_string()),
                "identity": n.identity.as_deref(),
                "variant": n.variant.as_str(),
                "connected": n.connected,
                "connected_at": time(Some(n.connected_at)),
                "disconnected_at": time(n.disconnected_at),
                "types": types,
            })
        })
        .collect();
    serde_json::json!({ "connected": registry.connected(), "nodes": nodes })
}

fn files_json(source: &DirSource) -> serde_json::Value {
    let files: Vec<serde_json::Value> = source
        .reports()
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "path": r.path.display().to_string(),
                "resources": r.resources,
                "error": r.error,
                "read_at": time(Some(r.read_at)),
            })
        })
        .collect();
    serde_json::json!({ "files": files })
}
