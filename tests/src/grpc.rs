//! A tonic gRPC test service over h2c: `corridor.test.Echo` (bidi + unary) that echoes
//! each message tagged with the server's name, and can end with any status on request
//! (metadata `x-fail-code: <n>`) to prove `grpc-status`/`grpc-message` trailers survive
//! a proxy; and `grpc.health.v1.Health/Check`, answering what
//! [`GrpcServer::set_serving`] set (the server as a whole serves by default). The
//! generated client is re-exported for tests to dial the proxy.

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use futures::Stream;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{Code, Request, Response, Status, Streaming};

/// Code generated from `proto/echo.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("corridor.test");
}

/// Code generated from `proto/grpc/health/v1/health.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod health_pb {
    tonic::include_proto!("grpc.health.v1");
}

use health_pb::health_check_response::ServingStatus;
use health_pb::health_server::{Health, HealthServer};
use health_pb::{HealthCheckRequest, HealthCheckResponse};

pub use pb::echo_client::EchoClient;
pub use pb::echo_server::{Echo, EchoServer};
pub use pb::EchoMsg;

/// The message every deliberately failed call ends with.
pub const FAIL_MESSAGE: &str = "failed on purpose";

/// [`FAIL_MESSAGE`] as it appears in the raw `grpc-message` trailer (percent-encoded).
pub const FAIL_MESSAGE_ON_WIRE: &str = "failed%20on%20purpose";

/// A running gRPC echo server on 127.0.0.1; stops accepting when dropped.
pub struct GrpcServer {
    addr: SocketAddr,
    name: String,
    calls: Arc<AtomicU64>,
    last_metadata: Arc<Mutex<Option<http::HeaderMap>>>,
    serving: Arc<Mutex<std::collections::HashMap<String, bool>>>,
    task: JoinHandle<()>,
}

impl GrpcServer {
    /// Starts a server whose replies say `from <name>`; panics if it cannot bind.
    pub async fn start(name: &str) -> GrpcServer {
        GrpcServer::try_start(name)
            .await
            .unwrap_or_else(|e| panic!("starting gRPC server {name:?}: {e:#}"))
    }

    /// Starts a server on `127.0.0.1:0`.
    pub async fn try_start(name: &str) -> anyhow::Result<GrpcServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding gRPC server")?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicU64::new(0));
        let last_metadata = Arc::new(Mutex::new(None));
        let svc = EchoService {
            name: name.to_owned(),
            calls: calls.clone(),
            last_metadata: last_metadata.clone(),
        };
        let serving = Arc::new(Mutex::new(std::collections::HashMap::from([(
            String::new(),
            true,
        )])));
        let health = HealthService {
            serving: serving.clone(),
        };
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(EchoServer::new(svc))
                .add_service(HealthServer::new(health))
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(GrpcServer {
            addr,
            name: name.to_owned(),
            calls,
            last_metadata,
            serving,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name used in replies.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://addr` for `tonic::transport::Endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls (of either method) received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// What `grpc.health.v1.Health/Check` answers for `service` ("" = the
    /// whole server): SERVING or NOT_SERVING.
    pub fn set_serving(&self, service: &str, serving: bool) {
        self.serving.lock().insert(service.to_owned(), serving);
    }

    /// Request headers (metadata) of the most recent call.
    pub fn last_metadata(&self) -> Option<http::HeaderMap> {
        self.last_metadata.lock().clone()
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish()
    }
}

/// Connects a generated client to `addr` (the server or a proxy in front of it) over h2c.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<EchoClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("gRPC connect to {addr}"))?;
    Ok(EchoClient::new(channel))
}

/// The health service behind [`GrpcServer`].
struct HealthService {
    serving: Arc<Mutex<std::collections::HashMap<String, bool>>>,
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        let Some(serving) = self.serving.lock().get(&service).copied() else {
            return Err(Status::not_found(format!("unknown service `{service}`")));
        };
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }
}

/// The echo service behind [`GrpcServer`].
struct EchoService {
    name: String,
    calls: Arc<AtomicU64>,
    last_metadata: Arc<Mutex<Option<http::HeaderMap>>>,
}

impl EchoService {
    /// Counts the call, remembers its metadata, and returns the requested failure code.
    fn begin<T>(&self, req: &Request<T>) -> Result<Option<Code>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        *self.last_metadata.lock() = Some(req.metadata().clone().into_headers());
        let Some(v) = req.metadata().get("x-fail-code") else {
            return Ok(None);
        };
        let code: i32 = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Status::invalid_argument("x-fail-code must be a number"))?;
        Ok(Some(Code::from_i32(code)))
    }

    fn reply(&self, msg: EchoMsg) -> EchoMsg {
        EchoMsg {
            text: format!("{} from {}", msg.text, self.name),
            seq: msg.seq,
        }
    }
}

type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoMsg, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Echo for EchoService {
    type BidiStream = EchoStream;

    async fn bidi(&self, req: Request<Streaming<EchoMsg>>) -> Result<Response<EchoStream>, Status> {
        let fail = self.begin(&req)?;
        let name = self.name.clone();
        let inbound = req.into_inner();
        // State: Some((inbound, fail)) while open; None once the final item was produced.
        let out = futures::stream::unfold(Some((inbound, fail)), move |st| {
            let name = name.clone();
            async move {
                let (mut inbound, fail) = st?;
                match inbound.message().await {
                    Ok(Some(m)) => {
                        let reply = EchoMsg {
                            text: format!("{} from {name}", m.text),
                            seq: m.seq,
                        };
                        Some((Ok(reply), Some((inbound, fail))))
                    }
                    // Client half-closed: end OK, or with the requested status.
                    Ok(None) => fail.map(|code| (Err(Status::new(code, FAIL_MESSAGE)), None)),
                    // Client went away or sent garbage: report it and stop.
                    Err(status) => Some((Err(status), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn unary(&self, req: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
        if let Some(code) = self.begin(&req)? {
            return Err(Status::new(code, FAIL_MESSAGE));
        }
        Ok(Response::new(self.reply(req.into_inner())))
    }
}
