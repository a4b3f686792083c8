//! Owns the Prometheus metrics of the data plane. `Metrics::new` registers them
//! into the registry it is given; per-route children are resolved once per
//! snapshot (`RouteStats`) so the request path only touches atomics.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Status classes used as the `status_class` label.
pub(crate) const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// Index into `STATUS_CLASSES` for a status (0 = no response was sent).
pub(crate) fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// Why a try was retried, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryReason {
    ConnectFailure,
    RefusedStream,
    Reset,
    Status,
}

impl RetryReason {
    fn label(self) -> &'static str {
        match self {
            RetryReason::ConnectFailure => "connect_failure",
            RetryReason::RefusedStream => "refused_stream",
            RetryReason::Reset => "reset",
            RetryReason::Status => "status",
        }
    }

    const ALL: [RetryReason; 4] = [
        RetryReason::ConnectFailure,
        RetryReason::RefusedStream,
        RetryReason::Reset,
        RetryReason::Status,
    ];
}

/// All data-plane metrics. Cloning shares the same metrics (handles).
#[derive(Clone)]
pub struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    connect_failures: IntCounterVec,
    /// Requests in flight.
    pub active_requests: IntGauge,
    /// Responses currently streaming to clients.
    pub active_streams: IntGauge,
    reloads: IntCounterVec,
    rejected: IntCounterVec,
    log_dropped: IntCounter,
    /// Requests served by Corridor's lean path (`path="lean"`).
    pub(crate) lean_path: IntCounter,
    /// Requests served by Pingora's proxy (`path="proxy"`).
    pub(crate) proxy_path: IntCounter,
    /// Unix time of the last successful configuration load.
    pub config_loaded_at: IntGauge,
    /// Time to validate, compile and install a configuration change, by source.
    config_apply: HistogramVec,
    /// Control-stream updates by type and result (ack or nack).
    xds_updates: IntCounterVec,
    /// 1 while the control stream is connected.
    pub(crate) xds_connected: IntGauge,
    ejections: IntCounterVec,
    /// Requests answered 451 by a residency policy.
    pub(crate) residency_denied: IntCounterVec,
    /// When each certificate in use expires (Unix seconds), by name.
    cert_expiry: IntGaugeVec,
    ejected: IntGaugeVec,
    hc_transitions: IntCounterVec,
    overflow: IntCounterVec,
    endpoint_latency: HistogramVec,
    #[cfg(feature = "alloc-count")]
    allocations: IntCounter,
}

impl Metrics {
    /// Publishes the expiry of every certificate in use (`expiries`: name,
    /// Unix seconds), dropping those no longer in use, and warns about any
    /// that expires within `WARN_BEFORE` or has expired.
    pub(crate) fn cert_expiries(&self, expiries: &[(String, i64)]) {
        const WARN_BEFORE: i64 = 14 * 24 * 3600;
        self.cert_expiry.reset();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (name, at) in expiries {
            self.cert_expiry
                .with_label_values(&[name.as_str()])
                .set(*at);
            let left = at - now;
            if left <= 0 {
                tracing::error!(certificate = %name, expired_seconds_ago = -left, "certificate has expired");
            } else if left < WARN_BEFORE {
                tracing::warn!(certificate = %name, expires_in_hours = left / 3600, "certificate expires soon");
            }
        }
    }

    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0,
        ];
        let paths = IntCounterVec::new(
            Opts::new(
                "corridor_requests_by_path_total",
                "Requests by the code path that served them: `lean` is Corridor's own forwarding path (HTTP/1.x and HTTP/2 clients to any cluster, and answers Corridor gives itself), `proxy` is Pingora's proxy (upgrades, CONNECT, Expect)",
            ),
            &["path"],
        )?;
        registry.register(Box::new(paths.clone()))?;
        let m = Self {
            lean_path: paths.with_label_values(&["lean"]),
            proxy_path: paths.with_label_values(&["proxy"]),
            cert_expiry: IntGaugeVec::new(
                Opts::new(
                    "corridor_cert_expiry_seconds",
                    "Unix time at which each certificate in use expires: `listener/<name>` for a listener's certificate, `bundle/<listener>/<trust domain>` for the earliest CA of a trust bundle, `cluster/<name>/client` for an upstream client certificate, `cluster/<name>/ca` for the earliest CA a cluster trusts, `xds/client` and `xds/ca` for the control stream's; checked hourly (a warning 14 days ahead)",
                ),
                &["name"],
            )?,
            residency_denied: IntCounterVec::new(
                Opts::new(
                    "corridor_residency_denied_total",
                    "Requests answered 451 because a residency policy left no endpoint that could serve them, by policy and data class",
                ),
                &["policy", "data_class"],
            )?,
            ejections: IntCounterVec::new(
                Opts::new(
                    "corridor_outlier_ejections_total",
                    "Endpoints ejected by outlier detection, by cluster and detector",
                ),
                &["cluster", "reason"],
            )?,
            ejected: IntGaugeVec::new(
                Opts::new("corridor_outlier_ejected_endpoints", "Endpoints ejected now, by cluster"),
                &["cluster"],
            )?,
            hc_transitions: IntCounterVec::new(
                Opts::new(
                    "corridor_health_check_transitions_total",
                    "Endpoints that active health checks turned healthy or unhealthy, by cluster",
                ),
                &["cluster", "to"],
            )?,
            overflow: IntCounterVec::new(
                Opts::new(
                    "corridor_overflow_total",
                    "Requests answered 503 overflow, or retries not made, because a circuit breaker was full, by cluster and breaker",
                ),
                &["cluster", "breaker"],
            )?,
            endpoint_latency: HistogramVec::new(
                HistogramOpts::new(
                    "corridor_endpoint_response_header_seconds",
                    "Time from sending a try to an endpoint to its response headers, by cluster and endpoint",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0, 30.0,
                ]),
                &["cluster", "endpoint"],
            )?,
            requests: IntCounterVec::new(
                Opts::new("corridor_requests_total", "Requests by route, cluster and response status class"),
                &["route", "cluster", "status_class"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "corridor_request_duration_seconds",
                    "Time from request start to the end of the response, by route, cluster and status class",
                )
                .buckets(latency_buckets),
                &["route", "cluster", "status_class"],
            )?,
            retries: IntCounterVec::new(
                Opts::new("corridor_retries_total", "Retried upstream tries by route, cluster and reason"),
                &["route", "cluster", "reason"],
            )?,
            request_bytes: IntCounterVec::new(
                Opts::new("corridor_request_body_bytes_total", "Request body bytes received from clients"),
                &["route", "cluster"],
            )?,
            response_bytes: IntCounterVec::new(
                Opts::new("corridor_response_body_bytes_total", "Response body bytes sent to clients"),
                &["route", "cluster"],
            )?,
            connect_failures: IntCounterVec::new(
                Opts::new("corridor_upstream_connect_failures_total", "Failed upstream connection attempts"),
                &["cluster"],
            )?,
            active_requests: IntGauge::new("corridor_active_requests", "Requests in flight")?,
            active_streams: IntGauge::new(
                "corridor_active_streams",
                "Responses whose headers were sent and whose body is still streaming",
            )?,
            reloads: IntCounterVec::new(
                Opts::new("corridor_config_reloads_total", "Configuration loads by result"),
                &["result"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "corridor_rejected_requests_total",
                    "Requests refused before routing (malformed, over a limit, unsupported), by error type",
                ),
                &["type"],
            )?,
            log_dropped: IntCounter::new(
                "corridor_log_lines_dropped_total",
                "Log lines dropped because the log writer's queue was full (requests never wait for it)",
            )?,
            config_loaded_at: IntGauge::new(
                "corridor_config_last_reload_success_timestamp_seconds",
                "Unix time of the last configuration accepted",
            )?,
            config_apply: HistogramVec::new(
                HistogramOpts::new(
                    "corridor_config_apply_seconds",
                    "Time to validate, compile and install a configuration change, by source (file or xds)",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2,
                    0.5, 1.0, 2.5,
                ]),
                &["source"],
            )?,
            xds_updates: IntCounterVec::new(
                Opts::new(
                    "corridor_xds_updates_total",
                    "Control-stream updates by resource type and result (ack: applied, nack: rejected)",
                ),
                &["type", "result"],
            )?,
            xds_connected: IntGauge::new(
                "corridor_xds_connected",
                "1 while the control stream is connected, 0 otherwise (absent without one)",
            )?,
            #[cfg(feature = "alloc-count")]
            allocations: IntCounter::new("corridor_allocations_total", "Heap allocations since start")?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.request_bytes.clone()))?;
        registry.register(Box::new(m.response_bytes.clone()))?;
        registry.register(Box::new(m.connect_failures.clone()))?;
        registry.register(Box::new(m.active_requests.clone()))?;
        registry.register(Box::new(m.active_streams.clone()))?;
        registry.register(Box::new(m.reloads.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.log_dropped.clone()))?;
        registry.register(Box::new(m.config_loaded_at.clone()))?;
        registry.register(Box::new(m.config_apply.clone()))?;
        registry.register(Box::new(m.xds_updates.clone()))?;
        registry.register(Box::new(m.ejections.clone()))?;
        registry.register(Box::new(m.residency_denied.clone()))?;
        registry.register(Box::new(m.cert_expiry.clone()))?;
        registry.register(Box::new(m.ejected.clone()))?;
        registry.register(Box::new(m.hc_transitions.clone()))?;
        registry.register(Box::new(m.overflow.clone()))?;
        registry.register(Box::new(m.endpoint_latency.clone()))?;
        #[cfg(feature = "alloc-count")]
        registry.register(Box::new(m.allocations.clone()))?;
        for r in ["ok", "failed"] {
            m.reloads.with_label_values(&[r]);
        }
        Ok(m)
    }

    /// Counts a configuration load.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// Records how long applying a configuration change took.
    pub(crate) fn config_applied(&self, source: &str, took: std::time::Duration) {
        self.config_apply
            .with_label_values(&[source])
            .observe(took.as_secs_f64());
    }

    /// Counts a control-stream update of `kind`, applied or rejected.
    pub(crate) fn xds_update(&self, kind: &str, ok: bool) {
        self.xds_updates
            .with_label_values(&[kind, if ok { "ack" } else { "nack" }])
            .inc();
    }

    /// Counts a request refused before routing.
    pub(crate) fn rejected(&self, kind: crate::errors::ErrorKind) {
        self.rejected.with_label_values(&[kind.name()]).inc();
    }

    /// Handles for one route/cluster pair.
    pub(crate) fn route_stats(&self, route: &str, cluster: &str) -> RouteStats {
        let requests = std::array::from_fn(|i| {
            self.requests
                .with_label_values(&[route, cluster, STATUS_CLASSES[i]])
        });
        let duration = std::array::from_fn(|i| {
            self.duration
                .with_label_values(&[route, cluster, STATUS_CLASSES[i]])
        });
        let retries =
            RetryReason::ALL.map(|r| self.retries.with_label_values(&[route, cluster, r.label()]));
        RouteStats {
            requests,
            duration,
            retries,
            request_bytes: self.request_bytes.with_label_values(&[route, cluster]),
            response_bytes: self.response_bytes.with_label_values(&[route, cluster]),
        }
    }

    /// The connect-failure counter of a cluster.
    pub(crate) fn connect_failures(&self, cluster: &str) -> IntCounter {
        self.connect_failures.with_label_values(&[cluster])
    }

    /// The ejection counter of a cluster and detector.
    pub(crate) fn ejections(&self, cluster: &str, reason: &str) -> IntCounter {
        self.ejections.with_label_values(&[cluster, reason])
    }

    /// The gauge of a cluster's ejected endpoints.
    pub(crate) fn ejected(&self, cluster: &str) -> IntGauge {
        self.ejected.with_label_values(&[cluster])
    }

    /// The health-check transition counter of a cluster (`to`: healthy or unhealthy).
    pub(crate) fn hc_transitions(&self, cluster: &str, to: &str) -> IntCounter {
        self.hc_transitions.with_label_values(&[cluster, to])
    }

    /// The overflow counter of a cluster's breaker.
    pub(crate) fn overflow(&self, cluster: &str, breaker: &str) -> IntCounter {
        self.overflow.with_label_values(&[cluster, breaker])
    }

    /// The response-header latency histogram of one endpoint.
    pub(crate) fn endpoint_latency(&self, cluster: &str, endpoint: &str) -> Histogram {
        self.endpoint_latency
            .with_label_values(&[cluster, endpoint])
    }

    /// Drops the per-endpoint series of an endpoint that left its cluster.
    pub(crate) fn remove_endpoint(&self, cluster: &str, endpoint: &str) {
        let _ = self
            .endpoint_latency
            .remove_label_values(&[cluster, endpoint]);
    }

    /// Drops the per-cluster gauge of a removed cluster.
    pub(crate) fn remove_cluster(&self, cluster: &str) {
        let _ = self.ejected.remove_label_values(&[cluster]);
    }

    /// Refreshes gauges computed at scrape time.
    pub(crate) fn before_scrape(&self) {
        let dropped = crate::logging::dropped_lines();
        self.log_dropped
            .inc_by(dropped.saturating_sub(self.log_dropped.get()));
        #[cfg(feature = "alloc-count")]
        {
            let n = crate::alloc::allocations();
            self.allocations
                .inc_by(n.saturating_sub(self.allocations.get()));
        }
    }
}

/// Metric handles for one route and cluster, resolved once per snapshot.
#[derive(Clone)]
pub(crate) struct RouteStats {
    requests: [IntCounter; 6],
    duration: [Histogram; 6],
    retries: [IntCounter; 4],
    pub(crate) request_bytes: IntCounter,
    pub(crate) response_bytes: IntCounter,
}

impl RouteStats {
    /// Records a finished request.
    pub(crate) fn finish(&self, status: u16, seconds: f64) {
        let c = status_class(status);
        self.requests[c].inc();
        self.duration[c].observe(seconds);
    }

    /// Records a retry.
    pub(crate) fn retry(&self, reason: RetryReason) {
        let i = RetryReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.retries[i].inc();
    }
}
