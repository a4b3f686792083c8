//! `pingora_floor`: the least a proxy built on Pingora's sessions does per HTTP/1.1
//! request, to measure what Corridor's own lean forwarding path (issue 16, step 3)
//! could at best reach. It keeps what every such path keeps (Pingora's HTTP/1 server
//! and client sessions, its connection pool, a tokio runtime with one worker, the
//! downstream write buffer Corridor uses) and drops everything else: no `ProxyHttp`
//! phases, no routing, balancing, retries, timeouts, header edits, logging or
//! metrics. Not a proxy to run: it forwards to one upstream and trusts both sides.
//!
//! It takes Corridor's command line (`run -c FILE`), so `benches/ab.sh` runs it
//! beside Corridor builds: the first listener's address, the first cluster's first
//! endpoint.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::{L4BufferSettings, Stream as L4Stream};
use pingora_core::server::ShutdownWatch;
use pingora_core::upstreams::peer::HttpPeer;

/// The same write buffer Corridor gives each downstream connection.
const DOWNSTREAM_WRITE_BUFFER: usize = 8 * 1024;

/// Forwards every request to one HTTP/1.1 upstream.
struct Floor {
    connector: Connector,
    peer: HttpPeer,
}

impl Floor {
    /// One exchange; `None` when either side failed (the connection is closed).
    async fn exchange(&self, session: &mut ServerSession) -> Option<()> {
        let (mut up, _reused) = self.connector.get_http_session(&self.peer).await.ok()?;
        let req = Box::new(session.req_header().clone());
        up.write_request_header(req).await.ok()?;
        while let Some(chunk) = session.read_request_body().await.ok()? {
            up.write_body(&chunk).await.ok()?;
        }
        up.finish_body().await.ok()?;
        up.read_response().await.ok()?;
        let resp = Box::new(up.resp_header()?.clone());
        session.write_response_header(resp).await.ok()?;
        while let Some(chunk) = up.read_body_bytes().await.ok()? {
            session.write_response_body(chunk, false).await.ok()?;
        }
        session.finish_body().await.ok()?;
        self.connector
            .release_http_session(up, &self.peer, None)
            .await;
        Some(())
    }
}

#[async_trait]
impl HttpServerApp for Floor {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        self.exchange(&mut session).await?;
        let reusable = session.finish().await.ok()??;
        let (stream, _) = reusable.into_parts();
        Some(ReusedHttpStream::new(stream, None))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config = match args.as_slice() {
        [_, run, flag, path] if run == "run" && flag == "-c" => PathBuf::from(path),
        _ => {
            eprintln!("usage: pingora_floor run -c CORRIDOR_CONFIG");
            std::process::exit(2);
        }
    };
    let snapshot = corridor_config::load_file(&config).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let listen = snapshot.listeners.first().expect("a listener").address;
    let upstream = snapshot
        .clusters
        .values()
        .next()
        .and_then(|c| c.endpoints.list.first().map(|e| e.address))
        .expect("a cluster with an endpoint");
    let app = Arc::new(Floor {
        connector: Connector::new(None),
        peer: HttpPeer::new(upstream, false, String::new()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("bind the listener");
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let app = app.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut stream: L4Stream = tcp.into();
                stream.set_buffer(L4BufferSettings::new(0, DOWNSTREAM_WRITE_BUFFER));
                let _ = stream.set_nodelay();
                let mut next = app.process_new(Box::new(stream), &shutdown).await;
                while let Some(io) = next {
                    next = app.process_new(io, &shutdown).await;
                }
            });
        }
    });
}
