//! Malformed HTTP/2 requests (RFC 9113 §8.2–8.3), sent frame by frame with the
//! raw client: each is refused by the codec or answered by Corridor, and none
//! reaches the HTTP/1.1 upstream; a body that disagrees with `content-length`
//! never arrives there as a different or truncated body.

use std::time::Duration;

use corridor_tests::h2raw::RawH2;
use corridor_tests::{Corridor, Upstream};

use super::framing::{config, wire_bytes};

/// How Corridor (or the `h2` codec in front of it) must refuse a malformed HTTP/2 request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum H2Refusal {
    /// A stream error (RST_STREAM) or a connection error (GOAWAY) from the codec.
    Reset,
    /// Corridor's own error response with this status.
    Status(u16),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http2_requests_are_refused_before_any_upstream() {
    use H2Refusal::{Reset, Status};
    let up = Upstream::http1("up").await;
    let proxy = Corridor::start(&config(up.addr())).await;
    let base: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"a"),
        (b":path", b"/echo"),
    ];
    let with = |extra: &[(&'static [u8], &'static [u8])]| {
        let mut f = base.clone();
        f.extend_from_slice(extra);
        f
    };
    let replace = |name: &'static [u8], value: Option<&'static [u8]>| {
        let mut f: Vec<(&[u8], &[u8])> = base.iter().filter(|(n, _)| *n != name).cloned().collect();
        if let Some(v) = value {
            f.insert(0, (name, v));
        }
        f
    };
    let many: Vec<(Vec<u8>, Vec<u8>)> = (0..101)
        .map(|i| (format!("x-f{i}").into_bytes(), b"v".to_vec()))
        .collect();
    let long_path = format!("/echo?q={}", "q".repeat(20 * 1024)).into_bytes();
    type Fields = Vec<(Vec<u8>, Vec<u8>)>;
    let mut cases: Vec<(&str, Fields, H2Refusal)> = Vec::new();
    let mut add = |name: &'static str, fields: Vec<(&[u8], &[u8])>, want: H2Refusal| {
        cases.push((
            name,
            fields
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            want,
        ));
    };
    add("uppercase field name", with(&[(b"X-Upper", b"1")]), Reset);
    add("space in field name", with(&[(b"x y", b"1")]), Reset);
    add("connection", with(&[(b"connection", b"keep-alive")]), Reset);
    add(
        "transfer-encoding",
        with(&[(b"transfer-encoding", b"chunked")]),
        Reset,
    );
    add("keep-alive", with(&[(b"keep-alive", b"5")]), Reset);
    add("upgrade", with(&[(b"upgrade", b"h2c")]), Reset);
    add(
        "proxy-connection",
        with(&[(b"proxy-connection", b"close")]),
        Reset,
    );
    add("te other than trailers", with(&[(b"te", b"gzip")]), Reset);
    add("CR in value", with(&[(b"x-a", b"1\r2")]), Reset);
    add("LF in value", with(&[(b"x-a", b"1\n2")]), Reset);
    add("NUL in value", with(&[(b"x-a", b"1\x002")]), Reset);
    add(
        "leading space in value",
        with(&[(b"x-a", b" v")]),
        Status(400),
    );
    add(
        "trailing tab in value",
        with(&[(b"x-a", b"v\t")]),
        Status(400),
    );
    add("duplicate :path", with(&[(b":path", b"/echo")]), Reset);
    add(
        "pseudo-header after a field",
        {
            let mut f = replace(b":path", None);
            f.push((b"x-a", b"1"));
            f.push((b":path", b"/echo"));
            f
        },
        Reset,
    );
    add("missing :method", replace(b":method", None), Reset);
    add("missing :path", replace(b":path", None), Reset);
    add("empty :path", replace(b":path", Some(b"")), Reset);
    add("unknown pseudo-header", with(&[(b":foo", b"1")]), Reset);
    add(":status in a request", with(&[(b":status", b"200")]), Reset);
    add(
        ":path without a slash",
        replace(b":path", Some(b"echo")),
        Reset,
    );
    add(
        ":path with ..",
        replace(b":path", Some(b"/x/../%2e%2e/ech%6F%2Fz")),
        Status(400),
    );
    add(
        "host differs from :authority",
        with(&[(b"host", b"evil")]),
        Status(400),
    );
    add(
        "two content-length fields",
        with(&[(b"content-length", b"0"), (b"content-length", b"0")]),
        Status(400),
    );
    add(
        "content-length list",
        with(&[(b"content-length", b"0, 0")]),
        Reset,
    );
    add(
        "userinfo in :authority",
        replace(b":authority", Some(b"u@a")),
        Status(400),
    );
    add(
        "no authority at all",
        replace(b":authority", None),
        Status(400),
    );
    add(
        "two host fields",
        {
            let mut f = replace(b":authority", None);
            f.push((b"host", b"a"));
            f.push((b"host", b"a"));
            f
        },
        Status(400),
    );
    add(
        "CONNECT",
        vec![(b":method", b"CONNECT"), (b":authority", b"a:443")],
        Status(405),
    );
    add(
        "101 fields",
        {
            let mut f = base.clone();
            f.extend(many.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            f
        },
        Status(431),
    );
    add(
        "asterisk :path for GET",
        replace(b":path", Some(b"*")),
        Status(400),
    );
    add(
        "20 KiB :path",
        replace(b":path", Some(Box::leak(long_path.into_boxed_slice()))),
        Status(414),
    );

    let mut failures = Vec::new();
    for (name, fields, want) in &cases {
        let before = (up.requests(), wire_bytes(&up));
        let mut h2 = RawH2::connect(proxy.addr).await.unwrap();
        let id = h2.next_stream_id();
        let fields: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        h2.send_headers(id, &fields, true).await.unwrap();
        let out = h2.read_until_done(id, Duration::from_secs(5)).await;
        let reset =
            out.rst.is_some() || out.goaway.is_some() || (out.closed && out.status.is_none());
        let ok = match want {
            Reset => reset,
            Status(s) => {
                out.status == Some(*s)
                    && out.header("x-corridor-error").is_some()
                    && out.header("x-request-id").is_some()
            }
        };
        if !ok {
            failures.push(format!("{name}: want {want:?}, got {out:?}"));
        }
        if (up.requests(), wire_bytes(&up)) != before {
            failures.push(format!("{name}: reached the upstream:\n{}", up.wire_text()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // A body that disagrees with content-length is refused by the codec; the upstream never
    // gets a body, let alone a different or truncated one it could take as complete.
    for (name, cl, data) in [
        (
            "more data than content-length",
            &b"5"[..],
            &b"0123456789"[..],
        ),
        ("less data than content-length", b"10", b"01234"),
    ] {
        let logged = up.request_log().len();
        let mut h2 = RawH2::connect(proxy.addr).await.unwrap();
        let id = h2.next_stream_id();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"a"),
            (b":path", b"/sink"),
            (b"content-length", cl),
        ];
        h2.send_headers(id, &fields, false).await.unwrap();
        h2.send_data(id, data, true).await.unwrap();
        let out = h2.read_until_done(id, Duration::from_secs(5)).await;
        assert!(out.status != Some(200), "{name}: {out:?}");
        up.wait_wire_quiet(Duration::from_millis(200), Duration::from_secs(2))
            .await;
        assert_eq!(
            up.bytes_received(),
            0,
            "{name}: the upstream got body bytes:\n{}",
            up.wire_text()
        );
        // If the head went ahead of the body, it declared exactly the client's length.
        let new = &up.request_log()[logged..];
        assert!(
            new.iter()
                .all(|r| r.headers.get("content-length").map(|v| v.as_bytes()) == Some(cl)),
            "{name}: {new:?}"
        );
    }
}

/// RFC 9113 §8.2.3: cookie crumbs from an HTTP/2 client reach an HTTP/1.1 upstream as one
/// `cookie` field joined with "; ".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_crumbs_reach_an_http1_upstream_joined() {
    let up = Upstream::http1("up").await;
    let proxy = Corridor::start(&config(up.addr())).await;
    let mut h2 = RawH2::connect(proxy.addr).await.unwrap();
    let id = h2.next_stream_id();
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"a"),
        (b":path", b"/echo"),
        (b"cookie", b"a=1"),
        (b"x-mid", b"m"),
        (b"cookie", b"b=2"),
        (b"cookie", b"c=3"),
    ];
    h2.send_headers(id, &fields, true).await.unwrap();
    let out = h2.read_until_done(id, Duration::from_secs(5)).await;
    assert_eq!(out.status, Some(200), "{out:?}");
    let seen = up.request_log().pop().unwrap();
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"], "{}", up.wire_text());
}
