//! `sse_load`: the SSE upstream and the SSE client of the streaming benchmark,
//! in one process. Run it through `benches/sse.sh` (see benches/README.md,
//! "SSE benchmark").
//!
//! ```text
//! sse_load --listen 127.0.0.1:27080
//! curl 'http://127.0.0.1:27080/__run?addr=127.0.0.1:27081&streams=1000&events=40&interval_ms=50&ramp_ms=1000&watch=1234,1235&raw=/tmp/out/corridor'
//! ```
//!
//! One thread (a tokio current-thread runtime) is both the upstream and the
//! client: on one core, two processes would switch to and fro for every
//! event. HTTP/1.1 over plain TCP, written by hand: no allocation per event
//! on either side.
//!
//! **Upstream**: `GET /sse?events=E&interval_ms=I` answers `200`,
//! `Content-Type: text/event-stream`, `Transfer-Encoding: chunked`, the head in
//! one write, then E events, each one chunk in its own write (`TCP_NODELAY`),
//! the first at once and event k at k·I ms after the head (an absolute
//! schedule: a late event does not delay the next ones; tokio's timer has
//! millisecond resolution and rounds up), then the last chunk; the connection
//! stays open for the next request (keep-alive). Each event is
//! `--event-bytes` (100) bytes, like an LLM token chunk:
//! `data: {"seq":00000000,"t_us":<send time, µs since the epoch>,"token":"abc…"}\n\n`.
//! Any other request except `/__run` is answered `200 "hello\n"`. On SIGTERM or
//! SIGINT it prints its counters and exits.
//!
//! **Client**: `GET /__run?addr=A&streams=S&events=E&interval_ms=I&ramp_ms=R
//! [&watch=PID,PID…][&sample_ms=100][&grace_s=120][&raw=PREFIX][&load_cpu=N]
//! [&proxy_cpu=N]` opens S
//! connections to A, connection i at i·R/S ms after the start, each sending
//! one `GET /sse?events=E&interval_ms=I` and reading its events to the end
//! (chunked decoding, an event ends at its blank line); then it answers `200`
//! with `key=value` lines (`400` and the reason on a bad query). Per read it
//! takes one clock reading; per event it records the gap since the stream's
//! previous event and the delivery delay (arrival − the send time in the
//! event) in fixed histograms, and counts the event for its stream. It samples
//! the summed RSS of the `watch` processes (the proxy's process tree) every
//! `sample_ms`, reads their CPU time (schedstat, ns) and its own at the start
//! and the end, snapshots every stream's event count at the nominal halfway
//! point, ramp + E·I over two, and waits for the streams until `grace_s` after
//! the nominal end. Rates and CPU shares are also given over the window in
//! which every stream is due to be open (the end of the ramp to E·I ms).
//! `load_cpu` and `proxy_cpu` name the CPUs the two sides are pinned to: how
//! busy each was with other processes is reported too. With `raw` it also
//! writes `PREFIX.series.tsv` (per sample: ms, events, streams open, RSS KiB,
//! the watched processes' and its own CPU ns), `PREFIX.streams.tsv` (per
//! stream) and `PREFIX.gaps.tsv` (the gap histogram). One run at a time.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use corridor_benches::xds_scale::probe::{clock_ticks, proc_sample, ProcSample};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "SSE upstream and client of the streaming benchmark (run benches/sse.sh)")]
struct Opts {
    /// Address to listen on (streams, `/__run`, `hello`).
    #[arg(long)]
    listen: SocketAddr,
    /// Bytes per event, from `data: ` to the closing blank line.
    #[arg(long, default_value_t = 100)]
    event_bytes: usize,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sse_load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match rt.block_on(local.run_until(server::run(opts))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sse_load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Microseconds since the Unix epoch: the send time in each event, read back
/// by the client (which may be another process).
fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Whole microseconds of a duration, saturating.
fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The event layout both sides agree on: `data: {"seq":` then 8 digits, then
/// `,"t_us":` then 16 digits, then `,"token":"`, padding, `"}\n\n`.
mod event {
    /// Bytes before the sequence number.
    pub const SEQ_AT: usize = 13;
    /// Digits of the sequence number.
    pub const SEQ_LEN: usize = 8;
    /// Offset of the send time.
    pub const T_AT: usize = SEQ_AT + SEQ_LEN + 8;
    /// Digits of the send time.
    pub const T_LEN: usize = 16;
    /// The shortest event (one byte of token).
    pub const MIN_LEN: usize = T_AT + T_LEN + 10 + 1 + 4;

    /// An event of `len` bytes with seq and time zero.
    pub fn template(len: usize) -> Vec<u8> {
        let mut e = Vec::with_capacity(len);
        e.extend_from_slice(b"data: {\"seq\":");
        e.extend_from_slice(&[b'0'; SEQ_LEN]);
        e.extend_from_slice(b",\"t_us\":");
        e.extend_from_slice(&[b'0'; T_LEN]);
        e.extend_from_slice(b",\"token\":\"");
        let pad = len.saturating_sub(e.len() + 4);
        e.extend((0..pad).map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26]));
        e.extend_from_slice(b"\"}\n\n");
        e
    }

    /// Writes `v` as zero-padded decimal digits filling `dst`.
    pub fn put_digits(dst: &mut [u8], mut v: u64) {
        for d in dst.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }

    /// Parses the decimal digits of `src`; None if one is not a digit.
    pub fn digits(src: &[u8]) -> Option<u64> {
        src.iter().try_fold(0u64, |acc, &b| {
            b.is_ascii_digit()
                .then(|| acc.wrapping_mul(10) + u64::from(b - b'0'))
        })
    }
}

// ==================================================================== server

mod server {
    use super::*;

    /// Counters printed at exit.
    #[derive(Default)]
    struct Counters {
        connections: Cell<u64>,
        streams: Cell<u64>,
        streams_done: Cell<u64>,
        events: Cell<u64>,
        other: Cell<u64>,
    }

    fn bump(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }

    const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    const HELLO: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";
    const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

    /// What a request asks for.
    enum Ask {
        Sse { events: u32, interval: Duration },
        Run(Result<client::RunOpts, String>),
        Hello,
    }

    /// `%XX` and `+` decoding of a query value.
    fn unescape(v: &str) -> String {
        let b = v.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(x) => {
                            out.push(x);
                            i += 3;
                            continue;
                        }
                        None => out.push(b'%'),
                    }
                }
                b'+' => out.push(b' '),
                x => out.push(x),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Parses a request head: what it asks for, and `Connection: close`.
    fn parse_head(head: &[u8]) -> Option<(Ask, bool)> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let target = lines.next()?.split(' ').nth(1)?;
        let close = lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
            })
        });
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let params = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, unescape(v)));
        let ask = match path {
            "/sse" => {
                let (mut events, mut interval_ms) = (10u32, 100u64);
                for (k, v) in params {
                    match k {
                        "events" => events = v.parse().ok()?,
                        "interval_ms" => interval_ms = v.parse().ok()?,
                        _ => {}
                    }
                }
                Ask::Sse {
                    events,
                    interval: Duration::from_millis(interval_ms.max(1)),
                }
            }
            "/__run" => Ask::Run(client::RunOpts::parse(params)),
            _ => Ask::Hello,
        };
        Some((ask, close))
    }

    /// Streams one response: head, `events` chunks, the last chunk.
    async fn stream(
        sock: &mut TcpStream,
        chunk: &mut [u8],
        events: u32,
        interval: Duration,
        c: &Counters,
    ) -> std::io::Result<()> {
        // Where the digits sit in the chunk (after its size line).
        let at = chunk.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        let (seq_at, t_at) = (at + event::SEQ_AT, at + event::T_AT);
        bump(&c.streams);
        sock.write_all(STREAM_HEAD).await?;
        // Event k is due k intervals after the head; the first goes out at
        // once (an interval's first tick would wait for the timer wheel's
        // next millisecond).
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for seq in 0..events {
            if seq > 0 {
                tick.tick().await;
            }
            event::put_digits(&mut chunk[seq_at..seq_at + event::SEQ_LEN], u64::from(seq));
            event::put_digits(&mut chunk[t_at..t_at + event::T_LEN], epoch_us());
            sock.write_all(chunk).await?;
            bump(&c.events);
        }
        sock.write_all(LAST_CHUNK).await?;
        bump(&c.streams_done);
        Ok(())
    }

    /// Serves one connection: requests one after the other (keep-alive).
    async fn serve(mut sock: TcpStream, template: Rc<[u8]>, c: Rc<Counters>) {
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut chunk = template.to_vec();
        loop {
            // The head of the next request.
            let end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if buf.len() > 16 * 1024 {
                    return;
                }
                let mut tmp = [0u8; 2048];
                match sock.read(&mut tmp).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            };
            let Some((ask, close)) = parse_head(&buf[..end]) else {
                let _ = sock
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            };
            buf.drain(..end);
            let ok = match ask {
                Ask::Sse { events, interval } => {
                    stream(&mut sock, &mut chunk, events, interval, &c)
                        .await
                        .is_ok()
                }
                Ask::Hello => {
                    bump(&c.other);
                    sock.write_all(HELLO).await.is_ok()
                }
                Ask::Run(opts) => {
                    let (status, body) = match opts {
                        Ok(o) => match client::run(o).await {
                            Ok(report) => ("200 OK", report),
                            Err(e) => ("500 Internal Server Error", format!("error={e}\n")),
                        },
                        Err(e) => ("400 Bad Request", format!("error={e}\n")),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    sock.write_all(resp.as_bytes()).await.is_ok()
                }
            };
            if !ok || close {
                return;
            }
        }
    }

    pub async fn run(o: Opts) -> Result<(), String> {
        if o.event_bytes < event::MIN_LEN {
            return Err(format!("--event-bytes must be at least {}", event::MIN_LEN));
        }
        let ev = event::template(o.event_bytes);
        let mut chunk = format!("{:x}\r\n", ev.len()).into_bytes();
        chunk.extend_from_slice(&ev);
        chunk.extend_from_slice(b"\r\n");
        let template: Rc<[u8]> = chunk.into();
        let listener = TcpListener::bind(o.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", o.listen))?;
        let c = Rc::new(Counters::default());
        println!(
            "sse_load: listening on {}, {}-byte events",
            o.listen, o.event_bytes
        );
        let accept = {
            let c = c.clone();
            async move {
                loop {
                    match listener.accept().await {
                        Ok((sock, _)) => {
                            let _ = sock.set_nodelay(true);
                            bump(&c.connections);
                            tokio::task::spawn_local(serve(sock, template.clone(), c.clone()));
                        }
                        Err(e) => {
                            // EMFILE and the like: say so, give it a moment, go on.
                            eprintln!("sse_load: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = accept => {}
            r = corridor_benches::shutdown_signal() => r.map_err(|e| format!("cannot install signal handlers: {e}"))?,
        }
        println!(
            "connections={} streams={} streams_done={} events={} other_requests={}",
            c.connections.get(),
            c.streams.get(),
            c.streams_done.get(),
            c.events.get(),
            c.other.get()
        );
        Ok(())
    }
}

// ==================================================================== histogram

/// A log-linear histogram of u64 values (µs): exact below 64, then 64
/// buckets per power of two (< 1.6 % error). Fixed size, no allocation when
/// recording.
struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

impl Hist {
    const SUB_BITS: u32 = 6;
    const SUB: u64 = 1 << Self::SUB_BITS;

    fn new() -> Self {
        Hist {
            counts: vec![0; (65 - Self::SUB_BITS as usize) * Self::SUB as usize],
            n: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < Self::SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = e - Self::SUB_BITS;
        let sub = (v >> shift) & (Self::SUB - 1);
        ((shift + 1) as usize) * Self::SUB as usize + sub as usize
    }

    /// The smallest and largest value of bucket `i`.
    fn bounds(i: usize) -> (u64, u64) {
        let sub = Self::SUB as usize;
        if i < sub {
            return (i as u64, i as u64);
        }
        let shift = (i / sub - 1) as u32;
        let lo = (Self::SUB + (i % sub) as u64) << shift;
        (lo, lo + (1u64 << shift) - 1)
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.n += 1;
        self.max = self.max.max(v);
    }

    /// Nearest-rank percentile (the middle of its bucket, at most the max).
    fn percentile(&self, p: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = Self::bounds(i);
                return Some((lo + (hi - lo) / 2).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile_sorted(v: &[u64], p: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

// ==================================================================== client

mod client {
    use super::*;

    /// What happened to one stream.
    #[derive(Clone, Copy, Default)]
    struct StreamStat {
        /// Connect started, µs after the run's start.
        start_us: u64,
        /// First event, µs after connect start (u64::MAX: none).
        ttfe_us: u64,
        events: u32,
        max_gap_us: u64,
        /// Events whose sequence number was not the one expected.
        out_of_order: u32,
        /// Events at the halfway snapshot.
        events_half: u32,
        done: bool,
        failed: bool,
    }

    /// State shared by the stream tasks (one thread: a RefCell).
    struct Shared {
        /// The read buffer every connection reads into (within one poll).
        buf: Vec<u8>,
        streams: Vec<StreamStat>,
        gaps: Hist,
        delay: Hist,
        events: u64,
        /// When the latest event arrived.
        last_event: Option<Instant>,
        open: u32,
        malformed: u64,
        first_error: Option<String>,
    }

    impl Shared {
        fn fail(&mut self, i: usize, what: String) {
            self.streams[i].failed = true;
            if self.first_error.is_none() {
                self.first_error = Some(format!("stream {i}: {what}"));
            }
        }
    }

    /// Chunked-decoding state of one response body.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Chunk {
        Size { val: u64, digits: u8, ext: bool },
        SizeLf { val: u64 },
        Data(u64),
        DataCr,
        DataLf,
        TrailerLine { empty: bool },
        TrailerLf { empty: bool },
        Done,
    }

    /// Per-connection parse state (no allocation once the head is read).
    struct Conn {
        /// The response head until it is complete.
        head: Vec<u8>,
        head_done: bool,
        chunk: Chunk,
        /// Previous byte of the event stream was `\n`.
        nl: bool,
        /// The first bytes of the current event (for seq and send time).
        cur: [u8; event::T_AT + event::T_LEN],
        cur_len: usize,
        next_seq: u64,
        /// Arrival of the previous event.
        last: Option<Instant>,
    }

    impl Conn {
        fn new() -> Self {
            Conn {
                head: Vec::with_capacity(256),
                head_done: false,
                chunk: Chunk::Size {
                    val: 0,
                    digits: 0,
                    ext: false,
                },
                nl: false,
                cur: [0; event::T_AT + event::T_LEN],
                cur_len: 0,
                next_seq: 0,
                last: None,
            }
        }
    }

    /// Checks a complete response head: 200 and chunked.
    fn check_head(head: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(head);
        let status = text.split(' ').nth(1).unwrap_or("");
        if status != "200" {
            return Err(format!(
                "status {status:?}: {}",
                text.lines().next().unwrap_or("")
            ));
        }
        let chunked = text.split("\r\n").any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
            })
        });
        if !chunked {
            return Err(format!(
                "the response is not chunked: {:?}",
                text.replace("\r\n", " | ")
            ));
        }
        Ok(())
    }

    /// What one read did to the stream.
    enum Step {
        More,
        Done,
        Failed(String),
    }

    /// Everything an event updates, borrowed from `Shared` for one read.
    struct Sink<'a> {
        st: &'a mut StreamStat,
        gaps: &'a mut Hist,
        delay: &'a mut Hist,
        events: &'a mut u64,
        malformed: &'a mut u64,
        now: Instant,
        now_us: u64,
        started: Instant,
    }

    impl Sink<'_> {
        fn event(&mut self, c: &mut Conn) {
            let st = &mut *self.st;
            st.events += 1;
            *self.events += 1;
            match c.last {
                None => st.ttfe_us = us(self.now - self.started),
                Some(prev) => {
                    let g = us(self.now - prev);
                    self.gaps.record(g);
                    st.max_gap_us = st.max_gap_us.max(g);
                }
            }
            c.last = Some(self.now);
            let cur = &c.cur[..c.cur_len];
            let seq = cur
                .get(event::SEQ_AT..event::SEQ_AT + event::SEQ_LEN)
                .and_then(event::digits);
            let sent = cur
                .get(event::T_AT..event::T_AT + event::T_LEN)
                .and_then(event::digits);
            match (cur.starts_with(b"data: {\"seq\":"), seq, sent) {
                (true, Some(seq), Some(sent)) => {
                    if seq != c.next_seq {
                        st.out_of_order += 1;
                    }
                    c.next_seq = seq + 1;
                    self.delay.record(self.now_us.saturating_sub(sent));
                }
                _ => *self.malformed += 1,
            }
            c.cur_len = 0;
        }

        /// Body bytes (chunk data): events end at a blank line.
        fn data(&mut self, c: &mut Conn, mut d: &[u8]) {
            while !d.is_empty() {
                let nl_at = d.iter().position(|&b| b == b'\n');
                let line = &d[..nl_at.map_or(d.len(), |i| i + 1)];
                // Keep the event's first bytes for its seq and send time.
                let room = c.cur.len() - c.cur_len;
                if room > 0 {
                    let n = room.min(line.len());
                    c.cur[c.cur_len..c.cur_len + n].copy_from_slice(&line[..n]);
                    c.cur_len += n;
                }
                let Some(i) = nl_at else {
                    c.nl = false;
                    return;
                };
                let end_of_event = i == 0 && c.nl;
                d = &d[i + 1..];
                if end_of_event {
                    c.nl = false;
                    self.event(c);
                } else {
                    c.nl = true;
                }
            }
        }
    }

    /// Feeds the bytes of one read through the head and chunk parsers.
    fn feed(c: &mut Conn, sink: &mut Sink<'_>, mut d: &[u8]) -> Step {
        if !c.head_done {
            let from = c.head.len().saturating_sub(3);
            c.head.extend_from_slice(d);
            let Some(i) = c.head[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
                if c.head.len() > 16 * 1024 {
                    return Step::Failed("response head over 16 KiB".into());
                }
                return Step::More;
            };
            let end = from + i + 4;
            if let Err(e) = check_head(&c.head[..end]) {
                return Step::Failed(e);
            }
            let consumed = d.len() - (c.head.len() - end);
            d = &d[consumed..];
            c.head_done = true;
            c.head = Vec::new();
        }
        while !d.is_empty() {
            match c.chunk {
                Chunk::Size { val, digits, ext } => {
                    let b = d[0];
                    d = &d[1..];
                    c.chunk = match b {
                        b'\r' if digits > 0 => Chunk::SizeLf { val },
                        _ if ext => Chunk::Size { val, digits, ext },
                        b';' if digits > 0 => Chunk::Size {
                            val,
                            digits,
                            ext: true,
                        },
                        b' ' | b'\t' => Chunk::Size { val, digits, ext },
                        _ => match (b as char).to_digit(16) {
                            Some(h) if digits < 15 => Chunk::Size {
                                val: val * 16 + u64::from(h),
                                digits: digits + 1,
                                ext,
                            },
                            _ => return Step::Failed(format!("bad chunk size byte {b:#04x}")),
                        },
                    };
                }
                Chunk::SizeLf { val } => {
                    if d[0] != b'\n' {
                        return Step::Failed("chunk size line without LF".into());
                    }
                    d = &d[1..];
                    c.chunk = if val == 0 {
                        Chunk::TrailerLine { empty: true }
                    } else {
                        Chunk::Data(val)
                    };
                }
                Chunk::Data(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(d.len());
                    sink.data(c, &d[..take]);
                    d = &d[take..];
                    let left = n - take as u64;
                    c.chunk = if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    };
                }
                Chunk::DataCr => {
                    if d[0] != b'\r' {
                        return Step::Failed("chunk data not followed by CRLF".into());
                    }
                    d = &d[1..];
                    c.chunk = Chunk::DataLf;
                }
                Chunk::DataLf => {
                    if d[0] != b'\n' {
                        return Step::Failed("chunk data not followed by CRLF".into());
                    }
                    d = &d[1..];
                    c.chunk = Chunk::Size {
                        val: 0,
                        digits: 0,
                        ext: false,
                    };
                }
                Chunk::TrailerLine { empty } => {
                    let b = d[0];
                    d = &d[1..];
                    c.chunk = if b == b'\r' {
                        Chunk::TrailerLf { empty }
                    } else {
                        Chunk::TrailerLine { empty: false }
                    };
                }
                Chunk::TrailerLf { empty } => {
                    if d[0] != b'\n' {
                        return Step::Failed("trailer line without LF".into());
                    }
                    d = &d[1..];
                    c.chunk = if empty {
                        Chunk::Done
                    } else {
                        Chunk::TrailerLine { empty: true }
                    };
                }
                Chunk::Done => return Step::Failed("bytes after the last chunk".into()),
            }
        }
        if c.chunk == Chunk::Done {
            Step::Done
        } else {
            Step::More
        }
    }

    /// One stream: connect at `at`, send the request, read to the end.
    async fn stream(
        i: usize,
        addr: SocketAddr,
        at: Instant,
        t0: Instant,
        req: Rc<[u8]>,
        sh: Rc<RefCell<Shared>>,
    ) {
        tokio::time::sleep_until(at.into()).await;
        let started = Instant::now();
        sh.borrow_mut().streams[i].start_us = us(started - t0);
        let mut sock = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => return sh.borrow_mut().fail(i, format!("connect: {e}")),
        };
        let _ = sock.set_nodelay(true);
        if let Err(e) = sock.write_all(&req).await {
            return sh.borrow_mut().fail(i, format!("write: {e}"));
        }
        sh.borrow_mut().open += 1;
        let mut c = Conn::new();
        // poll_read, not readable() + try_read: tokio marks the socket drained
        // after a short read, so each wake-up costs one read(2), not two.
        let res = poll_fn(|cx| loop {
            let mut g = sh.borrow_mut();
            let Shared {
                buf,
                streams,
                gaps,
                delay,
                events,
                malformed,
                ..
            } = &mut *g;
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut sock).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Step::Failed(format!("read: {e}"))),
                Poll::Ready(Ok(())) => {}
            }
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Step::Failed(format!(
                    "connection closed after {} events{}",
                    streams[i].events,
                    if c.head_done {
                        ""
                    } else {
                        " (no response head)"
                    }
                )));
            }
            let mut sink = Sink {
                st: &mut streams[i],
                gaps,
                delay,
                events,
                malformed,
                now: Instant::now(),
                now_us: epoch_us(),
                started,
            };
            let before = *sink.events;
            let step = feed(&mut c, &mut sink, &buf[..n]);
            if *sink.events != before {
                g.last_event = Some(sink.now);
            }
            if !matches!(step, Step::More) {
                return Poll::Ready(step);
            }
        })
        .await;
        let mut g = sh.borrow_mut();
        g.open -= 1;
        match res {
            Step::Done => g.streams[i].done = true,
            Step::Failed(e) => g.fail(i, e),
            Step::More => {}
        }
    }

    /// One RSS sample.
    struct Sample {
        ms: u64,
        events: u64,
        open: u32,
        rss_kib: u64,
        /// CPU time so far of the watched processes and of this one, ns.
        proxy_cpu_ns: u64,
        load_cpu_ns: u64,
    }

    /// CPU time so far of every thread of the processes, ns (schedstat).
    fn cpu_ns<'a>(pids: impl IntoIterator<Item = &'a str>) -> u64 {
        let mut total = 0;
        for pid in pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let ns = std::fs::read_to_string(t.path().join("schedstat"))
                    .ok()
                    .and_then(|x| {
                        x.split_whitespace()
                            .next()
                            .and_then(|n| n.parse::<u64>().ok())
                    });
                total += ns.unwrap_or(0);
            }
        }
        total
    }

    /// Summed VmRSS of the pids (KiB); cheap enough to read every 100 ms.
    fn rss_kib<P: std::fmt::Display>(pids: &[P]) -> u64 {
        let mut total = 0;
        for p in pids {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/status")) {
                if let Some(l) = s.lines().find(|l| l.starts_with("VmRSS:")) {
                    total += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        total
    }

    /// CPU and memory of a set of processes.
    fn samples(pids: &[u32], ticks: f64) -> Vec<ProcSample> {
        pids.iter()
            .map(|p| proc_sample(&p.to_string(), ticks))
            .collect()
    }

    /// CPU seconds used by each process since `before`, summed.
    fn cpu_since(after: &[ProcSample], before: &[ProcSample]) -> f64 {
        after.iter().zip(before).map(|(a, b)| a.cpu_since(b)).sum()
    }

    /// Busy and total clock ticks of each CPU so far (`/proc/stat`).
    fn cpu_ticks() -> Vec<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        stat.lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .map(|l| {
                let f: Vec<u64> = l
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                let g = |i: usize| f.get(i).copied().unwrap_or(0);
                // user nice system idle iowait irq softirq steal
                let busy = g(0) + g(1) + g(2) + g(5) + g(6) + g(7);
                (busy, busy + g(3) + g(4))
            })
            .collect()
    }

    /// Share of `cpu`'s time between two `cpu_ticks` that went to anything
    /// but `ours` CPU-seconds (the processes meant to run there), in %.
    fn other_pct(
        before: &[(u64, u64)],
        after: &[(u64, u64)],
        cpu: usize,
        ours: f64,
        ticks: f64,
    ) -> Option<f64> {
        let (b0, t0) = before.get(cpu)?;
        let (b1, t1) = after.get(cpu)?;
        let total = t1.checked_sub(*t0).filter(|&t| t > 0)? as f64;
        let other = (b1.saturating_sub(*b0)) as f64 - ours * ticks;
        Some((100.0 * other / total).max(0.0))
    }

    /// Jain's fairness index of the values (1 = all equal).
    fn jain(x: &[f64]) -> Option<f64> {
        let s: f64 = x.iter().sum();
        let s2: f64 = x.iter().map(|v| v * v).sum();
        (s2 > 0.0).then(|| s * s / (x.len() as f64 * s2))
    }

    /// What `/__run` asks for.
    pub struct RunOpts {
        /// Where to connect (the proxy, or the upstream itself for `direct`).
        addr: SocketAddr,
        /// Concurrent streams, one connection each.
        streams: u32,
        /// Events per stream.
        events: u32,
        /// The upstream's spacing of the events, ms.
        interval_ms: u64,
        /// The connections are opened evenly over this many ms.
        ramp_ms: u64,
        /// Processes whose RSS is sampled and whose CPU is measured.
        watch: Vec<u32>,
        /// RSS sampling period, ms.
        sample_ms: u64,
        /// Seconds the streams get after the nominal end of the run
        /// (ramp + events × interval) before the unfinished ones count as failed.
        grace_s: u64,
        /// Prefix of the raw output files.
        raw: Option<PathBuf>,
        /// The CPUs this process and the watched ones are pinned to: how
        /// busy each was with other processes during the run is reported.
        load_cpu: Option<usize>,
        proxy_cpu: Option<usize>,
    }

    impl RunOpts {
        /// From the query's `key=value` pairs.
        pub fn parse<'a>(params: impl Iterator<Item = (&'a str, String)>) -> Result<Self, String> {
            let mut o = RunOpts {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                streams: 0,
                events: 0,
                interval_ms: 0,
                ramp_ms: 1000,
                watch: Vec::new(),
                sample_ms: 100,
                grace_s: 120,
                raw: None,
                load_cpu: None,
                proxy_cpu: None,
            };
            fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
                v.parse().map_err(|_| format!("{k}: '{v}' is not a number"))
            }
            for (k, v) in params {
                match k {
                    "addr" => {
                        o.addr = v
                            .parse()
                            .map_err(|_| format!("addr: '{v}' is not host:port"))?
                    }
                    "streams" => o.streams = num(k, &v)?,
                    "events" => o.events = num(k, &v)?,
                    "interval_ms" => o.interval_ms = num(k, &v)?,
                    "ramp_ms" => o.ramp_ms = num(k, &v)?,
                    "watch" => {
                        o.watch = v
                            .split(',')
                            .filter(|p| !p.is_empty())
                            .map(|p| num(k, p))
                            .collect::<Result<_, _>>()?;
                    }
                    "sample_ms" => o.sample_ms = num::<u64>(k, &v)?.max(1),
                    "grace_s" => o.grace_s = num(k, &v)?,
                    // Empty: not given.
                    "raw" | "load_cpu" | "proxy_cpu" if v.is_empty() => {}
                    "raw" => o.raw = Some(PathBuf::from(v)),
                    "load_cpu" => o.load_cpu = Some(num(k, &v)?),
                    "proxy_cpu" => o.proxy_cpu = Some(num(k, &v)?),
                    _ => return Err(format!("unknown parameter '{k}'")),
                }
            }
            if o.addr.port() == 0 || o.streams == 0 || o.events == 0 || o.interval_ms == 0 {
                return Err("addr, streams, events and interval_ms are required (streams, events, interval_ms at least 1)".into());
            }
            Ok(o)
        }
    }

    pub async fn run(o: RunOpts) -> Result<String, String> {
        let n = o.streams as usize;
        let ticks = clock_ticks();
        let req: Rc<[u8]> = format!(
            "GET /sse?events={}&interval_ms={} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nUser-Agent: sse_load\r\n\r\n",
            o.events, o.interval_ms, o.addr
        )
        .into_bytes()
        .into();
        let sh = Rc::new(RefCell::new(Shared {
            buf: vec![0; 64 * 1024],
            streams: vec![
                StreamStat {
                    ttfe_us: u64::MAX,
                    ..StreamStat::default()
                };
                n
            ],
            gaps: Hist::new(),
            delay: Hist::new(),
            events: 0,
            last_event: None,
            open: 0,
            malformed: 0,
            first_error: None,
        }));
        let nominal = Duration::from_millis(o.ramp_ms + u64::from(o.events) * o.interval_ms);
        let half = nominal / 2;

        // Idle figures, then the start.
        let idle_rss = rss_kib(&o.watch);
        let proxy0 = samples(&o.watch, ticks);
        let load0 = proc_sample("self", ticks);
        let cpus0 = cpu_ticks();
        let t0 = Instant::now() + Duration::from_millis(5);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let at = t0 + Duration::from_millis(o.ramp_ms) * i as u32 / o.streams;
            handles.push(tokio::task::spawn_local(stream(
                i,
                o.addr,
                at,
                t0,
                req.clone(),
                sh.clone(),
            )));
        }

        // The sampler: RSS, events and open streams every sample_ms.
        let series: Rc<RefCell<Vec<Sample>>> = Rc::new(RefCell::new(Vec::with_capacity(
            usize::try_from(
                (nominal.as_millis() as u64 + o.grace_s * 1000) / o.sample_ms.max(1) + 2,
            )
            .unwrap_or(1024),
        )));
        let sampler = {
            let (sh, series, pids) = (sh.clone(), series.clone(), o.watch.clone());
            let period = Duration::from_millis(o.sample_ms.max(1));
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval_at(t0.into(), period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                loop {
                    tick.tick().await;
                    let ms = us(t0.elapsed()) / 1000;
                    let rss = rss_kib(&pids);
                    let proxy_cpu_ns = cpu_ns(pids.iter().map(String::as_str));
                    let load_cpu_ns = cpu_ns(["self"]);
                    let g = sh.borrow();
                    series.borrow_mut().push(Sample {
                        ms,
                        events: g.events,
                        open: g.open,
                        rss_kib: rss,
                        proxy_cpu_ns,
                        load_cpu_ns,
                    });
                }
            })
        };
        // Every stream's events at the halfway point, and when that was.
        let half_at = Rc::new(std::cell::Cell::new(None::<u64>));
        let halfway = {
            let (sh, half_at) = (sh.clone(), half_at.clone());
            tokio::task::spawn_local(async move {
                tokio::time::sleep_until((t0 + half).into()).await;
                half_at.set(Some(us(t0.elapsed())));
                for s in sh.borrow_mut().streams.iter_mut() {
                    s.events_half = s.events;
                }
            })
        };

        let deadline = t0 + nominal + Duration::from_secs(o.grace_s);
        let all = async {
            for h in handles.iter_mut() {
                let _ = h.await;
            }
        };
        let timed_out = tokio::time::timeout_at(deadline.into(), all).await.is_err();
        let end = Instant::now();
        let proxy1 = samples(&o.watch, ticks);
        let load1 = proc_sample("self", ticks);
        let cpus1 = cpu_ticks();
        let end_rss = rss_kib(&o.watch);
        sampler.abort();
        halfway.abort();
        for h in &handles {
            h.abort();
        }

        let g = sh.borrow();
        let series = series.borrow();
        let wall = (end - t0).as_secs_f64();
        let mut out = String::new();
        let mut kv = |k: &str, v: String| {
            let _ = writeln!(out, "{k}={v}");
        };
        let expected = u64::from(o.streams) * u64::from(o.events);
        kv("streams", o.streams.to_string());
        kv("events_per_stream", o.events.to_string());
        kv("interval_ms", o.interval_ms.to_string());
        kv("ramp_ms", o.ramp_ms.to_string());
        kv("events_expected", expected.to_string());
        kv("events", g.events.to_string());
        kv("lost", expected.saturating_sub(g.events).to_string());
        let incomplete = g.streams.iter().filter(|s| !s.done && !s.failed).count();
        kv(
            "streams_done",
            g.streams.iter().filter(|s| s.done).count().to_string(),
        );
        kv(
            "streams_failed",
            g.streams.iter().filter(|s| s.failed).count().to_string(),
        );
        kv("streams_timed_out", incomplete.to_string());
        kv("timed_out", u8::from(timed_out).to_string());
        kv(
            "out_of_order",
            g.streams
                .iter()
                .map(|s| u64::from(s.out_of_order))
                .sum::<u64>()
                .to_string(),
        );
        kv("malformed", g.malformed.to_string());
        if let Some(e) = &g.first_error {
            kv("first_error", e.replace(['\n', '\r'], " "));
        }
        kv("wall_ms", format!("{:.0}", wall * 1000.0));
        kv("nominal_ms", nominal.as_millis().to_string());
        if let Some(t) = g.last_event {
            kv(
                "last_event_ms",
                (us(t.saturating_duration_since(t0)) / 1000).to_string(),
            );
        }
        let mut ttfe: Vec<u64> = g
            .streams
            .iter()
            .map(|s| s.ttfe_us)
            .filter(|&t| t != u64::MAX)
            .collect();
        ttfe.sort_unstable();
        for (name, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
            if let Some(v) = percentile_sorted(&ttfe, p) {
                kv(&format!("ttfe_{name}_us"), v.to_string());
            }
            if let Some(v) = g.gaps.percentile(p) {
                kv(
                    &format!("gap_{name}_us"),
                    if p == 100.0 { g.gaps.max } else { v }.to_string(),
                );
            }
            if let Some(v) = g.delay.percentile(p) {
                kv(
                    &format!("delay_{name}_us"),
                    if p == 100.0 { g.delay.max } else { v }.to_string(),
                );
            }
        }
        if let Some(v) = g.gaps.percentile(99.9) {
            kv("gap_p999_us", v.to_string());
        }
        kv("gaps", g.gaps.n.to_string());
        let mut maxgap: Vec<u64> = g.streams.iter().map(|s| s.max_gap_us).collect();
        maxgap.sort_unstable();
        if let Some(v) = percentile_sorted(&maxgap, 50.0) {
            kv("stream_max_gap_p50_us", v.to_string());
        }
        if let Some(v) = percentile_sorted(&maxgap, 99.0) {
            kv("stream_max_gap_p99_us", v.to_string());
        }
        // Fairness at the halfway point: each stream's events over what the
        // upstream's schedule had due by then since its connect was due.
        if let Some(half_us) = half_at.get() {
            let ratios: Vec<f64> = (0..n)
                .map(|i| {
                    (
                        o.ramp_ms * 1000 * i as u64 / u64::from(o.streams),
                        &g.streams[i],
                    )
                })
                .filter(|&(start, _)| start < half_us)
                .map(|(start, s)| {
                    let due =
                        ((half_us - start) / (o.interval_ms * 1000) + 1).min(u64::from(o.events));
                    f64::from(s.events_half) / due as f64
                })
                .collect();
            if let Some(j) = jain(&ratios) {
                kv("jain_half", format!("{j:.4}"));
                kv("half_ms", (half_us / 1000).to_string());
                kv(
                    "delivered_half_pct",
                    format!(
                        "{:.1}",
                        100.0 * ratios.iter().sum::<f64>() / ratios.len() as f64
                    ),
                );
            }
        }
        // Delivery rate while every stream is due to be open: from the end of
        // the ramp to the nominal end of the first stream; else over the run.
        let (w0, w1) = (o.ramp_ms, u64::from(o.events) * o.interval_ms);
        let at = |ms: u64| series.iter().find(|s| s.ms >= ms);
        match (at(w0), at(w1)) {
            (Some(a), Some(b)) if w1 >= w0 + 500 && b.ms > a.ms => {
                let ms = (b.ms - a.ms) as f64;
                kv("rate_window_ms", format!("{}-{}", a.ms, b.ms));
                kv(
                    "events_per_s",
                    format!("{:.0}", (b.events - a.events) as f64 * 1000.0 / ms),
                );
                // CPU shares in the same window: is the proxy (or sse_load)
                // the bottleneck while every stream is open?
                let pct =
                    |x: u64, y: u64| format!("{:.1}", (y.saturating_sub(x)) as f64 / ms / 1e4);
                if !o.watch.is_empty() {
                    kv("proxy_cpu_window_pct", pct(a.proxy_cpu_ns, b.proxy_cpu_ns));
                }
                kv("load_cpu_window_pct", pct(a.load_cpu_ns, b.load_cpu_ns));
            }
            _ => {
                kv("rate_window_ms", format!("0-{:.0}", wall * 1000.0));
                kv("events_per_s", format!("{:.0}", g.events as f64 / wall));
            }
        }
        kv(
            "offered_events_per_s",
            format!(
                "{:.0}",
                f64::from(o.streams) * 1000.0 / o.interval_ms as f64
            ),
        );
        let proxy_cpu_s = cpu_since(&proxy1, &proxy0);
        let load_cpu_s = load1.cpu_since(&load0);
        for (name, cpu, ours) in [
            ("load", o.load_cpu, load_cpu_s),
            ("proxy", o.proxy_cpu, proxy_cpu_s),
        ] {
            if let Some(v) = cpu.and_then(|c| other_pct(&cpus0, &cpus1, c, ours, ticks)) {
                kv(&format!("other_{name}_cpu_pct"), format!("{v:.1}"));
            }
        }
        if !o.watch.is_empty() {
            let peak = series
                .iter()
                .map(|s| s.rss_kib)
                .chain([end_rss])
                .max()
                .unwrap_or(0);
            let cpu = proxy_cpu_s;
            kv("rss_idle_kib", idle_rss.to_string());
            kv("rss_peak_kib", peak.to_string());
            kv("rss_end_kib", end_rss.to_string());
            kv(
                "hwm_start_kib",
                proxy0.iter().map(|s| s.hwm_kib).sum::<u64>().to_string(),
            );
            kv(
                "hwm_end_kib",
                proxy1.iter().map(|s| s.hwm_kib).sum::<u64>().to_string(),
            );
            kv("proxy_cpu_ms", format!("{:.1}", cpu * 1000.0));
            kv("proxy_cpu_pct", format!("{:.1}", 100.0 * cpu / wall));
        }
        kv("load_cpu_pct", format!("{:.1}", 100.0 * load_cpu_s / wall));
        if let Some(prefix) = &o.raw {
            let write = |ext: &str, body: String| {
                let mut p = prefix.clone().into_os_string();
                p.push(ext);
                std::fs::write(&p, body)
                    .map_err(|e| format!("cannot write {}: {e}", PathBuf::from(p).display()))
            };
            let mut s = String::from("ms\tevents\topen\trss_kib\tproxy_cpu_ns\tload_cpu_ns\n");
            for x in series.iter() {
                let _ = writeln!(
                    s,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    x.ms, x.events, x.open, x.rss_kib, x.proxy_cpu_ns, x.load_cpu_ns
                );
            }
            write(".series.tsv", s)?;
            let mut s = String::from("stream\tstart_us\tttfe_us\tevents\tevents_half\tmax_gap_us\tout_of_order\tdone\tfailed\n");
            for (i, x) in g.streams.iter().enumerate() {
                let ttfe = if x.ttfe_us == u64::MAX {
                    "-".to_owned()
                } else {
                    x.ttfe_us.to_string()
                };
                let _ = writeln!(
                    s,
                    "{i}\t{}\t{ttfe}\t{}\t{}\t{}\t{}\t{}\t{}",
                    x.start_us,
                    x.events,
                    x.events_half,
                    x.max_gap_us,
                    x.out_of_order,
                    u8::from(x.done),
                    u8::from(x.failed)
                );
            }
            write(".streams.tsv", s)?;
            let mut s = String::from("gap_lo_us\tgap_hi_us\tcount\n");
            for (i, &c) in g.gaps.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
                let (lo, hi) = Hist::bounds(i);
                let _ = writeln!(s, "{lo}\t{hi}\t{c}");
            }
            write(".gaps.tsv", s)?;
        }
        Ok(out)
    }
}
