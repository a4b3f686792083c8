//! State of the world, client against the reference server over real gRPC on
//! 127.0.0.1: initial sync, change propagation, NACK recorded on both sides
//! and not resent, recovery by a later change, plain and wrapped resources,
//! reconnection to a restarted server, explicit resource names.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use corridor_xds::{Client, MemorySource, ServerOptions, Update};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

async fn scenario(wrap: bool) {
    init_tracing();
    let (c, e) = (cluster(), endpoints());
    let source = Arc::new(MemorySource::new());
    source.set(&c, "a", "1", body(&c, "a", "alpha"));
    source.set(&c, "b", "1", body(&c, "b", "beta"));
    source.set(&e, "e1", "1", body(&e, "e1", "ep"));
    let opts = ServerOptions {
        wrap_sotw_resources: wrap,
        ..ServerOptions::default()
    };
    let srv = TestServer::start(Arc::clone(&source), opts.clone(), 0).await;
    let registry = srv.server.registry();

    let sink = Arc::new(TestSink::default());
    let mut cfg = client_config(srv.addr, "node-1", false, &[c.clone(), e.clone()]);
    let mut fields = HashMap::new();
    fields.insert(
        "region".to_string(),
        Value {
            kind: Some(Kind::StringValue("eu-west".into())),
        },
    );
    cfg.node.metadata = Some(Struct { fields });
    let client = Client::new(cfg, sink.clone());
    let status = client.status();
    let task = client.spawn();

    // Initial sync.
    tokio::time::timeout(DEADLINE, status.wait_ready())
        .await
        .expect("client ready");
    assert_eq!(sink.names(&c), ["a", "b"]);
    assert_eq!(sink.names(&e), ["e1"]);
    let snap = status.snapshot();
    assert!(snap.connected);
    assert!(snap.ready);
    assert_eq!(snap.types.len(), 2);
    let ct = &snap.types[0];
    assert_eq!(ct.type_url, c);
    assert_eq!(ct.resources, 2);
    assert!(!ct.version_info.is_empty());
    assert_eq!(ct.last_nack, None);
    assert_eq!(sink.held(&c).version_info, ct.version_info);
    // Wrapped resources carry their own version; plain ones get the response's.
    let want_version = if wrap {
        "1".to_string()
    } else {
        ct.version_info.clone()
    };
    assert_eq!(sink.version(&c, "a"), Some(want_version));

    wait_for("registry shows both types ACKed", || {
        registry.node("node-1").is_some_and(|n| {
            n.connected
                && n.types.len() == 2
                && n.types
                    .iter()
                    .all(|t| t.pending_nonce.is_none() && !t.acked_version.is_empty())
        })
    })
    .await;
    let node = registry.node("node-1").expect("node");
    assert_eq!(node.cluster, "test-cluster");
    assert_eq!(
        node.metadata.get("region").map(String::as_str),
        Some("eu-west")
    );
    assert_eq!(node.variant, corridor_xds::Variant::Sotw);
    assert_eq!(node.types[0].acked_version, ct.version_info);
    assert_eq!(node.types[0].resources, 2);

    // A change reaches the client.
    source.set(&c, "c", "1", body(&c, "c", "gamma"));
    wait_for("cluster c arrives", || sink.names(&c) == ["a", "b", "c"]).await;
    wait_for("c ACKed", || {
        status.type_status(&c).is_some_and(|t| t.resources == 3)
    })
    .await;
    let acked = status.type_status(&c).expect("cluster status").version_info;

    // The sink rejects one resource: NACK, old state kept, both sides see it.
    source.set(&c, "bad", "1", body(&c, "bad", "reject-me"));
    wait_for("client NACKs", || {
        status
            .type_status(&c)
            .is_some_and(|t| t.last_nack.is_some())
    })
    .await;
    let ts = status.type_status(&c).expect("cluster status");
    let nack = ts.last_nack.clone().unwrap_or_default();
    assert!(nack.contains("rejected bad"), "{nack}");
    assert_eq!(ts.version_info, acked, "a NACK keeps the ACKed version");
    assert_eq!(ts.nacks, 1);
    assert_eq!(sink.names(&c), ["a", "b", "c"]);
    wait_for("registry shows the NACK", || {
        registry.node("node-1").is_some_and(|n| {
            n.types[0]
                .last_nack
                .as_deref()
                .is_some_and(|m| m.contains("rejected bad"))
                && n.types[0].pending_nonce.is_none()
        })
    })
    .await;
    let node = registry.node("node-1").expect("node");
    assert_eq!(node.types[0].acked_version, acked);
    assert_eq!(node.types[0].nacks, 1);
    // Endpoints were untouched.
    assert_eq!(node.types[1].nacks, 0);

    // A later valid change is ACKed; the rejected set was never resent.
    source.remove(&c, "bad");
    source.set(&c, "a", "2", body(&c, "a", "alpha2"));
    wait_for("a v2 arrives", || {
        sink.payload(&c, "a").as_deref() == Some("alpha2")
    })
    .await;
    wait_for("a v2 ACKed", || {
        status
            .type_status(&c)
            .is_some_and(|t| t.version_info != acked && t.last_ack_at > t.nack_at)
    })
    .await;
    let ts = status.type_status(&c).expect("cluster status");
    assert_eq!(ts.nacks, 1, "the NACKed version must not be resent");
    wait_for("registry shows the new ACK", || {
        registry
            .node("node-1")
            .is_some_and(|n| n.types[0].acked_version == ts.version_info)
    })
    .await;
    assert_eq!(registry.node("node-1").map(|n| n.types[0].nacks), Some(1));

    // Restart the server on the same port: the client reconnects and resyncs,
    // including a change made while it was away.
    let port = srv.addr.port();
    srv.stop().await;
    wait_for("client notices", || !status.snapshot().connected).await;
    assert!(
        registry.node("node-1").is_some_and(|n| !n.connected),
        "old registry keeps the closed stream"
    );
    source.set(&c, "d", "1", body(&c, "d", "delta"));
    let srv = TestServer::start(Arc::clone(&source), opts, port).await;
    wait_for("d arrives after reconnect", || {
        sink.names(&c) == ["a", "b", "c", "d"]
    })
    .await;
    let snap = status.snapshot();
    assert!(snap.reconnects >= 1);
    assert!(snap.connected);
    let registry = srv.server.registry();
    wait_for("new registry shows the node", || {
        registry.node("node-1").is_some_and(|n| {
            n.connected && n.types.len() == 2 && n.types.iter().all(|t| t.acks >= 1)
        })
    })
    .await;

    task.abort();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_plain_resources() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_wrapped_resources() {
    scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_names_both_variants() {
    init_tracing();
    let c = cluster();
    let source = Arc::new(MemorySource::new());
    for name in ["a", "b", "c"] {
        source.set(&c, name, "1", body(&c, name, name));
    }
    let srv = TestServer::start(Arc::clone(&source), ServerOptions::default(), 0).await;
    let mut tasks = Vec::new();
    let mut sinks = Vec::new();
    for delta in [false, true] {
        let sink = Arc::new(TestSink::default());
        let mut cfg = client_config(
            srv.addr,
            &format!("names-{delta}"),
            delta,
            std::slice::from_ref(&c),
        );
        cfg.subscriptions.insert(
            c.clone(),
            vec!["a".to_string(), "c".to_string(), "missing".to_string()],
        );
        let client = Client::new(cfg, sink.clone());
        let status = client.status();
        tasks.push(client.spawn());
        tokio::time::timeout(DEADLINE, status.wait_ready())
            .await
            .expect("ready");
        sinks.push(sink);
    }
    for sink in &sinks {
        wait_for("subscribed names only", || sink.names(&c) == ["a", "c"]).await;
    }
    // A change to an unsubscribed resource is not sent; one to a subscribed one is.
    source.set(&c, "b", "2", body(&c, "b", "b2"));
    source.set(&c, "c", "2", body(&c, "c", "c2"));
    for sink in &sinks {
        wait_for("c2 arrives", || {
            sink.payload(&c, "c").as_deref() == Some("c2")
        })
        .await;
        assert_eq!(sink.names(&c), ["a", "c"]);
    }
    for t in tasks {
        t.abort();
    }
    srv.stop().await;
}

/// The last full update of `type_url` in `log`: (first on its stream, names
/// in the response, version_info).
fn last_full(log: &[(Update, bool)], type_url: &str) -> Option<(bool, Vec<String>, String)> {
    log.iter().rev().find_map(|(u, _)| match u {
        Update::Full {
            type_url: t,
            version_info,
            resources,
            first,
        } if t == type_url => Some((
            *first,
            resources.iter().map(|r| r.name.clone()).collect(),
            version_info.clone(),
        )),
        _ => None,
    })
}

/// Types sent incrementally (Envoy's RDS/EDS semantics): a stream's first
/// response is complete; later ones carry only what changed (nothing, with a
/// new version, for a removal); other types stay complete; after a NACK the
/// next response carries everything; a new stream starts complete again.
#[tokio::test]
async fn incremental_types_send_only_what_changed() {
    init_tracing();
    let (c, e) = (cluster(), endpoints());
    let source = Arc::new(MemorySource::new());
    source.set(&c, "a", "1", body(&c, "a", "alpha"));
    source.set(&c, "b", "1", body(&c, "b", "beta"));
    source.set(&e, "e1", "1", body(&e, "e1", "one"));
    source.set(&e, "e2", "1", body(&e, "e2", "two"));
    let opts = ServerOptions {
        wrap_sotw_resources: true,
        sotw_incremental_types: vec![e.clone()],
        ..ServerOptions::default()
    };
    let srv = TestServer::start(Arc::clone(&source), opts.clone(), 0).await;
    let sink = Arc::new(TestSink::default());
    let client = Client::new(
        client_config(srv.addr, "node-inc", false, &[c.clone(), e.clone()]),
        sink.clone(),
    );
    let status = client.status();
    let task = client.spawn();
    tokio::time::timeout(DEADLINE, status.wait_ready())
        .await
        .expect("client ready");
    let (first, names, v1) = last_full(&sink.log_since(0), &e).expect("endpoints sent");
    assert!(first);
    assert_eq!(names, ["e1", "e2"]);

    // One resource changes: only it is sent.
    let mark = sink.log_len();
    source.set(&e, "e2", "2", body(&e, "e2", "two-b"));
    wait_for("the changed endpoints", || {
        last_full(&sink.log_since(mark), &e).is_some()
    })
    .await;
    let (first, names, v2) = last_full(&sink.log_since(mark), &e).unwrap();
    assert!(!first);
    assert_eq!(names, ["e2"]);
    assert_ne!(v2, v1);

    // A complete type stays complete.
    let mark = sink.log_len();
    source.set(&c, "b", "2", body(&c, "b", "beta-b"));
    wait_for("the changed clusters", || {
        last_full(&sink.log_since(mark), &c).is_some()
    })
    .await;
    assert_eq!(last_full(&sink.log_since(mark), &c).unwrap().1, ["a", "b"]);

    // A removal sends nothing but a new version, which the client ACKs.
    let mark = sink.log_len();
    assert!(source.remove(&e, "e1"));
    wait_for("the removal's version", || {
        last_full(&sink.log_since(mark), &e).is_some()
    })
    .await;
    let (first, names, v3) = last_full(&sink.log_since(mark), &e).unwrap();
    assert!(!first && names.is_empty());
    assert_ne!(v3, v2);
    wait_for("the removal ACKed", || {
        status
            .snapshot()
            .types
            .iter()
            .any(|t| t.type_url == e && t.version_info == v3)
    })
    .await;

    // After a NACK the next response carries every resource again.
    let mark = sink.log_len();
    source.set(&e, "e3", "1", body(&e, "e3", "three"));
    wait_for("e3", || last_full(&sink.log_since(mark), &e).is_some()).await;
    assert_eq!(last_full(&sink.log_since(mark), &e).unwrap().1, ["e3"]);
    let mark = sink.log_len();
    source.set(&e, "e2", "3", body(&e, "e2", "reject-this"));
    wait_for("the NACK", || {
        status
            .snapshot()
            .types
            .iter()
            .any(|t| t.type_url == e && t.last_nack.is_some())
    })
    .await;
    assert_eq!(
        last_full(&sink.log_since(mark), &e).map(|(_, names, _)| names),
        Some(vec!["e2".to_string()])
    );
    let mark = sink.log_len();
    source.set(&e, "e2", "4", body(&e, "e2", "two-c"));
    wait_for("the fixed endpoints", || {
        last_full(&sink.log_since(mark), &e).is_some()
    })
    .await;
    let (first, names, _) = last_full(&sink.log_since(mark), &e).unwrap();
    assert!(!first);
    assert_eq!(names, ["e2", "e3"], "every resource after a NACK");

    // A new stream (a restarted server on the same port) starts complete.
    let mark = sink.log_len();
    let port = srv.addr.port();
    srv.stop().await;
    let srv = TestServer::start(Arc::clone(&source), opts, port).await;
    wait_for("the resent endpoints", || {
        last_full(&sink.log_since(mark), &e).is_some()
    })
    .await;
    let (first, names, _) = last_full(&sink.log_since(mark), &e).unwrap();
    assert!(first);
    assert_eq!(names, ["e2", "e3"]);
    task.abort();
    srv.stop().await;
}
