//! Owns the strict HTTP/1.1 request-head check: the raw head as the client sent
//! it (RFC 9112 syntax, framing and limits), and the field, host and length
//! rules that the HTTP/2 checks (`h2.rs`) share. Where an RFC allows either
//! reading, the stricter one is taken, as nginx does.

use http::StatusCode;

use super::{is_port, shown, HttpLimits, Rejection};

/// How a valid request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What a valid HTTP/1.x head declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H1Head {
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    pub http11: bool,
    /// Body framing.
    pub framing: Framing,
    /// Header fields in the head.
    pub fields: usize,
}

/// Checks a raw HTTP/1.x request head (request line, fields, empty line) as
/// received, before anything is forwarded.
pub fn check_h1_head(raw: &[u8], limits: &HttpLimits) -> Result<H1Head, Rejection> {
    let mut rest = raw;
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
    while let Some(r) = rest.strip_prefix(b"\r\n") {
        rest = r;
    }
    let mut lines = Lines { rest, number: 0 };
    // The request line first, so that a long target is 414 even when it makes the head too large.
    let line = lines.next_line(limits.max_request_line_bytes)?;
    let target = request_line(line, limits)?;
    if raw.len() > limits.max_headers_bytes {
        return Err(Rejection::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request head is {} bytes or more; this listener allows {}",
                raw.len(),
                limits.max_headers_bytes
            ),
        ));
    }

    let mut fields = 0usize;
    let mut hosts = 0usize;
    let mut host: &[u8] = b"";
    let mut content_length: Option<&[u8]> = None;
    let mut content_lengths = 0usize;
    let mut te = TransferCodings::default();
    loop {
        let line = lines.next_line(usize::MAX)?;
        if line.is_empty() {
            break;
        }
        let n = lines.number;
        if matches!(line[0], b' ' | b'\t') {
            return Err(Rejection::bad(format!(
                "line {n}: a header line starts with whitespace (obsolete line folding is not accepted)"
            )));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(Rejection::bad(format!(
                "line {n}: `{}` is not a header field (no colon)",
                shown(line, 40)
            )));
        };
        let name = &line[..colon];
        check_field_name(name, n)?;
        let value = trim_ows(&line[colon + 1..]);
        check_field_value(name, value, n)?;
        fields += 1;
        if fields > limits.max_headers_count {
            return Err(Rejection::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "too many header fields; this listener allows {}",
                    limits.max_headers_count
                ),
            ));
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host = value;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            content_lengths += 1;
            content_length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.add(value, n)?;
        }
    }
    if !lines.rest.is_empty() {
        return Err(Rejection::bad("bytes after the end of the request head"));
    }

    let http11 = target.http11;
    match hosts {
        0 if http11 => {
            return Err(Rejection::bad(
                "an HTTP/1.1 request needs a Host header field",
            ))
        }
        0 => {}
        1 => check_host(host)?,
        _ => return Err(Rejection::bad("more than one Host header field")),
    }
    if let Some(authority) = target.authority {
        if hosts == 1 && !authority.eq_ignore_ascii_case(host) {
            return Err(Rejection::bad(format!(
                "the request-target names `{}` but Host is `{}`",
                shown(authority, 64),
                shown(host, 64)
            )));
        }
        check_host(authority)?;
    }

    let framing = if te.present {
        if !http11 {
            return Err(Rejection::bad(
                "Transfer-Encoding is not allowed in an HTTP/1.0 request",
            ));
        }
        if content_lengths > 0 {
            return Err(Rejection::bad(
                "both Transfer-Encoding and Content-Length are present",
            ));
        }
        te.verdict()?;
        Framing::Chunked
    } else {
        match (content_lengths, content_length) {
            (0, _) | (_, None) => Framing::None,
            (1, Some(v)) => Framing::Length(parse_content_length(v, limits)?),
            _ => return Err(Rejection::bad("more than one Content-Length header field")),
        }
    };
    Ok(H1Head {
        http11,
        framing,
        fields,
    })
}

// === request line ===

struct Target<'a> {
    http11: bool,
    /// Authority of an absolute-form target.
    authority: Option<&'a [u8]>,
}

fn request_line<'a>(line: &'a [u8], limits: &HttpLimits) -> Result<Target<'a>, Rejection> {
    if line.len() > limits.max_request_line_bytes {
        return Err(Rejection::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request line is {} bytes or more; this listener allows {}",
                line.len(),
                limits.max_request_line_bytes
            ),
        ));
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::bad(format!(
            "`{}` is not a request line (method, target and version separated by single spaces)",
            shown(line, 80)
        )));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Rejection::bad(format!(
            "`{}` is not a valid method",
            shown(method, 32)
        )));
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(Rejection::new(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                format!(
                    "{} is not supported; use HTTP/1.1 or HTTP/2",
                    shown(version, 16)
                ),
            ))
        }
        _ => {
            return Err(Rejection::bad(format!(
                "`{}` is not an HTTP version",
                shown(version, 16)
            )))
        }
    };
    if target.is_empty() {
        return Err(Rejection::bad("empty request-target"));
    }
    // `\` is refused in the path but allowed in the query, where browsers send it raw.
    let query_start = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let bad_byte = target[..query_start]
        .iter()
        .find(|&&b| !is_target_byte(b))
        .or_else(|| {
            target[query_start..]
                .iter()
                .find(|&&b| !is_target_byte(b) && b != b'\\')
        });
    if let Some(&b) = bad_byte {
        return Err(Rejection::bad(format!(
            "the request-target contains the byte 0x{b:02x} (`{}`), which must be percent-encoded",
            shown(&[b], 4)
        )));
    }
    if method == b"CONNECT" {
        return Err(connect_not_supported());
    }
    let authority = if target[0] == b'/' {
        None
    } else if target == b"*" {
        if method != b"OPTIONS" {
            return Err(Rejection::bad(
                "the asterisk request-target is only for OPTIONS",
            ));
        }
        None
    } else {
        Some(absolute_form_authority(target)?)
    };
    Ok(Target { http11, authority })
}

/// The authority of an absolute-form target (`http://host[:port]/path`).
fn absolute_form_authority(target: &[u8]) -> Result<&[u8], Rejection> {
    let lower_starts =
        |p: &[u8]| target.len() >= p.len() && target[..p.len()].eq_ignore_ascii_case(p);
    let rest = if lower_starts(b"http://") {
        &target[7..]
    } else if lower_starts(b"https://") {
        &target[8..]
    } else {
        return Err(Rejection::bad(format!(
            "`{}` is not an origin-form (/path) or http(s) absolute-form target",
            shown(target, 64)
        )));
    };
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() {
        return Err(Rejection::bad("the absolute-form target has no host"));
    }
    Ok(authority)
}

pub(super) fn connect_not_supported() -> Rejection {
    Rejection::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "CONNECT tunnels are not supported",
    )
}

// === fields ===

fn check_field_name(name: &[u8], line: usize) -> Result<(), Rejection> {
    if name.is_empty() {
        return Err(Rejection::bad(format!(
            "line {line}: empty header field name"
        )));
    }
    if let Some(&b) = name.iter().find(|&&b| !is_tchar(b)) {
        let what = if matches!(b, b' ' | b'\t') {
            "whitespace inside or before the colon of".to_string()
        } else {
            format!("the byte 0x{b:02x} in")
        };
        return Err(Rejection::bad(format!(
            "line {line}: {what} the field name `{}`",
            shown(name, 40)
        )));
    }
    Ok(())
}

fn check_field_value(name: &[u8], value: &[u8], line: usize) -> Result<(), Rejection> {
    if let Some(&b) = value
        .iter()
        .find(|&&b| !is_field_vchar(b) && !matches!(b, b' ' | b'\t'))
    {
        let what = match b {
            0 => "a NUL byte".to_string(),
            b'\r' => "a bare CR".to_string(),
            _ => format!("the control byte 0x{b:02x}"),
        };
        return Err(Rejection::bad(format!(
            "line {line}: {what} in the value of `{}`",
            shown(name, 40)
        )));
    }
    Ok(())
}

/// `Transfer-Encoding` codings across every field, in order.
#[derive(Default)]
struct TransferCodings {
    present: bool,
    chunked_seen: bool,
    last_is_chunked: bool,
    /// A coding other than `chunked` (Corridor decodes none).
    other: Option<String>,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8], line: usize) -> Result<(), Rejection> {
        self.present = true;
        for coding in value.split(|&b| b == b',') {
            let coding = trim_ows(coding);
            let token = coding
                .split(|&b| b == b';')
                .next()
                .map(trim_ows)
                .unwrap_or_default();
            if coding.is_empty() {
                // RFC 9110 §5.6.1: empty list elements are ignored.
                continue;
            }
            if token.is_empty() {
                return Err(Rejection::bad(format!(
                    "line {line}: malformed element in Transfer-Encoding"
                )));
            }
            if token.eq_ignore_ascii_case(b"chunked") {
                if self.chunked_seen {
                    return Err(Rejection::bad(
                        "chunked is applied twice in Transfer-Encoding",
                    ));
                }
                if token.len() != coding.len() {
                    return Err(Rejection::bad("chunked takes no parameters"));
                }
                self.chunked_seen = true;
                self.last_is_chunked = true;
            } else {
                self.last_is_chunked = false;
                if self.other.is_none() {
                    self.other = Some(shown(token, 32));
                }
            }
        }
        Ok(())
    }

    fn verdict(&self) -> Result<(), Rejection> {
        if !self.last_is_chunked {
            return Err(Rejection::bad(
                "chunked must be the final transfer coding of a request",
            ));
        }
        if let Some(other) = &self.other {
            return Err(Rejection::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("transfer coding `{other}` is not supported; send the body chunked only"),
            ));
        }
        Ok(())
    }
}

pub(super) fn parse_content_length(v: &[u8], limits: &HttpLimits) -> Result<u64, Rejection> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(Rejection::bad(format!(
            "Content-Length `{}` is not a decimal number",
            shown(v, 32)
        )));
    }
    let mut n: u64 = 0;
    for &d in v {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| Rejection::bad("Content-Length is too large"))?;
    }
    if let Some(max) = limits.max_body_bytes {
        if n > max {
            return Err(Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is {n} bytes; this listener allows {max}"),
            ));
        }
    }
    Ok(n)
}

/// Checks a Host or authority: a host (reg-name, IPv4 or bracketed IPv6) and an optional port.
pub(super) fn check_host(v: &[u8]) -> Result<(), Rejection> {
    let bad = |why: &str| {
        Err(Rejection::bad(format!(
            "host `{}` is invalid: {why}",
            shown(v, 64)
        )))
    };
    if v.is_empty() {
        return bad("empty");
    }
    let (host, port) = if v[0] == b'[' {
        let Some(end) = v.iter().position(|&b| b == b']') else {
            return bad("unclosed `[`");
        };
        let inner = &v[1..end];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return bad("not an IPv6 address");
        }
        match &v[end + 1..] {
            [] => (&v[..=end], None),
            [b':', port @ ..] => (&v[..=end], Some(port)),
            _ => return bad("junk after `]`"),
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        }
    };
    if let Some(port) = port {
        if !is_port(port) {
            return bad("the port is not a number");
        }
    }
    if host.is_empty() {
        return bad("no host name");
    }
    let reg_name_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
    if host[0] != b'[' && !host.iter().all(|&b| reg_name_byte(b)) {
        return bad("a host name has letters, digits and `-._~!$&'()*+,;=%` only");
    }
    Ok(())
}

// === lines and characters ===

/// CRLF-terminated lines of a head; a bare LF or a CR anywhere else is an error.
struct Lines<'a> {
    rest: &'a [u8],
    number: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self, max: usize) -> Result<&'a [u8], Rejection> {
        self.number += 1;
        let n = self.number;
        let Some(lf) = self.rest.iter().position(|&b| b == b'\n') else {
            if self.rest.len() > max {
                return Err(Rejection::new(
                    StatusCode::URI_TOO_LONG,
                    format!("the request line is over {max} bytes"),
                ));
            }
            return Err(Rejection::bad(format!(
                "line {n} does not end (the request head is incomplete)"
            )));
        };
        if lf == 0 || self.rest[lf - 1] != b'\r' {
            return Err(Rejection::bad(format!(
                "line {n} ends with a bare LF; lines end with CRLF"
            )));
        }
        let line = &self.rest[..lf - 1];
        self.rest = &self.rest[lf + 1..];
        if line.contains(&b'\r') {
            return Err(Rejection::bad(format!("line {n} contains a bare CR")));
        }
        Ok(line)
    }
}

/// RFC 9110 tchar.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// VCHAR or obs-text.
pub(super) fn is_field_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Bytes allowed unencoded in a request-target: visible ASCII except `"`, `<`,
/// `>`, `\` and `#` (nginx also takes `{`, `}`, `|`, `^` and `` ` ``, so do we).
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'<' | b'>' | b'\\' | b'#')
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}
