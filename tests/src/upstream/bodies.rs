//! Response and request body types of the test upstream: SSE generator, pattern-byte
//! generator, request-byte counter, and the [`Tracked`] wrapper that counts bytes handed
//! to hyper and records cancellations.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::state::{State, Tracker};
use crate::BoxError;

/// A failure the test asked for (`/reset`, `/refuse`), as opposed to a broken peer.
#[derive(Debug)]
pub(crate) struct Deliberate(pub(crate) Option<h2::Error>);

impl std::fmt::Display for Deliberate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(e) => write!(f, "stream reset on purpose: {e}"),
            None => f.write_str("aborted on purpose"),
        }
    }
}

impl std::error::Error for Deliberate {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.as_ref().map(|e| e as _)
    }
}

/// The error that aborts a response because its request body broke (peer gone).
#[derive(Debug)]
pub(crate) struct PeerGone;

impl std::fmt::Display for PeerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body broke: the peer went away")
    }
}

impl std::error::Error for PeerGone {}

/// Resolves once `rx` reports the peer gone; never if the sender drops without that.
pub(crate) async fn peer_gone(mut rx: watch::Receiver<bool>) {
    let gone = rx.wait_for(|g| *g).await.is_ok();
    if !gone {
        std::future::pending::<()>().await;
    }
}

/// The response body type every handler returns.
pub(crate) type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// Length in bytes of every SSE event the upstream sends.
pub const SSE_EVENT_LEN: usize = sse_event(0).len();

/// The pattern repeats every this many bytes (a prime, so chunking bugs show).
const PATTERN_PERIOD: usize = 251;

/// Byte number `offset` of every `/bytes` response body.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % PATTERN_PERIOD as u64) as u8
}

/// Whether `data` is exactly the `/bytes` pattern starting at body offset `offset`.
pub fn check_pattern(offset: u64, data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .all(|(i, b)| *b == pattern_byte(offset + i as u64))
}

/// SSE event number `i`: `data: {"i":000042,"t":"token"}\n\n` (always [`SSE_EVENT_LEN`] bytes).
pub const fn sse_event(i: u64) -> [u8; 32] {
    let mut out = *b"data: {\"i\":000000,\"t\":\"token\"}\n\n";
    let mut pos = 16;
    let mut v = i % 1_000_000;
    loop {
        out[pos] = b'0' + (v % 10) as u8;
        v /= 10;
        if pos == 11 {
            break;
        }
        pos -= 1;
    }
    out
}

/// Boxes any body with our data and error types.
pub(crate) fn boxed<B>(body: B) -> RespBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Wraps a response body: counts bytes handed to hyper and completes the [`Tracker`] when
/// the body ends (or is deliberately aborted with an error).
pub(crate) struct Tracked {
    inner: RespBody,
    tracker: Option<Tracker>,
    /// Declared Content-Length: hyper stops polling once that many bytes are out.
    declared: Option<u64>,
    /// Resolves if the request body broke; the response then fails as cancelled.
    gone: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Tracked {
    /// Wraps `inner` (whose response declared `declared` bytes of Content-Length, if
    /// any); an already-finished body completes the tracker at once.
    pub(crate) fn new(
        inner: RespBody,
        mut tracker: Tracker,
        declared: Option<u64>,
        gone: watch::Receiver<bool>,
    ) -> Tracked {
        let tracker = if inner.is_end_stream() || declared == Some(0) {
            tracker.complete();
            None
        } else {
            Some(tracker)
        };
        Tracked {
            inner,
            tracker,
            declared,
            gone: Box::pin(peer_gone(gone)),
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(t) = self.tracker.as_mut() else {
            // Finished (or aborted) already: no more watching needed.
            return Pin::new(&mut self.inner).poll_frame(cx);
        };
        t.headers_sent();
        if self.gone.as_mut().poll(cx).is_ready() {
            // Not completed: the tracker records a cancellation when hyper drops us.
            return Poll::Ready(Some(Err(Box::new(PeerGone))));
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let declared = self.declared;
        let finished = match &frame {
            Some(Ok(f)) => {
                let mut all_out = false;
                if let (Some(data), Some(t)) = (f.data_ref(), self.tracker.as_mut()) {
                    let total = t.sent(data.len());
                    all_out = declared.is_some_and(|d| total >= d);
                }
                all_out || self.inner.is_end_stream()
            }
            // A deliberate abort (`abort_after`) is not a cancellation; any other error
            // (the echoed request body broke) is, so the tracker is left to record it.
            Some(Err(e)) => e.is::<Deliberate>(),
            None => true,
        };
        if finished {
            if let Some(mut t) = self.tracker.take() {
                t.complete();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Server-sent events: `n` events, one every `interval` (first at once), each flushed on
/// its own; optionally aborts after some events or goes silent forever after the last.
pub(crate) struct SseBody {
    pub(crate) n: u64,
    pub(crate) interval: Duration,
    /// Fail the body (h1: connection closed, h2: RST_STREAM) before event number `k`.
    pub(crate) abort_after: Option<u64>,
    /// After the last event, stay pending forever instead of ending.
    pub(crate) silent_after: bool,
    pub(crate) next: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    yielded: bool,
    /// Records each event's send time under a tag (`/sse?tag=T`).
    recorder: Option<(Arc<State>, String)>,
}

impl SseBody {
    /// A new event stream (see the field docs).
    pub(crate) fn new(
        n: u64,
        interval: Duration,
        abort_after: Option<u64>,
        silent_after: bool,
    ) -> SseBody {
        SseBody {
            n,
            interval,
            abort_after,
            silent_after,
            next: 0,
            sleep: None,
            yielded: true,
            recorder: None,
        }
    }

    /// Records the send time of every event under `tag`.
    pub(crate) fn record_as(mut self, state: Arc<State>, tag: String) -> SseBody {
        self.recorder = Some((state, tag));
        self
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(sleep) = self.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        if !self.yielded {
            // Zero interval: still return Pending once so hyper flushes each event alone.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Checked after the wait, so the abort lands where the next event would have.
        if self.abort_after == Some(self.next) {
            return Poll::Ready(Some(Err(Box::new(Deliberate(None)))));
        }
        if self.next >= self.n {
            // Silent: never wake up again; the body lives until the peer goes away.
            return if self.silent_after {
                Poll::Pending
            } else {
                Poll::Ready(None)
            };
        }
        let event = Bytes::copy_from_slice(&sse_event(self.next));
        if let Some((state, tag)) = &self.recorder {
            state
                .sse_sent
                .lock()
                .entry(tag.clone())
                .or_default()
                .push(Instant::now());
        }
        self.next += 1;
        if self.next < self.n {
            if self.interval.is_zero() {
                self.yielded = false;
            } else {
                // Relative to *now*: a late poll never makes the next gap shorter.
                self.sleep = Some(Box::pin(tokio::time::sleep(self.interval)));
            }
        }
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    fn is_end_stream(&self) -> bool {
        // Lets h2 put END_STREAM on the last event rather than on an extra empty frame.
        self.next >= self.n && !self.silent_after && self.abort_after.is_none_or(|k| k > self.n)
    }
}

/// `size` pattern bytes in chunks of `chunk`, each a cheap slice of one shared buffer.
pub(crate) struct BytesBody {
    remaining: u64,
    offset: u64,
    chunk: usize,
    exact: bool,
    pattern: Bytes,
}

impl BytesBody {
    /// A body of `size` bytes; `exact` advertises the size (hyper then frames it with
    /// Content-Length rather than chunked).
    pub(crate) fn new(size: u64, chunk: usize, exact: bool) -> BytesBody {
        let pattern: Vec<u8> = (0..chunk + PATTERN_PERIOD)
            .map(|i| pattern_byte(i as u64))
            .collect();
        BytesBody {
            remaining: size,
            offset: 0,
            chunk,
            exact,
            pattern: Bytes::from(pattern),
        }
    }
}

impl Body for BytesBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = self.remaining.min(self.chunk as u64) as usize;
        let start = (self.offset % PATTERN_PERIOD as u64) as usize;
        let data = self.pattern.slice(start..start + len);
        self.offset += len as u64;
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// A request body that adds every data byte it yields to the server's received counter.
pub(crate) struct Counting<B> {
    pub(crate) inner: B,
    pub(crate) state: Arc<State>,
}

impl<B> Body for Counting<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                self.state
                    .bytes_received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
