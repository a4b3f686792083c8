//! Self-tests of the upstream's normal behaviours, driven by the real clients (no proxy):
//! echo, SSE timing and framing, pattern bytes, sink, status, flaky, slow, the request
//! log, and TLS with ALPN.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};

use super::*;
use crate::client::{self, BodyReader, Client};
use crate::pki::TestPki;
use crate::testutil::{client, header, within};

const H1: Version = Version::HTTP_11;
const H2: Version = Version::HTTP_2;

/// Every protocol/client pairing a plaintext upstream supports.
fn plaintext_cases() -> [(UpstreamProtocol, Version); 4] {
    [
        (UpstreamProtocol::Http1, H1),
        (UpstreamProtocol::H2c, H2),
        (UpstreamProtocol::Auto, H1),
        (UpstreamProtocol::Auto, H2),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_streams_chunks_back_and_reports_request_facts() -> anyhow::Result<()> {
    within(async {
        for (protocol, version) in plaintext_cases() {
            let case = format!("{protocol:?}/{version:?}");
            let up = Upstream::start(UpstreamOptions::new("echo-up", protocol)).await;
            let c = client(&up, version).await?;
            let (tx, body) = client::channel();
            let req = Request::post("/echo?x=1")
                .header("x-test", "a")
                .header("x-multi", "1")
                .header("x-multi", "2")
                .header("other", "not echoed")
                .body(body)?;
            let resp = c.send(req).await?;
            assert_eq!(resp.status(), StatusCode::OK, "{case}");
            let h = resp.headers();
            assert_eq!(header(h, "x-upstream"), "echo-up", "{case}");
            let proto = if version == H2 { "HTTP/2" } else { "HTTP/1.1" };
            assert_eq!(header(h, "x-upstream-protocol"), proto, "{case}");
            assert_eq!(header(h, "x-echo-path"), "/echo?x=1", "{case}");
            assert_eq!(header(h, "x-echo-host"), up.addr().to_string(), "{case}");
            assert_eq!(header(h, "x-echo-method"), "POST", "{case}");
            assert_eq!(header(h, "x-echo-x-test"), "a", "{case}");
            let multi: Vec<_> = h.get_all("x-echo-x-multi").iter().collect();
            assert_eq!(multi, ["1", "2"], "{case}");
            assert!(h.get("x-echo-other").is_none(), "{case}");
            // Lock-step: each chunk must come back before the next is sent (no buffering).
            let mut r = BodyReader::new(resp.into_body());
            for chunk in ["hello", "streaming", "world"] {
                tx.send(chunk).await?;
                let got = r.next_data().await?.expect("echoed chunk");
                assert_eq!(got, chunk.as_bytes(), "{case}");
            }
            tx.finish();
            assert_eq!(
                r.next_data().await?,
                None,
                "{case}: echo ends with the request"
            );
            assert_eq!(up.bytes_received(), 19, "{case}");
            assert_eq!(up.bytes_sent(), 19, "{case}");
        }
        Ok(())
    })
    .await
}

/// Checks SSE events arrive one by one with the server's spacing (generous tolerance, but
/// batched events, which arrive microseconds apart, always fail).
async fn check_sse_spacing(version: Version) -> anyhow::Result<()> {
    let n = 6u64;
    let interval = Duration::from_millis(150);
    let up = Upstream::auto("sse-up").await;
    let c = client(&up, version).await?;
    let resp = c.get(&format!("/sse?n={n}&interval_ms=150")).await?;
    let headers_at = Instant::now();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(resp.headers(), "content-type"), "text/event-stream");
    assert!(resp.headers().get("content-length").is_none());
    let mut r = BodyReader::new(resp.into_body());
    let mut frames = Vec::new();
    while let Some(frame) = r.next_timed().await? {
        frames.push(frame);
    }
    // One event per frame: each was flushed on its own.
    assert_eq!(frames.len() as u64, n, "{version:?}: frames {frames:?}");
    for (i, (_, data)) in frames.iter().enumerate() {
        assert_eq!(
            &data[..],
            &sse_event(i as u64)[..],
            "{version:?}: event {i}"
        );
    }
    let first = frames[0].0.duration_since(headers_at);
    assert!(
        first < interval,
        "{version:?}: first event after {first:?}, not immediate"
    );
    let times: Vec<Instant> = frames.iter().map(|f| f.0).collect();
    let gaps = client::gaps(&times);
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            *gap >= interval * 2 / 5,
            "{version:?}: gap {i} is {gap:?}, events were batched (all gaps {gaps:?})"
        );
    }
    let span = times[times.len() - 1] - times[0];
    let expected = interval * (n as u32 - 1);
    assert!(
        span >= expected * 4 / 5 && span <= expected * 3,
        "{version:?}: {n} events spanned {span:?}, expected about {expected:?} (gaps {gaps:?})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_are_spaced_and_flushed_individually_h1() -> anyhow::Result<()> {
    within(check_sse_spacing(H1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_are_spaced_and_flushed_individually_h2() -> anyhow::Result<()> {
    within(check_sse_spacing(H2)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_zero_interval_and_content_length() -> anyhow::Result<()> {
    within(async {
        assert_eq!(SSE_EVENT_LEN, 32);
        assert_eq!(
            &sse_event(42)[..],
            b"data: {\"i\":000042,\"t\":\"token\"}\n\n"
        );
        let up = Upstream::auto("sse-cl").await;
        for version in [H1, H2] {
            let c = client(&up, version).await?;
            let resp = c.get("/sse?n=50&content_length=1").await?;
            assert_eq!(
                header(resp.headers(), "content-length"),
                "1600",
                "{version:?}"
            );
            assert!(resp.headers().get("transfer-encoding").is_none());
            let events = client::read_sse(resp.into_body()).await?;
            assert_eq!(events.len(), 50, "{version:?}");
            for (i, ev) in events.iter().enumerate() {
                assert_eq!(&ev.data[..], &sse_event(i as u64)[..], "{version:?}");
            }
            // Without content_length=1: HTTP/1.1 falls back to chunked.
            let resp = c.get("/sse?n=3").await?;
            if version == H1 {
                assert_eq!(header(resp.headers(), "transfer-encoding"), "chunked");
            }
            assert_eq!(client::read_sse(resp.into_body()).await?.len(), 3);
        }
        assert!(up.cancellations().is_empty(), "{:?}", up.cancellations());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_streams_the_pattern_and_counts_what_it_sent() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("bytes-up").await;
        let mut expected_sent = 0;
        for version in [H1, H2] {
            let c = client(&up, version).await?;
            for (size, chunk, cl) in [
                (1_000_003u64, 65536u64, false),
                (5000, 1000, true),
                (0, 7, true),
            ] {
                let resp = c
                    .get(&format!(
                        "/bytes?size={size}&chunk={chunk}&content_length={}",
                        u8::from(cl)
                    ))
                    .await?;
                assert_eq!(resp.status(), StatusCode::OK);
                let h = resp.headers();
                if cl {
                    assert_eq!(header(h, "content-length"), size.to_string(), "{version:?}");
                } else if version == H1 {
                    assert_eq!(header(h, "transfer-encoding"), "chunked");
                }
                let mut r = BodyReader::new(resp.into_body());
                let mut offset = 0u64;
                while let Some(data) = r.next_data().await? {
                    assert!(
                        check_pattern(offset, &data),
                        "{version:?}: bad bytes at {offset}"
                    );
                    offset += data.len() as u64;
                }
                assert_eq!(offset, size, "{version:?} size={size} chunk={chunk}");
                expected_sent += size;
                assert_eq!(up.bytes_sent(), expected_sent, "{version:?}");
            }
        }
        let resp = client(&up, H1).await?.get("/bytes?size=10&chunk=0").await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        client::read_all(resp.into_body()).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_counts_streamed_uploads() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("sink-up").await;
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let mut total = 0;
        for version in [H1, H2] {
            let c = client(&up, version).await?;
            for body in [
                client::repeat(chunk.clone(), 48),
                client::repeat_chunked(chunk.clone(), 16),
            ] {
                let resp = c.post("/sink", body).await?;
                assert_eq!(resp.status(), StatusCode::OK);
                let json: serde_json::Value =
                    serde_json::from_slice(&client::read_all(resp.into_body()).await?)?;
                let n = json["bytes"].as_u64().expect("bytes field");
                assert!(n == 48 << 20 || n == 16 << 20, "{version:?}: {json}");
                total += n;
            }
            let resp = c.post("/sink", client::empty()).await?;
            assert_eq!(
                client::read_all(resp.into_body()).await?,
                &b"{\"bytes\":0}"[..]
            );
        }
        assert_eq!(up.bytes_received(), total);
        assert_eq!(total, 2 * (64 << 20));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_slow_flaky_and_not_found() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("misc-up").await;
        for version in [H1, H2] {
            let c = client(&up, version).await?;
            let body_of = |resp: http::Response<hyper::body::Incoming>| async move {
                let status = resp.status().as_u16();
                let body = client::read_all(resp.into_body()).await?;
                anyhow::Ok((status, String::from_utf8(body.to_vec())?))
            };
            let (s, b) = body_of(c.get("/status/418").await?).await?;
            assert_eq!(
                (s, b.as_str()),
                (418, r#"{"status":418,"upstream":"misc-up"}"#)
            );
            let resp = c.get("/status/503").await?;
            assert_eq!(header(resp.headers(), "x-upstream"), "misc-up");
            assert_eq!(body_of(resp).await?.0, 503);
            assert_eq!(
                body_of(c.get("/status/204").await?).await?,
                (204, String::new())
            );
            assert_eq!(body_of(c.get("/status/99").await?).await?.0, 400);
            assert_eq!(
                body_of(c.get("/nope").await?).await?,
                (404, "not found".into())
            );

            let t0 = Instant::now();
            assert_eq!(
                body_of(c.get("/slow?ms=200").await?).await?,
                (200, "ok".into())
            );
            assert!(t0.elapsed() >= Duration::from_millis(200));

            let key = format!("k{version:?}");
            let path = format!("/flaky?key={key}&fail=2&status=502");
            assert_eq!(body_of(c.get(&path).await?).await?.0, 502);
            assert_eq!(body_of(c.get(&path).await?).await?.0, 502);
            assert_eq!(body_of(c.get(&path).await?).await?, (200, "ok".into()));
            assert_eq!(body_of(c.get(&path).await?).await?.0, 200);
            let other = format!("/flaky?key=other{version:?}");
            assert_eq!(
                body_of(c.get(&other).await?).await?.0,
                503,
                "default fail=1 status=503"
            );
            assert_eq!(body_of(c.get(&other).await?).await?.0, 200);
        }
        for version in [H1, H2] {
            let c = client(&up, version).await?;
            let req = Request::head("/bytes?size=100").body(client::empty())?;
            let resp = c.send(req).await?;
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(client::read_all(resp.into_body()).await?.len(), 0);
        }
        assert!(up.cancellations().is_empty(), "{:?}", up.cancellations());
        assert_eq!(up.in_flight(), 0);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_counts_and_connection_ids() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("log-up").await;
        let t0 = Instant::now();
        let a = Client::h1(up.addr()).await?;
        for _ in 0..2 {
            let req = Request::get("/status/200?q=1")
                .header("x-tag", "one")
                .body(client::empty())?;
            client::read_all(a.send(req).await?.into_body()).await?;
        }
        let b = Client::h2c(up.addr()).await?;
        let req = Request::delete("/nope")
            .header("x-tag", "two")
            .body(client::empty())?;
        client::read_all(b.send(req).await?.into_body()).await?;
        assert_eq!(up.requests(), 3);
        assert_eq!(up.connections_accepted(), 2);
        assert_eq!(up.open_connections(), 2);
        let log = up.request_log();
        assert_eq!(log.len(), 3);
        assert_eq!(log[0].path_and_query, "/status/200?q=1");
        assert_eq!(log[0].path(), "/status/200");
        assert_eq!(log[0].version, H1);
        assert_eq!(header(&log[0].headers, "x-tag"), "one");
        assert_eq!(header(&log[0].headers, "host"), up.addr().to_string());
        assert_eq!(
            log[0].connection, log[1].connection,
            "h1 keep-alive reuses the connection"
        );
        assert_eq!(log[2].method, http::Method::DELETE);
        assert_eq!(log[2].version, H2);
        assert_eq!(
            log[2].authority.as_deref(),
            Some(up.addr().to_string().as_str())
        );
        assert_ne!(log[2].connection, log[0].connection);
        assert!(log.iter().all(|r| r.at >= t0));
        let found = up
            .wait_request("/nope", t0, Duration::from_millis(10))
            .await;
        assert_eq!(found.map(|r| r.version), Some(H2));
        drop((a, b));
        let deadline = Instant::now() + Duration::from_secs(2);
        while up.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(up.open_connections(), 0, "closed clients are noticed");
        // The log is bounded.
        let c = Client::h2c(up.addr()).await?;
        let many: Vec<_> = (0..1100)
            .map(|i| c.get(if i % 2 == 0 { "/a" } else { "/b" }))
            .collect();
        for resp in futures::future::join_all(many).await {
            client::read_all(resp?.into_body()).await?;
        }
        assert_eq!(up.requests(), 1103);
        assert_eq!(up.request_log().len(), 1000);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_selects_h2_or_http1() -> anyhow::Result<()> {
    within(async {
        let pki = TestPki::new("upstream-tls");
        let leaf = pki.leaf(&["localhost", "127.0.0.1"]);
        let h2_h1: &[&[u8]] = &[b"h2", b"http/1.1"];
        let cases: [(UpstreamProtocol, &[&[u8]], Version); 5] = [
            (UpstreamProtocol::Tls, h2_h1, H2),
            (UpstreamProtocol::Tls, &[b"http/1.1"], H1),
            (UpstreamProtocol::Tls, &[], H1),
            (UpstreamProtocol::TlsHttp1, h2_h1, H1),
            (UpstreamProtocol::TlsH2, h2_h1, H2),
        ];
        for (protocol, alpn, want) in cases {
            let case = format!("{protocol:?} offering {alpn:?}");
            let mut opts = UpstreamOptions::new("tls-up", protocol);
            opts.tls = Some(leaf.clone());
            let up = Upstream::start(opts).await;
            assert!(up.url("/x").starts_with("https://127.0.0.1:"));
            for name in ["localhost", "127.0.0.1"] {
                let c = Client::tls(up.addr(), name, pki.client_config(alpn)).await?;
                assert_eq!(c.version(), want, "{case}");
                let resp = c.get("/echo").await?;
                let proto = if want == H2 { "HTTP/2" } else { "HTTP/1.1" };
                assert_eq!(
                    header(resp.headers(), "x-upstream-protocol"),
                    proto,
                    "{case}"
                );
                assert_eq!(
                    header(resp.headers(), "x-echo-host"),
                    format!("{name}:{}", up.addr().port())
                );
                client::read_all(resp.into_body()).await?;
            }
            let err = Client::tls(up.addr(), "example.com", pki.client_config(alpn)).await;
            assert!(
                err.is_err(),
                "{case}: a name outside the SANs must fail verification"
            );
            let stranger = TestPki::new("stranger");
            let err = Client::tls(up.addr(), "localhost", stranger.client_config(alpn)).await;
            assert!(
                err.is_err(),
                "{case}: an untrusted CA must fail verification"
            );
        }
        // A custom config: mutual TLS.
        let mut opts = UpstreamOptions::new("mtls-up", UpstreamProtocol::Tls);
        opts.tls_config = Some(pki.server_config_mtls(&leaf, h2_h1));
        let up = Upstream::start(opts).await;
        let client_leaf = pki.leaf(&["client.test"]);
        let c = Client::tls(
            up.addr(),
            "localhost",
            pki.client_config_with_cert(h2_h1, &client_leaf),
        )
        .await?;
        assert_eq!(c.version(), H2);
        let resp = c.get("/status/200").await?;
        assert_eq!(resp.status(), StatusCode::OK);
        // TLS 1.3: the server rejects a missing client cert after the client's handshake
        // completes, so the failure may surface on the first request instead.
        let anonymous = async {
            let c = Client::tls(up.addr(), "localhost", pki.client_config(h2_h1)).await?;
            c.get("/status/200").await
        };
        assert!(
            anonymous.await.is_err(),
            "mTLS upstream must reject clients without a cert"
        );
        let missing =
            Upstream::try_start(UpstreamOptions::new("no-cert", UpstreamProtocol::Tls)).await;
        assert!(
            missing.is_err(),
            "TLS without a certificate is a setup error"
        );
        Ok(())
    })
    .await
}

/// Sends `parts` on one fresh TCP connection (pausing between them so they arrive as
/// separate reads), then reads until the server closes; returns the response.
async fn raw_exchange(up: &Upstream, parts: &[&[u8]]) -> anyhow::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(up.addr()).await?;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tcp.write_all(part).await?;
    }
    let mut resp = Vec::new();
    tcp.read_to_end(&mut resp).await?;
    Ok(resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_records_exactly_the_bytes_received_per_connection() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::http1("wire-up").await;
        assert!(up.wire().is_empty());
        // Odd but acceptable bytes hyper would normalise away: case, spacing, obs-text.
        let first: &[u8] =
            b"GET /status/200?a=1 HTTP/1.1\r\nHost: wire\r\nX-Odd:  sp\xe9ced \r\nConnection: close\r\n\r\n";
        let resp = raw_exchange(&up, &[first]).await?;
        assert!(resp.starts_with(b"HTTP/1.1 200 OK\r\n"), "{resp:?}");
        // A request that arrives in three reads, body included.
        let second: [&[u8]; 3] = [
            b"POST /sink HTTP/1.1\r\nhost: wire\r\n",
            b"content-length: 5\r\nconnection: close\r\n\r\nhel",
            b"lo",
        ];
        let resp = raw_exchange(&up, &second).await?;
        assert!(resp.ends_with(br#"{"bytes":5}"#), "{resp:?}");
        let t0 = Instant::now();
        up.wait_wire_quiet(Duration::from_millis(50), Duration::from_secs(2))
            .await;
        assert!(t0.elapsed() >= Duration::from_millis(50), "quiet counts from the call");
        assert_eq!(up.wire(), vec![first.to_vec(), second.concat()]);
        let text = up.wire_text();
        let expected = format!(
            "--- connection 1 ({} bytes) ---\n\
             GET /status/200?a=1 HTTP/1.1\\r\\n\n\
             Host: wire\\r\\n\n\
             X-Odd:  sp\\xe9ced \\r\\n\n\
             Connection: close\\r\\n\n\
             \\r\\n\n\
             --- connection 2 ({} bytes) ---\n\
             POST /sink HTTP/1.1\\r\\n\n",
            first.len(),
            second.concat().len(),
        );
        assert!(text.starts_with(&expected), "{text}");
        assert!(text.ends_with("\\r\\n\nhello"), "{text}");

        // Each connection keeps at most 4 MiB (the rest is counted), and h2 and TLS are
        // recorded too (TLS after decryption).
        let big = 5usize << 20;
        let c = Client::h1(up.addr()).await?;
        let req = Request::post("/sink").body(client::full(vec![b'x'; big]))?;
        let resp = c.send(req).await?;
        assert_eq!(resp.status(), StatusCode::OK);
        client::read_all(resp.into_body()).await?;
        let wire = up.wire();
        assert_eq!(wire.len(), 3);
        assert_eq!(wire[2].len(), wire::WIRE_CAP_PER_CONNECTION);
        assert!(wire[2].starts_with(b"POST /sink HTTP/1.1\r\n"));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_records_h2c_and_decrypted_tls() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::h2c("wire-h2").await;
        let c = Client::h2c(up.addr()).await?;
        client::read_all(c.get("/status/204").await?.into_body()).await?;
        up.wait_wire_quiet(Duration::from_millis(20), Duration::from_secs(2))
            .await;
        let wire = up.wire();
        assert_eq!(wire.len(), 1);
        assert!(wire[0].starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(up
            .wire_text()
            .contains("PRI * HTTP/2.0\\r\\n\n\\r\\n\nSM\\r\\n\n"));

        let pki = TestPki::new("wire");
        let leaf = pki.leaf(&["localhost"]);
        let up = Upstream::tls("wire-tls", &leaf).await;
        let c = Client::tls(up.addr(), "localhost", pki.client_config(&[b"http/1.1"])).await?;
        let req = Request::get("/status/200")
            .header("x-secret", "in the clear here")
            .body(client::empty())?;
        client::read_all(c.send(req).await?.into_body()).await?;
        up.wait_wire_quiet(Duration::from_millis(20), Duration::from_secs(2))
            .await;
        let wire = up.wire();
        assert_eq!(wire.len(), 1);
        assert!(
            wire[0].starts_with(b"GET /status/200 HTTP/1.1\r\n"),
            "{}",
            up.wire_text()
        );
        assert!(up
            .wire_text()
            .contains("x-secret: in the clear here\\r\\n\n"));
        Ok(())
    })
    .await
}
