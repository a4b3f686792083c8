//! The client against misbehaving servers written here on tonic's generated
//! trait (and one hand-written service that sends undecodable bytes): wrong
//! resource types, unsubscribed types, duplicate names, garbage bodies, a
//! burst of 1000 responses, closed and failed streams, silence. The client
//! must NACK or ignore as specified, never stop, reconnect, and converge
//! once a well-behaved server appears on the same port.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use corridor_xds::{Any, Client, MemorySource, ServerOptions, RESOURCE_WRAPPER_TYPE_URL};
use disc::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use disc::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::discovery::v3 as disc;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// One stream opened by the client on the raw server: what it sent, and a
/// handle to answer it. Dropping `responses` ends the stream (OK trailers).
struct RawStream<Q, R> {
    requests: mpsc::UnboundedReceiver<Q>,
    responses: mpsc::UnboundedSender<Result<R, Status>>,
}

impl<Q, R> RawStream<Q, R> {
    async fn recv(&mut self) -> Q {
        tokio::time::timeout(DEADLINE, self.requests.recv())
            .await
            .expect("a request in time")
            .expect("the stream is open")
    }

    fn send(&self, resp: R) {
        self.responses.send(Ok(resp)).expect("the stream is open");
    }

    /// Asserts no request arrives for a short while.
    async fn quiet(&mut self) {
        if let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(200), self.requests.recv()).await
        {
            panic!("unexpected request");
        }
    }
}

type SotwStream = RawStream<DiscoveryRequest, DiscoveryResponse>;
type DeltaStream = RawStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

/// A scripted ADS server: every stream the client opens is handed to the test.
struct RawAds {
    sotw: mpsc::UnboundedSender<SotwStream>,
    delta: mpsc::UnboundedSender<DeltaStream>,
}

fn pipe<Q: Send + 'static, R>(
    mut inbound: Streaming<Q>,
) -> (RawStream<Q, R>, mpsc::UnboundedReceiver<Result<R, Status>>) {
    let (req_tx, requests) = mpsc::unbounded_channel();
    let (responses, resp_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(req)) = inbound.next().await {
            if req_tx.send(req).is_err() {
                break;
            }
        }
    });
    (
        RawStream {
            requests,
            responses,
        },
        resp_rx,
    )
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for RawAds {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (stream, rx) = pipe(request.into_inner());
        let _ = self.sotw.send(stream);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (stream, rx) = pipe(request.into_inner());
        let _ = self.delta.send(stream);
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// A running server of some kind on a task, stoppable.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        // Raw streams may still be open; do not wait for them to drain.
        if tokio::time::timeout(Duration::from_millis(500), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

fn run_router(listener: TcpListener, router: tonic::transport::server::Router) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    Running { stop, task }
}

struct Raw {
    sotw: mpsc::UnboundedReceiver<SotwStream>,
    delta: mpsc::UnboundedReceiver<DeltaStream>,
    running: Running,
}

impl Raw {
    fn start(listener: TcpListener) -> Self {
        let (sotw_tx, sotw) = mpsc::unbounded_channel();
        let (delta_tx, delta) = mpsc::unbounded_channel();
        let svc = AggregatedDiscoveryServiceServer::new(RawAds {
            sotw: sotw_tx,
            delta: delta_tx,
        });
        let router = tonic::transport::Server::builder().add_service(svc);
        Raw {
            sotw,
            delta,
            running: run_router(listener, router),
        }
    }

    async fn next_sotw(&mut self) -> SotwStream {
        tokio::time::timeout(DEADLINE, self.sotw.recv())
            .await
            .expect("a SotW stream in time")
            .expect("server alive")
    }

    /// Stops the server and drops every stream it still holds, so the
    /// client's open streams end.
    async fn stop(self) {
        let Raw {
            sotw,
            delta,
            running,
        } = self;
        running.stop().await;
        drop((sotw, delta));
    }

    async fn next_delta(&mut self) -> DeltaStream {
        tokio::time::timeout(DEADLINE, self.delta.recv())
            .await
            .expect("a delta stream in time")
            .expect("server alive")
    }
}

fn sotw_response(
    type_url: &str,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: type_url.into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

fn delta_resource(name: &str, body: Any) -> disc::Resource {
    disc::Resource {
        name: name.into(),
        version: "1".into(),
        resource: Some(body),
        ..Default::default()
    }
}

fn delta_response(
    type_url: &str,
    nonce: &str,
    resources: Vec<disc::Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: "sys".into(),
        resources,
        type_url: type_url.into(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

fn wrapped(name: &str, body: Any) -> Any {
    let w = disc::Resource {
        name: name.into(),
        resource: Some(body),
        ..Default::default()
    };
    Any {
        type_url: RESOURCE_WRAPPER_TYPE_URL.into(),
        value: w.encode_to_vec(),
    }
}

fn nack_message(req: &DiscoveryRequest) -> String {
    let e = req.error_detail.as_ref().expect("a NACK");
    assert_eq!(e.code, 3, "INVALID_ARGUMENT");
    e.message.clone()
}

/// Undecodable on the wire: field 2 (`resources`, a message) sent as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(uint64, tag = "2")]
    resources: u64,
    #[prost(string, tag = "4")]
    type_url: String,
}

/// A hand-written ADS service whose StreamAggregatedResources answers with
/// bytes that do not decode as a `DiscoveryResponse`.
#[derive(Clone)]
struct GarbageAds {
    streams: Arc<AtomicUsize>,
}

impl tonic::server::NamedService for GarbageAds {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

struct GarbageMethod;

type GarbageStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Garbage, Status>> + Send>>;

impl tonic::server::StreamingService<DiscoveryRequest> for GarbageMethod {
    type Response = Garbage;
    type ResponseStream = GarbageStream;
    type Future = tonic::codegen::BoxFuture<Response<GarbageStream>, Status>;

    fn call(&mut self, _request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        Box::pin(async {
            let garbage = Garbage {
                resources: 7,
                type_url: cluster(),
            };
            let stream = tokio_stream::iter([Ok(garbage)]).chain(tokio_stream::pending());
            Ok(Response::new(Box::pin(stream) as GarbageStream))
        })
    }
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for GarbageAds
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        self.streams.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.streaming(GarbageMethod, req).await)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_client_survives_a_misbehaving_server() {
    init_tracing();
    let (c, e) = (cluster(), endpoints());
    let listener = bind(0).await;
    let addr = listener.local_addr().expect("addr");
    let port = addr.port();

    let sink = Arc::new(TestSink::default());
    let client = Client::new(
        client_config(addr, "victim", false, &[c.clone(), e.clone()]),
        sink.clone(),
    );
    let status = client.status();
    let task = client.spawn();

    // Phase 0: undecodable responses. The client drops the stream and retries.
    let garbage = GarbageAds {
        streams: Arc::new(AtomicUsize::new(0)),
    };
    let counter = Arc::clone(&garbage.streams);
    let running = run_router(
        listener,
        tonic::transport::Server::builder().add_service(garbage),
    );
    wait_for("three garbage streams", || {
        counter.load(Ordering::SeqCst) >= 3
    })
    .await;
    wait_for("errors recorded", || {
        status
            .snapshot()
            .last_error
            .is_some_and(|e| e.contains("stream error"))
    })
    .await;
    running.stop().await;

    // Phase 1: a scripted server on the same port.
    let mut raw = Raw::start(bind(port).await);
    let mut s = raw.next_sotw().await;
    let first = s.recv().await;
    assert_eq!(first.type_url, c);
    assert!(
        first.node.as_ref().is_some_and(|n| n.id == "victim"),
        "node on the first request"
    );
    assert_eq!(first.version_info, "");
    assert_eq!(first.response_nonce, "");
    assert!(first.resource_names.is_empty(), "wildcard");
    let second = s.recv().await;
    assert_eq!(second.type_url, e);
    assert!(second.node.is_none(), "node only on the first request");

    // (a) A resource of the wrong type: NACK naming the index and type.
    s.send(sotw_response(
        &c,
        "v-a",
        "n-a",
        vec![body(&c, "x", "x"), body(&e, "y", "y")],
    ));
    let nack = s.recv().await;
    assert_eq!(nack.response_nonce, "n-a");
    assert_eq!(
        nack.version_info, "",
        "a NACK repeats the previous ACKed version"
    );
    let msg = nack_message(&nack);
    assert!(
        msg.contains("resource 1") && msg.contains("Endpoints"),
        "{msg}"
    );
    assert!(sink.names(&c).is_empty(), "the sink was not called");

    // (b) A response for a type never subscribed: ignored, no request.
    s.send(sotw_response(
        &format!("{}Nope", corridor_xds::TYPE_URL_PREFIX),
        "v",
        "n-b",
        vec![],
    ));
    s.quiet().await;

    // A good response is ACKed (responses are processed in order, so the
    // ignored one was handled before).
    s.send(sotw_response(&c, "v1", "n-1", vec![body(&c, "a", "a")]));
    let ack = s.recv().await;
    assert_eq!(status.snapshot().ignored_responses, 1);
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v1", "n-1")
    );
    assert!(ack.error_detail.is_none());
    assert_eq!(sink.names(&c), ["a"]);

    // (d) Garbage bytes in a body: the sink rejects; NACK with the old version.
    let junk = Any {
        type_url: c.clone(),
        value: vec![0xff, 0xfe, 0x00, 0x80],
    };
    s.send(sotw_response(&c, "v2", "n-d", vec![junk]));
    let nack = s.recv().await;
    assert_eq!(nack.version_info, "v1");
    assert!(nack_message(&nack).contains("UTF-8"));
    assert_eq!(sink.names(&c), ["a"]);

    // Duplicate names (wrapped resources) and an undecodable wrapper.
    s.send(sotw_response(
        &c,
        "v3",
        "n-dup",
        vec![
            wrapped("a", body(&c, "a", "1")),
            wrapped("a", body(&c, "a", "2")),
        ],
    ));
    assert!(nack_message(&s.recv().await).contains("duplicate"));
    let bad_wrapper = Any {
        type_url: RESOURCE_WRAPPER_TYPE_URL.into(),
        value: vec![0x0a, 0xff],
    };
    s.send(sotw_response(&c, "v3", "n-w", vec![bad_wrapper]));
    assert!(nack_message(&s.recv().await).contains("undecodable"));
    let ts = status.type_status(&c).expect("status");
    assert_eq!((ts.version_info.as_str(), ts.nacks, ts.acks), ("v1", 4, 1));

    // (e) A burst of 1000 responses: each one answered, in order.
    for i in 0..1000 {
        s.send(sotw_response(
            &c,
            &format!("burst-{i}"),
            &format!("b{i}"),
            vec![body(&c, "a", &format!("a{i}"))],
        ));
    }
    for i in 0..1000 {
        let ack = s.recv().await;
        assert_eq!(ack.response_nonce, format!("b{i}"));
        assert!(ack.error_detail.is_none());
    }
    assert_eq!(sink.payload(&c, "a").as_deref(), Some("a999"));
    assert_eq!(
        status.type_status(&c).map(|t| t.version_info),
        Some("burst-999".to_string())
    );

    // (f) The server closes the stream: the client reconnects and resumes
    // from its last ACKed version.
    drop(s);
    let mut s = raw.next_sotw().await;
    let first = s.recv().await;
    assert_eq!(first.type_url, c);
    assert_eq!(first.version_info, "burst-999");
    assert_eq!(first.response_nonce, "");
    assert!(first.node.is_some());
    let second = s.recv().await;
    assert_eq!(second.version_info, "");

    // A stream that fails with an error status: reconnect again.
    s.responses
        .send(Err(Status::unavailable("going away")))
        .expect("open");
    let mut s = raw.next_sotw().await;
    assert_eq!(s.recv().await.version_info, "burst-999");
    drop(s);
    assert!(status.snapshot().reconnects >= 5);
    raw.stop().await;

    // Phase 2: a well-behaved server on the same port; the client converges.
    let source = Arc::new(MemorySource::new());
    source.set(&c, "a", "9", body(&c, "a", "final"));
    source.set(&e, "e1", "1", body(&e, "e1", "ep"));
    let srv = TestServer::start(Arc::clone(&source), ServerOptions::default(), port).await;
    wait_for("converged", || {
        sink.payload(&c, "a").as_deref() == Some("final") && sink.names(&e) == ["e1"]
    })
    .await;
    tokio::time::timeout(DEADLINE, status.wait_ready())
        .await
        .expect("ready");
    assert!(!task.is_finished(), "the client keeps running");
    task.abort();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_client_survives_a_misbehaving_server() {
    init_tracing();
    let (c, e) = (cluster(), endpoints());
    let listener = bind(0).await;
    let addr = listener.local_addr().expect("addr");
    let port = addr.port();
    let mut raw = Raw::start(listener);

    let sink = Arc::new(TestSink::default());
    let client = Client::new(
        client_config(addr, "victim-d", true, &[c.clone(), e.clone()]),
        sink.clone(),
    );
    let status = client.status();
    let task = client.spawn();

    let mut s = raw.next_delta().await;
    let first = s.recv().await;
    assert_eq!(first.type_url, c);
    assert!(first.node.is_some());
    assert!(first.resource_names_subscribe.is_empty(), "legacy wildcard");
    assert!(first.initial_resource_versions.is_empty());
    assert_eq!(s.recv().await.type_url, e);

    let nacks = [
        // (c) duplicate names
        (
            delta_response(
                &c,
                "n-dup",
                vec![
                    delta_resource("a", body(&c, "a", "1")),
                    delta_resource("a", body(&c, "a", "2")),
                ],
                &[],
            ),
            "duplicate",
        ),
        // a name both added and removed
        (
            delta_response(
                &c,
                "n-both",
                vec![delta_resource("a", body(&c, "a", "1"))],
                &["a"],
            ),
            "both added and removed",
        ),
        // no name
        (
            delta_response(
                &c,
                "n-noname",
                vec![delta_resource("", body(&c, "a", "1"))],
                &[],
            ),
            "no name",
        ),
        // (a) wrong type
        (
            delta_response(
                &c,
                "n-type",
                vec![delta_resource("a", body(&e, "a", "1"))],
                &[],
            ),
            "has type",
        ),
        // no body
        (
            delta_response(
                &c,
                "n-nobody",
                vec![disc::Resource {
                    name: "a".into(),
                    ..Default::default()
                }],
                &[],
            ),
            "no body",
        ),
        // (d) garbage bytes: the sink rejects
        (
            delta_response(
                &c,
                "n-junk",
                vec![delta_resource(
                    "a",
                    Any {
                        type_url: c.clone(),
                        value: vec![0xc3, 0x28],
                    },
                )],
                &[],
            ),
            "UTF-8",
        ),
    ];
    for (resp, want) in nacks {
        let nonce = resp.nonce.clone();
        s.send(resp);
        let req = s.recv().await;
        assert_eq!(req.response_nonce, nonce);
        assert_eq!(req.type_url, c);
        let e = req.error_detail.expect("a NACK");
        assert_eq!(e.code, 3);
        assert!(
            e.message.contains(want),
            "{} should mention {want}",
            e.message
        );
    }
    assert!(sink.names(&c).is_empty());

    // (b) an unsubscribed type is ignored.
    s.send(delta_response(
        "type.googleapis.com/other.Thing",
        "n-other",
        vec![],
        &[],
    ));
    s.quiet().await;

    // Good responses are ACKed; a removal of an unknown name is harmless.
    s.send(delta_response(
        &c,
        "n-ok",
        vec![
            delta_resource("a", body(&c, "a", "A")),
            delta_resource("b", body(&c, "b", "B")),
        ],
        &["zz"],
    ));
    let ack = s.recv().await;
    assert_eq!(status.snapshot().ignored_responses, 1);
    assert_eq!(ack.response_nonce, "n-ok");
    assert!(ack.error_detail.is_none());
    assert_eq!(sink.names(&c), ["a", "b"]);
    s.send(delta_response(
        &e,
        "n-e",
        vec![delta_resource("e1", body(&e, "e1", "E"))],
        &[],
    ));
    assert!(s.recv().await.error_detail.is_none());
    tokio::time::timeout(DEADLINE, status.wait_ready())
        .await
        .expect("ready");

    // (e) a burst of 1000 responses.
    for i in 0..1000 {
        s.send(delta_response(
            &c,
            &format!("b{i}"),
            vec![delta_resource("a", body(&c, "a", &format!("a{i}")))],
            &[],
        ));
    }
    for i in 0..1000 {
        let ack = s.recv().await;
        assert_eq!(ack.response_nonce, format!("b{i}"));
        assert!(ack.error_detail.is_none());
    }
    assert_eq!(sink.payload(&c, "a").as_deref(), Some("a999"));

    // (f) close: the client reconnects with what it holds.
    drop(s);
    let mut s = raw.next_delta().await;
    let first = s.recv().await;
    assert_eq!(first.type_url, c);
    let mut held: Vec<_> = first.initial_resource_versions.keys().cloned().collect();
    held.sort();
    assert_eq!(held, ["a", "b"]);
    let second = s.recv().await;
    assert_eq!(second.initial_resource_versions.len(), 1);
    drop(s);
    raw.stop().await;

    // A well-behaved server appears: convergence, including the removal of b.
    let source = Arc::new(MemorySource::new());
    source.set(&c, "a", "9", body(&c, "a", "final"));
    source.set(&e, "e1", "1", body(&e, "e1", "E"));
    let srv = TestServer::start(Arc::clone(&source), ServerOptions::default(), port).await;
    wait_for("converged", || {
        sink.names(&c) == ["a"] && sink.payload(&c, "a").as_deref() == Some("final")
    })
    .await;
    assert!(!task.is_finished());
    task.abort();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server() {
    init_tracing();
    let c = cluster();
    let listener = bind(0).await;
    let addr = listener.local_addr().expect("addr");
    let mut raw = Raw::start(listener);

    // Without a response timeout the client waits, connected, not ready.
    let patient = Client::new(
        client_config(addr, "patient", false, std::slice::from_ref(&c)),
        Arc::new(TestSink::default()),
    );
    let patient_status = patient.status();
    let patient_task = patient.spawn();
    let _patient_stream = raw.next_sotw().await;

    // With one, it gives up on the silent stream and reconnects.
    let mut cfg = client_config(addr, "impatient", false, std::slice::from_ref(&c));
    cfg.response_timeout = Some(Duration::from_millis(200));
    let impatient = Client::new(cfg, Arc::new(TestSink::default()));
    let status = impatient.status();
    let task = impatient.spawn();
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(raw.next_sotw().await);
    }
    wait_for("reconnects counted", || status.snapshot().reconnects >= 2).await;
    assert!(status
        .snapshot()
        .last_error
        .is_some_and(|e| e.contains("no response")));

    let snap = patient_status.snapshot();
    assert!(
        snap.connected && !snap.ready && snap.reconnects == 0,
        "{snap:?}"
    );
    patient_task.abort();
    task.abort();
    raw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_invalid_servers() {
    init_tracing();
    // Nothing listens: the client keeps retrying and records why.
    let listener = bind(0).await;
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = Client::new(
        client_config(addr, "lonely", false, &[cluster()]),
        Arc::new(TestSink::default()),
    );
    let status = client.status();
    let task = client.spawn();
    wait_for("several attempts", || status.snapshot().reconnects >= 3).await;
    assert!(status
        .snapshot()
        .last_error
        .is_some_and(|e| e.contains("connecting")));
    assert!(!task.is_finished());
    task.abort();

    // A nonsense address never panics either.
    let mut cfg = client_config(addr, "lost", true, &[cluster()]);
    cfg.server = "http://[not an address".into();
    let client = Client::new(cfg, Arc::new(TestSink::default()));
    let status = client.status();
    let task = client.spawn();
    wait_for("several attempts", || status.snapshot().reconnects >= 3).await;
    assert!(status
        .snapshot()
        .last_error
        .is_some_and(|e| e.contains("bad server address")));
    task.abort();
}
