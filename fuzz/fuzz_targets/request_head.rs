//! Raw HTTP/1.x request bytes as a client sends them: the head (up to the
//! first empty line) through `check_h1_head`, the bytes after it through
//! `check_chunked_prefix`. When the head passes: its field count and framing
//! agree with the fields; the target's path is normalized with every option
//! combination (a normalized path starts with `/`, has no `//` when merging,
//! no dot segments when normalizing, and is a fixed point), the query is
//! checked, the client address is read from X-Forwarded-For behind a trusted
//! peer, and the request is routed through the demo and the matcher config
//! (virtual host, route, subset).
#![no_main]

use std::net::IpAddr;

use corridor_config::{
    check_chunked_prefix, check_h1_head, client_from_forwarded_for, Cidr, Framing, HttpLimits,
    RequestView,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

/// Splits off the head: leading empty lines, the request line and fields, and
/// the empty line ending them. `None` when no empty line ends a head.
fn split_head(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut start = 0;
    while data[start..].starts_with(b"\r\n") {
        start += 2;
    }
    match data[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => {
            let (head, body) = data.split_at(start + p + 4);
            (head, Some(body))
        }
        None => (data, None),
    }
}

/// The request line's parts and the fields of a head `check_h1_head` accepted.
struct Parsed<'a> {
    method: &'a [u8],
    target: &'a str,
    fields: Vec<(&'a [u8], &'a [u8])>,
}

fn parse(head: &[u8]) -> Parsed<'_> {
    let mut rest = head;
    while let Some(r) = rest.strip_prefix(b"\r\n") {
        rest = r;
    }
    let mut lines = rest
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().expect("a request line");
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().expect("a method");
    let target = std::str::from_utf8(parts.next().expect("a target"))
        .expect("an accepted request-target is ASCII");
    let mut fields = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':').expect("a colon");
        let value = &line[colon + 1..];
        let value = value
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t'))
            .map_or(&value[..0], |s| {
                let e = value
                    .iter()
                    .rposition(|b| !matches!(b, b' ' | b'\t'))
                    .unwrap();
                &value[s..=e]
            });
        fields.push((&line[..colon], value));
    }
    Parsed {
        method,
        target,
        fields,
    }
}

/// Path (with `*` for the asterisk form) and query of a request-target.
fn path_and_query(target: &str) -> (&str, Option<&str>) {
    if target.starts_with('/') || target == "*" {
        return corridor_fuzz::split_query(target);
    }
    let lower = target.to_ascii_lowercase();
    let skip = if lower.starts_with("http://") { 7 } else { 8 };
    let rest = &target[skip..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (path, query) = corridor_fuzz::split_query(&rest[end..]);
    (if path.is_empty() { "/" } else { path }, query)
}

/// The authority of an absolute-form target.
fn authority(target: &str) -> Option<&str> {
    if target.starts_with('/') || target == "*" {
        return None;
    }
    let rest = target.split_once("://")?.1;
    Some(&rest[..rest.find(['/', '?']).unwrap_or(rest.len())])
}

fn trusted() -> &'static [Cidr] {
    static T: std::sync::OnceLock<Vec<Cidr>> = std::sync::OnceLock::new();
    T.get_or_init(|| vec![Cidr::parse("10.0.0.0/8").unwrap()])
}

fuzz_target!(|data: &[u8]| {
    let limits = HttpLimits::default();
    let (head, body) = split_head(data);
    if let Some(body) = body {
        let _ = check_chunked_prefix(body);
        // The whole input is a head followed by bytes: never a valid head.
        if !body.is_empty() {
            assert!(
                check_h1_head(data, &limits).is_err(),
                "bytes after the head were accepted"
            );
        }
    }
    let Ok(h) = check_h1_head(head, &limits) else {
        return;
    };

    let p = parse(head);
    assert_eq!(h.fields, p.fields.len(), "field count");
    let named = |n: &'static str| {
        p.fields
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(n.as_bytes()))
    };
    match h.framing {
        Framing::None => assert_eq!(
            named("content-length").count() + named("transfer-encoding").count(),
            0
        ),
        Framing::Length(n) => {
            assert_eq!(named("transfer-encoding").count(), 0);
            let v: Vec<_> = named("content-length").collect();
            assert_eq!(v.len(), 1);
            assert_eq!(
                std::str::from_utf8(v[0].1)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok()),
                Some(n)
            );
        }
        Framing::Chunked => {
            assert!(h.http11, "chunked in HTTP/1.0");
            assert_eq!(named("content-length").count(), 0);
        }
    }
    assert!(named("host").count() <= 1);

    // Client address behind a trusted peer.
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let xff: Vec<&[u8]> = named("x-forwarded-for").map(|(_, v)| *v).collect();
    let mut client = peer;
    for hops in [0, 1, 2, 5] {
        let c = client_from_forwarded_for(peer, xff.iter().copied(), trusted(), hops);
        if xff.is_empty() {
            assert_eq!(c, peer);
        }
        if hops == 0 {
            client = c;
        }
    }

    // Path and query.
    let (path, query) = path_and_query(p.target);
    let normalized = if path == "*" {
        None
    } else {
        corridor_fuzz::check_path_and_query(path, query)
    };

    // Routing.
    let Ok(method) = Method::from_bytes(p.method) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (n, v) in &p.fields {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            headers.append(n, v);
        }
    }
    let host = named("host")
        .next()
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .or_else(|| authority(p.target))
        .unwrap_or("");
    let routed_path = normalized.as_deref().unwrap_or(path);
    corridor_fuzz::check_routing(
        host,
        &RequestView {
            method: &method,
            path: routed_path,
            query,
            headers: &headers,
            client: Some(client),
        },
    );
});
