//! Owns the access log line: one `tracing` event per finished request on the
//! `access` target, formatted as text or JSON by the subscriber (see `logging`).

use http::HeaderValue;
use pingora_core::protocols::http::ServerSession;
use pingora_core::Error;

use super::ctx::RequestCtx;
use crate::errors::LocalError;

/// Emits the access log event for a finished request.
pub(super) fn write(session: &ServerSession, e: Option<&Error>, ctx: &RequestCtx, status: u16) {
    let req = session.req_header();
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("-");
    let peer = session
        .client_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let client = ctx
        .client
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let request_id = ctx
        .request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let upstream = ctx
        .endpoint_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let error = match (&ctx.local_error, e) {
        (Some(l), _) => l.kind.name(),
        (None, Some(e)) if crate::errors::is_downstream_gone(e) => "client_closed",
        (None, Some(e)) => crate::errors::classify(e).name(),
        (None, None) => "-",
    };
    tracing::info!(
        target: "access",
        client = %client,
        peer = %peer,
        request_id = request_id,
        method = %req.method,
        host = host,
        path = %req.uri.path(),
        protocol = ?req.version,
        status = status,
        route = ctx.route().map_or("-", |r| r.name.as_ref()),
        cluster = ctx.cluster_name(),
        upstream = %upstream,
        upstream_status = ctx.upstream_status,
        attempts = ctx.attempts,
        duration_ms = ctx.start.elapsed().as_secs_f64() * 1000.0,
        bytes_in = session.body_bytes_read(),
        bytes_out = session.body_bytes_sent(),
        error = error,
    );
}

/// Emits the access log event for a request whose head could not be read:
/// only the connection, the status and the error are known.
pub(super) fn write_rejected(
    session: &ServerSession,
    err: &LocalError,
    request_id: &HeaderValue,
    status: u16,
) {
    let peer = session
        .client_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    tracing::info!(
        target: "access",
        client = %peer,
        peer = %peer,
        request_id = request_id.to_str().unwrap_or("-"),
        method = "-",
        host = "-",
        path = "-",
        status = status,
        error = err.kind.name(),
    );
}
