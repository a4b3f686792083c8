//! Corridor's configuration: the `corridor.v1` schema (D2), YAML/JSON parsing
//! with positions, the one validator, and the immutable compiled `Snapshot`
//! with precompiled matchers. No networking lives here.
#![forbid(unsafe_code)]

mod action;
mod cluster;
mod compile;
mod decode;
mod endpoint_set;
mod error;
mod load;
pub mod proto;
mod route;
mod snapshot;
mod yaml;

pub use action::{
    DirectResponse, Forward, HeaderMutation, HeaderOp, RetryOn, RetryPolicy, RouteAction,
};
pub use cluster::{
    glob_match, Cluster, Endpoint, Fallback, LabelSource, LbPolicy, Locality, RequestLabel,
    SubsetError, Target, UpstreamProtocol, UpstreamTls,
};
pub use compile::{compile, DEFAULT_ADMIN_ADDRESS};
pub use decode::{parse_duration, SourceMap};
pub use endpoint_set::EndpointSet;
pub use error::{ConfigError, ConfigErrors, FieldPath};
pub use load::{compile_bootstrap, load_file, load_str, parse_bootstrap, to_json};
pub use route::{
    normalize_host, percent_decode, HeaderCondition, PathMatch, QueryCondition, RequestView, Route,
    RouteMatch, RouteTable, ValueMatch, VirtualHost,
};
pub use snapshot::{
    AdminSettings, Listener, ListenerTls, LogFormat, Protocols, RuntimeSettings, Snapshot,
};
pub use yaml::Pos;
