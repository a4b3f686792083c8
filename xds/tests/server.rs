//! The reference server driven by a raw gRPC client over 127.0.0.1 (no
//! `Client`): garbage requests, unknown types, stale and matching nonces,
//! resends while a response is pending, NACKs not resent, subscription
//! changes, delta `initial_resource_versions` and removals, the per-stream
//! type limit, and shutdown ending open streams.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use corridor_xds::{set_version, MemorySource, ServerOptions, TYPE_URL_PREFIX};
use disc::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use disc::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::discovery::v3 as disc;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

async fn grpc(addr: std::net::SocketAddr) -> AggregatedDiscoveryServiceClient<Channel> {
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

async fn next<T>(inbound: &mut Streaming<T>) -> T {
    tokio::time::timeout(DEADLINE, inbound.message())
        .await
        .expect("a response in time")
        .expect("no stream error")
        .expect("the stream is open")
}

async fn quiet<T: std::fmt::Debug>(inbound: &mut Streaming<T>) {
    if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), inbound.message()).await {
        panic!("unexpected: {r:?}");
    }
}

fn req(type_url: &str, version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn nack(detail: &str) -> Option<RpcStatus> {
    Some(RpcStatus {
        code: 3,
        message: detail.into(),
        details: vec![],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_protocol() {
    init_tracing();
    let c = cluster();
    let source = Arc::new(MemorySource::new());
    source.set(&c, "a", "1", body(&c, "a", "a"));
    source.set(&c, "b", "1", body(&c, "b", "b"));
    let srv = TestServer::start(Arc::clone(&source), ServerOptions::default(), 0).await;
    let registry = srv.server.registry();
    let (tx, rx) = mpsc::channel(16);
    let mut inbound = grpc(srv.addr)
        .await
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();

    // No type URL: ignored (the node is still registered).
    let mut first = req("", "", "");
    first.node = Some(corridor_xds::Node {
        id: "raw".into(),
        ..Default::default()
    });
    tx.send(first).await.expect("send");
    quiet(&mut inbound).await;
    wait_for("node registered", || {
        registry
            .node("raw")
            .is_some_and(|n| n.connected && n.types.is_empty())
    })
    .await;

    // An unknown type gets an empty set.
    let nope = format!("{TYPE_URL_PREFIX}Nope");
    tx.send(req(&nope, "", "")).await.expect("send");
    let r = next(&mut inbound).await;
    assert_eq!(r.type_url, nope);
    assert!(r.resources.is_empty());
    assert_eq!(r.version_info, set_version(std::iter::empty()));
    assert!(!r.nonce.is_empty());

    // Subscribe: the full set, as plain Anys.
    tx.send(req(&c, "", "")).await.expect("send");
    let r1: DiscoveryResponse = next(&mut inbound).await;
    assert_eq!(r1.resources.len(), 2);
    assert_eq!(r1.resources[0], body(&c, "a", "a"));
    assert_eq!(r1.version_info, set_version([("a", "1"), ("b", "1")]));
    wait_for("pending nonce", || {
        registry.node("raw").is_some_and(|n| {
            n.types
                .iter()
                .any(|t| t.type_url == c && t.pending_nonce.as_ref() == Some(&r1.nonce))
        })
    })
    .await;
    let cluster_status = || {
        registry
            .node("raw")
            .and_then(|n| n.types.into_iter().find(|t| t.type_url == c))
    };

    // A NACK with a stale nonce is ignored; the matching ACK is recorded.
    let mut stale = req(&c, "", "bogus");
    stale.error_detail = nack("stale");
    tx.send(stale).await.expect("send");
    tx.send(req(&c, &r1.version_info, &r1.nonce))
        .await
        .expect("send");
    wait_for("ACK recorded", || {
        cluster_status().is_some_and(|t| t.acked_version == r1.version_info)
    })
    .await;
    assert_eq!(cluster_status().and_then(|t| t.last_nack), None);

    // Two changes in a row while the first is unanswered: both are sent; an
    // ACK of the older nonce is stale, the newer one counts.
    source.set(&c, "a", "2", body(&c, "a", "a2"));
    let r2 = next(&mut inbound).await;
    source.set(&c, "a", "3", body(&c, "a", "a3"));
    let r3 = next(&mut inbound).await;
    assert_ne!(r2.nonce, r3.nonce);
    assert_eq!(r3.version_info, set_version([("a", "3"), ("b", "1")]));
    tx.send(req(&c, &r2.version_info, &r2.nonce))
        .await
        .expect("send");
    tx.send(req(&c, &r3.version_info, &r3.nonce))
        .await
        .expect("send");
    wait_for("newest ACK recorded", || {
        cluster_status().is_some_and(|t| t.acked_version == r3.version_info)
    })
    .await;

    // A change to another type does not resend this one.
    source.set(&endpoints(), "e", "1", body(&endpoints(), "e", "e"));
    quiet(&mut inbound).await;

    // A NACK (with a huge message) is recorded, truncated, and not answered
    // by resending the same version.
    source.set(&c, "b", "2", body(&c, "b", "b2"));
    let r4 = next(&mut inbound).await;
    let mut n = req(&c, &r3.version_info, &r4.nonce);
    n.error_detail = nack(&"x".repeat(100_000));
    tx.send(n).await.expect("send");
    wait_for("NACK recorded", || {
        cluster_status().is_some_and(|t| t.nacks == 1)
    })
    .await;
    let t = cluster_status().expect("status");
    assert!(t.last_nack.as_ref().is_some_and(|m| m.len() <= 4100));
    assert_eq!(t.acked_version, r3.version_info);
    assert_eq!(t.pending_nonce, None);
    quiet(&mut inbound).await;

    // Narrowing the subscription to explicit names resends the narrower set.
    let mut narrow = req(&c, &r3.version_info, &r4.nonce);
    narrow.resource_names = vec!["b".into()];
    tx.send(narrow).await.expect("send");
    let r5 = next(&mut inbound).await;
    assert_eq!(r5.resources, vec![body(&c, "b", "b2")]);
    assert_eq!(r5.version_info, set_version([("b", "2")]));

    // Shutdown ends the stream even though the client keeps its side open.
    srv.stop().await;
    let end = tokio::time::timeout(DEADLINE, inbound.message())
        .await
        .expect("ends in time");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    assert!(registry.node("raw").is_some_and(|n| !n.connected));
    drop(tx);
}

fn dreq(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn added(r: &DeltaDiscoveryResponse) -> Vec<(String, String)> {
    r.resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_protocol() {
    init_tracing();
    let c = cluster();
    let source = Arc::new(MemorySource::new());
    source.set(&c, "a", "1", body(&c, "a", "a"));
    source.set(&c, "b", "1", body(&c, "b", "b"));
    let srv = TestServer::start(Arc::clone(&source), ServerOptions::default(), 0).await;
    let registry = srv.server.registry();
    let (tx, rx) = mpsc::channel(256);
    let mut inbound = grpc(srv.addr)
        .await
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();

    // Wildcard with initial versions: a is current, b is stale, ghost is gone.
    let mut first = dreq(&c, "");
    first.node = Some(corridor_xds::Node {
        id: "raw-d".into(),
        ..Default::default()
    });
    first.initial_resource_versions = HashMap::from([
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "0".to_string()),
        ("ghost".to_string(), "1".to_string()),
    ]);
    tx.send(first).await.expect("send");
    let r1 = next(&mut inbound).await;
    assert_eq!(added(&r1), [("b".to_string(), "1".to_string())]);
    assert_eq!(r1.removed_resources, ["ghost"]);
    assert_eq!(
        r1.system_version_info,
        set_version([("a", "1"), ("b", "1")])
    );
    tx.send(dreq(&c, &r1.nonce)).await.expect("send");
    wait_for("ACK recorded", || {
        registry
            .node("raw-d")
            .is_some_and(|n| n.types[0].acks == 1 && n.types[0].resources == 2)
    })
    .await;

    // Only what changed is sent; a NACK is recorded and the version not resent.
    source.set(&c, "b", "2", body(&c, "b", "b2"));
    let r2 = next(&mut inbound).await;
    assert_eq!(added(&r2), [("b".to_string(), "2".to_string())]);
    let mut n = dreq(&c, &r2.nonce);
    n.error_detail = nack("no thanks");
    tx.send(n).await.expect("send");
    wait_for("NACK recorded", || {
        registry
            .node("raw-d")
            .is_some_and(|n| n.types[0].last_nack.as_deref() == Some("no thanks"))
    })
    .await;
    quiet(&mut inbound).await;
    source.remove(&c, "a");
    let r3 = next(&mut inbound).await;
    assert!(r3.resources.is_empty());
    assert_eq!(r3.removed_resources, ["a"]);

    // Leave the wildcard for explicit names: nothing new to send for b.
    let mut narrow = dreq(&c, &r3.nonce);
    narrow.resource_names_unsubscribe = vec!["*".into()];
    narrow.resource_names_subscribe = vec!["b".into()];
    tx.send(narrow).await.expect("send");
    quiet(&mut inbound).await;
    // New resources outside the subscription are not sent; subscribed ones are.
    source.set(&c, "z", "1", body(&c, "z", "z"));
    quiet(&mut inbound).await;
    let mut more = dreq(&c, "");
    more.resource_names_subscribe = vec!["z".into()];
    tx.send(more).await.expect("send");
    let r4 = next(&mut inbound).await;
    assert_eq!(added(&r4), [("z".to_string(), "1".to_string())]);

    // At most 64 types per stream: 100 more types get 63 answers.
    for i in 0..100 {
        tx.send(dreq(&format!("{TYPE_URL_PREFIX}T{i}"), ""))
            .await
            .expect("send");
    }
    for _ in 0..63 {
        let r = next(&mut inbound).await;
        assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    }
    quiet(&mut inbound).await;
    assert_eq!(registry.node("raw-d").map(|n| n.types.len()), Some(64));

    // Shutdown ends the stream.
    srv.stop().await;
    let end = tokio::time::timeout(DEADLINE, inbound.message())
        .await
        .expect("ends in time");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    drop(tx);
}
