//! Real HTTP clients on hyper's low-level connection APIs, so a test picks the protocol
//! exactly: HTTP/1.1, h2c (prior knowledge), or TLS where ALPN decides. One [`Client`]
//! is one connection, kept for reuse; closing or dropping it closes the socket at once.

mod body;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::header::{HeaderValue, HOST};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub use body::{
    channel, drain_count, empty, full, gaps, read_all, read_sse, read_sse_gaps, read_timed, repeat,
    repeat_chunked, Body, BodyReader, BodySender, SseEvent,
};

/// How long connecting (TCP + TLS + handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Sender {
    /// One request at a time: `send` waits until the previous response body is consumed.
    H1(tokio::sync::Mutex<http1::SendRequest<Body>>),
    /// Any number of concurrent streams.
    H2(http2::SendRequest<Body>),
}

/// One client connection speaking exactly one protocol version.
pub struct Client {
    sender: Sender,
    version: Version,
    scheme: Scheme,
    authority: Authority,
    local_addr: SocketAddr,
    /// A second handle on the socket, so closing does not depend on hyper's tasks.
    killer: Arc<std::net::TcpStream>,
    conn_task: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// An HTTP/1.1 connection to `addr`.
    pub async fn h1(addr: SocketAddr) -> anyhow::Result<Client> {
        let (tcp, killer) = connect(addr).await?;
        Client::handshake(tcp, killer, Version::HTTP_11, Scheme::HTTP, authority(addr)).await
    }

    /// An h2c connection (HTTP/2 with prior knowledge) to `addr`.
    pub async fn h2c(addr: SocketAddr) -> anyhow::Result<Client> {
        let (tcp, killer) = connect(addr).await?;
        Client::handshake(tcp, killer, Version::HTTP_2, Scheme::HTTP, authority(addr)).await
    }

    /// A TLS connection to `addr` verified as `server_name`; the ALPN result picks the
    /// protocol (`h2`, else HTTP/1.1). See [`crate::TestPki::client_config`].
    pub async fn tls(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> anyhow::Result<Client> {
        let (tls, killer) = tls_connect(addr, server_name, config).await?;
        let version = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Version::HTTP_2,
            _ => Version::HTTP_11,
        };
        let authority: Authority = format!("{server_name}:{}", addr.port())
            .parse()
            .with_context(|| format!("authority from {server_name:?}"))?;
        Client::handshake(tls, killer, version, Scheme::HTTPS, authority).await
    }

    /// The leaf certificate a TLS server at `addr` presents to a client
    /// configured with `config` (the handshake alone; the connection closes).
    pub async fn tls_peer_certificate(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> anyhow::Result<rustls::pki_types::CertificateDer<'static>> {
        let (tls, _killer) = tls_connect(addr, server_name, config).await?;
        let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
        certs
            .first()
            .map(|c| c.clone().into_owned())
            .context("no server certificate")
    }

    async fn handshake<IO>(
        io: IO,
        killer: std::net::TcpStream,
        version: Version,
        scheme: Scheme,
        authority: Authority,
    ) -> anyhow::Result<Client>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let local_addr = killer.local_addr()?;
        let killer = Arc::new(killer);
        // However hyper's connection ends, the socket must close with it (our duplicate
        // handle would otherwise keep it open and the peer would never see a FIN).
        let shut = killer.clone();
        let io = TokioIo::new(io);
        let (sender, conn_task) = if version == Version::HTTP_2 {
            let (sender, conn) =
                tokio::time::timeout(CONNECT_TIMEOUT, http2::handshake(TokioExecutor::new(), io))
                    .await
                    .context("h2 handshake timed out")??;
            let task = tokio::spawn(async move {
                let _ = conn.await;
                let _ = shut.shutdown(std::net::Shutdown::Both);
            });
            (Sender::H2(sender), task)
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
                let _ = shut.shutdown(std::net::Shutdown::Both);
            });
            (Sender::H1(tokio::sync::Mutex::new(sender)), task)
        };
        Ok(Client {
            sender,
            version,
            scheme,
            authority,
            local_addr,
            killer,
            conn_task: Mutex::new(Some(conn_task)),
        })
    }

    /// The protocol this connection speaks (`HTTP_11` or `HTTP_2`).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The client's end of the TCP connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends a request and returns the response head (the body streams as it is read).
    ///
    /// A relative URI (`/sse?n=3`) is completed from the connection: HTTP/1.1 gets a
    /// `Host` header if it has none; HTTP/2 gets `:scheme` and `:authority` (from the
    /// `Host` header if present). The request's version is set to the connection's.
    /// On HTTP/1.1 this waits for the previous response body to be read or dropped.
    pub async fn send(&self, req: Request<Body>) -> anyhow::Result<Response<Incoming>> {
        let req = self.prepare(req)?;
        match &self.sender {
            Sender::H1(sender) => {
                let fut = {
                    let mut sender = sender.lock().await;
                    sender
                        .ready()
                        .await
                        .context("HTTP/1.1 connection not usable")?;
                    sender.send_request(req)
                };
                Ok(fut.await?)
            }
            Sender::H2(sender) => {
                let mut sender = sender.clone();
                sender.ready().await.context("h2 connection not usable")?;
                Ok(sender.send_request(req).await?)
            }
        }
    }

    /// `GET path` with an empty body.
    pub async fn get(&self, path: &str) -> anyhow::Result<Response<Incoming>> {
        self.send(Request::get(path).body(empty())?).await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: Body) -> anyhow::Result<Response<Incoming>> {
        self.send(Request::post(path).body(body)?).await
    }

    fn prepare(&self, mut req: Request<Body>) -> anyhow::Result<Request<Body>> {
        *req.version_mut() = self.version;
        let uri = req.uri().clone();
        if self.version == Version::HTTP_2 {
            if uri.authority().is_none() {
                let authority = match req.headers().get(HOST) {
                    Some(h) => h.to_str()?.parse()?,
                    None => self.authority.clone(),
                };
                let mut parts = uri.into_parts();
                parts.scheme = Some(self.scheme.clone());
                parts.authority = Some(authority);
                if parts.path_and_query.is_none() {
                    parts.path_and_query = Some("/".parse()?);
                }
                *req.uri_mut() = Uri::from_parts(parts)?;
            }
        } else if !req.headers().contains_key(HOST) {
            let host = uri.authority().unwrap_or(&self.authority).as_str();
            req.headers_mut().insert(HOST, HeaderValue::from_str(host)?);
        }
        Ok(req)
    }

    /// Whether hyper considers the connection closed (no more requests possible).
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.try_lock().map(|s| s.is_closed()).unwrap_or(false),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Closes the connection now (FIN to the peer) and waits (up to 1 s) for hyper to
    /// notice, so in-flight requests and bodies fail as "closed". Dropping the client
    /// closes the socket the same way without waiting.
    pub async fn close(&self) {
        let _ = self.killer.shutdown(std::net::Shutdown::Both);
        let task = self.conn_task.lock().take();
        if let Some(mut task) = task {
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.killer.shutdown(std::net::Shutdown::Both);
        if let Some(task) = self.conn_task.lock().take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("version", &self.version)
            .field("authority", &self.authority)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

fn authority(addr: SocketAddr) -> Authority {
    addr.to_string()
        .parse()
        .expect("a socket address is an authority")
}

/// A TCP connection to `addr` with a TLS handshake verified as `server_name`,
/// and a duplicate handle of the socket (see [`connect`]).
async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> anyhow::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    std::net::TcpStream,
)> {
    let (tcp, killer) = connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned())
        .with_context(|| format!("bad server name {server_name:?}"))?;
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .context("TLS handshake timed out")?
    .context("TLS handshake")?;
    Ok((tls, killer))
}

/// Connects with TCP_NODELAY, keeping a duplicate std handle to force-close the socket.
async fn connect(addr: SocketAddr) -> anyhow::Result<(TcpStream, std::net::TcpStream)> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let std = tcp.into_std()?;
    let killer = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, killer))
}

/// What went wrong with a request or a response body, as far as a test cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The HTTP/2 stream was reset by the peer with this reason.
    Reset(h2::Reason),
    /// The connection closed (or was reset at TCP level) before the message completed.
    Closed,
    /// Anything else (timeouts, protocol errors, TLS failures...).
    Other,
}

/// Classifies an error from [`Client::send`] or a body reader.
pub fn classify(err: &anyhow::Error) -> ErrorKind {
    for cause in err.chain() {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            match h2.reason() {
                Some(reason) if h2.is_reset() => return ErrorKind::Reset(reason),
                _ if h2.is_io() || h2.is_go_away() => return ErrorKind::Closed,
                _ => {}
            }
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            // "dispatch task is gone": the connection task ended under a pending request.
            let gone = hyper.is_user() && hyper.to_string().contains("dispatch task is gone");
            if hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled() || gone {
                return ErrorKind::Closed;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            if matches!(
                io.kind(),
                Io::UnexpectedEof | Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe
            ) {
                return ErrorKind::Closed;
            }
        }
    }
    ErrorKind::Other
}
