//! Owns one active health-check probe: a fresh connection to one endpoint (TCP, plus TLS
//! when configured), one HTTP/1.1, HTTP/2 or gRPC health request on it under a single
//! deadline, the pass/fail verdict with a short reason, and closing the connection.
//! Scheduling, thresholds and endpoint state belong to the caller.
//!
//! Nothing is spawned: the connection driver is polled inside the probe's own future, so
//! dropping that future (on completion or on the deadline) ends the connection with it.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_TYPE, HOST, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The User-Agent every HTTP and gRPC probe sends.
const PROBE_USER_AGENT: &str = "corridor-health-check";
/// The path of the gRPC health-checking method.
const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";
/// The most gRPC response body bytes a probe reads (a real answer is 7 bytes).
const MAX_GRPC_BODY: usize = 16 * 1024;
/// The largest HTTP/2 response header list a probe accepts.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;
/// The most characters of a peer-supplied string (grpc-message, ALPN) quoted in a reason.
const MAX_QUOTED: usize = 128;
/// How many error sources a reason follows.
const MAX_ERROR_SOURCES: usize = 8;

/// What a probe checks.
#[derive(Debug, Clone)]
pub(crate) enum ProbeKind {
    /// HTTP GET `path` with Host `host`; passes when the status is in one of the [start, end) ranges.
    Http {
        /// Request path (and query); empty means `/`.
        path: String,
        /// Host header (`:authority` over HTTP/2); empty means the endpoint's address.
        host: String,
        /// Passing status ranges, each [start, end); empty means 200 only.
        expected: Vec<(u16, u16)>,
    },
    /// gRPC health v1 `grpc.health.v1.Health/Check` for `service` (empty = server); passes on SERVING.
    Grpc {
        /// Service name sent in the request; empty asks about the whole server.
        service: String,
        /// `:authority` of the request; empty means the endpoint's address.
        authority: String,
    },
    /// TCP connect (plus the TLS handshake when `tls` is set).
    Tcp,
}

/// Where and how to reach the endpoint.
#[derive(Debug, Clone)]
pub(crate) struct ProbeTarget {
    /// The endpoint's address.
    pub(crate) addr: SocketAddr,
    /// HTTP/2 (prior knowledge over plaintext, ALPN h2 over TLS) instead of HTTP/1.1. gRPC always uses HTTP/2.
    pub(crate) h2: bool,
    /// TLS to the endpoint: the client config (roots, ALPN set by the probe) and the server name to send/verify.
    pub(crate) tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// Identities the endpoint's certificate must carry (as for requests);
    /// empty: any.
    pub(crate) expected_identities: Arc<[Arc<str>]>,
}

/// Runs one probe with a deadline of `timeout` for the whole exchange (connect, TLS, request, response head — for HTTP the body need not be read, for gRPC the response message and grpc-status trailer are).
/// Ok(()) = healthy; Err(reason) = a short human-readable reason, e.g. "connect: connection refused", "status 503", "timed out after 1s", "grpc: NOT_SERVING", "grpc-status 12".
pub(crate) async fn probe(
    kind: &ProbeKind,
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(kind, target)).await {
        Ok(verdict) => verdict,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// What goes over the connection once it is up, built (and validated) before connecting.
enum Plan<'a> {
    /// Nothing: connecting (and the TLS handshake) is the check.
    Connect,
    /// An HTTP/1.1 request and the passing status ranges.
    Http1(Request<Empty<Bytes>>, &'a [(u16, u16)]),
    /// An HTTP/2 request and the passing status ranges.
    Http2(Request<()>, &'a [(u16, u16)]),
    /// A gRPC health request and its framed body.
    Grpc(Request<()>, Bytes),
}

/// Builds the plan, connects (and handshakes TLS when configured), then carries it out.
async fn run(kind: &ProbeKind, target: &ProbeTarget) -> Result<(), String> {
    let scheme = match target.tls {
        Some(_) => Scheme::HTTPS,
        None => Scheme::HTTP,
    };
    let plan = plan(kind, target, scheme)?;
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {}", io_reason(&e)))?;
    // Best effort: a probe is a few small writes, so skip Nagle's delay.
    let _ = tcp.set_nodelay(true);
    let Some((config, server_name)) = &target.tls else {
        return carry_out(plan, tcp).await;
    };
    // A bare connect check offers no ALPN: servers accept that even when they insist on a
    // protocol, whereas an offer they do not share would fail the handshake.
    let (alpn, wants_h2): (&[&[u8]], bool) = match plan {
        Plan::Connect => (&[], false),
        Plan::Http1(..) => (&[b"http/1.1"], false),
        Plan::Http2(..) | Plan::Grpc(..) => (&[b"h2"], true),
    };
    let tls = TlsConnector::from(with_alpn(config, alpn))
        .connect(server_name.clone(), tcp)
        .await
        .map_err(|e| format!("tls: {}", io_reason(&e)))?;
    if !target.expected_identities.is_empty() {
        let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
        let checked = match leaf {
            Some(der) => crate::identity::check_upstream(der, &target.expected_identities),
            None => Err("the upstream presented no certificate".to_string()),
        };
        checked.map_err(|e| format!("identity: {e}"))?;
    }
    if wants_h2 {
        // No ALPN at all is taken as prior knowledge; another protocol cannot carry h2.
        if let Some(other) = tls.get_ref().1.alpn_protocol().filter(|p| *p != b"h2") {
            return Err(format!(
                "tls: server chose ALPN {:?}, not h2",
                quote_bytes(other)
            ));
        }
    }
    carry_out(plan, tls).await
}

/// The requests `kind` sends to `target` (whose URI scheme is `scheme`).
fn plan<'a>(kind: &'a ProbeKind, target: &ProbeTarget, scheme: Scheme) -> Result<Plan<'a>, String> {
    let invalid = |e: http::Error| format!("invalid request: {e}");
    match kind {
        ProbeKind::Tcp => Ok(Plan::Connect),
        ProbeKind::Http {
            path,
            host,
            expected,
        } if !target.h2 => {
            let host = or_addr(host, target.addr);
            let host =
                HeaderValue::from_str(&host).map_err(|_| format!("invalid host {host:?}"))?;
            Request::builder()
                .method(Method::GET)
                .uri(Uri::from(path_and_query(path)?))
                .header(HOST, host)
                .header(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT))
                .header(CONNECTION, HeaderValue::from_static("close"))
                .body(Empty::new())
                .map(|request| Plan::Http1(request, expected))
                .map_err(invalid)
        }
        ProbeKind::Http {
            path,
            host,
            expected,
        } => Request::builder()
            .method(Method::GET)
            .version(Version::HTTP_2)
            .uri(absolute_uri(scheme, &or_addr(host, target.addr), path)?)
            .header(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT))
            .body(())
            .map(|request| Plan::Http2(request, expected))
            .map_err(invalid),
        ProbeKind::Grpc { service, authority } => {
            let body = grpc_frame(&HealthCheckRequest {
                service: service.clone(),
            })?;
            let uri = absolute_uri(scheme, &or_addr(authority, target.addr), GRPC_HEALTH_PATH)?;
            Request::builder()
                .method(Method::POST)
                .version(Version::HTTP_2)
                .uri(uri)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
                .header(TE, HeaderValue::from_static("trailers"))
                .header(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT))
                .body(())
                .map(|request| Plan::Grpc(request, body))
                .map_err(invalid)
        }
    }
}

/// Carries out `plan` over an established stream and judges the outcome.
async fn carry_out<IO>(plan: Plan<'_>, mut io: IO) -> Result<(), String>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (status, expected) = match plan {
        Plan::Connect => {
            // Connected (and handshaken) is the verdict; close politely (TLS close_notify, FIN).
            let _ = io.shutdown().await;
            return Ok(());
        }
        Plan::Grpc(request, body) => {
            return h2_exchange(io, request, Some(body), grpc_verdict).await;
        }
        Plan::Http1(request, expected) => (h1_status(io, request).await?, expected),
        Plan::Http2(request, expected) => {
            let status = h2_exchange(io, request, None, |response| async move {
                Ok(response.status())
            })
            .await?;
            (status, expected)
        }
    };
    if status_expected(status, expected) {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

/// Sends `request` over HTTP/1.1 and returns the response status (the body is not read).
async fn h1_status<IO>(io: IO, request: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("http: {}", chain(&e)))?;
    drive(
        async move { connection.await.map_err(|e| format!("http: {}", chain(&e))) },
        async move {
            sender
                .send_request(request)
                .await
                .map(|response| response.status())
                .map_err(|e| format!("http: {}", chain(&e)))
        },
    )
    .await
}

/// Runs one HTTP/2 request (with an optional whole body) and hands the response to
/// `on_response`, driving the connection until that finishes.
async fn h2_exchange<IO, T, F, Fut>(
    io: IO,
    request: Request<()>,
    body: Option<Bytes>,
    on_response: F,
) -> Result<T, String>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Response<h2::RecvStream>) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let (client, connection) = h2::client::Builder::new()
        .enable_push(false)
        .max_header_list_size(MAX_H2_HEADER_LIST)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| h2_reason(&e))?;
    drive(
        async move { connection.await.map_err(|e| h2_reason(&e)) },
        async move {
            let mut client = client.ready().await.map_err(|e| h2_reason(&e))?;
            let (response, mut send) = client
                .send_request(request, body.is_none())
                .map_err(|e| h2_reason(&e))?;
            if let Some(body) = body {
                send.send_data(body, true).map_err(|e| h2_reason(&e))?;
            }
            let response = response.await.map_err(|e| h2_reason(&e))?;
            on_response(response).await
        },
    )
    .await
}

/// Judges a gRPC health response: HTTP 200, grpc-status 0 and a SERVING message.
async fn grpc_verdict(response: Response<h2::RecvStream>) -> Result<(), String> {
    let (head, mut body) = response.into_parts();
    if head.status != StatusCode::OK {
        return Err(format!("grpc: http status {}", head.status.as_u16()));
    }
    if let Some(content_type) = head.headers.get(CONTENT_TYPE) {
        if !content_type.as_bytes().starts_with(b"application/grpc") {
            return Err(format!(
                "grpc: content-type {:?}",
                quote_bytes(content_type.as_bytes())
            ));
        }
    }
    // A trailers-only response carries grpc-status in its headers and has no body.
    if head.headers.contains_key("grpc-status") {
        grpc_status(&head.headers)?;
        return Err("grpc: no response message".to_owned());
    }
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| h2_reason(&e))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if data.len().saturating_add(chunk.len()) > MAX_GRPC_BODY {
            return Err("grpc: response body too large".to_owned());
        }
        data.extend_from_slice(&chunk);
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| h2_reason(&e))?
        .unwrap_or_default();
    grpc_status(&trailers)?;
    let response = HealthCheckResponse::decode(grpc_message(&data)?)
        .map_err(|e| format!("grpc: invalid response message: {e}"))?;
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!("grpc: {}", other.name())),
        Err(_) => Err(format!("grpc: serving status {}", response.status)),
    }
}

/// Checks the grpc-status in `map` is present and 0.
fn grpc_status(map: &HeaderMap) -> Result<(), String> {
    let Some(value) = map.get("grpc-status") else {
        return Err("grpc: response without grpc-status".to_owned());
    };
    match value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        Some(0) => Ok(()),
        Some(code) => match map.get("grpc-message") {
            Some(message) => Err(format!(
                "grpc-status {code}: {}",
                quote_bytes(message.as_bytes())
            )),
            None => Err(format!("grpc-status {code}")),
        },
        None => Err(format!(
            "grpc: invalid grpc-status {:?}",
            quote_bytes(value.as_bytes())
        )),
    }
}

/// Frames `message` for gRPC: a 0 (uncompressed) byte, its big-endian length, its bytes.
fn grpc_frame(message: &impl prost::Message) -> Result<Bytes, String> {
    let len = message.encoded_len();
    let prefix_len =
        u32::try_from(len).map_err(|_| "grpc: request message too large".to_owned())?;
    let mut buf = BytesMut::with_capacity(len.saturating_add(5));
    buf.put_u8(0);
    buf.put_u32(prefix_len);
    message
        .encode(&mut buf)
        .map_err(|e| format!("grpc: encoding request: {e}"))?;
    Ok(buf.freeze())
}

/// The first gRPC message in `data` (the health method answers with exactly one).
fn grpc_message(data: &[u8]) -> Result<&[u8], String> {
    let Some((&[flag, l0, l1, l2, l3], rest)) = data.split_first_chunk::<5>() else {
        return Err(if data.is_empty() {
            "grpc: no response message".to_owned()
        } else {
            "grpc: truncated response message".to_owned()
        });
    };
    if flag != 0 {
        return Err("grpc: compressed response message".to_owned());
    }
    usize::try_from(u32::from_be_bytes([l0, l1, l2, l3]))
        .ok()
        .and_then(|len| rest.get(..len))
        .ok_or_else(|| "grpc: truncated response message".to_owned())
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct HealthCheckRequest {
    /// The service asked about; empty means the server as a whole.
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct HealthCheckResponse {
    /// A [`ServingStatus`] value (kept as `i32`: unknown values must not be lost).
    #[prost(enumeration = "ServingStatus", tag = "1")]
    status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
enum ServingStatus {
    /// The server does not know.
    Unknown = 0,
    /// Healthy.
    Serving = 1,
    /// Unhealthy.
    NotServing = 2,
    /// The service name is not known to the server (Watch only, but be lenient).
    ServiceUnknown = 3,
}

impl ServingStatus {
    /// The proto enum value's name, as gRPC tools print it.
    fn name(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::Serving => "SERVING",
            Self::NotServing => "NOT_SERVING",
            Self::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }
}

/// Polls `connection` and `exchange` together until the exchange is done. If the connection
/// ends first it is dropped (failing whatever is still waiting on it) and the exchange gets
/// to finish with what already arrived; a connection error is the better reason then.
async fn drive<T>(
    connection: impl Future<Output = Result<(), String>>,
    exchange: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let mut connection = Box::pin(connection);
    let mut exchange = Box::pin(exchange);
    tokio::select! {
        biased;
        done = &mut exchange => done,
        ended = &mut connection => {
            drop(connection);
            match (exchange.await, ended) {
                (Ok(value), _) => Ok(value),
                (Err(reason), Ok(())) | (Err(_), Err(reason)) => Err(reason),
            }
        }
    }
}

/// Whether `status` passes: in one of the [start, end) ranges, or 200 when there are none.
fn status_expected(status: StatusCode, expected: &[(u16, u16)]) -> bool {
    let code = status.as_u16();
    if expected.is_empty() {
        return code == 200;
    }
    expected
        .iter()
        .any(|&(start, end)| (start..end).contains(&code))
}

/// `config` offering exactly `alpn`, cloned only when it offers something else.
fn with_alpn(config: &Arc<rustls::ClientConfig>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    if config
        .alpn_protocols
        .iter()
        .map(Vec::as_slice)
        .eq(alpn.iter().copied())
    {
        return Arc::clone(config);
    }
    let mut config = rustls::ClientConfig::clone(config);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// `name`, or the endpoint's address when `name` is empty.
fn or_addr(name: &str, addr: SocketAddr) -> Cow<'_, str> {
    if name.is_empty() {
        Cow::Owned(addr.to_string())
    } else {
        Cow::Borrowed(name)
    }
}

/// `path` as a request target: must start with `/`; empty means `/`.
fn path_and_query(path: &str) -> Result<PathAndQuery, String> {
    let path = if path.is_empty() { "/" } else { path };
    if !path.starts_with('/') {
        return Err(format!("invalid path {path:?}"));
    }
    PathAndQuery::try_from(path).map_err(|_| format!("invalid path {path:?}"))
}

/// The absolute URI HTTP/2 takes `:scheme`, `:authority` and `:path` from.
fn absolute_uri(scheme: Scheme, authority: &str, path: &str) -> Result<Uri, String> {
    let authority =
        Authority::try_from(authority).map_err(|_| format!("invalid authority {authority:?}"))?;
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query(path)?)
        .build()
        .map_err(|e| format!("invalid request URI: {e}"))
}

/// A short reason for an I/O error: the plain kind for common network failures.
fn io_reason(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        kind @ (ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::NotConnected
        | ErrorKind::AddrNotAvailable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkDown
        | ErrorKind::BrokenPipe
        | ErrorKind::TimedOut
        | ErrorKind::UnexpectedEof) => kind.to_string(),
        _ => error.to_string(),
    }
}

/// A reason for an HTTP/2 error, prefixed `h2:`.
fn h2_reason(error: &h2::Error) -> String {
    match error.get_io() {
        Some(io) => format!("h2: {}", io_reason(io)),
        None => format!("h2: {error}"),
    }
}

/// `error` and its sources, joined with `: ` (a source already in the text is skipped).
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    for _ in 0..MAX_ERROR_SOURCES {
        let Some(cause) = source else { break };
        let cause_text = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io_reason(io),
            None => cause.to_string(),
        };
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Peer-supplied bytes as text for a reason, lossy and cut to [`MAX_QUOTED`] characters.
fn quote_bytes(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_QUOTED)
        .collect()
}

#[cfg(test)]
mod tests;
