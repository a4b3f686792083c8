//! What parsing and validating a file costs the control plane and what
//! decoding and applying an update costs a subscriber, measured alone in
//! this process before anything else runs.

use std::path::Path;
use std::time::Instant;

use corridor_benches::xds_scale::gen::Layout;
use corridor_benches::xds_scale::report::median;
use corridor_config::{Change, DiskFiles, Kind, Origin, Resource, Store, Upsert};

use crate::{log, Bench};

/// Times `f` `n` times; the median in seconds.
fn time_median<T>(n: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        std::hint::black_box(f());
        v.push(start.elapsed().as_secs_f64());
    }
    median(v).unwrap_or(0.0)
}

/// The protobuf encodings of every resource of `kind` in `text`.
fn encodings(text: &str, kind: Kind) -> Result<Vec<Vec<u8>>, String> {
    let (file, _) = corridor_config::parse_resource_file(text, "generated")
        .map_err(|e| format!("a generated file does not parse: {e}"))?;
    Ok(match kind {
        Kind::RouteTable => file
            .route_tables
            .into_iter()
            .map(|t| Resource::RouteTable(t).encode())
            .collect(),
        Kind::Endpoints => file
            .endpoints
            .into_iter()
            .map(|e| Resource::Endpoints(e).encode())
            .collect(),
        _ => Vec::new(),
    })
}

fn decode_all(kind: Kind, list: &[Vec<u8>]) -> usize {
    list.iter()
        .filter(|b| Resource::decode(kind, b).is_ok())
        .count()
}

/// Every resource of a resource file.
fn resources(text: &str) -> Result<Vec<Resource>, String> {
    let (f, _) = corridor_config::parse_resource_file(text, "generated")
        .map_err(|e| format!("a generated file does not parse: {e}"))?;
    let mut out: Vec<Resource> = f.listeners.into_iter().map(Resource::Listener).collect();
    out.extend(
        f.clusters
            .into_iter()
            .map(|c| Resource::Cluster(Box::new(c))),
    );
    out.extend(f.route_tables.into_iter().map(Resource::RouteTable));
    out.extend(f.endpoints.into_iter().map(Resource::Endpoints));
    Ok(out)
}

/// A pushed change, versions being content hashes as the control plane makes them.
fn pushed(list: Vec<Resource>, full: Vec<Kind>) -> Change {
    Change {
        upserts: list
            .into_iter()
            .map(|r| {
                let version = format!("{:016x}", r.digest());
                Upsert::pushed(r, version)
            })
            .collect(),
        full,
        origin: Origin::Xds,
        ..Change::default()
    }
}

/// The part of the proxy's apply that is `corridor-config`'s: `Store::apply`
/// of the pushed change plus `Store::snapshot`, on a store holding everything.
fn store_costs(b: &mut Bench, layout: &Layout) -> Result<(), String> {
    let mut all = resources(&layout.listeners_yaml())?;
    all.extend(resources(&layout.clusters_yaml())?);
    all.extend(resources(&layout.routes_yaml(0))?);
    let mut endpoints = Vec::new();
    for f in 0..layout.shape.endpoint_files {
        endpoints.extend(resources(&layout.endpoints_yaml(f, 0))?);
    }
    all.extend(endpoints.iter().cloned());
    let base = Store::empty()
        .apply(pushed(all, Kind::ALL.to_vec()), &DiskFiles, false)
        .map_err(|e| format!("the generated configuration does not apply: {e:?}"))?;
    let f = layout.shape.endpoint_file_of(layout.churn_cluster);
    let moved: Vec<Resource> = resources(&layout.endpoints_yaml(f, 1))?
        .into_iter()
        .filter(|r| {
            r.name() == corridor_benches::xds_scale::gen::cluster_name(layout.churn_cluster)
        })
        .collect();
    let mut sotw = endpoints;
    for r in &mut sotw {
        if r.name() == moved[0].name() {
            *r = moved[0].clone();
        }
    }
    // A SotW endpoint update as the proxy builds it: the changed resource,
    // the others listed as held at the same version (not decoded again).
    let mut sotw_change = pushed(vec![moved[0].clone()], vec![Kind::Endpoints]);
    sotw_change.unchanged = sotw
        .iter()
        .filter(|r| r.name() != moved[0].name())
        .map(|r| (Kind::Endpoints, r.name().to_string()))
        .collect();
    let cases = [
        (
            "store_routes_s",
            pushed(resources(&layout.routes_yaml(1))?, vec![Kind::RouteTable]),
            5,
        ),
        ("store_endpoint_delta_s", pushed(moved, Vec::new()), 51),
        ("store_endpoint_sotw_s", sotw_change, 5),
    ];
    for (key, change, n) in cases {
        base.apply(change.clone(), &DiskFiles, false)
            .map_err(|e| format!("{key}: the change does not apply: {e:?}"))?;
        let (mut total, mut apply) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let c = change.clone();
            let start = Instant::now();
            let next = base.apply(c, &DiskFiles, false);
            apply.push(start.elapsed().as_secs_f64());
            let ok = next.map(Store::snapshot).is_ok();
            total.push(start.elapsed().as_secs_f64());
            std::hint::black_box(ok);
        }
        b.rec.add("-", "cost", key, median(total).unwrap_or(0.0));
        let key = format!("{}_apply_only_s", key.trim_end_matches("_s"));
        b.rec.add("-", "cost", &key, median(apply).unwrap_or(0.0));
    }
    Ok(())
}

/// What parsing and validating a file costs the control plane
/// (`corridor_xds::check_file`, the validator it runs on every changed
/// file) and what decoding an update costs a subscriber, measured alone.
pub fn costs(b: &mut Bench, layout: &Layout) -> Result<(), String> {
    log("measuring per-file costs in isolation (parse + validate, decode)");
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let routes = read(&layout.routes_path())?;
    let churn = read(&layout.churn_path())?;
    let mut endpoint_files = Vec::new();
    for f in 0..layout.shape.endpoint_files {
        endpoint_files.push(read(&layout.endpoints_path(f))?);
    }
    let check = |t: &str| corridor_xds::check_file(t, "bench").map_err(|e| e.to_string());
    check(&routes)?;
    let rec = &mut b.rec;
    rec.add(
        "-",
        "cost",
        "cp_check_routes_s",
        time_median(3, || check(&routes)),
    );
    rec.add(
        "-",
        "cost",
        "cp_check_churn_file_s",
        time_median(3, || check(&churn)),
    );
    rec.add(
        "-",
        "cost",
        "cp_check_all_endpoints_s",
        time_median(1, || {
            endpoint_files.iter().filter(|t| check(t).is_ok()).count()
        }),
    );
    let route_bytes = encodings(&routes, Kind::RouteTable)?;
    let mut endpoint_bytes = Vec::new();
    for t in &endpoint_files {
        endpoint_bytes.extend(encodings(t, Kind::Endpoints)?);
    }
    let one = vec![endpoint_bytes
        .get(layout.churn_cluster)
        .cloned()
        .unwrap_or_default()];
    let size = |l: &[Vec<u8>]| l.iter().map(Vec::len).sum::<usize>() as f64;
    rec.add("-", "cost", "routes_yaml_bytes", routes.len() as f64);
    rec.add(
        "-",
        "cost",
        "endpoints_yaml_bytes",
        endpoint_files.iter().map(String::len).sum::<usize>() as f64,
    );
    rec.add("-", "cost", "churn_yaml_bytes", churn.len() as f64);
    rec.add("-", "cost", "routes_proto_bytes", size(&route_bytes));
    rec.add("-", "cost", "endpoints_proto_bytes", size(&endpoint_bytes));
    rec.add(
        "-",
        "cost",
        "endpoints_resources",
        endpoint_bytes.len() as f64,
    );
    rec.add(
        "-",
        "cost",
        "decode_routes_s",
        time_median(5, || decode_all(Kind::RouteTable, &route_bytes)),
    );
    rec.add(
        "-",
        "cost",
        "decode_all_endpoints_s",
        time_median(5, || decode_all(Kind::Endpoints, &endpoint_bytes)),
    );
    rec.add(
        "-",
        "cost",
        "decode_one_endpoints_s",
        time_median(101, || decode_all(Kind::Endpoints, &one)),
    );
    store_costs(b, layout)
}
