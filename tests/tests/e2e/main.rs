//! End-to-end tests: the real `corridor` binary on ephemeral 127.0.0.1 ports,
//! real upstream servers and real HTTP/1.1, HTTP/2, TLS and gRPC clients
//! (see `tests/README.md`). One binary, one module per area.

mod admin;
mod balancing;
mod demo;
mod docker;
mod edge;
mod endpoints;
mod errors;
mod framing;
mod framing_h2;
mod inject;
mod interop;
mod mtls;
mod reload;
mod residency;
mod retries;
mod routing;
mod shutdown;
mod streaming;
mod topology;
mod xds;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corridor_tests::{Client, Upstream, UpstreamProtocol};

/// The first lines of most test configs: listener `main` on `{{LISTEN}}` with route
/// table `t`, and the admin listener.
pub const HEAD: &str = "listeners: [{ name: main, address: \"{{LISTEN}}\", route_table: t }]\nadmin: { address: \"{{ADMIN}}\" }\n";

/// YAML for a list of endpoints with optional extra fields per endpoint.
pub fn endpoints(list: &[(SocketAddr, &str)]) -> String {
    list.iter()
        .map(|(a, extra)| {
            if extra.is_empty() {
                format!("      - {{ address: \"{a}\" }}\n")
            } else {
                format!("      - {{ address: \"{a}\", {extra} }}\n")
            }
        })
        .collect()
}

/// A config with one listener, one catch-all route to cluster `c` with `route`
/// extra settings (YAML flow fields inside `route: {...}`), and `cluster` extra
/// fields (block YAML, indented 4 spaces).
pub fn single_route(eps: &[(SocketAddr, &str)], route: &str, cluster: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "{{{{LISTEN}}}}"
    route_table: t
admin:
  address: "{{{{ADMIN}}}}"
runtime:
  worker_threads: 2
  drain_timeout: 5s
route_tables:
  - name: t
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: r
            match: {{ prefix: / }}
            route: {{ cluster: c{sep}{route} }}
clusters:
  - name: c
{cluster}
    endpoints:
{eps}"#,
        sep = if route.is_empty() { "" } else { ", " },
        eps = endpoints(eps),
    )
}

/// Starts an upstream of the given protocol.
pub async fn upstream(name: &str, protocol: UpstreamProtocol) -> Upstream {
    Upstream::start(corridor_tests::UpstreamOptions::new(name, protocol)).await
}

/// The value of a response header as text.
pub fn header<'a, B>(resp: &'a http::Response<B>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A whole response: status, headers, version and body.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Protocol version.
    pub version: http::Version,
    /// The whole body.
    pub body: bytes::Bytes,
}

impl Reply {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends a request and reads the whole response.
pub async fn fetch(c: &corridor_tests::Client, req: http::Request<corridor_tests::Body>) -> Reply {
    let resp = c.send(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = corridor_tests::client::read_all(body)
        .await
        .expect("reading body failed");
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        version: parts.version,
        body,
    }
}

/// GET `path` and read the whole response.
pub async fn fetch_get(c: &corridor_tests::Client, path: &str) -> Reply {
    fetch(
        c,
        http::Request::get(path)
            .body(corridor_tests::client::empty())
            .unwrap(),
    )
    .await
}

/// Opens an h1 connection to `addr` and GETs `path`; `None` when the connection or the
/// request fails (a listener that is coming or going may accept and then reset).
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<Reply> {
    let c = Client::h1(addr).await.ok()?;
    let req = http::Request::get(path)
        .body(corridor_tests::client::empty())
        .unwrap();
    let (parts, body) = c.send(req).await.ok()?.into_parts();
    let body = corridor_tests::client::read_all(body).await.ok()?;
    Some(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        version: parts.version,
        body,
    })
}

/// Opens an h1 connection to `addr`, GETs the event stream at `path` and
/// reads its first event; returns the connection and the rest of the stream.
pub async fn first_sse_event(
    addr: SocketAddr,
    path: &str,
) -> (Client, corridor_tests::BodyReader<hyper::body::Incoming>) {
    let c = Client::h1(addr).await.unwrap();
    let resp = c.get(path).await.unwrap();
    let mut stream = corridor_tests::BodyReader::new(resp.into_body());
    stream.next_sse().await.unwrap().expect("first event");
    (c, stream)
}

/// Polls until `check` holds, up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Serializes the tests that measure timing or memory, or move a GiB, so that
/// they do not disturb each other on a 2-core machine.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Polls `GET /status/200` on `addr` until the responding upstream is `want`; how long it took.
pub async fn wait_upstream(addr: SocketAddr, want: &str, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(r) = try_get(addr, "/status/200").await {
            if r.header("x-upstream") == want {
                return Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Cluster `name`'s entry in the admin `/clusters` (null when absent).
pub async fn cluster_state(proxy: &corridor_tests::Corridor, name: &str) -> serde_json::Value {
    let (status, body) = proxy.admin_get("/clusters").await;
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    all["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Endpoint `addr`'s entry in cluster `c` of `/clusters` (null when absent).
pub async fn endpoint_state(
    proxy: &corridor_tests::Corridor,
    addr: SocketAddr,
) -> serde_json::Value {
    cluster_state(proxy, "c").await["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["address"] == addr.to_string()))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Polls `/clusters` until `check` holds for endpoint `addr` of cluster `c`,
/// for at most `timeout` (counters are updated as requests end, a moment
/// after the client has its answer).
pub async fn wait_endpoint_for(
    proxy: &corridor_tests::Corridor,
    addr: SocketAddr,
    what: &str,
    timeout: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let e = endpoint_state(proxy, addr).await;
        if check(&e) {
            return e;
        }
        assert!(start.elapsed() < timeout, "{what}: {e}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_endpoint_for`] with 5 s.
pub async fn wait_endpoint(
    proxy: &corridor_tests::Corridor,
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_endpoint_for(proxy, addr, what, Duration::from_secs(5), check).await
}
