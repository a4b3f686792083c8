//! The test upstream's behaviours, routed by path: echo, SSE, pattern bytes, sink, status,
//! slow, hang, silent, reset, refuse, flaky, and 404 for anything else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::bodies::{boxed, BytesBody, Counting, Deliberate, RespBody, SseBody, SSE_EVENT_LEN};
use super::state::State;
use crate::BoxError;

/// Largest `chunk` accepted by `/bytes` (the pattern buffer is allocated per request).
const MAX_CHUNK: usize = 16 << 20;

/// Dispatches one request to its behaviour. `Err` means "fail the exchange": hyper then
/// closes an HTTP/1.1 connection without a response, or resets an HTTP/2 stream with the
/// `h2::Reason` found in the error (INTERNAL_ERROR when there is none).
///
/// `gone` is set if a request body read in the background breaks (the peer went away
/// mid-upload); the caller races the handler and the response body against it.
pub(crate) async fn route(
    state: &Arc<State>,
    req: Request<Incoming>,
    gone: watch::Sender<bool>,
) -> Result<Response<RespBody>, BoxError> {
    match behave(state, req, gone).await {
        Err(e) if e.is::<BadRequest>() => {
            let body = serde_json::json!({ "error": e.to_string(), "upstream": state.name });
            Ok(json(StatusCode::BAD_REQUEST, &body))
        }
        other => other,
    }
}

/// A malformed test parameter: answered with 400 rather than failing the exchange.
#[derive(Debug)]
struct BadRequest(String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadRequest {}

fn bad(msg: String) -> BoxError {
    Box::new(BadRequest(msg))
}

async fn behave(
    state: &Arc<State>,
    req: Request<Incoming>,
    gone: watch::Sender<bool>,
) -> Result<Response<RespBody>, BoxError> {
    let query = parse_query(req.uri().query().unwrap_or(""));
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        let status = state
            .health_status
            .load(std::sync::atomic::Ordering::Relaxed);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(json(code, &serde_json::json!({ "upstream": state.name })));
    }
    let fault = *state.fault.lock();
    if !fault.delay.is_zero() {
        tokio::time::sleep(fault.delay).await;
    }
    if let Some(status) = fault.status {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "fault": status, "upstream": state.name });
        return Ok(json(code, &body));
    }
    let (parts, body) = req.into_parts();
    let body = Counting {
        inner: body,
        state: state.clone(),
    };
    let body = if matches!(path.as_str(), "/echo" | "/sink" | "/hang") {
        Some(body)
    } else {
        // Behaviours that ignore the body still read it, in the background: an unread
        // HTTP/1.1 body stops hyper reading the socket, and then it cannot notice the
        // peer closing (and dropping it makes hyper stop reading once it runs dry).
        tokio::spawn(async move {
            if drain(body).await.is_err() {
                gone.send_replace(true);
            }
        });
        None
    };
    let body = move || body.expect("a body-consuming path");
    let q = |key: &str| query.get(key).map(String::as_str);
    let resp = match path.as_str() {
        "/echo" => echo(parts, body()),
        "/sse" => {
            let n = num(q("n"), 10)?;
            let interval = Duration::from_millis(num(q("interval_ms"), 0)?);
            let abort_after = q("abort_after").map(|v| num(Some(v), 0)).transpose()?;
            let mut sse = SseBody::new(n, interval, abort_after, false);
            if let Some(tag) = q("tag") {
                sse = sse.record_as(state.clone(), tag.to_string());
            }
            let mut resp = sse_response(sse);
            if q("content_length") == Some("1") {
                let len = n * SSE_EVENT_LEN as u64;
                resp.headers_mut().insert(CONTENT_LENGTH, len.into());
            }
            resp
        }
        "/silent" => {
            let n = num(q("n"), 1)?;
            sse_response(SseBody::new(n, Duration::ZERO, None, true))
        }
        "/bytes" => {
            let size = num(q("size"), 0)?;
            let chunk = num(q("chunk"), 65536)?;
            if chunk == 0 || chunk > MAX_CHUNK as u64 {
                return Err(bad(format!("chunk {chunk} out of range")));
            }
            let exact = q("content_length") == Some("1");
            let mut resp = Response::new(boxed(BytesBody::new(size, chunk as usize, exact)));
            let headers = resp.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if exact {
                headers.insert(CONTENT_LENGTH, size.into());
            }
            resp
        }
        "/sink" => {
            let mut body = body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame?.data_ref() {
                    total += data.len() as u64;
                }
            }
            json(StatusCode::OK, &serde_json::json!({ "bytes": total }))
        }
        "/slow" => {
            let ms = num(q("ms"), 0)?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, "ok")
        }
        "/hang" => {
            // Keep reading the request body so hyper keeps reading the connection (that is
            // how it notices the peer closing), then never answer.
            drain(body()).await?;
            std::future::pending::<()>().await;
            unreachable!("pending() never completes")
        }
        "/reset" => return Err(reset_error(parts.version, h2::Reason::INTERNAL_ERROR)),
        "/refuse" => return Err(reset_error(parts.version, h2::Reason::REFUSED_STREAM)),
        "/flaky" => {
            let key = q("key").unwrap_or("").to_owned();
            let fail = num(q("fail"), 1)?;
            let status = status_code(q("status").unwrap_or("503"))?;
            let attempt = {
                let mut counts = state.flaky.lock();
                let c = counts.entry(key).or_insert(0);
                *c += 1;
                *c
            };
            if attempt <= fail {
                let body = serde_json::json!({
                    "status": status.as_u16(), "upstream": state.name, "attempt": attempt
                });
                json(status, &body)
            } else {
                text(StatusCode::OK, "ok")
            }
        }
        p if p.starts_with("/status/") => {
            let status = status_code(&p["/status/".len()..])?;
            if matches!(status.as_u16(), 204 | 304) {
                let mut r = Response::new(boxed(Empty::new()));
                *r.status_mut() = status;
                r
            } else {
                let body = serde_json::json!({ "status": status.as_u16(), "upstream": state.name });
                json(status, &body)
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(resp)
}

/// Reads a request body to its end, discarding the data.
async fn drain(mut body: Counting<Incoming>) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}

/// 200 whose body is the request body, frame by frame as it arrives; request facts go
/// into `x-echo-*` response headers.
fn echo(parts: http::request::Parts, body: Counting<Incoming>) -> Response<RespBody> {
    let mut resp = Response::new(boxed(body));
    let h = resp.headers_mut();
    let host = parts
        .headers
        .get(HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| a.as_str().parse().ok()));
    if let Some(host) = host {
        h.insert("x-echo-host", host);
    }
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if let Ok(v) = HeaderValue::from_str(pq) {
        h.insert("x-echo-path", v);
    }
    if let Ok(v) = HeaderValue::from_str(parts.method.as_str()) {
        h.insert("x-echo-method", v);
    }
    for (name, value) in &parts.headers {
        if name.as_str().starts_with("x-") {
            let echoed = format!("x-echo-{}", name.as_str());
            if let Ok(echoed) = HeaderName::from_bytes(echoed.as_bytes()) {
                h.append(echoed, value.clone());
            }
        }
    }
    resp
}

fn sse_response(body: SseBody) -> Response<RespBody> {
    let mut resp = Response::new(boxed(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

/// The error that makes hyper drop the exchange: for HTTP/2 it carries `reason` (hyper
/// finds it in the error's cause chain and sends RST_STREAM with it).
fn reset_error(version: Version, reason: h2::Reason) -> BoxError {
    let h2 = (version == Version::HTTP_2).then(|| h2::Error::from(reason));
    Box::new(Deliberate(h2))
}

fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(boxed(Full::new(Bytes::from_static(body.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(boxed(Full::new(Bytes::from(body.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A final (non-1xx) status code.
fn status_code(s: &str) -> Result<StatusCode, BoxError> {
    let code: u16 = s
        .parse()
        .map_err(|_| bad(format!("bad status code {s:?}")))?;
    match StatusCode::from_u16(code) {
        Ok(c) if code >= 200 => Ok(c),
        _ => Err(bad(format!("status code {code} is not a final status"))),
    }
}

fn num<T: std::str::FromStr>(v: Option<&str>, default: T) -> Result<T, BoxError> {
    match v {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| bad(format!("bad number {v:?} in query"))),
    }
}

/// `a=1&b=2` into a map (no percent-decoding: test parameters are plain).
fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}
