//! Corridor's data plane: a Pingora `ProxyHttp` (D1) serving the compiled
//! configuration snapshot on listeners that come and go with it, its admin
//! listener, configuration reload and drain, the control-stream client, the
//! reference control plane, the embedded demo, and sidecar injection into
//! Kubernetes manifests. The `corridor` binary is a thin CLI over this crate.
#![forbid(unsafe_code)]

mod admin;
#[cfg(feature = "alloc-count")]
mod alloc;
mod control_plane;
mod control_tls;
mod demo;
mod errors;
mod geo;
mod health;
mod identity;
mod inject;
mod lb;
mod lifecycle;
mod listeners;
mod logging;
mod metrics;
mod proxy;
mod residency;
mod routing;
mod server;
mod shared;
mod tls;
mod xds;

pub use control_plane::run_control_plane;
pub use control_tls::ServerTls;
pub use demo::{demo_config, print_banner, start_upstreams, DemoOptions, DEMO_YAML};
pub use errors::{ErrorKind, LocalError};
pub use inject::{
    inject, run_inject, InjectArgs, InjectError, InjectOptions, Injected, INJECT_HELP,
};
pub use lb::{ClusterBalancer, PickRequest};
pub use logging::{flush as flush_logs, init as init_logging};
pub use metrics::Metrics;
pub use proxy::{Corridor, RequestCtx};
pub use server::run;
pub use shared::{Applied, Overrides, Shared};
pub use xds::{node as xds_node, XdsService};
