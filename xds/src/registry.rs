//! The server's view of its subscribers, for the admin `/nodes` page: per
//! stream the node's identity, variant, and per type what was sent, ACKed
//! and NACKed. Disconnected streams stay visible (`connected: false`) until
//! the same node reconnects, they age out, or too many pile up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::google::protobuf::value::Kind;
use parking_lot::Mutex;

use crate::client::MAX_ERROR_DETAIL;
use crate::{truncate, Node, Variant};

/// One subscriber stream as the server sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    /// The server-assigned stream number (unique per server).
    pub stream_id: u64,
    /// `node.id` from the stream's first request (empty if none was sent).
    pub node_id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// `node.metadata`'s scalar fields (strings, numbers, booleans) as text.
    pub metadata: BTreeMap<String, String>,
    /// The client's address, when known.
    pub peer: Option<SocketAddr>,
    /// The client's verified identity (SPIFFE ID) on an mTLS control stream.
    pub identity: Option<Arc<str>>,
    /// SotW or delta.
    pub variant: Variant,
    /// Whether the stream is still open.
    pub connected: bool,
    /// When the stream opened.
    pub connected_at: SystemTime,
    /// When the stream closed.
    pub disconnected_at: Option<SystemTime>,
    /// Per subscribed type, in subscription order.
    pub types: Vec<NodeTypeStatus>,
}

/// One type of one subscriber stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeTypeStatus {
    /// The type URL.
    pub type_url: String,
    /// The version of the last response sent.
    pub sent_version: String,
    /// The last version the node ACKed (empty if none on this stream).
    pub acked_version: String,
    /// The nonce of a response sent but not yet ACKed or NACKed.
    pub pending_nonce: Option<String>,
    /// When the last ACK arrived.
    pub last_ack_at: Option<SystemTime>,
    /// The `error_detail` message of the last NACK (kept after later ACKs; compare times).
    pub last_nack: Option<String>,
    /// When the last NACK arrived.
    pub nack_at: Option<SystemTime>,
    /// Resources the node should hold after the last response (SotW: in it; delta: tracked).
    pub resources: usize,
    /// Responses sent for this type.
    pub responses: u64,
    /// ACKs received.
    pub acks: u64,
    /// NACKs received.
    pub nacks: u64,
}

/// Every subscriber stream of one server.
#[derive(Debug)]
pub struct NodeRegistry {
    entries: Mutex<BTreeMap<u64, NodeStatus>>,
    retention: Duration,
    max_disconnected: usize,
}

impl NodeRegistry {
    /// A registry keeping disconnected streams for `retention`, at most `max_disconnected` of them.
    pub fn new(retention: Duration, max_disconnected: usize) -> Self {
        NodeRegistry {
            entries: Mutex::new(BTreeMap::new()),
            retention,
            max_disconnected,
        }
    }

    /// Every known stream, oldest first.
    pub fn snapshot(&self) -> Vec<NodeStatus> {
        let mut entries = self.entries.lock();
        self.prune(&mut entries);
        entries.values().cloned().collect()
    }

    /// The newest stream of node `id`, preferring connected ones.
    pub fn node(&self, id: &str) -> Option<NodeStatus> {
        let entries = self.entries.lock();
        entries
            .values()
            .filter(|n| n.node_id == id)
            .max_by_key(|n| (n.connected, n.stream_id))
            .cloned()
    }

    /// How many streams are open.
    pub fn connected(&self) -> usize {
        self.entries.lock().values().filter(|n| n.connected).count()
    }

    fn prune(&self, entries: &mut BTreeMap<u64, NodeStatus>) {
        let now = SystemTime::now();
        entries.retain(|_, n| {
            n.connected
                || n.disconnected_at
                    .and_then(|at| now.duration_since(at).ok())
                    .is_none_or(|age| age < self.retention)
        });
        let disconnected = entries.values().filter(|n| !n.connected).count();
        if disconnected > self.max_disconnected {
            let mut excess = disconnected - self.max_disconnected;
            // Oldest streams have the lowest ids.
            entries.retain(|_, n| {
                if excess > 0 && !n.connected {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    pub(crate) fn register(
        &self,
        stream_id: u64,
        node: &Node,
        variant: Variant,
        (peer, identity): (Option<SocketAddr>, Option<Arc<str>>),
    ) {
        let status = NodeStatus {
            stream_id,
            node_id: node.id.clone(),
            cluster: node.cluster.clone(),
            metadata: metadata(node),
            peer,
            identity,
            variant,
            connected: true,
            connected_at: SystemTime::now(),
            disconnected_at: None,
            types: Vec::new(),
        };
        let mut entries = self.entries.lock();
        // A reconnect replaces the node's old, closed streams.
        entries.retain(|_, n| n.connected || n.node_id != node.id);
        entries.insert(stream_id, status);
        self.prune(&mut entries);
    }

    pub(crate) fn disconnected(&self, stream_id: u64) {
        let mut entries = self.entries.lock();
        if let Some(n) = entries.get_mut(&stream_id) {
            n.connected = false;
            n.disconnected_at = Some(SystemTime::now());
            for t in &mut n.types {
                t.pending_nonce = None;
            }
        }
        self.prune(&mut entries);
    }

    fn with_type(&self, stream_id: u64, type_url: &str, f: impl FnOnce(&mut NodeTypeStatus)) {
        let mut entries = self.entries.lock();
        let Some(n) = entries.get_mut(&stream_id) else {
            return;
        };
        let index = match n.types.iter().position(|t| t.type_url == type_url) {
            Some(i) => i,
            None => {
                n.types.push(NodeTypeStatus {
                    type_url: type_url.to_string(),
                    ..NodeTypeStatus::default()
                });
                n.types.len() - 1
            }
        };
        if let Some(t) = n.types.get_mut(index) {
            f(t);
        }
    }

    pub(crate) fn sent(
        &self,
        stream_id: u64,
        type_url: &str,
        version: &str,
        nonce: &str,
        resources: usize,
    ) {
        self.with_type(stream_id, type_url, |t| {
            t.sent_version = version.to_string();
            t.pending_nonce = Some(nonce.to_string());
            t.resources = resources;
            t.responses = t.responses.saturating_add(1);
        });
    }

    pub(crate) fn acked(&self, stream_id: u64, type_url: &str, version: &str) {
        self.with_type(stream_id, type_url, |t| {
            t.acked_version = version.to_string();
            t.pending_nonce = None;
            t.last_ack_at = Some(SystemTime::now());
            t.acks = t.acks.saturating_add(1);
        });
    }

    pub(crate) fn nacked(&self, stream_id: u64, type_url: &str, message: &str) {
        let message = truncate(message.to_string(), MAX_ERROR_DETAIL);
        self.with_type(stream_id, type_url, |t| {
            t.pending_nonce = None;
            t.last_nack = Some(message);
            t.nack_at = Some(SystemTime::now());
            t.nacks = t.nacks.saturating_add(1);
        });
    }
}

/// The scalar fields of a node's metadata, as text.
fn metadata(node: &Node) -> BTreeMap<String, String> {
    let Some(meta) = &node.metadata else {
        return BTreeMap::new();
    };
    meta.fields
        .iter()
        .filter_map(|(k, v)| {
            let text = match v.kind.as_ref()? {
                Kind::StringValue(s) => s.clone(),
                Kind::NumberValue(n) => n.to_string(),
                Kind::BoolValue(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lifecycle() {
        let r = NodeRegistry::new(Duration::from_secs(60), 10);
        r.register(1, &node("a"), Variant::Sotw, (None, None));
        r.sent(1, "t", "v1", "n1", 3);
        assert_eq!(
            r.node("a").unwrap().types[0].pending_nonce.as_deref(),
            Some("n1")
        );
        r.acked(1, "t", "v1");
        r.sent(1, "t", "v2", "n2", 4);
        r.nacked(1, "t", "bad");
        let t = &r.node("a").unwrap().types[0];
        assert_eq!(t.acked_version, "v1");
        assert_eq!(t.sent_version, "v2");
        assert_eq!(t.last_nack.as_deref(), Some("bad"));
        assert_eq!(t.pending_nonce, None);
        assert_eq!((t.responses, t.acks, t.nacks), (2, 1, 1));
        r.disconnected(1);
        assert!(!r.node("a").unwrap().connected);
        assert_eq!(r.connected(), 0);
        // Reconnecting replaces the closed stream.
        r.register(2, &node("a"), Variant::Delta, (None, None));
        let all = r.snapshot();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].stream_id, 2);
        // Unknown streams are ignored.
        r.acked(99, "t", "v");
    }

    #[test]
    fn bounded_and_aged() {
        let r = NodeRegistry::new(Duration::from_secs(60), 2);
        for i in 0..5 {
            r.register(i, &node(&format!("n{i}")), Variant::Sotw, (None, None));
            r.disconnected(i);
        }
        let ids: Vec<u64> = r.snapshot().iter().map(|n| n.stream_id).collect();
        assert_eq!(ids, vec![3, 4]);
        let r = NodeRegistry::new(Duration::ZERO, 10);
        r.register(1, &node("x"), Variant::Sotw, (None, None));
        r.disconnected(1);
        assert!(r.snapshot().is_empty());
    }

    #[test]
    fn metadata_scalars() {
        let mut fields = std::collections::HashMap::new();
        let v = |k| Value { kind: Some(k) };
        fields.insert("s".to_string(), v(Kind::StringValue("x".into())));
        fields.insert("n".to_string(), v(Kind::NumberValue(2.5)));
        fields.insert("b".to_string(), v(Kind::BoolValue(true)));
        fields.insert("o".to_string(), v(Kind::StructValue(Struct::default())));
        let n = Node {
            metadata: Some(Struct { fields }),
            ..Default::default()
        };
        let m = metadata(&n);
        assert_eq!(m.len(), 3);
        assert_eq!(m["s"], "x");
        assert_eq!(m["n"], "2.5");
        assert_eq!(m["b"], "true");
    }
}
