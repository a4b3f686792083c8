//! Self-tests of the client helpers: SSE splitting across frames, gap computation, error
//! classification, request completion (Host / :authority), and request-body helpers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream;
use http::Request;
use http_body_util::StreamBody;
use hyper::body::Frame;

use super::*;
use crate::testutil::{header, within};
use crate::upstream::{sse_event, Upstream};
use crate::BoxError;

/// A body yielding these chunks as separate frames.
fn frames(
    chunks: &[&'static [u8]],
) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Unpin> {
    let items: Vec<Result<Frame<Bytes>, BoxError>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c))))
        .collect();
    StreamBody::new(stream::iter(items))
}

#[tokio::test]
async fn sse_events_are_split_across_and_within_frames() -> anyhow::Result<()> {
    let body = frames(&[
        b"data: a\n",
        b"\ndata: b\n\ndata: c",
        b"\n\n",
        b"data: d\n\n",
    ]);
    let events = read_sse(body).await?;
    let texts: Vec<_> = events.iter().map(|e| e.data.clone()).collect();
    assert_eq!(
        texts,
        ["data: a\n\n", "data: b\n\n", "data: c\n\n", "data: d\n\n"]
    );
    assert_eq!(read_sse_gaps(frames(&[b"x\n\ny\n\n"])).await?.len(), 1);
    let err = read_sse(frames(&[b"data: a\n\ndata: trunc"])).await;
    assert!(err.is_err(), "a truncated event is an error");
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(5);
    assert_eq!(
        gaps(&[t0, t1, t1]),
        [Duration::from_millis(5), Duration::ZERO]
    );
    Ok(())
}

#[tokio::test]
async fn repeat_bodies_advertise_their_length_or_not() -> anyhow::Result<()> {
    use hyper::body::Body as _;
    let b = repeat(Bytes::from_static(b"abc"), 4);
    assert_eq!(b.size_hint().exact(), Some(12));
    assert_eq!(drain_count(b).await?, 12);
    let b = repeat_chunked(Bytes::from_static(b"abc"), 4);
    assert_eq!(b.size_hint().exact(), None);
    assert_eq!(read_all(b).await?, &b"abcabcabcabc"[..]);
    assert_eq!(drain_count(empty()).await?, 0);
    assert_eq!(read_all(full("xy")).await?, &b"xy"[..]);
    Ok(())
}

#[test]
fn classify_recognises_resets_and_closes() {
    let reset = anyhow::Error::from(h2::Error::from(h2::Reason::REFUSED_STREAM));
    // A locally constructed h2 error is not a reset; only the reason is known.
    assert_eq!(classify(&reset), ErrorKind::Other);
    let io = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    assert_eq!(classify(&io), ErrorKind::Closed);
    assert_eq!(classify(&anyhow::anyhow!("boom")), ErrorKind::Other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_completed_for_each_protocol() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("client-up").await;
        let addr = up.addr().to_string();
        for c in [Client::h1(up.addr()).await?, Client::h2c(up.addr()).await?] {
            let v = c.version();
            // Relative URI: Host / :authority come from the connection.
            let resp = c.get("/echo").await?;
            assert_eq!(header(resp.headers(), "x-echo-host"), addr, "{v:?}");
            read_all(resp.into_body()).await?;
            // An explicit Host header wins (and becomes :authority on h2).
            let req = Request::get("/echo")
                .header("host", "api.example")
                .body(empty())?;
            let resp = c.send(req).await?;
            assert_eq!(
                header(resp.headers(), "x-echo-host"),
                "api.example",
                "{v:?}"
            );
            read_all(resp.into_body()).await?;
            // An absolute URI is kept (h1 sends absolute-form, h2 its :authority).
            let req = Request::get("http://other.example/echo?a=b").body(empty())?;
            let resp = c.send(req).await?;
            assert_eq!(
                header(resp.headers(), "x-echo-host"),
                "other.example",
                "{v:?}"
            );
            assert_eq!(header(resp.headers(), "x-echo-path"), "/echo?a=b", "{v:?}");
            read_all(resp.into_body()).await?;
            assert!(!c.is_closed());
        }
        let log = up.request_log();
        assert_eq!(
            log.iter()
                .filter(|r| r.version == http::Version::HTTP_2)
                .count(),
            3
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_multiplexes_concurrent_streams() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::h2c("mux-up").await;
        let c = Client::h2c(up.addr()).await?;
        let t0 = Instant::now();
        let calls = (0..20).map(|_| async {
            let resp = c.get("/sse?n=3&interval_ms=100").await?;
            anyhow::Ok(read_sse(resp.into_body()).await?.len())
        });
        for n in futures::future::join_all(calls).await {
            assert_eq!(n?, 3);
        }
        // Twenty 200 ms streams in parallel, not in sequence.
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(up.connections_accepted(), 1);
        assert_eq!(&sse_event(2)[..6], b"data: ");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_an_upload_cancels_it_upstream() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::auto("abort-upload").await;
        for c in [Client::h1(up.addr()).await?, Client::h2c(up.addr()).await?] {
            let (tx, body) = channel();
            let since = Instant::now();
            let c = std::sync::Arc::new(c);
            let task = tokio::spawn({
                let c = c.clone();
                async move { c.post("/sink", body).await }
            });
            tx.send("some bytes").await?;
            up.wait_request("/sink", since, Duration::from_secs(3))
                .await
                .expect("upstream got /sink");
            tx.abort().await;
            let err = task.await?.expect_err("aborted upload cannot succeed");
            let _ = err;
            let cancelled = up
                .wait_cancelled("/sink", since, Duration::from_secs(3))
                .await
                .expect("upstream noticed the aborted upload");
            assert_eq!(cancelled.version, c.version());
        }
        Ok(())
    })
    .await
}
