//! Owns the access log line: one `tracing` event per finished request on the
//! `access` target, formatted as text or JSON by the subscriber (see `logging`).

use pingora_core::Error;
use pingora_proxy::Session;

use super::ctx::RequestCtx;

/// Emits the access log event for a finished request.
pub(super) fn write(session: &Session, e: Option<&Error>, ctx: &RequestCtx, status: u16) {
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
    let client = session
        .client_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
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
