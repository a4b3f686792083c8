use super::*;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A response body of fixed frames (data, then maybe trailers).
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A response with `status`, `headers` and body `frames`.
fn reply(
    status: u16,
    headers: &[(&'static str, &str)],
    frames: Vec<Frame<Bytes>>,
) -> Response<Frames> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response
        .body(Frames(frames.into()))
        .expect("valid test response")
}

/// The header `name` of `request` as text.
fn header<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The test upstream: `/h1` and `/h2` answer 200 only to a well-formed probe over that
/// HTTP version (400 otherwise), `/status/N` answers N, the gRPC health path is a health
/// service where "" and "up" are SERVING, "down" NOT_SERVING, anything else NOT_FOUND.
async fn app(request: Request<Incoming>) -> Response<Frames> {
    let path = request.uri().path().to_owned();
    if path == GRPC_HEALTH_PATH {
        return grpc_health(request).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return reply(code.parse().unwrap_or(400), &[], vec![]);
    }
    let from_probe = request.method() == Method::GET
        && header(&request, "user-agent") == Some("corridor-health-check");
    let well_formed = match path.as_str() {
        "/h1" => {
            request.version() == Version::HTTP_11
                && header(&request, "host") == Some("svc.test")
                && header(&request, "connection") == Some("close")
        }
        "/h2" => {
            request.version() == Version::HTTP_2
                && request.uri().authority().map(Authority::as_str) == Some("svc.test")
                && request.uri().scheme_str() == Some("http")
        }
        "/h2s" => {
            request.version() == Version::HTTP_2
                && request.uri().authority().map(Authority::as_str) == Some("svc.test")
                && request.uri().scheme_str() == Some("https")
        }
        _ => false,
    };
    reply(
        if from_probe && well_formed { 200 } else { 400 },
        &[],
        vec![],
    )
}

/// The health method, framed and decoded by hand here (not with the module's helpers).
async fn grpc_health(request: Request<Incoming>) -> Response<Frames> {
    let well_formed = request.method() == Method::POST
        && request.version() == Version::HTTP_2
        && header(&request, "content-type") == Some("application/grpc")
        && header(&request, "te") == Some("trailers")
        && header(&request, "user-agent") == Some("corridor-health-check");
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let service = match body.split_first_chunk::<5>() {
        Some((&[0, a, b, c, d], rest))
            if u32::from_be_bytes([a, b, c, d]) as usize == rest.len() =>
        {
            HealthCheckRequest::decode(rest).ok().map(|r| r.service)
        }
        _ => None,
    };
    let status = match service.as_deref() {
        Some("" | "up") if well_formed => ServingStatus::Serving,
        Some("down") if well_formed => ServingStatus::NotServing,
        Some(_) if well_formed => {
            let headers = [
                ("content-type", "application/grpc"),
                ("grpc-status", "5"),
                ("grpc-message", "unknown service"),
            ];
            return reply(200, &headers, vec![]);
        }
        _ => {
            let headers = [("content-type", "application/grpc"), ("grpc-status", "3")];
            return reply(200, &headers, vec![]);
        }
    };
    let message = HealthCheckResponse {
        status: status as i32,
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    reply(
        200,
        &[("content-type", "application/grpc")],
        vec![Frame::data(Bytes::from(framed)), Frame::trailers(trailers)],
    )
}

/// Serves [`app`] on one connection, over HTTP/2 when `h2`.
async fn serve_connection<IO>(io: IO, h2: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|request| async move { Ok::<_, Infallible>(app(request).await) });
    let io = TokioIo::new(io);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }
}

/// Starts [`app`] on 127.0.0.1: HTTP/1.1 or h2c by `h2`, or TLS choosing by ALPN.
async fn serve(h2: bool, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_connection(tcp, h2).await,
                    Some(config) => {
                        if let Ok(stream) = TlsAcceptor::from(config).accept(tcp).await {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_connection(stream, h2).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// An address nothing listens on.
async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

/// A plaintext target.
fn plain(addr: SocketAddr, h2: bool) -> ProbeTarget {
    ProbeTarget {
        addr,
        h2,
        tls: None,
        expected_identities: Arc::from([]),
    }
}

/// An HTTP check of `path` with Host `svc.test`.
fn http(path: &str, expected: Vec<(u16, u16)>) -> ProbeKind {
    ProbeKind::Http {
        path: path.to_owned(),
        host: "svc.test".to_owned(),
        expected,
    }
}

/// A gRPC check of `service`.
fn grpc(service: &str) -> ProbeKind {
    ProbeKind::Grpc {
        service: service.to_owned(),
        authority: "svc.test".to_owned(),
    }
}

/// Generous deadline for probes expected to finish on their own.
const SECOND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn http1_ok() {
    let addr = serve(false, None).await;
    assert_eq!(
        probe(&http("/h1", vec![]), &plain(addr, false), SECOND).await,
        Ok(())
    );
}

#[tokio::test]
async fn http1_unexpected_status_fails() {
    let addr = serve(false, None).await;
    let verdict = probe(&http("/status/503", vec![]), &plain(addr, false), SECOND).await;
    assert_eq!(verdict, Err("status 503".to_owned()));
    // The /h1 check sends what the server wants; /h2 over HTTP/1.1 does not.
    let verdict = probe(&http("/h2", vec![]), &plain(addr, false), SECOND).await;
    assert_eq!(verdict, Err("status 400".to_owned()));
}

#[tokio::test]
async fn http_expected_ranges() {
    let addr = serve(false, None).await;
    let target = plain(addr, false);
    let redirect = |expected| http("/status/302", expected);
    assert_eq!(
        probe(&redirect(vec![(200, 400)]), &target, SECOND).await,
        Ok(())
    );
    assert_eq!(
        probe(&redirect(vec![(200, 300)]), &target, SECOND).await,
        Err("status 302".to_owned())
    );
    assert_eq!(
        probe(&redirect(vec![(200, 201), (302, 303)]), &target, SECOND).await,
        Ok(())
    );
    assert_eq!(
        probe(&http("/status/204", vec![]), &target, SECOND).await,
        Err("status 204".to_owned()),
        "no ranges means 200 only"
    );
}

#[tokio::test]
async fn refused() {
    let addr = refused_addr().await;
    for (kind, h2) in [
        (http("/h1", vec![]), false),
        (http("/h2", vec![]), true),
        (grpc(""), true),
        (ProbeKind::Tcp, false),
    ] {
        let verdict = probe(&kind, &plain(addr, h2), SECOND).await;
        assert_eq!(
            verdict,
            Err("connect: connection refused".to_owned()),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn silent_server_times_out_without_leaking_tasks() {
    // Connections complete in the kernel's backlog; nothing ever reads or answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (_, client_config) = tls_configs();
    let timeout = Duration::from_millis(300);
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = ProbeTarget {
        addr,
        h2: false,
        tls: Some((client_config, name)),
        expected_identities: Arc::from([]),
    };
    let cases = [
        (http("/h1", vec![]), plain(addr, false)),
        (http("/h2", vec![]), plain(addr, true)),
        (grpc(""), plain(addr, true)),
        (ProbeKind::Tcp, tls),
    ];
    let metrics = tokio::runtime::Handle::current().metrics();
    assert_eq!(metrics.num_alive_tasks(), 0);
    for (kind, target) in cases {
        let start = Instant::now();
        let verdict = probe(&kind, &target, timeout).await;
        let elapsed = start.elapsed();
        assert_eq!(verdict, Err("timed out after 300ms".to_owned()), "{kind:?}");
        assert!(elapsed >= timeout, "{kind:?} returned early: {elapsed:?}");
        assert!(
            elapsed < timeout + Duration::from_millis(500),
            "{kind:?} took {elapsed:?}"
        );
        assert_eq!(metrics.num_alive_tasks(), 0, "{kind:?} left a task behind");
    }
}

#[tokio::test]
async fn server_closing_without_answer_fails_fast() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    for (kind, h2) in [
        (http("/h1", vec![]), false),
        (http("/h2", vec![]), true),
        (grpc(""), true),
    ] {
        let start = Instant::now();
        let verdict = probe(&kind, &plain(addr, h2), SECOND).await;
        let reason = verdict.expect_err("no answer is unhealthy");
        assert!(!reason.starts_with("timed out"), "{kind:?}: {reason}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{kind:?}: {reason}"
        );
    }
}

#[tokio::test]
async fn tcp_ok() {
    let addr = serve(false, None).await;
    assert_eq!(
        probe(&ProbeKind::Tcp, &plain(addr, false), SECOND).await,
        Ok(())
    );
}

#[tokio::test]
async fn grpc_serving_and_not() {
    let addr = serve(true, None).await;
    let target = plain(addr, false); // gRPC is HTTP/2 whatever `h2` says
    assert_eq!(probe(&grpc(""), &target, SECOND).await, Ok(()));
    assert_eq!(probe(&grpc("up"), &target, SECOND).await, Ok(()));
    assert_eq!(
        probe(&grpc("down"), &target, SECOND).await,
        Err("grpc: NOT_SERVING".to_owned())
    );
    assert_eq!(
        probe(&grpc("nope"), &target, SECOND).await,
        Err("grpc-status 5: unknown service".to_owned())
    );
}

#[tokio::test]
async fn grpc_edge_cases() {
    // An empty authority falls back to the endpoint's address.
    let addr = serve(true, None).await;
    let kind = ProbeKind::Grpc {
        service: String::new(),
        authority: String::new(),
    };
    assert_eq!(probe(&kind, &plain(addr, false), SECOND).await, Ok(()));
    // An HTTP/1.1-only server cannot answer an HTTP/2 probe.
    let http1 = serve(false, None).await;
    let reason = probe(&kind, &plain(http1, true), SECOND)
        .await
        .expect_err("h1 server");
    assert!(reason.starts_with("h2: "), "{reason}");
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let addr = serve(true, None).await;
    assert_eq!(
        probe(&http("/h2", vec![]), &plain(addr, true), SECOND).await,
        Ok(())
    );
    assert_eq!(
        probe(&http("/status/503", vec![]), &plain(addr, true), SECOND).await,
        Err("status 503".to_owned())
    );
}

/// A self-signed `localhost` server config offering h2 and http/1.1, and a client
/// config trusting it (no ALPN: the probe sets that).
fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("cert and key");
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[tokio::test]
async fn tls_probes() {
    let (server, client) = tls_configs();
    let addr = serve(false, Some(server)).await;
    let target = |h2: bool, name: &str| ProbeTarget {
        addr,
        h2,
        tls: Some((
            Arc::clone(&client),
            ServerName::try_from(name.to_owned()).expect("server name"),
        )),
        expected_identities: Arc::from([]),
    };
    // ALPN picks the server's protocol; /h1 and /h2s check the version and scheme.
    assert_eq!(
        probe(&http("/h1", vec![]), &target(false, "localhost"), SECOND).await,
        Ok(())
    );
    assert_eq!(
        probe(&http("/h2s", vec![]), &target(true, "localhost"), SECOND).await,
        Ok(())
    );
    assert_eq!(
        probe(&grpc("up"), &target(false, "localhost"), SECOND).await,
        Ok(())
    );
    assert_eq!(
        probe(&grpc("down"), &target(false, "localhost"), SECOND).await,
        Err("grpc: NOT_SERVING".to_owned())
    );
    assert_eq!(
        probe(&ProbeKind::Tcp, &target(false, "localhost"), SECOND).await,
        Ok(())
    );
    for kind in [http("/h1", vec![]), ProbeKind::Tcp] {
        let reason = probe(&kind, &target(false, "other.test"), SECOND)
            .await
            .expect_err("name mismatch");
        assert!(
            reason.starts_with("tls: ") && reason.contains("certificate"),
            "{reason}"
        );
    }
    // Expected identities are checked as for requests.
    let pinned = |id: &str| ProbeTarget {
        expected_identities: Arc::from([Arc::from(id)]),
        ..target(false, "localhost")
    };
    assert_eq!(
        probe(&ProbeKind::Tcp, &pinned("localhost"), SECOND).await,
        Ok(())
    );
    let reason = probe(&http("/h1", vec![]), &pinned("model.test"), SECOND)
        .await
        .expect_err("identity mismatch");
    assert!(
        reason.starts_with("identity: the upstream presented") && reason.contains("model.test"),
        "{reason}"
    );
}

#[test]
fn probe_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let kind = ProbeKind::Tcp;
    let target = plain(SocketAddr::from(([127, 0, 0, 1], 1)), false);
    let future = probe(&kind, &target, SECOND);
    assert_send(&future);
}

#[tokio::test]
async fn bad_inputs_are_reasons_not_panics() {
    // Requests are built before connecting, so the reason is the input, not the socket.
    let addr = refused_addr().await;
    let bad_host = ProbeKind::Http {
        path: "/h1".to_owned(),
        host: "bad\nhost".to_owned(),
        expected: vec![],
    };
    let bad_authority = ProbeKind::Grpc {
        service: String::new(),
        authority: "bad authority".to_owned(),
    };
    for kind in [
        http("no-slash", vec![]),
        http("/with space", vec![]),
        bad_host,
        bad_authority,
    ] {
        for h2 in [false, true] {
            let reason = probe(&kind, &plain(addr, h2), SECOND)
                .await
                .expect_err("bad input");
            assert!(reason.starts_with("invalid "), "{kind:?} h2={h2}: {reason}");
        }
    }
    // An empty range passes nothing.
    let addr = serve(false, None).await;
    let empty_range = http("/status/200", vec![(300, 200)]);
    let verdict = probe(&empty_range, &plain(addr, false), SECOND).await;
    assert_eq!(verdict, Err("status 200".to_owned()));
}

#[test]
fn grpc_message_framing() {
    assert_eq!(
        grpc_message(&[]),
        Err("grpc: no response message".to_owned())
    );
    assert_eq!(
        grpc_message(&[0, 0, 0]),
        Err("grpc: truncated response message".to_owned())
    );
    assert_eq!(
        grpc_message(&[0, 0, 0, 0, 2, 8]),
        Err("grpc: truncated response message".to_owned())
    );
    assert_eq!(
        grpc_message(&[0, 255, 255, 255, 255]),
        Err("grpc: truncated response message".to_owned())
    );
    assert_eq!(
        grpc_message(&[1, 0, 0, 0, 0]),
        Err("grpc: compressed response message".to_owned())
    );
    assert_eq!(grpc_message(&[0, 0, 0, 0, 2, 8, 1, 99]), Ok(&[8, 1][..]));
    let framed = grpc_frame(&HealthCheckRequest {
        service: "abc".to_owned(),
    })
    .expect("frame");
    assert_eq!(&framed[..], &[0, 0, 0, 0, 5, 10, 3, b'a', b'b', b'c'][..]);
}

#[test]
fn grpc_status_reasons() {
    let map = |pairs: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    };
    assert_eq!(grpc_status(&map(&[("grpc-status", "0")])), Ok(()));
    assert_eq!(
        grpc_status(&map(&[("grpc-status", "12")])),
        Err("grpc-status 12".to_owned())
    );
    assert_eq!(
        grpc_status(&map(&[])),
        Err("grpc: response without grpc-status".to_owned())
    );
    assert_eq!(
        grpc_status(&map(&[("grpc-status", "x")])),
        Err("grpc: invalid grpc-status \"x\"".to_owned())
    );
}

#[test]
fn alpn_is_set_without_touching_the_callers_config() {
    let (_, client) = tls_configs();
    let h2 = with_alpn(&client, &[b"h2"]);
    assert_eq!(h2.alpn_protocols, vec![b"h2".to_vec()]);
    assert!(client.alpn_protocols.is_empty());
    assert!(
        Arc::ptr_eq(&with_alpn(&h2, &[b"h2"]), &h2),
        "no clone when already right"
    );
}
