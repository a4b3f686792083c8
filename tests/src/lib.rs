//! Test support for Corridor's end-to-end tests: real upstream servers (HTTP/1.1, h2c,
//! TLS, gRPC) that record the exact bytes they receive, real HTTP clients with exact
//! protocol control, a raw HTTP/2 client for malformed requests ([`h2raw`]), and a
//! throwaway test PKI.
//!
//! Nothing here talks to the proxy's internals; the end-to-end tests drive the real
//! `corridor` binary over sockets with these pieces on either side of it.

#![forbid(unsafe_code)]

pub mod client;
pub mod control_plane;
pub mod geo;
pub mod grpc;
pub mod h2raw;
pub mod pki;
pub mod proxy;
#[cfg(test)]
mod testutil;
pub mod upstream;

pub use client::{Body, BodyReader, BodySender, Client, ErrorKind, SseEvent};
pub use control_plane::ControlPlane;
pub use grpc::{EchoClient, EchoMsg, GrpcServer};
pub use pki::{Leaf, LeafFiles, TestPki};
pub use proxy::{run_cli, Corridor};
pub use upstream::{
    Cancellation, Fault, RecordedRequest, Upstream, UpstreamOptions, UpstreamProtocol,
};

/// The boxed error type used by bodies and services in this crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
