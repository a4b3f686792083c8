//! Bad input on the data plane: malformed requests are answered (400) or the
//! connection is closed, never a crash; Corridor's own errors are JSON, or
//! `grpc-status` for gRPC clients.

use std::time::Duration;

use corridor_tests::{grpc, Client, Corridor, EchoMsg, GrpcServer, UpstreamProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{fetch_get, single_route, upstream, HEAD};

/// Sends raw bytes and returns whatever comes back before the connection closes.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    String::from_utf8_lossy(&raw_bytes(addr, bytes).await).into_owned()
}

/// Sends raw bytes and returns the bytes that come back before the connection closes.
async fn raw_bytes(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_a_corridor_400_or_a_goaway_and_the_process_keeps_serving() {
    // The full raw-socket corpus is in `framing`; this covers input that is not HTTP/1.1 at all.
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(&[(up.addr(), "")], "", "")).await;

    let out = raw(
        proxy.addr,
        b"GET /status/200 HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        out.contains("x-corridor-error: bad_request") && out.contains("\"type\":\"bad_request\""),
        "{out}"
    );
    let out = raw(
        proxy.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("is not a path"),
        "{out}"
    );
    // Not HTTP/1.1: a TLS ClientHello and a bare line get Corridor's 400.
    for case in [
        &b"BLAH\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let out = raw(proxy.addr, case).await;
        assert!(
            out.starts_with("HTTP/1.1 400") && out.contains("x-corridor-error: bad_request"),
            "{case:?} -> {out}"
        );
    }
    // An HTTP/2 preface followed by a DATA frame on stream 0 (instead of SETTINGS) is a
    // connection error: a GOAWAY frame (type 7).
    let out = raw_bytes(
        proxy.addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    )
    .await;
    assert!(
        out.windows(4).any(|w| w[3] == 7 && w[..3] == [0, 0, 8]),
        "no GOAWAY in {out:?}"
    );
    assert_eq!(up.requests(), 0);
    assert!(up.wire().iter().all(Vec::is_empty), "{}", up.wire_text());
    // Still serving, same process.
    let c = Client::h1(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.status, 200);
    let c = Client::h2c(proxy.addr).await.unwrap();
    assert_eq!(fetch_get(&c, "/status/200").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_get_grpc_status_for_corridor_errors() {
    let server = GrpcServer::start("grpc").await;
    let (_reserved, dead) = corridor_tests::proxy::refused_addr();
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ path: /corridor.test.Echo/Unary, headers: [{{ name: x-dead, present: true }}] }}, route: {{ cluster: dead }} }}
          - {{ match: {{ path: /corridor.test.Echo/Unary }}, route: {{ cluster: grpc }} }}
clusters:
  - {{ name: grpc, protocol: h2c, endpoints: [{{ address: "{live}" }}] }}
  - {{ name: dead, protocol: h2c, endpoints: [{{ address: "{dead}" }}] }}
"#,
        live = server.addr()
    );
    let proxy = Corridor::start(&config).await;
    let mut client = grpc::connect(proxy.addr).await.unwrap();
    let ok = client
        .unary(EchoMsg {
            text: "hi".into(),
            seq: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.text, "hi from grpc");

    let (_tx, rx) = tokio::sync::mpsc::channel::<EchoMsg>(1);
    let stream = futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    });
    let status = client.bidi(stream).await.expect_err("no route for Bidi");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("no route"), "{status:?}");
    assert_eq!(
        status.metadata().get("x-corridor-error").unwrap(),
        "no_route"
    );

    let mut req = tonic::Request::new(EchoMsg {
        text: "x".into(),
        seq: 2,
    });
    req.metadata_mut().insert("x-dead", "1".parse().unwrap());
    let status = client.unary(req).await.expect_err("dead cluster");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("could not connect to cluster `dead`"),
        "{status:?}"
    );
}
