//! Strict HTTP/1.1 framing at the edge: a raw-socket corpus of malformed
//! requests (framing, request line, fields, limits, paths), each answered in
//! Corridor's format with the fitting status and a closed connection, with the
//! upstream's wire record proving that no byte of any of them was forwarded;
//! valid controls that must pass with exactly the RFC body; and the HTTP/2 →
//! HTTP/1.1 body framing that once desynced pooled upstream connections. The
//! malformed HTTP/2 corpus is in `framing_h2`.

use std::net::SocketAddr;
use std::time::Duration;

use corridor_tests::{Corridor, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A listener with a 1 MiB body limit in front of one HTTP/1.1 upstream.
pub(super) fn config(up: SocketAddr) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "{{{{LISTEN}}}}"
    route_table: t
    http: {{ max_request_body_bytes: 1048576 }}
admin: {{ address: "{{{{ADMIN}}}}" }}
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ prefix: / }}, route: {{ cluster: up }} }}
clusters:
  - {{ name: up, endpoints: [{{ address: "{up}" }}] }}
"#
    )
}

/// What came back on one connection.
struct Exchange {
    /// Everything read before EOF (or the timeout).
    text: String,
    /// The connection was closed by the proxy (EOF within the timeout).
    closed: bool,
}

impl Exchange {
    fn status(&self) -> u16 {
        self.text
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| self.text.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// Sends `bytes` on a fresh connection (in pieces separated by `gap`) and reads until EOF.
async fn exchange(addr: SocketAddr, pieces: &[&[u8]], gap: Duration) -> Exchange {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        // The proxy may answer and close before it read everything: not an error.
        if s.write_all(p).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 16384];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    Exchange {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Bytes the upstream received, over every connection.
pub(super) fn wire_bytes(up: &Upstream) -> usize {
    up.wire().iter().map(Vec::len).sum()
}

/// (name, request bytes, status Corridor must answer with).
fn malformed_corpus() -> Vec<(&'static str, Vec<u8>, u16)> {
    let post = |head: &str, body: &str| {
        format!("POST /echo HTTP/1.1\r\nHost: a\r\n{head}\r\n{body}").into_bytes()
    };
    let get = |line: &str, head: &str| format!("{line}\r\n{head}\r\n").into_bytes();
    let mut v: Vec<(&'static str, Vec<u8>, u16)> = vec![
        // Message framing: Content-Length and Transfer-Encoding.
        (
            "cl+te",
            post(
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "te+cl",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "cl duplicate, equal",
            post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"),
            400,
        ),
        (
            "cl list, equal",
            post("Content-Length: 3, 3\r\n", "abc"),
            400,
        ),
        (
            "cl list, different",
            post("Content-Length: 3, 4\r\n", "abcd"),
            400,
        ),
        ("cl sign +", post("Content-Length: +3\r\n", "abc"), 400),
        ("cl sign -", post("Content-Length: -3\r\n", "abc"), 400),
        ("cl hex", post("Content-Length: 0x3\r\n", "abc"), 400),
        (
            "cl inner space",
            post("Content-Length: 1 2\r\n", "abc"),
            400,
        ),
        (
            "cl overflow",
            post("Content-Length: 99999999999999999999999\r\n", "abc"),
            400,
        ),
        ("cl empty", post("Content-Length:\r\n", "abc"), 400),
        (
            "te gzip, chunked",
            post(
                "Transfer-Encoding: gzip, chunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            501,
        ),
        (
            "te chunked, gzip",
            post(
                "Transfer-Encoding: chunked, gzip\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "te identity",
            post("Transfer-Encoding: identity\r\n", "abc"),
            400,
        ),
        (
            "te chunked twice",
            post(
                "Transfer-Encoding: chunked, chunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "te two fields",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "te on HTTP/1.0",
            b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "te space before colon",
            post("Transfer-Encoding : chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "te obs-fold",
            post(
                "Transfer-Encoding:\r\n chunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "te vertical tab",
            post(
                "Transfer-Encoding: \x0bchunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "te xchunked",
            post("Transfer-Encoding: xchunked\r\n", "3\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        // Chunk framing (arriving with the head).
        (
            "chunk size not hex",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunk size negative",
            post("Transfer-Encoding: chunked\r\n", "-3\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunk size 0x",
            post("Transfer-Encoding: chunked\r\n", "0x3\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunk size overflow",
            post(
                "Transfer-Encoding: chunked\r\n",
                "fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "chunk size trailing space",
            post("Transfer-Encoding: chunked\r\n", "3 \r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunk size bare LF",
            post("Transfer-Encoding: chunked\r\n", "3\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunk longer than its size",
            post(
                "Transfer-Encoding: chunked\r\n",
                "3\r\nabcGET /smuggled HTTP/1.1\r\n\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "chunk extension too long",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("3;{}\r\nabc\r\n0\r\n\r\n", "x".repeat(2000)),
            ),
            400,
        ),
        (
            "chunk extension malformed",
            post("Transfer-Encoding: chunked\r\n", "3;=\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunked trailer bare LF",
            post(
                "Transfer-Encoding: chunked\r\n",
                "3\r\nabc\r\n0\r\nX: y\n\r\n",
            ),
            400,
        ),
        // Request line.
        (
            "method with (",
            get("GE(T /echo HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "double space",
            get("GET  /echo HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "space in target",
            get("GET /ec ho HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "tab in target",
            get("GET /ec\tho HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "control in target",
            get("GET /ec\x01ho HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "DEL in target",
            get("GET /ec\x7fho HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "non-ASCII in target",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "backslash in target",
            get("GET /echo\\..\\x HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "fragment in target",
            get("GET /echo#x HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        ("HTTP/1.2", get("GET /echo HTTP/1.2", "Host: a\r\n"), 505),
        (
            "HTTP/2.0 on h1",
            get("GET /echo HTTP/2.0", "Host: a\r\n"),
            505,
        ),
        (
            "lower-case version",
            get("GET /echo http/1.1", "Host: a\r\n"),
            400,
        ),
        ("HTTP/0.9 request", b"GET /echo\r\n\r\n".to_vec(), 400),
        (
            "CONNECT",
            get("CONNECT a:443 HTTP/1.1", "Host: a:443\r\n"),
            405,
        ),
        (
            "asterisk for GET",
            get("GET * HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        // Host and authority.
        ("HTTP/1.1 without Host", get("GET /echo HTTP/1.1", ""), 400),
        (
            "two Hosts",
            get("GET /echo HTTP/1.1", "Host: a\r\nHost: b\r\n"),
            400,
        ),
        (
            "Host with space",
            get("GET /echo HTTP/1.1", "Host: a b\r\n"),
            400,
        ),
        // Found by fuzzing: an empty host before the port once panicked the request task.
        (
            "Host with only a port",
            get("GET /echo HTTP/1.1", "Host: :8080\r\n"),
            400,
        ),
        (
            "absolute-form mismatch",
            get(
                "GET http://evil.example/echo HTTP/1.1",
                "Host: good.example\r\n",
            ),
            400,
        ),
        (
            "absolute-form userinfo",
            get("GET http://u@a/echo HTTP/1.1", "Host: u@a\r\n"),
            400,
        ),
        // Fields.
        (
            "obs-fold",
            get("GET /echo HTTP/1.1", "Host: a\r\nX-A: 1\r\n 2\r\n"),
            400,
        ),
        (
            "bare CR in value",
            get("GET /echo HTTP/1.1", "Host: a\r\nX-A: 1\r2\r\n"),
            400,
        ),
        (
            "bare LF line ends",
            b"GET /echo HTTP/1.1\nHost: a\n\n".to_vec(),
            400,
        ),
        (
            "NUL in value",
            get("GET /echo HTTP/1.1", "Host: a\r\nX-A: 1\x002\r\n"),
            400,
        ),
        (
            "NUL in name",
            get("GET /echo HTTP/1.1", "Host: a\r\nX-\x00A: 1\r\n"),
            400,
        ),
        (
            "control in value",
            get("GET /echo HTTP/1.1", "Host: a\r\nX-A: 1\x012\r\n"),
            400,
        ),
        (
            "space before colon",
            get("GET /echo HTTP/1.1", "Host : a\r\n"),
            400,
        ),
        (
            "space inside name",
            get("GET /echo HTTP/1.1", "Host: a\r\nX A: 1\r\n"),
            400,
        ),
        (
            "empty name",
            get("GET /echo HTTP/1.1", "Host: a\r\n: 1\r\n"),
            400,
        ),
        (
            "no colon",
            get("GET /echo HTTP/1.1", "Host: a\r\nnot a field\r\n"),
            400,
        ),
        // Paths.
        (
            "encoded slash",
            get("GET /ec%2Fho HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "encoded backslash",
            get("GET /ec%5cho HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "encoded NUL",
            get("GET /echo%00 HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "bad escape",
            get("GET /echo%zz HTTP/1.1", "Host: a\r\n"),
            400,
        ),
        (
            "bad escape in query",
            get("GET /echo?a=%z HTTP/1.1", "Host: a\r\n"),
            400,
        ),
    ];
    // Limits: 100 fields, 60 KiB of head, 16 KiB of request line, the 1 MiB body limit.
    let many: String = (0..101).map(|i| format!("X-F{i}: v\r\n")).collect();
    v.push((
        "101 fields",
        get("GET /echo HTTP/1.1", &format!("Host: a\r\n{many}")),
        431,
    ));
    let big = format!("Host: a\r\nX-Big: {}\r\n", "b".repeat(70 * 1024));
    v.push(("70 KiB of headers", get("GET /echo HTTP/1.1", &big), 431));
    let huge = format!("Host: a\r\nX-Big: {}\r\n", "b".repeat(1200 * 1024));
    v.push((
        "1.2 MiB of headers (over Pingora's own limit)",
        get("GET /echo HTTP/1.1", &huge),
        431,
    ));
    let long = format!("GET /echo?q={} HTTP/1.1", "q".repeat(20 * 1024));
    v.push(("20 KiB request line", get(&long, "Host: a\r\n"), 414));
    v.push((
        "body over the limit",
        post("Content-Length: 2097152\r\n", "abc"),
        413,
    ));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http1_requests_are_refused_and_never_reach_the_upstream() {
    let up = Upstream::http1("up").await;
    let proxy = Corridor::start(&config(up.addr())).await;
    let corpus = malformed_corpus();
    assert!(corpus.len() >= 40, "the corpus has {} cases", corpus.len());
    let mut failures = Vec::new();
    for (name, bytes, want) in &corpus {
        let before = wire_bytes(&up);
        let ex = exchange(proxy.addr, &[bytes], Duration::ZERO).await;
        let json = ex.header("content-type") == Some("application/json");
        let kind = ex.header("x-corridor-error").unwrap_or("");
        let ok = ex.status() == *want
            && ex.closed
            && json
            && !kind.is_empty()
            && ex.header("x-request-id").is_some_and(|id| id.len() == 36)
            && ex.body().contains(&format!("\"type\":\"{kind}\""))
            && !ex.text.to_ascii_lowercase().contains("server: pingora");
        if !ok {
            failures.push(format!(
                "{name}: want {want} (closed, JSON, x-corridor-error), got closed={} {:?}",
                ex.closed,
                ex.text.chars().take(400).collect::<String>()
            ));
        }
        if wire_bytes(&up) != before {
            failures.push(format!(
                "{name}: bytes reached the upstream:\n{}",
                up.wire_text()
            ));
        }
    }
    // Nothing arrives late either.
    up.wait_wire_quiet(Duration::from_millis(200), Duration::from_secs(2))
        .await;
    assert_eq!(up.requests(), 0, "{}", up.wire_text());
    assert!(
        wire_bytes(&up) == 0,
        "the upstream received bytes:\n{}",
        up.wire_text()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );

    // Every rejection is counted by its error type.
    let rejected = proxy.metric("corridor_rejected_requests_total", &[]).await;
    assert_eq!(rejected as usize, corpus.len(), "{}", proxy.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_requests_pass_with_exactly_their_rfc_body() {
    let up = Upstream::http1("up").await;
    let proxy = Corridor::start(&config(up.addr())).await;
    // (request, body the client must get back from /echo, path the upstream must see)
    let cases: &[(&[u8], &str, &str)] = &[
        (b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "", "/echo"),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", "abc", "/echo"),
        (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;ext=\"v\"\r\nabc\r\n3\r\ndef\r\n0\r\nX-Trailer: t\r\n\r\n",
            "abcdef",
            "/echo",
        ),
        (b"GET http://a/echo?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "", "/echo?x=1"),
        (b"GET /echo HTTP/1.0\r\n\r\n", "", "/echo"),
        (b"\r\nGET /echo HTTP/1.1\r\nHost: a\r\nX-Ows:  v \t\r\nConnection: close\r\n\r\n", "", "/echo"),
        (b"GET /x/../ech%6F HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "", "/echo"),
        (b"GET //echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "", "/echo"),
    ];
    for (i, (req, body, path)) in cases.iter().enumerate() {
        let ex = exchange(proxy.addr, &[req], Duration::ZERO).await;
        assert_eq!(ex.status(), 200, "case {i}: {}", ex.text);
        let got = if ex.header("transfer-encoding") == Some("chunked") {
            dechunk(ex.body())
        } else {
            ex.body().to_string()
        };
        assert_eq!(got, *body, "case {i}: {}", ex.text);
        assert_eq!(
            ex.header("x-echo-path"),
            Some(*path),
            "case {i}: {}",
            ex.text
        );
        let log = up.request_log();
        assert_eq!(log.len(), i + 1, "case {i}: one request each");
    }
    // The upstream saw each request once, framed for HTTP/1.1 and never with both
    // Content-Length and Transfer-Encoding.
    let wire = String::from_utf8_lossy(&up.wire().concat()).to_ascii_lowercase();
    assert!(
        !wire.contains("x-trailer"),
        "trailers are not forwarded as headers:\n{wire}"
    );
    for request in wire
        .split("\r\n\r\n")
        .filter(|r| r.contains(" http/1.1\r\n"))
    {
        assert!(
            !(request.contains("content-length:") && request.contains("transfer-encoding:")),
            "{request}"
        );
    }
}

/// A chunked body whose framing breaks after the head was forwarded: the client gets 400,
/// and the upstream never receives a complete request (no last chunk) on a connection that
/// is then closed, so nothing can be smuggled into the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_after_the_head_aborts_the_upstream_request() {
    let up = Upstream::http1("up").await;
    let proxy = Corridor::start(&config(up.addr())).await;
    // `/sink` answers only once it has the whole body, so the response has not started.
    let head: &[u8] =
        b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    let long_extension = format!("3;{}\r\nabc\r\n0\r\n\r\n", "x".repeat(9000));
    let later: [(&str, &[u8]); 4] = [
        (
            "size not hex",
            b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n0\r\n\r\n",
        ),
        // A bare LF inside an extension is a line end to some parsers in front (smuggling).
        (
            "bare LF in an extension",
            b"3;a\nGET /smuggled HTTP/1.1\r\nabc\r\n0\r\n\r\n",
        ),
        ("NUL in an extension", b"3;a\x00b\r\nabc\r\n0\r\n\r\n"),
        ("extension over 8 KiB", long_extension.as_bytes()),
    ];
    for (name, rest) in later {
        let log_before = up.request_log().len();
        let ex = exchange(proxy.addr, &[head, rest], Duration::from_millis(300)).await;
        assert!(ex.closed, "{name}: {}", ex.text);
        assert_eq!(ex.status(), 400, "{name}: {}", ex.text);
        assert_eq!(ex.header("x-corridor-error"), Some("bad_request"), "{name}");
        up.wait_wire_quiet(Duration::from_millis(200), Duration::from_secs(3))
            .await;
        let wire = up.wire_text();
        assert!(!wire.contains("smuggled"), "{name}: {wire}");
        assert!(
            !wire.contains("0\\r\\n\\r\\n"),
            "{name}: the upstream got a complete chunked body:\n{wire}"
        );
        assert!(
            up.request_log()[log_before..]
                .iter()
                .all(|r| r.path() == "/sink"),
            "{name}: {wire}"
        );
        assert_eq!(
            up.open_connections(),
            0,
            "{name}: the upstream connection must be closed:\n{wire}"
        );
    }
}

/// HTTP/2 POSTs without content-length whose body ends with an empty DATA frame carrying
/// END_STREAM, relayed to an HTTP/1.1 upstream on one pooled connection: each arrives as
/// exactly one chunked body with one last-chunk, and the next request parses cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_to_h1_empty_end_stream_data_frame_does_not_desync_the_upstream() {
    use corridor_tests::h2raw::RawH2;
    let up = Upstream::http1("up").await;
    let proxy = Corridor::start(&config(up.addr())).await;
    let mut h2 = RawH2::connect(proxy.addr).await.unwrap();
    for (i, body) in ["first", "second", "third"].iter().enumerate() {
        let id = h2.next_stream_id();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"a"),
            (b":path", b"/echo"),
        ];
        h2.send_headers(id, &fields, false).await.unwrap();
        h2.send_data(id, body.as_bytes(), false).await.unwrap();
        h2.send_data(id, b"", true).await.unwrap();
        let out = h2.read_until_done(id, Duration::from_secs(5)).await;
        assert_eq!(
            out.status,
            Some(200),
            "request {i}: {out:?}\n{}",
            up.wire_text()
        );
        assert_eq!(out.body_text(), *body, "request {i}");
    }
    let wire = up.wire();
    assert_eq!(
        wire.len(),
        1,
        "one pooled upstream connection:\n{}",
        up.wire_text()
    );
    let text = String::from_utf8_lossy(&wire[0]);
    assert_eq!(
        text.matches("POST /echo HTTP/1.1\r\n").count(),
        3,
        "{}",
        up.wire_text()
    );
    assert_eq!(
        text.matches("\r\n0\r\n\r\n").count(),
        3,
        "one last-chunk per request:\n{}",
        up.wire_text()
    );
    assert!(
        !text.contains("\r\n\r\n0\r\n\r\n0\r\n"),
        "{}",
        up.wire_text()
    );
    assert_eq!(up.requests(), 3);
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}
