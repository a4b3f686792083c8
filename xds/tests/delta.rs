//! Delta, client against the reference server over real gRPC on 127.0.0.1:
//! initial sync, only changed resources sent, removals, NACK recorded on
//! both sides, recovery, and a server restart on the same port where
//! `initial_resource_versions` keeps unchanged resources from being resent.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use corridor_xds::{Client, MemorySource, ServerOptions, Update, Variant};

/// Names added and removed for `type_url` by the updates in `log`.
fn changes(log: &[(Update, bool)], type_url: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut added = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for (u, _) in log {
        match u {
            Update::Delta {
                type_url: t,
                added: a,
                removed: r,
                ..
            } if t == type_url => {
                added.extend(a.iter().map(|r| r.name.clone()));
                removed.extend(r.iter().cloned());
            }
            Update::Delta { .. } => {}
            Update::Full { .. } => panic!("a delta client got a full update"),
        }
    }
    (added, removed)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_end_to_end() {
    init_tracing();
    let (c, e) = (cluster(), endpoints());
    let source = Arc::new(MemorySource::new());
    for name in ["a", "b", "c"] {
        source.set(&c, name, "1", body(&c, name, name));
    }
    source.set(&e, "e1", "1", body(&e, "e1", "ep"));
    let srv = TestServer::start(Arc::clone(&source), ServerOptions::default(), 0).await;
    let port = srv.addr.port();
    let registry = srv.server.registry();

    let sink = Arc::new(TestSink::default());
    let client = Client::new(
        client_config(srv.addr, "node-d", true, &[c.clone(), e.clone()]),
        sink.clone(),
    );
    let status = client.status();
    let task = client.spawn();
    tokio::time::timeout(DEADLINE, status.wait_ready())
        .await
        .expect("client ready");
    assert_eq!(sink.names(&c), ["a", "b", "c"]);
    assert_eq!(sink.version(&c, "a").as_deref(), Some("1"));
    assert_eq!(sink.names(&e), ["e1"]);
    assert_eq!(status.snapshot().variant, Variant::Delta);
    wait_for("registry shows the delta node", || {
        registry.node("node-d").is_some_and(|n| {
            n.variant == Variant::Delta
                && n.types.len() == 2
                && n.types
                    .iter()
                    .all(|t| t.acks == 1 && t.pending_nonce.is_none())
        })
    })
    .await;

    // Only the changed resource is sent.
    let mark = sink.log_len();
    source.set(&c, "b", "2", body(&c, "b", "b2"));
    wait_for("b v2", || sink.version(&c, "b").as_deref() == Some("2")).await;
    let log = sink.log_since(mark);
    assert_eq!(changes(&log, &c), (set(&["b"]), set(&[])));
    assert_eq!(changes(&log, &e), (set(&[]), set(&[])));

    // A removal is sent as a removal.
    let mark = sink.log_len();
    source.remove(&c, "c");
    wait_for("c removed", || sink.names(&c) == ["a", "b"]).await;
    assert_eq!(changes(&sink.log_since(mark), &c), (set(&[]), set(&["c"])));
    wait_for("removal ACKed", || {
        status.type_status(&c).is_some_and(|t| t.resources == 2)
    })
    .await;

    // NACK: the sink rejects d; old state kept; both sides record it.
    source.set(&c, "d", "1", body(&c, "d", "reject this"));
    wait_for("client NACKs", || {
        status.type_status(&c).is_some_and(|t| t.nacks == 1)
    })
    .await;
    let ts = status.type_status(&c).expect("status");
    assert!(
        ts.last_nack
            .as_deref()
            .is_some_and(|m| m.contains("rejected d")),
        "{ts:?}"
    );
    assert_eq!(ts.resources, 2);
    assert_eq!(sink.names(&c), ["a", "b"]);
    wait_for("registry shows the NACK", || {
        registry.node("node-d").is_some_and(|n| {
            n.types[0]
                .last_nack
                .as_deref()
                .is_some_and(|m| m.contains("rejected d"))
        })
    })
    .await;

    // A fixed version is ACKed.
    source.set(&c, "d", "2", body(&c, "d", "fine"));
    wait_for("d v2", || sink.payload(&c, "d").as_deref() == Some("fine")).await;
    wait_for("d ACKed", || {
        status
            .type_status(&c)
            .is_some_and(|t| t.resources == 3 && t.last_ack_at > t.nack_at)
    })
    .await;
    assert_eq!(status.type_status(&c).map(|t| t.nacks), Some(1));

    // Restart on the same port; meanwhile a changes, b goes away, f appears.
    srv.stop().await;
    wait_for("client notices", || !status.snapshot().connected).await;
    source.set(&c, "a", "2", body(&c, "a", "a2"));
    source.remove(&c, "b");
    source.set(&c, "f", "1", body(&c, "f", "f"));
    let mark = sink.log_len();
    let srv = TestServer::start(Arc::clone(&source), ServerOptions::default(), port).await;
    let registry = srv.server.registry();
    wait_for("resynced", || {
        sink.names(&c) == ["a", "d", "f"] && sink.version(&c, "a").as_deref() == Some("2")
    })
    .await;
    wait_for("new registry shows both types ACKed", || {
        registry
            .node("node-d")
            .is_some_and(|n| n.types.len() == 2 && n.types.iter().all(|t| t.acks >= 1))
    })
    .await;
    let log = sink.log_since(mark);
    // Unchanged d and e1 were not resent; only the differences were.
    assert_eq!(changes(&log, &c), (set(&["a", "f"]), set(&["b"])));
    assert_eq!(changes(&log, &e), (set(&[]), set(&[])));
    assert!(log.iter().all(|(_, ok)| *ok));
    let node = registry.node("node-d").expect("node");
    assert_eq!(node.types[0].resources, 3);
    assert_eq!(node.types[1].resources, 1);
    assert!(status.snapshot().reconnects >= 1);
    assert_eq!(status.type_status(&c).map(|t| t.resources), Some(3));

    task.abort();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_converge() {
    init_tracing();
    let c = cluster();
    let source = Arc::new(MemorySource::new());
    source.set(&c, "a", "1", body(&c, "a", "a"));
    let srv = TestServer::start(Arc::clone(&source), ServerOptions::default(), 0).await;
    let mut clients = Vec::new();
    for i in 0..40 {
        let sink = Arc::new(TestSink::default());
        let client = Client::new(
            client_config(
                srv.addr,
                &format!("n{i}"),
                i % 2 == 0,
                std::slice::from_ref(&c),
            ),
            sink.clone(),
        );
        let status = client.status();
        clients.push((sink, status, client.spawn()));
    }
    for (_, status, _) in &clients {
        tokio::time::timeout(DEADLINE, status.wait_ready())
            .await
            .expect("ready");
    }
    // A burst of changes: every subscriber converges on the last one.
    for v in 2..=50 {
        source.set(&c, "a", &v.to_string(), body(&c, "a", &format!("a{v}")));
    }
    for (sink, _, _) in &clients {
        wait_for("converged", || {
            sink.payload(&c, "a").as_deref() == Some("a50")
        })
        .await;
    }
    let registry = srv.server.registry();
    wait_for("all connected", || registry.connected() == 40).await;
    for (_, _, task) in clients {
        task.abort();
    }
    wait_for("all gone", || registry.connected() == 0).await;
    assert_eq!(
        registry.snapshot().len(),
        40,
        "closed streams are kept for a while"
    );
    srv.stop().await;
}
