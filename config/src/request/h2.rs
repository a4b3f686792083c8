//! Owns the checks on a decoded HTTP/2 request that RFC 9113 §8.2–8.3 call
//! malformed and the `h2` codec lets through (whitespace around values, more
//! than one `content-length`, `host` against `:authority`), plus the
//! listener's limits. The codec itself refuses uppercase names, CR/LF/NUL,
//! pseudo-header misuse and bodies that disagree with `content-length`, and
//! Pingora's acceptor refuses authority conflicts; the checks here that repeat
//! those stay as defense in depth, so that a change below cannot let such a
//! request through.

use http::{HeaderMap, HeaderName, StatusCode};

use super::head::{
    check_host, connect_not_supported, is_field_vchar, parse_content_length, Framing,
};
use super::{shown, HttpLimits, Rejection};

/// What [`check_h2_request`] needs from a decoded HTTP/2 request.
#[derive(Debug, Clone, Copy)]
pub struct H2Request<'a> {
    /// `:method`.
    pub method: &'a http::Method,
    /// `:path` (path and query), empty when absent.
    pub path: &'a str,
    /// `:authority`, if sent.
    pub authority: Option<&'a str>,
    /// Regular header fields.
    pub headers: &'a HeaderMap,
}

/// Checks a decoded HTTP/2 request for what RFC 9113 §8.2–8.3 call malformed
/// and the `h2` crate lets through, and for the listener's limits.
pub fn check_h2_request(req: &H2Request<'_>, limits: &HttpLimits) -> Result<Framing, Rejection> {
    if req.method == http::Method::CONNECT {
        return Err(connect_not_supported());
    }
    if req.path == "*" && req.method != http::Method::OPTIONS {
        return Err(Rejection::bad("the asterisk :path is only for OPTIONS"));
    }
    if req.path.len() > limits.max_request_line_bytes {
        return Err(Rejection::new(
            StatusCode::URI_TOO_LONG,
            format!(
                ":path is {} bytes; this listener allows {}",
                req.path.len(),
                limits.max_request_line_bytes
            ),
        ));
    }
    let fields = req.headers.len();
    if fields > limits.max_headers_count {
        return Err(Rejection::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "{fields} header fields; this listener allows {}",
                limits.max_headers_count
            ),
        ));
    }
    let mut size = req.path.len() + req.method.as_str().len() + req.authority.map_or(0, str::len);
    let mut hosts = 0usize;
    let mut content_length: Option<&[u8]> = None;
    for (name, value) in req.headers {
        size += name.as_str().len() + value.len();
        let v = value.as_bytes();
        if is_connection_specific(name) {
            return Err(Rejection::bad(format!(
                "`{name}` is a connection-specific header field, not allowed in HTTP/2"
            )));
        }
        if name == http::header::TE && v != b"trailers" {
            return Err(Rejection::bad(
                "te in an HTTP/2 request may only be `trailers`",
            ));
        }
        if v.first().is_some_and(|b| matches!(b, b' ' | b'\t'))
            || v.last().is_some_and(|b| matches!(b, b' ' | b'\t'))
        {
            return Err(Rejection::bad(format!(
                "the value of `{name}` starts or ends with whitespace"
            )));
        }
        if let Some(b) = v
            .iter()
            .find(|&&b| !is_field_vchar(b) && !matches!(b, b' ' | b'\t'))
        {
            return Err(Rejection::bad(format!(
                "the value of `{name}` contains the control byte 0x{b:02x}"
            )));
        }
        if name == http::header::HOST {
            hosts += 1;
            if hosts > 1 {
                return Err(Rejection::bad("more than one host header field"));
            }
            check_host(v)?;
            if let Some(a) = req.authority {
                if !a.as_bytes().eq_ignore_ascii_case(v) {
                    return Err(Rejection::bad(format!(
                        "host `{}` differs from :authority `{}`",
                        shown(v, 64),
                        shown(a.as_bytes(), 64)
                    )));
                }
            }
        } else if name == http::header::CONTENT_LENGTH {
            if content_length.is_some() {
                return Err(Rejection::bad("more than one content-length header field"));
            }
            content_length = Some(v);
        }
    }
    if size > limits.max_headers_bytes {
        return Err(Rejection::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request headers are {size} bytes; this listener allows {}",
                limits.max_headers_bytes
            ),
        ));
    }
    match req.authority {
        Some(a) => check_host(a.as_bytes())?,
        None if hosts == 0 => {
            return Err(Rejection::bad(
                "the request has neither :authority nor a host header",
            ))
        }
        None => {}
    }
    match content_length {
        Some(v) => Ok(Framing::Length(parse_content_length(v, limits)?)),
        None => Ok(Framing::None),
    }
}

fn is_connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    )
}
