//! Corridor's control stream (D3): Envoy's Aggregated Discovery Service over
//! gRPC, both state of the world and delta, as a client and as a server.
//!
//! The engine is generic: resources are opaque [`Any`] values identified by
//! (type URL, name) with a per-resource version string. Decoding them is the
//! job of whoever implements [`Sink`] (client side) or [`Source`] (server
//! side); this crate only speaks the protocol:
//!
//! - [`client`]: one ADS stream carrying every subscribed type, ACK/NACK with
//!   `error_detail`, reconnection with full-jitter exponential backoff, and a
//!   [`ClientStatus`] readable from other threads.
//! - [`server`]: a reference ADS server over any [`Source`], with a
//!   [`NodeRegistry`] of connected nodes and their ACK/NACK state.
//! - [`source`]: the [`Source`] trait and [`MemorySource`], an in-memory one.
//!
//! # State of the world: resource names
//!
//! A SotW `DiscoveryResponse` carries plain `Any`s, so the engine does not know
//! resource names. Each `Any` may be either the resource itself (then
//! [`Resource::name`] is empty and the sink learns the name from the body) or
//! an `envoy.service.discovery.v3.Resource` wrapper ([`RESOURCE_WRAPPER_TYPE_URL`])
//! carrying name, version and body, which the client unwraps, as Envoy does.

pub mod client;
pub mod dir;
pub mod registry;
pub mod server;
pub mod source;
pub mod status;
pub mod transport;

mod backoff;
mod version;

pub use client::{Client, ClientConfig, Known, Sink, Update};
pub use dir::{check_file, DirSource, FileReport};
pub use envoy_types::pb::envoy::config::core::v3::Node;
pub use envoy_types::pb::google::protobuf::Any;
pub use registry::{NodeRegistry, NodeStatus, NodeTypeStatus};
pub use server::{serve, serve_incoming, AdsServer, AdsService, ServerOptions};
pub use source::{MemorySource, ResourceMap, Source};
pub use status::{ClientStatus, StatusSnapshot, TypeStatus};
pub use transport::{Accepted, Connector};
pub use version::set_version;

/// Prefix of every Corridor resource type URL: `type.googleapis.com/corridor.v1.<Kind>`.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/corridor.v1.";

/// Type URL of the `envoy.service.discovery.v3.Resource` wrapper a SotW
/// response may use to carry a resource's name and version.
pub const RESOURCE_WRAPPER_TYPE_URL: &str =
    "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// gRPC status code put in a NACK's `error_detail` (`INVALID_ARGUMENT`).
pub const NACK_CODE: i32 = 3;

/// The type URL of a Corridor resource kind, e.g. `type_url("Cluster")`.
pub fn type_url(kind: &str) -> String {
    format!("{TYPE_URL_PREFIX}{kind}")
}

/// One resource as the engine sees it: a name, a version and an opaque body.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// The resource's name; empty for a plain SotW `Any` (the sink learns it from the body).
    pub name: String,
    /// The resource's version (SotW without a wrapper: the response's `version_info`).
    pub version: String,
    /// The encoded resource; its `type_url` equals the update's type URL.
    pub body: Any,
}

/// Which ADS variant a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `StreamAggregatedResources`: every response carries the full set of a type.
    Sotw,
    /// `DeltaAggregatedResources`: responses carry added/changed and removed resources.
    Delta,
}

impl Variant {
    /// A short lowercase name: `sotw` or `delta`.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Sotw => "sotw",
            Variant::Delta => "delta",
        }
    }
}

/// Truncates `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc".into(), 10), "abc");
        assert_eq!(truncate("abcdef".into(), 3), "abc...");
        // 'é' is two bytes; cutting inside it backs off to the boundary.
        assert_eq!(truncate("aé".into(), 2), "a...");
    }

    #[test]
    fn type_url_uses_prefix() {
        assert_eq!(
            type_url("Cluster"),
            "type.googleapis.com/corridor.v1.Cluster"
        );
    }
}
