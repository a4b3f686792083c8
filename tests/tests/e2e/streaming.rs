//! Streaming (D8): SSE events pass one by one without buffering (chunked and
//! Content-Length, HTTP/1.1 and HTTP/2 clients), 1 GiB each way with flat
//! memory, gRPC bidi streams with trailers, client disconnects cancel the
//! upstream, a slow reader applies backpressure, long streams outlive the
//! request deadline while silent ones hit the idle timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corridor_tests::client::{self, drain_count, BodyReader};
use corridor_tests::upstream::SSE_EVENT_LEN;
use corridor_tests::{grpc, Client, Corridor, EchoMsg, GrpcServer, UpstreamProtocol};
use http::Request;

use super::{exclusive, fetch, single_route, upstream, HEAD};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Reads an SSE stream from the proxy and checks that every event left the
/// proxy as it left the upstream, measured against the upstream's own send
/// times: no event arrives half an interval later than the quickest one did (an
/// event held back, coalesced with the next or waiting for a flush timer, is a
/// whole interval late), and the median event no more than 5 ms later (a
/// proxy that delays every event a little). Scheduling noise on a busy 2-core
/// machine delays a single event by up to 15-20 ms; it is not the proxy's.
async fn assert_sse_unbuffered(
    proxy: &Corridor,
    up: &corridor_tests::Upstream,
    c: &Client,
    tag: &str,
    cl: bool,
) {
    let n = 40;
    let path = format!(
        "/sse?n={n}&interval_ms=50&tag={tag}&content_length={}",
        u8::from(cl)
    );
    let resp = c
        .send(Request::get(path).body(client::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    if cl {
        let expected = (n * SSE_EVENT_LEN).to_string();
        assert_eq!(
            resp.headers().get("content-length").unwrap(),
            expected.as_str(),
            "{tag}"
        );
    }
    let mut reader = BodyReader::new(resp.into_body());
    let mut arrivals = Vec::new();
    while let Some(ev) = reader.next_sse().await.unwrap() {
        assert_eq!(
            ev.data.len(),
            SSE_EVENT_LEN,
            "{tag}: events arrive whole and one at a time"
        );
        arrivals.push(ev.at);
    }
    let sent = up.sse_sent_times(tag);
    assert_eq!(arrivals.len(), n, "{tag}: all events arrive");
    assert_eq!(sent.len(), n);
    let delays: Vec<Duration> = (0..n)
        .map(|i| arrivals[i].saturating_duration_since(sent[i]))
        .collect();
    let quickest = *delays.iter().min().expect("events");
    let late: Vec<Duration> = delays.iter().map(|d| *d - quickest).collect();
    let interval = Duration::from_millis(50);
    for (i, l) in late.iter().enumerate() {
        assert!(
            *l < interval / 2,
            "{tag}: event {i} arrived {l:?} later after leaving the upstream than the quickest event did\n{}",
            proxy.logs()
        );
    }
    let mut sorted = late.clone();
    sorted.sort();
    let median = sorted[n / 2];
    assert!(
        median <= Duration::from_millis(5),
        "{tag}: the median event arrived {median:?} later than the quickest (all: {late:?})"
    );
    eprintln!(
        "{tag}: latest event {:?}, median {median:?} after the quickest",
        sorted[n - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_are_not_buffered_chunked_or_content_length() {
    let _serial = exclusive().await;
    let up = upstream("sse", UpstreamProtocol::Auto).await;
    let h2up = upstream("sse-h2", UpstreamProtocol::H2c).await;
    let config = format!(
        r#"
{HEAD}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ prefix: /, headers: [{{ name: x-up, exact: h2 }}] }}, route: {{ cluster: h2 }} }}
          - {{ route: {{ cluster: h1 }} }}
clusters:
  - {{ name: h1, endpoints: [{{ address: "{a}" }}] }}
  - {{ name: h2, protocol: h2c, endpoints: [{{ address: "{b}" }}] }}
"#,
        a = up.addr(),
        b = h2up.addr()
    );
    let proxy = Corridor::start(&config).await;
    let h1 = Client::h1(proxy.addr).await.unwrap();
    let h2 = Client::h2c(proxy.addr).await.unwrap();
    assert_sse_unbuffered(&proxy, &up, &h1, "h1-chunked", false).await;
    assert_sse_unbuffered(&proxy, &up, &h1, "h1-content-length", true).await;
    assert_sse_unbuffered(&proxy, &up, &h2, "h2-chunked", false).await;
    assert_sse_unbuffered(&proxy, &up, &h2, "h2-content-length", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_from_an_h2_upstream_is_not_buffered() {
    let _serial = exclusive().await;
    let up = upstream("sse-h2", UpstreamProtocol::H2c).await;
    let proxy = Corridor::start(&single_route(&[(up.addr(), "")], "", "    protocol: h2c")).await;
    let h1 = Client::h1(proxy.addr).await.unwrap();
    assert_sse_unbuffered(&proxy, &up, &h1, "h2up-to-h1-cl", true).await;
    let h2 = Client::h2c(proxy.addr).await.unwrap();
    assert_sse_unbuffered(&proxy, &up, &h2, "h2up-to-h2", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_with_flat_memory() {
    let _serial = exclusive().await;
    let up = upstream("bulk", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(&[(up.addr(), "")], "", "")).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    // Warm up the connection pools and allocator before the baseline.
    assert_eq!(
        fetch(
            &c,
            Request::get("/bytes?size=4194304")
                .body(client::empty())
                .unwrap()
        )
        .await
        .body
        .len(),
        4 << 20
    );
    let baseline = proxy.rss_kib();

    let start = Instant::now();
    let resp = c
        .send(
            Request::get(format!("/bytes?size={GIB}&content_length=1"))
                .body(client::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(drain_count(resp.into_body()).await.unwrap(), GIB);
    let down = start.elapsed();

    let start = Instant::now();
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let req = Request::post("/sink")
        .body(client::repeat(chunk, GIB / (64 * 1024)))
        .unwrap();
    let r = fetch(&c, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["bytes"], GIB);
    let up_time = start.elapsed();

    let peak = corridor_tests::proxy::proc_status_kib(proxy.pid(), "VmHWM:");
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!("1 GiB down in {down:?}, up in {up_time:?}; RSS {baseline} KiB -> peak {peak} KiB");
    assert!(
        growth_mib < 64,
        "RSS grew by {growth_mib} MiB (baseline {baseline} KiB, peak {peak} KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bidi_streams_and_trailers_pass_intact() {
    let server = GrpcServer::start("grpc").await;
    let config = single_route(&[(server.addr(), "")], "", "    protocol: h2c");
    let proxy = Corridor::start(&config).await;
    let mut client = grpc::connect(proxy.addr).await.unwrap();

    // Interleaved: each reply must arrive before the next message is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoMsg>(1);
    let mut replies = client
        .bidi(tokio_stream_of(rx))
        .await
        .expect("bidi call starts")
        .into_inner();
    for seq in 0..5u32 {
        tx.send(EchoMsg {
            text: format!("m{seq}"),
            seq,
        })
        .await
        .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("reply before the next message is sent")
            .unwrap()
            .expect("a reply");
        assert_eq!(reply.seq, seq);
        assert_eq!(reply.text, format!("m{seq} from grpc"));
    }
    drop(tx);
    assert!(
        replies.message().await.unwrap().is_none(),
        "stream ends with OK"
    );

    // A failing call: grpc-status and grpc-message trailers arrive unchanged.
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoMsg>(1);
    let mut req = tonic::Request::new(tokio_stream_of(rx));
    req.metadata_mut()
        .insert("x-fail-code", "5".parse().unwrap());
    let mut replies = client.bidi(req).await.unwrap().into_inner();
    tx.send(EchoMsg {
        text: "x".into(),
        seq: 1,
    })
    .await
    .unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().seq, 1);
    drop(tx);
    let status = replies.message().await.expect_err("the call fails");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), grpc::FAIL_MESSAGE);

    let unary = client
        .unary(EchoMsg {
            text: "u".into(),
            seq: 9,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((unary.seq, unary.text.as_str()), (9, "u from grpc"));
}

/// A `Stream` over an mpsc receiver (what tonic's streaming calls take).
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<EchoMsg>,
) -> impl futures::Stream<Item = EchoMsg> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `head` (listeners and admin) and routes: `/h2/...` to an h2c cluster at `h2`
/// (prefix stripped), the rest to an HTTP/1.1 cluster at `h1`.
fn h1_and_h2c_routes(head: &str, h1: SocketAddr, h2: SocketAddr) -> String {
    format!(
        r#"
{head}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ prefix: /h2/ }}, route: {{ cluster: h2, prefix_rewrite: / }} }}
          - {{ route: {{ cluster: h1 }} }}
clusters:
  - {{ name: h1, endpoints: [{{ address: "{h1}" }}] }}
  - {{ name: h2, protocol: h2c, endpoints: [{{ address: "{h2}" }}] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_upstream_within_a_second() {
    let up = upstream("up", UpstreamProtocol::Auto).await;
    let h2up = upstream("up2", UpstreamProtocol::H2c).await;
    let proxy = Corridor::start(&h1_and_h2c_routes(HEAD, up.addr(), h2up.addr())).await;
    for (client_proto, prefix, target) in [
        ("h1", "", &up),
        ("h2c", "", &up),
        ("h1", "/h2", &h2up),
        ("h2c", "/h2", &h2up),
    ] {
        for path in ["/hang", "/sse"] {
            let c = std::sync::Arc::new(if client_proto == "h1" {
                Client::h1(proxy.addr).await.unwrap()
            } else {
                Client::h2c(proxy.addr).await.unwrap()
            });
            let since = Instant::now();
            let uri = if path == "/sse" {
                format!("{prefix}/sse?n=100000&interval_ms=20")
            } else {
                format!("{prefix}/hang")
            };
            let pending = tokio::spawn({
                let c = std::sync::Arc::clone(&c);
                async move {
                    let resp = c
                        .send(Request::get(uri).body(client::empty()).unwrap())
                        .await?;
                    let mut r = BodyReader::new(resp.into_body());
                    r.next_sse().await?;
                    futures::future::pending::<()>().await;
                    anyhow::Ok(())
                }
            });
            target
                .wait_request(path, since, Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("{path} never reached the upstream"));
            if path == "/sse" {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let gone = Instant::now();
            pending.abort();
            c.close().await;
            drop(c);
            let cancelled = target
                .wait_cancelled(path, since, Duration::from_secs(1))
                .await
                .unwrap_or_else(|| panic!("{client_proto} client -> {prefix}{path}: upstream still running 1 s after the client left\n{}", proxy.logs()));
            assert!(cancelled.at.duration_since(gone) < Duration::from_secs(1));
        }
    }
}

/// A client that hangs up while its response streams is the client's doing: the
/// access log says `client_closed` (not an upstream failure), for HTTP/1.1 and
/// HTTP/2 clients, on the lean path (HTTP/1.1 cluster) and Pingora's (HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_stream_is_logged_as_client_closed() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let h2up = upstream("up2", UpstreamProtocol::H2c).await;
    let head = HEAD.replace(
        "admin: { address: \"{{ADMIN}}\" }",
        "admin: { address: \"{{ADMIN}}\", access_log: { enabled: true, format: json } }",
    );
    let proxy = Corridor::start(&h1_and_h2c_routes(&head, up.addr(), h2up.addr())).await;
    for (client_proto, prefix) in [("h1", ""), ("h2c", ""), ("h1", "/h2"), ("h2c", "/h2")] {
        let (c, protocol) = if client_proto == "h1" {
            (Client::h1(proxy.addr).await.unwrap(), "HTTP/1.1")
        } else {
            (Client::h2c(proxy.addr).await.unwrap(), "HTTP/2.0")
        };
        let c = std::sync::Arc::new(c);
        let (first, got_first) = tokio::sync::oneshot::channel();
        let pending = tokio::spawn({
            let c = std::sync::Arc::clone(&c);
            async move {
                let req = Request::get(format!("{prefix}/sse?n=100000&interval_ms=5"));
                let resp = c.send(req.body(client::empty()).unwrap()).await?;
                let mut r = BodyReader::new(resp.into_body());
                r.next_sse().await?;
                let _ = first.send(());
                futures::future::pending::<()>().await;
                anyhow::Ok(())
            }
        });
        tokio::time::timeout(Duration::from_secs(5), got_first)
            .await
            .expect("a first event in time")
            .expect("the first event");
        pending.abort();
        let _ = pending.await;
        c.close().await;
        drop(c);
        let path = format!("\"path\":\"{prefix}/sse\"");
        let proto = format!("\"protocol\":\"{protocol}\"");
        let deadline = Instant::now() + Duration::from_secs(5);
        let line = loop {
            let logs = proxy.logs();
            if let Some(l) = logs
                .lines()
                .find(|l| l.contains(&path) && l.contains(&proto))
            {
                break l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{client_proto} {prefix}: no access log line\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["status"], 200, "{line}");
        assert_eq!(
            v["error"], "client_closed",
            "{client_proto} {prefix}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_stops_the_upstream_and_memory_stays_flat() {
    let _serial = exclusive().await;
    let up = upstream("bulk", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(&[(up.addr(), "")], "", "")).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let baseline = proxy.rss_kib();
    let resp = c
        .send(
            Request::get(format!("/bytes?size={GIB}"))
                .body(client::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut reader = BodyReader::new(resp.into_body());
    reader.next_data().await.unwrap().expect("first chunk");
    // Stop reading. Buffers fill (socket buffers, the proxy's small task queue), then the
    // upstream must be stopped: its sent counter levels off far below 1 GiB.
    let mut last = up.bytes_sent();
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stable_since.elapsed() < Duration::from_millis(1500) {
        assert!(
            Instant::now() < deadline,
            "upstream never stopped: {} bytes sent",
            up.bytes_sent()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = up.bytes_sent();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    assert!(
        last < 64 * MIB,
        "upstream sent {} MiB to a client that read one chunk",
        last / MIB
    );
    let rss_paused = proxy.rss_kib();
    assert!(
        rss_paused.saturating_sub(baseline) < 64 * 1024,
        "RSS grew {} KiB while paused",
        rss_paused - baseline
    );
    // Resume: everything arrives.
    let rest = reader.drain().await.unwrap();
    assert_eq!(reader.bytes_read(), GIB, "read {rest} after resuming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_streams_outlive_the_deadline_but_silence_hits_the_idle_timeout() {
    let up = upstream("sse", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(
        &[(up.addr(), "")],
        "timeout: 1s, idle_timeout: 400ms",
        "",
    ))
    .await;
    let c = Client::h1(proxy.addr).await.unwrap();
    // 40 events over ~2 s: twice the 1 s deadline, never silent for 400 ms.
    let resp = c
        .send(
            Request::get("/sse?n=40&interval_ms=50")
                .body(client::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut r = BodyReader::new(resp.into_body());
    let mut n = 0;
    while r.next_sse().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 40, "a stream that keeps sending is never cut");

    let c = Client::h1(proxy.addr).await.unwrap();
    let since = Instant::now();
    let resp = c
        .send(Request::get("/silent?n=2").body(client::empty()).unwrap())
        .await
        .unwrap();
    let mut r = BodyReader::new(resp.into_body());
    r.next_sse().await.unwrap().expect("first event");
    r.next_sse().await.unwrap().expect("second event");
    let silent_from = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), r.next_sse())
        .await
        .expect("a silent stream is cut by the idle timeout");
    assert!(
        end.is_err() || end.as_ref().is_ok_and(|e| e.is_none()),
        "no third event: {end:?}"
    );
    let silence = silent_from.elapsed();
    assert!(
        silence >= Duration::from_millis(300) && silence < Duration::from_secs(3),
        "cut after {silence:?} of silence (idle timeout 400ms)"
    );
    assert!(up
        .wait_cancelled("/silent", since, Duration::from_secs(1))
        .await
        .is_some());
}

/// After the response headers only the idle timeout applies: a model that thinks longer
/// than the whole-request deadline between two events keeps its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_gap_longer_than_the_deadline_survives_after_headers() {
    let up = upstream("sse", UpstreamProtocol::Http1).await;
    let proxy = Corridor::start(&single_route(
        &[(up.addr(), "")],
        "timeout: 300ms, idle_timeout: 10s",
        "",
    ))
    .await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let resp = c
        .send(
            Request::get("/sse?n=3&interval_ms=900&tag=gaps")
                .body(client::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut r = BodyReader::new(resp.into_body());
    let mut n = 0;
    while let Some(_event) = r.next_sse().await.unwrap() {
        n += 1;
    }
    assert_eq!(n, 3, "every event arrives");
    // The upstream really was silent for longer than the deadline between events.
    let sent = up.sse_sent_times("gaps");
    let gaps = corridor_tests::client::gaps(&sent);
    assert!(
        gaps.iter().any(|g| *g >= Duration::from_millis(600)),
        "upstream gaps {gaps:?}"
    );
}
