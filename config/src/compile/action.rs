//! Owns compiling what a route does besides picking targets: retry policies,
//! direct responses and header edits (with the hop-by-hop fields the proxy
//! manages itself refused).

use http::{HeaderName, HeaderValue, StatusCode};

use super::matcher::header_name;
use super::{duration, Ctx};
use crate::action::{DirectResponse, HeaderMutation, HeaderOp, RetryOn, RetryPolicy};
use crate::error::FieldPath;
use crate::proto;

pub(super) fn retry_policy(
    cx: &mut Ctx,
    r: Option<&proto::RetryPolicy>,
    p: &FieldPath<'_>,
) -> RetryPolicy {
    let mut out = RetryPolicy::default();
    let Some(r) = r else { return out };
    if r.num_retries > 10 {
        cx.err(
            &p.field("num_retries"),
            format!("{} retries is too many (at most 10)", r.num_retries),
        );
    }
    out.num_retries = r.num_retries.min(10);
    let mut on = RetryOn::default();
    for (i, cond) in r.retry_on.iter().enumerate() {
        match cond.as_str() {
            "connect-failure" => on.connect_failure = true,
            "refused-stream" => on.refused_stream = true,
            "reset" => on.reset = true,
            "5xx" => on.server_error = true,
            "gateway-error" => on.gateway_error = true,
            "retriable-status-codes" => {
                on.status_codes = true;
                if r.retriable_status_codes.is_empty() {
                    cx.err(&p.field("retriable_status_codes"), "retriable-status-codes needs at least one status");
                }
            }
            other => cx.err(
                &p.item("retry_on", i),
                format!(
                    "unknown retry condition `{other}`; use connect-failure, refused-stream, reset, 5xx, gateway-error or retriable-status-codes"
                ),
            ),
        }
    }
    if r.retry_on.is_empty() {
        on.connect_failure = true;
        on.refused_stream = true;
    }
    out.on = on;
    let mut statuses = Vec::new();
    for (i, s) in r.retriable_status_codes.iter().enumerate() {
        if (100..600).contains(s) {
            statuses.push(*s as u16);
        } else {
            cx.err(
                &p.item("retriable_status_codes", i),
                format!("{s} is not an HTTP status"),
            );
        }
    }
    if !statuses.is_empty() && !on.status_codes {
        cx.err(
            &p.field("retriable_status_codes"),
            "these statuses are retried only when retry_on lists \"retriable-status-codes\"; add it there",
        );
    }
    out.statuses = statuses.into();
    out.per_try_timeout = duration(
        cx,
        &p.field("per_try_timeout"),
        r.per_try_timeout.as_ref(),
        true,
    );
    if let Some(d) = duration(
        cx,
        &p.field("base_interval"),
        r.base_interval.as_ref(),
        true,
    ) {
        out.base_interval = d;
    }
    if let Some(d) = duration(cx, &p.field("max_interval"), r.max_interval.as_ref(), true) {
        out.max_interval = d;
    }
    if out.max_interval < out.base_interval {
        cx.err(
            &p.field("max_interval"),
            "max_interval must not be shorter than base_interval",
        );
    }
    out.non_idempotent = r.retry_non_idempotent;
    out
}

pub(super) fn compile_direct(
    cx: &mut Ctx,
    d: &proto::DirectResponse,
    p: &FieldPath<'_>,
) -> Option<DirectResponse> {
    let status = match u16::try_from(d.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        Some(s) if s.as_u16() >= 200 => s,
        _ => {
            cx.err(
                &p.field("status"),
                format!("{} is not a valid final status (200-599)", d.status),
            );
            return None;
        }
    };
    let content_type = if d.body.is_empty() && d.content_type.is_empty() {
        None
    } else if d.content_type.is_empty() {
        Some(HeaderValue::from_static("text/plain; charset=utf-8"))
    } else {
        match HeaderValue::from_str(&d.content_type) {
            Ok(v) => Some(v),
            Err(_) => {
                cx.err(&p.field("content_type"), "invalid header value");
                None
            }
        }
    };
    Some(DirectResponse {
        status,
        body: bytes::Bytes::from(d.body.clone()),
        content_type,
    })
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "content-length",
];

pub(super) fn mutation(
    cx: &mut Ctx,
    m: Option<&proto::HeaderMutation>,
    p: &FieldPath<'_>,
) -> HeaderMutation {
    let mut out = HeaderMutation::default();
    let Some(m) = m else { return out };
    let check = |cx: &mut Ctx, path: FieldPath<'_>, name: &str| -> Option<HeaderName> {
        let n = header_name(cx, &path, name)?;
        if HOP_BY_HOP.contains(&n.as_str()) {
            cx.err(
                &path,
                format!("`{n}` is managed by the proxy and cannot be edited"),
            );
            return None;
        }
        Some(n)
    };
    for (i, name) in m.remove.iter().enumerate() {
        if let Some(n) = check(cx, p.item("remove", i), name) {
            out.ops.push(HeaderOp::Remove(n));
        }
    }
    for (kind, list) in [("set", &m.set), ("add", &m.add)] {
        for (i, hv) in list.iter().enumerate() {
            let hp = p.item(kind, i);
            let Some(name) = check(cx, hp.field("name"), &hv.name) else {
                continue;
            };
            match HeaderValue::from_str(&hv.value) {
                Ok(v) if kind == "set" => out.ops.push(HeaderOp::Set(name, v)),
                Ok(v) => out.ops.push(HeaderOp::Add(name, v)),
                Err(_) => cx.err(
                    &hp.field("value"),
                    "invalid header value (control characters are not allowed)",
                ),
            }
        }
    }
    out
}
