//! Owns the one map from a failure to what the client sees: a status, an
//! `x-corridor-error` header and a JSON body `{"error":{"type","message"}}`, or
//! for gRPC requests a trailers-only response with `grpc-status`.

use bytes::Bytes;
use http::StatusCode;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

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
    /// A bug or an unexpected internal state (500).
    Internal,
}

impl ErrorKind {
    /// HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::NoEndpoint | ErrorKind::ConnectFailed => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UpstreamReset | ErrorKind::BadUpstreamResponse => StatusCode::BAD_GATEWAY,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
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
            ErrorKind::Internal => "internal",
        }
    }

    /// gRPC status code for gRPC clients.
    fn grpc_status(self) -> u8 {
        match self {
            ErrorKind::NoRoute => 12,   // UNIMPLEMENTED
            ErrorKind::Timeout => 4,    // DEADLINE_EXCEEDED
            ErrorKind::BadRequest => 3, // INVALID_ARGUMENT
            ErrorKind::Internal => 13,  // INTERNAL
            _ => 14,                    // UNAVAILABLE
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
    *e.esource() == ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::ConnectionClosed
                | ErrorType::ReadTimedout
        )
}

/// Whether the request is gRPC (`content-type: application/grpc...`).
pub fn is_grpc(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Writes the error response for `err` and returns the status sent (0 if the
/// client is gone).
pub async fn respond(session: &mut Session, err: &LocalError) -> u16 {
    let grpc = is_grpc(session);
    let (resp, body) = build(err, grpc);
    let status = resp.status.as_u16();
    let end = body.is_none();
    if session
        .write_response_header(Box::new(resp), end)
        .await
        .is_err()
    {
        return 0;
    }
    if let Some(body) = body {
        let _ = session.write_response_body(Some(body), true).await;
    }
    status
}

/// Builds the response header and body for an error.
pub fn build(err: &LocalError, grpc: bool) -> (ResponseHeader, Option<Bytes>) {
    let name = err.kind.name();
    if grpc {
        let mut resp = ResponseHeader::build(StatusCode::OK, Some(5)).expect("static status");
        let _ = resp.insert_header(http::header::CONTENT_TYPE, "application/grpc");
        let _ = resp.insert_header("grpc-status", err.kind.grpc_status().to_string());
        let _ = resp.insert_header("grpc-message", grpc_percent_encode(&err.message));
        let _ = resp.insert_header("x-corridor-error", name);
        return (resp, None);
    }
    let body = serde_json::json!({"error": {"type": name, "message": err.message}}).to_string();
    let mut resp = ResponseHeader::build(err.kind.status(), Some(4)).expect("static status");
    let _ = resp.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    let _ = resp.insert_header("x-corridor-error", name);
    let _ = resp.insert_header(http::header::CACHE_CONTROL, "no-store");
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

    #[test]
    fn json_body_and_header() {
        let (resp, body) = build(
            &LocalError::new(ErrorKind::NoRoute, "no route for GET /x"),
            false,
        );
        assert_eq!(resp.status, StatusCode::NOT_FOUND);
        assert_eq!(resp.headers.get("x-corridor-error").unwrap(), "no_route");
        let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(v["error"]["type"], "no_route");
        assert_eq!(v["error"]["message"], "no route for GET /x");
    }

    #[test]
    fn grpc_gets_trailers_only() {
        let (resp, body) = build(
            &LocalError::new(ErrorKind::Timeout, "deadline 50% gone"),
            true,
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
