//! Owns the strict check of chunked request framing (RFC 9112 §7.1) over the
//! body bytes that arrived with the head, so that a malformed chunk sent in
//! the same packet as its head is refused before anything is forwarded. The
//! rest of a streamed body is framed by the data plane's own parser.

use super::head::is_tchar;
use super::{shown, Rejection};

/// Longest chunk extension accepted on one chunk-size line, in bytes.
pub const MAX_CHUNK_EXTENSION: usize = 1024;
/// Longest chunk size in hex digits (a u64).
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

/// Checks the chunked framing of `body`, a prefix of a chunked request body:
/// chunk sizes (hex digits only, no sign or whitespace, no overflow),
/// extensions (well formed, at most [`MAX_CHUNK_EXTENSION`] bytes), the CRLF
/// after each chunk's data, and trailer fields. A prefix that simply ends
/// early is fine; bytes after the end of the body (a pipelined request) are
/// not looked at.
pub fn check_chunked_prefix(body: &[u8]) -> Result<(), Rejection> {
    let mut rest = body;
    let mut n = 0usize;
    loop {
        n += 1;
        // chunk-size [ chunk-ext ] CRLF
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            return check_partial_size_line(rest, n);
        };
        let line = line_without_crlf(&rest[..lf], n)?;
        let size = chunk_size_line(line, n)?;
        rest = &rest[lf + 1..];
        if size == 0 {
            return check_trailers(rest);
        }
        // chunk-data CRLF
        let Ok(size) = usize::try_from(size) else {
            return Ok(());
        };
        if rest.len() < size {
            return Ok(());
        }
        rest = &rest[size..];
        match rest {
            [] | [b'\r'] => return Ok(()),
            [b'\r', b'\n', tail @ ..] => rest = tail,
            _ => {
                return Err(Rejection::bad(format!(
                    "chunk {n} is longer than its declared size (no CRLF after its data)"
                )))
            }
        }
    }
}

/// A chunk-size line without its line end: `1*HEXDIG *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`.
fn chunk_size_line(line: &[u8], n: usize) -> Result<u64, Rejection> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Rejection::bad(format!(
            "chunk {n}: `{}` is not a hexadecimal chunk size",
            shown(line, 24)
        )));
    }
    if digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(Rejection::bad(format!(
            "chunk {n}: the chunk size is too large"
        )));
    }
    let size = line[..digits].iter().fold(0u64, |acc, &d| {
        acc << 4 | u64::from((d as char).to_digit(16).unwrap_or(0))
    });
    if size >> 60 != 0 {
        // More than 2^60 bytes cannot be meant; treat like an overflow.
        return Err(Rejection::bad(format!(
            "chunk {n}: the chunk size is too large"
        )));
    }
    let ext = &line[digits..];
    if ext.len() > MAX_CHUNK_EXTENSION {
        return Err(Rejection::bad(format!(
            "chunk {n}: chunk extensions of {} bytes; at most {MAX_CHUNK_EXTENSION} are accepted",
            ext.len()
        )));
    }
    check_extensions(ext, n)?;
    Ok(size)
}

/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn check_extensions(mut ext: &[u8], n: usize) -> Result<(), Rejection> {
    let bad = || {
        Err(Rejection::bad(format!(
            "chunk {n}: malformed chunk extension `{}`",
            shown(ext, 40)
        )))
    };
    let skip_bws =
        |s: &[u8]| -> usize { s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count() };
    while !ext.is_empty() {
        ext = &ext[skip_bws(ext)..];
        let Some(r) = ext.strip_prefix(b";") else {
            return bad();
        };
        ext = &r[skip_bws(r)..];
        let name = ext.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return bad();
        }
        ext = &ext[name..];
        let ws = skip_bws(ext);
        if ext[ws..].first() == Some(&b'=') {
            ext = &ext[ws + 1..];
            ext = &ext[skip_bws(ext)..];
            if ext.first() == Some(&b'"') {
                let mut i = 1;
                loop {
                    match ext.get(i) {
                        None => return bad(),
                        Some(b'"') => break,
                        Some(b'\\')
                            if ext
                                .get(i + 1)
                                .is_some_and(|&c| is_qd_text(c) || c == b'"' || c == b'\\') =>
                        {
                            i += 2
                        }
                        Some(&c) if is_qd_text(c) => i += 1,
                        Some(_) => return bad(),
                    }
                }
                ext = &ext[i + 1..];
            } else {
                let v = ext.iter().take_while(|&&b| is_tchar(b)).count();
                if v == 0 {
                    return bad();
                }
                ext = &ext[v..];
            }
        }
    }
    Ok(())
}

/// Trailer fields after the last chunk, then the final CRLF.
fn check_trailers(mut rest: &[u8]) -> Result<(), Rejection> {
    loop {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            // The rest of the trailer section has not arrived yet.
            return Ok(());
        };
        let line = line_without_crlf(&rest[..lf], 0)?;
        rest = &rest[lf + 1..];
        if line.is_empty() {
            return Ok(());
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(Rejection::bad(format!(
                "`{}` in the chunked trailer section is not a field",
                shown(line, 40)
            )));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Rejection::bad(format!(
                "invalid trailer field name `{}`",
                shown(name, 40)
            )));
        }
        if line[colon + 1..]
            .iter()
            .any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f))
        {
            return Err(Rejection::bad(format!(
                "a control character in the trailer field `{}`",
                shown(name, 40)
            )));
        }
    }
}

/// The start of a chunk-size line whose end has not arrived yet.
fn check_partial_size_line(partial: &[u8], n: usize) -> Result<(), Rejection> {
    let line = partial.strip_suffix(b"\r").unwrap_or(partial);
    if line.contains(&b'\r') {
        return Err(Rejection::bad(format!(
            "chunk {n}: a bare CR in the chunk-size line"
        )));
    }
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(Rejection::bad(format!(
            "chunk {n}: the chunk size is too large"
        )));
    }
    if line.len() - digits > MAX_CHUNK_EXTENSION {
        return Err(Rejection::bad(format!(
            "chunk {n}: chunk extensions over {MAX_CHUNK_EXTENSION} bytes"
        )));
    }
    if !line.is_empty() && digits == 0 {
        return Err(Rejection::bad(format!(
            "chunk {n}: `{}` is not a hexadecimal chunk size",
            shown(line, 24)
        )));
    }
    Ok(())
}

/// A line that must end in CRLF: `line` is everything before the LF.
fn line_without_crlf(line: &[u8], n: usize) -> Result<&[u8], Rejection> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(Rejection::bad(if n > 0 {
            format!("chunk {n}: the chunk-size line ends with a bare LF")
        } else {
            "a trailer line ends with a bare LF".to_string()
        }));
    };
    if line.contains(&b'\r') {
        return Err(Rejection::bad("a bare CR in chunked framing"));
    }
    Ok(line)
}

fn is_qd_text(b: u8) -> bool {
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
        || b >= 0x80
}
