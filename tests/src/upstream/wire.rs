//! Wire recording: every accepted connection tees the bytes it reads from the peer (after
//! TLS decryption) into a bounded per-connection record, so tests can assert on exactly
//! what a proxy forwarded, including anything hyper would have normalised or rejected.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes kept per connection (the rest is only counted).
pub(crate) const WIRE_CAP_PER_CONNECTION: usize = 4 << 20;

/// Most connections kept (the oldest are dropped first).
pub(crate) const WIRE_CONNECTIONS: usize = 256;

/// What one connection received.
struct ConnWire {
    /// Connection id (1, 2, ... in accept order, as in `RecordedRequest::connection`).
    id: u64,
    /// The first [`WIRE_CAP_PER_CONNECTION`] bytes received.
    bytes: Vec<u8>,
    /// Bytes received beyond the cap (not kept).
    dropped: u64,
}

/// The wire records of one upstream: the last [`WIRE_CONNECTIONS`] connections in accept
/// order, and when the last byte arrived on any of them.
pub(crate) struct WireLog {
    conns: Mutex<VecDeque<Arc<Mutex<ConnWire>>>>,
    /// Reference point for `last_byte_nanos`.
    epoch: Instant,
    /// When the last byte arrived, in nanoseconds since `epoch` (0: none yet).
    last_byte_nanos: AtomicU64,
}

impl WireLog {
    /// An empty log.
    pub(crate) fn new() -> WireLog {
        WireLog {
            conns: Mutex::new(VecDeque::new()),
            epoch: Instant::now(),
            last_byte_nanos: AtomicU64::new(0),
        }
    }

    /// Starts the record of connection `id` (call in accept order).
    pub(crate) fn open(self: &Arc<Self>, id: u64) -> Recorder {
        let conn = Arc::new(Mutex::new(ConnWire {
            id,
            bytes: Vec::new(),
            dropped: 0,
        }));
        {
            let mut conns = self.conns.lock();
            if conns.len() == WIRE_CONNECTIONS {
                conns.pop_front();
            }
            conns.push_back(conn.clone());
        }
        Recorder {
            log: self.clone(),
            conn,
        }
    }

    /// The bytes each kept connection received, in accept order.
    pub(crate) fn bytes(&self) -> Vec<Vec<u8>> {
        self.conns
            .lock()
            .iter()
            .map(|c| c.lock().bytes.clone())
            .collect()
    }

    /// Every kept connection as readable text, each under a `--- connection N ---` line.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for conn in self.conns.lock().iter() {
            let c = conn.lock();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            let _ = write!(out, "--- connection {} ({} bytes", c.id, c.bytes.len());
            if c.dropped > 0 {
                let _ = write!(out, ", {} more not kept", c.dropped);
            }
            out.push_str(") ---\n");
            escape_into(&mut out, &c.bytes);
        }
        out
    }

    /// When the last byte arrived on any connection (`None`: nothing yet).
    fn last_byte(&self) -> Option<Instant> {
        match self.last_byte_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n)),
        }
    }

    /// Waits until no byte arrived for `quiet`, counting from the later of the call and
    /// the last byte, or until `max` has passed.
    pub(crate) async fn wait_quiet(&self, quiet: Duration, max: Duration) {
        let start = tokio::time::Instant::now();
        let deadline = start + max;
        loop {
            let last = self
                .last_byte()
                .map_or(start, |t| tokio::time::Instant::from_std(t).max(start));
            let until = (last + quiet).min(deadline);
            if tokio::time::Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }
}

/// Appends one connection's bytes to `out`: printable ASCII as is (`\` doubled), `\r`,
/// `\n`, `\t` and `\0` as escapes, anything else as `\xNN`; a real newline follows every
/// `\n`, so `\r\n` shows as `\r\n` at the end of a line.
pub(crate) fn escape_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\0' => out.push_str("\\0"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// Appends what one connection reads to its record.
pub(crate) struct Recorder {
    log: Arc<WireLog>,
    conn: Arc<Mutex<ConnWire>>,
}

impl Recorder {
    fn record(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        {
            let mut c = self.conn.lock();
            let room = WIRE_CAP_PER_CONNECTION.saturating_sub(c.bytes.len());
            let keep = room.min(data.len());
            c.bytes.extend_from_slice(&data[..keep]);
            c.dropped += (data.len() - keep) as u64;
        }
        let nanos = (self.log.epoch.elapsed().as_nanos() as u64).max(1);
        self.log.last_byte_nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

/// An IO stream whose reads are also appended to a [`Recorder`]; writes pass straight
/// through.
pub(crate) struct WireTap<T> {
    inner: T,
    recorder: Recorder,
}

impl<T> WireTap<T> {
    /// Wraps `inner`, recording what is read from it.
    pub(crate) fn new(inner: T, recorder: Recorder) -> WireTap<T> {
        WireTap { inner, recorder }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WireTap<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            this.recorder.record(&buf.filled()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WireTap<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
