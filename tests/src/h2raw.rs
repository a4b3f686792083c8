//! A raw HTTP/2 client (h2c with prior knowledge over plain TCP) that sends exactly the
//! frames and header fields it is given, including malformed ones the `h2` crate refuses
//! to produce: uppercase names, CR/LF/NUL in values, connection-specific headers,
//! duplicate or misplaced pseudo-headers, HEADERS split over CONTINUATION frames, raw
//! frames of any type.
//!
//! Requests are HPACK-encoded here with *literal without indexing, no Huffman* for every
//! field, so the bytes given are the bytes on the wire. Responses are decoded with one
//! `loona_hpack` decoder kept for the whole connection (servers use Huffman coding and
//! the dynamic table). The connection answers SETTINGS and PING by itself, sends
//! WINDOW_UPDATEs for every DATA frame it receives, and respects the server's flow-control
//! windows when sending DATA through [`RawH2::send_data`].
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) -> anyhow::Result<()> {
//! use corridor_tests::h2raw::{RawH2, Reason};
//! let mut h2 = RawH2::connect(addr).await?;
//! let id = h2.next_stream_id();
//! let authority = addr.to_string();
//! h2.send_headers(
//!     id,
//!     &[
//!         (b":method", b"GET"),
//!         (b":scheme", b"http"),
//!         (b":authority", authority.as_bytes()),
//!         (b":path", b"/echo"),
//!         (b"connection", b"close"), // connection-specific: malformed in HTTP/2
//!     ],
//!     true,
//! )
//! .await?;
//! let out = h2.read_until_done(id, std::time::Duration::from_secs(5)).await;
//! // hyper's h2 server resets the stream; a proxy might answer 400 instead.
//! assert!(out.rst == Some(Reason::PROTOCOL_ERROR) || out.status == Some(400), "{out:?}");
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use h2::Reason;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame type codes (RFC 9113 section 6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 section 6).
pub mod flags {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS, PUSH_PROMISE).
    pub const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS_INITIAL_WINDOW_SIZE.
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// SETTINGS_MAX_FRAME_SIZE.
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
/// The protocol's default flow-control window and maximum frame size.
const DEFAULT_WINDOW: i64 = 65_535;
const DEFAULT_MAX_FRAME: usize = 16_384;
/// How long [`RawH2::connect`] waits for the server's SETTINGS, and [`RawH2::send_data`]
/// for flow-control credit.
const WAIT: Duration = Duration::from_secs(10);

/// One frame as received (after the connection's own bookkeeping has seen it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Frame type (see [`kind`]).
    pub kind: u8,
    /// Flags (see [`flags`]).
    pub flags: u8,
    /// Stream id (reserved bit cleared).
    pub stream_id: u32,
    /// The payload, padding included.
    pub payload: Bytes,
}

/// What happened to one stream, as returned by [`RawH2::read_until_done`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The final (non-1xx) response status, if response headers arrived.
    pub status: Option<u16>,
    /// 1xx statuses received before the final response, in order.
    pub informational: Vec<u16>,
    /// The final response's header fields in order, pseudo-headers left out.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Trailer fields (a header block after the response headers).
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Response body bytes (padding removed).
    pub body: Vec<u8>,
    /// Whether the server ended the stream with END_STREAM.
    pub end_stream: bool,
    /// The RST_STREAM error code the server sent for this stream.
    pub rst: Option<Reason>,
    /// The GOAWAY error code the server sent on this connection (any time so far).
    pub goaway: Option<Reason>,
    /// Whether the connection is closed (EOF, reset, or unusable after an HPACK error).
    pub closed: bool,
    /// Why the connection closed, when it did.
    pub close_reason: Option<String>,
    /// Whether the timeout passed before the stream ended.
    pub timed_out: bool,
}

impl Outcome {
    /// The first response header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    /// The response body as (lossy) UTF-8.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the stream ended with a response (END_STREAM after response headers).
    pub fn completed(&self) -> bool {
        self.end_stream && self.status.is_some()
    }
}

/// Escaped, and cut after `max` bytes, for Debug output.
fn shown(bytes: &[u8], max: usize) -> String {
    let cut = bytes.len().min(max);
    let mut s = bytes[..cut].escape_ascii().to_string();
    if cut < bytes.len() {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

fn shown_fields(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    fields
        .iter()
        .map(|(n, v)| format!("{}: {}", shown(n, 256), shown(v, 256)))
        .collect()
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome")
            .field("status", &self.status)
            .field("informational", &self.informational)
            .field("headers", &shown_fields(&self.headers))
            .field("trailers", &shown_fields(&self.trailers))
            .field("body", &shown(&self.body, 512))
            .field("end_stream", &self.end_stream)
            .field("rst", &self.rst)
            .field("goaway", &self.goaway)
            .field("closed", &self.closed)
            .field("close_reason", &self.close_reason)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}

/// Appends an HPACK integer with an `n`-bit prefix; `first` holds the bits above it.
fn encode_int(out: &mut Vec<u8>, value: usize, n: u32, first: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Appends an HPACK string literal without Huffman coding.
fn encode_str(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// HPACK-encodes `fields` exactly as given, each as a literal without indexing with a new
/// (literal) name and no Huffman coding, so any bytes at all can be sent.
pub fn encode_literal_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        encode_str(&mut out, name);
        encode_str(&mut out, value);
    }
    out
}

/// Serialises one frame; the stream id is written as given (all 32 bits).
fn frame_bytes(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    assert!(payload.len() < 1 << 24, "frame payload over 2^24 - 1 bytes");
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A header block being assembled from HEADERS/PUSH_PROMISE + CONTINUATION frames.
struct Partial {
    stream_id: u32,
    /// Whether the block belongs to a response stream (PUSH_PROMISE blocks are only
    /// decoded to keep the HPACK state in step).
    response: bool,
    end_stream: bool,
    block: Vec<u8>,
}

/// What the next read produced.
enum Read {
    Frame(Frame),
    TimedOut,
    Closed,
}

/// A raw HTTP/2 client connection (h2c, prior knowledge) that sends exactly what it is
/// told; see the [module docs](self).
pub struct RawH2 {
    tcp: TcpStream,
    buf: BytesMut,
    decoder: loona_hpack::Decoder<'static>,
    /// Per-stream results not yet handed out by `read_until_done`.
    streams: HashMap<u32, Outcome>,
    partial: Option<Partial>,
    peer_settings: Vec<(u16, u32)>,
    peer_max_frame: usize,
    peer_initial_window: i64,
    /// Our send windows: the connection's and each stream's (created on first use).
    conn_send_window: i64,
    stream_send_windows: HashMap<u32, i64>,
    goaway: Option<(u32, Reason)>,
    closed: Option<String>,
    next_stream: u32,
}

impl RawH2 {
    /// Connects to `addr`, sends the preface and an empty SETTINGS frame, and waits for
    /// (and ACKs) the server's SETTINGS.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<RawH2> {
        RawH2::connect_with_settings(addr, &[]).await
    }

    /// Like [`RawH2::connect`], but the client SETTINGS frame carries `settings`
    /// (identifier, value) in order.
    pub async fn connect_with_settings(
        addr: SocketAddr,
        settings: &[(u16, u32)],
    ) -> anyhow::Result<RawH2> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let mut h2 = RawH2 {
            tcp,
            buf: BytesMut::with_capacity(32 * 1024),
            decoder: loona_hpack::Decoder::new(),
            streams: HashMap::new(),
            partial: None,
            peer_settings: Vec::new(),
            peer_max_frame: DEFAULT_MAX_FRAME,
            peer_initial_window: DEFAULT_WINDOW,
            conn_send_window: DEFAULT_WINDOW,
            stream_send_windows: HashMap::new(),
            goaway: None,
            closed: None,
            next_stream: 1,
        };
        let mut payload = Vec::with_capacity(settings.len() * 6);
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut out = PREFACE.to_vec();
        frame_bytes(&mut out, kind::SETTINGS, 0, 0, &payload);
        h2.tcp.write_all(&out).await?;
        let deadline = Instant::now() + WAIT;
        loop {
            match h2.read_frame(deadline).await {
                Read::Frame(f) => {
                    let is_settings = f.kind == kind::SETTINGS && f.flags & flags::ACK == 0;
                    h2.process(&f).await;
                    if is_settings {
                        return Ok(h2);
                    }
                }
                Read::TimedOut => anyhow::bail!("no SETTINGS from {addr} within {WAIT:?}"),
                Read::Closed => anyhow::bail!(
                    "{addr} closed before its SETTINGS: {}",
                    h2.closed.as_deref().unwrap_or("?")
                ),
            }
        }
    }

    /// The next client stream id: 1, 3, 5, ...
    pub fn next_stream_id(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        id
    }

    /// The SETTINGS the server sent, (identifier, value) in the order received.
    pub fn peer_settings(&self) -> &[(u16, u32)] {
        &self.peer_settings
    }

    /// The GOAWAY the server sent, if any: (last stream id, error code).
    pub fn goaway(&self) -> Option<(u32, Reason)> {
        self.goaway
    }

    /// Whether the connection has closed (or become unusable).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Sends `fields` as one header block on `stream_id`, HPACK-encoded by
    /// [`encode_literal_block`] (exactly the bytes given, in order); split into HEADERS +
    /// CONTINUATION only if it exceeds the server's maximum frame size.
    pub async fn send_headers(
        &mut self,
        stream_id: u32,
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
    ) -> std::io::Result<()> {
        let block = encode_literal_block(fields);
        let chunk = self.peer_max_frame;
        self.send_header_block(stream_id, &block, end_stream, chunk)
            .await
    }

    /// Like [`RawH2::send_headers`], but the block is cut into pieces of `chunk` bytes:
    /// the first in HEADERS, the rest in CONTINUATION frames (END_HEADERS on the last).
    pub async fn send_headers_continued(
        &mut self,
        stream_id: u32,
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
        chunk: usize,
    ) -> std::io::Result<()> {
        let block = encode_literal_block(fields);
        self.send_header_block(stream_id, &block, end_stream, chunk)
            .await
    }

    /// Sends an already encoded header block (any bytes, valid HPACK or not) in HEADERS +
    /// CONTINUATION frames of at most `chunk` bytes each, in one write.
    pub async fn send_header_block(
        &mut self,
        stream_id: u32,
        block: &[u8],
        end_stream: bool,
        chunk: usize,
    ) -> std::io::Result<()> {
        let chunk = chunk.max(1);
        let mut pieces: Vec<&[u8]> = block.chunks(chunk).collect();
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        let last = pieces.len() - 1;
        let mut out = Vec::with_capacity(block.len() + 9 * pieces.len());
        for (i, piece) in pieces.into_iter().enumerate() {
            let mut f = if i == last { flags::END_HEADERS } else { 0 };
            let kind = if i == 0 {
                if end_stream {
                    f |= flags::END_STREAM;
                }
                kind::HEADERS
            } else {
                kind::CONTINUATION
            };
            frame_bytes(&mut out, kind, f, stream_id, piece);
        }
        self.tcp.write_all(&out).await
    }

    /// Sends `data` on `stream_id` in DATA frames no larger than the server allows,
    /// waiting (up to 10 s, reading frames meanwhile) for flow-control credit; END_STREAM
    /// goes on the last frame. Empty `data` sends one empty DATA frame.
    pub async fn send_data(
        &mut self,
        stream_id: u32,
        data: &[u8],
        end_stream: bool,
    ) -> std::io::Result<()> {
        let mut rest = data;
        loop {
            let window = self.send_window(stream_id);
            if window <= 0 && !rest.is_empty() {
                self.wait_for_credit(stream_id).await?;
                continue;
            }
            let n = rest
                .len()
                .min(self.peer_max_frame)
                .min(window.max(0) as usize);
            let (now, later) = rest.split_at(n);
            let f = if later.is_empty() && end_stream {
                flags::END_STREAM
            } else {
                0
            };
            let mut out = Vec::with_capacity(n + 9);
            frame_bytes(&mut out, kind::DATA, f, stream_id, now);
            self.tcp.write_all(&out).await?;
            self.conn_send_window -= n as i64;
            *self.stream_window_mut(stream_id) -= n as i64;
            rest = later;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Sends RST_STREAM on `stream_id` with `reason`.
    pub async fn send_rst(&mut self, stream_id: u32, reason: Reason) -> std::io::Result<()> {
        let code: u32 = reason.into();
        self.send_raw_frame(kind::RST_STREAM, 0, stream_id, &code.to_be_bytes())
            .await
    }

    /// Sends one frame exactly as given (stream id written with all 32 bits); nothing is
    /// checked and no state is updated.
    pub async fn send_raw_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream_id: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 9);
        frame_bytes(&mut out, kind, flags, stream_id, payload);
        self.tcp.write_all(&out).await
    }

    /// Sends arbitrary bytes on the connection (for example half a frame).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// Reads one frame (after the connection's own handling of it: SETTINGS and PING
    /// answered, header blocks decoded into the stream's [`Outcome`], DATA credited);
    /// `None` on timeout or once the connection is closed.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        if self.closed.is_some() {
            return None;
        }
        match self.read_frame(Instant::now() + timeout).await {
            Read::Frame(f) => {
                self.process(&f).await;
                Some(f)
            }
            Read::TimedOut | Read::Closed => None,
        }
    }

    /// Reads frames until `stream_id` is done (END_STREAM or RST_STREAM from the server,
    /// a GOAWAY that excludes it or reports an error, the connection closing, or
    /// `timeout`) and returns what happened to it.
    pub async fn read_until_done(&mut self, stream_id: u32, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        while !self.stream_done(stream_id) {
            match self.read_frame(deadline).await {
                Read::Frame(f) => self.process(&f).await,
                Read::TimedOut => {
                    timed_out = true;
                    break;
                }
                Read::Closed => break,
            }
        }
        let mut out = self.streams.remove(&stream_id).unwrap_or_default();
        out.goaway = self.goaway.map(|(_, r)| r);
        out.closed = self.closed.is_some();
        out.close_reason = self.closed.clone();
        out.timed_out = timed_out;
        out
    }

    fn stream_done(&self, stream_id: u32) -> bool {
        if self.closed.is_some() {
            return true;
        }
        if let Some(s) = self.streams.get(&stream_id) {
            if s.end_stream || s.rst.is_some() {
                return true;
            }
        }
        matches!(self.goaway, Some((last, reason)) if reason != Reason::NO_ERROR || last < stream_id)
    }

    /// Reads the next whole frame, or notes why there is none.
    async fn read_frame(&mut self, deadline: Instant) -> Read {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let mut head = self.buf.split_to(9);
                    let payload = self.buf.split_to(len).freeze();
                    head.advance(3);
                    let kind = head.get_u8();
                    let flags = head.get_u8();
                    let stream_id = head.get_u32() & 0x7fff_ffff;
                    return Read::Frame(Frame {
                        kind,
                        flags,
                        stream_id,
                        payload,
                    });
                }
            }
            if self.closed.is_some() {
                return Read::Closed;
            }
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.tcp.read_buf(&mut self.buf)).await {
                Err(_) => return Read::TimedOut,
                Ok(Ok(0)) => {
                    let why = if self.buf.is_empty() {
                        "EOF".to_owned()
                    } else {
                        format!("EOF inside a frame ({} bytes left over)", self.buf.len())
                    };
                    self.closed = Some(why);
                    return Read::Closed;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.closed = Some(format!("read error: {e}"));
                    return Read::Closed;
                }
            }
        }
    }

    /// The connection's bookkeeping for one received frame. Write errors while answering
    /// are ignored: a broken connection shows up on the next read.
    async fn process(&mut self, f: &Frame) {
        let mut reply = Vec::new();
        match f.kind {
            kind::DATA => {
                let len = f.payload.len();
                let data = unpad(f.flags, &f.payload).unwrap_or_default();
                let s = self.streams.entry(f.stream_id).or_default();
                s.body.extend_from_slice(data);
                let end = f.flags & flags::END_STREAM != 0;
                if end {
                    s.end_stream = true;
                }
                if len > 0 {
                    let inc = (len as u32).to_be_bytes();
                    frame_bytes(&mut reply, kind::WINDOW_UPDATE, 0, 0, &inc);
                    if !end {
                        frame_bytes(&mut reply, kind::WINDOW_UPDATE, 0, f.stream_id, &inc);
                    }
                }
            }
            kind::HEADERS | kind::PUSH_PROMISE => {
                let mut frag = unpad(f.flags, &f.payload).unwrap_or_default();
                let response = f.kind == kind::HEADERS;
                if response && f.flags & flags::PRIORITY != 0 {
                    frag = frag.get(5..).unwrap_or_default();
                }
                if !response {
                    // The promised stream id.
                    frag = frag.get(4..).unwrap_or_default();
                }
                let partial = Partial {
                    stream_id: f.stream_id,
                    response,
                    end_stream: f.flags & flags::END_STREAM != 0,
                    block: frag.to_vec(),
                };
                if f.flags & flags::END_HEADERS != 0 {
                    self.finish_block(partial);
                } else {
                    self.partial = Some(partial);
                }
            }
            kind::CONTINUATION => match self.partial.take() {
                Some(mut p) if p.stream_id == f.stream_id => {
                    p.block.extend_from_slice(&f.payload);
                    if f.flags & flags::END_HEADERS != 0 {
                        self.finish_block(p);
                    } else {
                        self.partial = Some(p);
                    }
                }
                _ => {
                    self.closed = Some(format!(
                        "server sent an unexpected CONTINUATION on stream {}",
                        f.stream_id
                    ));
                }
            },
            kind::RST_STREAM if f.payload.len() >= 4 => {
                let code = be_u32(&f.payload[..4]);
                self.streams.entry(f.stream_id).or_default().rst = Some(Reason::from(code));
            }
            kind::SETTINGS if f.flags & flags::ACK == 0 => {
                for entry in f.payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([entry[0], entry[1]]);
                    let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                    self.peer_settings.push((id, value));
                    match id {
                        SETTINGS_MAX_FRAME_SIZE => self.peer_max_frame = value as usize,
                        SETTINGS_INITIAL_WINDOW_SIZE => {
                            let delta = i64::from(value) - self.peer_initial_window;
                            self.peer_initial_window = i64::from(value);
                            for w in self.stream_send_windows.values_mut() {
                                *w += delta;
                            }
                        }
                        _ => {}
                    }
                }
                frame_bytes(&mut reply, kind::SETTINGS, flags::ACK, 0, &[]);
            }
            kind::PING if f.flags & flags::ACK == 0 => {
                frame_bytes(&mut reply, kind::PING, flags::ACK, 0, &f.payload);
            }
            kind::GOAWAY if f.payload.len() >= 8 => {
                let last = be_u32(&f.payload[..4]) & 0x7fff_ffff;
                let code = be_u32(&f.payload[4..8]);
                self.goaway = Some((last, Reason::from(code)));
            }
            kind::WINDOW_UPDATE if f.payload.len() >= 4 => {
                let inc = i64::from(be_u32(&f.payload[..4]) & 0x7fff_ffff);
                if f.stream_id == 0 {
                    self.conn_send_window += inc;
                } else {
                    *self.stream_window_mut(f.stream_id) += inc;
                }
            }
            _ => {}
        }
        if !reply.is_empty() {
            let _ = self.tcp.write_all(&reply).await;
        }
    }

    /// Decodes a complete header block (always, to keep the HPACK state in step) and files
    /// it under its stream.
    fn finish_block(&mut self, p: Partial) {
        let fields = match self.decoder.decode(&p.block) {
            Ok(fields) => fields,
            Err(e) => {
                self.closed = Some(format!(
                    "HPACK error in the server's header block on stream {}: {e}",
                    p.stream_id
                ));
                return;
            }
        };
        if !p.response {
            return;
        }
        let s = self.streams.entry(p.stream_id).or_default();
        let status = fields
            .iter()
            .find(|(n, _)| n == b":status")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u16>().ok());
        let regular = fields.into_iter().filter(|(n, _)| !n.starts_with(b":"));
        match status {
            Some(code) if (100..200).contains(&code) => s.informational.push(code),
            Some(code) => {
                s.status = Some(code);
                s.headers = regular.collect();
            }
            None if s.status.is_some() => s.trailers.extend(regular),
            None => s.headers.extend(regular),
        }
        if p.end_stream {
            s.end_stream = true;
        }
    }

    /// How many DATA bytes may be sent on `stream_id` now.
    fn send_window(&mut self, stream_id: u32) -> i64 {
        let conn = self.conn_send_window;
        conn.min(*self.stream_window_mut(stream_id))
    }

    fn stream_window_mut(&mut self, stream_id: u32) -> &mut i64 {
        let initial = self.peer_initial_window;
        self.stream_send_windows.entry(stream_id).or_insert(initial)
    }

    /// Reads frames until `stream_id` may send again (or fails after 10 s / on close).
    async fn wait_for_credit(&mut self, stream_id: u32) -> std::io::Result<()> {
        let deadline = Instant::now() + WAIT;
        while self.send_window(stream_id) <= 0 {
            if self.stream_done(stream_id) {
                return Err(std::io::Error::other(format!(
                    "stream {stream_id} ended while waiting for flow-control credit"
                )));
            }
            match self.read_frame(deadline).await {
                Read::Frame(f) => self.process(&f).await,
                Read::TimedOut => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no flow-control credit for stream {stream_id} within {WAIT:?}"),
                    ))
                }
                Read::Closed => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        self.closed.clone().unwrap_or_default(),
                    ))
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RawH2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawH2")
            .field("peer", &self.tcp.peer_addr().ok())
            .field("goaway", &self.goaway)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// A big-endian u32 from exactly four bytes.
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The payload without its padding (when PADDED is set); `None` if the padding is bogus.
fn unpad(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & self::flags::PADDED == 0 {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|end| &rest[..end])
}

#[cfg(test)]
mod tests;
