//! Owns the one map from a failure to what the client sees: a status, an
//! `x-corridor-error` header and a JSON body
//! `{"error":{"type","message","request_id"}}` (without the message when the
//! listener's error detail is minimal), or for gRPC requests a trailers-only
//! response with `grpc-status`.

use bytes::Bytes;
use corridor_config::{ErrorDetail, Rejection};
use http::{HeaderValue, StatusCode};
use pingora_core::protocols::http::ServerSession;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;

/// A failure Corridor answers for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route matched (404).
    NoRoute,
    /// The route's subset has no endpoint, or the cluster none at all (503).
    NoEndpoint,
    /// Every try failed to connect (503).
    ConnectFailed,
    /// The deadline or a per-try timeout passed before response headers (504).
    Timeout,
    /// The upstream reset or closed the stream before responding (502).
    UpstreamReset,
    /// The upstream answered something that is not valid HTTP (502).
    BadUpstreamResponse,
    /// The request was malformed (400).
    BadRequest,
    /// The method cannot be served, such as CONNECT (405).
    MethodNotAllowed,
    /// The request body is over the listener's limit (413).
    PayloadTooLarge,
    /// The request line or `:path` is over the listener's limit (414).
    UriTooLong,
    /// The request headers are over the listener's limits (431).
    HeadersTooLarge,
    /// The request uses a feature Corridor does not implement, such as a transfer coding (501).
    NotImplemented,
    /// The HTTP version is not supported (505).
    VersionNotSupported,
    /// A circuit breaker of the cluster is full (503).
    Overflow,
    /// The residency policy leaves no endpoint that can serve (451).
    ResidencyDenied,
    /// The client's verified identity is not allowed on the route (403).
    Forbidden,
    /// The upstream's certificate does not carry an expected identity (502).
    UpstreamIdentity,
    /// The upstream's certificate identity belongs to a jurisdiction the
    /// request's residency policy does not allow (451).
    ResidencyAttestation,
    /// A bug or an unexpected internal state (500).
    Internal,
}

impl ErrorKind {
    /// HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::NoEndpoint | ErrorKind::ConnectFailed | ErrorKind::Overflow => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UpstreamReset | ErrorKind::BadUpstreamResponse => StatusCode::BAD_GATEWAY,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ErrorKind::ResidencyDenied => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::UpstreamIdentity => StatusCode::BAD_GATEWAY,
            ErrorKind::ResidencyAttestation => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The kind for a rejection's status (anything unexpected is a bad request).
    pub fn for_status(status: StatusCode) -> ErrorKind {
        match status.as_u16() {
            405 => ErrorKind::MethodNotAllowed,
            413 => ErrorKind::PayloadTooLarge,
            414 => ErrorKind::UriTooLong,
            431 => ErrorKind::HeadersTooLarge,
            501 => ErrorKind::NotImplemented,
            505 => ErrorKind::VersionNotSupported,
            _ => ErrorKind::BadRequest,
        }
    }

    /// The `type` in the JSON body and the `x-corridor-error` header.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::NoEndpoint => "no_endpoint",
            ErrorKind::ConnectFailed => "upstream_connect_failed",
            ErrorKind::Timeout => "upstream_timeout",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::BadUpstreamResponse => "bad_upstream_response",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::HeadersTooLarge => "request_headers_too_large",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::VersionNotSupported => "http_version_not_supported",
            ErrorKind::Overflow => "overflow",
            ErrorKind::ResidencyDenied => "residency_denied",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::UpstreamIdentity => "upstream_identity",
            ErrorKind::ResidencyAttestation => "residency_attestation",
            ErrorKind::Internal => "internal",
        }
    }

    /// gRPC status code for gRPC clients.
    fn grpc_status(self) -> u8 {
        match self {
            ErrorKind::NoRoute | ErrorKind::MethodNotAllowed | ErrorKind::NotImplemented => 12, // UNIMPLEMENTED
            ErrorKind::Timeout => 4, // DEADLINE_EXCEEDED
            ErrorKind::BadRequest | ErrorKind::UriTooLong | ErrorKind::VersionNotSupported => 3, // INVALID_ARGUMENT
            ErrorKind::PayloadTooLarge | ErrorKind::HeadersTooLarge => 8, // RESOURCE_EXHAUSTED
            ErrorKind::Internal => 13,                                    // INTERNAL
            ErrorKind::ResidencyDenied | ErrorKind::ResidencyAttestation => 9, // FAILED_PRECONDITION
            ErrorKind::Forbidden => 7,                                         // PERMISSION_DENIED
            _ => 14,                                                           // UNAVAILABLE
        }
    }
}

/// A local failure with the message for the client.
#[derive(Debug, Clone)]
pub struct LocalError {
    /// What failed.
    pub kind: ErrorKind,
    /// Operator-readable detail.
    pub message: String,
}

impl LocalError {
    /// A local failure.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Turns it into a pingora error that carries the status.
    pub fn into_pingora(self) -> Box<Error> {
        let mut e = Error::explain(
            ErrorType::HTTPStatus(self.kind.status().as_u16()),
            self.message,
        );
        e.set_retry(false);
        e
    }
}

impl From<Rejection> for LocalError {
    fn from(r: Rejection) -> Self {
        LocalError::new(ErrorKind::for_status(r.status), r.message)
    }
}

/// What an error response may carry besides the error: the request id, and
/// how much detail the listener reveals.
#[derive(Debug, Clone, Copy)]
pub struct ErrorInfo<'a> {
    /// The request's `x-request-id`.
    pub request_id: Option<&'a HeaderValue>,
    /// Full or minimal detail.
    pub detail: ErrorDetail,
}

/// Classifies a pingora error that ended a request.
pub fn classify(e: &Error) -> ErrorKind {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(404) => ErrorKind::NoRoute,
        HTTPStatus(503) => ErrorKind::NoEndpoint,
        HTTPStatus(504) => ErrorKind::Timeout,
        HTTPStatus(400) => ErrorKind::BadRequest,
        HTTPStatus(_) => ErrorKind::Internal,
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | BindError
        | TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
        | ConnectProxyFailure | SocketError => ErrorKind::ConnectFailed,
        ReadTimedout | WriteTimedout => ErrorKind::Timeout,
        InvalidHTTPHeader | H1Error | InvalidH2 | H2Downgrade
            if *e.esource() == ErrorSource::Upstream =>
        {
            ErrorKind::BadUpstreamResponse
        }
        InvalidHTTPHeader | H1Error | InvalidH2 if *e.esource() == ErrorSource::Downstream => {
            ErrorKind::BadRequest
        }
        Custom("InvalidChunk" | "InvalidTrailerEnd") => {
            if *e.esource() == ErrorSource::Downstream {
                ErrorKind::BadRequest
            } else {
                ErrorKind::BadUpstreamResponse
            }
        }
        ConnectionClosed | ReadError | WriteError | H2Error | H2Downgrade | InvalidH2 | H1Error => {
            if *e.esource() == ErrorSource::Downstream {
                ErrorKind::BadRequest
            } else {
                ErrorKind::UpstreamReset
            }
        }
        _ => ErrorKind::Internal,
    }
}

/// Whether the client went away (nothing can be sent).
pub fn is_downstream_gone(e: &Error) -> bool {
    if *e.esource() != ErrorSource::Downstream {
        return false;
    }
    match e.etype() {
        ErrorType::ReadError
        | ErrorType::WriteError
        | ErrorType::ConnectionClosed
        | ErrorType::ReadTimedout => true,
        ErrorType::H2Error => h2_client_left(e),
        _ => false,
    }
}

/// Whether an HTTP/2 client's error is the client leaving: it reset the stream
/// or went away while the response was under way (Pingora reports a reset seen
/// while waiting as "Client closed H2"), not a malformed frame.
fn h2_client_left(e: &Error) -> bool {
    if let Some(h2) = e.root_cause().downcast_ref::<h2::Error>() {
        return h2.is_io() || (h2.is_remote() && (h2.is_reset() || h2.is_go_away()));
    }
    e.context
        .as_ref()
        .is_some_and(|c| c.as_str().starts_with("Client closed H2"))
}

/// Whether the request is gRPC (`content-type: application/grpc...`).
pub fn is_grpc(session: &ServerSession) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Writes the error response for `err` and returns the status sent (0 if the
/// client is gone).
pub async fn respond(session: &mut ServerSession, err: &LocalError, info: &ErrorInfo<'_>) -> u16 {
    let grpc = is_grpc(session);
    let (resp, body) = build(err, grpc, info);
    let status = resp.status.as_u16();
    if session.write_response_header(Box::new(resp)).await.is_err() {
        return 0;
    }
    if let Some(body) = body {
        let _ = session.write_response_body(body, true).await;
    }
    status
}

/// Answers a request whose head could not be read (no request, so never
/// gRPC) and returns the status sent (0 if the client is gone). The
/// connection is closed afterwards.
pub async fn respond_invalid(
    session: &mut ServerSession,
    err: &LocalError,
    info: &ErrorInfo<'_>,
) -> u16 {
    let (resp, body) = build(err, false, info);
    let status = resp.status.as_u16();
    session.set_keepalive(None);
    if session.write_response_header(Box::new(resp)).await.is_err() {
        return 0;
    }
    let _ = session
        .write_response_body(body.unwrap_or_default(), true)
        .await;
    status
}

/// Builds the response header and body for an error.
pub fn build(
    err: &LocalError,
    grpc: bool,
    info: &ErrorInfo<'_>,
) -> (ResponseHeader, Option<Bytes>) {
    let name = err.kind.name();
    let full = info.detail == ErrorDetail::Full;
    let request_id = info.request_id.and_then(|v| v.to_str().ok());
    if grpc {
        let mut resp = ResponseHeader::build(StatusCode::OK, Some(6)).expect("static status");
        let _ = resp.insert_header(http::header::CONTENT_TYPE, "application/grpc");
        let _ = resp.insert_header("grpc-status", err.kind.grpc_status().to_string());
        let message = if full { err.message.as_str() } else { name };
        let _ = resp.insert_header("grpc-message", grpc_percent_encode(message));
        let _ = resp.insert_header("x-corridor-error", name);
        if let Some(id) = info.request_id {
            let _ = resp.insert_header("x-request-id", id.clone());
        }
        return (resp, None);
    }
    // Written by hand to keep the field order (type, message, request_id).
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut body = String::with_capacity(64 + err.message.len());
    body.push_str(r#"{"error":{"type":"#);
    body.push_str(&quote(name));
    if full {
        body.push_str(r#","message":"#);
        body.push_str(&quote(&err.message));
    }
    if let Some(id) = request_id {
        body.push_str(r#","request_id":"#);
        body.push_str(&quote(id));
    }
    body.push_str("}}");
    let mut resp = ResponseHeader::build(err.kind.status(), Some(5)).expect("static status");
    let _ = resp.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    let _ = resp.insert_header("x-corridor-error", name);
    let _ = resp.insert_header(http::header::CACHE_CONTROL, "no-store");
    if let Some(id) = info.request_id {
        let _ = resp.insert_header("x-request-id", id.clone());
    }
    (resp, Some(Bytes::from(body)))
}

/// Percent-encodes a grpc-message as the gRPC spec asks.
fn grpc_percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: ErrorInfo<'static> = ErrorInfo {
        request_id: None,
        detail: ErrorDetail::Full,
    };

    #[test]
    fn json_body_and_header() {
        let id = HeaderValue::from_static("abc-123");
        let info = ErrorInfo {
            request_id: Some(&id),
            ..FULL
        };
        let (resp, body) = build(
            &LocalError::new(ErrorKind::NoRoute, "no route for GET /x"),
            false,
            &info,
        );
        assert_eq!(resp.status, StatusCode::NOT_FOUND);
        assert_eq!(resp.headers.get("x-corridor-error").unwrap(), "no_route");
        assert_eq!(resp.headers.get("x-request-id").unwrap(), "abc-123");
        let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(v["error"]["type"], "no_route");
        assert_eq!(v["error"]["message"], "no route for GET /x");
        assert_eq!(v["error"]["request_id"], "abc-123");
    }

    #[test]
    fn minimal_detail_echoes_nothing_of_the_request() {
        let info = ErrorInfo {
            detail: ErrorDetail::Minimal,
            ..FULL
        };
        let err = LocalError::new(ErrorKind::NoRoute, "no route for GET secret.example/admin");
        let (_, body) = build(&err, false, &info);
        let text = String::from_utf8(body.unwrap().to_vec()).unwrap();
        assert_eq!(text, r#"{"error":{"type":"no_route"}}"#);
        let (resp, _) = build(&err, true, &info);
        assert_eq!(resp.headers.get("grpc-message").unwrap(), "no_route");
    }

    #[test]
    fn rejections_map_to_their_status() {
        for status in [400u16, 405, 413, 414, 431, 501, 505] {
            let s = StatusCode::from_u16(status).unwrap();
            let err = LocalError::from(Rejection::new(s, "x"));
            assert_eq!(err.kind.status(), s);
        }
    }

    #[test]
    fn grpc_gets_trailers_only() {
        let (resp, body) = build(
            &LocalError::new(ErrorKind::Timeout, "deadline 50% gone"),
            true,
            &FULL,
        );
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.headers.get("grpc-status").unwrap(), "4");
        assert_eq!(
            resp.headers.get("grpc-message").unwrap(),
            "deadline 50%25 gone"
        );
        assert!(body.is_none());
    }

    #[test]
    fn classification() {
        let up = |t: ErrorType| {
            let mut e = Error::new(t);
            e.as_up();
            classify(&e)
        };
        assert_eq!(up(ErrorType::ConnectRefused), ErrorKind::ConnectFailed);
        assert_eq!(up(ErrorType::ReadTimedout), ErrorKind::Timeout);
        assert_eq!(up(ErrorType::ConnectionClosed), ErrorKind::UpstreamReset);
        assert_eq!(
            up(ErrorType::InvalidHTTPHeader),
            ErrorKind::BadUpstreamResponse
        );
        let mut d = Error::new(ErrorType::InvalidHTTPHeader);
        d.as_down();
        assert_eq!(classify(&d), ErrorKind::BadRequest);
    }
}
