//! Owns Corridor's Pingora `ProxyHttp` implementation (D1): one phase, one
//! concern. Each phase is short and hands off to `config` (route match, subset
//! selection), `lb` (endpoint pick), `retry` (decisions) and `errors` (what the
//! client sees).
//!
//! Per request: `early_request_filter` admits the request (strict head checks,
//! path normalization, client address, request id; see `edge`);
//! `request_filter` matches the route and answers direct and no-route
//! responses; `upstream_peer` runs once per try and picks an endpoint not tried
//! before; `fail_to_connect` / `error_while_proxy` /
//! `upstream_response_filter` decide retries (Pingora then calls
//! `upstream_peer` again); the response filters edit headers and count bytes;
//! `logging` records metrics and the access log.
//!
//! The phases' bodies are `Corridor`'s own methods, taking the downstream
//! session: Pingora's proxy calls them through `ProxyHttp`, and the lean
//! forwarding path (`lean`, the common case) calls them directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use corridor_config::{check_h1_head, RetryLimit, RouteAction, UpstreamProtocol};
use http::header;
use pingora_core::protocols::http::ServerSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::errors::{self, ErrorInfo, ErrorKind, LocalError};
use crate::lb;
use crate::lb::shared::{Breaker, Wait};
use crate::lb::state::Outcome;
use crate::metrics::RetryReason;
use crate::routing::{ClusterRuntime, ListenerRuntime, Routing};
use crate::shared::Shared;

mod access_log;
mod ctx;
mod edge;
mod lean;
mod retry;
mod route;

pub use ctx::RequestCtx;
pub(crate) use lean::Lean;
use route::{rewrite_path, select_route, write_direct, Headers};

/// The proxy for one listener.
pub struct Corridor {
    shared: Arc<Shared>,
    /// The listener's latest state, kept current by every change while it is
    /// served and used by its connections after a change removed it.
    current: Arc<ArcSwap<ListenerRuntime>>,
}

impl Corridor {
    /// A proxy serving the listener in `current`; each request uses the
    /// listener's settings and route table from the current snapshot.
    pub(crate) fn new(shared: Arc<Shared>, current: Arc<ArcSwap<ListenerRuntime>>) -> Self {
        Self { shared, current }
    }

    /// The listener's state in `routing` (the snapshot a request started with),
    /// or its last state when `routing` no longer has it (it is draining).
    fn listener(&self, routing: &Routing) -> Arc<ListenerRuntime> {
        let last = self.current.load();
        match routing.listeners.get(&last.config.name) {
            Some(l) => Arc::clone(l),
            None => Arc::clone(&last),
        }
    }
}

/// The phases, shared by Pingora's proxy (`ProxyHttp` below) and Corridor's lean
/// forwarding path (`lean`): each takes the downstream session itself.
impl Corridor {
    /// Admits the request before anything else: strict head checks, path
    /// normalization, the trusted client address and the request id. A
    /// rejection is answered in Corridor's format and nothing is forwarded.
    pub(crate) fn admit(&self, session: &mut ServerSession, ctx: &mut RequestCtx) -> Result<()> {
        // Keep-alive is decided when the exchange ends, not when the response head
        // leaves (Envoy's rule): an upstream may answer before it has read the whole
        // request body (an echo, a streaming transform), and the proxy loop reads that
        // body to its end before it finishes. Local answers that leave a body unread
        // close the connection themselves (`request_filter`, `fail_to_proxy`).
        session.set_close_on_response_before_downstream_finish(false);
        if let Err(err) = edge::admit(session, ctx) {
            self.shared.metrics.rejected(err.kind);
            return Err(local(ctx, err));
        }
        Ok(())
    }

    /// Matches the route; answers direct responses and requests no route or
    /// endpoint can serve. Runs once per request.
    pub(crate) async fn route(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let answer = match select_route(session, ctx) {
            Ok(None) => return Ok(false),
            Ok(Some(direct)) => Ok(direct),
            Err(err) => Err(err),
        };
        // The request body is not read, so the connection cannot carry another request.
        if !session.is_body_empty() {
            session.set_keepalive(None);
        }
        match answer {
            Ok(direct) => write_direct(session, ctx, direct).await?,
            Err(err) => {
                answer_locally(session, ctx, err).await;
            }
        }
        Ok(true)
    }

    /// Picks the endpoint for one try. Runs before every try, so a retry
    /// re-picks (never the same endpoint while others are left), after backoff.
    pub(crate) async fn peer(&self, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        // The previous try no longer uses its upstream connection, also not
        // while this one backs off.
        ctx.connection = None;
        let (Some(f), Some(deadline)) = (ctx.forward(), ctx.deadline) else {
            return Err(LocalError::new(
                ErrorKind::Internal,
                "no forwarding route for this request",
            )
            .into_pingora());
        };
        let (timeout, idle, per_try) = (f.timeout, f.idle_timeout, f.retry.per_try_timeout);
        if ctx.attempts > 1 {
            let retry_backoff = f.retry.backoff(ctx.attempts - 1);
            if Instant::now() + retry_backoff >= deadline {
                return Err(timeout_error(ctx, timeout));
            }
            tokio::time::sleep(retry_backoff).await;
        }
        if Instant::now() >= deadline {
            return Err(timeout_error(ctx, timeout));
        }
        let Some(rt) = ctx.cluster.clone() else {
            return Err(LocalError::new(ErrorKind::Internal, "no cluster chosen").into_pingora());
        };
        let cluster = &rt.config;
        let breakers = &cluster.balancing.breakers;
        if ctx.request_guard.is_none() {
            let Some(g) = rt.shared.admit_request(breakers.max_requests) else {
                let why = format!(
                    "cluster `{}` has {} requests in flight, its limit (circuit_breakers.max_requests)",
                    cluster.name, breakers.max_requests
                );
                return Err(overflow(ctx, &rt, Breaker::Requests, why));
            };
            ctx.request_guard = Some(g);
            if let RetryLimit::Budget { percent, .. } = breakers.retries {
                rt.shared.deposit(percent / 100.0);
            }
        }
        let per_connection = match cluster.protocol {
            UpstreamProtocol::Http1 => 1,
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => cluster.max_h2_streams as u32,
        };
        let limit = breakers.max_connections.saturating_mul(per_connection);
        match rt
            .shared
            .connection(limit, breakers.max_pending_requests, deadline)
            .await
        {
            Ok(g) => ctx.connection = Some(g),
            Err(Wait::TimedOut) => return Err(timeout_error(ctx, timeout)),
            Err(Wait::Overflow) => {
                let why = format!(
                    "cluster `{}` has {limit} upstream requests in flight and {} waiting, its limits (circuit_breakers.max_connections, max_pending_requests)",
                    cluster.name, breakers.max_pending_requests
                );
                return Err(overflow(ctx, &rt, Breaker::Pending, why));
            }
        }
        let req = lb::PickRequest {
            candidates: &ctx.candidates,
            tried: &ctx.tried,
            hash: ctx.hash,
            nearest: ctx.nearest,
        };
        let Some(idx) = lb::pick(&rt, &req) else {
            if ctx.residency.as_ref().is_some_and(|d| d.stopped(&rt)) {
                let err = crate::residency::denied(
                    ctx,
                    "every allowed endpoint is ejected or failing health checks".to_string(),
                );
                return Err(local(ctx, err));
            }
            let err = LocalError::new(
                ErrorKind::NoEndpoint,
                format!(
                    "cluster `{}` has no healthy endpoint for this request (all ejected or failing health checks)",
                    cluster.name
                ),
            );
            return Err(local(ctx, err));
        };
        let mut peer = Box::new(rt.peers[idx].clone());
        ctx.tried.insert(idx);
        ctx.endpoint = Some(idx);
        // Replacing the previous try's guard ends its in-flight count.
        ctx.in_flight = Some(rt.states[idx].begin());
        ctx.try_started = Some(Instant::now());
        ctx.upstream_status = 0;
        let now = Instant::now();
        if now >= deadline {
            return Err(timeout_error(ctx, timeout));
        }
        let remaining = deadline - now;
        let mut read = idle.min(remaining);
        if let Some(p) = per_try {
            read = read.min(p);
        }
        // Response headers must arrive within the remaining deadline and the per-try
        // timeout; after them only the idle timeout bounds the gaps in the body.
        let o = &mut peer.options;
        o.read_timeout = Some(read);
        o.body_read_timeout = Some(idle);
        o.write_timeout = Some(idle);
        if let Some(c) = o.connection_timeout {
            o.connection_timeout = Some(c.min(remaining));
            o.total_connection_timeout = Some(c.min(remaining));
        }
        Ok(peer)
    }

    /// Rewrites the path and host and applies the route's request header edits.
    /// Runs on each try's copy of the request.
    pub(crate) fn edit_request(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Result<()> {
        let Some(route) = ctx.route() else {
            return Ok(());
        };
        if let RouteAction::Forward(f) = &route.action {
            if let Some((matched, replacement)) = &f.prefix_rewrite {
                rewrite_path(req, matched, replacement)?;
            }
            if let Some(host) = &f.host_rewrite {
                req.insert_header(header::HOST, host.clone())?;
            }
        }
        for name in &ctx.strip {
            req.remove_header(name);
        }
        route.request_headers.apply(&mut Headers(req))
    }

    /// Enforces the listener's request body limit on bodies without a
    /// Content-Length (those with one were checked before routing).
    pub(crate) fn check_request_body(
        &self,
        session: &ServerSession,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(max) = ctx.http().limits.max_body_bytes else {
            return Ok(());
        };
        // Bytes read from the client so far; a retry replays its buffer through this
        // filter again, which must not count twice.
        if session.body_bytes_read() as u64 > max {
            let err = LocalError::new(
                ErrorKind::PayloadTooLarge,
                format!("the request body is over this listener's limit of {max} bytes"),
            );
            self.shared.metrics.rejected(err.kind);
            let mut e = local(ctx, err);
            e.as_down();
            return Err(e);
        }
        Ok(())
    }

    /// Retries on a configured status before anything reaches the client; the
    /// last allowed try's response passes through as is.
    pub(crate) fn upstream_response(
        &self,
        session: &ServerSession,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        ctx.upstream_status = status;
        if resp.status.is_informational() {
            return Ok(());
        }
        if let (Some(rt), Some(i)) = (&ctx.cluster, ctx.endpoint) {
            if rt.config.balancing.lb.orca {
                if let Some(u) = resp
                    .headers
                    .get("endpoint-load-metrics")
                    .and_then(|v| lb::parse_orca(v.as_bytes()))
                {
                    rt.states[i].set_utilization(u);
                }
            }
        }
        // Every try's answer reaches the endpoint's state, retried or not.
        ctx.record_try(Outcome::Status(status));
        let retry_status = ctx
            .forward()
            .is_some_and(|f| f.retry.retries_status(status));
        if retry_status && retry::may_retry(ctx, session, RetryReason::Status) {
            ctx.stats().retry(RetryReason::Status);
            ctx.status_retry = true;
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                format!("upstream answered {status}; retrying"),
            );
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    /// Applies response header edits; from the final response on nothing is
    /// retried (a 1xx does not count).
    pub(crate) fn edit_response(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        ctx.response_started = true;
        ctx.start_streaming();
        if let Some(id) = &ctx.request_id {
            resp.insert_header(edge::X_REQUEST_ID_STR, id.clone())?;
        }
        if let Some(route) = ctx.route() {
            route.response_headers.apply(&mut Headers(resp))?;
        }
        Ok(())
    }

    /// A connect failed: retry on another endpoint if the route allows.
    pub(crate) fn connect_failed(
        &self,
        session: &ServerSession,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        connect_failure(ctx, session, e)
    }

    /// A try failed after connecting: retry if the failure and route allow and
    /// no response byte reached the client.
    pub(crate) fn proxy_failed(
        &self,
        session: &ServerSession,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.status_retry) && !ctx.response_started {
            e.set_retry(true);
            return e;
        }
        // The upstream presented the wrong identity, or one of a jurisdiction
        // the request may not reach (no request byte was sent): a failure to
        // connect to the right endpoint, retried and counted as one.
        if ctx.local_error.as_ref().is_some_and(|l| {
            matches!(
                l.kind,
                ErrorKind::UpstreamIdentity | ErrorKind::ResidencyAttestation
            )
        }) {
            let e = connect_failure(ctx, session, e);
            if e.retry() {
                ctx.local_error = None;
            }
            return e;
        }
        let reason = retry::failure_reason(&e);
        // Only the upstream's failures are the endpoint's: a client that hangs
        // up or stalls must not count against it.
        if reason.is_some() && *e.esource() == ErrorSource::Upstream {
            let timed_out = matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            );
            ctx.record_try(if timed_out {
                Outcome::Timeout
            } else {
                Outcome::Reset
            });
        }
        let retry = match reason {
            Some(r) if retry::may_retry(ctx, session, r) => {
                ctx.stats().retry(r);
                true
            }
            _ if retry::stale_connection_retry(ctx, session, &e, client_reused) => {
                ctx.stale_retry_used = true;
                // The free try does not count against the route's retries.
                ctx.attempts = ctx.attempts.saturating_sub(1);
                true
            }
            _ => false,
        };
        e.set_retry(retry);
        e
    }

    /// With expected upstream identities, checks the certificate the
    /// upstream presented, after the handshake and before any request byte
    /// is written: a mismatch fails the attempt (502 `upstream_identity`).
    pub(crate) fn check_upstream(
        &self,
        reused: bool,
        digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(rt) = ctx.cluster.as_ref() else {
            return Ok(());
        };
        let Some(tls) = rt.config.tls.as_ref() else {
            return Ok(());
        };
        // Residency attestation: over upstream mTLS, a request a policy
        // restricts reaches only identities of an allowed jurisdiction.
        let attest = ctx.residency.as_ref().filter(|d| {
            d.allowed.is_some() && tls.client_cert.is_some() && !d.geo().identities.is_empty()
        });
        // A reused HTTP/1.1 connection passed the identity check when it was
        // made (it went back to a pool keyed by the expected identities only
        // after a request succeeded on it): no certificate is parsed again.
        // An HTTP/2 connection is shared as soon as it is made, before its
        // first stream is checked, so its streams are checked every time.
        // Attestation depends on the request: it runs on every request a
        // policy restricts.
        let h1_reused = reused && rt.config.protocol == corridor_config::UpstreamProtocol::Http1;
        let check_identity = !tls.expected_identities.is_empty() && !h1_reused;
        if !check_identity && attest.is_none() {
            return Ok(());
        }
        let cert = digest
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| s.peer_certificate.as_deref());
        let endpoint = || {
            ctx.endpoint_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        };
        if check_identity {
            let outcome = match cert {
                Some(der) => crate::identity::check_upstream(der, &tls.expected_identities),
                None => Err("the upstream presented no certificate".to_string()),
            };
            if let Err(why) = outcome {
                let err = LocalError::new(
                    ErrorKind::UpstreamIdentity,
                    format!(
                        "endpoint {} of cluster `{}`: {why}",
                        endpoint(),
                        rt.config.name
                    ),
                );
                return Err(local(ctx, err));
            }
        }
        let Some(d) = attest else {
            return Ok(());
        };
        let allowed = d.allowed.unwrap_or(u64::MAX);
        let geo = d.geo();
        let (id, jurisdiction) = match cert.map(crate::identity::spiffe_id_of) {
            Some(Ok(id)) => {
                let j = geo.of_identity(&id);
                (id, j)
            }
            Some(Err(e)) => (e, None),
            None => ("no certificate".to_string(), None),
        };
        if jurisdiction.is_some_and(|j| allowed & (1 << j) != 0) {
            return Ok(());
        }
        let name = jurisdiction.map_or("no jurisdiction", |j| {
            geo.jurisdictions[usize::from(j)].as_ref()
        });
        if d.policy.dry_run {
            crate::residency::audit(ctx, d, "would_deny", Some(name));
            return Ok(());
        }
        ctx.routing
            .residency_denied
            .with_label_values(&[d.policy.name.as_ref(), d.class_label().as_str()])
            .inc();
        crate::residency::audit(ctx, d, "deny", Some(name));
        let why = format!(
            "endpoint {} of cluster `{}` presented {id}, which belongs to {name}",
            endpoint(),
            rt.config.name
        );
        let mut err = crate::residency::denied(ctx, why);
        err.kind = ErrorKind::ResidencyAttestation;
        Err(local(ctx, err))
    }

    /// The request failed for good: answer with Corridor's error format unless
    /// the response already started or the client is gone.
    pub(crate) async fn fail(
        &self,
        session: &mut ServerSession,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> u16 {
        if errors::is_downstream_gone(e) {
            0
        } else if let Some(sent) = session.response_written() {
            sent.status.as_u16()
        } else {
            let err = ctx.local_error.take().unwrap_or_else(|| describe(e, ctx));
            answer_locally(session, ctx, err).await
        }
    }

    /// Records metrics and the access log; runs once at the end of every request.
    pub(crate) fn log(&self, session: &ServerSession, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let stats = ctx.stats();
        stats.finish(status, ctx.start.elapsed().as_secs_f64());
        stats.request_bytes.inc_by(session.body_bytes_read() as u64);
        stats
            .response_bytes
            .inc_by(session.body_bytes_sent() as u64);
        if let Some(e) = e {
            if !errors::is_downstream_gone(e) && status >= 500 {
                tracing::warn!(
                    route = ctx.route().map_or("", |r| r.name.as_ref()),
                    cluster = ctx.cluster_name(),
                    attempts = ctx.attempts,
                    error = %e,
                    "request failed"
                );
            }
        }
        if let Some(d) = &ctx.residency {
            let denied = ctx
                .local_error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::ResidencyDenied);
            let rate = d.policy.audit_sample_rate;
            if d.allowed.is_some()
                && !denied
                && (rate >= 1.0 || fastrand::f64() < rate)
                && tracing::enabled!(target: "corridor::residency", tracing::Level::INFO)
            {
                let j = ctx.endpoint_jurisdiction();
                crate::residency::audit(ctx, d, "allow", j);
            }
        }
        if ctx.routing.config.admin.access_log {
            access_log::write(session, e, ctx, status);
        }
    }
}

#[async_trait]
impl ProxyHttp for Corridor {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let routing = self.shared.routing();
        let listener = self.listener(&routing);
        RequestCtx::new(routing, listener)
    }

    /// No downstream modules: Pingora's default adds a response compression
    /// module (disabled) whose context every request builds and whose
    /// filters every response task passes through. Corridor never compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    /// Answers a request whose head Pingora could not read (unparseable, too
    /// large, or failing its framing checks) in Corridor's format, with the
    /// status the strict head checks give its bytes. No request phase runs.
    async fn invalid_request_response(&self, session: &mut ServerSession, _e: &Error) -> bool {
        let routing = self.shared.routing();
        let listener = self.listener(&routing);
        let http = &listener.config.http;
        let err = session
            .invalid_request_header()
            .and_then(|raw| check_h1_head(raw, &http.limits).err())
            .map_or_else(
                || LocalError::new(ErrorKind::BadRequest, "malformed request head"),
                LocalError::from,
            );
        let id = edge::new_request_id();
        let info = ErrorInfo {
            request_id: Some(&id),
            detail: http.error_detail,
        };
        let status = errors::respond_invalid(session, &err, &info).await;
        routing.no_route.finish(status, 0.0);
        self.shared.metrics.rejected(err.kind);
        if routing.config.admin.access_log {
            access_log::write_rejected(session, &err, &id, status);
        }
        true
    }

    /// See [`Corridor::admit`].
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.admit(session, ctx)
    }

    /// See [`Corridor::route`].
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.route(session, ctx).await
    }

    /// See [`Corridor::peer`].
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.peer(ctx).await
    }

    /// See [`Corridor::edit_request`].
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.edit_request(req, ctx)
    }

    /// See [`Corridor::check_request_body`].
    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.check_request_body(session, ctx)
    }

    /// See [`Corridor::upstream_response`].
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_response(session, resp, ctx)
    }

    /// See [`Corridor::edit_response`].
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.edit_response(resp, ctx)
    }

    /// See [`Corridor::connect_failed`].
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(session, ctx, e)
    }

    /// See [`Corridor::proxy_failed`].
    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        self.proxy_failed(session, e, ctx, client_reused)
    }

    /// See [`Corridor::check_upstream`].
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.check_upstream(reused, digest, ctx)
    }

    /// See [`Corridor::fail`].
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        FailToProxy {
            error_code: self.fail(session, e, ctx).await,
            can_reuse_downstream: false,
        }
    }

    /// See [`Corridor::log`].
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.log(session, e, ctx);
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        true
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        true
    }
}

/// Counts a failed connect (to the cluster, the try's endpoint and the
/// outlier detector) and marks `e` retryable when the route may retry it.
fn connect_failure(ctx: &mut RequestCtx, session: &ServerSession, mut e: Box<Error>) -> Box<Error> {
    if let Some(c) = &ctx.cluster {
        c.connect_failures.inc();
    }
    ctx.record_try(Outcome::ConnectFailure);
    let retry = retry::may_retry(ctx, session, RetryReason::ConnectFailure);
    if retry {
        ctx.stats().retry(RetryReason::ConnectFailure);
    }
    e.set_retry(retry);
    e
}

/// Answers a failure in Corridor's error format and remembers it for the log.
/// A failure of the only endpoints a residency policy allowed is a residency
/// denial (451): the client learns that residency stopped the request.
async fn answer_locally(session: &mut ServerSession, ctx: &mut RequestCtx, err: LocalError) -> u16 {
    let stopped = match (&ctx.residency, &ctx.cluster) {
        (Some(d), Some(rt)) => d.stopped(rt),
        _ => false,
    };
    // Only failures of the allowed endpoints themselves (not a deadline
    // passing while waiting) become residency denials.
    let err = match err.kind {
        ErrorKind::ConnectFailed | ErrorKind::UpstreamReset | ErrorKind::NoEndpoint if stopped => {
            crate::residency::denied(
                ctx,
                format!("the allowed endpoints could not serve: {}", err.message),
            )
        }
        _ => err,
    };
    if err.kind == ErrorKind::ResidencyDenied {
        if let Some(d) = &ctx.residency {
            ctx.routing
                .residency_denied
                .with_label_values(&[d.policy.name.as_ref(), d.class_label().as_str()])
                .inc();
            crate::residency::audit(ctx, d, "deny", None);
        } else if let Some(res) = ctx.route().and_then(|r| r.residency.as_ref()) {
            // The route's policy did not resolve: denied before any decision.
            ctx.routing
                .residency_denied
                .with_label_values(&[res.policy.as_ref(), "unknown"])
                .inc();
            crate::residency::audit_unresolved(ctx, &res.policy);
        }
    }
    let status = errors::respond(session, &err, &ctx.error_info()).await;
    ctx.local_error = Some(err);
    status
}

/// Records a local error and returns it as a pingora error.
fn local(ctx: &mut RequestCtx, err: LocalError) -> Box<Error> {
    ctx.local_error = Some(err.clone());
    err.into_pingora()
}

/// Counts a breaker's overflow and answers it as a local error.
fn overflow(ctx: &mut RequestCtx, rt: &ClusterRuntime, b: Breaker, why: String) -> Box<Error> {
    rt.shared.metrics.overflowed(b);
    local(ctx, LocalError::new(ErrorKind::Overflow, why))
}

fn timeout_error(ctx: &mut RequestCtx, timeout: Duration) -> Box<Error> {
    let cluster = ctx.cluster_name().to_string();
    let err = LocalError::new(
        ErrorKind::Timeout,
        format!(
            "no response from cluster `{cluster}` within the route timeout of {timeout:?} ({} tries)",
            ctx.attempts.saturating_sub(1)
        ),
    );
    local(ctx, err)
}

/// Explains a pingora error for the client, without internal addresses.
fn describe(e: &Error, ctx: &RequestCtx) -> LocalError {
    let kind = errors::classify(e);
    let cluster = ctx.cluster_name();
    let tries = ctx.attempts.max(1);
    let tries = if tries == 1 {
        "1 try".to_string()
    } else {
        format!("{tries} tries")
    };
    let message = match kind {
        ErrorKind::ConnectFailed => format!(
            "could not connect to cluster `{cluster}` ({tries}): {}",
            e.etype().as_str()
        ),
        ErrorKind::Timeout => format!("cluster `{cluster}` did not respond in time ({tries})"),
        ErrorKind::UpstreamReset => {
            format!("cluster `{cluster}` closed or reset the stream before responding ({tries})")
        }
        ErrorKind::BadUpstreamResponse => {
            format!("cluster `{cluster}` sent an invalid response ({tries})")
        }
        ErrorKind::BadRequest => "malformed request".to_string(),
        _ => e.etype().as_str().to_string(),
    };
    LocalError::new(kind, message)
}
