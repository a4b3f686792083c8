//! Owns validating and compiling one cluster resource and one endpoint set
//! (a cluster's inline endpoints or an `Endpoints` resource).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::balancing::compile_balancing;
use super::{ca_bundle, cert_and_key, duration, enum_value, expected_identities, parse_addr, Ctx};
use crate::balancing::EndpointHealthCheck;
use crate::cluster::{Cluster, Endpoint, EndpointTable, Locality, UpstreamProtocol, UpstreamTls};
use crate::error::FieldPath;
use crate::proto;

/// Compiles one cluster with its inline endpoints.
pub(crate) fn compile_cluster(cx: &mut Ctx, c: &proto::Cluster, p: &FieldPath<'_>) -> Cluster {
    use proto::cluster::Protocol as PP;
    let protocol = match enum_value::<PP>(cx, &p.field("protocol"), c.protocol) {
        None | Some(PP::Unspecified | PP::Http1) => UpstreamProtocol::Http1,
        Some(PP::H2) => UpstreamProtocol::H2,
        Some(PP::H2c) => UpstreamProtocol::H2c,
    };
    let tls = c.tls.as_ref().map(|t| {
        let tp = p.field("tls");
        let ca_file = (!t.ca_file.is_empty() || !t.ca_secret.is_empty())
            .then(|| ca_bundle(cx, &tp, "ca_secret", &t.ca_secret, &t.ca_file));
        if t.sni.is_empty() && !t.insecure_skip_verify && c.endpoints.iter().any(|e| e.hostname.is_empty()) {
            cx.err(
                &tp.field("sni"),
                "a server name is needed to verify upstream certificates: set tls.sni (or each endpoint's hostname)",
            );
        }
        let client_cert = match (t.cert_file.is_empty(), t.key_file.is_empty()) {
            _ if !t.client_secret.is_empty() => Some(cert_and_key(
                cx,
                &tp,
                "client_secret",
                &t.client_secret,
                (&t.cert_file, &t.key_file),
            )),
            (true, true) => None,
            (false, false) => Some(cert_and_key(cx, &tp, "", "", (&t.cert_file, &t.key_file))),
            (true, false) => {
                cx.err(&tp.field("cert_file"), "key_file needs its cert_file");
                None
            }
            (false, true) => {
                cx.err(&tp.field("key_file"), "cert_file needs its key_file");
                None
            }
        };
        let expected_identities = expected_identities(cx, &tp, &t.expected_identities);
        if !expected_identities.is_empty() && t.insecure_skip_verify {
            cx.err(
                &tp.field("expected_identities"),
                "an identity cannot be checked with insecure_skip_verify",
            );
        }
        UpstreamTls {
            sni: t.sni.as_str().into(),
            ca_file,
            insecure_skip_verify: t.insecure_skip_verify,
            client_cert,
            expected_identities,
        }
    });
    match (protocol, &tls) {
        (UpstreamProtocol::H2, None) => cx.err(
            &p.field("protocol"),
            "protocol h2 needs tls (ALPN h2); for plaintext HTTP/2 use h2c",
        ),
        (UpstreamProtocol::H2c, Some(_)) => cx.err(
            &p.field("protocol"),
            "protocol h2c is plaintext HTTP/2; with tls use h2",
        ),
        _ => {}
    }
    let balancing = compile_balancing(cx, c, p);
    let connect_timeout = duration(
        cx,
        &p.field("connect_timeout"),
        c.connect_timeout.as_ref(),
        true,
    )
    .unwrap_or(Duration::from_secs(5));
    let (pool_idle_timeout, max_h2_streams) = match &c.pool {
        Some(pool) => {
            let pp = p.field("pool");
            let idle = duration(
                cx,
                &pp.field("idle_timeout"),
                pool.idle_timeout.as_ref(),
                true,
            )
            .unwrap_or(Duration::from_secs(60));
            let streams = match pool.max_h2_streams {
                0 => 100,
                n if n > 10_000 => {
                    cx.err(
                        &pp.field("max_h2_streams"),
                        format!("{n} streams per connection is too many (at most 10000)"),
                    );
                    100
                }
                n => n as usize,
            };
            (idle, streams)
        }
        None => (Duration::from_secs(60), 100),
    };

    let endpoints = compile_endpoints(
        cx,
        &c.name,
        &c.endpoints,
        &c.locality_weights,
        &p.field("endpoints"),
        &p.field("locality_weights"),
    );
    Cluster {
        name: c.name.as_str().into(),
        endpoints: Arc::new(endpoints),
        protocol,
        tls,
        connect_timeout,
        pool_idle_timeout,
        max_h2_streams,
        balancing: Arc::new(balancing),
    }
}

/// Compiles the endpoint list of cluster `cluster` with its locality
/// weights; `p` and `wp` are the two lists' paths.
pub(crate) fn compile_endpoints(
    cx: &mut Ctx,
    cluster: &str,
    list: &[proto::Endpoint],
    weights: &[proto::LocalityWeight],
    p: &FieldPath<'_>,
    wp: &FieldPath<'_>,
) -> EndpointTable {
    let mut locality_weights: Vec<(Locality, u32)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let l = w.locality.as_ref().map_or_else(Locality::default, locality);
        if w.weight == 0 || w.weight > 1_000_000 {
            cx.err(
                &wp.index(i).field("weight"),
                format!("weight {} is out of range (1 to 1000000)", w.weight),
            );
            continue;
        }
        if locality_weights.iter().any(|(o, _)| *o == l) {
            cx.err(
                &wp.index(i).field("locality"),
                format!(
                    "locality {}/{}/{} is weighted twice",
                    l.cloud, l.region, l.zone
                ),
            );
            continue;
        }
        locality_weights.push((l, w.weight));
    }
    let mut endpoints = Vec::with_capacity(list.len());
    let mut addrs = HashSet::new();
    for (j, e) in list.iter().enumerate() {
        let ep = p.index(j);
        let mut address = parse_addr(cx, &ep.field("address"), &e.address);
        if let Some(a) = address {
            if !addrs.insert(a) {
                cx.err(
                    &ep.field("address"),
                    format!("endpoint {a} is listed twice in cluster `{cluster}`"),
                );
                address = None;
            }
        }
        let weight = match e.weight {
            None => 1,
            Some(0) => {
                cx.err(
                    &ep.field("weight"),
                    "weight must be at least 1 (remove the endpoint to stop sending to it)",
                );
                1
            }
            Some(w) if w > 1_000_000 => {
                cx.err(
                    &ep.field("weight"),
                    format!("weight {w} is too large (at most 1000000)"),
                );
                1
            }
            Some(w) => w,
        };
        let locality = e.locality.as_ref().map_or_else(Locality::default, locality);
        let health_check = match &e.health_check {
            None => EndpointHealthCheck::default(),
            Some(h) => {
                let port = match h.port_value {
                    0 => None,
                    p @ 1..=65535 => Some(p as u16),
                    p => {
                        cx.err(
                            &ep.field("health_check").field("port_value"),
                            format!("{p} is not a port"),
                        );
                        None
                    }
                };
                if !h.path.is_empty() && !h.path.starts_with('/') {
                    cx.err(
                        &ep.field("health_check").field("path"),
                        "a path must start with `/`",
                    );
                }
                EndpointHealthCheck {
                    port,
                    path: (!h.path.is_empty()).then(|| h.path.as_str().into()),
                    disabled: h.disable_active_health_check,
                }
            }
        };
        let mut labels: BTreeMap<Arc<str>, Arc<str>> = BTreeMap::new();
        for (key, value) in [
            ("cloud", &locality.cloud),
            ("region", &locality.region),
            ("zone", &locality.zone),
        ] {
            if !value.is_empty() {
                labels.insert(key.into(), value.clone());
            }
        }
        for (k, v) in &e.labels {
            let lp = ep.entry("labels", k);
            if k.is_empty() {
                cx.err(&lp, "label names must not be empty");
                continue;
            }
            if let Some(existing) = labels.get(k.as_str()) {
                if existing.as_ref() != v {
                    cx.err(
                        &lp,
                        format!("label `{k}: {v}` contradicts the locality's {k} `{existing}`; set it in one place"),
                    );
                }
                continue;
            }
            labels.insert(k.as_str().into(), v.as_str().into());
        }
        let Some(address) = address else { continue };
        endpoints.push(Endpoint {
            id: format!("{cluster}/{address}").into(),
            address,
            labels,
            weight,
            priority: e.priority,
            hostname: (!e.hostname.is_empty()).then(|| e.hostname.as_str().into()),
            locality_weight: (!locality_weights.is_empty()).then(|| {
                locality_weights
                    .iter()
                    .find(|(l, _)| *l == locality)
                    .map_or(1, |(_, w)| *w)
            }),
            locality,
            health_check,
        });
    }
    EndpointTable::new(endpoints)
}

fn locality(l: &proto::Locality) -> Locality {
    Locality {
        cloud: l.cloud.as_str().into(),
        region: l.region.as_str().into(),
        zone: l.zone.as_str().into(),
    }
}
