//! Owns the checks a listener applies to a request before routing: the strict
//! HTTP/1.1 head validator (RFC 9112 framing, limits), the HTTP/2 request
//! checks that the `h2` crate leaves to the application (RFC 9113 §8.2–8.3),
//! path normalization (RFC 3986) and the client address behind trusted
//! proxies. All of it is pure: bytes and header maps in, a verdict out, so the
//! data plane, the fuzz targets and the benches call the same code.
//!
//! A failed check is a [`Rejection`]: the HTTP status to answer with and a
//! message for the operator. Nothing here allocates unless it rejects or has to
//! rewrite a path.

use std::borrow::Cow;

use http::StatusCode;

mod chunked;
mod forwarded;
mod h2;
mod head;
mod path;

pub use chunked::{check_chunked_prefix, MAX_CHUNK_EXTENSION};
pub use forwarded::{client_from_forwarded_for, Cidr, CidrError};
pub use h2::{check_h2_request, H2Request};
pub use head::{check_h1_head, Framing, H1Head};
pub use path::{check_query, normalize_path, EscapedSlashes, PathOptions};

/// Limits a listener enforces on request heads and bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line plus fields) in bytes; larger is 431.
    pub max_headers_bytes: usize,
    /// Most header fields; more is 431.
    pub max_headers_count: usize,
    /// Longest request line (HTTP/2: `:path`) in bytes; longer is 414.
    pub max_request_line_bytes: usize,
    /// Largest request body in bytes, if limited; a larger Content-Length is 413.
    pub max_body_bytes: Option<u64>,
}

impl Default for HttpLimits {
    /// Envoy's defaults: 60 KiB of headers, 100 fields; a 16 KiB request line.
    fn default() -> Self {
        Self {
            max_headers_bytes: 60 * 1024,
            max_headers_count: 100,
            max_request_line_bytes: 16 * 1024,
            max_body_bytes: None,
        }
    }
}

/// Why a request is refused before routing: the status and an operator-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Status to answer with (400, 405, 413, 414, 431, 501 or 505).
    pub status: StatusCode,
    /// What is wrong, naming the line or field where that helps.
    pub message: Cow<'static, str>,
}

impl Rejection {
    /// A rejection with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

/// A port: one to five decimal digits.
pub(crate) fn is_port(p: &[u8]) -> bool {
    !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit)
}

/// Bytes shown in messages: printable ASCII as is, the rest escaped, at most `max` bytes.
pub(crate) fn shown(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let mut s = cut.escape_ascii().to_string();
    if bytes.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests;
