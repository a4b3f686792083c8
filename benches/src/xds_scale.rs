//! The control-stream scale benchmark (`benches/xds_scale.sh`, binary
//! `xds_scale`): 10 000 routes and 50 000 endpoints served by `corridor
//! control-plane` to 100 subscribers (one real `corridor run` proxy and
//! `corridor_xds` engine clients), measuring convergence, control-plane CPU
//! and memory, the proxy's apply time and its p99 during a push storm.

pub mod gen;
pub mod probe;
pub mod report;
pub mod swarm;
