//! Helpers shared by the fuzz targets in `fuzz_targets/`: the config
//! round-trip check, path-normalization invariants, routing through fixed
//! configurations, and small `arbitrary` building blocks for header names and
//! values. Every `assert!` here is an invariant of `corridor-config`; a failing
//! one is a finding, like a panic inside the crate.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use corridor_config::{
    check_query, load_str, normalize_host, normalize_path, to_json, EscapedSlashes, PathOptions,
    RequestView, RouteAction, Snapshot,
};
use http::{HeaderName, HeaderValue};

// === configuration ===

/// Loads `text`; when it compiles, checks the snapshot's cross references and
/// that its `/config_dump` JSON (`to_json`) loads again to the same version.
/// Returns the version, or `None` when the text is rejected.
pub fn check_config(text: &str) -> Option<String> {
    let snap = load_str(text, "fuzz").ok()?;
    check_snapshot(&snap);
    let json = to_json(&snap.store.to_bootstrap());
    let json_text = serde_json::to_string(&json).expect("a serde_json::Value serializes");
    let again = match load_str(&json_text, "fuzz.json") {
        Ok(s) => s,
        Err(e) => panic!(
            "the config compiled, but its to_json output does not load again: {e}\nJSON: {json_text}"
        ),
    };
    assert_eq!(
        again.version, snap.version,
        "to_json output compiles to another version\nJSON: {json_text}"
    );
    Some(snap.version.to_string())
}

/// Names in a snapshot point at things that exist.
fn check_snapshot(snap: &Snapshot) {
    assert_eq!(snap.version.len(), 16, "version {:?}", snap.version);
    for l in &snap.listeners {
        assert!(snap.route_table(&l.route_table).is_some());
    }
    for table in &snap.route_tables {
        for vh in &table.virtual_hosts {
            for route in &vh.routes {
                if let RouteAction::Forward(f) = &route.action {
                    assert!(
                        !f.targets.is_empty(),
                        "route `{}` has no targets",
                        route.name
                    );
                    for t in &f.targets {
                        assert!(snap.cluster(&t.cluster).is_some());
                    }
                }
            }
        }
    }
}

// === paths ===

/// Every combination of path options, the default first.
pub fn all_path_options() -> Vec<PathOptions> {
    let mut out = vec![PathOptions::default()];
    for normalize in [true, false] {
        for merge_slashes in [true, false] {
            for escaped_slashes in [
                EscapedSlashes::Reject,
                EscapedSlashes::Keep,
                EscapedSlashes::Unescape,
            ] {
                let o = PathOptions {
                    normalize,
                    merge_slashes,
                    escaped_slashes,
                };
                if o != PathOptions::default() {
                    out.push(o);
                }
            }
        }
    }
    out
}

/// Normalizes `path` with `opts` and checks what a normalized path promises:
/// it starts with `/`; with `merge_slashes` it has no `//`; with `normalize`
/// it has no dot segments, no escaped unreserved character and no lower-case
/// escape; and normalizing it again accepts it unchanged.
pub fn check_normalize(path: &str, opts: &PathOptions) -> Option<String> {
    let out = normalize_path(path, opts).ok()?;
    let s: &str = &out;
    let ctx = || format!("input {path:?}, options {opts:?}, output {s:?}");
    assert!(s.starts_with('/'), "does not start with `/`: {}", ctx());
    if opts.merge_slashes {
        assert!(!s.contains("//"), "`//` left with merge_slashes: {}", ctx());
    }
    if opts.normalize {
        assert!(
            !s.contains("/./") && !s.contains("/../") && !s.ends_with("/.") && !s.ends_with("/.."),
            "dot segment left with normalize: {}",
            ctx()
        );
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let esc = &b[i..(i + 3).min(b.len())];
                assert!(
                    esc.len() == 3 && esc[1..].iter().all(|c| c.is_ascii_hexdigit()),
                    "broken escape in output: {}",
                    ctx()
                );
                assert!(
                    !esc[1..].iter().any(u8::is_ascii_lowercase),
                    "lower-case escape left with normalize: {}",
                    ctx()
                );
                let decoded = u8::from_str_radix(std::str::from_utf8(&esc[1..]).unwrap(), 16)
                    .expect("hex digits");
                assert!(
                    !(decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded)),
                    "escaped unreserved character left with normalize: {}",
                    ctx()
                );
                i += 3;
            } else {
                i += 1;
            }
        }
    }
    match normalize_path(s, opts) {
        Ok(again) => assert_eq!(again, s, "not idempotent: {}", ctx()),
        Err(e) => panic!(
            "a normalized path is rejected on a second pass ({e}): {}",
            ctx()
        ),
    }
    Some(s.to_string())
}

/// Runs `check_query` on the query and every path-option combination on the path.
/// Returns the path normalized with the default options, if accepted.
pub fn check_path_and_query(path: &str, query: Option<&str>) -> Option<String> {
    if let Some(q) = query {
        let _ = check_query(q);
    }
    let mut default = None;
    for (i, opts) in all_path_options().iter().enumerate() {
        let r = check_normalize(path, opts);
        if i == 0 {
            default = r;
        }
    }
    default
}

// === routing ===

/// The configurations requests are routed through: the demo (kept current by
/// `include_str!`) and a small one with every kind of matcher and subset.
pub fn fixtures() -> &'static [Snapshot] {
    static FIXTURES: OnceLock<Vec<Snapshot>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        [
            (
                "examples/demo.yaml",
                include_str!("../../examples/demo.yaml"),
            ),
            (
                "fuzz/configs/match.yaml",
                include_str!("../configs/match.yaml"),
            ),
        ]
        .into_iter()
        .map(|(name, text)| load_str(text, name).unwrap_or_else(|e| panic!("{e}")))
        .collect()
    })
}

/// Routes a request through every fixture and checks: the virtual host does not
/// depend on the case of `host`; the indexed route lookup finds the same route
/// as trying every route in order; a found route's matcher holds; subsets are
/// chosen without panicking and only name endpoints of the cluster; the route's
/// request header edits apply.
pub fn check_routing(host: &str, view: &RequestView<'_>) {
    let n = normalize_host(host);
    assert!(
        !n.bytes().any(|b| b.is_ascii_uppercase()) && n.len() <= host.len(),
        "normalize_host({host:?}) = {n:?}"
    );
    let upper = host.to_ascii_uppercase();
    for snap in fixtures() {
        for table in &snap.route_tables {
            let v = table.virtual_host(host);
            assert_eq!(
                v,
                table.virtual_host(&upper),
                "the case of host {host:?} changes its virtual host"
            );
            let Some(v) = v else { continue };
            let vh = &table.virtual_hosts[v];
            let linear = vh.routes.iter().position(|r| r.matcher.matches(view));
            let found = vh.find(view);
            assert_eq!(
                found, linear,
                "indexed lookup differs from the first matching route (host {host:?}, path {:?}, query {:?})",
                view.path, view.query
            );
            assert_eq!(table.find(host, view), found.map(|r| (v, r)));
            let Some(r) = found else { continue };
            let route = &vh.routes[r];
            if let RouteAction::Forward(f) = &route.action {
                assert!(f.pick_target() < f.targets.len());
                for t in &f.targets {
                    let cluster = snap.cluster(&t.cluster).expect("a target's cluster exists");
                    if let Ok(set) = t.candidates(cluster, view) {
                        assert!(!set.is_empty(), "an Ok subset is empty");
                        for i in set.iter() {
                            assert!(i < cluster.endpoints.len());
                        }
                    }
                }
            }
            let mut headers = view.headers.clone();
            let Ok(()) = route.request_headers.apply(&mut headers);
        }
    }
}

// === header building blocks ===

/// A header name: mostly from a list the fixtures and checks care about, so
/// that names collide; sometimes arbitrary bytes.
#[derive(Debug, Arbitrary)]
pub enum NameIn {
    /// Index into [`NAMES`].
    Known(u8),
    /// Bytes for `HeaderName::from_bytes`.
    Raw(Vec<u8>),
}

/// Names the fixtures match on, the HTTP/2 checks single out, and a few
/// spelled in upper case (the same name once parsed).
pub const NAMES: &[&str] = &[
    "host",
    "content-length",
    "te",
    "connection",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "x-model",
    "x-region",
    "x-debug",
    "x-tenant",
    "x-forwarded-for",
    "x-a",
    "X-A",
    "X-Model",
    "set-cookie",
    "cookie",
];

impl NameIn {
    /// The header name, if `http` accepts it.
    pub fn build(&self) -> Option<HeaderName> {
        match self {
            NameIn::Known(i) => {
                HeaderName::from_bytes(NAMES[*i as usize % NAMES.len()].as_bytes()).ok()
            }
            NameIn::Raw(b) => HeaderName::from_bytes(b).ok(),
        }
    }
}

/// A header value: from a list, or arbitrary bytes.
#[derive(Debug, Arbitrary)]
pub enum ValueIn {
    /// Index into [`VALUES`].
    Known(u8),
    /// Bytes for `HeaderValue::from_bytes`.
    Raw(Vec<u8>),
}

/// Values the fixtures and checks react to.
pub const VALUES: &[&str] = &[
    "trailers",
    "gzip",
    "0",
    "42",
    "18446744073709551616",
    "api.example.com",
    "API.example.com:8443",
    "[::1]:80",
    "gpt-4o",
    "claude-3",
    "llama-3.1",
    "us-east-1",
    "acme-corp",
    " padded ",
    "10.1.2.3, 10.0.0.2",
    "192.0.2.1, [2001:db8::1]:443, 10.9.9.9:80",
    "",
];

impl ValueIn {
    /// The header value, if `http` accepts it.
    pub fn build(&self) -> Option<HeaderValue> {
        match self {
            ValueIn::Known(i) => {
                HeaderValue::from_bytes(VALUES[*i as usize % VALUES.len()].as_bytes()).ok()
            }
            ValueIn::Raw(b) => HeaderValue::from_bytes(b).ok(),
        }
    }
}

/// Splits `path?query` at the first `?`.
pub fn split_query(pq: &str) -> (&str, Option<&str>) {
    match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    }
}

// === control-stream resources ===

/// One pushed resource as the fuzzer builds it: a kind, raw protobuf bytes,
/// and whether it is a removal instead.
#[derive(Debug, Arbitrary)]
pub struct PushedResource {
    kind: u8,
    bytes: Vec<u8>,
    remove: bool,
    name: String,
}

/// Decodes arbitrary bytes as each resource kind and applies them as one
/// pushed change to a store holding the demo configuration: nothing panics,
/// a decoded resource re-encodes to itself, a rejected change says why, and
/// an accepted one gives a snapshot whose names all resolve.
pub fn check_resources(pushed: Vec<PushedResource>) {
    use corridor_config::{Change, DiskFiles, Kind, Origin, Resource, Upsert};
    static BASE: OnceLock<corridor_config::Store> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        corridor_config::load_store_str(corridor_config_demo(), "demo.yaml")
            .expect("the demo configuration loads")
    });
    let mut change = Change {
        origin: Origin::Xds,
        ..Change::default()
    };
    for p in pushed.into_iter().take(16) {
        let kind = Kind::ALL[usize::from(p.kind) % Kind::ALL.len()];
        if p.remove {
            change.removals.push((kind, p.name));
            continue;
        }
        let Ok(r) = Resource::decode(kind, &p.bytes) else {
            continue;
        };
        let again = Resource::decode(kind, &r.encode()).expect("a decoded resource re-decodes");
        // Compared by encoding: a float field may hold NaN, which is never
        // equal to itself.
        assert_eq!(again.encode(), r.encode(), "encode/decode changed a resource: {r:?}");
        let _ = r.to_json();
        change.upserts.push(Upsert::pushed(r, "v1"));
    }
    match base.apply(change, &DiskFiles, false) {
        Ok(next) => {
            let _ = next.warming();
            let snap = next.snapshot();
            // A pushed removal may leave a route naming a cluster that is gone
            // (it answers 503 until the cluster returns, as in Envoy); what is
            // served must still be whole: every listener has its table.
            assert_eq!(snap.version.len(), 16);
            for l in &snap.listeners {
                assert!(snap.route_table(&l.route_table).is_some());
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            }
        }
    }
}

/// The demo configuration (examples/demo.yaml).
fn corridor_config_demo() -> &'static str {
    include_str!("../../examples/demo.yaml")
}
