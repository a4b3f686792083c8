//! Owns retry decisions: which failures a route retries, and the guards every
//! retry must pass (tries left, deadline, no response bytes sent, a replayable
//! body, idempotency unless the route opts in).

use std::time::Instant;

use pingora_core::protocols::http::ServerSession as Session;
use pingora_core::{Error, ErrorType, RetryType};

use super::ctx::RequestCtx;
use corridor_config::RetryLimit;

use crate::lb::shared::Breaker;
use crate::metrics::RetryReason;

/// What kind of failure a try ended with, for retry purposes.
pub(crate) fn failure_reason(e: &Error) -> Option<RetryReason> {
    if is_refused_stream(e) {
        return Some(RetryReason::RefusedStream);
    }
    match e.etype() {
        ErrorType::ConnectionClosed
        | ErrorType::ReadError
        | ErrorType::WriteError
        | ErrorType::H2Error
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout => Some(RetryReason::Reset),
        _ => None,
    }
}

/// Whether the error is an HTTP/2 REFUSED_STREAM (the upstream did not process it).
fn is_refused_stream(e: &Error) -> bool {
    e.root_cause()
        .downcast_ref::<h2::Error>()
        .is_some_and(|h| h.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// Whether the route's policy covers `reason`.
fn policy_covers(ctx: &RequestCtx, reason: RetryReason) -> bool {
    let Some(f) = ctx.forward() else { return false };
    let on = &f.retry.on;
    match reason {
        RetryReason::ConnectFailure => on.connect_failure,
        RetryReason::RefusedStream => on.refused_stream || on.reset,
        RetryReason::Reset => on.reset || on.server_error || on.gateway_error,
        RetryReason::Status => true,
    }
}

/// Whether the request may be sent again after `reason`, and if so counts
/// the retry against the cluster's retry limit (a retry over it is not made).
pub(crate) fn may_retry(ctx: &mut RequestCtx, session: &Session, reason: RetryReason) -> bool {
    if !allowed(ctx, session, reason) {
        return false;
    }
    let Some(rt) = &ctx.cluster else { return true };
    let retries = rt.config.balancing.breakers.retries;
    let limit = retries.allowed(rt.shared.active_requests());
    // A budget also spends its reserve, so that the first burst of a fault
    // is retried before outlier detection has reacted; a fixed limit is fixed.
    let reserve = matches!(retries, RetryLimit::Budget { .. });
    match rt.shared.admit_retry(limit, reserve) {
        Some(g) => {
            ctx.retry_guard = Some(g);
            true
        }
        None => {
            rt.shared.metrics.overflowed(Breaker::Retries);
            false
        }
    }
}

/// Whether the route's policy and the request's state allow another try
/// after `reason`. Connect failures and refused streams never reached the
/// application, so any method may retry them.
fn allowed(ctx: &RequestCtx, session: &Session, reason: RetryReason) -> bool {
    let Some(f) = ctx.forward() else { return false };
    if ctx.response_started || ctx.attempts > f.retry.num_retries {
        return false;
    }
    if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
        return false;
    }
    if !policy_covers(ctx, reason) {
        return false;
    }
    if session.retry_buffer_truncated() {
        return false;
    }
    let safe = matches!(
        reason,
        RetryReason::ConnectFailure | RetryReason::RefusedStream
    );
    safe || f.retry.non_idempotent || session.req_header().method.is_idempotent()
}

/// One free retry when a pooled connection turned out to be closed by the
/// upstream before it answered (the usual keep-alive race), for requests that
/// are safe to resend.
pub(crate) fn stale_connection_retry(
    ctx: &RequestCtx,
    session: &Session,
    e: &Error,
    client_reused: bool,
) -> bool {
    client_reused
        && matches!(e.retry, RetryType::ReusedOnly)
        && !ctx.stale_retry_used
        && !ctx.response_started
        && !session.retry_buffer_truncated()
        && session.req_header().method.is_idempotent()
        && ctx.deadline.is_none_or(|d| Instant::now() < d)
}
