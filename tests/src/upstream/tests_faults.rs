//! Self-tests of the upstream's failure behaviours and of what it notices: resets and
//! refusals, cancellation of hanging requests and of streams when the client leaves,
//! silent streams, deliberate mid-stream aborts, backpressure, and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};

use super::*;
use crate::client::{self, classify, BodyReader, ErrorKind};
use crate::testutil::{client, expect_cancelled, within};

const H1: Version = Version::HTTP_11;
const H2: Version = Version::HTTP_2;
/// How fast the upstream must notice a client going away.
const NOTICE: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_refuse_fail_the_exchange_the_protocol_way() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("fault-up").await;
        // HTTP/1.1: the connection is closed without any response.
        for path in ["/reset", "/refuse"] {
            let c = client(&up, H1).await?;
            let err = c.get(path).await.expect_err("no response expected");
            assert_eq!(classify(&err), ErrorKind::Closed, "h1 {path}: {err:#}");
            let t0 = Instant::now();
            while !c.is_closed() && t0.elapsed() < Duration::from_secs(2) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(c.is_closed(), "h1 {path}: connection must be closed");
        }
        // HTTP/2: only the stream is reset, with the right code; the connection lives on.
        let c = client(&up, H2).await?;
        for (path, reason) in [
            ("/reset", h2::Reason::INTERNAL_ERROR),
            ("/refuse", h2::Reason::REFUSED_STREAM),
        ] {
            let err = c.get(path).await.expect_err("no response expected");
            assert_eq!(
                classify(&err),
                ErrorKind::Reset(reason),
                "h2 {path}: {err:#}"
            );
        }
        // Many deliberate resets on one connection do not wear it out (no GOAWAY).
        let resets = (0..1100).map(|_| c.get("/refuse"));
        for r in futures::future::join_all(resets).await {
            let err = r.expect_err("refused");
            assert_eq!(classify(&err), ErrorKind::Reset(h2::Reason::REFUSED_STREAM));
        }
        let resp = c.get("/status/200").await?;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "h2 connection survives stream resets"
        );
        assert_eq!(up.connections_accepted(), 3);
        assert!(
            up.cancellations().is_empty(),
            "deliberate failures are not cancellations"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_abort_after_fails_mid_stream() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("abort-up").await;
        for version in [H1, H2] {
            let c = client(&up, version).await?;
            let resp = c.get("/sse?n=5&interval_ms=30&abort_after=2").await?;
            let mut r = BodyReader::new(resp.into_body());
            assert!(r.next_sse().await?.is_some());
            assert!(r.next_sse().await?.is_some());
            let err = r
                .next_sse()
                .await
                .expect_err("stream must fail after 2 events");
            let want = if version == H2 {
                ErrorKind::Reset(h2::Reason::INTERNAL_ERROR)
            } else {
                ErrorKind::Closed
            };
            assert_eq!(classify(&err), want, "{version:?}: {err:#}");
        }
        assert!(up.cancellations().is_empty(), "{:?}", up.cancellations());
        Ok(())
    })
    .await
}

/// Starts `/hang` on a shared client and returns once the upstream has the request.
async fn start_hang(
    up: &Upstream,
    version: Version,
) -> anyhow::Result<(
    Arc<crate::Client>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let c = Arc::new(client(up, version).await?);
    let since = Instant::now();
    let task = tokio::spawn({
        let c = c.clone();
        async move { c.get("/hang").await.map(|_| ()) }
    });
    up.wait_request("/hang", since, Duration::from_secs(3))
        .await
        .expect("upstream received /hang");
    // Give the request time to settle into "pending" (no false early detection).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let early = up.cancellations().into_iter().find(|c| c.at >= since);
    assert!(early.is_none(), "cancelled too early: {early:?}");
    Ok((c, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_cancellation_is_noticed_when_the_connection_closes() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("hang-up").await;
        for version in [H1, H2] {
            let (c, task) = start_hang(&up, version).await?;
            let t0 = Instant::now();
            c.close().await;
            let cancelled = expect_cancelled(&up, "/hang", t0, NOTICE).await?;
            assert_eq!(cancelled.version, version);
            assert!(!cancelled.headers_sent);
            let err = task.await?.expect_err("the request must fail");
            assert_eq!(classify(&err), ErrorKind::Closed, "{version:?}: {err:#}");
        }
        assert_eq!(up.in_flight(), 0);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_cancellation_is_noticed_on_h2_stream_reset() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::h2c("hang-h2").await;
        let (c, task) = start_hang(&up, H2).await?;
        // Dropping the response future makes hyper reset the stream (RST_STREAM CANCEL).
        let t0 = Instant::now();
        task.abort();
        let _ = task.await;
        let cancelled = expect_cancelled(&up, "/hang", t0, NOTICE).await?;
        assert_eq!(cancelled.version, H2);
        // Only the stream went away: the connection still works.
        let resp = c.get("/status/200").await?;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(up.connections_accepted(), 1);
        assert_eq!(up.open_connections(), 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_cancellation_is_noticed_when_a_client_drops_mid_upload() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("hang-upload").await;
        for version in [H1, H2] {
            let c = client(&up, version).await?;
            let (tx, body) = client::channel();
            let since = Instant::now();
            let pending = tokio::spawn(async move {
                let _ = c.post("/hang", body).await;
            });
            tx.send("partial upload").await?;
            up.wait_request("/hang", since, Duration::from_secs(3))
                .await
                .expect("upstream received /hang");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t0 = Instant::now();
            pending.abort(); // drops the client: the connection closes
            let cancelled = expect_cancelled(&up, "/hang", t0, NOTICE).await?;
            assert_eq!(cancelled.version, version);
            drop(tx);
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_cancellation_is_noticed() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("sse-cancel").await;
        // (version, how the client leaves): close the connection, or (h2) drop the body.
        for (version, drop_body_only) in [(H1, false), (H2, false), (H2, true)] {
            let case = format!("{version:?} drop_body_only={drop_body_only}");
            let c = client(&up, version).await?;
            let resp = c.get("/sse?n=100000&interval_ms=20").await?;
            let mut r = BodyReader::new(resp.into_body());
            for _ in 0..3 {
                r.next_sse().await?.expect("event");
            }
            let t0 = Instant::now();
            if drop_body_only {
                drop(r);
            } else {
                c.close().await;
            }
            let cancelled = expect_cancelled(&up, "/sse", t0, NOTICE).await?;
            assert!(cancelled.headers_sent, "{case}");
            assert!(cancelled.body_bytes >= 3 * SSE_EVENT_LEN as u64, "{case}");
            assert_eq!(cancelled.path_and_query, "/sse?n=100000&interval_ms=20");
            if drop_body_only {
                let resp = c.get("/status/200").await?;
                assert_eq!(resp.status(), StatusCode::OK, "{case}: connection survives");
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stream_goes_quiet_and_its_end_is_noticed() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("silent-up").await;
        for version in [H1, H2] {
            let c = client(&up, version).await?;
            let resp = c.get("/silent?n=3").await?;
            assert_eq!(resp.status(), StatusCode::OK);
            let mut r = BodyReader::new(resp.into_body());
            for i in 0..3u64 {
                let ev = r.next_sse().await?.expect("event");
                assert_eq!(&ev.data[..], &sse_event(i)[..]);
            }
            let more = tokio::time::timeout(Duration::from_millis(300), r.next_data()).await;
            assert!(
                more.is_err(),
                "{version:?}: silent stream sent more: {more:?}"
            );
            assert!(up.cancellations().iter().all(|c| c.version != version));
            let t0 = Instant::now();
            c.close().await;
            let cancelled = expect_cancelled(&up, "/silent", t0, NOTICE).await?;
            assert_eq!(cancelled.body_bytes, 3 * SSE_EVENT_LEN as u64);
        }
        Ok(())
    })
    .await
}

/// Reads one frame of a huge body, then stops reading: `bytes_sent` must plateau well
/// below the size, and grow again once the client reads on.
async fn check_backpressure(version: Version) -> anyhow::Result<()> {
    let size: u64 = 1 << 30;
    let up = Upstream::auto("bp-up").await;
    let c = client(&up, version).await?;
    let resp = c.get(&format!("/bytes?size={size}")).await?;
    let mut r = BodyReader::new(resp.into_body());
    r.next_data().await?.expect("first frame");
    // Wait for the plateau: two samples 150 ms apart that agree.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = up.bytes_sent();
    let plateau = loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = up.bytes_sent();
        if now == last {
            break now;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "bytes_sent never stopped growing ({now})"
        );
        last = now;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        up.bytes_sent(),
        plateau,
        "{version:?}: kept sending to a stalled reader"
    );
    assert!(
        plateau < 64 << 20,
        "{version:?}: {plateau} bytes buffered for a stalled reader"
    );
    // Reading on lets the upstream continue.
    while r.bytes_read() < plateau + (32 << 20) {
        r.next_data().await?.expect("more data");
    }
    assert!(
        up.bytes_sent() > plateau + (16 << 20),
        "{version:?}: upstream did not resume"
    );
    let t0 = Instant::now();
    c.close().await;
    expect_cancelled(&up, "/bytes", t0, NOTICE).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_stops_the_upstream_h1() -> anyhow::Result<()> {
    within(check_backpressure(H1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_stops_the_upstream_h2() -> anyhow::Result<()> {
    within(check_backpressure(H2)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_everything_and_restart_reuses_the_port() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::http1("down-up").await;
        let addr = up.addr();
        let (_c, task) = start_hang(&up, H1).await?;
        let t0 = Instant::now();
        up.shutdown().await;
        assert_eq!(up.open_connections(), 0);
        expect_cancelled(&up, "/hang", t0, NOTICE).await?;
        assert!(task.await?.is_err());
        assert!(
            crate::Client::h1(addr).await.is_err(),
            "port must refuse connections"
        );
        let mut opts = UpstreamOptions::new("back-up", UpstreamProtocol::Http1);
        opts.bind = Some(addr);
        let again = Upstream::start(opts).await;
        assert_eq!(again.addr(), addr);
        let resp = crate::Client::h1(addr).await?.get("/status/200").await?;
        let body = client::read_all(resp.into_body()).await?;
        assert_eq!(body, &br#"{"status":200,"upstream":"back-up"}"#[..]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_is_noticed_while_the_request_body_is_unfinished() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("body-up").await;
        for version in [H1, H2] {
            // Pending handler (/slow) with an upload that never finishes.
            let c = Arc::new(client(&up, version).await?);
            let (tx, body) = client::channel();
            let since = Instant::now();
            let task = tokio::spawn({
                let c = c.clone();
                async move { c.post("/slow?ms=60000", body).await.map(|_| ()) }
            });
            tx.send(r#"{"stream":true}"#).await?;
            up.wait_request("/slow", since, Duration::from_secs(3))
                .await
                .expect("request");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t0 = Instant::now();
            c.close().await;
            expect_cancelled(&up, "/slow", t0, NOTICE).await?;
            assert!(task.await?.is_err());

            // Streaming response (/sse) while the upload is still open.
            let c = client(&up, version).await?;
            let (tx, body) = client::channel();
            let resp = c.post("/sse?n=100000&interval_ms=20", body).await?;
            tx.send(r#"{"stream":true}"#).await?;
            let mut r = BodyReader::new(resp.into_body());
            r.next_sse().await?.expect("event");
            r.next_sse().await?.expect("event");
            let t0 = Instant::now();
            c.close().await;
            expect_cancelled(&up, "/sse", t0, NOTICE).await?;
            drop(tx);
        }
        Ok(())
    })
    .await
}
