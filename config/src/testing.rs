//! Owns resource builders at the scale benchmark's size (1 000 clusters of 50
//! endpoints, a 10 000-route table), for the apply-cost measurements of this
//! crate and of the proxy (feature `testing`).

use crate::proto;
use crate::store::Resource;

/// Cluster `c{c:04}`, without inline endpoints.
pub fn cluster(c: usize) -> Resource {
    Resource::Cluster(Box::new(proto::Cluster {
        name: format!("c{c:04}"),
        ..Default::default()
    }))
}

/// The 50 endpoints of cluster `c{c:04}`; `gen` is in the port (8000 + gen),
/// so each generation differs.
pub fn endpoints(c: usize, gen: usize) -> Resource {
    Resource::Endpoints(proto::Endpoints {
        cluster: format!("c{c:04}"),
        endpoints: (0..50)
            .map(|e| proto::Endpoint {
                address: format!("10.{}.{}.{e}:{}", c / 256, c % 256, 8000 + gen),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// Route table `big`: one catch-all virtual host with 10 000 prefix routes
/// `/r{r}/g{gen}/`, route `r` to cluster `c{r mod 1000}`.
pub fn route_table(gen: usize) -> Resource {
    let routes = (0..10_000)
        .map(|r| proto::Route {
            r#match: Some(proto::RouteMatch {
                path_specifier: Some(proto::route_match::PathSpecifier::Prefix(format!(
                    "/r{r}/g{gen}/"
                ))),
                ..Default::default()
            }),
            action: Some(proto::route::Action::Route(proto::RouteAction {
                cluster_specifier: Some(proto::route_action::ClusterSpecifier::Cluster(format!(
                    "c{:04}",
                    r % 1000
                ))),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    Resource::RouteTable(proto::RouteTable {
        name: "big".into(),
        virtual_hosts: vec![proto::VirtualHost {
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
    })
}

/// The 1 000 clusters with their endpoints (generation 0) and the route table
/// (generation 0).
pub fn scale_resources() -> Vec<Resource> {
    let mut all: Vec<Resource> = (0..1000)
        .flat_map(|c| [cluster(c), endpoints(c, 0)])
        .collect();
    all.push(route_table(0));
    all
}
