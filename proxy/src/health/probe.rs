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
mod tests {
    use super::*;

    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use http_body_util::BodyExt as _;
    use hyper::body::{Body, Frame, Incoming};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioExecutor;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    /// A response body of fixed frames (data, then maybe trailers).
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// A response with `status`, `headers` and body `frames`.
    fn reply(
        status: u16,
        headers: &[(&'static str, &str)],
        frames: Vec<Frame<Bytes>>,
    ) -> Response<Frames> {
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        response
            .body(Frames(frames.into()))
            .expect("valid test response")
    }

    /// The header `name` of `request` as text.
    fn header<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
        request.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// The test upstream: `/h1` and `/h2` answer 200 only to a well-formed probe over that
    /// HTTP version (400 otherwise), `/status/N` answers N, the gRPC health path is a health
    /// service where "" and "up" are SERVING, "down" NOT_SERVING, anything else NOT_FOUND.
    async fn app(request: Request<Incoming>) -> Response<Frames> {
        let path = request.uri().path().to_owned();
        if path == GRPC_HEALTH_PATH {
            return grpc_health(request).await;
        }
        if let Some(code) = path.strip_prefix("/status/") {
            return reply(code.parse().unwrap_or(400), &[], vec![]);
        }
        let from_probe = request.method() == Method::GET
            && header(&request, "user-agent") == Some("corridor-health-check");
        let well_formed = match path.as_str() {
            "/h1" => {
                request.version() == Version::HTTP_11
                    && header(&request, "host") == Some("svc.test")
                    && header(&request, "connection") == Some("close")
            }
            "/h2" => {
                request.version() == Version::HTTP_2
                    && request.uri().authority().map(Authority::as_str) == Some("svc.test")
                    && request.uri().scheme_str() == Some("http")
            }
            "/h2s" => {
                request.version() == Version::HTTP_2
                    && request.uri().authority().map(Authority::as_str) == Some("svc.test")
                    && request.uri().scheme_str() == Some("https")
            }
            _ => false,
        };
        reply(
            if from_probe && well_formed { 200 } else { 400 },
            &[],
            vec![],
        )
    }

    /// The health method, framed and decoded by hand here (not with the module's helpers).
    async fn grpc_health(request: Request<Incoming>) -> Response<Frames> {
        let well_formed = request.method() == Method::POST
            && request.version() == Version::HTTP_2
            && header(&request, "content-type") == Some("application/grpc")
            && header(&request, "te") == Some("trailers")
            && header(&request, "user-agent") == Some("corridor-health-check");
        let body = match request.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let service = match body.split_first_chunk::<5>() {
            Some((&[0, a, b, c, d], rest))
                if u32::from_be_bytes([a, b, c, d]) as usize == rest.len() =>
            {
                HealthCheckRequest::decode(rest).ok().map(|r| r.service)
            }
            _ => None,
        };
        let status = match service.as_deref() {
            Some("" | "up") if well_formed => ServingStatus::Serving,
            Some("down") if well_formed => ServingStatus::NotServing,
            Some(_) if well_formed => {
                let headers = [
                    ("content-type", "application/grpc"),
                    ("grpc-status", "5"),
                    ("grpc-message", "unknown service"),
                ];
                return reply(200, &headers, vec![]);
            }
            _ => {
                let headers = [("content-type", "application/grpc"), ("grpc-status", "3")];
                return reply(200, &headers, vec![]);
            }
        };
        let message = HealthCheckResponse {
            status: status as i32,
        }
        .encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        reply(
            200,
            &[("content-type", "application/grpc")],
            vec![Frame::data(Bytes::from(framed)), Frame::trailers(trailers)],
        )
    }

    /// Serves [`app`] on one connection, over HTTP/2 when `h2`.
    async fn serve_connection<IO>(io: IO, h2: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(|request| async move { Ok::<_, Infallible>(app(request).await) });
        let io = TokioIo::new(io);
        if h2 {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        }
    }

    /// Starts [`app`] on 127.0.0.1: HTTP/1.1 or h2c by `h2`, or TLS choosing by ALPN.
    async fn serve(h2: bool, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(tcp, h2).await,
                        Some(config) => {
                            if let Ok(stream) = TlsAcceptor::from(config).accept(tcp).await {
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                serve_connection(stream, h2).await;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// An address nothing listens on.
    async fn refused_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("local addr")
    }

    /// A plaintext target.
    fn plain(addr: SocketAddr, h2: bool) -> ProbeTarget {
        ProbeTarget {
            addr,
            h2,
            tls: None,
        }
    }

    /// An HTTP check of `path` with Host `svc.test`.
    fn http(path: &str, expected: Vec<(u16, u16)>) -> ProbeKind {
        ProbeKind::Http {
            path: path.to_owned(),
            host: "svc.test".to_owned(),
            expected,
        }
    }

    /// A gRPC check of `service`.
    fn grpc(service: &str) -> ProbeKind {
        ProbeKind::Grpc {
            service: service.to_owned(),
            authority: "svc.test".to_owned(),
        }
    }

    /// Generous deadline for probes expected to finish on their own.
    const SECOND: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn http1_ok() {
        let addr = serve(false, None).await;
        assert_eq!(
            probe(&http("/h1", vec![]), &plain(addr, false), SECOND).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn http1_unexpected_status_fails() {
        let addr = serve(false, None).await;
        let verdict = probe(&http("/status/503", vec![]), &plain(addr, false), SECOND).await;
        assert_eq!(verdict, Err("status 503".to_owned()));
        // The /h1 check sends what the server wants; /h2 over HTTP/1.1 does not.
        let verdict = probe(&http("/h2", vec![]), &plain(addr, false), SECOND).await;
        assert_eq!(verdict, Err("status 400".to_owned()));
    }

    #[tokio::test]
    async fn http_expected_ranges() {
        let addr = serve(false, None).await;
        let target = plain(addr, false);
        let redirect = |expected| http("/status/302", expected);
        assert_eq!(
            probe(&redirect(vec![(200, 400)]), &target, SECOND).await,
            Ok(())
        );
        assert_eq!(
            probe(&redirect(vec![(200, 300)]), &target, SECOND).await,
            Err("status 302".to_owned())
        );
        assert_eq!(
            probe(&redirect(vec![(200, 201), (302, 303)]), &target, SECOND).await,
            Ok(())
        );
        assert_eq!(
            probe(&http("/status/204", vec![]), &target, SECOND).await,
            Err("status 204".to_owned()),
            "no ranges means 200 only"
        );
    }

    #[tokio::test]
    async fn refused() {
        let addr = refused_addr().await;
        for (kind, h2) in [
            (http("/h1", vec![]), false),
            (http("/h2", vec![]), true),
            (grpc(""), true),
            (ProbeKind::Tcp, false),
        ] {
            let verdict = probe(&kind, &plain(addr, h2), SECOND).await;
            assert_eq!(
                verdict,
                Err("connect: connection refused".to_owned()),
                "{kind:?}"
            );
        }
    }

    #[tokio::test]
    async fn silent_server_times_out_without_leaking_tasks() {
        // Connections complete in the kernel's backlog; nothing ever reads or answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (_, client_config) = tls_configs();
        let timeout = Duration::from_millis(300);
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = ProbeTarget {
            addr,
            h2: false,
            tls: Some((client_config, name)),
        };
        let cases = [
            (http("/h1", vec![]), plain(addr, false)),
            (http("/h2", vec![]), plain(addr, true)),
            (grpc(""), plain(addr, true)),
            (ProbeKind::Tcp, tls),
        ];
        let metrics = tokio::runtime::Handle::current().metrics();
        assert_eq!(metrics.num_alive_tasks(), 0);
        for (kind, target) in cases {
            let start = Instant::now();
            let verdict = probe(&kind, &target, timeout).await;
            let elapsed = start.elapsed();
            assert_eq!(verdict, Err("timed out after 300ms".to_owned()), "{kind:?}");
            assert!(elapsed >= timeout, "{kind:?} returned early: {elapsed:?}");
            assert!(
                elapsed < timeout + Duration::from_millis(500),
                "{kind:?} took {elapsed:?}"
            );
            assert_eq!(metrics.num_alive_tasks(), 0, "{kind:?} left a task behind");
        }
    }

    #[tokio::test]
    async fn server_closing_without_answer_fails_fast() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                drop(tcp);
            }
        });
        for (kind, h2) in [
            (http("/h1", vec![]), false),
            (http("/h2", vec![]), true),
            (grpc(""), true),
        ] {
            let start = Instant::now();
            let verdict = probe(&kind, &plain(addr, h2), SECOND).await;
            let reason = verdict.expect_err("no answer is unhealthy");
            assert!(!reason.starts_with("timed out"), "{kind:?}: {reason}");
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{kind:?}: {reason}"
            );
        }
    }

    #[tokio::test]
    async fn tcp_ok() {
        let addr = serve(false, None).await;
        assert_eq!(
            probe(&ProbeKind::Tcp, &plain(addr, false), SECOND).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn grpc_serving_and_not() {
        let addr = serve(true, None).await;
        let target = plain(addr, false); // gRPC is HTTP/2 whatever `h2` says
        assert_eq!(probe(&grpc(""), &target, SECOND).await, Ok(()));
        assert_eq!(probe(&grpc("up"), &target, SECOND).await, Ok(()));
        assert_eq!(
            probe(&grpc("down"), &target, SECOND).await,
            Err("grpc: NOT_SERVING".to_owned())
        );
        assert_eq!(
            probe(&grpc("nope"), &target, SECOND).await,
            Err("grpc-status 5: unknown service".to_owned())
        );
    }

    #[tokio::test]
    async fn grpc_edge_cases() {
        // An empty authority falls back to the endpoint's address.
        let addr = serve(true, None).await;
        let kind = ProbeKind::Grpc {
            service: String::new(),
            authority: String::new(),
        };
        assert_eq!(probe(&kind, &plain(addr, false), SECOND).await, Ok(()));
        // An HTTP/1.1-only server cannot answer an HTTP/2 probe.
        let http1 = serve(false, None).await;
        let reason = probe(&kind, &plain(http1, true), SECOND)
            .await
            .expect_err("h1 server");
        assert!(reason.starts_with("h2: "), "{reason}");
    }

    #[tokio::test]
    async fn http2_prior_knowledge() {
        let addr = serve(true, None).await;
        assert_eq!(
            probe(&http("/h2", vec![]), &plain(addr, true), SECOND).await,
            Ok(())
        );
        assert_eq!(
            probe(&http("/status/503", vec![]), &plain(addr, true), SECOND).await,
            Err("status 503".to_owned())
        );
    }

    /// A self-signed `localhost` server config offering h2 and http/1.1, and a client
    /// config trusting it (no ALPN: the probe sets that).
    fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("cert and key");
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    #[tokio::test]
    async fn tls_probes() {
        let (server, client) = tls_configs();
        let addr = serve(false, Some(server)).await;
        let target = |h2: bool, name: &str| ProbeTarget {
            addr,
            h2,
            tls: Some((
                Arc::clone(&client),
                ServerName::try_from(name.to_owned()).expect("server name"),
            )),
        };
        // ALPN picks the server's protocol; /h1 and /h2s check the version and scheme.
        assert_eq!(
            probe(&http("/h1", vec![]), &target(false, "localhost"), SECOND).await,
            Ok(())
        );
        assert_eq!(
            probe(&http("/h2s", vec![]), &target(true, "localhost"), SECOND).await,
            Ok(())
        );
        assert_eq!(
            probe(&grpc("up"), &target(false, "localhost"), SECOND).await,
            Ok(())
        );
        assert_eq!(
            probe(&grpc("down"), &target(false, "localhost"), SECOND).await,
            Err("grpc: NOT_SERVING".to_owned())
        );
        assert_eq!(
            probe(&ProbeKind::Tcp, &target(false, "localhost"), SECOND).await,
            Ok(())
        );
        for kind in [http("/h1", vec![]), ProbeKind::Tcp] {
            let reason = probe(&kind, &target(false, "other.test"), SECOND)
                .await
                .expect_err("name mismatch");
            assert!(
                reason.starts_with("tls: ") && reason.contains("certificate"),
                "{reason}"
            );
        }
    }

    #[test]
    fn probe_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let kind = ProbeKind::Tcp;
        let target = plain(SocketAddr::from(([127, 0, 0, 1], 1)), false);
        let future = probe(&kind, &target, SECOND);
        assert_send(&future);
    }

    #[tokio::test]
    async fn bad_inputs_are_reasons_not_panics() {
        // Requests are built before connecting, so the reason is the input, not the socket.
        let addr = refused_addr().await;
        let bad_host = ProbeKind::Http {
            path: "/h1".to_owned(),
            host: "bad\nhost".to_owned(),
            expected: vec![],
        };
        let bad_authority = ProbeKind::Grpc {
            service: String::new(),
            authority: "bad authority".to_owned(),
        };
        for kind in [
            http("no-slash", vec![]),
            http("/with space", vec![]),
            bad_host,
            bad_authority,
        ] {
            for h2 in [false, true] {
                let reason = probe(&kind, &plain(addr, h2), SECOND)
                    .await
                    .expect_err("bad input");
                assert!(reason.starts_with("invalid "), "{kind:?} h2={h2}: {reason}");
            }
        }
        // An empty range passes nothing.
        let addr = serve(false, None).await;
        let empty_range = http("/status/200", vec![(300, 200)]);
        let verdict = probe(&empty_range, &plain(addr, false), SECOND).await;
        assert_eq!(verdict, Err("status 200".to_owned()));
    }

    #[test]
    fn grpc_message_framing() {
        assert_eq!(
            grpc_message(&[]),
            Err("grpc: no response message".to_owned())
        );
        assert_eq!(
            grpc_message(&[0, 0, 0]),
            Err("grpc: truncated response message".to_owned())
        );
        assert_eq!(
            grpc_message(&[0, 0, 0, 0, 2, 8]),
            Err("grpc: truncated response message".to_owned())
        );
        assert_eq!(
            grpc_message(&[0, 255, 255, 255, 255]),
            Err("grpc: truncated response message".to_owned())
        );
        assert_eq!(
            grpc_message(&[1, 0, 0, 0, 0]),
            Err("grpc: compressed response message".to_owned())
        );
        assert_eq!(grpc_message(&[0, 0, 0, 0, 2, 8, 1, 99]), Ok(&[8, 1][..]));
        let framed = grpc_frame(&HealthCheckRequest {
            service: "abc".to_owned(),
        })
        .expect("frame");
        assert_eq!(&framed[..], &[0, 0, 0, 0, 5, 10, 3, b'a', b'b', b'c'][..]);
    }

    #[test]
    fn grpc_status_reasons() {
        let map = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert_eq!(grpc_status(&map(&[("grpc-status", "0")])), Ok(()));
        assert_eq!(
            grpc_status(&map(&[("grpc-status", "12")])),
            Err("grpc-status 12".to_owned())
        );
        assert_eq!(
            grpc_status(&map(&[])),
            Err("grpc: response without grpc-status".to_owned())
        );
        assert_eq!(
            grpc_status(&map(&[("grpc-status", "x")])),
            Err("grpc: invalid grpc-status \"x\"".to_owned())
        );
    }

    #[test]
    fn alpn_is_set_without_touching_the_callers_config() {
        let (_, client) = tls_configs();
        let h2 = with_alpn(&client, &[b"h2"]);
        assert_eq!(h2.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(client.alpn_protocols.is_empty());
        assert!(
            Arc::ptr_eq(&with_alpn(&h2, &[b"h2"]), &h2),
            "no clone when already right"
        );
    }
}
