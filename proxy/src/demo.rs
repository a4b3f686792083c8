//! Owns `corridor demo`: the embedded default. It starts built-in upstreams that
//! stand in for inference endpoints in three clouds (an OpenAI-compatible API
//! answering which cloud served), then the proxy with `examples/demo.yaml`, and
//! prints ready-to-paste curl commands.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use corridor_config::{Endpoint, Snapshot};
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The demo configuration, also checked in as `examples/demo.yaml`.
pub const DEMO_YAML: &str = include_str!("../../examples/demo.yaml");

/// Where the demo binds things; `None` keeps the embedded config's address.
#[derive(Debug, Default, Clone)]
pub struct DemoOptions {
    /// Proxy listener address.
    pub listen: Option<SocketAddr>,
    /// Admin listener address.
    pub admin: Option<SocketAddr>,
    /// Addresses of the three built-in upstreams, in config order.
    pub upstreams: Vec<SocketAddr>,
}

/// Builds the demo YAML with the requested addresses patched in.
pub fn demo_config(opts: &DemoOptions) -> String {
    let mut yaml = DEMO_YAML.to_string();
    if let Some(a) = opts.listen {
        yaml = yaml.replace("address: 127.0.0.1:8080", &format!("address: {a}"));
    }
    if let Some(a) = opts.admin {
        yaml = yaml.replace("address: 127.0.0.1:9901", &format!("address: {a}"));
    }
    for (i, a) in opts.upstreams.iter().enumerate() {
        yaml = yaml.replace(
            &format!("address: 127.0.0.1:910{}", i + 1),
            &format!("address: {a}"),
        );
    }
    yaml
}

/// Starts the built-in upstreams for every endpoint of `snapshot` on a
/// dedicated thread. Fails if an address cannot be bound.
pub fn start_upstreams(snapshot: &Snapshot) -> anyhow::Result<()> {
    let endpoints: Vec<Endpoint> = snapshot
        .clusters
        .values()
        .flat_map(|c| c.endpoints.iter().cloned())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("demo-upstreams")
        .enable_all()
        .build()?;
    let mut listeners = Vec::new();
    for e in &endpoints {
        let std_listener = std::net::TcpListener::bind(e.address).map_err(|err| {
            anyhow::anyhow!("demo upstream {}: cannot bind {}: {err}", e.id, e.address)
        })?;
        std_listener.set_nonblocking(true)?;
        listeners.push((std_listener, e.clone()));
    }
    std::thread::Builder::new()
        .name("demo-upstreams".into())
        .spawn(move || {
            rt.block_on(async move {
                for (l, e) in listeners {
                    let l = tokio::net::TcpListener::from_std(l).expect("tokio listener from std");
                    tokio::spawn(serve(l, e));
                }
                std::future::pending::<()>().await;
            });
        })?;
    Ok(())
}

/// Prints what to try against a running demo.
pub fn print_banner(snapshot: &Snapshot) {
    let proxy = snapshot.listeners[0].address;
    let admin = snapshot.admin.address;
    let Some(first) = snapshot.clusters.values().next() else {
        return;
    };
    let clouds: Vec<String> = first
        .endpoints
        .iter()
        .map(|e| {
            format!(
                "{}/{} at {}",
                e.locality.cloud, e.locality.region, e.address
            )
        })
        .collect();
    println!(
        r#"
Corridor demo: proxy on http://{proxy}, admin on http://{admin}
Built-in inference upstreams: {clouds}

Try (each answer says which cloud served it):
  curl -s http://{proxy}/v1/models
  curl -s http://{proxy}/v1/chat/completions -H 'x-model: gpt-4o' -d '{{"model":"gpt-4o","messages":[{{"role":"user","content":"hi"}}]}}'
  curl -s http://{proxy}/v1/chat/completions -H 'x-model: claude-3-5-sonnet' -d '{{"model":"claude-3-5-sonnet","messages":[{{"role":"user","content":"hi"}}]}}'
  curl -s http://{proxy}/v1/chat/completions -H 'x-model: llama-3-70b' -d '{{"model":"llama-3-70b","messages":[{{"role":"user","content":"hi"}}]}}'
  curl -sN http://{proxy}/v1/chat/completions -H 'x-model: gpt-4o' -d '{{"model":"gpt-4o","stream":true,"messages":[{{"role":"user","content":"stream please"}}]}}'
  curl -s --http2-prior-knowledge http://{proxy}/v1/models
  curl -s http://{proxy}/nowhere          # Corridor's own JSON error
  curl -s http://{admin}/metrics | grep corridor_requests_total
  curl -s http://{admin}/config_dump

Press Ctrl-C to stop.
"#,
        clouds = clouds.join(", ")
    );
}

type Body = BoxBody<Bytes, Infallible>;

async fn serve(listener: tokio::net::TcpListener, endpoint: Endpoint) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, endpoint.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, e: Endpoint) -> Result<Response<Body>, Infallible> {
    let cloud = e.locality.cloud.to_string();
    let region = e.locality.region.to_string();
    let served_by = format!("{cloud}/{region}");
    let resp = match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/v1/models") => json(
            StatusCode::OK,
            serde_json::json!({
                "object": "list",
                "served_by": served_by,
                "data": [
                    {"id": "gpt-4o", "object": "model", "owned_by": "azure"},
                    {"id": "claude-3-5-sonnet", "object": "model", "owned_by": "aws"},
                    {"id": "llama-3-70b", "object": "model", "owned_by": "oci"},
                ],
            }),
        ),
        (Method::POST, "/v1/chat/completions") => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let parsed: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let model = parsed["model"].as_str().unwrap_or("unknown").to_string();
            let answer = format!("Hello from {served_by} (model {model}).");
            if parsed["stream"].as_bool() == Some(true) {
                sse(answer, model)
            } else {
                json(
                    StatusCode::OK,
                    serde_json::json!({
                        "id": "chatcmpl-demo",
                        "object": "chat.completion",
                        "model": model,
                        "served_by": served_by,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": answer}}],
                    }),
                )
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"type": "not_found", "message": "try /v1/models or /v1/chat/completions"}}),
        ),
    };
    let mut resp = resp;
    resp.headers_mut().insert(
        "x-upstream-cloud",
        http::HeaderValue::from_str(&cloud).unwrap_or(http::HeaderValue::from_static("?")),
    );
    resp.headers_mut().insert(
        "x-upstream-region",
        http::HeaderValue::from_str(&region).unwrap_or(http::HeaderValue::from_static("?")),
    );
    Ok(resp)
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec(&v).unwrap_or_default();
    body.push(b'\n');
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

/// Streams the answer word by word as OpenAI-style SSE chunks, 50 ms apart.
fn sse(answer: String, model: String) -> Response<Body> {
    let words: Vec<String> = answer.split(' ').map(|w| format!("{w} ")).collect();
    let n = words.len();
    let events = futures::stream::iter(words.into_iter().enumerate()).then(move |(i, w)| {
        let model = model.clone();
        async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let chunk = serde_json::json!({
                "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"content": w}}],
            });
            let mut text = format!("data: {chunk}\n\n");
            if i + 1 == n {
                text.push_str("data: [DONE]\n\n");
            }
            Ok::<_, Infallible>(Frame::data(Bytes::from(text)))
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed(StreamBody::new(events)))
        .expect("valid response")
}
