//! A decoded HTTP/2 request (method, `:path`, `:authority`, header fields)
//! through `check_h2_request`. When it passes: the framing agrees with the
//! content-length fields, the path is normalized with every option combination
//! (same invariants as `request_head`), the query is checked, and the request is
//! routed through the fixed configs.
#![no_main]

use arbitrary::Arbitrary;
use corridor_config::{check_h2_request, Framing, H2Request, HttpLimits, RequestView};
use corridor_fuzz::{NameIn, ValueIn};
use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum MethodIn {
    Get,
    Post,
    Put,
    Options,
    Connect,
    Raw(Vec<u8>),
}

/// One path segment; built paths are `/` + segments joined by `/`.
#[derive(Debug, Arbitrary)]
enum Seg {
    Dot,
    DotDot,
    Empty,
    /// `%XY` of this byte, upper- or lower-case hex.
    Escape(u8, bool),
    Known(u8),
    Text(String),
}

const SEGS: &[&str] = &[
    "v1",
    "chat",
    "completions",
    "admin",
    "internal",
    "items",
    "search",
    "%2e",
    "%2F",
    "%5c",
    "a%2Fb",
    ".%2e",
];

#[derive(Debug, Arbitrary)]
enum PathIn {
    Built {
        segs: Vec<Seg>,
        query: Option<String>,
    },
    Raw(String),
}

impl PathIn {
    fn build(&self) -> String {
        match self {
            PathIn::Raw(s) => s.clone(),
            PathIn::Built { segs, query } => {
                let mut out = String::new();
                for s in segs {
                    out.push('/');
                    match s {
                        Seg::Dot => out.push('.'),
                        Seg::DotDot => out.push_str(".."),
                        Seg::Empty => {}
                        Seg::Escape(b, lower) => {
                            let e = format!("%{b:02X}");
                            out.push_str(&if *lower { e.to_ascii_lowercase() } else { e });
                        }
                        Seg::Known(i) => out.push_str(SEGS[*i as usize % SEGS.len()]),
                        Seg::Text(t) => out.push_str(t),
                    }
                }
                if out.is_empty() {
                    out.push('/');
                }
                if let Some(q) = query {
                    out.push('?');
                    out.push_str(q);
                }
                out
            }
        }
    }
}

const AUTHORITIES: &[&str] = &[
    "api.example.com",
    "API.Example.Com:8443",
    "x.api.example.com.",
    "api.other",
    "[::1]",
    "[::1]:8080",
    "example.org:80",
];

#[derive(Debug, Arbitrary)]
enum AuthIn {
    Known(u8),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    method: MethodIn,
    path: PathIn,
    authority: Option<AuthIn>,
    headers: Vec<(NameIn, ValueIn)>,
}

fuzz_target!(|input: Input| {
    let method = match &input.method {
        MethodIn::Get => Method::GET,
        MethodIn::Post => Method::POST,
        MethodIn::Put => Method::PUT,
        MethodIn::Options => Method::OPTIONS,
        MethodIn::Connect => Method::CONNECT,
        MethodIn::Raw(b) => match Method::from_bytes(b) {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    let path = input.path.build();
    let authority = input.authority.as_ref().map(|a| match a {
        AuthIn::Known(i) => AUTHORITIES[*i as usize % AUTHORITIES.len()].to_string(),
        AuthIn::Raw(s) => s.clone(),
    });
    let mut headers = HeaderMap::new();
    for (n, v) in &input.headers {
        if let (Some(n), Some(v)) = (n.build(), v.build()) {
            headers.append(n, v);
        }
    }
    let req = H2Request {
        method: &method,
        path: &path,
        authority: authority.as_deref(),
        headers: &headers,
    };
    let limits = HttpLimits::default();
    let Ok(framing) = check_h2_request(&req, &limits) else {
        return;
    };

    assert_ne!(method, Method::CONNECT);
    assert!(headers.len() <= limits.max_headers_count);
    assert!(path.len() <= limits.max_request_line_bytes);
    let lengths: Vec<_> = headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .collect();
    match framing {
        Framing::None => assert!(lengths.is_empty(), "no framing with {lengths:?}"),
        Framing::Length(n) => {
            assert_eq!(lengths.len(), 1, "Length({n}) with {lengths:?}");
            assert_eq!(
                lengths[0].to_str().ok().and_then(|v| v.parse::<u64>().ok()),
                Some(n)
            );
        }
        Framing::Chunked => panic!("HTTP/2 has no chunked framing"),
    }
    for name in [
        "connection",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(!headers.contains_key(name), "`{name}` passed");
    }
    assert!(headers.get_all(http::header::HOST).iter().count() <= 1);

    let (p, query) = corridor_fuzz::split_query(&path);
    let normalized = corridor_fuzz::check_path_and_query(p, query);
    let host = authority
        .as_deref()
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("");
    let routed_path = normalized.as_deref().unwrap_or(p);
    for client in [None, Some("10.1.2.3".parse().unwrap())] {
        corridor_fuzz::check_routing(
            host,
            &RequestView {
                method: &method,
                path: routed_path,
                query,
                headers: &headers,
                client,
            },
        );
    }
});
