//! Owns request path normalization (RFC 3986 §6.2.2): decoding percent-encoded
//! unreserved characters, upper-casing other escapes, merging repeated slashes
//! (as nginx) and removing dot segments (§5.2.4), with encoded slashes and NUL
//! rejected by default. The normalized path is what routes match and what is
//! forwarded, so a prefix route or a direct-response deny cannot be walked
//! around with `..`, `//` or percent-encoding.

use std::borrow::Cow;

use super::{shown, Rejection};

/// What to do with `%2F` and `%5C` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Reject the request (400).
    #[default]
    Reject,
    /// Keep them encoded: routes see data, not separators.
    Keep,
    /// Decode both to `/` before normalizing.
    Unescape,
}

/// How a listener normalizes paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Decode unreserved escapes, upper-case the rest, remove dot segments.
    pub normalize: bool,
    /// Merge runs of `/`.
    pub merge_slashes: bool,
    /// Encoded slashes and backslashes.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathOptions {
    fn default() -> Self {
        Self {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// Validates and normalizes a request path (no query). Borrows when the path
/// is already normal.
pub fn normalize_path<'a>(path: &'a str, opts: &PathOptions) -> Result<Cow<'a, str>, Rejection> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(Rejection::bad(format!(
            "the path `{}` does not start with `/`",
            shown(b, 64)
        )));
    }
    // One scan: reject what is never valid, and find out whether anything would change.
    let mut change = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                    return Err(bad_escape(b, i));
                };
                let (Some(hv), Some(lv)) = (hex(h), hex(l)) else {
                    return Err(bad_escape(b, i));
                };
                let decoded = hv << 4 | lv;
                match decoded {
                    0 => return Err(Rejection::bad("the path contains an encoded NUL (%00)")),
                    b'/' | b'\\' => match opts.escaped_slashes {
                        EscapedSlashes::Reject => {
                            return Err(Rejection::bad(format!(
                                "the path contains an encoded {} ({}); this listener rejects encoded slashes",
                                if decoded == b'/' { "slash" } else { "backslash" },
                                shown(&b[i..i + 3], 3)
                            )))
                        }
                        EscapedSlashes::Keep => change |= opts.normalize && (h.is_ascii_lowercase() || l.is_ascii_lowercase()),
                        EscapedSlashes::Unescape => change = true,
                    },
                    _ if opts.normalize => {
                        change |= is_unreserved(decoded) || h.is_ascii_lowercase() || l.is_ascii_lowercase();
                    }
                    _ => {}
                }
                i += 3;
                continue;
            }
            b'/' => {
                let next = b.get(i + 1).copied();
                if opts.merge_slashes && next == Some(b'/') {
                    change = true;
                }
                if opts.normalize && next == Some(b'.') {
                    // "/." followed by "/", end, or "./" / "." end: a dot segment.
                    let seg_end = b[i + 1..]
                        .iter()
                        .position(|&x| x == b'/')
                        .map_or(b.len(), |p| i + 1 + p);
                    let seg = &b[i + 1..seg_end];
                    if seg == b"." || seg == b".." {
                        change = true;
                    }
                }
            }
            _ if !is_path_byte(c) => {
                return Err(Rejection::bad(format!(
                    "the path contains the byte 0x{c:02x} (`{}`), which must be percent-encoded",
                    shown(&[c], 4)
                )))
            }
            _ => {}
        }
        i += 1;
    }
    if !change {
        reject_dot_parameters(b)?;
        return Ok(Cow::Borrowed(path));
    }

    // Decode and re-encode into a byte buffer.
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (h, l) = (b[i + 1], b[i + 2]);
            let decoded = hex(h).unwrap_or(0) << 4 | hex(l).unwrap_or(0);
            match decoded {
                b'/' | b'\\' if opts.escaped_slashes == EscapedSlashes::Unescape => out.push(b'/'),
                _ if opts.normalize && is_unreserved(decoded) => out.push(decoded),
                _ if opts.normalize => {
                    out.push(b'%');
                    out.push(h.to_ascii_uppercase());
                    out.push(l.to_ascii_uppercase());
                }
                _ => out.extend_from_slice(&b[i..i + 3]),
            }
            i += 3;
            continue;
        }
        out.push(c);
        i += 1;
    }
    if opts.merge_slashes {
        out.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    reject_dot_parameters(&out)?;
    if opts.normalize {
        out = remove_dot_segments(&out);
    }
    // Only ASCII went in, so this cannot fail.
    Ok(Cow::Owned(
        String::from_utf8(out).unwrap_or_else(|_| "/".into()),
    ))
}

/// Validates a query string (without `?`): printable ASCII, no `#`, `"`, `<` or `>`,
/// well-formed escapes.
pub fn check_query(query: &str) -> Result<(), Rejection> {
    let b = query.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if !(b.get(i + 1).is_some_and(|&h| hex(h).is_some())
                    && b.get(i + 2).is_some_and(|&l| hex(l).is_some()))
                {
                    return Err(Rejection::bad(format!(
                        "the query has an invalid escape at `{}`",
                        shown(&b[i..], 3)
                    )));
                }
                i += 3;
                continue;
            }
            // Browsers send `\` unencoded in queries (the WHATWG query set leaves it).
            c if !is_path_byte(c) && c != b'?' && c != b'\\' => {
                return Err(Rejection::bad(format!(
                    "the query contains the byte 0x{c:02x}, which must be percent-encoded"
                )))
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Rejects `.` or `..` segments with path parameters (`/..;x/`): Tomcat, Jetty and
/// Spring resolve them as dot segments, which would walk around a prefix route.
fn reject_dot_parameters(path: &[u8]) -> Result<(), Rejection> {
    for seg in path.split(|&c| c == b'/') {
        let name = seg.split(|&c| c == b';').next().unwrap_or_default();
        if name.len() < seg.len() && (name == b"." || name == b"..") {
            return Err(Rejection::bad(format!(
                "the path has a dot segment with parameters (`{}`)",
                shown(seg, 32)
            )));
        }
    }
    Ok(())
}

/// RFC 3986 §5.2.4 on an absolute path; the result starts with `/`.
fn remove_dot_segments(input: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    // Segments after the leading "/"; a trailing "/" yields an empty last segment.
    let segments = input[1..].split(|&c| c == b'/');
    let count = input[1..].split(|&c| c == b'/').count();
    for (n, seg) in segments.enumerate() {
        let last = n + 1 == count;
        match seg {
            b"." => {
                if last {
                    out.push(b'/');
                }
            }
            b".." => {
                // Drop the last output segment (and its slash).
                match out.iter().rposition(|&c| c == b'/') {
                    Some(p) => out.truncate(p),
                    None => out.clear(),
                }
                if last {
                    out.push(b'/');
                }
            }
            _ => {
                out.push(b'/');
                out.extend_from_slice(seg);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn bad_escape(b: &[u8], i: usize) -> Rejection {
    Rejection::bad(format!(
        "the path has an invalid percent-escape at `{}`",
        shown(&b[i..], 3)
    ))
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 unreserved.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// pchar and `/`, plus the bytes nginx also takes unencoded (`{`, `}`, `|`, `^`,
/// `` ` ``, `[`, `]`); never controls, space, non-ASCII, `"`, `<`, `>`, `\`, `#` or `?`.
fn is_path_byte(c: u8) -> bool {
    (0x21..=0x7e).contains(&c) && !matches!(c, b'"' | b'<' | b'>' | b'\\' | b'#' | b'?')
}
