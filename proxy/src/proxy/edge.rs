//! Owns what a listener does to a request before routing (the
//! `early_request_filter` phase): the strict head checks, path normalization,
//! the trusted client address, the verified client identity, the request id,
//! the forwarding headers and `x-forwarded-client-cert`. The
//! checks themselves live in `corridor_config::request`; this module applies
//! them to Pingora's session.

use std::net::IpAddr;
use std::sync::Arc;

use corridor_config::{
    check_chunked_prefix, check_h1_head, check_h2_request, check_query, client_from_forwarded_for,
    normalize_path, ForwardClientCert, Forwarding, ForwardingMode, Framing, H2Request,
    ListenerHttp, ListenerTls, Rejection,
};
use http::header::{HeaderName, HeaderValue, HOST};
use pingora_core::protocols::http::ServerSession as Session;
use pingora_http::RequestHeader;

use super::ctx::RequestCtx;
use crate::errors::LocalError;
use crate::identity::PeerIdentity;

// Headers are looked up by `HeaderName` and inserted by `&'static str`: Pingora
// keeps an HTTP/1 header's case in a side map, and a static name costs it no copy.

/// `x-request-id`.
pub(crate) const X_REQUEST_ID_STR: &str = "x-request-id";
static X_REQUEST_ID: HeaderName = HeaderName::from_static(X_REQUEST_ID_STR);
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static X_FORWARDED_CLIENT_CERT_UNDERSCORE: HeaderName =
    HeaderName::from_static("x_forwarded_client_cert");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Longest client-supplied request id that is kept.
const MAX_REQUEST_ID_LEN: usize = 200;

/// Identifies the client and the request, then checks the request head and
/// normalizes its path. Runs once per request, before routing; an error is
/// answered in Corridor's format and nothing is forwarded.
pub(super) fn admit(session: &mut Session, ctx: &mut RequestCtx) -> Result<(), LocalError> {
    let listener = std::sync::Arc::clone(&ctx.listener);
    let http = &listener.config.http;
    identify(session, ctx, http);
    if listener
        .config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_auth.is_some())
    {
        ctx.identity = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| s.extension.get::<Arc<PeerIdentity>>())
            .cloned();
        // A session resumed after the certificate expired was not verified again.
        if let Some(id) = &ctx.identity {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if now > id.not_after {
                return Err(LocalError::new(
                    crate::errors::ErrorKind::Forbidden,
                    format!("the client certificate of {} has expired", id.spiffe_id),
                ));
            }
        }
    }
    check_head(session, http)?;
    let h2 = session.is_http2();
    let req = session.req_header_mut();
    normalize(req, http)?;
    if h2 {
        join_cookie_crumbs(req);
    }
    // Once per request, before routing (as Envoy does): routes see the forwarding
    // headers that will be sent, and every try's copy of the request carries them.
    forwarding_headers(req, ctx, listener.config.tls.is_some());
    client_cert_header(req, ctx, listener.config.tls.as_ref());
    Ok(())
}

/// `x-forwarded-client-cert` as the listener says: removed (the default,
/// and always on listeners without client certificates), set from the
/// verified certificate, or kept as a trusted mTLS client sent it.
fn client_cert_header(req: &mut RequestHeader, ctx: &RequestCtx, tls: Option<&ListenerTls>) {
    let mode = tls.map_or(ForwardClientCert::Sanitize, |t| t.forward_client_cert);
    match (mode, &ctx.identity) {
        (ForwardClientCert::ForwardOnly, Some(_)) => {}
        (ForwardClientCert::SanitizeSet, Some(id)) => {
            req.remove_header(&X_FORWARDED_CLIENT_CERT);
            if let Some(v) = &id.xfcc {
                let _ = req.insert_header("x-forwarded-client-cert", v.clone());
            }
        }
        _ => {
            req.remove_header(&X_FORWARDED_CLIENT_CERT);
        }
    }
    // CGI-style servers read `x_forwarded_client_cert` as the same header.
    req.remove_header(&X_FORWARDED_CLIENT_CERT_UNDERSCORE);
}

/// Sets the peer, the trusted client address and the request id.
fn identify(session: &mut Session, ctx: &mut RequestCtx, http: &ListenerHttp) {
    // IPv4-mapped peers of a dual-stack listener are logged and forwarded as IPv4.
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_canonical());
    ctx.peer = peer;
    let f = &http.forwarding;
    ctx.trusted_peer = peer.is_some_and(|p| f.trusts(p));
    let req = session.req_header_mut();
    ctx.client = match peer {
        Some(p) if ctx.trusted_peer && f.mode == ForwardingMode::Trusted => {
            let values = req.headers.get_all(&X_FORWARDED_FOR).iter();
            Some(client_from_forwarded_for(
                p,
                values.map(|v| v.as_bytes()),
                &f.trusted,
                f.trusted_hops,
            ))
        }
        other => other,
    };
    let keep = ctx.trusted_peer || http.preserve_external_request_id;
    let mut ids = req.headers.get_all(&X_REQUEST_ID).iter();
    let id = match (ids.next(), ids.next()) {
        (Some(v), None) if keep && valid_request_id(v) => v.clone(),
        _ => {
            let id = new_request_id();
            let _ = req.insert_header(X_REQUEST_ID_STR, id.clone());
            id
        }
    };
    ctx.request_id = Some(id);
}

/// RFC 9113 §8.2.3: an HTTP/2 client may split `cookie` into several fields; they
/// are joined with "; " into one, as HTTP/1.1 upstreams expect.
fn join_cookie_crumbs(req: &mut RequestHeader) {
    let mut crumbs = req.headers.get_all(http::header::COOKIE).iter();
    let (Some(first), Some(_)) = (crumbs.next(), crumbs.next()) else {
        return;
    };
    let mut joined = bytes::BytesMut::from(first.as_bytes());
    for c in req.headers.get_all(http::header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(c.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(joined.freeze()) {
        let _ = req.insert_header(http::header::COOKIE, v);
    }
}

/// A fresh request id: a random (version 4) UUID.
pub(crate) fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    bits = (bits & !(0xf << 76)) | (0x4 << 76); // version 4
    bits = (bits & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant
    let mut out = [0u8; 36];
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
        } else {
            nibble -= 1;
            *slot = HEX[((bits >> (nibble * 4)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

/// A client-supplied id is kept only if it is short printable text.
fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID_LEN
        && b.iter()
            .all(|&c| c.is_ascii_graphic() && !matches!(c, b'"' | b'\\'))
}

/// The strict HTTP/1.1 head checks on the bytes as received, or the HTTP/2
/// checks the `h2` crate leaves to the application.
fn check_head(session: &Session, http: &ListenerHttp) -> Result<(), Rejection> {
    let downstream = session;
    if let Some(h1) = downstream.as_http1() {
        let head = check_h1_head(&h1.get_headers_raw_bytes(), &http.limits)?;
        // Chunks that came in the same read as the head are checked before anything is
        // forwarded; the rest of the body is framed by Pingora's reader as it streams.
        if head.framing == Framing::Chunked {
            if let Some(body) = h1.preread_body() {
                check_chunked_prefix(body)?;
            }
        }
        return Ok(());
    }
    if downstream.is_http2() {
        let req = session.req_header();
        let path = req.uri.path_and_query().map_or("", |p| p.as_str());
        check_h2_request(
            &H2Request {
                method: &req.method,
                path,
                authority: req.uri.authority().map(|a| a.as_str()),
                headers: &req.headers,
            },
            &http.limits,
        )?;
    }
    Ok(())
}

/// Replaces the path with its normalized form (the query is kept as is, once checked).
fn normalize(req: &mut RequestHeader, http: &ListenerHttp) -> Result<(), Rejection> {
    if let Some(q) = req.uri.query() {
        check_query(q)?;
    }
    let path = req.uri.path();
    if path == "*" || !path.starts_with('/') {
        // `OPTIONS *` and absolute paths without a slash are answered by routing.
        return Ok(());
    }
    let normalized = match normalize_path(path, &http.paths)? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(p) => p,
    };
    let mut pq = normalized;
    if let Some(q) = req.uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|_| Rejection::bad("the normalized path is not a valid URI"))?,
    );
    let uri = http::Uri::from_parts(parts)
        .map_err(|_| Rejection::bad("the normalized path is not a valid URI"))?;
    req.set_uri(uri);
    Ok(())
}

/// Puts the listener's forwarding headers on the request: what the client sent
/// is kept only where the policy believes it.
fn forwarding_headers(req: &mut RequestHeader, ctx: &RequestCtx, tls: bool) {
    let f: &Forwarding = &ctx.http().forwarding;
    let keep_client_headers = match f.mode {
        ForwardingMode::Append => true,
        ForwardingMode::Trusted => ctx.trusted_peer,
        ForwardingMode::Replace | ForwardingMode::Strip => false,
    };
    if f.mode == ForwardingMode::Strip {
        for h in [
            &X_FORWARDED_FOR,
            &FORWARDED,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
        ] {
            req.remove_header(h);
        }
        return;
    }
    let host = req.headers.get(HOST).cloned().or_else(|| {
        req.uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let xff = forwarded_for(req, ctx.peer, keep_client_headers);
    match xff {
        Some(v) => {
            let _ = req.insert_header("x-forwarded-for", v);
        }
        None => {
            req.remove_header(&X_FORWARDED_FOR);
        }
    }
    // Forwarded (RFC 7239) is not produced; a client's is passed on only from a trusted
    // peer, never from anyone else, whatever the mode.
    let believe_proto_host = f.mode == ForwardingMode::Trusted && ctx.trusted_peer;
    if !believe_proto_host {
        req.remove_header(&FORWARDED);
    }
    if !(believe_proto_host && req.headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if tls { "https" } else { "http" };
        let _ = req.insert_header("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    if !(believe_proto_host && req.headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                let _ = req.insert_header("x-forwarded-host", h);
            }
            None => {
                req.remove_header(&X_FORWARDED_HOST);
            }
        }
    }
}

/// The X-Forwarded-For value to send: the client's entries (when kept), then the peer.
fn forwarded_for(req: &RequestHeader, peer: Option<IpAddr>, keep: bool) -> Option<HeaderValue> {
    use std::fmt::Write as _;
    let mut out = bytes::BytesMut::with_capacity(48);
    if keep {
        for v in req.headers.get_all(&X_FORWARDED_FOR) {
            let Ok(v) = v.to_str() else { continue };
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(v.as_bytes());
        }
    }
    if let Some(p) = peer {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        let _ = write!(out, "{p}");
    }
    if out.is_empty() {
        return None;
    }
    // Shares the buffer: no second copy.
    HeaderValue::from_maybe_shared(out.freeze()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{s}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{s}");
        assert!(valid_request_id(&a));
    }

    #[test]
    fn client_request_ids_must_be_short_text() {
        assert!(valid_request_id(&HeaderValue::from_static("req-1.2:3")));
        assert!(!valid_request_id(&HeaderValue::from_static("two words")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        assert!(!valid_request_id(&HeaderValue::from_str(&long).unwrap()));
    }
}
