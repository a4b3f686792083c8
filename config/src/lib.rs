//! Corridor's configuration: the `corridor.v1` schema (D2), YAML/JSON parsing
//! with positions, the one validator, and the immutable compiled `Snapshot`
//! with precompiled matchers. No networking lives here.
#![forbid(unsafe_code)]

mod action;
mod balancing;
mod cluster;
mod compile;
mod decode;
mod endpoint_set;
mod error;
mod files;
mod identity;
mod load;
pub mod proto;
mod request;
mod residency;
mod route;
mod snapshot;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod yaml;

pub use action::{
    DirectResponse, EditHeaders, Forward, HeaderMutation, HeaderOp, RetryOn, RetryPolicy,
    RouteAction,
};
pub use balancing::{
    Balancing, CircuitBreakers, CommonLb, EndpointHealthCheck, HashKey, HealthCheck,
    HealthCheckKind, LbPolicy, LbSettings, OutlierDetection, RetryLimit,
};
pub use cluster::{
    glob_match, Cluster, Endpoint, EndpointTable, Fallback, LabelSource, Locality, RequestLabel,
    SubsetError, Target, UpstreamProtocol, UpstreamTls,
};
pub use compile::{compile, DEFAULT_ADMIN_ADDRESS, DEFAULT_LOG_QUEUE_LINES};
pub use decode::{parse_duration, SourceMap};
pub use endpoint_set::EndpointSet;
pub use error::{ConfigError, ConfigErrors, FieldPath};
pub use files::{
    secret_of, secret_path, DiskFiles, Files, Secret, SecretPart, UncheckedPaths, WithSecrets,
    SECRET_PREFIX,
};
pub use identity::{
    check_trust_domain, parse_spiffe_id, Authorization, ClientAuth, ForwardClientCert, Principal,
};
pub use load::{
    compile_bootstrap, load_file, load_store_file, load_store_str, load_str, locate_errors,
    message_json, parse_bootstrap, parse_resource_file, read_bootstrap, to_json,
};
pub use request::{
    check_chunked_prefix, check_h1_head, check_h2_request, check_query, client_from_forwarded_for,
    normalize_path, Cidr, CidrError, EscapedSlashes, Framing, H1Head, H2Request, HttpLimits,
    PathOptions, Rejection, MAX_CHUNK_EXTENSION,
};
pub use residency::{
    Geo, JurisdictionSet, Residency, ResidencyPolicy, ResidencyRule, Tenants, TrustedHeader,
};
pub use route::{
    normalize_host, percent_decode, HeaderCondition, PathMatch, QueryCondition, RequestView, Route,
    RouteMatch, RouteResidency, RouteTable, ValueMatch, VirtualHost,
};
pub use snapshot::{
    AdminSettings, ErrorDetail, Forwarding, ForwardingMode, Listener, ListenerHttp, ListenerTls,
    LogFormat, Protocols, RuntimeSettings, Settings, Snapshot, XdsRole, XdsSettings, XdsTls,
};
pub use store::{
    fnv, Change, Entry, EntryInfo, Kind, Origin, Resource, Store, Upsert, Warming, TYPE_URL_PREFIX,
};
pub use yaml::Pos;

/// The persistent map type of [`Snapshot::clusters`].
pub use imbl::OrdMap;
