//! Owns the simulated subscribers: `corridor_xds` engine clients, each on its
//! own ADS stream (and TCP connection) with a sink that decodes every
//! resource it is sent (`corridor_config::Resource::decode`), as a proxy
//! must before it can apply anything, and then drops it. Like the proxy, a
//! sink skips a state-of-the-world resource that names itself with the
//! version it already holds. Or, to measure what the control plane alone can
//! do, a sink that ACKs without decoding.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use corridor_config::{Kind, Resource};
use corridor_xds::{Client, ClientConfig, ClientStatus, Known, Node, Sink, Update};
use parking_lot::Mutex;

/// How many kinds of resource a control stream carries (per-kind arrays).
pub const KINDS: usize = Kind::ALL.len();

/// Decode work done by every sink of a swarm, per kind (in `Kind::ALL` order).
#[derive(Debug, Default)]
pub struct DecodeStats {
    nanos: [AtomicU64; KINDS],
    updates: [AtomicU64; KINDS],
    resources: [AtomicU64; KINDS],
}

impl DecodeStats {
    /// Total sink time (ns), updates and resources decoded for `kind` so far.
    pub fn get(&self, kind: Kind) -> (u64, u64, u64) {
        let i = kind_index(kind);
        (
            self.nanos[i].load(Ordering::Relaxed),
            self.updates[i].load(Ordering::Relaxed),
            self.resources[i].load(Ordering::Relaxed),
        )
    }
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// Decodes (unless `ack_only`), counts and drops.
struct DecodeSink {
    stats: Arc<DecodeStats>,
    ack_only: bool,
    /// Per kind: name -> version held.
    held: Mutex<[HashMap<String, String>; KINDS]>,
}

impl Sink for DecodeSink {
    fn apply(&self, update: Update) -> Result<(), String> {
        let start = Instant::now();
        let kind = Kind::from_type_url(update.type_url())
            .ok_or_else(|| format!("unknown type {}", update.type_url()))?;
        let i = kind_index(kind);
        let mut held = self.held.lock();
        let held = &mut held[i];
        let mut decoded = 0u64;
        let mut decode = |r: &corridor_xds::Resource| -> Result<(), String> {
            if !self.ack_only {
                std::hint::black_box(Resource::decode(kind, &r.body.value)?);
                decoded += 1;
            }
            Ok(())
        };
        match update {
            Update::Full {
                resources, first, ..
            } => {
                let mut next = HashMap::with_capacity(resources.len());
                for r in &resources {
                    let same = !r.name.is_empty()
                        && !r.version.is_empty()
                        && held.get(&r.name) == Some(&r.version);
                    if !same {
                        decode(r)?;
                    }
                    if !r.name.is_empty() {
                        next.insert(r.name.clone(), r.version.clone());
                    }
                }
                // Incremental kinds: only a stream's first response is complete.
                if first || !kind.sotw_incremental() {
                    *held = next;
                } else {
                    held.extend(next);
                }
            }
            Update::Delta { added, removed, .. } => {
                for r in &added {
                    decode(r)?;
                    held.insert(r.name.clone(), r.version.clone());
                }
                for name in &removed {
                    held.remove(name);
                }
            }
        }
        let took = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.nanos[i].fetch_add(took, Ordering::Relaxed);
        self.stats.updates[i].fetch_add(1, Ordering::Relaxed);
        self.stats.resources[i].fetch_add(decoded, Ordering::Relaxed);
        Ok(())
    }

    fn known(&self, _type_url: &str) -> Known {
        Known::default()
    }
}

/// A running set of engine clients.
pub struct Swarm {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    statuses: Vec<ClientStatus>,
    /// Decode work of all sinks.
    pub stats: Arc<DecodeStats>,
}

impl Swarm {
    /// Starts `n` clients of `server` on the current runtime, node ids
    /// `{prefix}-000`..., every Corridor type, SotW or delta; `ack_only`
    /// clients ACK without decoding.
    pub fn start(server: &str, n: usize, delta: bool, ack_only: bool, prefix: &str) -> Swarm {
        let stats = Arc::new(DecodeStats::default());
        let types: Vec<String> = Kind::ALL.iter().map(|k| k.type_url().to_string()).collect();
        let mut tasks = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        for i in 0..n {
            let node = Node {
                id: format!("{prefix}-{i:03}"),
                cluster: "bench".to_string(),
                ..Node::default()
            };
            let mut cfg = ClientConfig::new(server, node, types.clone());
            cfg.delta = delta;
            let sink = Arc::new(DecodeSink {
                stats: Arc::clone(&stats),
                ack_only,
                held: Mutex::new(Default::default()),
            });
            let client = Client::new(cfg, sink);
            statuses.push(client.status());
            tasks.push(client.spawn());
        }
        Swarm {
            tasks,
            statuses,
            stats,
        }
    }

    /// Per client, per type (subscription order): the last ACKed version.
    pub fn versions(&self) -> Vec<Vec<String>> {
        self.statuses
            .iter()
            .map(|s| {
                s.snapshot()
                    .types
                    .into_iter()
                    .map(|t| t.version_info)
                    .collect()
            })
            .collect()
    }

    /// Reconnects and NACKs over all clients (both should stay 0).
    pub fn troubles(&self) -> (u64, u64) {
        self.statuses.iter().fold((0, 0), |(r, n), s| {
            let snap = s.snapshot();
            (
                r + snap.reconnects,
                n + snap.types.iter().map(|t| t.nacks).sum::<u64>(),
            )
        })
    }

    /// Ends every client (their streams close).
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}
