//! Owns a cluster's compiled balancing settings (D6): the policy and its
//! knobs, priority/locality/panic handling, outlier detection, active health
//! checks and circuit breakers. Defaults are Envoy's (Linkerd's for peak-EWMA);
//! the proxy crate's balancer and health checker read these.

use std::sync::Arc;
use std::time::Duration;

/// How a cluster picks among the eligible endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Weighted round robin, smooth.
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of `choice_count` choices on requests in flight per weight.
    LeastRequest,
    /// Power of two choices on peak-EWMA latency × (in flight + 1).
    PeakEwma,
    /// Consistent hashing on a Ketama ring.
    RingHash,
    /// Consistent hashing with a Maglev table.
    Maglev,
}

impl LbPolicy {
    /// The policy's name in configuration.
    pub fn name(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::Random => "random",
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::PeakEwma => "peak_ewma",
            LbPolicy::RingHash => "ring_hash",
            LbPolicy::Maglev => "maglev",
        }
    }

    /// Whether the policy hashes a request key.
    pub fn is_hash(self) -> bool {
        matches!(self, LbPolicy::RingHash | LbPolicy::Maglev)
    }
}

/// Where a hashing policy takes the request key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header.
    Header(http::HeaderName),
    /// A cookie.
    Cookie(Arc<str>),
    /// The trusted client address.
    SourceAddress,
}

/// A policy's settings (only those of the chosen policy matter).
#[derive(Debug, Clone, PartialEq)]
pub struct LbSettings {
    /// The policy.
    pub policy: LbPolicy,
    /// Least request: endpoints drawn per pick.
    pub choice_count: u32,
    /// Peak-EWMA: latency assumed without samples.
    pub default_rtt: Duration,
    /// Peak-EWMA: decay time constant.
    pub decay: Duration,
    /// Peak-EWMA: weigh reported ORCA utilization.
    pub orca: bool,
    /// Hashing policies: the request key.
    pub hash_key: HashKey,
    /// Ring hash: fewest ring entries.
    pub ring_min: u64,
    /// Ring hash: most ring entries.
    pub ring_max: u64,
    /// Maglev: table size (prime).
    pub maglev_table_size: u64,
}

impl Default for LbSettings {
    fn default() -> Self {
        Self {
            policy: LbPolicy::RoundRobin,
            choice_count: 2,
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            orca: false,
            hash_key: HashKey::SourceAddress,
            ring_min: 1024,
            ring_max: 8 * 1024 * 1024,
            maglev_table_size: 65537,
        }
    }
}

/// Priority, locality and panic handling.
#[derive(Debug, Clone, PartialEq)]
pub struct CommonLb {
    /// Healthy percent of a level below which it ignores health (0: never).
    pub panic_threshold: f64,
    /// Overprovisioning factor in percent (140 = 1.4).
    pub overprovisioning: u32,
    /// Prefer this Corridor's zone, then region.
    pub zone_aware: bool,
    /// Fewest endpoints in a level for the zone preference to apply.
    pub zone_min_cluster_size: u32,
}

impl Default for CommonLb {
    fn default() -> Self {
        Self {
            panic_threshold: 50.0,
            overprovisioning: 140,
            zone_aware: true,
            zone_min_cluster_size: 6,
        }
    }
}

/// Outlier detection with Envoy's semantics (all percentages 0–100).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    /// 5xx in a row that eject.
    pub consecutive_5xx: u32,
    /// Review period.
    pub interval: Duration,
    /// Ejection time per time ejected.
    pub base_ejection_time: Duration,
    /// Longest ejection.
    pub max_ejection_time: Duration,
    /// Random time added to an ejection, at most.
    pub max_ejection_time_jitter: Duration,
    /// Most endpoints ejected at once, in percent.
    pub max_ejection_percent: u32,
    /// Chance that a consecutive-5xx detection ejects.
    pub enforcing_consecutive_5xx: u32,
    /// 502/503/504 in a row that eject.
    pub consecutive_gateway_failure: u32,
    /// Chance that a gateway-failure detection ejects.
    pub enforcing_consecutive_gateway_failure: u32,
    /// Count local-origin failures apart.
    pub split_external_local_origin_errors: bool,
    /// With split errors: local-origin failures in a row that eject.
    pub consecutive_local_origin_failure: u32,
    /// Chance that a local-origin detection ejects.
    pub enforcing_consecutive_local_origin_failure: u32,
    /// Chance that a success-rate detection ejects.
    pub enforcing_success_rate: u32,
    /// Chance that a local-origin success-rate detection ejects.
    pub enforcing_local_origin_success_rate: u32,
    /// Endpoints with enough volume for success-rate detection.
    pub success_rate_minimum_hosts: u32,
    /// Requests per interval for an endpoint to count.
    pub success_rate_request_volume: u32,
    /// Eject below mean − stdev × this / 1000.
    pub success_rate_stdev_factor: u32,
    /// Eject at this failure percent or more.
    pub failure_percentage_threshold: u32,
    /// Chance that a failure-percentage detection ejects.
    pub enforcing_failure_percentage: u32,
    /// Same, for local-origin failures.
    pub enforcing_failure_percentage_local_origin: u32,
    /// Endpoints with enough volume for failure-percentage detection.
    pub failure_percentage_minimum_hosts: u32,
    /// Requests per interval for failure-percentage detection.
    pub failure_percentage_request_volume: u32,
    /// A passing active health check returns an ejected endpoint.
    pub successful_active_health_check_uneject_host: bool,
    /// One endpoint can be ejected whatever `max_ejection_percent` says.
    pub always_eject_one_host: bool,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_gateway_failure: 0,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_success_rate: 100,
            enforcing_local_origin_success_rate: 100,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            failure_percentage_threshold: 85,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            successful_active_health_check_uneject_host: false,
            always_eject_one_host: false,
        }
    }
}

/// What an active health check sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// HTTP GET; passes on a status in one of the `[start, end)` ranges.
    Http {
        /// Path (an endpoint's own path overrides it).
        path: Arc<str>,
        /// Host header; `None`: the cluster's TLS name, else its name.
        host: Option<Arc<str>>,
        /// Passing statuses.
        expected: Vec<(u16, u16)>,
    },
    /// gRPC health v1.
    Grpc {
        /// Service asked about ("" = the server).
        service: Arc<str>,
        /// `:authority`; `None` as for HTTP.
        authority: Option<Arc<str>>,
    },
    /// TCP connect (and TLS handshake).
    Tcp,
}

/// One active health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Time allowed per check.
    pub timeout: Duration,
    /// Time between checks.
    pub interval: Duration,
    /// Random time up to this added to each interval.
    pub interval_jitter: Duration,
    /// Random time up to this percent of the interval added too.
    pub interval_jitter_percent: u32,
    /// Failures in a row that make an endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Passes in a row that make it healthy again.
    pub healthy_threshold: u32,
    /// The check.
    pub kind: HealthCheckKind,
}

/// How many retries may be in flight at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryLimit {
    /// A fixed number (Envoy's `max_retries`).
    Fixed(u32),
    /// A share of the requests in flight, at least a minimum.
    Budget {
        /// Percent of requests in flight.
        percent: f64,
        /// Allowed regardless of the share.
        min_concurrency: u32,
    },
}

/// A cluster's overload limits.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakers {
    /// Upstream connections in use (h2: × streams per connection).
    pub max_connections: u32,
    /// Requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Requests in flight.
    pub max_requests: u32,
    /// Retries in flight.
    pub retries: RetryLimit,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            retries: RetryLimit::Budget {
                percent: 20.0,
                min_concurrency: 3,
            },
        }
    }
}

impl RetryLimit {
    /// Retries allowed in flight while `active` requests are.
    pub fn allowed(self, active: u32) -> u32 {
        match self {
            RetryLimit::Fixed(n) => n,
            RetryLimit::Budget {
                percent,
                min_concurrency,
            } => ((f64::from(active) * percent / 100.0) as u32).max(min_concurrency),
        }
    }
}

/// Everything about how a cluster spreads load and judges its endpoints.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Balancing {
    /// Policy and its settings.
    pub lb: LbSettings,
    /// Priority, locality and panic.
    pub common: CommonLb,
    /// Passive health; `None`: off.
    pub outlier: Option<OutlierDetection>,
    /// Active health checks (an endpoint must pass all).
    pub health_checks: Vec<HealthCheck>,
    /// Overload limits.
    pub breakers: CircuitBreakers,
}

/// An endpoint's own health-check settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointHealthCheck {
    /// Port to check instead of the endpoint's.
    pub port: Option<u16>,
    /// HTTP path to check instead of the cluster's.
    pub path: Option<Arc<str>>,
    /// Not checked actively.
    pub disabled: bool,
}
