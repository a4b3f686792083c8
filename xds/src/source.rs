//! Where the reference server gets resources from: the [`Source`] trait and
//! [`MemorySource`], an in-memory table that tests and `corridor
//! control-plane` fill and change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::{Any, Node};

/// The resources of one type: name -> (version, body), sorted by name.
pub type ResourceMap = BTreeMap<String, (String, Any)>;

/// What the server serves; implemented by the control plane.
pub trait Source: Send + Sync + 'static {
    /// The resources `node` should see for `type_url` (empty for unknown types).
    /// Called when a node subscribes and after every change notification, once
    /// per subscribed type and stream: return a shared map where possible.
    fn resources(&self, node: &Node, type_url: &str) -> Arc<ResourceMap>;

    /// A watch whose value changes on every change of the resources.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// An in-memory [`Source`]: every node sees the same resources.
#[derive(Debug)]
pub struct MemorySource {
    types: Mutex<HashMap<String, Arc<ResourceMap>>>,
    generation: watch::Sender<u64>,
}

impl Default for MemorySource {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        MemorySource {
            types: Mutex::new(HashMap::new()),
            generation: watch::channel(0).0,
        }
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Adds or replaces one resource and notifies subscribers.
    pub fn set(&self, type_url: &str, name: &str, version: &str, body: Any) {
        {
            let mut types = self.types.lock();
            let map = types.entry(type_url.to_string()).or_default();
            Arc::make_mut(map).insert(name.to_string(), (version.to_string(), body));
        }
        self.changed();
    }

    /// Removes one resource; notifies subscribers and returns `true` if it existed.
    pub fn remove(&self, type_url: &str, name: &str) -> bool {
        let removed = {
            let mut types = self.types.lock();
            match types.get_mut(type_url) {
                Some(map) if map.contains_key(name) => {
                    Arc::make_mut(map).remove(name);
                    true
                }
                _ => false,
            }
        };
        if removed {
            self.changed();
        }
        removed
    }

    /// Replaces every resource of every type at once, with one notification.
    pub fn replace_all(&self, all: HashMap<String, ResourceMap>) {
        {
            let mut types = self.types.lock();
            *types = all.into_iter().map(|(t, m)| (t, Arc::new(m))).collect();
        }
        self.changed();
    }

    /// The current generation (incremented on every change).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }
}

impl Source for MemorySource {
    fn resources(&self, _node: &Node, type_url: &str) -> Arc<ResourceMap> {
        self.types.lock().get(type_url).cloned().unwrap_or_default()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_remove_replace_notify() {
        let s = MemorySource::new();
        let rx = s.changes();
        let any = Any {
            type_url: "t".into(),
            value: vec![1],
        };
        s.set("t", "a", "1", any.clone());
        assert!(rx.has_changed().unwrap());
        let before = s.resources(&Node::default(), "t");
        assert!(s.remove("t", "a"));
        assert!(!s.remove("t", "a"));
        // A map handed out earlier is not changed behind the holder's back.
        assert_eq!(before.len(), 1);
        assert!(s.resources(&Node::default(), "t").is_empty());
        assert!(s.resources(&Node::default(), "other").is_empty());
        let mut all = HashMap::new();
        all.insert(
            "t".to_string(),
            ResourceMap::from([("b".to_string(), ("2".to_string(), any))]),
        );
        s.replace_all(all);
        assert_eq!(s.resources(&Node::default(), "t").len(), 1);
        assert_eq!(s.generation(), 3);
    }
}
