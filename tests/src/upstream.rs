//! Real upstream servers standing in for inference backends: HTTP/1.1, h2c, both on one
//! port, or TLS with ALPN; each serves the test behaviours below and records
//! what happened (requests, bytes, cancellations) for the tests to assert on.
//!
//! Every response carries `x-upstream: <name>` and `x-upstream-protocol: HTTP/1.1|HTTP/2`.
//! Behaviours, by path: `/echo`, `/sse?n&interval_ms&content_length&abort_after`,
//! `/bytes?size&chunk&content_length`, `POST /sink`, `/status/<code>`, `/slow?ms`, `/hang`,
//! `/silent?n`, `/reset`, `/refuse`, `/flaky?key&fail&status`; anything else is 404.
//! `/healthz` answers [`Upstream::set_health`]'s status (200 by default), and every
//! other request first suffers the [`Fault`] set with [`Upstream::set_fault`].
//!
//! Every connection also records the exact bytes it read from the peer (after TLS
//! decryption), so tests can check what a proxy really forwarded: [`Upstream::wire`],
//! [`Upstream::wire_text`], [`Upstream::wait_wire_quiet`].
//!
//! Cancellation (the peer going away before a response finished) is noticed within a
//! millisecond or so on both protocols: HTTP/2 through hyper's RST_STREAM/connection
//! handling; HTTP/1.1 through hyper's EOF check once the request body is complete, and
//! through a background reader of the request body while it is still arriving (hyper
//! alone would keep a pending handler alive until it answered).

mod bodies;
mod handlers;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_faults;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http::header::HeaderValue;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use bodies::{check_pattern, pattern_byte, sse_event, SSE_EVENT_LEN};
pub use state::{Cancellation, Fault, RecordedRequest};

use bodies::Tracked;
use state::{State, Tracker};
use wire::{Recorder, WireTap};

use crate::pki::{self, Leaf};
use crate::BoxError;

/// Which protocols an [`Upstream`] speaks on its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 only (an h2 preface is a protocol error).
    Http1,
    /// HTTP/2 with prior knowledge only (cleartext).
    H2c,
    /// HTTP/1.1 and h2c on the same port (detected per connection by the h2 preface).
    #[default]
    Auto,
    /// TLS, ALPN `h2` and `http/1.1` (no ALPN: detected by preface).
    Tls,
    /// TLS, ALPN `http/1.1` only.
    TlsHttp1,
    /// TLS, ALPN `h2` only.
    TlsH2,
}

impl UpstreamProtocol {
    /// Whether this protocol needs a TLS certificate.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::TlsHttp1 | Self::TlsH2)
    }
}

/// How to start an [`Upstream`].
#[derive(Debug, Clone, Default)]
pub struct UpstreamOptions {
    /// Name reported in `x-upstream` (must be a valid header value).
    pub name: String,
    /// Protocols to speak.
    pub protocol: UpstreamProtocol,
    /// Server certificate for the TLS protocols (see [`crate::TestPki::leaf`]).
    pub tls: Option<Leaf>,
    /// A complete TLS server config for the TLS protocols, used instead of `tls` (e.g.
    /// [`crate::TestPki::server_config_mtls`] to require client certificates); its ALPN
    /// list is used as is.
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Address to bind; `None` is `127.0.0.1:0` (use `Some` to restart on a known port).
    pub bind: Option<SocketAddr>,
}

impl UpstreamOptions {
    /// Options for a plaintext upstream called `name` speaking `protocol`.
    pub fn new(name: impl Into<String>, protocol: UpstreamProtocol) -> UpstreamOptions {
        UpstreamOptions {
            name: name.into(),
            protocol,
            ..UpstreamOptions::default()
        }
    }
}

/// A running test upstream; stops (closing every connection) when dropped.
pub struct Upstream {
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Upstream {
    /// Starts an upstream; panics if it cannot (see [`Upstream::try_start`]).
    pub async fn start(opts: UpstreamOptions) -> Upstream {
        let name = opts.name.clone();
        Upstream::try_start(opts)
            .await
            .unwrap_or_else(|e| panic!("starting upstream {name:?}: {e:#}"))
    }

    /// Starts an upstream, binding `opts.bind` or `127.0.0.1:0`.
    pub async fn try_start(opts: UpstreamOptions) -> anyhow::Result<Upstream> {
        HeaderValue::from_str(&opts.name).context("upstream name must be a header value")?;
        let tls = match (opts.protocol.is_tls(), &opts.tls) {
            (false, _) => None,
            (true, _) if opts.tls_config.is_some() => {
                opts.tls_config.clone().map(TlsAcceptor::from)
            }
            (true, None) => anyhow::bail!("{:?} needs `tls: Some(leaf)`", opts.protocol),
            (true, Some(leaf)) => {
                let alpn: &[&[u8]] = match opts.protocol {
                    UpstreamProtocol::TlsHttp1 => &[b"http/1.1"],
                    UpstreamProtocol::TlsH2 => &[b"h2"],
                    _ => &[b"h2", b"http/1.1"],
                };
                Some(TlsAcceptor::from(pki::server_config(leaf, alpn)?))
            }
        };
        let bind = opts.bind.unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding {bind}"))?;
        let addr = listener.local_addr()?;
        let state = State::new(opts.name);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(
            listener,
            state.clone(),
            opts.protocol,
            tls,
            shutdown_rx,
        ));
        Ok(Upstream {
            addr,
            protocol: opts.protocol,
            state,
            shutdown,
            accept_task: Mutex::new(Some(accept_task)),
        })
    }

    /// An HTTP/1.1-only upstream called `name`.
    pub async fn http1(name: &str) -> Upstream {
        Upstream::start(UpstreamOptions::new(name, UpstreamProtocol::Http1)).await
    }

    /// An h2c (prior knowledge) upstream called `name`.
    pub async fn h2c(name: &str) -> Upstream {
        Upstream::start(UpstreamOptions::new(name, UpstreamProtocol::H2c)).await
    }

    /// An HTTP/1.1 + h2c upstream called `name`.
    pub async fn auto(name: &str) -> Upstream {
        Upstream::start(UpstreamOptions::new(name, UpstreamProtocol::Auto)).await
    }

    /// A TLS upstream (ALPN h2 and http/1.1) called `name`, serving `leaf`.
    pub async fn tls(name: &str, leaf: &Leaf) -> Upstream {
        let mut opts = UpstreamOptions::new(name, UpstreamProtocol::Tls);
        opts.tls = Some(leaf.clone());
        Upstream::start(opts).await
    }

    /// Injects `fault` into every later request but `/healthz`.
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock() = fault;
    }

    /// Makes `/healthz` answer `status`.
    pub fn set_health(&self, status: u16) {
        self.state
            .health_status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    /// The bound address (always 127.0.0.1 unless `bind` said otherwise).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name reported in `x-upstream`.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The protocols this upstream speaks.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// `http://addr<path>` (or `https://` for TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.protocol.is_tls() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Total requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// The last (up to) 1000 requests, oldest first.
    pub fn request_log(&self) -> Vec<RecordedRequest> {
        self.state.log()
    }

    /// Response body bytes handed to hyper so far (stops growing under backpressure).
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::Relaxed)
    }

    /// Request body bytes read so far (every request body is read, whatever the path).
    pub fn bytes_received(&self) -> u64 {
        self.state.bytes_received.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.state.connections_accepted.load(Ordering::Relaxed)
    }

    /// TCP connections currently open.
    pub fn open_connections(&self) -> u64 {
        self.state.connections_open.load(Ordering::Relaxed)
    }

    /// Requests whose response is not finished yet (handler pending or body streaming).
    pub fn in_flight(&self) -> u64 {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    /// When each event of the `/sse?tag=<tag>` stream was handed to the server, in order.
    pub fn sse_sent_times(&self, tag: &str) -> Vec<Instant> {
        self.state
            .sse_sent
            .lock()
            .get(tag)
            .cloned()
            .unwrap_or_default()
    }

    /// Every response that ended early because the peer went away, in order noticed.
    pub fn cancellations(&self) -> Vec<Cancellation> {
        self.state.cancellations()
    }

    /// The bytes each connection read from its peer (after TLS decryption), one entry per
    /// connection in accept order: the last 256 connections, at most 4 MiB each.
    pub fn wire(&self) -> Vec<Vec<u8>> {
        self.state.wire.bytes()
    }

    /// [`Upstream::wire`] as readable text for assertion messages: each connection under a
    /// `--- connection N (L bytes) ---` line (N as in [`RecordedRequest::connection`]),
    /// non-printable bytes escaped (`\r`, `\n`, `\xNN`) and a line break after every `\n`.
    pub fn wire_text(&self) -> String {
        self.state.wire.text()
    }

    /// Waits until no byte has arrived on any connection for `quiet` (counting from the
    /// later of this call and the last byte), or `max` has passed: lets a proxy finish
    /// forwarding whatever it was going to before a test asserts on [`Upstream::wire`].
    pub async fn wait_wire_quiet(&self, quiet: Duration, max: Duration) {
        self.state.wire.wait_quiet(quiet, max).await
    }

    /// Waits up to `timeout` for a request to `path` (no query) that arrived at or after
    /// `since`.
    pub async fn wait_request(
        &self,
        path: &str,
        since: Instant,
        timeout: Duration,
    ) -> Option<RecordedRequest> {
        self.state
            .wait_for(timeout, |s| s.find_request(path, since))
            .await
    }

    /// Waits up to `timeout` for a response to `path` (no query) to be cancelled at or
    /// after `since` (the handler or body dropped because the peer went away).
    pub async fn wait_cancelled(
        &self,
        path: &str,
        since: Instant,
        timeout: Duration,
    ) -> Option<Cancellation> {
        self.state
            .wait_for(timeout, |s| s.find_cancellation(path, since))
            .await
    }

    /// Stops accepting (the port then refuses connections) and closes every connection
    /// abruptly; returns once that is done (or after 5 s).
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let task = self.accept_task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.accept_task.lock().take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.state.name)
            .field("addr", &self.addr)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// How one accepted connection is served.
#[derive(Clone, Copy)]
enum Mode {
    H1,
    H2,
    Auto,
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    protocol: UpstreamProtocol,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                // E.g. EMFILE: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = tcp.set_nodelay(true);
        let id = state.connections_accepted.fetch_add(1, Ordering::Relaxed) + 1;
        state.connections_open.fetch_add(1, Ordering::Relaxed);
        let recorder = state.wire.open(id);
        tokio::spawn(serve_conn(
            tcp,
            id,
            recorder,
            state.clone(),
            protocol,
            tls.clone(),
            shutdown.clone(),
        ));
    }
}

/// Resolves once shutdown is signalled (or the [`Upstream`] is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // Not holding the returned `Ref` across an await keeps the callers `Send`.
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

/// Decrements the open-connection gauge however the connection task ends.
struct OpenConn(Arc<State>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_conn(
    tcp: TcpStream,
    id: u64,
    recorder: Recorder,
    state: Arc<State>,
    protocol: UpstreamProtocol,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _open = OpenConn(state.clone());
    let work = async move {
        let Some(acceptor) = tls else {
            let mode = match protocol {
                UpstreamProtocol::Http1 => Mode::H1,
                UpstreamProtocol::H2c => Mode::H2,
                _ => Mode::Auto,
            };
            return serve_io(TokioIo::new(WireTap::new(tcp, recorder)), mode, state, id).await;
        };
        let stream = acceptor.accept(tcp).await?;
        let mode = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Mode::H2,
            Some(_) => Mode::H1,
            None => match protocol {
                UpstreamProtocol::TlsHttp1 => Mode::H1,
                UpstreamProtocol::TlsH2 => Mode::H2,
                _ => Mode::Auto,
            },
        };
        serve_io(
            TokioIo::new(WireTap::new(stream, recorder)),
            mode,
            state,
            id,
        )
        .await
    };
    // Connection errors (resets, protocol errors, our own /reset) are expected here.
    tokio::select! {
        _ = work => {}
        _ = stopped(&mut shutdown) => {}
    }
}

async fn serve_io<I>(io: I, mode: Mode, state: Arc<State>, id: u64) -> Result<(), BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(state.clone(), id, req));
    match mode {
        Mode::H1 => {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await?
        }
        Mode::H2 => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await?
        }
        Mode::Auto => {
            auto::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await?
        }
    }
    Ok(())
}

/// Records the request, runs its behaviour, tags the response, and hands the request's
/// [`Tracker`] to the response body (or drops it, recording a cancellation, if this
/// future is dropped first).
async fn handle(
    state: Arc<State>,
    conn: u64,
    req: Request<Incoming>,
) -> Result<Response<Tracked>, BoxError> {
    let version = req.version();
    let is_head = req.method() == http::Method::HEAD;
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    state.record(RecordedRequest {
        method: req.method().clone(),
        path_and_query: path_and_query.clone(),
        version,
        headers: req.headers().clone(),
        authority: req.uri().authority().map(|a| a.as_str().to_owned()),
        connection: conn,
        at: Instant::now(),
    });
    let mut tracker = Tracker::new(state.clone(), path_and_query, version, conn);
    let (gone_tx, gone) = watch::channel(false);
    let result = tokio::select! {
        r = handlers::route(&state, req, gone_tx) => r,
        // The request body broke while the handler was pending: the peer is gone.
        () = bodies::peer_gone(gone.clone()) => Err(Box::new(bodies::PeerGone) as BoxError),
    };
    match result {
        Ok(mut resp) => {
            let h = resp.headers_mut();
            if let Ok(name) = HeaderValue::from_str(&state.name) {
                h.insert("x-upstream", name);
            }
            let proto = if version == Version::HTTP_2 {
                "HTTP/2"
            } else {
                "HTTP/1.1"
            };
            h.insert("x-upstream-protocol", HeaderValue::from_static(proto));
            let declared = h
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            if is_head {
                // A HEAD response has no body (hyper's h2 server would send one; the h2
                // client rejects that): keep the headers, drop the body, done.
                *resp.body_mut() = bodies::boxed(http_body_util::Empty::<bytes::Bytes>::new());
            }
            Ok(resp.map(|body| Tracked::new(body, tracker, declared, gone)))
        }
        Err(e) => {
            // A deliberate failure (/reset, /refuse) is not a cancellation; a request body
            // that broke because the peer went away is (the tracker records it on drop).
            if e.is::<bodies::Deliberate>() {
                tracker.complete();
            }
            Err(e)
        }
    }
}
