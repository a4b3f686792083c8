use std::sync::Arc;

use http::{HeaderMap, Method};

use super::*;
use crate::files::DiskFiles;
use crate::route::RequestView;
use crate::{load_store_str, RouteAction};

const BASE: &str = r#"
listeners: [{ name: main, address: "127.0.0.1:1", route_table: t }]
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - route:
              cluster: c
              subset: { labels: { model: llama }, fallback: any }
clusters:
  - name: c
    endpoints: [{ address: "127.0.0.1:2", labels: { model: gpt } }]
"#;

fn base() -> Store {
    load_store_str(BASE, "base.yaml").unwrap()
}

/// BASE's resources, all pushed by the control stream.
fn pushed_base() -> Store {
    let (b, _) = crate::parse_bootstrap(BASE, "base.yaml").unwrap();
    let mut change = Change::from_bootstrap(&b);
    change.origin = Origin::Xds;
    Store::empty().apply(change, &DiskFiles, false).unwrap()
}

fn endpoints(cluster: &str, addrs: &[(&str, &str)]) -> Resource {
    Resource::Endpoints(proto::Endpoints {
        cluster: cluster.into(),
        endpoints: addrs
            .iter()
            .map(|(a, model)| proto::Endpoint {
                address: (*a).into(),
                labels: [("model".to_string(), (*model).to_string())].into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn push(store: &Store, upserts: Vec<Resource>) -> Result<Store, Vec<ConfigError>> {
    store.apply(
        Change {
            upserts: upserts
                .into_iter()
                .map(|r| Upsert::pushed(r, "v1"))
                .collect(),
            origin: Origin::Xds,
            ..Change::default()
        },
        &DiskFiles,
        false,
    )
}

fn table(name: &str, cluster: &str) -> Resource {
    Resource::RouteTable(proto::RouteTable {
        name: name.into(),
        virtual_hosts: vec![proto::VirtualHost {
            domains: vec!["*".into()],
            routes: vec![proto::Route {
                action: Some(proto::route::Action::Route(proto::RouteAction {
                    cluster_specifier: Some(proto::route_action::ClusterSpecifier::Cluster(
                        cluster.into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn target_cluster(s: &Snapshot, table: &str) -> Arc<str> {
    let t = s.route_table(table).unwrap();
    match &t.virtual_hosts[0].routes[0].action {
        RouteAction::Forward(f) => f.targets[0].cluster.clone(),
        RouteAction::Direct(_) => panic!("not a forward route"),
    }
}

#[test]
fn an_endpoint_update_keeps_route_tables_and_fills_an_empty_subset() {
    let before = base().snapshot();
    let store = Arc::clone(&before.store);
    let candidates = |s: &Snapshot| {
        let t = s.route_table("t").unwrap();
        let RouteAction::Forward(f) = &t.virtual_hosts[0].routes[0].action else {
            panic!()
        };
        let c = s.cluster("c").unwrap();
        let h = HeaderMap::new();
        let view = RequestView {
            method: &Method::GET,
            path: "/",
            query: None,
            headers: &h,
            client: None,
        };
        let set = f.targets[0].candidates(c, &view).unwrap();
        set.iter()
            .map(|i| c.endpoints[i].address.to_string())
            .collect::<Vec<_>>()
    };
    // No endpoint is labelled llama yet: the fallback (any) applies.
    assert_eq!(candidates(&before), ["127.0.0.1:2"]);
    let next = push(
        &store,
        vec![endpoints(
            "c",
            &[("127.0.0.1:3", "llama"), ("127.0.0.1:4", "gpt")],
        )],
    )
    .unwrap()
    .snapshot();
    assert!(
        Arc::ptr_eq(
            before.route_table("t").unwrap(),
            next.route_table("t").unwrap()
        ),
        "an endpoint-only update must not recompile route tables"
    );
    assert!(Arc::ptr_eq(&before.listeners[0], &next.listeners[0]));
    assert_eq!(candidates(&next), ["127.0.0.1:3"]);
    assert_ne!(before.version, next.version);
    assert_eq!(
        next.cluster("c").unwrap().endpoints[0].id.as_ref(),
        "c/127.0.0.1:3"
    );
}

#[test]
fn an_unchanged_resource_is_not_recompiled() {
    let a = base().snapshot();
    let b = a
        .store
        .apply(
            Change::from_bootstrap(&crate::parse_bootstrap(BASE, "x").unwrap().0),
            &DiskFiles,
            true,
        )
        .unwrap()
        .snapshot();
    assert_eq!(a.version, b.version);
    assert!(Arc::ptr_eq(
        a.clusters.values().next().unwrap(),
        b.clusters.values().next().unwrap()
    ));
    assert!(Arc::ptr_eq(&a.route_tables[0], &b.route_tables[0]));
}

#[test]
fn a_route_table_waits_for_its_clusters_and_the_old_version_keeps_serving() {
    let store = pushed_base();
    // The new version of `t` names a cluster not received yet: `t` keeps serving
    // the old version and reports what it waits for.
    let warming = push(&store, vec![table("t", "late")]).unwrap();
    let s = warming.clone().snapshot();
    assert_eq!(target_cluster(&s, "t").as_ref(), "c");
    assert_eq!(
        warming.warming(),
        vec![Warming {
            kind: Kind::RouteTable,
            name: "t".into(),
            waiting_for: "clusters late; the previous version keeps serving".into(),
        }]
    );
    // A new table with a new listener: neither is served until the cluster comes.
    let mut l = proto::Listener {
        name: "side".into(),
        address: "127.0.0.1:5".into(),
        route_table: "t2".into(),
        ..Default::default()
    };
    let w2 = push(
        &warming,
        vec![table("t2", "late"), Resource::Listener(l.clone())],
    )
    .unwrap();
    let s2 = w2.clone().snapshot();
    assert!(s2.route_table("t2").is_none() && s2.listener("side").is_none());
    let cluster = Resource::Cluster(Box::new(proto::Cluster {
        name: "late".into(),
        endpoints: vec![proto::Endpoint {
            address: "127.0.0.1:6".into(),
            ..Default::default()
        }],
        ..Default::default()
    }));
    let ready = push(&w2, vec![cluster]).unwrap();
    assert!(ready.warming().is_empty());
    let s3 = ready.clone().snapshot();
    assert_eq!(target_cluster(&s3, "t").as_ref(), "late");
    assert_eq!(target_cluster(&s3, "t2").as_ref(), "late");
    assert!(s3.listener("side").is_some());
    // Removing the listener stops serving it.
    l.name = "side".into();
    let removed = ready
        .apply(
            Change {
                removals: vec![(Kind::Listener, "side".into())],
                origin: Origin::Xds,
                ..Change::default()
            },
            &DiskFiles,
            false,
        )
        .unwrap()
        .snapshot();
    assert!(removed.listener("side").is_none());
}

#[test]
fn pushed_errors_name_the_resource_and_field_and_change_nothing() {
    let store = base();
    let bad = Resource::Cluster(Box::new(proto::Cluster {
        name: "gpu".into(),
        endpoints: vec![proto::Endpoint {
            address: "gpu-0:80".into(),
            ..Default::default()
        }],
        ..Default::default()
    }));
    let errors = push(&store, vec![bad, endpoints("c", &[("nope", "x")])]).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text[0].starts_with("Cluster(gpu).endpoints[0].address: invalid address `gpu-0:80`"),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("Endpoints(c).endpoints[0].address: invalid address `nope`"),
        "{text:?}"
    );
    assert_eq!(text.len(), 2);
    // The store it was applied to is untouched.
    assert!(store
        .resources(Kind::Cluster)
        .iter()
        .all(|(n, _, _)| n.as_ref() == "c"));
}

#[test]
fn duplicate_names_and_address_clashes_are_errors() {
    let store = base();
    let l = |name: &str, addr: &str| {
        Resource::Listener(proto::Listener {
            name: name.into(),
            address: addr.into(),
            route_table: "t".into(),
            ..Default::default()
        })
    };
    let e = push(&store, vec![l("a", "127.0.0.1:7"), l("a", "127.0.0.1:8")]).unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "Listener(a).name: listener name `a` is used twice"
    );
    let e = push(&store, vec![l("b", "127.0.0.1:1")]).unwrap_err();
    assert!(
        e[0].to_string()
            .starts_with("Listener(b).address: address 127.0.0.1:1 is used by another listener"),
        "{e:?}"
    );
}

#[test]
fn a_file_reload_removes_only_file_resources() {
    let store = push(
        &base(),
        vec![Resource::Cluster(Box::new(proto::Cluster {
            name: "pushed".into(),
            ..Default::default()
        }))],
    )
    .unwrap();
    let (b, _) = crate::parse_bootstrap(BASE, "x").unwrap();
    let reloaded = store
        .apply(Change::from_bootstrap(&b), &DiskFiles, true)
        .unwrap();
    let names: Vec<_> = reloaded
        .resources(Kind::Cluster)
        .into_iter()
        .map(|(n, _, _)| n.to_string())
        .collect();
    assert_eq!(names, ["c", "pushed"]);
    // A change given in full for its origin removes what it no longer lists.
    let emptied = reloaded
        .apply(
            Change {
                full: vec![Kind::Cluster],
                origin: Origin::Xds,
                ..Change::default()
            },
            &DiskFiles,
            false,
        )
        .unwrap();
    assert_eq!(emptied.resources(Kind::Cluster).len(), 1);
}

#[test]
fn resources_round_trip_through_their_encoding() {
    for kind in Kind::ALL {
        assert_eq!(Kind::from_type_url(kind.type_url()), Some(kind));
    }
    let r = endpoints("c", &[("127.0.0.1:9", "gpt")]);
    let back = Resource::decode(Kind::Endpoints, &r.encode()).unwrap();
    assert_eq!(back, r);
    assert!(Resource::decode(Kind::Cluster, &[0xff, 0xff, 0xff]).is_err());
    assert_eq!(r.to_json()["cluster"], "c");
}

#[test]
fn the_store_dumps_to_a_bootstrap_that_loads_to_the_same_version() {
    let store = push(&base(), vec![endpoints("c", &[("127.0.0.1:9", "gpt")])]).unwrap();
    let snap = store.clone().snapshot();
    let text = serde_json::to_string(&crate::to_json(&store.to_bootstrap())).unwrap();
    let again = crate::load_str(&text, "dump.json").unwrap();
    assert_eq!(again.version, snap.version);
    assert_eq!(again.cluster("c").unwrap().endpoints[0].address.port(), 9);
}

#[test]
fn a_pushed_removal_removes_only_pushed_resources() {
    let store = base();
    let removed = store
        .apply(
            Change {
                removals: vec![(Kind::Cluster, "c".into())],
                origin: Origin::Xds,
                ..Change::default()
            },
            &DiskFiles,
            false,
        )
        .unwrap();
    assert_eq!(
        removed.resources(Kind::Cluster).len(),
        1,
        "a file's cluster stays"
    );
    let pushed = push(
        &store,
        vec![Resource::Cluster(Box::new(proto::Cluster {
            name: "p".into(),
            ..Default::default()
        }))],
    )
    .unwrap();
    let gone = pushed
        .apply(
            Change {
                removals: vec![(Kind::Cluster, "p".into())],
                origin: Origin::Xds,
                ..Change::default()
            },
            &DiskFiles,
            false,
        )
        .unwrap();
    assert_eq!(gone.resources(Kind::Cluster).len(), 1);
}

#[test]
fn a_pushed_cluster_without_endpoints_warms_until_they_arrive() {
    let cluster = Resource::Cluster(Box::new(proto::Cluster {
        name: "eds".into(),
        ..Default::default()
    }));
    let warming = push(&pushed_base(), vec![cluster, table("t", "eds")]).unwrap();
    assert_eq!(
        target_cluster(&warming.clone().snapshot(), "t").as_ref(),
        "c"
    );
    assert_eq!(
        warming.warming()[0].waiting_for,
        "clusters eds (its endpoints); the previous version keeps serving"
    );
    let ready = push(&warming, vec![endpoints("eds", &[("127.0.0.1:7", "x")])]).unwrap();
    assert_eq!(target_cluster(&ready.snapshot(), "t").as_ref(), "eds");
}

#[test]
fn a_listener_keeps_serving_its_previous_version_while_its_new_table_warms() {
    let store = base();
    let moved = Resource::Listener(proto::Listener {
        name: "main".into(),
        address: "127.0.0.1:1".into(),
        route_table: "t2".into(),
        ..Default::default()
    });
    // `main` comes from the file: a push may not replace it.
    let e = push(&store, vec![moved.clone()]).unwrap_err();
    assert!(
        e[0].to_string()
            .contains("defined in the configuration file"),
        "{e:?}"
    );

    let pushed = |name: &str, table: &str| {
        Resource::Listener(proto::Listener {
            name: name.into(),
            address: "127.0.0.1:3".into(),
            route_table: table.into(),
            ..Default::default()
        })
    };
    let s1 = push(&store, vec![table("t1", "c"), pushed("side", "t1")]).unwrap();
    assert_eq!(
        s1.clone()
            .snapshot()
            .listener("side")
            .unwrap()
            .route_table
            .as_ref(),
        "t1"
    );
    // The listener now names a table that has not arrived, and t1 is gone (a
    // state-of-the-world RouteTable response without it): the old version
    // keeps serving with t1.
    let s2 = s1
        .apply(
            Change {
                upserts: vec![Upsert::pushed(pushed("side", "t2"), "v2")],
                full: vec![Kind::RouteTable],
                origin: Origin::Xds,
                ..Change::default()
            },
            &DiskFiles,
            false,
        )
        .unwrap();
    let snap = s2.clone().snapshot();
    assert_eq!(snap.listener("side").unwrap().route_table.as_ref(), "t1");
    assert!(snap.route_table("t1").is_some());
    assert_eq!(
        s2.warming()
            .iter()
            .find(|w| w.kind == Kind::Listener)
            .unwrap()
            .waiting_for,
        "route table t2; the previous version keeps serving"
    );
    let s3 = push(&s2, vec![table("t2", "c")]).unwrap();
    let snap = s3.clone().snapshot();
    assert_eq!(snap.listener("side").unwrap().route_table.as_ref(), "t2");
    assert!(
        snap.route_table("t1").is_none(),
        "t1 is served only while used"
    );
    assert!(s3.warming().is_empty());
}

/// Times applies on a store the size of the scale benchmark (10 000 routes,
/// 1 000 clusters of 50 endpoints). Run with
/// `cargo test -p corridor-config --release -- --ignored --nocapture apply_cost`.
#[test]
#[ignore = "a measurement, not a check"]
fn apply_cost_at_scale() {
    use crate::testing::{endpoints, route_table, scale_resources};
    let upserts = scale_resources();
    let t = std::time::Instant::now();
    let store = push(&Store::empty(), upserts).unwrap();
    let full = t.elapsed();
    let mut table_times = Vec::new();
    let mut s = store.clone();
    for gen in 1..=9 {
        let next = route_table(gen);
        let t = std::time::Instant::now();
        s = push(&s, vec![next]).unwrap();
        let _ = s.clone().snapshot();
        table_times.push(t.elapsed());
    }
    table_times.sort();
    let snap = store.clone().snapshot();
    let mut times = Vec::new();
    let mut s = store;
    for i in 1..=50 {
        let one = endpoints(7, i);
        let t = std::time::Instant::now();
        s = push(&s, vec![one]).unwrap();
        let snap2 = s.clone().snapshot();
        times.push(t.elapsed());
        assert!(Arc::ptr_eq(
            snap.route_table("big").unwrap(),
            snap2.route_table("big").unwrap()
        ));
    }
    times.sort();
    println!(
        "full build {full:?}; 10k-route table change + snapshot: median {:?}; \
         one-endpoint apply + snapshot: median {:?}, max {:?}",
        table_times[table_times.len() / 2],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[test]
fn a_full_change_keeps_resources_it_lists_as_unchanged() {
    let store = push(
        &pushed_base(),
        vec![endpoints("c", &[("127.0.0.1:9", "gpt")])],
    )
    .unwrap();
    assert_eq!(
        store
            .version_of(Kind::Endpoints, "c", Origin::Xds)
            .as_deref(),
        Some("v1")
    );
    let kept = store
        .apply(
            Change {
                full: vec![Kind::Endpoints],
                unchanged: vec![(Kind::Endpoints, "c".into())],
                origin: Origin::Xds,
                ..Change::default()
            },
            &DiskFiles,
            false,
        )
        .unwrap();
    assert_eq!(kept.resources(Kind::Endpoints).len(), 1);
    let dropped = store
        .apply(
            Change {
                full: vec![Kind::Endpoints],
                origin: Origin::Xds,
                ..Change::default()
            },
            &DiskFiles,
            false,
        )
        .unwrap();
    assert!(dropped.resources(Kind::Endpoints).is_empty());
}

fn policy(name: &str, allowed: &[&str]) -> Resource {
    Resource::ResidencyPolicy(proto::ResidencyPolicy {
        name: name.into(),
        rules: vec![proto::ResidencyRule {
            data_classes: vec!["pii".into()],
            allowed_jurisdictions: allowed.iter().map(|j| j.to_string()).collect(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn table_with_policy(name: &str, cluster: &str, policy: &str) -> Resource {
    let Resource::RouteTable(mut t) = table(name, cluster) else {
        unreachable!()
    };
    t.virtual_hosts[0].residency_policy = policy.into();
    t.virtual_hosts[0].routes[0].data_class = "pii".into();
    Resource::RouteTable(t)
}

#[test]
fn residency_policies_are_resources_a_route_table_waits_for() {
    let geo = r#"
geo: { jurisdictions: [EU, US] }
xds: { server: "http://127.0.0.1:1", node_id: n }
"#;
    let (b, _) = crate::parse_bootstrap(geo, "geo.yaml").unwrap();
    let store = Store::from_bootstrap(b, &DiskFiles).unwrap();
    let c = Resource::Cluster(Box::new(proto::Cluster {
        name: "c".into(),
        endpoints: vec![proto::Endpoint {
            address: "127.0.0.1:2".into(),
            ..Default::default()
        }],
        ..Default::default()
    }));
    let store = push(&store, vec![table_with_policy("t", "c", "eu"), c]).unwrap();
    // The table names a policy that has not arrived: it warms.
    assert!(store.clone().snapshot().route_table("t").is_none());
    let w = store.warming();
    assert_eq!(w[0].waiting_for, "residency policies eu", "{w:?}");

    // A policy naming a jurisdiction these geo tables lack is rejected with
    // its resource name and field.
    let errs = push(&store, vec![policy("eu", &["EU", "MARS"])]).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "ResidencyPolicy(eu).rules[0].allowed_jurisdictions[1]: unknown jurisdiction `MARS`; known: EU, US (from geo.jurisdictions, geo.countries and geo.regions)"
    );

    let store = push(&store, vec![policy("eu", &["EU"])]).unwrap();
    let snap = store.clone().snapshot();
    assert!(snap.route_table("t").is_some());
    let p = &store.residency().policies["eu"];
    assert_eq!(
        p.allowed_for(0, None),
        1 << store.residency().geo.jurisdiction("EU").unwrap()
    );

    // A push that drops a class a route uses is accepted (the table's new
    // version may be on its way): the table warms, and its served version
    // reads the class as unknown, the policy's strictest reading.
    let Resource::ResidencyPolicy(mut other) = policy("eu", &["EU"]) else {
        unreachable!()
    };
    other.rules[0].data_classes = vec!["health".into()];
    let dropped = push(&store, vec![Resource::ResidencyPolicy(other)]).unwrap();
    assert_eq!(
        dropped.warming()[0].waiting_for,
        "residency policies eu (to define class pii); the previous version keeps serving"
    );
    assert!(dropped.clone().snapshot().route_table("t").is_some());
    assert_eq!(dropped.residency().policies["eu"].class("pii"), None);

    // A removed policy that a served table still names stays in force for
    // it (make before break) until the table's new version arrives.
    let removed = store
        .apply(
            Change {
                removals: vec![(Kind::ResidencyPolicy, "eu".into())],
                origin: Origin::Xds,
                ..Change::default()
            },
            &DiskFiles,
            false,
        )
        .unwrap();
    assert!(removed.resources(Kind::ResidencyPolicy).is_empty());
    assert!(removed.clone().snapshot().route_table("t").is_some());
    assert!(
        removed.residency().policies.contains_key("eu"),
        "the served table keeps its policy"
    );
    let replaced = push(&removed, vec![table("t", "c")]).unwrap();
    assert!(
        replaced.residency().policies.is_empty(),
        "no table names it any more"
    );

    // A control plane does not know the proxies' geo tables: it checks all
    // but the jurisdiction names.
    let cp = push(&Store::for_control_plane(), vec![policy("eu", &["MARS"])]);
    assert!(cp.is_ok(), "{cp:?}");
    let Resource::ResidencyPolicy(mut bad) = policy("eu", &["EU"]) else {
        unreachable!()
    };
    bad.audit_sample_rate = Some(2.0);
    let errs = push(
        &Store::for_control_plane(),
        vec![Resource::ResidencyPolicy(bad)],
    )
    .unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "ResidencyPolicy(eu).audit_sample_rate: 2 is not a share between 0 and 1"
    );
}

#[test]
fn a_reload_whose_geo_tables_break_a_pushed_policy_is_rejected() {
    let text = |jurisdictions: &str| {
        format!(
            "geo: {{ jurisdictions: [{jurisdictions}] }}\nxds: {{ server: \"http://127.0.0.1:1\", node_id: n }}\n"
        )
    };
    let (b, _) = crate::parse_bootstrap(&text("EU, US"), "a.yaml").unwrap();
    let store = Store::from_bootstrap(b, &DiskFiles).unwrap();
    let store = push(&store, vec![policy("us-only", &["US"])]).unwrap();
    let (b, _) = crate::parse_bootstrap(&text("EU"), "a.yaml").unwrap();
    let settings = Store::settings_of(&b, &DiskFiles).unwrap();
    let errs = store
        .with_settings(settings, &b)
        .apply(Change::from_bootstrap(&b), &DiskFiles, false)
        .unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "ResidencyPolicy(us-only).rules[0].allowed_jurisdictions[0]: unknown jurisdiction `US`; known: EU (from geo.jurisdictions, geo.countries and geo.regions) (residency policy `us-only`, pushed by the control plane, compiled again against the new geo tables)"
    );
    // Unchanged geo tables keep their Arc: nothing is compiled again.
    let (b, _) = crate::parse_bootstrap(&text("EU, US"), "a.yaml").unwrap();
    let settings = Store::settings_of(&b, &DiskFiles).unwrap();
    let same = store
        .with_settings(settings, &b)
        .apply(Change::from_bootstrap(&b), &DiskFiles, false)
        .unwrap();
    assert!(Arc::ptr_eq(&same.residency().geo, &store.residency().geo));
    assert_eq!(
        same.entries(Kind::ResidencyPolicy)[0].compile_id,
        store.entries(Kind::ResidencyPolicy)[0].compile_id
    );
}

#[test]
fn new_geo_tables_compile_every_policy_again() {
    let text = |jurisdictions: &str| {
        format!(
            r#"
geo: {{ jurisdictions: [{jurisdictions}] }}
listeners: [{{ name: l, address: "127.0.0.1:1", route_table: t }}]
route_tables: [{{ name: t, virtual_hosts: [{{ domains: ["*"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]
clusters: [{{ name: c, endpoints: [{{ address: "127.0.0.1:2" }}] }}]
residency_policies:
  - {{ name: p, rules: [{{ data_classes: [pii], allowed_jurisdictions: [US] }}] }}
"#
        )
    };
    let store = load_store_str(&text("EU, US"), "a.yaml").unwrap();
    let us = |s: &Store| s.residency().policies["p"].allowed_for(0, None);
    assert_eq!(us(&store), 1 << 1);
    // A reload that adds a jurisdiction (US moves to bit 2: they are sorted
    // by name) compiles the policy again though its own text did not change.
    let (b, _) = crate::parse_bootstrap(&text("APAC, EU, US"), "a.yaml").unwrap();
    let settings = Store::settings_of(&b, &DiskFiles).unwrap();
    let next = store
        .with_settings(settings, &b)
        .apply(Change::from_bootstrap(&b), &DiskFiles, true)
        .unwrap();
    assert_eq!(next.residency().geo.jurisdiction("US"), Some(2));
    assert_eq!(us(&next), 1 << 2);
}

/// Found by the `xds_resources` fuzz target: a pushed policy whose
/// `audit_sample_rate` is NaN round-trips its encoding and is rejected
/// with its field.
#[test]
fn fuzz_regression_nan_audit_sample_rate() {
    let Resource::ResidencyPolicy(mut p) = policy("p", &["EU"]) else {
        unreachable!()
    };
    p.audit_sample_rate = Some(f64::NAN);
    let r = Resource::ResidencyPolicy(p);
    let again = Resource::decode(Kind::ResidencyPolicy, &r.encode()).unwrap();
    assert_eq!(again.encode(), r.encode());
    let errs = push(&Store::for_control_plane(), vec![r]).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "ResidencyPolicy(p).audit_sample_rate: NaN is not a share between 0 and 1"
    );
}

const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ==\n-----END PRIVATE KEY-----\n";

fn cert_secret(name: &str, chain: &str) -> Resource {
    Resource::Secret(proto::Secret {
        name: name.into(),
        tls_certificate: Some(proto::TlsCertificate {
            certificate_chain: chain.into(),
            private_key: KEY_PEM.into(),
        }),
        validation_context: None,
    })
}

fn ca_secret(name: &str) -> Resource {
    Resource::Secret(proto::Secret {
        name: name.into(),
        validation_context: Some(proto::ValidationContext {
            trusted_ca: CERT_PEM.into(),
        }),
        ..Default::default()
    })
}

fn mtls_listener(cert: &str, bundle: &str) -> Resource {
    Resource::Listener(proto::Listener {
        name: "mtls".into(),
        address: "127.0.0.1:3".into(),
        route_table: "t".into(),
        tls: Some(proto::ListenerTls {
            secret: cert.into(),
            client_auth: Some(proto::ClientAuth {
                trust_bundles: vec![proto::TrustBundle {
                    trust_domain: "aws.corridor".into(),
                    secret: bundle.into(),
                    ..Default::default()
                }],
                required: true,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[test]
fn secrets_are_resources_a_listener_waits_for_and_a_cluster_needs() {
    let store = base();
    // A listener naming Secrets that have not arrived warms.
    let s1 = push(&store, vec![mtls_listener("ingress", "aws")]).unwrap();
    assert!(s1.clone().snapshot().listener("mtls").is_none());
    let w = s1.warming();
    assert!(
        w.iter()
            .any(|w| w.name == "mtls" && w.waiting_for.contains("Secrets ingress, aws")),
        "{w:?}"
    );
    // Both Secrets arrive: it serves, reading them through `secret:` paths.
    let s2 = push(
        &s1,
        vec![ca_secret("aws"), cert_secret("ingress", CERT_PEM)],
    )
    .unwrap();
    let snap = s2.clone().snapshot();
    let tls = snap.listener("mtls").unwrap().tls.clone().unwrap();
    let files = s2.files(&DiskFiles);
    assert_eq!(files.read(&tls.key_file).unwrap(), KEY_PEM.as_bytes());
    let bundle = &tls.client_auth.unwrap().trust_bundles[0].1;
    assert_eq!(files.read(bundle).unwrap(), CERT_PEM.as_bytes());
    // A new version of a Secret is a new configuration version.
    let chain2 = format!("{CERT_PEM}{CERT_PEM}");
    let s3 = push(&s2, vec![cert_secret("ingress", &chain2)]).unwrap();
    assert!(s3.secrets_differ(&s2) && !s2.secrets_differ(&s2.clone()));
    assert_ne!(s3.clone().snapshot().version, snap.version);

    // A Secret still named cannot be removed; one no longer named can.
    let remove = |s: &Store, name: &str| {
        s.apply(
            Change {
                removals: vec![(Kind::Secret, name.to_string())],
                origin: Origin::Xds,
                ..Change::default()
            },
            &DiskFiles,
            false,
        )
    };
    let e = remove(&s3, "aws").unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "Secret(aws): Secret `aws` is still named by listener `mtls`; remove it there first"
    );
    let s4 = push(
        &s3,
        vec![mtls_listener("ingress", "aws2"), ca_secret("aws2")],
    )
    .unwrap();
    remove(&s4, "aws").unwrap();

    // A cluster naming a Secret that has not arrived is rejected (Secrets
    // come first on a control stream), as is one of the wrong kind.
    let cluster = |client: &str, ca: &str| {
        Resource::Cluster(Box::new(proto::Cluster {
            name: "up".into(),
            endpoints: vec![proto::Endpoint {
                address: "127.0.0.1:9".into(),
                ..Default::default()
            }],
            tls: Some(proto::UpstreamTls {
                sni: "up.test".into(),
                client_secret: client.into(),
                ca_secret: ca.into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    };
    let e = push(&s4, vec![cluster("nope", "aws2")]).unwrap_err();
    assert!(
        e[0].to_string()
            .starts_with("Cluster(up).tls.client_secret: no Secret `nope` has arrived"),
        "{e:?}"
    );
    let e = push(&s4, vec![cluster("aws2", "ingress")]).unwrap_err();
    let e: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(
        e,
        [
            "Cluster(up).tls.ca_secret: Secret `ingress` is a tls_certificate, not a validation_context",
            "Cluster(up).tls.client_secret: Secret `aws2` is a validation_context, not a tls_certificate",
        ]
    );
    let s5 = push(&s4, vec![cluster("ingress", "aws2")]).unwrap();
    let c = s5.clone().snapshot();
    let t = c.clusters["up"].tls.clone().unwrap();
    assert_eq!(
        &*t.client_cert.unwrap().0,
        "secret:ingress#certificate_chain"
    );
    assert_eq!(t.ca_file.as_deref(), Some("secret:aws2#trusted_ca"));
}

#[test]
fn bad_secrets_are_rejected_with_their_field_and_keys_never_show() {
    let store = base();
    let bad_key = Resource::Secret(proto::Secret {
        name: "k".into(),
        tls_certificate: Some(proto::TlsCertificate {
            certificate_chain: "not pem".into(),
            private_key: "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n"
                .into(),
        }),
        validation_context: None,
    });
    let both = Resource::Secret(proto::Secret {
        name: "b".into(),
        tls_certificate: Some(proto::TlsCertificate::default()),
        validation_context: Some(proto::ValidationContext::default()),
    });
    let e = push(&store, vec![bad_key, both, ca_secret("")]).unwrap_err();
    let e: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(
        e,
        [
            "Secret(k).tls_certificate.certificate_chain: no PEM certificate (-----BEGIN CERTIFICATE-----) found",
            "Secret(k).tls_certificate.private_key: no PEM private key (PKCS#8, PKCS#1 or SEC1) found",
            "Secret(b): give one of tls_certificate and validation_context, not both",
            "Secret().name: a Secret needs a name",
        ]
    );
    // Dumps never show a private key; the fail-static form keeps it.
    let s = push(&store, vec![cert_secret("ingress", CERT_PEM)]).unwrap();
    let (_, _, r) = &s.resources(Kind::Secret)[0];
    let json = r.to_json().to_string();
    assert!(
        json.contains("[redacted]") && !json.contains("c2VjcmV0"),
        "{json}"
    );
    assert!(json.contains("MIIBAA=="), "{json}");
    assert_eq!(
        s.to_bootstrap().secrets[0]
            .tls_certificate
            .as_ref()
            .unwrap()
            .private_key,
        KEY_PEM
    );
}
