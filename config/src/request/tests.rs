use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::*;

fn head(raw: &str) -> Result<H1Head, Rejection> {
    check_h1_head(raw.as_bytes(), &HttpLimits::default())
}

fn status(raw: &str) -> u16 {
    match head(raw) {
        Ok(_) => 200,
        Err(r) => r.status.as_u16(),
    }
}

#[test]
fn valid_heads_pass_with_their_framing() {
    let h = head("GET /a?b=c HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::None);
    assert!(h.http11);
    let h = head("POST / HTTP/1.1\r\nHost: a:8080\r\nContent-Length: 12\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Length(12));
    let h = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Chunked);
    let h = head("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(!h.http11);
    // Leading empty lines are ignored; OWS around values is fine; obs-text is allowed.
    head("\r\nGET http://a.b/x HTTP/1.1\r\nHost: A.b\r\nX:  v \t\r\nY: caf\u{e9}\r\n\r\n").unwrap();
    head("OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").unwrap();
}

#[test]
fn framing_conflicts_are_rejected() {
    let cases: &[(&str, u16)] = &[
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", 400),

        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
    ];
    for (raw, want) in cases {
        assert_eq!(status(raw), *want, "{raw:?}: {:?}", head(raw));
    }
}

#[test]
fn request_line_and_field_syntax_is_strict() {
    let cases: &[(&str, u16)] = &[
        ("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
        ("GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET /\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a:port\r\n\r\n", 400),
        ("GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX\x01: b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", 400),
    ];
    for (raw, want) in cases {
        assert_eq!(status(raw), *want, "{raw:?}: {:?}", head(raw));
    }
}

#[test]
fn rejections_name_the_line_and_field() {
    let r = head("GET / HTTP/1.1\r\nHost: a\r\nX-Bad : v\r\n\r\n").unwrap_err();
    assert_eq!(
        r.message,
        "line 3: whitespace inside or before the colon of the field name `X-Bad `"
    );
    let r = head("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n").unwrap_err();
    assert_eq!(r.message, "line 3: a NUL byte in the value of `X`");
}

#[test]
fn limits_give_414_431_and_413() {
    let limits = HttpLimits {
        max_headers_bytes: 200,
        max_headers_count: 3,
        max_request_line_bytes: 40,
        max_body_bytes: Some(10),
    };
    let check = |raw: &str| check_h1_head(raw.as_bytes(), &limits).map_err(|r| r.status);
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(40));
    assert_eq!(check(&long), Err(StatusCode::URI_TOO_LONG));
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "v".repeat(200)
    );
    assert_eq!(
        check(&big),
        Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        check(many),
        Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    let body = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    assert_eq!(check(body), Err(StatusCode::PAYLOAD_TOO_LARGE));
    let ok = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
    assert!(check(ok).is_ok());
    // A long target without its line end (a head cut at the parser's limit) is still 414.
    let cut = format!("GET /{}", "a".repeat(100));
    assert_eq!(check(&cut), Err(StatusCode::URI_TOO_LONG));
}

fn h2(
    method: &Method,
    path: &str,
    authority: Option<&str>,
    fields: &[(&str, &str)],
) -> Result<Framing, u16> {
    let mut headers = HeaderMap::new();
    for (k, v) in fields {
        headers.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    let req = H2Request {
        method,
        path,
        authority,
        headers: &headers,
    };
    check_h2_request(&req, &HttpLimits::default()).map_err(|r| r.status.as_u16())
}

#[test]
fn h2_requests_get_the_rfc_9113_checks() {
    let get = &Method::GET;
    assert_eq!(h2(get, "/", Some("a"), &[]), Ok(Framing::None));
    assert_eq!(
        h2(get, "/", Some("a"), &[("content-length", "5")]),
        Ok(Framing::Length(5))
    );
    assert_eq!(h2(get, "/", Some("a"), &[("x", " v")]), Err(400));
    assert_eq!(h2(get, "/", Some("a"), &[("x", "v\t")]), Err(400));
    assert_eq!(
        h2(get, "/", Some("a"), &[("connection", "close")]),
        Err(400)
    );
    assert_eq!(h2(get, "/", Some("a"), &[("te", "gzip")]), Err(400));
    assert_eq!(
        h2(get, "/", Some("a"), &[("te", "trailers")]),
        Ok(Framing::None)
    );
    assert_eq!(h2(get, "/", Some("a"), &[("host", "b")]), Err(400));
    assert_eq!(h2(get, "/", Some("a"), &[("host", "A")]), Ok(Framing::None));
    assert_eq!(
        h2(get, "/", None, &[("host", "a"), ("host", "a")]),
        Err(400)
    );
    assert_eq!(
        h2(
            get,
            "/",
            Some("a"),
            &[("content-length", "5"), ("content-length", "5")]
        ),
        Err(400)
    );
    assert_eq!(
        h2(get, "/", Some("a"), &[("content-length", "5,5")]),
        Err(400)
    );
    assert_eq!(h2(&Method::CONNECT, "", Some("a:443"), &[]), Err(405));
    assert_eq!(
        h2(get, &format!("/{}", "a".repeat(20000)), Some("a"), &[]),
        Err(414)
    );
    let many: Vec<(String, String)> = (0..101).map(|i| (format!("x-{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(h2(get, "/", Some("a"), &many), Err(431));
    let big = "v".repeat(70_000);
    assert_eq!(h2(get, "/", Some("a"), &[("x", &big)]), Err(431));
}

fn norm(path: &str) -> Result<String, u16> {
    normalize_path(path, &PathOptions::default())
        .map(|p| p.into_owned())
        .map_err(|r| r.status.as_u16())
}

#[test]
fn paths_are_normalized_before_matching() {
    let cases: &[(&str, &str)] = &[
        ("/", "/"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/a/../b", "/b"),
        ("/a/./b", "/a/b"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("//a///b//", "/a/b/"),
        ("/a//../b", "/b"),
        ("/%61dmin", "/admin"),
        ("/%2e%2e/admin", "/admin"),
        ("/a/%2E%2E/%2e/b", "/b"),
        ("/x%3a%7e", "/x%3A~"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/a.b/..c/.d", "/a.b/..c/.d"),
        ("/{x}|y", "/{x}|y"),
    ];
    for (input, want) in cases {
        assert_eq!(norm(input).as_deref(), Ok(*want), "{input}");
    }
    assert!(matches!(
        normalize_path("/already/normal", &PathOptions::default()),
        Ok(std::borrow::Cow::Borrowed(_))
    ));
}

#[test]
fn encoded_slashes_nul_and_bad_bytes() {
    for bad in [
        "/a%2Fb", "/a%2fb", "/a%5Cb", "/a%00b", "/a%zz", "/a%4", "/a b", "/a\\b", "/a\"b", "x/a",
        "",
    ] {
        assert_eq!(norm(bad), Err(400), "{bad:?}");
    }
    let keep = PathOptions {
        escaped_slashes: EscapedSlashes::Keep,
        ..PathOptions::default()
    };
    assert_eq!(normalize_path("/a%2fb/../c", &keep).unwrap(), "/c");
    assert_eq!(normalize_path("/a%2f..%2fb", &keep).unwrap(), "/a%2F..%2Fb");
    let unescape = PathOptions {
        escaped_slashes: EscapedSlashes::Unescape,
        ..PathOptions::default()
    };
    assert_eq!(normalize_path("/a%2F..%5Cb", &unescape).unwrap(), "/b");
    assert!(normalize_path("/a%00", &unescape).is_err());
    let off = PathOptions {
        normalize: false,
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::Keep,
    };
    assert_eq!(
        normalize_path("/a//../%61%2f", &off).unwrap(),
        "/a//../%61%2f"
    );
    assert!(normalize_path("/a b", &off).is_err());
}

#[test]
fn queries_are_checked() {
    assert!(check_query("a=b&c=%20d/e?f").is_ok());
    assert!(check_query("a=%zz").is_err());
    assert!(check_query("a=b c").is_err());
    assert!(check_query("a=#").is_err());
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cidrs_parse_and_match() {
    let c = Cidr::parse("10.0.0.0/8").unwrap();
    assert!(c.contains(ip("10.1.2.3")));
    assert!(c.contains(ip("::ffff:10.1.2.3")));
    assert!(!c.contains(ip("11.0.0.1")));
    assert!(!c.contains(ip("::1")));
    let one = Cidr::parse("192.0.2.7").unwrap();
    assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
    let v6 = Cidr::parse("2001:db8::/32").unwrap();
    assert!(v6.contains(ip("2001:db8:1::5")));
    assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    for bad in ["10.0.0.1/8", "10.0.0.0/33", "ten/8", "", "::/129"] {
        assert!(Cidr::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn client_address_walks_only_trusted_hops() {
    let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
    let walk = |values: &[&str], hops| {
        client_from_forwarded_for(
            ip("10.0.0.1"),
            values.iter().map(|v| v.as_bytes()),
            &trusted,
            hops,
        )
    };
    // A client that forges its own X-Forwarded-For only fools the left of it.
    assert_eq!(
        walk(&["6.6.6.6, 203.0.113.9, 10.0.0.2"], 0),
        ip("203.0.113.9")
    );
    assert_eq!(walk(&["6.6.6.6", "203.0.113.9"], 0), ip("203.0.113.9"));
    assert_eq!(walk(&[], 0), ip("10.0.0.1"));
    assert_eq!(walk(&["10.0.0.3, 10.0.0.2"], 0), ip("10.0.0.3"));
    assert_eq!(walk(&["garbage, 10.0.0.2"], 0), ip("10.0.0.2"));
    assert_eq!(walk(&["203.0.113.9:4711"], 0), ip("203.0.113.9"));
    assert_eq!(walk(&["[2001:db8::1]:80"], 0), ip("2001:db8::1"));
    // With a hop limit the walk stops even on trusted addresses.
    assert_eq!(
        walk(&["203.0.113.9, 10.0.0.3, 10.0.0.2"], 1),
        ip("10.0.0.2")
    );
    assert_eq!(
        walk(&["203.0.113.9, 10.0.0.3, 10.0.0.2"], 2),
        ip("10.0.0.3")
    );
    assert_eq!(
        walk(&["203.0.113.9, 10.0.0.3, 10.0.0.2"], 3),
        ip("203.0.113.9")
    );
}

#[test]
fn chunked_prefixes_are_checked_strictly() {
    let ok: &[&[u8]] = &[
        b"",
        b"3\r\nabc\r\n0\r\n\r\n",
        b"3;name=value\r\nabc\r\n0\r\n\r\n",
        b"3 ;a=\"q \\\" s\" ; b\r\nabc\r\n",
        b"A\r\n0123",
        b"3\r\nabc\r",
        b"0\r\nX-Trailer: v\r\n\r\nGET / HTTP/1.1\r\n",
        b"1f",
        b"0\r\nX-Tra",
    ];
    for body in ok {
        assert!(
            check_chunked_prefix(body).is_ok(),
            "{:?}: {:?}",
            String::from_utf8_lossy(body),
            check_chunked_prefix(body)
        );
    }
    let bad: &[&[u8]] = &[
        b"zz\r\nabc\r\n",
        b"-3\r\nabc\r\n",
        b"+3\r\nabc\r\n",
        b"0x3\r\nabc\r\n",
        b"3 \r\nabc\r\n",
        b"3\nabc\r\n",
        b"3\r\nabcd\r\n0\r\n\r\n",
        b"3\r\nabcXY",
        b"11111111111111111\r\n",
        b"fffffffffffffffff",
        b"3;\r\nabc\r\n",
        b"3;a=\r\nabc\r\n",
        b"3;a=\"unterminated\r\nabc\r\n",
        b"3;a\x01\r\nabc\r\n",
        b"0\r\nbad trailer\r\n\r\n",
        b"0\r\nX: a\x00b\r\n\r\n",
        b"0\r\nX: v\n\r\n",
    ];
    for body in bad {
        assert!(
            check_chunked_prefix(body).is_err(),
            "{:?} passed",
            String::from_utf8_lossy(body)
        );
    }
    let long_ext = format!("3;{}\r\nabc\r\n", "a".repeat(MAX_CHUNK_EXTENSION + 1));
    assert!(check_chunked_prefix(long_ext.as_bytes()).is_err());
    let long_partial = format!("3;{}", "a".repeat(MAX_CHUNK_EXTENSION + 1));
    assert!(check_chunked_prefix(long_partial.as_bytes()).is_err());
}

/// Found by the `request_head` fuzz target: an empty host before the port panicked.
#[test]
fn fuzz_regression_empty_host_with_port() {
    let raw = b"OPTIONS * HTTP/1.1\r\nHost::8080\r\n\r\n";
    let r = check_h1_head(raw, &HttpLimits::default()).unwrap_err();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message.contains("no host name"), "{}", r.message);
    let headers = HeaderMap::new();
    let req = H2Request {
        method: &Method::GET,
        path: "/",
        authority: Some(":443"),
        headers: &headers,
    };
    assert!(check_h2_request(&req, &HttpLimits::default()).is_err());
}

#[test]
fn review_fixes_dot_parameters_queries_empty_list_elements_mapped_cidrs() {
    // A dot segment with parameters is what Tomcat and Spring resolve as `..`.
    for bad in ["/public/..;/admin", "/a/.;x/b", "/%2e%2e;v=1/admin"] {
        assert_eq!(norm(bad), Err(400), "{bad}");
    }
    assert_eq!(norm("/a/..b;c/d").as_deref(), Ok("/a/..b;c/d"));
    // `\` is refused in the path but browsers send it raw in the query.
    assert!(check_query("a=b\\c").is_ok());
    assert_eq!(status("GET /x?a=\\b HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
    assert_eq!(status("GET /x\\b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    // RFC 9110 §5.6.1: empty list elements are ignored.
    let h = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked,\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Chunked);
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n"),
        400
    );
    // An IPv4-mapped range is the IPv4 range.
    let c = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
    assert!(c.contains(ip("10.1.2.3")) && c.contains(ip("::ffff:10.1.2.3")));
    assert!(Cidr::parse("::ffff:10.0.0.0/64").is_err());
    // `*` over HTTP/2 only for OPTIONS.
    assert_eq!(h2(&Method::GET, "*", Some("a"), &[]), Err(400));
    assert_eq!(h2(&Method::OPTIONS, "*", Some("a"), &[]), Ok(Framing::None));
}
