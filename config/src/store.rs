//! Owns the resource store (D2): every listener, route table, cluster,
//! endpoint set and residency policy keyed by (kind, name) with its own
//! version, compiled one resource at a time. A file and a control-plane push
//! are both a `Change` applied to a store, all or nothing, giving the next
//! store; a store gives the `Snapshot` the data plane serves.
//!
//! Routes name clusters and residency policies. A route table whose clusters
//! or policies have not all arrived is warming: the previous version of it keeps serving (make before break),
//! and a listener whose table is not ready yet is not served. An endpoint
//! update replaces one cluster's endpoint table and nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use imbl::OrdMap;
use prost::Message as _;

use crate::cluster::{Cluster, EndpointTable};
use crate::compile::{
    compile_cluster, compile_endpoints, compile_listener, compile_policy, compile_route_table,
    compile_secret, compile_settings, residency_view, Ctx,
};
use crate::error::{ConfigError, FieldPath};
use crate::files::{Files, Secret};
use crate::proto;
use crate::residency::{Geo, Residency, ResidencyPolicy};
use crate::route::RouteTable;
use crate::snapshot::{Listener, Settings, Snapshot};

/// Prefix of every Corridor resource type URL on the control stream.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/corridor.v1.";

/// The kinds of resource the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Upstream cluster settings (and inline endpoints).
    Cluster,
    /// The endpoints of one cluster, named by the cluster.
    Endpoints,
    /// A route table.
    RouteTable,
    /// A downstream listener.
    Listener,
    /// A data-residency policy.
    ResidencyPolicy,
    /// TLS material (certificate and key, or CA certificates).
    Secret,
}

impl Kind {
    /// Every kind, in the order a control stream subscribes to them (Secrets
    /// first: listeners and clusters name them).
    pub const ALL: [Kind; 6] = [
        Kind::Secret,
        Kind::Cluster,
        Kind::Endpoints,
        Kind::ResidencyPolicy,
        Kind::RouteTable,
        Kind::Listener,
    ];

    /// The message name, for example `Cluster`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::Endpoints => "Endpoints",
            Kind::RouteTable => "RouteTable",
            Kind::Listener => "Listener",
            Kind::ResidencyPolicy => "ResidencyPolicy",
            Kind::Secret => "Secret",
        }
    }

    /// The word for it in messages, for example `route table`.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Endpoints => "endpoint set",
            Kind::RouteTable => "route table",
            Kind::Listener => "listener",
            Kind::ResidencyPolicy => "residency policy",
            Kind::Secret => "Secret",
        }
    }

    /// The control-stream type URL, `type.googleapis.com/corridor.v1.<Kind>`.
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => "type.googleapis.com/corridor.v1.Cluster",
            Kind::Endpoints => "type.googleapis.com/corridor.v1.Endpoints",
            Kind::RouteTable => "type.googleapis.com/corridor.v1.RouteTable",
            Kind::Listener => "type.googleapis.com/corridor.v1.Listener",
            Kind::ResidencyPolicy => "type.googleapis.com/corridor.v1.ResidencyPolicy",
            Kind::Secret => "type.googleapis.com/corridor.v1.Secret",
        }
    }

    /// The kind of a type URL.
    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Whether a state-of-the-world response may carry only some resources
    /// of this kind, as Envoy's RDS and EDS do: route tables and endpoints
    /// (listeners, clusters and residency policies always come complete, so
    /// omission deletes).
    pub fn sotw_incremental(self) -> bool {
        matches!(self, Kind::RouteTable | Kind::Endpoints)
    }
}

/// One resource as a file or a push carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A listener.
    Listener(proto::Listener),
    /// A route table.
    RouteTable(proto::RouteTable),
    /// A cluster (boxed: with its balancing settings it is the largest).
    Cluster(Box<proto::Cluster>),
    /// A cluster's endpoints.
    Endpoints(proto::Endpoints),
    /// A data-residency policy.
    ResidencyPolicy(proto::ResidencyPolicy),
    /// TLS material.
    Secret(proto::Secret),
}

impl Resource {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Listener(_) => Kind::Listener,
            Resource::RouteTable(_) => Kind::RouteTable,
            Resource::Cluster(_) => Kind::Cluster,
            Resource::Endpoints(_) => Kind::Endpoints,
            Resource::ResidencyPolicy(_) => Kind::ResidencyPolicy,
            Resource::Secret(_) => Kind::Secret,
        }
    }

    /// Its name (for endpoints, the cluster's).
    pub fn name(&self) -> &str {
        match self {
            Resource::Listener(r) => &r.name,
            Resource::RouteTable(r) => &r.name,
            Resource::Cluster(r) => &r.name,
            Resource::Endpoints(r) => &r.cluster,
            Resource::ResidencyPolicy(r) => &r.name,
            Resource::Secret(r) => &r.name,
        }
    }

    /// Decodes the protobuf encoding of a `kind` resource.
    pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Resource, String> {
        let err = |e: prost::DecodeError| format!("cannot decode a {}: {e}", kind.name());
        Ok(match kind {
            Kind::Listener => Resource::Listener(proto::Listener::decode(bytes).map_err(err)?),
            Kind::RouteTable => {
                Resource::RouteTable(proto::RouteTable::decode(bytes).map_err(err)?)
            }
            Kind::Cluster => {
                Resource::Cluster(Box::new(proto::Cluster::decode(bytes).map_err(err)?))
            }
            Kind::Endpoints => Resource::Endpoints(proto::Endpoints::decode(bytes).map_err(err)?),
            Kind::ResidencyPolicy => {
                Resource::ResidencyPolicy(proto::ResidencyPolicy::decode(bytes).map_err(err)?)
            }
            Kind::Secret => Resource::Secret(proto::Secret::decode(bytes).map_err(err)?),
        })
    }

    /// Its protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Resource::Listener(r) => r.encode_to_vec(),
            Resource::RouteTable(r) => r.encode_to_vec(),
            Resource::Cluster(r) => r.encode_to_vec(),
            Resource::Endpoints(r) => r.encode_to_vec(),
            Resource::ResidencyPolicy(r) => r.encode_to_vec(),
            Resource::Secret(r) => r.encode_to_vec(),
        }
    }

    /// Its proto3 JSON form (proto field names), for dumps. A Secret's
    /// private key is never shown (`[redacted]`).
    pub fn to_json(&self) -> serde_json::Value {
        let redacted;
        let shown = match self {
            Resource::Secret(s) if s.tls_certificate.is_some() => {
                let mut s = s.clone();
                if let Some(t) = s.tls_certificate.as_mut() {
                    t.private_key = "[redacted]".into();
                }
                redacted = Resource::Secret(s);
                &redacted
            }
            _ => self,
        };
        crate::load::message_json(
            &format!("corridor.v1.{}", self.kind().name()),
            &shown.encode(),
        )
    }

    /// A content hash: equal resources have equal digests.
    pub fn digest(&self) -> u64 {
        fnv(&self.encode())
    }
}

/// Compiles so far in this process (the last `Entry::compile_id` given).
static COMPILES: AtomicU64 = AtomicU64::new(0);

/// Hash of a resource's kind, name and content digest.
fn key_hash(kind: Kind, name: &str, digest: u64) -> u64 {
    let mut bytes = Vec::with_capacity(kind.name().len() + name.len() + 10);
    bytes.extend_from_slice(kind.name().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&digest.to_le_bytes());
    fnv(&bytes)
}

/// FNV-1a over bytes: the content hash behind versions and digests.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Where a resource came from. A full change (a file, a state-of-the-world
/// response) removes only resources of its own origin; by name, the last
/// writer wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// The configuration file.
    #[default]
    File,
    /// The control stream.
    Xds,
}

/// A compiled resource with its version and source.
#[derive(Debug)]
pub struct Entry<T> {
    /// Where it came from.
    pub origin: Origin,
    /// Version given by the control plane, or the content hash for files.
    pub version: Arc<str>,
    /// Content hash of the source.
    pub digest: u64,
    /// The compiled form.
    pub compiled: Arc<T>,
    /// Serial number of the compile that made `compiled`, unique in the
    /// process: an unchanged number means the resource was not recompiled.
    pub compile_id: u64,
    /// What it was compiled from.
    pub source: Arc<Resource>,
    /// Where it came from, for errors found across resources.
    pub(crate) path: Arc<FieldPath<'static>>,
    /// Hash of its kind, name and digest; the snapshot version sums these.
    key: u64,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Self {
            origin: self.origin,
            version: self.version.clone(),
            digest: self.digest,
            compiled: Arc::clone(&self.compiled),
            compile_id: self.compile_id,
            source: Arc::clone(&self.source),
            path: Arc::clone(&self.path),
            key: self.key,
        }
    }
}

/// What the store holds for one resource, for dumps.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    /// Its name.
    pub name: Arc<str>,
    /// Its version.
    pub version: Arc<str>,
    /// Where it came from.
    pub origin: Origin,
    /// The compile that made it (see `Entry::compile_id`).
    pub compile_id: u64,
    /// What it was compiled from.
    pub source: Arc<Resource>,
}

/// One resource to add or replace.
#[derive(Debug, Clone)]
pub struct Upsert {
    /// The resource.
    pub resource: Resource,
    /// Its version; `None` uses the content hash.
    pub version: Option<String>,
    /// Path its errors are reported under, for example `clusters[2]` in a file
    /// or `Cluster(gpu)` for a push.
    pub path: FieldPath<'static>,
}

impl Upsert {
    /// A pushed resource: errors are reported under `Kind(name)`.
    /// An empty version uses the content hash.
    pub fn pushed(resource: Resource, version: impl Into<String>) -> Self {
        let path = FieldPath::resource(resource.kind().name(), resource.name());
        let version: String = version.into();
        Self {
            resource,
            version: (!version.is_empty()).then_some(version),
            path,
        }
    }
}

/// A set of changes applied together, all or nothing.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Resources added or replaced.
    pub upserts: Vec<Upsert>,
    /// Resources removed, by kind and name (only those of this change's origin).
    pub removals: Vec<(Kind, String)>,
    /// Kinds given in full: every resource of these kinds and of this origin
    /// not in `upserts` is removed (a file, or a state-of-the-world response).
    pub full: Vec<Kind>,
    /// Where the change comes from.
    pub origin: Origin,
    /// Resources a full change lists without a new body because the store
    /// holds them at the same version (a state-of-the-world response that
    /// names its resources): kept, not decoded or compiled again.
    pub unchanged: Vec<(Kind, String)>,
}

impl Change {
    /// Every resource of a bootstrap, replacing all kinds, with file paths.
    pub fn from_bootstrap(b: &proto::Bootstrap) -> Change {
        let root = FieldPath::root();
        let mut upserts = Vec::new();
        for (i, c) in b.clusters.iter().enumerate() {
            upserts.push(file_upsert(
                Resource::Cluster(Box::new(c.clone())),
                root.item("clusters", i).to_static(),
            ));
        }
        for (i, e) in b.endpoints.iter().enumerate() {
            upserts.push(file_upsert(
                Resource::Endpoints(e.clone()),
                root.item("endpoints", i).to_static(),
            ));
        }
        for (i, t) in b.route_tables.iter().enumerate() {
            upserts.push(file_upsert(
                Resource::RouteTable(t.clone()),
                root.item("route_tables", i).to_static(),
            ));
        }
        for (i, l) in b.listeners.iter().enumerate() {
            upserts.push(file_upsert(
                Resource::Listener(l.clone()),
                root.item("listeners", i).to_static(),
            ));
        }
        for (i, p) in b.residency_policies.iter().enumerate() {
            upserts.push(file_upsert(
                Resource::ResidencyPolicy(p.clone()),
                root.item("residency_policies", i).to_static(),
            ));
        }
        for (i, s) in b.secrets.iter().enumerate() {
            upserts.push(file_upsert(
                Resource::Secret(s.clone()),
                root.item("secrets", i).to_static(),
            ));
        }
        Change {
            upserts,
            removals: Vec::new(),
            full: Kind::ALL.to_vec(),
            origin: Origin::File,
            unchanged: Vec::new(),
        }
    }
}

fn file_upsert(resource: Resource, path: FieldPath<'static>) -> Upsert {
    Upsert {
        resource,
        version: None,
        path,
    }
}

/// Why a resource is not served yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warming {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// What it waits for.
    pub waiting_for: String,
}

/// Every resource received, compiled, with versions. Cloning is cheap (maps of `Arc`s).
#[derive(Debug, Clone)]
pub struct Store {
    settings: Arc<Settings>,
    /// The bootstrap the settings came from, without its resources.
    settings_source: Arc<proto::Bootstrap>,
    listeners: OrdMap<Arc<str>, Entry<Listener>>,
    route_tables: OrdMap<Arc<str>, Entry<RouteTable>>,
    clusters: OrdMap<Arc<str>, Entry<Cluster>>,
    endpoints: OrdMap<Arc<str>, Entry<EndpointTable>>,
    policies: OrdMap<Arc<str>, Entry<ResidencyPolicy>>,
    secrets: OrdMap<Arc<str>, Entry<Secret>>,
    /// The geo tables the policies were compiled against, the policies by
    /// name and the headers they trust: what requests are decided with.
    residency: Arc<Residency>,
    /// Each cluster with its current endpoints (its `Endpoints` resource, if any).
    effective: OrdMap<Arc<str>, Arc<Cluster>>,
    /// The route tables served: the latest whose clusters and residency
    /// policies all resolve, or the previous one while the latest is warming.
    served_tables: OrdMap<Arc<str>, Entry<RouteTable>>,
    /// The listeners served: the latest whose route table is served, or the
    /// previous version while the latest waits for its table.
    served_listeners: OrdMap<Arc<str>, Entry<Listener>>,
    /// Unique per store made by `new` or `apply` (a clone or `with_settings`
    /// copy shares it: its effective clusters are the same).
    id: u64,
    /// The `id` of the store this one was applied to (0 for a new store).
    parent: u64,
    /// The clusters whose effective form may differ from the parent's.
    changed_clusters: Arc<[Arc<str>]>,
}

/// Numbers stores, so that a snapshot can tell which store it was derived from.
static STORES: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// An empty store with these process settings, compiled from `source`.
    pub fn new(settings: Settings, source: &proto::Bootstrap) -> Store {
        let geo = Arc::clone(&settings.geo);
        Store {
            settings: Arc::new(settings),
            settings_source: Arc::new(settings_only(source)),
            listeners: OrdMap::new(),
            route_tables: OrdMap::new(),
            clusters: OrdMap::new(),
            endpoints: OrdMap::new(),
            policies: OrdMap::new(),
            secrets: OrdMap::new(),
            residency: Arc::new(residency_view(geo, HashMap::new())),
            effective: OrdMap::new(),
            served_tables: OrdMap::new(),
            served_listeners: OrdMap::new(),
            id: STORES.fetch_add(1, Ordering::Relaxed) + 1,
            parent: 0,
            changed_clusters: Arc::from([]),
        }
    }

    /// An empty store with default settings, to validate resources against
    /// (see `for_control_plane` for what the control plane uses).
    pub fn empty() -> Store {
        let b = proto::Bootstrap::default();
        let mut cx = Ctx::new(&crate::files::DiskFiles);
        let settings = compile_settings(&mut cx, &b);
        Store::new(settings, &b)
    }

    /// An empty store to validate resources against on a control plane,
    /// which does not know each proxy's geo tables: a residency policy's
    /// jurisdiction names are left for the proxies to check.
    pub fn for_control_plane() -> Store {
        let mut store = Store::empty();
        let mut settings = (*store.settings).clone();
        settings.geo = Arc::new(crate::residency::Geo {
            unchecked: true,
            ..Default::default()
        });
        store.residency = Arc::new(residency_view(Arc::clone(&settings.geo), HashMap::new()));
        store.settings = Arc::new(settings);
        store
    }

    /// Compiles a whole bootstrap (a file): settings and every resource, with
    /// every reference required to resolve and at least one listener, unless
    /// the bootstrap names a control stream that will bring the rest.
    pub fn from_bootstrap(
        b: proto::Bootstrap,
        files: &dyn Files,
    ) -> Result<Store, Vec<ConfigError>> {
        let (settings, errors) = match Store::settings_of(&b, files) {
            Ok(s) => (s, Vec::new()),
            Err((s, e)) => (s, e),
        };
        let strict = settings.xds.is_none();
        let store = Store::new(settings, &b);
        match store.apply(Change::from_bootstrap(&b), files, strict) {
            Ok(s) if errors.is_empty() => Ok(s),
            Ok(_) => Err(errors),
            Err(mut more) => {
                more.splice(0..0, errors);
                Err(more)
            }
        }
    }

    /// The process settings of a bootstrap (admin, runtime, control stream);
    /// on errors, what could be compiled and the errors.
    #[allow(clippy::result_large_err)]
    pub fn settings_of(
        b: &proto::Bootstrap,
        files: &dyn Files,
    ) -> Result<Settings, (Settings, Vec<ConfigError>)> {
        let mut cx = Ctx::new(files);
        let settings = compile_settings(&mut cx, b);
        if b.listeners.is_empty() && settings.xds.is_none() {
            cx.err(
                &FieldPath::root().field("listeners"),
                "at least one listener is required",
            );
        }
        if cx.errors.is_empty() {
            Ok(settings)
        } else {
            Err((settings, cx.errors))
        }
    }

    /// The process settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A copy with other process settings (a reloaded file's), compiled from `source`.
    pub fn with_settings(&self, mut settings: Settings, source: &proto::Bootstrap) -> Store {
        // Unchanged geo tables keep their `Arc`: policies and balancers that
        // use them are not rebuilt.
        if settings.geo == self.settings.geo {
            settings.geo = Arc::clone(&self.settings.geo);
        }
        Store {
            settings: Arc::new(settings),
            settings_source: Arc::new(settings_only(source)),
            ..self.clone()
        }
    }

    /// Everything received, as one bootstrap (resources in name order), with
    /// Secrets' private keys: it compiles again to the same store.
    /// (`/config_dump` shows each resource's `to_json`, which hides keys.)
    pub fn to_bootstrap(&self) -> proto::Bootstrap {
        let mut b = (*self.settings_source).clone();
        for (_, _, r) in self.resources(Kind::Listener) {
            if let Resource::Listener(l) = &*r {
                b.listeners.push(l.clone());
            }
        }
        for (_, _, r) in self.resources(Kind::RouteTable) {
            if let Resource::RouteTable(t) = &*r {
                b.route_tables.push(t.clone());
            }
        }
        for (_, _, r) in self.resources(Kind::Cluster) {
            if let Resource::Cluster(c) = &*r {
                b.clusters.push((**c).clone());
            }
        }
        for (_, _, r) in self.resources(Kind::Endpoints) {
            if let Resource::Endpoints(e) = &*r {
                b.endpoints.push(e.clone());
            }
        }
        for (_, _, r) in self.resources(Kind::ResidencyPolicy) {
            if let Resource::ResidencyPolicy(p) = &*r {
                b.residency_policies.push(p.clone());
            }
        }
        for (_, _, r) in self.resources(Kind::Secret) {
            if let Resource::Secret(s) = &*r {
                b.secrets.push(s.clone());
            }
        }
        b
    }

    /// Applies `change` and returns the next store, or every error found (and
    /// then nothing changes). `strict` requires every reference to resolve now
    /// (files); otherwise unresolved references warm until they arrive.
    pub fn apply(
        &self,
        change: Change,
        files: &dyn Files,
        strict: bool,
    ) -> Result<Store, Vec<ConfigError>> {
        let mut next = self.clone();
        next.id = STORES.fetch_add(1, Ordering::Relaxed) + 1;
        next.parent = self.id;
        let mut cx = Ctx::new(files);
        let mut seen: HashMap<Kind, HashSet<Arc<str>>> = HashMap::new();
        // References made by this change's resources, compiled or not, so a
        // file reports every dangling name at once.
        let mut refs: Vec<(Kind, Arc<str>, FieldPath<'static>)> = Vec::new();
        // Clusters whose settings or endpoints changed, and whether any
        // listener or route table did: what `link` has to look at.
        let mut touched: HashSet<Arc<str>> = HashSet::new();
        let mut structural = false;
        // Policies are compiled against the settings' geo tables: when those
        // changed (a reload), every policy is compiled again.
        let geo = Arc::clone(&next.settings.geo);
        let geo_changed = !Arc::ptr_eq(&geo, &self.residency.geo);
        let mut policies_changed = geo_changed;
        // Secrets first, so that listeners and clusters of the same change
        // can name them.
        let mut upserts = change.upserts;
        upserts.sort_by_key(|u| u.resource.kind() != Kind::Secret);
        let mut secrets_changed = false;
        cx.secrets = next.secrets.clone();
        for u in upserts {
            let kind = u.resource.kind();
            cx.warm_secrets = !strict && kind == Kind::Listener;
            let names = seen.entry(kind).or_default();
            let name = u.resource.name();
            let field = u.path.field(name_field(kind));
            if name.is_empty() {
                cx.err(&field, format!("a {} needs a name", kind.noun()));
                continue;
            }
            if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                cx.err(
                    &field,
                    format!("name `{name}` must not contain spaces or control characters"),
                );
                continue;
            }
            let name: Arc<str> = name.into();
            if change.origin == Origin::Xds && next.origin_of(kind, &name) == Some(Origin::File) {
                cx.err(
                    &field,
                    format!(
                        "{} `{name}` is defined in the configuration file; the control stream cannot replace it",
                        kind.noun()
                    ),
                );
                continue;
            }
            if !names.insert(name.clone()) {
                cx.err(
                    &field,
                    format!("{} name `{name}` is used twice", kind.noun()),
                );
                continue;
            }
            let digest = u.resource.digest();
            let version: Arc<str> = u
                .version
                .map_or_else(|| format!("{digest:016x}").into(), Into::into);
            let source = Arc::new(u.resource);
            let path = u.path;
            match &*source {
                Resource::Listener(l) if !l.route_table.is_empty() => refs.push((
                    Kind::RouteTable,
                    l.route_table.as_str().into(),
                    path.field("route_table").to_static(),
                )),
                Resource::Endpoints(_) => refs.push((
                    Kind::Cluster,
                    name.clone(),
                    path.field("cluster").to_static(),
                )),
                _ => {}
            }
            macro_rules! upsert {
                ($map:expr, $compile:expr) => {{
                    let entry = match $map.get(&name) {
                        Some(e)
                            if e.digest == digest
                                && !(geo_changed && kind == Kind::ResidencyPolicy) =>
                        {
                            Entry {
                                version,
                                path: Arc::new(path),
                                origin: change.origin,
                                ..e.clone()
                            }
                        }
                        _ => {
                            let before = cx.errors.len();
                            let compiled = $compile;
                            if cx.errors.len() > before {
                                continue;
                            }
                            match compiled {
                                Some(c) => {
                                    if matches!(kind, Kind::Cluster | Kind::Endpoints) {
                                        touched.insert(name.clone());
                                    } else {
                                        structural = true;
                                        policies_changed |= kind == Kind::ResidencyPolicy;
                                    }
                                    Entry {
                                        origin: change.origin,
                                        version,
                                        digest,
                                        compiled: Arc::new(c),
                                        compile_id: COMPILES.fetch_add(1, Ordering::Relaxed) + 1,
                                        source: Arc::clone(&source),
                                        path: Arc::new(path),
                                        key: key_hash(kind, &name, digest),
                                    }
                                }
                                None => continue,
                            }
                        }
                    };
                    $map.insert(name.clone(), entry);
                }};
            }
            match &*source {
                Resource::Cluster(c) => {
                    upsert!(next.clusters, Some(compile_cluster(&mut cx, c, &path)))
                }
                Resource::Endpoints(e) => upsert!(
                    next.endpoints,
                    Some(compile_endpoints(
                        &mut cx,
                        &e.cluster,
                        &e.endpoints,
                        &e.locality_weights,
                        &path.field("endpoints"),
                        &path.field("locality_weights")
                    ))
                ),
                Resource::RouteTable(t) => {
                    let before = cx.errors.len();
                    let table = match next.route_tables.get(&name) {
                        Some(e) if e.digest == digest => None,
                        _ => Some(compile_route_table(&mut cx, t, &path)),
                    };
                    let table_refs = match &table {
                        Some(t) => &t.cluster_refs,
                        None => &next.route_tables[&name].compiled.cluster_refs,
                    };
                    refs.extend(
                        table_refs
                            .iter()
                            .map(|(c, p)| (Kind::Cluster, c.clone(), p.clone())),
                    );
                    if cx.errors.len() > before {
                        continue;
                    }
                    upsert!(next.route_tables, table)
                }
                Resource::Listener(l) => {
                    upsert!(next.listeners, compile_listener(&mut cx, l, &path))
                }
                Resource::ResidencyPolicy(p) => {
                    upsert!(next.policies, compile_policy(&mut cx, p, &geo, &path))
                }
                Resource::Secret(s) => {
                    upsert!(next.secrets, compile_secret(&mut cx, s, &path));
                    secrets_changed |= self.secrets.get(&name).is_none_or(|e| e.digest != digest);
                    cx.secrets = next.secrets.clone();
                }
            }
        }
        for (kind, name) in &change.unchanged {
            if let Some((key, origin)) = next.key_of(*kind, name) {
                if origin == change.origin {
                    seen.entry(*kind).or_default().insert(key);
                }
            }
        }
        let empty = HashSet::new();
        let mut removed = Vec::new();
        for kind in &change.full {
            let keep = seen.get(kind).unwrap_or(&empty);
            // Every name kept is in the map: when they are as many as its
            // entries, nothing is removed (a SotW response that changes one
            // resource of a thousand need not look at the other 999 again).
            if keep.len() == next.len_of(*kind) {
                continue;
            }
            removed.extend(next.retain(*kind, |name, origin| {
                origin != change.origin || keep.contains(name)
            }));
        }
        // A removal removes only what the same origin put there: a control
        // plane cannot delete a file's resource it never sent.
        for (kind, name) in &change.removals {
            removed.extend(next.retain(*kind, |n, origin| {
                n != name.as_str() || origin != change.origin
            }));
        }
        for (kind, name) in removed {
            secrets_changed |= kind == Kind::Secret;
            if matches!(kind, Kind::Cluster | Kind::Endpoints) {
                touched.insert(name);
            } else {
                structural = true;
                policies_changed |= kind == Kind::ResidencyPolicy;
            }
        }
        if geo_changed {
            next.recompile_policies(&mut cx, &seen);
        }
        structural |= policies_changed;
        next.link(self, &touched, structural);
        if structural {
            next.residency = Arc::new(next.residency_of_served(self, geo, geo_changed));
        }
        next.changed_clusters = touched.iter().cloned().collect();
        next.check(&mut cx, &seen, &touched, strict);
        if secrets_changed {
            next.check_secret_refs(&mut cx);
        }
        if strict {
            for (kind, name, path) in refs {
                let present = seen.get(&kind).is_some_and(|s| s.contains(&name))
                    || match kind {
                        Kind::Cluster => next.clusters.contains_key(&name),
                        Kind::RouteTable => next.route_tables.contains_key(&name),
                        _ => true,
                    };
                if !present {
                    let list = match kind {
                        Kind::Cluster => "clusters",
                        _ => "route_tables",
                    };
                    cx.err(
                        &path,
                        format!(
                            "{} `{name}` is not defined in {list}",
                            if kind == Kind::Cluster {
                                "cluster"
                            } else {
                                "route table"
                            }
                        ),
                    );
                }
            }
        }
        if cx.errors.is_empty() {
            Ok(next)
        } else {
            Err(cx.errors)
        }
    }

    /// The origin and version of resource `kind`/`name`, if the store has it.
    fn meta(&self, kind: Kind, name: &str) -> Option<(Origin, Arc<str>)> {
        fn get<T>(m: &OrdMap<Arc<str>, Entry<T>>, name: &str) -> Option<(Origin, Arc<str>)> {
            m.get(name).map(|e| (e.origin, e.version.clone()))
        }
        match kind {
            Kind::Listener => get(&self.listeners, name),
            Kind::RouteTable => get(&self.route_tables, name),
            Kind::Cluster => get(&self.clusters, name),
            Kind::Endpoints => get(&self.endpoints, name),
            Kind::ResidencyPolicy => get(&self.policies, name),
            Kind::Secret => get(&self.secrets, name),
        }
    }

    /// The version of resource `kind`/`name` when `origin` put it there.
    pub fn version_of(&self, kind: Kind, name: &str, origin: Origin) -> Option<Arc<str>> {
        self.meta(kind, name)
            .filter(|(o, _)| *o == origin)
            .map(|(_, v)| v)
    }

    /// Where the resource `kind`/`name` came from, if the store has it.
    fn origin_of(&self, kind: Kind, name: &str) -> Option<Origin> {
        self.meta(kind, name).map(|(o, _)| o)
    }

    /// The stored key and origin of resource `kind`/`name`.
    fn key_of(&self, kind: Kind, name: &str) -> Option<(Arc<str>, Origin)> {
        fn get<T>(m: &OrdMap<Arc<str>, Entry<T>>, name: &str) -> Option<(Arc<str>, Origin)> {
            m.get_key_value(name).map(|(k, e)| (k.clone(), e.origin))
        }
        match kind {
            Kind::Listener => get(&self.listeners, name),
            Kind::RouteTable => get(&self.route_tables, name),
            Kind::Cluster => get(&self.clusters, name),
            Kind::Endpoints => get(&self.endpoints, name),
            Kind::ResidencyPolicy => get(&self.policies, name),
            Kind::Secret => get(&self.secrets, name),
        }
    }

    /// How many resources of `kind` the store holds.
    fn len_of(&self, kind: Kind) -> usize {
        match kind {
            Kind::Listener => self.listeners.len(),
            Kind::RouteTable => self.route_tables.len(),
            Kind::Cluster => self.clusters.len(),
            Kind::Endpoints => self.endpoints.len(),
            Kind::ResidencyPolicy => self.policies.len(),
            Kind::Secret => self.secrets.len(),
        }
    }

    /// Which clusters may differ between `parent` and this store: `None`
    /// unless this store is the result of applying a change to `parent`.
    /// (Only `apply` changes effective clusters, and it gives its result a
    /// new id; a clone or `with_settings` copy keeps the id because its
    /// clusters are the same.)
    pub fn changed_clusters_since(&self, parent: &Store) -> Option<&[Arc<str>]> {
        (self.parent == parent.id).then_some(&*self.changed_clusters)
    }

    /// Removes the resources of `kind` that `keep` rejects; returns them.
    fn retain(&mut self, kind: Kind, keep: impl Fn(&str, Origin) -> bool) -> Vec<(Kind, Arc<str>)> {
        fn go<T>(
            m: &mut OrdMap<Arc<str>, Entry<T>>,
            kind: Kind,
            keep: impl Fn(&str, Origin) -> bool,
        ) -> Vec<(Kind, Arc<str>)> {
            let gone: Vec<Arc<str>> = m
                .iter()
                .filter(|(n, e)| !keep(n, e.origin))
                .map(|(n, _)| n.clone())
                .collect();
            for n in &gone {
                m.remove(n);
            }
            gone.into_iter().map(|n| (kind, n)).collect()
        }
        match kind {
            Kind::Listener => go(&mut self.listeners, kind, keep),
            Kind::RouteTable => go(&mut self.route_tables, kind, keep),
            Kind::Cluster => go(&mut self.clusters, kind, keep),
            Kind::Endpoints => go(&mut self.endpoints, kind, keep),
            Kind::ResidencyPolicy => go(&mut self.policies, kind, keep),
            Kind::Secret => go(&mut self.secrets, kind, keep),
        }
    }

    /// Brings effective clusters up to date for the `touched` ones and, when
    /// anything could change what is served, recomputes the served tables and
    /// listeners. `self` starts as a copy of `prev`, so an endpoint update
    /// costs one cluster, not the whole store.
    fn link(&mut self, prev: &Store, touched: &HashSet<Arc<str>>, structural: bool) {
        for name in touched {
            match self.clusters.get(name) {
                None => {
                    self.effective.remove(name);
                }
                Some(c) => {
                    let cluster = match self.endpoints.get(name) {
                        Some(eds) => Arc::new(Cluster {
                            endpoints: Arc::clone(&eds.compiled),
                            ..(*c.compiled).clone()
                        }),
                        None => Arc::clone(&c.compiled),
                    };
                    self.effective.insert(name.clone(), cluster);
                }
            }
        }
        let readiness_changed = touched
            .iter()
            .any(|n| prev.cluster_ready(n) != self.cluster_ready(n));
        if !structural && !readiness_changed {
            return;
        }
        let mut served = OrdMap::new();
        for (name, t) in &self.route_tables {
            if self.table_ready(&t.compiled) {
                served.insert(name.clone(), t.clone());
            } else if let Some(old) = prev.served_tables.get(name) {
                served.insert(name.clone(), old.clone());
            }
        }
        let mut listeners = OrdMap::new();
        for (name, l) in &self.listeners {
            if served.contains_key(&l.compiled.route_table) && self.secrets_ready(&l.compiled) {
                listeners.insert(name.clone(), l.clone());
                continue;
            }
            // The new version waits for its table or its Secrets: the
            // previous one keeps serving, with the table it routes with (even
            // one since removed).
            let Some(old) = prev.served_listeners.get(name) else {
                continue;
            };
            let table = &old.compiled.route_table;
            if !served.contains_key(table) {
                match prev.served_tables.get(table) {
                    Some(t) => {
                        served.insert(table.clone(), t.clone());
                    }
                    None => continue,
                }
            }
            listeners.insert(name.clone(), old.clone());
        }
        self.served_tables = served;
        self.served_listeners = listeners;
    }

    /// Whether routes may send to cluster `name`: it exists and, when the
    /// control stream sent it without inline endpoints, its `Endpoints` arrived
    /// too (an empty set counts), so a route never switches to a cluster
    /// before it can serve (Envoy's cluster warming).
    fn cluster_ready(&self, name: &str) -> bool {
        self.clusters.get(name).is_some_and(|c| {
            c.origin == Origin::File
                || !c.compiled.endpoints.is_empty()
                || self.endpoints.contains_key(name)
        })
    }

    /// Whether a route table can be served: its clusters are ready, and the
    /// residency policies it names have arrived and define its classes.
    fn table_ready(&self, t: &RouteTable) -> bool {
        t.clusters.iter().all(|c| self.cluster_ready(c))
            && t.residency_refs.iter().all(|r| self.policy_resolves(r))
    }

    /// Whether a route's residency reference resolves: its policy is here and
    /// defines its class.
    fn policy_resolves(&self, r: &crate::route::ResidencyRef) -> bool {
        self.policies.get(&r.policy).is_some_and(|p| {
            r.class
                .as_ref()
                .is_none_or(|c| p.compiled.class(c).is_some())
        })
    }

    /// The residency view requests are decided with: every policy held, and
    /// also a removed one that a served route table still names, as `prev`
    /// compiled it (make before break: the table's previous version keeps
    /// serving with the policy it was served with, until its new version
    /// arrives; not across new geo tables, where the route fails closed).
    fn residency_of_served(&self, prev: &Store, geo: Arc<Geo>, geo_changed: bool) -> Residency {
        let mut policies: HashMap<Arc<str>, Arc<ResidencyPolicy>> = self
            .policies
            .iter()
            .map(|(n, e)| (n.clone(), Arc::clone(&e.compiled)))
            .collect();
        if !geo_changed {
            for t in self.served_tables.values() {
                for r in &t.compiled.residency_refs {
                    if policies.contains_key(&r.policy) {
                        continue;
                    }
                    if let Some(p) = prev.residency.policies.get(&r.policy) {
                        policies.insert(r.policy.clone(), Arc::clone(p));
                    }
                }
            }
        }
        residency_view(geo, policies)
    }

    /// The residency view: geo tables, policies and trusted headers.
    pub fn residency(&self) -> &Arc<Residency> {
        &self.residency
    }

    /// Compiles every policy not in this change (`seen`) again, against
    /// new geo tables.
    fn recompile_policies(&mut self, cx: &mut Ctx, seen: &HashMap<Kind, HashSet<Arc<str>>>) {
        let geo = Arc::clone(&self.settings.geo);
        let fresh = seen.get(&Kind::ResidencyPolicy);
        let names: Vec<Arc<str>> = self.policies.keys().cloned().collect();
        for name in names {
            if fresh.is_some_and(|f| f.contains(&name)) {
                continue;
            }
            let e = &self.policies[&name];
            let Resource::ResidencyPolicy(p) = &*e.source else {
                continue;
            };
            let before = cx.errors.len();
            let compiled = compile_policy(cx, p, &geo, &e.path);
            let origin = match e.origin {
                Origin::File => "from the file",
                Origin::Xds => "pushed by the control plane",
            };
            for err in &mut cx.errors[before..] {
                err.message.push_str(&format!(
                    " (residency policy `{name}`, {origin}, compiled again against the new geo tables)"
                ));
            }
            if let Some(c) = compiled {
                let entry = Entry {
                    compiled: Arc::new(c),
                    compile_id: COMPILES.fetch_add(1, Ordering::Relaxed) + 1,
                    ..e.clone()
                };
                self.policies.insert(name, entry);
            }
        }
    }

    /// Checks across resources; `seen` are the resources this change
    /// carries (a listener clash is reported at the one it carries).
    /// `strict`: a route's residency policy must exist (otherwise its table
    /// warms until it arrives).
    fn check(
        &self,
        cx: &mut Ctx,
        seen: &HashMap<Kind, HashSet<Arc<str>>>,
        touched: &HashSet<Arc<str>>,
        strict: bool,
    ) {
        let changed = seen.get(&Kind::Listener);
        // A policy of this change that did not compile has its own errors.
        let failed = |name: &Arc<str>| {
            seen.get(&Kind::ResidencyPolicy)
                .is_some_and(|s| s.contains(name))
        };
        let geo = &self.settings.geo;
        let no_country = !geo.unchecked && geo.country_header.is_none() && geo.mmdb_file.is_none();
        for t in self.route_tables.values() {
            if let Some(path) = t.compiled.nearest_ref.as_ref().filter(|_| no_country) {
                cx.err(
                    path,
                    "needs the client's country: set geo.country_header or geo.mmdb_file",
                );
            }
            // Pushed tables whose policies do not resolve (yet) warm instead:
            // a policy and the tables that use it may arrive in either order.
            if !strict {
                continue;
            }
            for r in &t.compiled.residency_refs {
                let Some(p) = self.policies.get(&r.policy).map(|e| &e.compiled) else {
                    if !failed(&r.policy) {
                        cx.err(&r.path, format!("unknown residency policy `{}`", r.policy));
                    }
                    continue;
                };
                if let Some(c) = &r.class {
                    if p.class(c).is_none() {
                        cx.err(
                            &r.class_path,
                            format!(
                                "data class `{c}` is not one that policy `{}` defines (its rules name: {})",
                                r.policy,
                                p.classes.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        let mut addrs: HashMap<std::net::SocketAddr, &Arc<str>> = HashMap::new();
        for (name, l) in &self.listeners {
            let a = l.compiled.address;
            if let Some(other) = addrs.insert(a, name) {
                let in_change = |n: &Arc<str>| changed.is_some_and(|c| c.contains(n));
                let (at, with) = if in_change(name) || !in_change(other) {
                    (l, other)
                } else {
                    (&self.listeners[other], name)
                };
                cx.err(
                    &at.path.field("address"),
                    format!("address {a} is used by another listener (`{with}`)"),
                );
            }
            if a == self.settings.admin.address {
                cx.err(
                    &l.path.field("address"),
                    format!("{a} is the admin address"),
                );
            }
        }
        for (name, c) in touched
            .iter()
            .filter_map(|n| Some((n, self.effective.get(n)?)))
        {
            let Some(tls) = &c.tls else { continue };
            if tls.sni.is_empty()
                && !tls.insecure_skip_verify
                && c.endpoints.iter().any(|e| e.hostname.is_none())
            {
                let path = match self.endpoints.get(name) {
                    Some(e) => e.path.field("endpoints").to_static(),
                    None => self.clusters[name]
                        .path
                        .field("tls")
                        .field("sni")
                        .to_static(),
                };
                cx.err(
                    &path,
                    format!("cluster `{name}` verifies upstream certificates by name: set its tls.sni or every endpoint's hostname"),
                );
            }
        }
    }

    /// Whether every Secret listener `l` names has arrived.
    fn secrets_ready(&self, l: &Listener) -> bool {
        listener_secrets(l).all(|s| self.secrets.contains_key(s))
    }

    /// Every Secret a served listener or a cluster names must be here: a
    /// removed Secret that is still named is an error naming who uses it.
    fn check_secret_refs(&self, cx: &mut Ctx) {
        let listeners = self.served_listeners.values().flat_map(|l| {
            listener_secrets(&l.compiled).map(move |s| (Kind::Listener, &l.compiled.name, s))
        });
        let clusters = self.effective.iter().flat_map(|(name, c)| {
            let files = c.tls.iter().flat_map(|t| {
                let client = t.client_cert.iter().map(|(cert, _)| cert);
                t.ca_file.iter().chain(client)
            });
            let secrets = files.filter_map(|f| Some(crate::files::secret_of(f)?.0));
            secrets.map(move |s| (Kind::Cluster, name, s))
        });
        for (kind, user, secret) in listeners.chain(clusters) {
            if !self.secrets.contains_key(secret) {
                cx.err(
                    &FieldPath::resource("Secret", secret),
                    format!(
                        "Secret `{secret}` is still named by {} `{user}`; remove it there first",
                        kind.noun()
                    ),
                );
            }
        }
    }

    /// Files seen through this store's Secrets: what the proxy reads TLS
    /// material through.
    pub fn files<'a>(&'a self, inner: &'a dyn Files) -> crate::files::WithSecrets<'a> {
        crate::files::WithSecrets {
            secrets: &self.secrets,
            inner,
        }
    }

    /// Whether the Secrets differ from `other`'s (then TLS material is read again).
    pub fn secrets_differ(&self, other: &Store) -> bool {
        self.secrets.len() != other.secrets.len()
            || self
                .secrets
                .iter()
                .zip(other.secrets.iter())
                .any(|((a, x), (b, y))| a != b || x.digest != y.digest)
    }

    /// The snapshot of what is ready to serve.
    pub fn snapshot(self) -> Snapshot {
        let store = Arc::new(self);
        let route_tables: Vec<Arc<RouteTable>> = store
            .served_tables
            .values()
            .map(|e| Arc::clone(&e.compiled))
            .collect();
        let clusters = store.effective.clone();
        let listeners: Vec<Arc<Listener>> = store
            .served_listeners
            .values()
            .map(|l| Arc::clone(&l.compiled))
            .collect();
        // Order-independent: the sum of each served resource's kind, name and
        // content hash.
        let version = store.served().fold(0u64, |h, key| h.wrapping_add(key));
        let settings = store.settings.clone();
        Snapshot {
            version: format!("{version:016x}").into(),
            loaded_at: SystemTime::now(),
            listeners,
            route_tables,
            clusters,
            admin: settings.admin.clone(),
            runtime: settings.runtime.clone(),
            xds: settings.xds.clone(),
            store,
        }
    }

    /// The key hashes of every served resource.
    fn served(&self) -> impl Iterator<Item = u64> + '_ {
        let l = self.served_listeners.values().map(|e| e.key);
        let t = self.served_tables.values().map(|e| e.key);
        let c = self.clusters.values().map(|e| e.key);
        let ep = self.endpoints.values().map(|e| e.key);
        let p = self.policies.values().map(|e| e.key);
        let s = self.secrets.values().map(|e| e.key);
        l.chain(t).chain(c).chain(ep).chain(p).chain(s)
    }

    /// Every resource of `kind` received: name, version and source.
    pub fn resources(&self, kind: Kind) -> Vec<(Arc<str>, Arc<str>, Arc<Resource>)> {
        self.entries(kind)
            .into_iter()
            .map(|e| (e.name, e.version, e.source))
            .collect()
    }

    /// Every resource of `kind` received, with where it came from and which
    /// compile produced it.
    pub fn entries(&self, kind: Kind) -> Vec<EntryInfo> {
        fn list<T>(m: &OrdMap<Arc<str>, Entry<T>>) -> Vec<EntryInfo> {
            m.iter()
                .map(|(n, e)| EntryInfo {
                    name: n.clone(),
                    version: e.version.clone(),
                    origin: e.origin,
                    compile_id: e.compile_id,
                    source: Arc::clone(&e.source),
                })
                .collect()
        }
        match kind {
            Kind::Listener => list(&self.listeners),
            Kind::RouteTable => list(&self.route_tables),
            Kind::Cluster => list(&self.clusters),
            Kind::Endpoints => list(&self.endpoints),
            Kind::ResidencyPolicy => list(&self.policies),
            Kind::Secret => list(&self.secrets),
        }
    }

    /// Every resource of `kind` that came from `origin`: name, version and source.
    pub fn resources_from(
        &self,
        kind: Kind,
        origin: Origin,
    ) -> Vec<(Arc<str>, Arc<str>, Arc<Resource>)> {
        self.entries(kind)
            .into_iter()
            .filter(|e| e.origin == origin)
            .map(|e| (e.name, e.version, e.source))
            .collect()
    }

    /// Resources received but not served yet, with what they wait for.
    pub fn warming(&self) -> Vec<Warming> {
        let mut out = Vec::new();
        for (name, t) in &self.route_tables {
            let missing: Vec<String> = t
                .compiled
                .clusters
                .iter()
                .filter(|c| !self.cluster_ready(c))
                .map(|c| {
                    if self.clusters.contains_key(c) {
                        format!("{c} (its endpoints)")
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            let mut policies: Vec<String> = t
                .compiled
                .residency_refs
                .iter()
                .filter(|r| !self.policy_resolves(r))
                .map(
                    |r| match (&r.class, self.policies.contains_key(&r.policy)) {
                        (Some(c), true) => format!("{} (to define class {c})", r.policy),
                        _ => r.policy.to_string(),
                    },
                )
                .collect();
            policies.sort();
            policies.dedup();
            if !missing.is_empty() || !policies.is_empty() {
                let mut what = Vec::new();
                if !missing.is_empty() {
                    what.push(format!("clusters {}", missing.join(", ")));
                }
                if !policies.is_empty() {
                    what.push(format!("residency policies {}", policies.join(", ")));
                }
                let serving = if self.served_tables.contains_key(name) {
                    "; the previous version keeps serving"
                } else {
                    ""
                };
                out.push(Warming {
                    kind: Kind::RouteTable,
                    name: name.to_string(),
                    waiting_for: format!("{}{serving}", what.join(" and ")),
                });
            }
        }
        for (name, l) in &self.listeners {
            let served = self.served_listeners.get(name);
            if served.is_some_and(|s| s.digest == l.digest) {
                continue;
            }
            let serving = if served.is_some() {
                "; the previous version keeps serving"
            } else {
                ""
            };
            let mut what = Vec::new();
            if !self.served_tables.contains_key(&l.compiled.route_table) {
                what.push(format!("route table {}", l.compiled.route_table));
            }
            let mut secrets: Vec<&str> = listener_secrets(&l.compiled)
                .filter(|s| !self.secrets.contains_key(*s))
                .collect();
            secrets.dedup();
            if !secrets.is_empty() {
                what.push(format!("Secrets {}", secrets.join(", ")));
            }
            out.push(Warming {
                kind: Kind::Listener,
                name: name.to_string(),
                waiting_for: format!("{}{serving}", what.join(" and ")),
            });
        }
        out
    }
}

/// The Secrets a listener names (its certificate and its trust bundles).
fn listener_secrets(l: &Listener) -> impl Iterator<Item = &str> {
    l.tls.iter().flat_map(|t| {
        let bundles = t.client_auth.iter().flat_map(|a| a.trust_bundles.iter());
        [&t.cert_file]
            .into_iter()
            .chain(bundles.map(|(_, f)| f))
            .filter_map(|f| Some(crate::files::secret_of(f)?.0))
    })
}

/// A bootstrap's process settings without its resources.
fn settings_only(b: &proto::Bootstrap) -> proto::Bootstrap {
    proto::Bootstrap {
        admin: b.admin.clone(),
        runtime: b.runtime,
        xds: b.xds.clone(),
        locality: b.locality.clone(),
        geo: b.geo.clone(),
        ..proto::Bootstrap::default()
    }
}

fn name_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Endpoints => "cluster",
        _ => "name",
    }
}

#[cfg(test)]
mod tests;
