//! Owns Corridor's lean forwarding path (D1, issue 16 step 3): the common
//! case, an HTTP/1.x or HTTP/2 request without an upgrade, `CONNECT` or
//! `Expect`, to any cluster (HTTP/1.1 here, HTTP/2 in `h2`), forwarded by
//! Corridor's own `HttpServerApp` on Pingora's sessions, listeners and
//! connection pool, without the machinery of Pingora's proxy loop (a boxed
//! future per phase, two task channels per try, its cache and module hooks).
//! The other requests go to Pingora's `HttpProxy`.
//!
//! Both run the same phases (`Corridor::admit`, `route`, `peer`,
//! `edit_request`, `upstream_response`, `edit_response`, `fail`, `log`), so
//! routing, balancing, residency, retries and identity checks stay in their
//! modules. This module moves the bytes and applies the protections Pingora's
//! proxy applies on the same path: the upstream request's hop-by-hop and
//! connection-nominated fields, `Host` and authority, body framing (through
//! `pingora_proxy::upstream_request`), a close-delimited response turned
//! chunked, a `101` to a request that did not ask to upgrade refused, the
//! request body buffered for a retry, client disconnects seen while the
//! response streams, and backpressure (one read is written before the next).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use http::{header, Method, Version};
use pingora_core::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream,
};
use pingora_core::protocols::http::authority::{raw_target_authority, validate_request_authority};
use pingora_core::protocols::http::client::HttpSession as ClientSession;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamH1;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::{HttpTask, ServerSession};
use pingora_core::server::ShutdownWatch;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::upstream_request::{
    finalize_h1_upstream_request_framing, reconcile_upstream_authority,
    sanitize_h1_upstream_request, set_h1_host_from_authority,
};
use pingora_proxy::{HttpProxy, ProxyHttp};

use super::{Corridor, RequestCtx};

mod h2;

/// Most tries per request, the bound Pingora's proxy has too (`max_retries`);
/// the route's retry policy stops long before it.
const MAX_TRIES: usize = 16;

/// A listener's HTTP application: the lean path for the common case, Pingora's
/// proxy for upgrades, `CONNECT` and `Expect`.
pub(crate) struct Lean {
    proxy: Arc<HttpProxy<Corridor>>,
    corridor: Corridor,
}

/// What one try left behind: whether the client's connection can carry another
/// request, and the try's error.
type Tried = (bool, Option<Box<Error>>);

impl Lean {
    /// Serves with `corridor`'s phases, handing what the lean path does not
    /// forward to `proxy` (built with the same listener's `Corridor`).
    pub(crate) fn new(proxy: HttpProxy<Corridor>, corridor: Corridor) -> Self {
        Self {
            proxy: Arc::new(proxy),
            corridor,
        }
    }

    /// One request whose head was read.
    async fn serve(
        &self,
        mut s: Box<ServerSession>,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let mut ctx = self.corridor.new_ctx();
        let metrics = &self.corridor.shared.metrics;
        if !lean_request(&s) {
            metrics.proxy_path.inc();
            return self.hand_over(s, ctx, shutdown).await;
        }
        if *shutdown.borrow() {
            // The listener drains: this is the connection's last request.
            s.set_keepalive(None);
        }
        if let Err(e) = self.corridor.admit(&mut s, &mut ctx) {
            metrics.lean_path.inc();
            return self.fail(s, ctx, e).await;
        }
        match self.corridor.route(&mut s, &mut ctx).await {
            Ok(true) => {
                metrics.lean_path.inc();
                return self.finish(s, ctx, true, None).await;
            }
            Ok(false) => {}
            Err(e) => {
                metrics.lean_path.inc();
                return self.fail(s, ctx, e).await;
            }
        }
        metrics.lean_path.inc();
        let mut reuse = false;
        let mut error = None;
        for _ in 0..MAX_TRIES {
            let (r, e) = self.try_once(&mut s, &mut ctx).await;
            reuse = r;
            let retry = e.as_ref().is_some_and(|e| e.retry());
            error = e;
            if !retry {
                break;
            }
        }
        if let Some(e) = &error {
            self.corridor.fail(&mut s, e, &mut ctx).await;
            reuse = false;
        }
        self.finish(s, ctx, reuse, error).await
    }

    /// Hands the request to Pingora's proxy. Its future (about 10 KiB) is boxed
    /// on this path only: inline, every request's future would be that large,
    /// and copied into its box.
    async fn hand_over(
        &self,
        s: Box<ServerSession>,
        ctx: RequestCtx,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        Box::pin(self.proxy.process_read_request(s, ctx, shutdown)).await
    }

    /// Answers a failure before forwarding and ends the connection.
    async fn fail(
        &self,
        mut s: Box<ServerSession>,
        mut ctx: RequestCtx,
        e: Box<Error>,
    ) -> Option<ReusedHttpStream> {
        self.corridor.fail(&mut s, &e, &mut ctx).await;
        self.finish(s, ctx, false, Some(e)).await
    }

    /// Logs the request and hands the connection back for the next one when
    /// `reuse` and the session allow it.
    async fn finish(
        &self,
        mut s: Box<ServerSession>,
        mut ctx: RequestCtx,
        reuse: bool,
        error: Option<Box<Error>>,
    ) -> Option<ReusedHttpStream> {
        self.corridor.log(&s, error.as_deref(), &mut ctx);
        if let Some(e) = error {
            s.on_proxy_failure(e);
        }
        if !reuse {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&s);
        let stream = s.finish().await.ok().flatten()?;
        Some(ReusedHttpStream::from_reusable_stream(stream, settings))
    }

    /// One try: an endpoint, a connection, the exchange.
    async fn try_once(&self, s: &mut ServerSession, ctx: &mut RequestCtx) -> Tried {
        let peer = match self.corridor.peer(ctx).await {
            Ok(p) => p,
            Err(e) => return (false, Some(e)),
        };
        let connector = self.proxy.client_connector();
        let (session, reused) = match connector.get_http_session(&*peer).await {
            Ok(c) => c,
            Err(mut e) => {
                e.as_up();
                return (
                    false,
                    Some(self.corridor.connect_failed(s, ctx, e).into_up()),
                );
            }
        };
        match session {
            ClientSession::H1(mut up) => {
                let (server_reuse, client_reuse, error) =
                    self.exchange(s, &mut up, reused, &peer, ctx).await;
                if client_reuse {
                    connector
                        .release_http_session(ClientSession::H1(up), &*peer, peer.idle_timeout())
                        .await;
                }
                let error = error.map(|e| self.corridor.proxy_failed(s, e, ctx, reused));
                (server_reuse, error)
            }
            ClientSession::H2(mut up) => {
                let (server_reuse, mut error) =
                    self.exchange_h2(s, &mut up, reused, &peer, ctx).await;
                connector
                    .release_http_session(ClientSession::H2(up), &*peer, peer.idle_timeout())
                    .await;
                if let Some(e) = error.as_mut() {
                    // The upstream says it cannot speak HTTP/2 (or speaks it badly): later
                    // requests use HTTP/1.1 where the peer allows it (as Pingora's proxy).
                    if matches!(e.etype, ErrorType::H2Downgrade | ErrorType::InvalidH2) {
                        if peer
                            .get_alpn()
                            .is_none_or(|alpn| alpn.get_min_http_version() == 1)
                        {
                            connector.prefer_h1(&*peer);
                        } else {
                            e.retry = false.into();
                        }
                    }
                }
                let error = error.map(|e| self.corridor.proxy_failed(s, e, ctx, reused));
                (server_reuse, error)
            }
            ClientSession::Custom(_) => {
                let e = Error::explain(
                    ErrorType::InternalError,
                    "no custom upstream protocol is configured",
                );
                (false, Some(self.corridor.proxy_failed(s, e, ctx, reused)))
            }
        }
    }

    /// Sends the request on `up` and relays the response: (client connection
    /// reusable, upstream connection reusable, error).
    async fn exchange(
        &self,
        s: &mut ServerSession,
        up: &mut UpstreamH1,
        reused: bool,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
    ) -> (bool, bool, Option<Box<Error>>) {
        if let Err(e) = self.corridor.check_upstream(reused, Some(up.digest()), ctx) {
            return (false, false, Some(e));
        }
        up.read_timeout = peer.options.read_timeout;
        up.body_read_timeout = peer.options.body_read_timeout;
        up.write_timeout = peer.options.write_timeout;
        let req = match self.upstream_request(s, peer, ctx) {
            Ok(r) => r,
            Err(e) => return (false, true, Some(e)),
        };
        if let Err(e) = up.write_request_header(req).await {
            return (false, false, Some(e.into_up()));
        }
        s.enable_retry_buffering();
        self.duplex(s, up, ctx).await
    }

    /// This try's copy of the request, prepared as Pingora's proxy prepares
    /// it for an HTTP/1.1 upstream, with the route's edits.
    fn upstream_request(
        &self,
        s: &mut ServerSession,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
    ) -> Result<Box<RequestHeader>> {
        let mut req = Box::new(s.req_header().clone());
        let had_host = req.headers.contains_key(header::HOST);
        let version = req.version;
        req.set_version(Version::HTTP_11);
        // An HTTP/2 request's authority becomes the HTTP/1.1 Host.
        if version == Version::HTTP_2 {
            set_h1_host_from_authority(&mut req).map_err(|e| e.into_down())?;
        }
        let http11 = version == Version::HTTP_11;
        sanitize_h1_upstream_request(&mut req, peer.options.http_upstream_request_policy, http11)
            .map_err(|e| e.into_down())?;
        self.corridor.edit_request(&mut req, ctx)?;
        reconcile_upstream_authority(&mut req).map_err(|e| e.into_in())?;
        // An edit may have removed Host: restore it where the request had one or
        // its target names an authority (not for a Host-less HTTP/1.0 request).
        let target_authority = raw_target_authority(req.raw_path()).authority().is_some();
        if had_host || req.uri.authority().is_some() || target_authority {
            set_h1_host_from_authority(&mut req).map_err(|e| e.into_in())?;
        }
        validate_request_authority(&req).map_err(|e| e.into_in())?;
        finalize_h1_upstream_request_framing(&mut req, !s.is_body_empty())?;
        Ok(req)
    }

    /// Streams the request body up and the response down at once, until both
    /// are done: (client reusable, upstream reusable, error).
    async fn duplex(
        &self,
        s: &mut ServerSession,
        up: &mut UpstreamH1,
        ctx: &mut RequestCtx,
    ) -> (bool, bool, Option<Box<Error>>) {
        let mut sent = Upload {
            done: false,
            reading: true,
            error: None,
        };
        // What a previous try read of the body is sent first (or an empty body's end).
        let buffer = s.get_retry_buffer();
        if buffer.is_some() || s.is_body_empty() {
            let done = s.is_body_done();
            match self.body_up(s, up, buffer, done, ctx).await {
                Ok(r) => sent.record(r, s.is_body_done()),
                Err(e) => return (false, false, Some(e)),
            }
        }
        let mut response_done = false;
        // The response header is due within the read timeout of the request also
        // while the body streams up: each piece cancels a read, and its timer, so
        // one timer covers them all. A request with no body left to send needs none.
        let mut header_by = match (sent.done, up.read_timeout) {
            (false, Some(t)) => Some(Instant::now() + t),
            _ => None,
        };
        while !sent.done || !response_done {
            tokio::select! {
                task = up.read_response_task(), if !response_done => {
                    let task = match task {
                        Ok(t) => t,
                        Err(e) => return (false, false, Some(sent.error.unwrap_or(e).into_up())),
                    };
                    if matches!(&task, HttpTask::Header(h, _) if !h.status.is_informational()) {
                        header_by = None;
                    }
                    match self.respond(s, up, task, ctx).await {
                        Ok(done) => response_done = done,
                        Err(e) => return (false, false, Some(e)),
                    }
                }
                () = until(header_by) => return (false, false, Some(header_timeout())),
                // The request body; once it is done, the client hanging up
                // (while the response streams) ends the exchange.
                body = s.read_body_or_idle(sent.done), if sent.reading => {
                    let body = match body {
                        Ok(b) => b,
                        Err(e) => return (false, false, Some(e.into_down())),
                    };
                    if sent.done {
                        continue;
                    }
                    let done = s.is_body_done() || body.is_none();
                    match self.body_up(s, up, body, done, ctx).await {
                        Ok(r) => sent.record(r, s.is_body_done()),
                        Err(e) => return (false, false, Some(e)),
                    }
                }
            }
        }
        let server_reuse = match s.finish_body().await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("finishing the response body: {e}");
                false
            }
        };
        (server_reuse, sent.error.is_none(), None)
    }

    /// Checks a piece of the request body and writes it up: `Err` when the
    /// request must stop (the body limit), `Ok(Err)` when the write failed,
    /// `Ok(Ok(done))` otherwise.
    async fn body_up(
        &self,
        s: &ServerSession,
        up: &mut UpstreamH1,
        data: Option<Bytes>,
        done: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Result<bool>> {
        self.corridor.check_request_body(s, ctx)?;
        if let Some(d) = data.as_ref().filter(|d| !d.is_empty()) {
            if let Err(e) = up.write_body(d).await {
                return Ok(Err(e.into_up()));
            }
        }
        if !done {
            return Ok(Ok(false));
        }
        Ok(up
            .finish_body()
            .await
            .map(|_| true)
            .map_err(|e| e.into_up()))
    }

    /// Writes one response task down (with a header, whatever of the body is
    /// already read, in one write); `Ok(true)` when the response is done.
    async fn respond(
        &self,
        s: &mut ServerSession,
        up: &mut UpstreamH1,
        task: HttpTask,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        match task {
            HttpTask::Header(mut h, end) => {
                if h.status.as_u16() == 101 {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "the upstream switched protocols for a request that did not ask to",
                    )
                    .into_up());
                }
                self.corridor.upstream_response(s, &h, ctx)?;
                let informational = h.status.is_informational();
                if !informational {
                    // A close-delimited body is sent chunked, so the client's
                    // connection stays usable (as Pingora's proxy does).
                    let no_body = s.req_header().method == Method::HEAD
                        || matches!(h.status.as_u16(), 204 | 304);
                    if !no_body
                        && !end
                        && !h.headers.contains_key(header::TRANSFER_ENCODING)
                        && !h.headers.contains_key(header::CONTENT_LENGTH)
                    {
                        h.set_version(Version::HTTP_11);
                        h.insert_header(header::TRANSFER_ENCODING, "chunked")?;
                    }
                    self.corridor.edit_response(&mut h, ctx)?;
                }
                let mut tasks = Vec::with_capacity(2);
                tasks.push(HttpTask::Header(h, end));
                // The body bytes read with the header leave in the same write.
                // A read that fails still lets the header out first (then the
                // batch's write returns the error), as from Pingora's proxy.
                if !end && !informational {
                    if let Some(next) = up.read_response_task().now_or_never() {
                        tasks.push(next.unwrap_or_else(|e| HttpTask::Failed(e.into_up())));
                    }
                }
                s.response_duplex_vec(tasks).await
            }
            HttpTask::Body(data, end) => {
                s.write_response_body(data.unwrap_or_default(), end)
                    .await
                    .map_err(|e| e.into_down())?;
                Ok(end)
            }
            // Trailers reach HTTP/2 clients (HTTP/1.1 ones get none, as from
            // Pingora's proxy); either ends the response.
            t @ (HttpTask::Trailer(_) | HttpTask::Done) => {
                s.response_duplex_vec(vec![t]).await?;
                Ok(true)
            }
            HttpTask::UpgradedBody(..) => Err(Error::explain(
                ErrorType::InternalError,
                "an upgraded body on a connection that did not upgrade",
            )),
            HttpTask::Failed(e) => Err(e),
        }
    }
}

/// The request body's side of an HTTP/1.1 exchange.
struct Upload {
    /// Nothing more is sent up.
    done: bool,
    /// The client is still read (its body, or for a hang-up once it is done).
    reading: bool,
    /// The write that failed; the upstream connection is then not reused.
    error: Option<Box<Error>>,
}

impl Upload {
    /// Records a write's outcome (`Ok(done)`, or the failed write), given
    /// whether the client's body has been read to its end.
    fn record(&mut self, r: Result<bool>, body_done: bool) {
        match r {
            Ok(done) => self.done = done,
            Err(e) => {
                // The upstream stopped reading the request: its response may still
                // come (a 413, an early answer), but the connection cannot be
                // reused. The client is still watched for a hang-up once its body
                // is done (an idle read before that would take body bytes).
                self.done = true;
                self.reading = body_done;
                self.error = Some(e);
            }
        }
    }
}

/// Resolves at `at`, never without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The upstream's response header did not come within the read timeout.
fn header_timeout() -> Box<Error> {
    Error::explain(
        ErrorType::ReadTimedout,
        "no response header from the upstream within the read timeout",
    )
    .into_up()
}

/// Whether the lean path can forward this request once routed: an HTTP/1.x or
/// HTTP/2 client, no upgrade, no `CONNECT` and no `Expect` (Pingora's proxy
/// handles those).
fn lean_request(s: &ServerSession) -> bool {
    let req = s.req_header();
    (s.as_http1().is_some() || s.is_http2())
        && req.method != Method::CONNECT
        && !s.is_upgrade_req()
        && !req.headers.contains_key(header::EXPECT)
}

#[async_trait]
impl HttpServerApp for Lean {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let s = self.proxy.read_request_head(Box::new(session)).await?;
        self.serve(s, shutdown).await
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await;
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.proxy.server_options.as_ref()
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.proxy.h2_options.clone()
    }
}
