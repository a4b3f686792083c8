//! Owns validating and compiling a cluster's balancing settings: policy,
//! hash key, priority/locality/panic, outlier detection, health checks and
//! circuit breakers, with Envoy's defaults where a field is absent.

use std::sync::Arc;
use std::time::Duration;

use super::{duration, enum_value, Ctx};
use crate::balancing::{
    Balancing, CircuitBreakers, CommonLb, HashKey, HealthCheck, HealthCheckKind, LbPolicy,
    LbSettings, OutlierDetection, RetryLimit,
};
use crate::error::FieldPath;
use crate::proto;

/// Most active health checks per cluster (each is one bit of endpoint state).
pub(crate) const MAX_HEALTH_CHECKS: usize = 8;

/// Compiles the balancing settings of cluster `c` (at `p`).
pub(crate) fn compile_balancing(cx: &mut Ctx, c: &proto::Cluster, p: &FieldPath<'_>) -> Balancing {
    Balancing {
        lb: compile_lb(cx, c, p),
        common: compile_common(
            cx,
            c.common_lb_config.as_ref(),
            &p.field("common_lb_config"),
        ),
        outlier: c
            .outlier_detection
            .as_ref()
            .map(|o| compile_outlier(cx, o, &p.field("outlier_detection"))),
        health_checks: {
            if c.health_checks.len() > MAX_HEALTH_CHECKS {
                cx.err(
                    &p.field("health_checks"),
                    format!(
                        "{} health checks; at most {MAX_HEALTH_CHECKS} per cluster",
                        c.health_checks.len()
                    ),
                );
            }
            c.health_checks
                .iter()
                .take(MAX_HEALTH_CHECKS)
                .enumerate()
                .filter_map(|(i, h)| compile_health_check(cx, h, &p.item("health_checks", i)))
                .collect()
        },
        breakers: c
            .circuit_breakers
            .as_ref()
            .map_or_else(Default::default, |b| {
                compile_breakers(cx, b, &p.field("circuit_breakers"))
            }),
    }
}

fn compile_lb(cx: &mut Ctx, c: &proto::Cluster, p: &FieldPath<'_>) -> LbSettings {
    use proto::cluster::LbPolicy as PLb;
    let policy = match enum_value::<PLb>(cx, &p.field("lb_policy"), c.lb_policy) {
        None | Some(PLb::Unspecified | PLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(PLb::Random) => LbPolicy::Random,
        Some(PLb::LeastRequest) => LbPolicy::LeastRequest,
        Some(PLb::PeakEwma) => LbPolicy::PeakEwma,
        Some(PLb::RingHash) => LbPolicy::RingHash,
        Some(PLb::Maglev) => LbPolicy::Maglev,
    };
    let mut lb = LbSettings {
        policy,
        ..LbSettings::default()
    };
    let mismatch = |cx: &mut Ctx, field: &str, wants: &str| {
        cx.err(
            &p.field(field),
            format!(
                "`{field}` applies to lb_policy {wants}, but this cluster uses {}",
                lb.policy.name()
            ),
        );
    };
    if let Some(l) = &c.least_request {
        if lb.policy != LbPolicy::LeastRequest {
            mismatch(cx, "least_request", "least_request");
        }
        match l.choice_count {
            None => {}
            Some(n @ 2..=100) => lb.choice_count = n,
            Some(n) => cx.err(
                &p.field("least_request").field("choice_count"),
                format!("choice_count {n} is out of range (2 to 100)"),
            ),
        }
    }
    if let Some(e) = &c.peak_ewma {
        if lb.policy != LbPolicy::PeakEwma {
            mismatch(cx, "peak_ewma", "peak_ewma");
        }
        let pp = p.field("peak_ewma");
        if let Some(d) = duration(cx, &pp.field("default_rtt"), e.default_rtt.as_ref(), true) {
            lb.default_rtt = d;
        }
        if let Some(d) = duration(cx, &pp.field("decay"), e.decay.as_ref(), true) {
            lb.decay = d;
        }
        lb.orca = e.orca;
    }
    if let Some(h) = &c.hash_policy {
        if !lb.policy.is_hash() {
            mismatch(cx, "hash_policy", "ring_hash or maglev");
        }
        use proto::hash_policy::Key;
        let hp = p.field("hash_policy");
        lb.hash_key = match &h.key {
            None | Some(Key::SourceAddress(_)) => HashKey::SourceAddress,
            Some(Key::Header(name)) => match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => HashKey::Header(n),
                Err(_) => {
                    cx.err(
                        &hp.field("header"),
                        format!("`{name}` is not a valid header name"),
                    );
                    HashKey::SourceAddress
                }
            },
            Some(Key::Cookie(name)) => {
                if name.is_empty() || name.contains([';', '=', ' ', ',']) {
                    cx.err(
                        &hp.field("cookie"),
                        format!("`{name}` is not a valid cookie name"),
                    );
                }
                HashKey::Cookie(name.as_str().into())
            }
        };
    }
    if let Some(r) = &c.ring_hash {
        if lb.policy != LbPolicy::RingHash {
            mismatch(cx, "ring_hash", "ring_hash");
        }
        const MAX: u64 = 8 * 1024 * 1024;
        lb.ring_min = r.minimum_ring_size.unwrap_or(1024);
        lb.ring_max = r.maximum_ring_size.unwrap_or(MAX);
        let rp = p.field("ring_hash");
        if lb.ring_max > MAX {
            cx.err(
                &rp.field("maximum_ring_size"),
                format!("at most {MAX} ring entries"),
            );
        } else if lb.ring_min == 0 || lb.ring_min > lb.ring_max {
            cx.err(
                &rp.field("minimum_ring_size"),
                format!("must be between 1 and maximum_ring_size ({})", lb.ring_max),
            );
        }
    }
    if let Some(m) = &c.maglev {
        if lb.policy != LbPolicy::Maglev {
            mismatch(cx, "maglev", "maglev");
        }
        if let Some(n) = m.table_size {
            if !(2..=5_000_011).contains(&n) || !is_prime(n) {
                cx.err(
                    &p.field("maglev").field("table_size"),
                    format!(
                        "table_size {n} must be a prime of at most 5000011 (for example 65537)"
                    ),
                );
            } else {
                lb.maglev_table_size = n;
            }
        }
    }
    lb
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// A percentage field (0–100), or `default` when absent.
fn percent(cx: &mut Ctx, p: &FieldPath<'_>, v: Option<u32>, default: u32) -> u32 {
    match v {
        None => default,
        Some(v @ 0..=100) => v,
        Some(v) => {
            cx.err(p, format!("{v} is not a percentage (0 to 100)"));
            default
        }
    }
}

/// A count that must be at least 1, or `default` when absent.
fn at_least_one(cx: &mut Ctx, p: &FieldPath<'_>, v: Option<u32>, default: u32) -> u32 {
    match v {
        None => default,
        Some(0) => {
            cx.err(p, "must be at least 1");
            default
        }
        Some(v) => v,
    }
}

fn compile_common(cx: &mut Ctx, c: Option<&proto::CommonLbConfig>, p: &FieldPath<'_>) -> CommonLb {
    let mut out = CommonLb::default();
    let Some(c) = c else { return out };
    if let Some(t) = c.healthy_panic_threshold {
        if (0.0..=100.0).contains(&t) {
            out.panic_threshold = t;
        } else {
            cx.err(
                &p.field("healthy_panic_threshold"),
                format!("{t} is not a percentage (0 to 100)"),
            );
        }
    }
    match c.overprovisioning_factor {
        None => {}
        Some(f @ 100..=1000) => out.overprovisioning = f,
        Some(f) => cx.err(
            &p.field("overprovisioning_factor"),
            format!("{f} is out of range: a percentage from 100 (1.0) to 1000 (10.0); the default is 140"),
        ),
    }
    if let Some(z) = &c.zone_aware {
        out.zone_aware = z.enabled.unwrap_or(true);
        out.zone_min_cluster_size = z.min_cluster_size.unwrap_or(6);
    }
    out
}

fn compile_outlier(
    cx: &mut Ctx,
    o: &proto::OutlierDetection,
    p: &FieldPath<'_>,
) -> OutlierDetection {
    let d = OutlierDetection::default();
    let dur = |cx: &mut Ctx, name: &str, v: Option<&prost_types::Duration>, def: Duration| {
        duration(cx, &p.field(name), v, true).unwrap_or(def)
    };
    let interval = dur(cx, "interval", o.interval.as_ref(), d.interval);
    let base_ejection_time = dur(
        cx,
        "base_ejection_time",
        o.base_ejection_time.as_ref(),
        d.base_ejection_time,
    );
    // Envoy: the longest ejection is at least the base time.
    let max_ejection_time = dur(
        cx,
        "max_ejection_time",
        o.max_ejection_time.as_ref(),
        d.max_ejection_time,
    )
    .max(base_ejection_time);
    let max_ejection_time_jitter = duration(
        cx,
        &p.field("max_ejection_time_jitter"),
        o.max_ejection_time_jitter.as_ref(),
        false,
    )
    .unwrap_or_default();
    macro_rules! pct {
        ($f:ident) => {
            percent(cx, &p.field(stringify!($f)), o.$f, d.$f)
        };
    }
    macro_rules! count {
        ($f:ident) => {
            at_least_one(cx, &p.field(stringify!($f)), o.$f, d.$f)
        };
    }
    OutlierDetection {
        consecutive_5xx: count!(consecutive_5xx),
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_time_jitter,
        max_ejection_percent: pct!(max_ejection_percent),
        enforcing_consecutive_5xx: pct!(enforcing_consecutive_5xx),
        consecutive_gateway_failure: count!(consecutive_gateway_failure),
        enforcing_consecutive_gateway_failure: pct!(enforcing_consecutive_gateway_failure),
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        consecutive_local_origin_failure: count!(consecutive_local_origin_failure),
        enforcing_consecutive_local_origin_failure: pct!(
            enforcing_consecutive_local_origin_failure
        ),
        enforcing_success_rate: pct!(enforcing_success_rate),
        enforcing_local_origin_success_rate: pct!(enforcing_local_origin_success_rate),
        success_rate_minimum_hosts: count!(success_rate_minimum_hosts),
        success_rate_request_volume: count!(success_rate_request_volume),
        success_rate_stdev_factor: o
            .success_rate_stdev_factor
            .unwrap_or(d.success_rate_stdev_factor),
        failure_percentage_threshold: pct!(failure_percentage_threshold),
        enforcing_failure_percentage: pct!(enforcing_failure_percentage),
        enforcing_failure_percentage_local_origin: pct!(enforcing_failure_percentage_local_origin),
        failure_percentage_minimum_hosts: count!(failure_percentage_minimum_hosts),
        failure_percentage_request_volume: count!(failure_percentage_request_volume),
        successful_active_health_check_uneject_host: o
            .successful_active_health_check_uneject_host
            .unwrap_or(d.successful_active_health_check_uneject_host),
        always_eject_one_host: o.always_eject_one_host.unwrap_or(false),
    }
}

fn compile_health_check(
    cx: &mut Ctx,
    h: &proto::HealthCheck,
    p: &FieldPath<'_>,
) -> Option<HealthCheck> {
    use proto::health_check::HealthChecker as HC;
    let non_empty = |s: &str| (!s.is_empty()).then(|| Arc::<str>::from(s));
    let kind = match &h.health_checker {
        None => {
            cx.err(
                p,
                "a health check needs one of http_health_check, grpc_health_check, tcp_health_check",
            );
            return None;
        }
        Some(HC::HttpHealthCheck(http)) => {
            let hp = p.field("http_health_check");
            if !http.path.starts_with('/') {
                cx.err(&hp.field("path"), "a path starting with `/` is required");
            }
            let mut expected = Vec::new();
            for (i, r) in http.expected_statuses.iter().enumerate() {
                if !(100 <= r.start && r.start < r.end && r.end <= 600) {
                    cx.err(
                        &hp.item("expected_statuses", i),
                        format!(
                            "[{}, {}) is not a range of statuses (start < end, within 100 to 600)",
                            r.start, r.end
                        ),
                    );
                    continue;
                }
                expected.push((r.start as u16, r.end as u16));
            }
            if expected.is_empty() {
                expected.push((200, 201));
            }
            HealthCheckKind::Http {
                path: http.path.as_str().into(),
                host: non_empty(&http.host),
                expected,
            }
        }
        Some(HC::GrpcHealthCheck(g)) => HealthCheckKind::Grpc {
            service: g.service_name.as_str().into(),
            authority: non_empty(&g.authority),
        },
        Some(HC::TcpHealthCheck(_)) => HealthCheckKind::Tcp,
    };
    let timeout = duration(cx, &p.field("timeout"), h.timeout.as_ref(), true)
        .unwrap_or(Duration::from_secs(1));
    let interval = duration(cx, &p.field("interval"), h.interval.as_ref(), true)
        .unwrap_or(Duration::from_secs(5));
    let interval_jitter = duration(
        cx,
        &p.field("interval_jitter"),
        h.interval_jitter.as_ref(),
        false,
    )
    .unwrap_or_default();
    let interval_jitter_percent = percent(
        cx,
        &p.field("interval_jitter_percent"),
        Some(h.interval_jitter_percent),
        0,
    );
    Some(HealthCheck {
        timeout,
        interval,
        interval_jitter,
        interval_jitter_percent,
        unhealthy_threshold: at_least_one(
            cx,
            &p.field("unhealthy_threshold"),
            h.unhealthy_threshold,
            3,
        ),
        healthy_threshold: at_least_one(cx, &p.field("healthy_threshold"), h.healthy_threshold, 2),
        kind,
    })
}

fn compile_breakers(
    cx: &mut Ctx,
    b: &proto::CircuitBreakers,
    p: &FieldPath<'_>,
) -> CircuitBreakers {
    let d = CircuitBreakers::default();
    let limit = |cx: &mut Ctx, name: &str, v: Option<u32>, def: u32| match v {
        None => def,
        Some(0) => {
            cx.err(
                &p.field(name),
                "0 would refuse every request; remove the field for the default (1024)",
            );
            def
        }
        Some(v) => v,
    };
    let max_connections = limit(cx, "max_connections", b.max_connections, d.max_connections);
    let max_pending_requests = match b.max_pending_requests {
        // No waiting at all is a valid choice: overflow at once.
        Some(v) => v,
        None => d.max_pending_requests,
    };
    let max_requests = limit(cx, "max_requests", b.max_requests, d.max_requests);
    let retries = match (&b.retry_budget, b.max_retries) {
        (None, Some(n)) => RetryLimit::Fixed(n),
        (None, None) => d.retries,
        (Some(rb), fixed) => {
            let bp = p.field("retry_budget");
            if fixed.is_some() {
                cx.err(
                    &p.field("max_retries"),
                    "max_retries and retry_budget exclude each other; keep one",
                );
            }
            let percent = match rb.budget_percent {
                None => 20.0,
                Some(v) if (0.0..=100.0).contains(&v) => v,
                Some(v) => {
                    cx.err(
                        &bp.field("budget_percent"),
                        format!("{v} is not a percentage (0 to 100)"),
                    );
                    20.0
                }
            };
            RetryLimit::Budget {
                percent,
                min_concurrency: rb.min_retry_concurrency.unwrap_or(3),
            }
        }
    };
    CircuitBreakers {
        max_connections,
        max_pending_requests,
        max_requests,
        retries,
    }
}
