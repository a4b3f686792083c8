//! Owns the admin listener: `/ready`, `/live`, `/metrics` (Prometheus text),
//! `/config_dump` (every resource with its version, what is warming, the
//! listeners serving and the control stream's state, as JSON) and `/clusters`
//! (each endpoint's runtime state, as JSON); the last two behind a bearer
//! token when `admin.config_dump_token_file` is set. It is a
//! separate Pingora service on its own socket (default 127.0.0.1:9901).

use std::sync::Arc;

use async_trait::async_trait;
use corridor_config::Kind;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::{Encoder, TextEncoder};

use crate::shared::Shared;

/// The admin HTTP application.
pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    /// An admin app over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        self.shared.metrics.before_scrape();
        if let Some(status) = self.shared.xds.lock().clone() {
            let connected = status.snapshot().connected;
            self.shared.metrics.xds_connected.set(i64::from(connected));
        }
        let families = self.shared.registry.gather();
        let mut buf = Vec::with_capacity(16 * 1024);
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&families, &mut buf) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics failed: {e}\n"),
            );
        }
        reply(StatusCode::OK, encoder.format_type(), buf)
    }

    /// Every cluster served with its endpoints' runtime state (requests in
    /// flight, attempts, failures, latency to response headers), as JSON.
    fn clusters(&self) -> Response<Vec<u8>> {
        let routing = self.shared.routing();
        let clusters: Vec<serde_json::Value> = routing
            .clusters
            .iter()
            .map(|(name, rt)| {
                let endpoints: Vec<serde_json::Value> = rt
                    .config
                    .endpoints
                    .iter()
                    .zip(&rt.states)
                    .map(|(e, state)| {
                        let mut j = state.to_json(rt.config.balancing.lb.decay.as_secs_f64());
                        j["address"] = e.address.to_string().into();
                        j["weight"] = e.weight.into();
                        j["priority"] = e.priority.into();
                        j["locality"] = serde_json::json!({
                            "cloud": e.locality.cloud.as_ref(),
                            "region": e.locality.region.as_ref(),
                            "zone": e.locality.zone.as_ref(),
                        });
                        if let Some(w) = e.locality_weight {
                            j["locality_weight"] = w.into();
                        }
                        j["labels"] = e
                            .labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.as_ref())))
                            .collect::<serde_json::Map<_, _>>()
                            .into();
                        j
                    })
                    .collect();
                let mut c = rt.shared.to_json();
                c["name"] = name.as_ref().into();
                c["lb_policy"] = rt.config.balancing.lb.policy.name().into();
                c["outlier_detection"] = rt.config.balancing.outlier.is_some().into();
                c["health_checks"] = rt.config.balancing.health_checks.len().into();
                c["endpoints"] = endpoints.into();
                c
            })
            .collect();
        let body = serde_json::to_vec_pretty(&serde_json::json!({ "clusters": clusters }))
            .unwrap_or_default();
        reply(StatusCode::OK, "application/json", body)
    }

    fn config_dump(&self) -> Response<Vec<u8>> {
        let snap = self.shared.snapshot();
        let mut resources = serde_json::Map::new();
        for kind in Kind::ALL {
            let list: Vec<serde_json::Value> = snap
                .store
                .entries(kind)
                .into_iter()
                .map(|e| {
                    serde_json::json!({
                        "name": e.name.as_ref(),
                        "version": e.version.as_ref(),
                        "origin": match e.origin {
                            corridor_config::Origin::File => "file",
                            corridor_config::Origin::Xds => "xds",
                        },
                        "compile_id": e.compile_id,
                        "resource": e.source.to_json(),
                    })
                })
                .collect();
            resources.insert(kind.name().to_string(), list.into());
        }
        let warming: Vec<serde_json::Value> = snap
            .store
            .warming()
            .into_iter()
            .map(|w| serde_json::json!({"type": w.kind.name(), "name": w.name, "waiting_for": w.waiting_for}))
            .collect();
        let body = serde_json::json!({
            "version": snap.version.as_ref(),
            "loaded_at": humantime::format_rfc3339_seconds(snap.loaded_at).to_string(),
            "source": self.shared.config_file.as_ref().map_or_else(|| "<embedded>".to_string(), |p| p.display().to_string()),
            "listeners_serving": self.shared.listeners.serving().iter().map(|(n, a)| serde_json::json!({"name": n.as_ref(), "address": a.to_string()})).collect::<Vec<_>>(),
            "resources": resources,
            "warming": warming,
            "xds": self.xds_status(),
        });
        let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
        reply(StatusCode::OK, "application/json", body)
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        if method != http::Method::GET && method != http::Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the admin API is read-only: use GET\n",
            );
        }
        match path.as_str() {
            "/ready" if self.shared.is_draining() => {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
            "/ready" if !self.shared.is_configured() => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "waiting for the first configuration from the control plane\n",
            ),
            "/ready" => text(StatusCode::OK, "ready\n"),
            "/live" => text(StatusCode::OK, "live\n"),
            "/metrics" => self.metrics(),
            "/config_dump" => match self.authorize_config_dump(session) {
                Ok(()) => self.config_dump(),
                Err(resp) => resp,
            },
            // Endpoint addresses are as internal as the configuration.
            "/clusters" => match self.authorize_config_dump(session) {
                Ok(()) => self.clusters(),
                Err(resp) => resp,
            },
            "/" => text(
                StatusCode::OK,
                "corridor admin: /ready /live /metrics /config_dump /clusters\n",
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /ready /live /metrics /config_dump /clusters\n",
            ),
        }
    }
}

impl Admin {
    /// The control stream's state per type: version, last nonce, last ACK
    /// time and last NACK error; `null` without a control stream.
    fn xds_status(&self) -> serde_json::Value {
        let Some(status) = self.shared.xds.lock().clone() else {
            return serde_json::Value::Null;
        };
        let s = status.snapshot();
        let time = |t: Option<std::time::SystemTime>| {
            t.map(|t| humantime::format_rfc3339_millis(t).to_string())
        };
        let types: Vec<serde_json::Value> = s
            .types
            .iter()
            .map(|t| {
                serde_json::json!({
                    "type_url": t.type_url,
                    "version_info": t.version_info,
                    "last_nonce": t.last_nonce,
                    "last_ack_at": time(t.last_ack_at),
                    "last_nack": t.last_nack,
                    "last_nack_at": time(t.nack_at),
                    "resources": t.resources,
                    "acks": t.acks,
                    "nacks": t.nacks,
                })
            })
            .collect();
        serde_json::json!({
            "server": s.server,
            "variant": s.variant.as_str(),
            "connected": s.connected,
            "connected_at": time(s.connected_at),
            "reconnects": s.reconnects,
            "last_error": s.last_error,
            "ready": s.ready,
            "types": types,
        })
    }

    /// Checks `Authorization: Bearer <token>` against the token file, when one is configured.
    /// The file is read on each request, so a rotated token takes effect at once.
    #[allow(clippy::result_large_err)]
    fn authorize_config_dump(&self, session: &ServerSession) -> Result<(), Response<Vec<u8>>> {
        let Some(file) = self.shared.snapshot().admin.config_dump_token_file.clone() else {
            return Ok(());
        };
        let token = match self
            .shared
            .files()
            .read(file.as_ref())
            .map(String::from_utf8)
        {
            Ok(Ok(t)) if !t.trim().is_empty() => t.trim().to_string(),
            Ok(_) | Err(_) => {
                tracing::error!(file = %file, "config_dump token file is empty, not text or unreadable; refusing /config_dump");
                return Err(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the config_dump token file cannot be read\n",
                ));
            }
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim_start());
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Ok(());
        }
        let mut resp = text(
            StatusCode::UNAUTHORIZED,
            "/config_dump needs `Authorization: Bearer <token>`\n",
        );
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        Err(resp)
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Vec<u8>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        body.into().into_bytes(),
    )
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .expect("static response parts are valid")
}
