//! Request bodies (empty, fixed, repeated chunks, channel-fed) and response-body readers
//! that record arrival times, split SSE events, count bytes, or read slowly.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::BoxError;

/// Request body type accepted by [`Client::send`](super::Client::send).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(Into::into).boxed_unsync()
}

/// A body of exactly these bytes.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(Into::into).boxed_unsync()
}

/// `chunk` sent `times` times, without ever holding more than one chunk: a 1 GiB upload
/// is `repeat(Bytes::from(vec![b'x'; 1 << 20]), 1024)`. The length is advertised, so
/// HTTP/1.1 uses Content-Length (see [`repeat_chunked`] for chunked encoding).
pub fn repeat(chunk: Bytes, times: u64) -> Body {
    Repeat {
        chunk,
        left: times,
        exact: true,
    }
    .boxed_unsync()
}

/// Like [`repeat`] but with unknown length (HTTP/1.1 chunked, no h2 content-length).
pub fn repeat_chunked(chunk: Bytes, times: u64) -> Body {
    Repeat {
        chunk,
        left: times,
        exact: false,
    }
    .boxed_unsync()
}

struct Repeat {
    chunk: Bytes,
    left: u64,
    exact: bool,
}

impl HttpBody for Repeat {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == 0 || self.chunk.is_empty() {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 || self.chunk.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.left * self.chunk.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}

/// A streamed body fed by a [`BodySender`] (chunked on HTTP/1.1); it ends when the sender
/// is dropped or [`BodySender::finish`]ed, and fails on [`BodySender::abort`].
pub fn channel() -> (BodySender, Body) {
    let (tx, rx) = mpsc::channel(1);
    (BodySender { tx }, ChannelBody { rx }.boxed_unsync())
}

/// The sending half of [`channel`]; capacity one chunk, so `send` waits for the transport.
#[derive(Debug)]
pub struct BodySender {
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
}

impl BodySender {
    /// Sends one data chunk; fails once the request is gone.
    pub async fn send(&self, data: impl Into<Bytes>) -> anyhow::Result<()> {
        self.tx
            .send(Ok(Frame::data(data.into())))
            .await
            .map_err(|_| anyhow::anyhow!("request body receiver is gone"))
    }

    /// Sends trailers, which also ends the body.
    pub async fn trailers(self, trailers: HeaderMap) -> anyhow::Result<()> {
        self.tx
            .send(Ok(Frame::trailers(trailers)))
            .await
            .map_err(|_| anyhow::anyhow!("request body receiver is gone"))
    }

    /// Ends the body cleanly (same as dropping the sender).
    pub fn finish(self) {}

    /// Fails the body: hyper aborts the request (h1: closes the connection, h2: resets
    /// the stream).
    pub async fn abort(self) {
        let _ = self
            .tx
            .send(Err("request body aborted on purpose".into()))
            .await;
    }
}

struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

/// One complete SSE event (`...\n\n`) and when its last byte arrived.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Arrival time of the frame that completed the event.
    pub at: Instant,
    /// The event including its terminating blank line.
    pub data: Bytes,
}

/// Reads a response body frame by frame: data with arrival times, SSE events, trailers.
/// Reading is cancel-safe (wrap calls in `tokio::time::timeout` freely). Not reading is
/// how a test applies backpressure: read one frame, then pause.
pub struct BodyReader<B> {
    body: B,
    trailers: Option<HeaderMap>,
    sse_buf: BytesMut,
    sse_ready: VecDeque<SseEvent>,
    bytes: u64,
    done: bool,
}

impl<B> BodyReader<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Wraps a body.
    pub fn new(body: B) -> BodyReader<B> {
        BodyReader {
            body,
            trailers: None,
            sse_buf: BytesMut::new(),
            sse_ready: VecDeque::new(),
            bytes: 0,
            done: false,
        }
    }

    /// The next non-empty data frame (`None` at the end); trailers are kept for
    /// [`Self::trailers`].
    pub async fn next_data(&mut self) -> anyhow::Result<Option<Bytes>> {
        while !self.done {
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(anyhow::Error::from_boxed(e.into()));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    // An empty DATA frame (h2 END_STREAM carrier) carries nothing.
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        self.bytes += data.len() as u64;
                        return Ok(Some(data));
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            self.trailers = Some(t);
                        }
                    }
                },
            }
        }
        Ok(None)
    }

    /// The next data frame and its arrival time.
    pub async fn next_timed(&mut self) -> anyhow::Result<Option<(Instant, Bytes)>> {
        Ok(self.next_data().await?.map(|d| (Instant::now(), d)))
    }

    /// The next complete SSE event (events may span or share frames).
    pub async fn next_sse(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            if let Some(ev) = self.sse_ready.pop_front() {
                return Ok(Some(ev));
            }
            let Some((at, data)) = self.next_timed().await? else {
                if !self.sse_buf.is_empty() {
                    anyhow::bail!("body ended inside an SSE event: {:?}", self.sse_buf);
                }
                return Ok(None);
            };
            self.sse_buf.extend_from_slice(&data);
            while let Some(end) = find(&self.sse_buf, b"\n\n") {
                let data = self.sse_buf.split_to(end + 2).freeze();
                self.sse_ready.push_back(SseEvent { at, data });
            }
        }
    }

    /// Reads to the end, counting bytes without keeping them.
    pub async fn drain(&mut self) -> anyhow::Result<u64> {
        let mut n = 0;
        while let Some(d) = self.next_data().await? {
            n += d.len() as u64;
        }
        Ok(n)
    }

    /// Data bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Whether the body has ended (or failed).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Trailers, once the body has ended with them.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    /// The wrapped body back.
    pub fn into_inner(self) -> B {
        self.body
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// All data frames with their arrival times.
pub async fn read_timed<B>(body: B) -> anyhow::Result<Vec<(Instant, Bytes)>>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut r = BodyReader::new(body);
    let mut out = Vec::new();
    while let Some(frame) = r.next_timed().await? {
        out.push(frame);
    }
    Ok(out)
}

/// The whole body in memory (for small bodies).
pub async fn read_all<B>(body: B) -> anyhow::Result<Bytes>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut r = BodyReader::new(body);
    let mut out = BytesMut::new();
    while let Some(d) = r.next_data().await? {
        out.extend_from_slice(&d);
    }
    Ok(out.freeze())
}

/// The body's byte count, without keeping the bytes.
pub async fn drain_count<B>(body: B) -> anyhow::Result<u64>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    BodyReader::new(body).drain().await
}

/// Every SSE event with its arrival time.
pub async fn read_sse<B>(body: B) -> anyhow::Result<Vec<SseEvent>>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut r = BodyReader::new(body);
    let mut out = Vec::new();
    while let Some(ev) = r.next_sse().await? {
        out.push(ev);
    }
    Ok(out)
}

/// Arrival gaps between consecutive SSE events (one fewer than the events).
pub async fn read_sse_gaps<B>(body: B) -> anyhow::Result<Vec<Duration>>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let events = read_sse(body).await?;
    let times: Vec<Instant> = events.iter().map(|e| e.at).collect();
    Ok(gaps(&times))
}

/// Differences between consecutive instants.
pub fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}
