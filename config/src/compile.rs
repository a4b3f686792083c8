//! Owns validation and compilation: `corridor.v1` messages in, an immutable
//! `Snapshot` out, or every error found with its field path. This is the one
//! validator, whether the messages came from a file or a control-plane push.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{ConfigError, FieldPath};
use crate::files::{DiskFiles, Files};
use crate::proto;
use crate::request::{Cidr, EscapedSlashes, HttpLimits, PathOptions};
use crate::snapshot::{
    AdminSettings, ErrorDetail, Forwarding, ForwardingMode, Listener, ListenerHttp, ListenerTls,
    LogFormat, Protocols, RuntimeSettings, Settings, Snapshot, XdsRole, XdsSettings, XdsTls,
};
use crate::store::Store;

mod action;
mod balancing;
mod cluster;
mod matcher;
mod residency;
pub(crate) use residency::{compile_policy, residency_view};
mod route;

pub(crate) use cluster::{compile_cluster, compile_endpoints};
pub(crate) use route::compile_route_table;

/// Default admin listener.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";

/// Collects errors while compiling, and reaches files through the one seam.
pub(crate) struct Ctx<'f> {
    pub(crate) errors: Vec<ConfigError>,
    pub(crate) files: &'f dyn Files,
    /// Clusters named by the routes compiled so far, with the naming field.
    pub(crate) cluster_refs: Vec<(Arc<str>, FieldPath<'static>)>,
    /// A Secret that has not arrived is waited for, not an error (a pushed
    /// or control-stream-backed listener warms until it arrives).
    pub(crate) warm_secrets: bool,
    /// The Secrets `secret` fields may name (the store's, as applied so far).
    pub(crate) secrets: imbl::OrdMap<Arc<str>, crate::store::Entry<crate::files::Secret>>,
}

impl<'f> Ctx<'f> {
    pub(crate) fn new(files: &'f dyn Files) -> Self {
        Self {
            errors: Vec::new(),
            files,
            cluster_refs: Vec::new(),
            warm_secrets: false,
            secrets: imbl::OrdMap::new(),
        }
    }

    pub(crate) fn err(&mut self, path: &FieldPath<'_>, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(path.to_string(), message));
    }
}

/// Validates and compiles a whole bootstrap (a configuration file) into a
/// snapshot, or returns every error. It goes through the same resource store
/// as pushes, with every reference required to resolve.
pub fn compile(bootstrap: proto::Bootstrap) -> Result<Snapshot, Vec<ConfigError>> {
    Ok(Store::from_bootstrap(bootstrap, &DiskFiles)?.snapshot())
}

/// Compiles the process settings of a bootstrap (admin, runtime, control stream).
pub(crate) fn compile_settings(cx: &mut Ctx, b: &proto::Bootstrap) -> Settings {
    let root = FieldPath::root();
    let admin = compile_admin(cx, b.admin.as_ref(), &root.field("admin"));
    let runtime = compile_runtime(cx, b.runtime.as_ref(), &root.field("runtime"));
    let xds = b
        .xds
        .as_ref()
        .and_then(|x| compile_xds(cx, x, &root.field("xds")));
    let locality = b
        .locality
        .as_ref()
        .or(b.xds.as_ref().and_then(|x| x.locality.as_ref()))
        .map_or_else(Default::default, |l| crate::cluster::Locality {
            cloud: l.cloud.as_str().into(),
            region: l.region.as_str().into(),
            zone: l.zone.as_str().into(),
        });
    let geo = Arc::new(residency::compile_geo_settings(cx, b));
    Settings {
        admin,
        runtime,
        xds,
        locality,
        geo,
    }
}

/// Compiles one listener resource; `p` is its path.
pub(crate) fn compile_listener(
    cx: &mut Ctx,
    l: &proto::Listener,
    p: &FieldPath<'_>,
) -> Option<Listener> {
    let address = parse_addr(cx, &p.field("address"), &l.address);
    let mut protocols = Protocols {
        http1: false,
        h2c: false,
    };
    for (j, raw) in l.protocols.iter().enumerate() {
        match proto::listener::Protocol::try_from(*raw) {
            Ok(proto::listener::Protocol::Http1) => protocols.http1 = true,
            Ok(proto::listener::Protocol::H2c) => protocols.h2c = true,
            _ => cx.err(
                &p.item("protocols", j),
                "unknown protocol; use http1 or h2c",
            ),
        }
    }
    if l.protocols.is_empty() {
        protocols = Protocols {
            http1: true,
            h2c: true,
        };
    } else if !protocols.http1 && l.tls.is_none() {
        cx.err(
            &p.field("protocols"),
            "http1 cannot be turned off on a plaintext listener (HTTP/1.1 is always served); list [http1] or [http1, h2c]",
        );
    }
    let tls = l.tls.as_ref().map(|t| {
        let tp = p.field("tls");
        if !l.protocols.is_empty() {
            cx.err(
                &p.field("protocols"),
                "protocols applies to plaintext listeners; on a TLS listener ALPN chooses (see tls.alpn)",
            );
        }
        let (cert_file, key_file) =
            cert_and_key(cx, &tp, "secret", &t.secret, (&t.cert_file, &t.key_file));
        for (j, a) in t.alpn.iter().enumerate() {
            if a != "h2" && a != "http/1.1" {
                cx.err(&tp.item("alpn", j), format!("unsupported ALPN `{a}`; use \"h2\" or \"http/1.1\""));
            }
        }
        let alpn = if t.alpn.is_empty() {
            vec!["h2".into(), "http/1.1".into()]
        } else {
            t.alpn.iter().map(|a| Arc::from(a.as_str())).collect()
        };
        let client_auth = t.client_auth.as_ref().map(|c| {
            let cp = tp.field("client_auth");
            if c.trust_bundles.is_empty() {
                cx.err(
                    &cp.field("trust_bundles"),
                    "name at least one trust domain and its CA file",
                );
            }
            let mut trust_bundles: Vec<(Arc<str>, Arc<str>)> = Vec::new();
            for (i, b) in c.trust_bundles.iter().enumerate() {
                let bp = cp.item("trust_bundles", i);
                if let Err(e) = crate::identity::check_trust_domain(&b.trust_domain) {
                    cx.err(&bp.field("trust_domain"), e);
                } else if trust_bundles
                    .iter()
                    .any(|(d, _)| d.as_ref() == b.trust_domain)
                {
                    cx.err(
                        &bp.field("trust_domain"),
                        format!("trust domain `{}` is listed twice", b.trust_domain),
                    );
                }
                let ca = ca_bundle(cx, &bp, "secret", &b.secret, &b.ca_file);
                trust_bundles.push((b.trust_domain.as_str().into(), ca));
            }
            crate::identity::ClientAuth {
                trust_bundles,
                required: c.required,
            }
        });
        use proto::ForwardClientCert as F;
        let forward_client_cert =
            match enum_value::<F>(cx, &tp.field("forward_client_cert"), t.forward_client_cert) {
                Some(F::SanitizeSet) => crate::identity::ForwardClientCert::SanitizeSet,
                Some(F::ForwardOnly) => crate::identity::ForwardClientCert::ForwardOnly,
                _ => crate::identity::ForwardClientCert::Sanitize,
            };
        if forward_client_cert != crate::identity::ForwardClientCert::Sanitize && client_auth.is_none() {
            cx.err(
                &tp.field("forward_client_cert"),
                "needs client_auth (there is no verified client certificate to set or trust)",
            );
        }
        ListenerTls {
            cert_file,
            key_file,
            alpn,
            client_auth,
            forward_client_cert,
        }
    });
    if l.route_table.is_empty() {
        cx.err(&p.field("route_table"), "a route table is required");
    }
    let http = compile_listener_http(cx, l.http.as_ref(), &p.field("http"));
    Some(Listener {
        name: l.name.as_str().into(),
        address: address?,
        protocols,
        tls,
        route_table: l.route_table.as_str().into(),
        http,
    })
}

/// Largest request head a listener may allow (Pingora's HTTP/1 parser stops at 1 MiB).
const MAX_HEADERS_BYTES: u32 = 1024 * 1024;
/// Most header fields a listener may allow (Pingora's HTTP/1 parser takes 256).
const MAX_HEADERS_COUNT: u32 = 256;
/// Default lines queued for the log writer. The queue is preallocated: each line
/// slot costs about 35 bytes of resident memory whether used or not, so
/// tracing-appender's own default (128 000 lines) held 4.4 MB in every sidecar (idle RSS 19.1 -> 16.1 MB).
/// 16 384 lines still buffer half a second of access logs at 30 000 req/s.
pub const DEFAULT_LOG_QUEUE_LINES: usize = 16_384;

fn compile_listener_http(
    cx: &mut Ctx,
    h: Option<&proto::HttpSettings>,
    path: &FieldPath<'_>,
) -> ListenerHttp {
    let mut out = ListenerHttp::default();
    let Some(h) = h else { return out };
    let bounded = |cx: &mut Ctx, field: &str, v: u32, max: u32, default: usize| -> usize {
        match v {
            0 => default,
            v if v > max => {
                cx.err(
                    &path.field(field),
                    format!("{v} is over the maximum of {max}"),
                );
                default
            }
            v => v as usize,
        }
    };
    let d = HttpLimits::default();
    out.limits = HttpLimits {
        max_headers_bytes: bounded(
            cx,
            "max_request_headers_bytes",
            h.max_request_headers_bytes,
            MAX_HEADERS_BYTES,
            d.max_headers_bytes,
        ),
        max_headers_count: bounded(
            cx,
            "max_request_headers_count",
            h.max_request_headers_count,
            MAX_HEADERS_COUNT,
            d.max_headers_count,
        ),
        max_request_line_bytes: bounded(
            cx,
            "max_request_line_bytes",
            h.max_request_line_bytes,
            MAX_HEADERS_BYTES,
            d.max_request_line_bytes,
        ),
        max_body_bytes: (h.max_request_body_bytes > 0).then_some(h.max_request_body_bytes),
    };
    if let Some(p) = &h.path_normalization {
        let pp = path.field("path_normalization");
        use proto::path_normalization::EscapedSlashes as PE;
        out.paths = PathOptions {
            normalize: p.normalize.unwrap_or(true),
            merge_slashes: p.merge_slashes.unwrap_or(true),
            escaped_slashes: match enum_value::<PE>(
                cx,
                &pp.field("escaped_slashes"),
                p.escaped_slashes,
            ) {
                Some(PE::Keep) => EscapedSlashes::Keep,
                Some(PE::Unescape) => EscapedSlashes::Unescape,
                _ => EscapedSlashes::Reject,
            },
        };
    }
    if let Some(f) = &h.forwarding {
        let fp = path.field("forwarding");
        use proto::forwarding::Mode as PM;
        let mode = match enum_value::<PM>(cx, &fp.field("mode"), f.mode) {
            Some(PM::Trusted) => ForwardingMode::Trusted,
            Some(PM::Replace) => ForwardingMode::Replace,
            Some(PM::Strip) => ForwardingMode::Strip,
            _ => ForwardingMode::Append,
        };
        let mut trusted = Vec::with_capacity(f.trusted_cidrs.len());
        for (i, c) in f.trusted_cidrs.iter().enumerate() {
            match Cidr::parse(c) {
                Ok(c) => trusted.push(c),
                Err(e) => cx.err(&fp.item("trusted_cidrs", i), e.to_string()),
            }
        }
        if mode == ForwardingMode::Trusted && f.trusted_cidrs.is_empty() {
            cx.err(
                &fp.field("trusted_cidrs"),
                "mode trusted needs the CIDRs of the proxies in front (for example 10.0.0.0/8)",
            );
        }
        if f.trusted_hops > 0 && mode != ForwardingMode::Trusted {
            cx.err(
                &fp.field("trusted_hops"),
                "trusted_hops applies only to mode trusted",
            );
        }
        out.forwarding = Forwarding {
            mode,
            trusted: trusted.into(),
            trusted_hops: f.trusted_hops,
        };
    }
    out.preserve_external_request_id = h.request_id.as_ref().is_some_and(|r| r.preserve_external);
    use proto::http_settings::ErrorDetail as PD;
    out.error_detail = match enum_value::<PD>(cx, &path.field("error_detail"), h.error_detail) {
        Some(PD::Minimal) => ErrorDetail::Minimal,
        _ => ErrorDetail::Full,
    };
    out
}

fn compile_admin(
    cx: &mut Ctx,
    admin: Option<&proto::Admin>,
    path: &FieldPath<'_>,
) -> AdminSettings {
    let default = AdminSettings {
        address: DEFAULT_ADMIN_ADDRESS.parse().expect("valid default"),
        access_log: false,
        log_format: LogFormat::Text,
        log_queue_lines: DEFAULT_LOG_QUEUE_LINES,
        config_dump_token_file: None,
    };
    let Some(a) = admin else { return default };
    let address = if a.address.is_empty() {
        default.address
    } else {
        parse_addr(cx, &path.field("address"), &a.address).unwrap_or(default.address)
    };
    let mut out = AdminSettings { address, ..default };
    if let Some(l) = &a.access_log {
        let lp = path.field("access_log");
        out.access_log = l.enabled;
        use proto::access_log::Format as PF;
        out.log_format = match enum_value::<PF>(cx, &lp.field("format"), l.format) {
            Some(PF::Json) => LogFormat::Json,
            _ => LogFormat::Text,
        };
        match l.queue_lines {
            0 => {}
            n if n > 10_000_000 => cx.err(
                &lp.field("queue_lines"),
                format!("{n} lines is too many (at most 10000000)"),
            ),
            n => out.log_queue_lines = n as usize,
        }
    }
    if !a.config_dump_token_file.is_empty() {
        require_file(
            cx,
            &path.field("config_dump_token_file"),
            &a.config_dump_token_file,
        );
        out.config_dump_token_file = Some(a.config_dump_token_file.as_str().into());
    }
    out
}

/// Default wait for the first complete configuration from the control plane (Envoy's).
const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

fn compile_xds(cx: &mut Ctx, x: &proto::Xds, path: &FieldPath<'_>) -> Option<XdsSettings> {
    if x.server.is_empty() {
        cx.err(
            &path.field("server"),
            "the control-plane address is required, for example http://10.0.0.2:18000",
        );
    } else if !(x.server.starts_with("http://") || x.server.starts_with("https://"))
        || x.server.parse::<http::Uri>().is_err()
    {
        cx.err(
            &path.field("server"),
            format!(
                "`{}` is not a control-plane URL; write it as http://host:port",
                x.server
            ),
        );
    }
    if x.node_id.is_empty() {
        cx.err(&path.field("node_id"), "a node id is required");
    }
    use proto::xds::Role as PR;
    let role = match enum_value::<PR>(cx, &path.field("role"), x.role) {
        Some(PR::Ingress) => XdsRole::Ingress,
        _ => XdsRole::Sidecar,
    };
    let initial_fetch_timeout = duration(
        cx,
        &path.field("initial_fetch_timeout"),
        x.initial_fetch_timeout.as_ref(),
        false,
    )
    .unwrap_or(DEFAULT_INITIAL_FETCH_TIMEOUT);
    let l = x.locality.clone().unwrap_or_default();
    let https = x.server.starts_with("https://");
    let tls = match &x.tls {
        Some(t) => {
            let tp = path.field("tls");
            if !https {
                cx.err(&path.field("server"), "tls needs an https:// server URL");
            }
            let ca_file = (!t.ca_file.is_empty()).then(|| {
                require_file(cx, &tp.field("ca_file"), &t.ca_file);
                Arc::from(t.ca_file.as_str())
            });
            let client_cert = match (t.cert_file.is_empty(), t.key_file.is_empty()) {
                (true, true) => None,
                (false, true) => {
                    cx.err(&tp.field("key_file"), "cert_file needs its key_file");
                    None
                }
                _ => Some(cert_and_key(cx, &tp, "", "", (&t.cert_file, &t.key_file))),
            };
            Some(XdsTls {
                ca_file,
                client_cert,
                sni: t.sni.as_str().into(),
                expected_identities: expected_identities(cx, &tp, &t.expected_identities),
            })
        }
        None => https.then(|| XdsTls {
            ca_file: None,
            client_cert: None,
            sni: "".into(),
            expected_identities: Vec::new(),
        }),
    };
    Some(XdsSettings {
        server: x.server.as_str().into(),
        node_id: x.node_id.as_str().into(),
        node_cluster: x.node_cluster.as_str().into(),
        cloud: l.cloud.into(),
        region: l.region.into(),
        zone: l.zone.into(),
        role,
        delta: x.delta,
        initial_fetch_timeout,
        persist_file: (!x.persist_file.is_empty()).then(|| x.persist_file.as_str().into()),
        tls,
    })
}

/// Checks a list of expected peer identities: SPIFFE IDs or DNS names.
pub(crate) fn expected_identities(
    cx: &mut Ctx,
    p: &FieldPath<'_>,
    list: &[String],
) -> Vec<Arc<str>> {
    let mut out = Vec::with_capacity(list.len());
    for (i, id) in list.iter().enumerate() {
        let ok = if id.starts_with("spiffe://") {
            crate::identity::parse_spiffe_id(id).map(|_| ())
        } else if !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*'))
        {
            Ok(())
        } else {
            Err(format!("`{id}` is neither a SPIFFE ID nor a DNS name"))
        };
        match ok {
            Ok(()) => out.push(Arc::from(id.as_str())),
            Err(e) => cx.err(&p.item("expected_identities", i), e),
        }
    }
    out
}

fn compile_runtime(
    cx: &mut Ctx,
    rt: Option<&proto::Runtime>,
    path: &FieldPath<'_>,
) -> RuntimeSettings {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = RuntimeSettings {
        worker_threads: cpus,
        drain_timeout: Duration::from_secs(10),
    };
    let Some(rt) = rt else { return out };
    match rt.worker_threads {
        0 => {}
        n if n > 1024 => cx.err(
            &path.field("worker_threads"),
            format!("{n} worker threads is too many (at most 1024)"),
        ),
        n => out.worker_threads = n as usize,
    }
    if let Some(d) = duration(
        cx,
        &path.field("drain_timeout"),
        rt.drain_timeout.as_ref(),
        true,
    ) {
        out.drain_timeout = d;
    }
    out
}

// === shared helpers ===

/// Parses an `ip:port` socket address.
pub(crate) fn parse_addr(cx: &mut Ctx, path: &FieldPath<'_>, text: &str) -> Option<SocketAddr> {
    if text.is_empty() {
        cx.err(path, "an address (ip:port) is required");
        return None;
    }
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            let hint = if text.contains(':')
                && text.parse::<std::net::IpAddr>().is_err()
                && !text.starts_with('[')
            {
                "; host names are not resolved, give an IP address like 10.0.0.5:8080 (IPv6 as [::1]:8080)"
            } else {
                "; expected ip:port, for example 10.0.0.5:8080"
            };
            cx.err(path, format!("invalid address `{text}`{hint}"));
            None
        }
    }
}

/// A protobuf enum field's value, or an error naming the field when the number
/// is not one the schema defines (pushed resources are not checked by the YAML
/// decoder, so this is where unknown numbers are caught).
pub(crate) fn enum_value<E: TryFrom<i32>>(
    cx: &mut Ctx,
    path: &FieldPath<'_>,
    raw: i32,
) -> Option<E> {
    match E::try_from(raw) {
        Ok(e) => Some(e),
        Err(_) => {
            cx.err(path, format!("{raw} is not a known value of this enum"));
            None
        }
    }
}

/// Compiles a `Secret`: exactly one of its two kinds, with PEM that parses.
/// Errors never quote the material.
pub(crate) fn compile_secret(
    cx: &mut Ctx,
    s: &proto::Secret,
    p: &FieldPath<'_>,
) -> Option<crate::files::Secret> {
    use crate::files::Secret;
    fn certs(cx: &mut Ctx, path: &FieldPath<'_>, pem: &str) -> bool {
        let mut n = 0;
        for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
            if let Err(e) = c {
                cx.err(path, format!("not a valid PEM certificate: {e}"));
                return false;
            }
            n += 1;
        }
        if n == 0 {
            cx.err(
                path,
                "no PEM certificate (-----BEGIN CERTIFICATE-----) found",
            );
        }
        n > 0
    }
    match (&s.tls_certificate, &s.validation_context) {
        (Some(t), None) => {
            let tp = p.field("tls_certificate");
            let chain = certs(cx, &tp.field("certificate_chain"), &t.certificate_chain);
            let kp = tp.field("private_key");
            let key = match rustls_pemfile::private_key(&mut t.private_key.as_bytes()) {
                Ok(Some(_)) => true,
                Ok(None) => {
                    cx.err(&kp, "no PEM private key (PKCS#8, PKCS#1 or SEC1) found");
                    false
                }
                Err(e) => {
                    cx.err(&kp, format!("not a valid PEM private key: {e}"));
                    false
                }
            };
            (chain && key).then(|| Secret::TlsCertificate {
                chain: Arc::from(t.certificate_chain.as_bytes()),
                key: Arc::from(t.private_key.as_bytes()),
            })
        }
        (None, Some(v)) => certs(
            cx,
            &p.field("validation_context").field("trusted_ca"),
            &v.trusted_ca,
        )
        .then(|| Secret::ValidationContext {
            trusted_ca: Arc::from(v.trusted_ca.as_bytes()),
        }),
        (Some(_), Some(_)) => {
            cx.err(
                p,
                "give one of tls_certificate and validation_context, not both",
            );
            None
        }
        (None, None) => {
            cx.err(p, "a Secret needs tls_certificate or validation_context");
            None
        }
    }
}

/// Checks that Secret `name` has arrived and carries `part`; returns the path
/// the proxy reads that part through.
pub(crate) fn secret_ref(
    cx: &mut Ctx,
    path: &FieldPath<'_>,
    name: &str,
    part: crate::files::SecretPart,
) -> Arc<str> {
    let file = crate::files::secret_path(name, part);
    match cx.secrets.get(name) {
        // A control plane validating one resource file (`UncheckedPaths`)
        // leaves Secrets of other files to the proxies.
        None if cx.warm_secrets || cx.files.check(&file).is_ok() => {}
        None => cx.err(
            path,
            format!("no Secret `{name}` has arrived (a control stream sends Secrets before what names them)"),
        ),
        Some(e) => {
            if let Err(err) = e.compiled.part(name, part) {
                cx.err(path, err.to_string());
            }
        }
    }
    file.into()
}

/// A certificate and key given as two files or as one `tls_certificate`
/// Secret (`secret_field`): the paths the proxy reads them through.
pub(crate) fn cert_and_key(
    cx: &mut Ctx,
    p: &FieldPath<'_>,
    secret_field: &str,
    secret: &str,
    files: (&str, &str),
) -> (Arc<str>, Arc<str>) {
    use crate::files::{secret_path, SecretPart};
    if secret.is_empty() {
        require_file(cx, &p.field("cert_file"), files.0);
        require_file(cx, &p.field("key_file"), files.1);
        return (files.0.into(), files.1.into());
    }
    let sp = p.field(secret_field);
    if !files.0.is_empty() || !files.1.is_empty() {
        cx.err(
            &sp,
            "give either a Secret or cert_file and key_file, not both",
        );
    }
    let chain = secret_ref(cx, &sp, secret, SecretPart::CertificateChain);
    (chain, secret_path(secret, SecretPart::PrivateKey).into())
}

/// A CA bundle given as a file or as a `validation_context` Secret.
pub(crate) fn ca_bundle(
    cx: &mut Ctx,
    p: &FieldPath<'_>,
    secret_field: &str,
    secret: &str,
    file: &str,
) -> Arc<str> {
    if secret.is_empty() {
        require_file(cx, &p.field("ca_file"), file);
        return file.into();
    }
    let sp = p.field(secret_field);
    if !file.is_empty() {
        cx.err(&sp, "give either a Secret or ca_file, not both");
    }
    secret_ref(cx, &sp, secret, crate::files::SecretPart::TrustedCa)
}

/// Checks that a required file exists and can be read (through the files seam).
pub(crate) fn require_file(cx: &mut Ctx, path: &FieldPath<'_>, file: &str) {
    if file.starts_with(crate::files::SECRET_PREFIX) {
        cx.err(
            path,
            format!("`{file}` is not a file path; name a Secret in the `secret` field"),
        );
    } else if file.is_empty() {
        cx.err(path, "a file path is required");
    } else if let Err(e) = cx.files.check(file) {
        cx.err(path, format!("cannot read `{file}`: {e}"));
    }
}

/// Converts an optional proto duration; `positive` rejects zero.
pub(crate) fn duration(
    cx: &mut Ctx,
    path: &FieldPath<'_>,
    d: Option<&prost_types::Duration>,
    positive: bool,
) -> Option<Duration> {
    let d = d?;
    if d.seconds < 0 || d.nanos < 0 {
        cx.err(path, "a duration must not be negative");
        return None;
    }
    const MAX: Duration = Duration::from_secs(365 * 24 * 3600);
    let out = Duration::new(d.seconds as u64, d.nanos as u32);
    if out > MAX {
        cx.err(path, "a duration must be at most 365 days");
        return None;
    }
    if positive && out.is_zero() {
        cx.err(path, "a duration must be greater than zero");
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
