//! Owns the lean path's exchange with an HTTP/2 upstream (h2c or TLS with
//! ALPN): the request converted as Pingora's proxy converts it
//! (`pingora_proxy::upstream_request`), its body sent as DATA frames, and the
//! response header, body and trailers relayed to an HTTP/1.x or HTTP/2 client.
//! It keeps the protections of Pingora's HTTP/2 upstream path: the request's
//! connection-specific fields removed, `:authority` from `Host`, END_STREAM on
//! the HEADERS of a bodiless request, a `content-length` on an ended HEADERS
//! frame refused, RST_STREAM CANCEL when the client leaves or the upstream
//! times out (and a timed-out connection retired), a client's reset seen while
//! a write waits for flow control, and trailers forwarded to HTTP/2 clients.

use bytes::Bytes;
use futures::FutureExt;
use h2::SendStream;
use http::{header, Method, StatusCode, Version};
use pingora_core::protocols::http::authority::{raw_target_authority, validate_request_authority};
use pingora_core::protocols::http::v2::client::Http2Session;
use pingora_core::protocols::http::v2::write_body;
use pingora_core::protocols::http::{HttpTask, ServerSession};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::upstream_request::{
    h2_path_and_query, reconcile_upstream_authority, sanitize_h2_upstream_request,
    update_h2_scheme_authority,
};
use std::time::{Duration, Instant};

use super::{header_timeout, until, Lean, RequestCtx};

/// What the response side reads next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Header,
    Body,
    Trailers,
    Done,
}

/// One read from the upstream stream.
enum Read {
    Header,
    Body(Option<Bytes>),
    Trailers(Option<http::HeaderMap>),
}

impl Lean {
    /// Sends the request on the HTTP/2 stream of `up` and relays the response:
    /// (client connection reusable, error).
    pub(super) async fn exchange_h2(
        &self,
        s: &mut ServerSession,
        up: &mut Http2Session,
        reused: bool,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
    ) -> (bool, Option<Box<Error>>) {
        if let Err(e) = self.corridor.check_upstream(reused, up.digest(), ctx) {
            return (false, Some(e));
        }
        let (req, body_empty, end_on_headers) = match self.upstream_request_h2(s, peer, ctx) {
            Ok(r) => r,
            Err(e) => return (false, Some(e)),
        };
        if let Err(e) = up.write_request_header(req, end_on_headers && body_empty) {
            return (false, Some(e.into_up()));
        }
        if !end_on_headers && body_empty {
            // END_STREAM on an empty DATA frame.
            if let Err(e) = up.write_request_body(Bytes::new(), true).await {
                return (false, Some(e.into_up()));
            }
        }
        up.read_timeout = peer.options.read_timeout;
        up.body_read_timeout = peer.options.body_read_timeout;
        let Some(mut body) = up.take_request_body_writer() else {
            let e = Error::explain(ErrorType::InternalError, "no request body writer");
            return (false, Some(e));
        };
        s.enable_retry_buffering();
        // The response header must come within the read timeout of the request,
        // however the request body's pieces interleave with the reads.
        let header_by = peer.options.read_timeout.map(|t| Instant::now() + t);
        let limits = Limits {
            write_timeout: peer.options.write_timeout,
            header_by,
        };
        match self.duplex_h2(s, up, &mut body, limits, ctx).await {
            Ok(reuse) => (reuse, None),
            Err(e) => {
                let read_timeout = e.esource == ErrorSource::Upstream
                    && matches!(e.etype, ErrorType::ReadTimedout);
                if read_timeout || e.esource == ErrorSource::Downstream {
                    // The upstream stops working on a stream nobody reads any more.
                    body.send_reset(h2::Reason::CANCEL);
                    if read_timeout {
                        // A connection that stopped answering takes no new streams.
                        up.conn.mark_shutdown();
                    }
                }
                (false, Some(e))
            }
        }
    }

    /// This try's request for an HTTP/2 upstream (as Pingora's proxy converts
    /// it), whether the client's body is empty, and whether END_STREAM may go on
    /// the HEADERS frame.
    fn upstream_request_h2(
        &self,
        s: &mut ServerSession,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
    ) -> Result<(Box<RequestHeader>, bool, bool)> {
        let mut req = s.req_header().clone();
        if !req.raw_path_is_utf8() {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "non-UTF-8 request target cannot be forwarded over HTTP/2",
            )
            .into_down());
        }
        if req.version != Version::HTTP_2 {
            sanitize_h2_upstream_request(&mut req, peer.options.http_upstream_request_policy)
                .map_err(|e| e.into_down())?;
            for name in [
                header::TRANSFER_ENCODING,
                header::CONNECTION,
                header::UPGRADE,
            ] {
                req.remove_header(&name);
            }
            req.remove_header("keep-alive");
            req.remove_header("proxy-connection");
        }
        req.set_version(Version::HTTP_2);
        self.corridor.edit_request(&mut req, ctx)?;
        reconcile_upstream_authority(&mut req).map_err(|e| e.into_in())?;
        validate_request_authority(&req).map_err(|e| e.into_in())?;
        // A Host-less absolute-form HTTP/1 request takes `:authority` from its target.
        let raw_authority = if req.headers.contains_key(header::HOST) {
            None
        } else {
            raw_target_authority(req.raw_path())
                .authority()
                .map(<[u8]>::to_owned)
        };
        if !req.headers.contains_key(header::HOST)
            && req.uri.authority().is_none()
            && raw_authority.is_none()
        {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "no authority for H2 upstream request",
            )
            .into_in());
        }
        let path_and_query = h2_path_and_query(&req).map_err(|e| e.into_in())?;
        // `Host` becomes `:authority` and is not sent itself.
        let host = req.remove_header(&header::HOST);
        let body_empty = s.is_body_empty();
        let end_on_headers = req.send_end_stream().unwrap_or(false);
        let authority = host
            .as_ref()
            .map(|h| h.as_bytes())
            .or(raw_authority.as_deref());
        if let Some(authority) = authority {
            update_h2_scheme_authority(&mut req, authority, peer.is_tls(), path_and_query)?;
        }
        let parts: http::request::Parts = req.into();
        Ok((
            Box::new(RequestHeader::from(parts)),
            body_empty,
            end_on_headers,
        ))
    }

    /// Streams the request body up and the response down at once, until both
    /// are done; `Ok(true)` when the client's connection can be reused.
    async fn duplex_h2(
        &self,
        s: &mut ServerSession,
        up: &mut Http2Session,
        body: &mut SendStream<Bytes>,
        mut limits: Limits,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let mut request_done = s.is_body_done();
        // What a previous try read of the body is sent first.
        if let Some(buffer) = s.get_retry_buffer() {
            self.body_up_h2(s, Some(buffer), request_done, body, limits, ctx)
                .await?;
        }
        let mut reading = true;
        let mut next = Next::Header;
        while !request_done || next != Next::Done {
            if next != Next::Header {
                limits.header_by = None;
            }
            // Only reads are raced (each is cancel-safe); writes happen after.
            tokio::select! {
                read = read_next(up, next), if next != Next::Done => {
                    next = self.respond_h2(s, up, read.map_err(|e| e.into_up())?, ctx).await?;
                }
                () = until(limits.header_by) => return Err(header_timeout()),
                // The request body; once it is done, the client leaving (or
                // resetting its stream) ends the exchange.
                piece = s.read_body_or_idle(request_done), if reading => {
                    let piece = piece.map_err(|e| e.into_down())?;
                    if request_done {
                        continue;
                    }
                    let done = s.is_body_done() || piece.is_none();
                    match self.body_up_h2(s, piece, done, body, limits, ctx).await {
                        Ok(d) => request_done = d,
                        Err(e) if e.esource == ErrorSource::Downstream => return Err(e),
                        Err(e) => {
                            // The upstream stopped taking the request (an early answer,
                            // RST_STREAM NO_ERROR): its response is still relayed, the
                            // client is no longer read and its connection not kept
                            // (as Pingora's proxy).
                            tracing::debug!("request body to the HTTP/2 upstream: {e}");
                            request_done = true;
                            reading = false;
                        }
                    }
                }
            }
        }
        if !reading {
            return Ok(false);
        }
        Ok(match s.finish_body().await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("finishing the response body: {e}");
                false
            }
        })
    }

    /// Checks a piece of the request body and sends it up as DATA (a `None`
    /// piece ends the stream); `Ok(done)`.
    async fn body_up_h2(
        &self,
        s: &mut ServerSession,
        data: Option<Bytes>,
        done: bool,
        body: &mut SendStream<Bytes>,
        limits: Limits,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        self.corridor.check_request_body(s, ctx)?;
        if !done && data.as_ref().is_some_and(|d| d.is_empty()) {
            return Ok(false);
        }
        let (data, end) = match data {
            Some(d) => (d, done),
            None => (Bytes::new(), true),
        };
        // An HTTP/2 client's reset is noticed while the write waits for the
        // upstream's flow control, which would otherwise hold it; so is the
        // response header's timeout.
        let closed = s.watch_h2_stream_close();
        tokio::select! {
            biased;
            r = write_body(body, data, end, limits.write_timeout) => r.map_err(|e| e.into_up())?,
            reason = async {
                match closed {
                    Some(c) => c.await,
                    None => std::future::pending().await,
                }
            } => {
                let e = match reason {
                    Ok(reason) => Error::explain(
                        ErrorType::H2Error,
                        format!("downstream H2 stream closed (reason: {reason}) while writing body to upstream"),
                    ),
                    Err(e) => e,
                };
                return Err(e.into_down());
            }
            () = until(limits.header_by) => return Err(header_timeout()),
        }
        Ok(done)
    }

    /// Writes what one upstream read gave down; returns what to read next.
    async fn respond_h2(
        &self,
        s: &mut ServerSession,
        up: &mut Http2Session,
        read: Read,
        ctx: &mut RequestCtx,
    ) -> Result<Next> {
        match read {
            Read::Header => {
                let mut h = Box::new(
                    up.response_header()
                        .ok_or_else(|| {
                            Error::explain(ErrorType::InternalError, "no response header read")
                        })?
                        .clone(),
                );
                let mut tasks = Vec::with_capacity(2);
                let mut next = Next::Body;
                let end = match up.check_response_end_or_error() {
                    Ok(end) => end,
                    Err(e) => {
                        // The header still goes out, then the stream's error.
                        self.filter_header_h2(s, &mut h, ctx)?;
                        tasks.push(HttpTask::Header(h, false));
                        tasks.push(HttpTask::Failed(e.into_up()));
                        s.response_duplex_vec(tasks).await?;
                        return Ok(Next::Done);
                    }
                };
                // RFC 9113 §8.1.1: only 204, 304 and answers to HEAD end on HEADERS
                // with a non-zero content-length (the h2 crate does not check this).
                let head = up
                    .request_header()
                    .is_some_and(|r| r.method == Method::HEAD);
                if end
                    && !head
                    && h.status != StatusCode::NO_CONTENT
                    && h.status != StatusCode::NOT_MODIFIED
                    && h.headers
                        .get(header::CONTENT_LENGTH)
                        .is_some_and(|cl| cl.as_bytes().iter().any(|b| *b != b'0'))
                {
                    return Err(Error::explain(
                        ErrorType::H2Error,
                        "non-zero content-length on EOS headers frame",
                    )
                    .into_up());
                }
                self.filter_header_h2(s, &mut h, ctx)?;
                tasks.push(HttpTask::Header(h, end));
                // `response_duplex_vec` says when the client's response is complete
                // by its own framing (content-length written, HEAD, 204, 304), which
                // may come before the upstream's END_STREAM.
                if end {
                    next = Next::Done;
                } else if let Some(first) = up.read_response_body().now_or_never() {
                    // Body bytes already received leave with the header, in one write.
                    match first {
                        Ok(Some(data)) => match up.check_response_end_or_error() {
                            Ok(end) => {
                                if end {
                                    next = Next::Done;
                                }
                                if !data.is_empty() || end {
                                    tasks.push(HttpTask::Body(Some(data), end));
                                }
                            }
                            Err(e) => tasks.push(HttpTask::Failed(e.into_up())),
                        },
                        Ok(None) => next = Next::Trailers,
                        Err(e) => tasks.push(HttpTask::Failed(e.into_up())),
                    }
                }
                if s.response_duplex_vec(tasks).await? {
                    next = Next::Done;
                }
                Ok(next)
            }
            Read::Body(Some(data)) => {
                let end = up.check_response_end_or_error().map_err(|e| e.into_up())?;
                if data.is_empty() && !end {
                    // Nothing to write: an empty piece would end an HTTP/1.1 chunked body.
                    return Ok(Next::Body);
                }
                let done = s
                    .response_duplex_vec(vec![HttpTask::Body(Some(data), end)])
                    .await?;
                Ok(if done { Next::Done } else { Next::Body })
            }
            Read::Body(None) => Ok(Next::Trailers),
            Read::Trailers(trailers) => {
                let task = match trailers {
                    Some(t) => HttpTask::Trailer(Some(Box::new(t))),
                    None => HttpTask::Done,
                };
                s.response_duplex_vec(vec![task]).await?;
                Ok(Next::Done)
            }
        }
    }

    /// The response header edits for an HTTP/2 upstream's answer: the status
    /// retry check, the route's edits, and for an HTTP/1.1 client chunked
    /// framing where no `content-length` came (as Pingora's proxy).
    fn filter_header_h2(
        &self,
        s: &ServerSession,
        h: &mut pingora_http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.corridor.upstream_response(s, h, ctx)?;
        if !h.status.is_informational() {
            self.corridor.edit_response(h, ctx)?;
        }
        h.set_version(Version::HTTP_11);
        let no_body =
            s.req_header().method == Method::HEAD || matches!(h.status.as_u16(), 204 | 304);
        if !no_body
            && !h.status.is_informational()
            && !h.headers.contains_key(header::CONTENT_LENGTH)
        {
            h.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        }
        Ok(())
    }
}

/// The timeouts of one HTTP/2 exchange.
#[derive(Clone, Copy)]
struct Limits {
    /// Each DATA write's.
    write_timeout: Option<Duration>,
    /// When the response header is due (`None` once it came, or without a
    /// read timeout).
    header_by: Option<Instant>,
}

/// The next read of the response side; each of its awaits is cancel-safe, so
/// it can lose a race against the request side without losing data.
async fn read_next(up: &mut Http2Session, next: Next) -> Result<Read> {
    match next {
        Next::Header => up.read_response_header().await.map(|()| Read::Header),
        Next::Body => up.read_response_body().await.map(Read::Body),
        Next::Trailers => up.read_trailers().await.map(Read::Trailers),
        Next::Done => Ok(Read::Body(None)),
    }
}
