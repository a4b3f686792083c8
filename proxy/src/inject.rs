//! Owns `corridor inject`: adding the Corridor sidecar to the Kubernetes
//! workloads of a YAML stream, as `linkerd inject` and `istioctl kube-inject`
//! do, in explicit-proxy mode (the application calls Corridor on localhost; no
//! traffic is intercepted). It reads documents the way Kubernetes reads them
//! (YAML 1.1 plain scalars: `0644` is octal, `yes` a boolean), writes them back
//! with every key in its place and every string quoted where Kubernetes could
//! read it as something else, leaves all but pod templates as they were, is
//! idempotent, and names the document, the workload, the line and the field
//! of whatever it cannot inject into.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, IgnoredAny, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

/// The sidecar container's name; a pod that has it is already injected.
pub const SIDECAR_NAME: &str = "corridor-proxy";
/// Pod-template annotation that opts out when set to `disabled`.
pub const INJECT_ANNOTATION: &str = "corridor.dev/inject";
/// Pod-template annotation recording the version that injected the sidecar.
pub const INJECTED_ANNOTATION: &str = "corridor.dev/injected";
/// Where the sidecar finds the control plane unless `--control-plane` says otherwise.
pub const DEFAULT_CONTROL_PLANE: &str = "http://corridor-control-plane.corridor-system:18000";
/// Where the certificate volume is mounted (read-only) in the sidecar.
pub const CERT_DIR: &str = "/etc/corridor/certs";
/// Where the in-memory volume keeping the pushed configuration (`--persist`) is mounted.
pub const STATE_DIR: &str = "/var/run/corridor";

const DEFAULT_CPU_REQUEST: &str = "100m";
const DEFAULT_MEMORY_REQUEST: &str = "64Mi";
const DEFAULT_CPU_LIMIT: &str = "1";
const DEFAULT_MEMORY_LIMIT: &str = "256Mi";
const CERTS_VOLUME: &str = "corridor-certs";
const STATE_VOLUME: &str = "corridor-state";
const ADMIN_PORT_NAME: &str = "corridor-admin";
const PROXY_PORT_NAME: &str = "corridor-proxy";
/// The non-root user and group the sidecar runs as (distroless `nonroot`).
const RUN_AS: u64 = 65532;
/// Kubernetes' `terminationGracePeriodSeconds` when a pod does not set it.
const KUBERNETES_DEFAULT_GRACE_SECS: u64 = 30;
/// Time past Corridor's drain timeout for the process to exit.
const GRACE_MARGIN_SECS: u64 = 5;
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `corridor inject --help`, after the flags.
pub const INJECT_HELP: &str = "\
What it adds to each Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
Job, CronJob and Pod (also inside `kind: List`); every other document is written back as it was:
  - a container `corridor-proxy` running `corridor run --xds <control plane> --node-id
    $(POD_NAME).$(POD_NAMESPACE) --role sidecar` with --cloud/--region/--zone from the flags,
    else from the pod template's labels corridor.dev/cloud, topology.kubernetes.io/region and
    topology.kubernetes.io/zone (else left out); POD_NAME, POD_NAMESPACE and NODE_NAME from the
    downward API; the admin listener on 0.0.0.0:<admin port> with readiness (/ready) and
    liveness (/live) probes on it; resources; a least-privilege securityContext (user and group
    65532, non-root, read-only root filesystem, no privilege escalation, all capabilities
    dropped, RuntimeDefault seccomp); the pushed configuration kept in an in-memory volume
    (corridor-state at /var/run/corridor, `--persist`) so that a restarted sidecar can serve it
    when the control plane is away;
  - with --cert-secret (or a pod volume already named corridor-certs): that volume mounted
    read-only at /etc/corridor/certs for mTLS; with an https:// control plane the sidecar
    authenticates to it with ca.crt, tls.crt and tls.key from there;
  - terminationGracePeriodSeconds raised to Corridor's drain timeout plus 5 s when lower
    (written as Kubernetes' default, 30, when absent); never lowered;
  - the pod annotation corridor.dev/injected: <version>.
The sidecar is appended to `containers`; in pods that run to completion (restartPolicy Never
or OnFailure: Jobs, CronJobs) it is a native sidecar appended to `initContainers` with
restartPolicy: Always (Kubernetes 1.29 or later) so that they still complete. Existing
containers, init containers and sidecars are kept as they are and in their order.

Explicit-proxy mode: the application sends its requests to Corridor on localhost, on the
listener the control plane gives the sidecar (--proxy-port declares it). Nothing is
intercepted: no iptables rules, no init container, no extra privileges. Transparent
interception is not implemented.

A pod that already has a container named corridor-proxy is left as it is, so injecting twice
changes nothing; a pod template annotated corridor.dev/inject: disabled is left as it is.
Documents are rewritten from their parsed form: keys keep their order, YAML comments, anchors
and empty documents are not kept, and plain scalars are written as Kubernetes reads them
(0644 -> 420, yes -> true). On an error nothing is written to stdout and the exit code is 1.

Examples:
  corridor inject -f deploy.yaml | kubectl apply -f -
  kubectl get deploy web -o yaml | corridor inject -f - --cloud aws --region eu-west-1
  corridor inject -f app.yaml --control-plane https://cp.corridor-system:18000 --cert-secret web-certs";

/// The flags of `corridor inject`.
#[derive(clap::Args, Debug, Clone)]
pub struct InjectArgs {
    /// Kubernetes manifests to inject into (a YAML stream; `-` reads stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Control-plane URL the sidecar subscribes to (`corridor run --xds`).
    #[arg(long, value_name = "URL", default_value = DEFAULT_CONTROL_PLANE)]
    pub control_plane: String,
    /// Sidecar image.
    #[arg(long, value_name = "IMAGE", default_value_t = default_image())]
    pub image: String,
    /// Cloud of the pods (node metadata); overrides the label corridor.dev/cloud.
    #[arg(long)]
    pub cloud: Option<String>,
    /// Region of the pods (node metadata); overrides the label topology.kubernetes.io/region.
    #[arg(long)]
    pub region: Option<String>,
    /// Zone of the pods (node metadata); overrides the label topology.kubernetes.io/zone.
    #[arg(long)]
    pub zone: Option<String>,
    /// Port of the sidecar's admin listener (probes, /metrics).
    #[arg(long, value_name = "PORT", default_value_t = default_admin_port(),
          value_parser = clap::value_parser!(u16).range(1..))]
    pub admin_port: u16,
    /// Port of the sidecar's explicit-proxy listener (from the control plane), declared as a container port.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub proxy_port: Option<u16>,
    /// Secret with the sidecar's certificates (ca.crt, tls.crt, tls.key), mounted at /etc/corridor/certs.
    #[arg(long, value_name = "NAME")]
    pub cert_secret: Option<String>,
    /// CPU request of the sidecar (`none` leaves it out).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_CPU_REQUEST)]
    pub cpu_request: String,
    /// Memory request of the sidecar (`none` leaves it out).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_MEMORY_REQUEST)]
    pub memory_request: String,
    /// CPU limit of the sidecar (`none` leaves it out).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_CPU_LIMIT)]
    pub cpu_limit: String,
    /// Memory limit of the sidecar (`none` leaves it out).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_MEMORY_LIMIT)]
    pub memory_limit: String,
}

/// What the sidecar is built from (the flags, checked).
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// Control-plane URL (`http://` or `https://`).
    pub control_plane: String,
    /// Sidecar image.
    pub image: String,
    /// Cloud, overriding the pod template's label.
    pub cloud: Option<String>,
    /// Region, overriding the pod template's label.
    pub region: Option<String>,
    /// Zone, overriding the pod template's label.
    pub zone: Option<String>,
    /// Admin listener port.
    pub admin_port: u16,
    /// Declared explicit-proxy listener port.
    pub proxy_port: Option<u16>,
    /// Secret mounted for mTLS.
    pub cert_secret: Option<String>,
    /// CPU request.
    pub cpu_request: Option<String>,
    /// Memory request.
    pub memory_request: Option<String>,
    /// CPU limit.
    pub cpu_limit: Option<String>,
    /// Memory limit.
    pub memory_limit: Option<String>,
    /// Corridor's drain timeout, which the pod's grace period must exceed.
    pub drain_timeout: Duration,
}

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions {
            control_plane: DEFAULT_CONTROL_PLANE.to_string(),
            image: default_image(),
            cloud: None,
            region: None,
            zone: None,
            admin_port: default_admin_port(),
            proxy_port: None,
            cert_secret: None,
            cpu_request: Some(DEFAULT_CPU_REQUEST.into()),
            memory_request: Some(DEFAULT_MEMORY_REQUEST.into()),
            cpu_limit: Some(DEFAULT_CPU_LIMIT.into()),
            memory_limit: Some(DEFAULT_MEMORY_LIMIT.into()),
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// `corridor:<this version>`.
pub fn default_image() -> String {
    format!("corridor:{VERSION}")
}

/// The port of Corridor's default admin address.
pub fn default_admin_port() -> u16 {
    corridor_config::DEFAULT_ADMIN_ADDRESS
        .parse::<std::net::SocketAddr>()
        .map_or(9901, |a| a.port())
}

/// Corridor's default `runtime.drain_timeout` (what an empty configuration compiles to).
pub fn default_drain_timeout() -> Duration {
    corridor_config::load_store_str("{}", "<defaults>").map_or(Duration::from_secs(10), |s| {
        s.snapshot().runtime.drain_timeout
    })
}

impl InjectArgs {
    /// The options these flags give, or which flag is wrong and why.
    pub fn options(&self) -> Result<InjectOptions, String> {
        let cp = self.control_plane.trim();
        let rest = cp
            .strip_prefix("http://")
            .or_else(|| cp.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(format!(
                "--control-plane {cp:?}: write it as a URL, http://HOST:PORT or https://HOST:PORT"
            ));
        }
        let quantity = |flag: &str, v: &str| -> Result<Option<String>, String> {
            if v == "none" {
                Ok(None)
            } else if is_quantity(v) {
                Ok(Some(v.to_string()))
            } else {
                Err(format!(
                    "--{flag} {v:?}: not a Kubernetes quantity (for example 100m, 0.5, 64Mi, 1Gi) or `none`"
                ))
            }
        };
        let text = |flag: &str, v: &Option<String>| -> Result<Option<String>, String> {
            match v {
                Some(s) if s.trim().is_empty() || s.contains(char::is_whitespace) => {
                    Err(format!("--{flag} {s:?}: must be a non-empty word"))
                }
                v => Ok(v.clone()),
            }
        };
        if let Some(s) = &self.cert_secret {
            if !is_dns_subdomain(s) {
                return Err(format!(
                    "--cert-secret {s:?}: not a Secret name (lowercase letters, digits, '-' and '.')"
                ));
            }
        }
        let image = self.image.clone();
        if image.trim().is_empty() || image.contains(char::is_whitespace) {
            return Err(format!("--image {image:?}: not an image reference"));
        }
        let admin_port = self.admin_port;
        if self.proxy_port == Some(admin_port) {
            return Err(format!(
                "--proxy-port {admin_port}: the admin listener uses that port"
            ));
        }
        Ok(InjectOptions {
            control_plane: cp.to_string(),
            image,
            cloud: text("cloud", &self.cloud)?,
            region: text("region", &self.region)?,
            zone: text("zone", &self.zone)?,
            admin_port,
            proxy_port: self.proxy_port,
            cert_secret: self.cert_secret.clone(),
            cpu_request: quantity("cpu-request", &self.cpu_request)?,
            memory_request: quantity("memory-request", &self.memory_request)?,
            cpu_limit: quantity("cpu-limit", &self.cpu_limit)?,
            memory_limit: quantity("memory-limit", &self.memory_limit)?,
            drain_timeout: default_drain_timeout(),
        })
    }
}

/// Runs `corridor inject`: the injected stream to stdout, a line per workload to stderr, nothing to stdout on errors.
pub fn run_inject(args: &InjectArgs) -> ExitCode {
    let fail = |msg: &str| {
        let _ = writeln!(std::io::stderr(), "corridor inject: {msg}");
        ExitCode::FAILURE
    };
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let (name, text) = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
            return fail(&format!("cannot read stdin: {e}"));
        }
        ("stdin".to_string(), String::from_utf8(buf))
    } else {
        match std::fs::read(&args.file) {
            Ok(b) => (args.file.display().to_string(), String::from_utf8(b)),
            Err(e) => return fail(&format!("cannot read {}: {e}", args.file.display())),
        }
    };
    let Ok(text) = text else {
        return fail(&format!("{name}: not UTF-8 text"));
    };
    let injected = match inject(&text, &opts) {
        Ok(i) => i,
        Err(e) => return fail(&format!("{name}: {e}")),
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(injected.yaml.as_bytes())
        .and_then(|()| stdout.flush())
    {
        return fail(&format!("cannot write the output: {e}"));
    }
    let mut stderr = std::io::stderr().lock();
    for note in &injected.notes {
        let _ = writeln!(stderr, "corridor inject: {note}");
    }
    ExitCode::SUCCESS
}

/// The result of [`inject`]: the stream to write and what happened to each workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// The YAML stream, documents separated by `---`.
    pub yaml: String,
    /// One line per workload: injected, already injected or disabled.
    pub notes: Vec<String>,
}

/// Why a stream could not be injected: which document and workload, where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectError {
    /// Document number in the stream, from 1.
    pub document: usize,
    /// `Kind/name` of the workload, when known.
    pub workload: Option<String>,
    /// Line and column (1-based) of the offending node, when known.
    pub location: Option<(usize, usize)>,
    /// Field path in the document, such as `spec.template.spec.containers`.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(w) = &self.workload {
            write!(f, " ({w})")?;
        }
        if let Some((line, column)) = self.location {
            write!(f, ", line {line} column {column}")?;
        }
        f.write_str(": ")?;
        if let Some(p) = &self.path {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for InjectError {}

/// Adds the sidecar to every workload of the YAML stream `input`.
pub fn inject(input: &str, opts: &InjectOptions) -> Result<Injected, InjectError> {
    let mut yaml = String::new();
    let mut notes = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let document = index + 1;
        let mut value = Load { input }.deserialize(doc).map_err(|e| {
            let message = format!("invalid YAML: {e}");
            InjectError {
                document,
                workload: None,
                // Syntax errors name their positions; others (duplicate keys) get one here.
                location: e
                    .location()
                    .filter(|_| !message.contains(" at line "))
                    .map(|l| (l.line(), l.column())),
                path: None,
                message,
            }
        })?;
        if value.is_null() {
            continue;
        }
        for (workload, outcome) in inject_document(&mut value, opts).map_err(|f| InjectError {
            document,
            workload: f.workload,
            location: locate(input, index, &f.path),
            path: (!f.path.is_empty()).then(|| show_path(&f.path)),
            message: f.message,
        })? {
            notes.push(format!("document {document}: {workload}: {outcome}"));
        }
        if !yaml.is_empty() {
            yaml.push_str("---\n");
        }
        write_document(&value, &mut yaml).map_err(|message| InjectError {
            document,
            workload: None,
            location: None,
            path: None,
            message,
        })?;
    }
    Ok(Injected { yaml, notes })
}

/// A step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Why a workload could not be injected.
#[derive(Debug)]
struct Fault {
    workload: Option<String>,
    path: Vec<Seg>,
    message: String,
}

/// What happened to one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Injected,
    AlreadyInjected,
    Disabled,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Injected => "injected",
            Outcome::AlreadyInjected => "already has corridor-proxy, left as it is",
            Outcome::Disabled => "corridor.dev/inject: disabled, left as it is",
        })
    }
}

/// Injects into a document (a workload, or a `List` of them); the workloads
/// found and what happened to each.
fn inject_document(doc: &mut Value, opts: &InjectOptions) -> Result<Vec<(String, Outcome)>, Fault> {
    let Value::Mapping(m) = doc else {
        return Ok(Vec::new());
    };
    let list_kind = str_field(m, "kind")
        .filter(|k| k.ends_with("List"))
        .map(str::to_string);
    if let Some(list_kind) = list_kind {
        let mut out = Vec::new();
        match m.get_mut("items") {
            None | Some(Value::Null) => {}
            Some(Value::Sequence(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let Value::Mapping(item) = item else { continue };
                    let base = vec![Seg::Key("items".into()), Seg::Index(i)];
                    out.extend(inject_object(item, base, opts)?);
                }
            }
            Some(other) => {
                return Err(Fault {
                    workload: Some(list_kind),
                    path: vec![Seg::Key("items".into())],
                    message: format!("expected a list, found {}", describe(other)),
                })
            }
        }
        return Ok(out);
    }
    Ok(inject_object(m, Vec::new(), opts)?.into_iter().collect())
}

/// Where the pod template of `kind` (in API group `group`, `None` when the
/// object has no apiVersion) sits, if it is a workload.
fn template_path(group: Option<&str>, kind: &str) -> Option<&'static [&'static str]> {
    let in_group = |groups: &[&str]| group.is_none_or(|g| groups.contains(&g));
    match kind {
        "Pod" if in_group(&[""]) => Some(&[]),
        "ReplicationController" if in_group(&[""]) => Some(&["spec", "template"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
            if in_group(&["apps", "extensions"]) =>
        {
            Some(&["spec", "template"])
        }
        "Job" if in_group(&["batch"]) => Some(&["spec", "template"]),
        "CronJob" if in_group(&["batch"]) => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects into one object if it is a workload (`base` is its path in the document).
fn inject_object(
    obj: &mut Mapping,
    base: Vec<Seg>,
    opts: &InjectOptions,
) -> Result<Option<(String, Outcome)>, Fault> {
    let Some(kind) = str_field(obj, "kind").map(str::to_string) else {
        return Ok(None);
    };
    let group = match obj.get("apiVersion") {
        Some(Value::String(v)) => Some(v.rsplit_once('/').map_or("", |(g, _)| g).to_string()),
        _ => None,
    };
    let Some(steps) = template_path(group.as_deref(), &kind) else {
        return Ok(None);
    };
    let name = match obj.get("metadata") {
        Some(Value::Mapping(meta)) => str_field(meta, "name").map(str::to_string),
        _ => None,
    };
    let workload = match name {
        Some(n) => format!("{kind}/{n}"),
        None => kind,
    };
    let fault = |path: Vec<Seg>, message: String| Fault {
        workload: Some(workload.clone()),
        path,
        message,
    };
    let mut path = base;
    let mut template = obj;
    for step in steps {
        path.push(Seg::Key((*step).to_string()));
        template = match template.get_mut(*step) {
            Some(Value::Mapping(m)) => m,
            None | Some(Value::Null) => {
                return Err(fault(
                    path,
                    "missing: a workload needs a pod template".into(),
                ))
            }
            Some(other) => {
                let found = describe(other);
                return Err(fault(path, format!("expected a mapping, found {found}")));
            }
        };
    }
    let outcome = inject_template(template, &path, opts).map_err(|(p, msg)| fault(p, msg))?;
    Ok(Some((workload, outcome)))
}

/// A problem at a path.
type PathError = (Vec<Seg>, String);

fn at(path: &[Seg], more: &[Seg]) -> Vec<Seg> {
    path.iter().chain(more).cloned().collect()
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// The mapping at `m[k]`: `None` when absent or null, an error when not a mapping.
fn opt_mapping<'a>(
    m: &'a Mapping,
    k: &str,
    path: &[Seg],
) -> Result<Option<&'a Mapping>, PathError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Mapping(v)) => Ok(Some(v)),
        Some(other) => Err((
            at(path, &[key(k)]),
            format!("expected a mapping, found {}", describe(other)),
        )),
    }
}

/// The list at `m[k]`: `None` when absent or null, an error when not a list.
fn opt_list<'a>(m: &'a Mapping, k: &str, path: &[Seg]) -> Result<Option<&'a [Value]>, PathError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Sequence(v)) => Ok(Some(v)),
        Some(other) => Err((
            at(path, &[key(k)]),
            format!("expected a list, found {}", describe(other)),
        )),
    }
}

/// The string at `m[k]`: `None` when absent or null, an error when not a string.
fn opt_string<'a>(m: &'a Mapping, k: &str, path: &[Seg]) -> Result<Option<&'a str>, PathError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err((
            at(path, &[key(k)]),
            format!("expected a string, found {}", describe(other)),
        )),
    }
}

fn str_field<'a>(m: &'a Mapping, k: &str) -> Option<&'a str> {
    match m.get(k) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// What a pod spec already has that the injection must respect.
struct PodFacts {
    injected: bool,
    volumes: Vec<String>,
    grace: Option<u64>,
    run_to_completion: bool,
}

/// Reads (and checks) the parts of a pod spec the injection touches.
fn pod_facts(spec: &Mapping, path: &[Seg], opts: &InjectOptions) -> Result<PodFacts, PathError> {
    let mut injected = false;
    let containers = match spec.get("containers") {
        Some(Value::Sequence(c)) => c.as_slice(),
        None | Some(Value::Null) => {
            return Err((
                at(path, &[key("containers")]),
                "missing: a pod needs a list of containers".into(),
            ))
        }
        Some(other) => {
            return Err((
                at(path, &[key("containers")]),
                format!("expected a list of containers, found {}", describe(other)),
            ))
        }
    };
    let inits = opt_list(spec, "initContainers", path)?.unwrap_or_default();
    let ports: Vec<(u16, &str)> = std::iter::once((opts.admin_port, "--admin-port"))
        .chain(opts.proxy_port.map(|p| (p, "--proxy-port")))
        .collect();
    let mut conflict = None;
    for (list, items) in [("containers", containers), ("initContainers", inits)] {
        for (i, c) in items.iter().enumerate() {
            let here = at(path, &[key(list), Seg::Index(i)]);
            let Value::Mapping(c) = c else {
                return Err((
                    here,
                    format!("expected a container (a mapping), found {}", describe(c)),
                ));
            };
            let name = opt_string(c, "name", &here)?;
            injected |= name == Some(SIDECAR_NAME);
            for (j, p) in opt_list(c, "ports", &here)?
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let port_path = at(&here, &[key("ports"), Seg::Index(j)]);
                let Value::Mapping(p) = p else {
                    return Err((
                        port_path,
                        format!("expected a port (a mapping), found {}", describe(p)),
                    ));
                };
                let number = p.get("containerPort").and_then(Value::as_u64);
                let taken = ports
                    .iter()
                    .find(|(port, _)| Some(u64::from(*port)) == number);
                if let (Some((port, flag)), None) = (taken, &conflict) {
                    conflict = Some((
                        at(&port_path, &[key("containerPort")]),
                        format!(
                            "port {port} is taken by container {:?}; choose another {flag}",
                            name.unwrap_or("?")
                        ),
                    ));
                }
            }
        }
    }
    if let (Some(c), false) = (conflict, injected) {
        return Err(c);
    }
    let mut volumes = Vec::new();
    for (i, v) in opt_list(spec, "volumes", path)?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let here = at(path, &[key("volumes"), Seg::Index(i)]);
        let Value::Mapping(v) = v else {
            return Err((
                here,
                format!("expected a volume (a mapping), found {}", describe(v)),
            ));
        };
        if let Some(n) = opt_string(v, "name", &here)? {
            volumes.push(n.to_string());
        }
    }
    let grace = match spec.get("terminationGracePeriodSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(g) => Some(g),
            None => {
                return Err((
                    at(path, &[key("terminationGracePeriodSeconds")]),
                    format!("expected a whole number of seconds, found {}", describe(v)),
                ))
            }
        },
    };
    let restart = opt_string(spec, "restartPolicy", path)?;
    Ok(PodFacts {
        injected,
        volumes,
        grace,
        run_to_completion: matches!(restart, Some("Never" | "OnFailure")),
    })
}

/// Node metadata: the flag, else the pod template's label.
struct Locality {
    cloud: Option<String>,
    region: Option<String>,
    zone: Option<String>,
}

/// Injects into a pod template (`metadata` and `spec`) at `path`.
fn inject_template(
    template: &mut Mapping,
    path: &[Seg],
    opts: &InjectOptions,
) -> Result<Outcome, PathError> {
    let meta_path = at(path, &[key("metadata")]);
    let meta = opt_mapping(template, "metadata", path)?;
    let annotations = match meta {
        Some(m) => opt_mapping(m, "annotations", &meta_path)?,
        None => None,
    };
    if annotations.and_then(|a| str_field(a, INJECT_ANNOTATION)) == Some("disabled") {
        return Ok(Outcome::Disabled);
    }
    let labels = match meta {
        Some(m) => opt_mapping(m, "labels", &meta_path)?,
        None => None,
    };
    let labels_path = at(&meta_path, &[key("labels")]);
    let label = |flag: &Option<String>, name: &str| -> Result<Option<String>, PathError> {
        if flag.is_some() {
            return Ok(flag.clone());
        }
        match labels {
            Some(l) => Ok(opt_string(l, name, &labels_path)?
                .filter(|v| !v.is_empty())
                .map(str::to_string)),
            None => Ok(None),
        }
    };
    let locality = Locality {
        cloud: label(&opts.cloud, "corridor.dev/cloud")?,
        region: label(&opts.region, "topology.kubernetes.io/region")?,
        zone: label(&opts.zone, "topology.kubernetes.io/zone")?,
    };
    let spec_path = at(path, &[key("spec")]);
    let facts = match opt_mapping(template, "spec", path)? {
        Some(spec) => pod_facts(spec, &spec_path, opts)?,
        None => return Err((spec_path, "missing: a pod template needs a spec".into())),
    };
    if facts.injected {
        return Ok(Outcome::AlreadyInjected);
    }

    // Checked; now change it.
    let meta = ensure_first_mapping(template, "metadata");
    ensure_mapping(meta, "annotations").insert(
        Value::String(INJECTED_ANNOTATION.into()),
        Value::String(VERSION.into()),
    );
    let spec = ensure_mapping(template, "spec");
    let certs = opts.cert_secret.is_some() || facts.volumes.iter().any(|v| v == CERTS_VOLUME);
    let mut sidecar = sidecar(opts, &locality, certs);
    let target = if facts.run_to_completion {
        if let Value::Mapping(c) = &mut sidecar {
            insert_after(c, "imagePullPolicy", "restartPolicy", s("Always"));
        }
        "initContainers"
    } else {
        "containers"
    };
    ensure_list(spec, target).push(sidecar);
    let volumes = ensure_list(spec, "volumes");
    if !facts.volumes.iter().any(|v| v == STATE_VOLUME) {
        volumes.push(map(vec![
            ("name", s(STATE_VOLUME)),
            (
                "emptyDir",
                map(vec![("medium", s("Memory")), ("sizeLimit", s("16Mi"))]),
            ),
        ]));
    }
    if let (Some(secret), false) = (
        &opts.cert_secret,
        facts.volumes.iter().any(|v| v == CERTS_VOLUME),
    ) {
        volumes.push(map(vec![
            ("name", s(CERTS_VOLUME)),
            ("secret", map(vec![("secretName", s(secret))])),
        ]));
    }
    let floor = opts.drain_timeout.as_secs() + GRACE_MARGIN_SECS;
    let grace = match facts.grace {
        None => Some(KUBERNETES_DEFAULT_GRACE_SECS.max(floor)),
        Some(g) if g < floor => Some(floor),
        Some(_) => None,
    };
    if let Some(g) = grace {
        spec.insert(s("terminationGracePeriodSeconds"), Value::Number(g.into()));
    }
    Ok(Outcome::Injected)
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// A mapping with these entries, in this order.
fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(s(k), v);
    }
    Value::Mapping(m)
}

fn list(items: Vec<Value>) -> Value {
    Value::Sequence(items)
}

/// `m[k]` as a mapping, created (at the end) when absent or null.
fn ensure_mapping<'a>(m: &'a mut Mapping, k: &str) -> &'a mut Mapping {
    let slot = m.entry(s(k)).or_insert(Value::Null);
    if !slot.is_mapping() {
        *slot = Value::Mapping(Mapping::new());
    }
    match slot {
        Value::Mapping(inner) => inner,
        _ => unreachable!("just made a mapping"),
    }
}

/// `m[k]` as a mapping, created as the first entry when absent or null.
fn ensure_first_mapping<'a>(m: &'a mut Mapping, k: &str) -> &'a mut Mapping {
    if !m.get(k).is_some_and(Value::is_mapping) {
        let old = std::mem::take(m);
        m.insert(s(k), Value::Mapping(Mapping::new()));
        for (ok, ov) in old {
            if ok.as_str() != Some(k) {
                m.insert(ok, ov);
            }
        }
    }
    ensure_mapping(m, k)
}

/// `m[k]` as a list, created (at the end) when absent or null.
fn ensure_list<'a>(m: &'a mut Mapping, k: &str) -> &'a mut Vec<Value> {
    let slot = m.entry(s(k)).or_insert(Value::Null);
    if !slot.is_sequence() {
        *slot = Value::Sequence(Vec::new());
    }
    match slot {
        Value::Sequence(inner) => inner,
        _ => unreachable!("just made a list"),
    }
}

/// Inserts `k: v` right after `after` (at the end when `after` is absent).
fn insert_after(m: &mut Mapping, after: &str, k: &str, v: Value) {
    let old = std::mem::take(m);
    let mut v = Some(v);
    for (ok, ov) in old {
        let here = ok.as_str() == Some(after);
        m.insert(ok, ov);
        if here {
            if let Some(v) = v.take() {
                m.insert(s(k), v);
            }
        }
    }
    if let Some(v) = v {
        m.insert(s(k), v);
    }
}

/// The sidecar container.
fn sidecar(opts: &InjectOptions, locality: &Locality, certs: bool) -> Value {
    let mut args = vec![
        "run".to_string(),
        "--xds".into(),
        opts.control_plane.clone(),
        "--node-id".into(),
        "$(POD_NAME).$(POD_NAMESPACE)".into(),
        "--role".into(),
        "sidecar".into(),
    ];
    for (flag, v) in [
        ("--cloud", &locality.cloud),
        ("--region", &locality.region),
        ("--zone", &locality.zone),
    ] {
        if let Some(v) = v {
            args.extend([flag.to_string(), v.clone()]);
        }
    }
    args.extend([
        "--admin".into(),
        format!("0.0.0.0:{}", opts.admin_port),
        "--persist".into(),
        format!("{STATE_DIR}/pushed.pb"),
    ]);
    if certs && opts.control_plane.starts_with("https://") {
        for (flag, file) in [
            ("--xds-ca-file", "ca.crt"),
            ("--xds-cert-file", "tls.crt"),
            ("--xds-key-file", "tls.key"),
        ] {
            args.extend([flag.to_string(), format!("{CERT_DIR}/{file}")]);
        }
    }
    let env = |name: &str, field: &str| {
        map(vec![
            ("name", s(name)),
            (
                "valueFrom",
                map(vec![("fieldRef", map(vec![("fieldPath", s(field))]))]),
            ),
        ])
    };
    let port = |name: &str, number: u16| {
        map(vec![
            ("name", s(name)),
            ("containerPort", Value::Number(number.into())),
            ("protocol", s("TCP")),
        ])
    };
    let mut ports = vec![port(ADMIN_PORT_NAME, opts.admin_port)];
    if let Some(p) = opts.proxy_port {
        ports.push(port(PROXY_PORT_NAME, p));
    }
    let probe = |path: &str, period: u64| {
        map(vec![
            (
                "httpGet",
                map(vec![("path", s(path)), ("port", s(ADMIN_PORT_NAME))]),
            ),
            ("periodSeconds", Value::Number(period.into())),
        ])
    };
    let quantities = |cpu: &Option<String>, memory: &Option<String>| {
        let mut m = Mapping::new();
        for (k, v) in [("cpu", cpu), ("memory", memory)] {
            if let Some(v) = v {
                m.insert(s(k), s(v));
            }
        }
        m
    };
    let mut resources = Mapping::new();
    for (k, q) in [
        (
            "requests",
            quantities(&opts.cpu_request, &opts.memory_request),
        ),
        ("limits", quantities(&opts.cpu_limit, &opts.memory_limit)),
    ] {
        if !q.is_empty() {
            resources.insert(s(k), Value::Mapping(q));
        }
    }
    let mut mounts = vec![map(vec![
        ("name", s(STATE_VOLUME)),
        ("mountPath", s(STATE_DIR)),
    ])];
    if certs {
        mounts.push(map(vec![
            ("name", s(CERTS_VOLUME)),
            ("mountPath", s(CERT_DIR)),
            ("readOnly", Value::Bool(true)),
        ]));
    }
    let mut c = vec![
        ("name", s(SIDECAR_NAME)),
        ("image", s(&opts.image)),
        ("imagePullPolicy", s("IfNotPresent")),
        ("command", list(vec![s("corridor")])),
        ("args", list(args.into_iter().map(Value::String).collect())),
        (
            "env",
            list(vec![
                env("POD_NAME", "metadata.name"),
                env("POD_NAMESPACE", "metadata.namespace"),
                env("NODE_NAME", "spec.nodeName"),
            ]),
        ),
        ("ports", list(ports)),
        ("readinessProbe", probe("/ready", 5)),
        ("livenessProbe", probe("/live", 10)),
    ];
    if !resources.is_empty() {
        c.push(("resources", Value::Mapping(resources)));
    }
    c.push((
        "securityContext",
        map(vec![
            ("runAsNonRoot", Value::Bool(true)),
            ("runAsUser", Value::Number(RUN_AS.into())),
            ("runAsGroup", Value::Number(RUN_AS.into())),
            ("readOnlyRootFilesystem", Value::Bool(true)),
            ("allowPrivilegeEscalation", Value::Bool(false)),
            ("capabilities", map(vec![("drop", list(vec![s("ALL")]))])),
            ("seccompProfile", map(vec![("type", s("RuntimeDefault"))])),
        ]),
    ));
    c.push(("volumeMounts", list(mounts)));
    map(c)
}

/// `value` described for an error message.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({s:?})"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// A field path as `spec.template.spec.containers[0]`, keys that are not
/// plain words quoted: `metadata.labels["topology.kubernetes.io/zone"]`.
fn show_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k)
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Key(k) => out.push_str(&format!("[{k:?}]")),
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Reading: serde_yaml's parser, with plain scalars resolved as Kubernetes
// (YAML 1.1) reads them.

/// Builds a `Value` like serde_yaml's own, except that a plain scalar YAML 1.2
/// leaves a string but YAML 1.1 reads as a boolean or a number (`yes`, `off`,
/// `0644`, `1_000`) becomes that boolean or number, which is what Kubernetes
/// (sigs.k8s.io/yaml, YAML 1.1) makes of it.
struct Load<'i> {
    input: &'i str,
}

impl<'i> Load<'i> {
    /// Whether `s`, borrowed from the input, was written as a plain scalar: a
    /// quoted scalar borrowed from the input sits right after its opening quote.
    /// Strings not borrowed from the input (escaped, folded, block) are not plain.
    fn is_plain(&self, s: &str) -> bool {
        let base = self.input.as_ptr() as usize;
        let at = s.as_ptr() as usize;
        if at < base || at + s.len() > base + self.input.len() {
            return false;
        }
        let offset = at - base;
        offset == 0 || !matches!(self.input.as_bytes().get(offset - 1), Some(b'\'' | b'"'))
    }
}

impl<'de> DeserializeSeed<'de> for Load<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Load<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value, E> {
        if self.is_plain(v) {
            if let Some(resolved) = yaml11_plain(v) {
                return Ok(resolved);
            }
        }
        Ok(Value::String(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Load { input: self.input })? {
            out.push(v);
        }
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let mut out = Mapping::new();
        while let Some(k) = m.next_key_seed(Load { input: self.input })? {
            if out.contains_key(&k) {
                let shown = match &k {
                    Value::String(s) => format!("{s:?}"),
                    other => describe(other),
                };
                return Err(de::Error::custom(format!(
                    "duplicate key {shown} in the mapping"
                )));
            }
            let v = m.next_value_seed(Load { input: self.input })?;
            out.insert(k, v);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess as _;
        let (tag, contents) = data.variant_seed(TagSeed)?;
        let value = contents.newtype_variant_seed(Load { input: self.input })?;
        Ok(Value::Tagged(Box::new(TaggedValue { tag, value })))
    }
}

/// A YAML tag (serde_yaml hands tagged nodes over as enum variants).
struct TagSeed;

impl<'de> DeserializeSeed<'de> for TagSeed {
    type Value = Tag;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Tag, D::Error> {
        d.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for TagSeed {
    type Value = Tag;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML tag")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Tag, E> {
        if v.is_empty() {
            return Err(E::custom("empty YAML tag"));
        }
        Ok(Tag::new(v))
    }
}

/// What YAML 1.1 (as Kubernetes' go-yaml resolves it) makes of a plain
/// scalar that YAML 1.2 leaves a string: a boolean (`yes`, `no`, `on`, `off`,
/// `y`, `n`), an integer (`0644` octal, `1_000`, `0b101`) or a float (`1_0.5`).
fn yaml11_plain(s: &str) -> Option<Value> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Some(Value::Bool(true)),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Some(Value::Bool(false)),
        _ => {}
    }
    let first = *s.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
        return None;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    if let Some(n) = go_parse_int(&plain) {
        return Some(Value::Number(n));
    }
    if is_yaml11_float(&plain) {
        return plain.parse::<f64>().ok().map(|f| Value::Number(f.into()));
    }
    None
}

/// Go's `strconv.ParseInt(s, 0, 64)` (then `ParseUint` for large values):
/// optional sign, then `0x`, `0o`, `0b` or a leading `0` (octal) or decimal.
fn go_parse_int(s: &str) -> Option<serde_yaml::Number> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(b) = lower.strip_prefix("0x") {
        (16, b)
    } else if let Some(b) = lower.strip_prefix("0o") {
        (8, b)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    if negative {
        let n = i64::try_from(magnitude)
            .ok()
            .map(|m| -m)
            .or_else(|| (magnitude == 1 << 63).then_some(i64::MIN))?;
        Some(n.into())
    } else {
        Some(magnitude.into())
    }
}

/// go-yaml's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml11_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

// ---------------------------------------------------------------------------
// Locating a field path in the input, for error messages.

/// Line and column (1-based) where the node at `path` of document `index`
/// (0-based) starts, or its deepest existing ancestor when it is missing.
fn locate(input: &str, index: usize, path: &[Seg]) -> Option<(usize, usize)> {
    let doc = serde_yaml::Deserializer::from_str(input).nth(index)?;
    match (Find { path }).deserialize(doc) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| (l.line(), l.column())),
    }
}

/// Walks `path` and fails on the node it leads to (or where it stops), so that
/// serde_yaml's error carries that node's position.
struct Find<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the node")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom("here"));
        };
        while let Some(k) = m.next_key::<Value>()? {
            if k.as_str() == Some(want.as_str()) {
                return m.next_value_seed(Find { path: rest });
            }
            m.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("here"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom("here"));
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("here"));
            }
        }
        match seq.next_element_seed(Find { path: rest })? {
            Some(()) => Ok(()),
            None => Err(de::Error::custom("here")),
        }
    }
}

// ---------------------------------------------------------------------------
// Writing: block YAML that both YAML 1.2 and Kubernetes' YAML 1.1 read back
// as the same value.

/// Appends `value` as one YAML document.
fn write_document(value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Mapping(m) if !m.is_empty() => write_mapping(m, 0, false, out),
        Value::Sequence(v) if !v.is_empty() => write_sequence(v, 0, false, out),
        Value::Tagged(t) => {
            out.push_str(&t.tag.to_string());
            write_after_indicator(&t.value, 0, 2, out)
        }
        scalar => write_scalar(scalar, 2, out),
    }
}

/// Writes the entries of a non-empty mapping at `indent`; with `inline` the
/// first entry goes on the current line (after `- `).
fn write_mapping(m: &Mapping, indent: usize, inline: bool, out: &mut String) -> Result<(), String> {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !inline {
            push_indent(out, indent);
        }
        write_key(k, out)?;
        out.push(':');
        match v {
            Value::Mapping(inner) if !inner.is_empty() => {
                out.push('\n');
                write_mapping(inner, indent + 2, false, out)?;
            }
            Value::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                write_sequence(items, indent, false, out)?;
            }
            Value::Tagged(t) => {
                out.push(' ');
                out.push_str(&t.tag.to_string());
                write_after_indicator(&t.value, indent + 2, indent + 2, out)?;
            }
            scalar => {
                out.push(' ');
                write_scalar(scalar, indent + 2, out)?;
            }
        }
    }
    Ok(())
}

/// Writes the items of a non-empty list at `indent`; with `inline` the first
/// item goes on the current line.
fn write_sequence(
    items: &[Value],
    indent: usize,
    inline: bool,
    out: &mut String,
) -> Result<(), String> {
    for (i, v) in items.iter().enumerate() {
        if i > 0 || !inline {
            push_indent(out, indent);
        }
        out.push_str("- ");
        match v {
            Value::Mapping(inner) if !inner.is_empty() => {
                write_mapping(inner, indent + 2, true, out)?
            }
            Value::Sequence(inner) if !inner.is_empty() => {
                write_sequence(inner, indent + 2, true, out)?
            }
            Value::Tagged(t) => {
                out.push_str(&t.tag.to_string());
                write_after_indicator(&t.value, indent + 2, indent + 2, out)?;
            }
            scalar => write_scalar(scalar, indent + 2, out)?,
        }
    }
    Ok(())
}

/// Writes a tagged node's content after its tag: a collection on the next
/// lines at `indent`, anything else on the same line (a literal block
/// indented by `block_indent`).
fn write_after_indicator(
    v: &Value,
    indent: usize,
    block_indent: usize,
    out: &mut String,
) -> Result<(), String> {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            write_mapping(m, indent, false, out)
        }
        Value::Sequence(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(items, indent, false, out)
        }
        scalar @ Value::Tagged(_) => write_scalar(scalar, block_indent, out),
        scalar => {
            out.push(' ');
            write_scalar(scalar, block_indent, out)
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Writes a mapping key (a scalar, on one line).
fn write_key(k: &Value, out: &mut String) -> Result<(), String> {
    match k {
        Value::String(s) if s == "<<" || plain_ok(s) => out.push_str(s),
        Value::String(s) => double_quoted(s, out),
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        other => {
            return Err(format!(
                "a mapping key that is {} cannot be written",
                describe(other)
            ))
        }
    }
    Ok(())
}

/// Writes a scalar (or an empty collection) and ends the line; a multi-line
/// string becomes a literal block indented by `block_indent`.
fn write_scalar(v: &Value, block_indent: usize, out: &mut String) -> Result<(), String> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) if literal_ok(s) => {
            literal(s, block_indent, out);
            return Ok(());
        }
        Value::String(s) if plain_ok(s) => out.push_str(s),
        Value::String(s) => double_quoted(s, out),
        Value::Sequence(_) => out.push_str("[]"),
        Value::Mapping(_) => out.push_str("{}"),
        // Tagged values are written by their containers (one tag per node).
        Value::Tagged(_) => {
            return Err("a tagged value inside a tagged value cannot be written".into())
        }
    }
    out.push('\n');
    Ok(())
}

/// Characters a YAML document may hold as they are (YAML's printable set,
/// without the byte order mark and the line separators YAML 1.1 breaks on).
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// Whether `s` can be written as it is: YAML 1.2 reads it back as this string
/// as a key and as a value, and YAML 1.1 does not read it as a boolean,
/// number, timestamp or merge key.
fn plain_ok(s: &str) -> bool {
    if s.is_empty()
        || s.contains('\t')
        || !s.chars().all(printable)
        || s == "<<"
        || s.starts_with("---")
        || s.starts_with("...")
        || yaml11_plain(s).is_some()
        || timestamp_like(s)
    {
        return false;
    }
    let probe = format!("{s}: {s}\n");
    match serde_yaml::from_str::<Value>(&probe) {
        Ok(Value::Mapping(m)) => {
            m.len() == 1
                && m.iter()
                    .all(|(k, v)| k.as_str() == Some(s) && v.as_str() == Some(s))
        }
        _ => false,
    }
}

/// go-yaml reads a plain `YYYY-...` as a timestamp; YAML 1.1 also has
/// base-60 numbers (`1:20` is 80 to PyYAML, though not to go-yaml).
fn timestamp_like(s: &str) -> bool {
    let b = s.as_bytes();
    let timestamp = b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-';
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let mut parts = unsigned.split(':');
    let head = parts.next().unwrap_or_default();
    let mut tail: Vec<&str> = parts.collect();
    if let Some(last) = tail.last_mut() {
        if let Some((whole, fraction)) = last.split_once('.') {
            if fraction.chars().all(|c| c.is_ascii_digit() || c == '_') {
                *last = whole;
            }
        }
    }
    let sexagesimal = !tail.is_empty()
        && head.starts_with(|c: char| c.is_ascii_digit())
        && head.chars().all(|c| c.is_ascii_digit() || c == '_')
        && tail.iter().all(|p| {
            matches!(p.as_bytes(), [d] if d.is_ascii_digit())
                || matches!(p.as_bytes(), [b'0'..=b'5', d] if d.is_ascii_digit())
        });
    timestamp || sexagesimal
}

/// Whether `s` (several lines) can be a literal block: printable, starting
/// with neither a space nor a line break (the block's indentation is read from
/// its first line), without carriage returns.
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\t', '\n'])
        && s.chars().all(|c| c == '\n' || printable(c))
}

/// Writes `s` as a literal block (`|`, `|-` or `|+`) indented by `indent`.
fn literal(s: &str, indent: usize, out: &mut String) {
    let body = match s.strip_suffix('\n') {
        None => {
            out.push_str("|-\n");
            s
        }
        Some(b) if b.ends_with('\n') => {
            out.push_str("|+\n");
            b
        }
        Some(b) => {
            out.push_str("|\n");
            b
        }
    };
    for line in body.split('\n') {
        if !line.is_empty() {
            push_indent(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// Writes `s` double-quoted, escaping what is not printable.
fn double_quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push_str(&format!("\\u{:04X}", c as u32)),
        }
    }
    out.push('"');
}

/// Whether `v` is a Kubernetes quantity (`100m`, `0.5`, `64Mi`, `1e3`).
fn is_quantity(v: &str) -> bool {
    let number_end = v
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && matches!(c, '+' | '-'))))
        .map_or(v.len(), |(i, _)| i);
    let (number, suffix) = v.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return false;
    }
    let exponent = |e: &str| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    };
    matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(exponent)
}

/// Whether `v` is a DNS-1123 subdomain (a Secret's name).
fn is_dns_subdomain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opts() -> InjectOptions {
        InjectOptions::default()
    }

    /// Reads one document the way `inject` does.
    fn load(text: &str) -> Value {
        let doc = serde_yaml::Deserializer::from_str(text)
            .next()
            .expect("a document");
        Load { input: text }.deserialize(doc).expect("valid YAML")
    }

    fn write(v: &Value) -> String {
        let mut out = String::new();
        write_document(v, &mut out).expect("writable");
        out
    }

    fn out(text: &str) -> String {
        inject(text, &opts()).expect("injects").yaml
    }

    fn err(text: &str) -> InjectError {
        inject(text, &opts()).expect_err("fails")
    }

    const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
      - name: app
        image: app:1
";

    #[test]
    fn defaults_come_from_corridor_itself() {
        assert_eq!(default_admin_port(), 9901);
        assert_eq!(default_drain_timeout(), Duration::from_secs(10));
        assert_eq!(default_image(), format!("corridor:{VERSION}"));
    }

    #[test]
    fn plain_scalars_are_read_as_kubernetes_reads_them() {
        let v = load("a: 0644\nb: '0644'\nc: \"0644\"\nd: yes\ne: \"yes\"\nf: 1_000\ng: off\nh: 08\ni: 0x1F\nj: 0b101\nk: -0644\nl: 0.5\n");
        let m = v.as_mapping().unwrap();
        assert_eq!(m["a"], Value::Number(0o644.into()));
        assert_eq!(m["b"], s("0644"));
        assert_eq!(m["c"], s("0644"));
        assert_eq!(m["d"], Value::Bool(true));
        assert_eq!(m["e"], s("yes"));
        assert_eq!(m["f"], Value::Number(1000.into()));
        assert_eq!(m["g"], Value::Bool(false));
        assert_eq!(m["h"], Value::Number(8.0.into()));
        assert_eq!(m["i"], Value::Number(31.into()));
        assert_eq!(m["j"], Value::Number(5.into()));
        assert_eq!(m["k"], Value::Number((-0o644).into()));
        assert_eq!(m["l"], Value::Number(0.5.into()));
    }

    #[test]
    fn go_integers() {
        let n = |s: &str| go_parse_int(s).map(|n| n.to_string());
        assert_eq!(n("0"), Some("0".into()));
        assert_eq!(n("0755"), Some("493".into()));
        assert_eq!(n("-0x10"), Some("-16".into()));
        assert_eq!(n("+0o17"), Some("15".into()));
        assert_eq!(
            n("18446744073709551615"),
            Some("18446744073709551615".into())
        );
        assert_eq!(
            n("-9223372036854775808"),
            Some("-9223372036854775808".into())
        );
        assert_eq!(n("-9223372036854775809"), None);
        assert_eq!(n("08"), None);
        assert_eq!(n("0x"), None);
        assert_eq!(n("1.5"), None);
        assert!(is_yaml11_float("08"));
        assert!(is_yaml11_float("-.5e+3"));
        assert!(!is_yaml11_float("1.2.3"));
        assert!(!is_yaml11_float("1e"));
    }

    #[test]
    fn strings_that_read_as_something_else_are_quoted() {
        for quoted in [
            "",
            "yes",
            "No",
            "on",
            "y",
            "true",
            "null",
            "~",
            "1",
            "0644",
            "1.0",
            "1e3",
            "1_000",
            ".inf",
            "2024-01-01",
            "a: b",
            "#x",
            "a #x",
            "-",
            "- a",
            "*/5 * * * *",
            "&a",
            "!x",
            "|",
            ">",
            "%x",
            "@x",
            "`x",
            "'x",
            "\"x",
            " x",
            "x ",
            "[x",
            "{x",
            "<<",
            "---",
            "a:",
            "tab\there",
            "bell\u{7}",
            "bom\u{feff}",
            "1:20",
            "-1:20:30.5",
            "190:20:30",
        ] {
            assert!(!plain_ok(quoted), "{quoted:?} must be quoted");
        }
        for plain in [
            "web",
            "--port=8080",
            "-v",
            "100m",
            "64Mi",
            "ghcr.io/acme/web:1.4.2",
            "$(POD_NAME).$(POD_NAMESPACE)",
            "http://x:18000",
            "0.1.0",
            "a,b",
            "a[0]",
            "x?y",
            "топология",
            "key=value",
            "a:b",
            "8080:80",
            "0.0.0.0:18000",
            "1:2:3:4:5:6:7:8a",
        ] {
            assert!(plain_ok(plain), "{plain:?} may be plain");
        }
    }

    #[test]
    fn writing_keeps_order_and_reads_back() {
        let text =
            "z: 1\na:\n  c: [x, \"yes\", 0644, '08']\n  b: {}\nm: |\n  line 1\n   line 2\n\n";
        let v = load(text);
        let written = write(&v);
        assert_eq!(
            written,
            "z: 1\na:\n  c:\n  - x\n  - \"yes\"\n  - 420\n  - \"08\"\n  b: {}\nm: |\n  line 1\n   line 2\n"
        );
        assert_eq!(load(&written), v);
        assert_eq!(write(&load(&written)), written);
    }

    #[test]
    fn literal_blocks_keep_their_line_breaks() {
        for s in [
            "a\nb",
            "a\nb\n",
            "a\nb\n\n\n",
            "a\n\n b\n",
            "a\n\tb",
            "x: y\n# not a comment\n",
        ] {
            let v = map(vec![("k", Value::String(s.into()))]);
            let w = write(&v);
            assert!(w.starts_with("k: |"), "{w}");
            assert_eq!(load(&w), v, "{w}");
        }
        // A first line that starts with a space cannot set the block's indentation.
        let v = map(vec![("k", s(" a\nb"))]);
        assert_eq!(write(&v), "k: \" a\\nb\"\n");
    }

    #[test]
    fn tagged_values_and_odd_keys_round_trip() {
        let text = "a: !custom x\nb: !list\n  - 1\nc: !map\n  k: v\n1: one\ntrue: t\nnull: n\n\"a b\": c\n";
        let v = load(text);
        let w = write(&v);
        assert_eq!(load(&w), v, "{w}");
        assert_eq!(write(&load(&w)), w);
        let complex = load("? [a]\n: b\n");
        let mut sink = String::new();
        assert!(write_document(&complex, &mut sink).is_err());
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "a", "Z", "0", "7", "9", " ", "  ", "\n", "\t", ":", ": ", "#", " #", "-", "- ",
                "?", ",", "[", "]", "{", "}", "&", "*", "!", "|", ">", "'", "\"", "%", "@", "`",
                "\\", ".", "_", "+", "e", "x", "yes", "no", "on", "null", "~", "true", "0644",
                "<<", "---", "...", "é", "\u{85}", "\u{2028}", "\u{feff}", "\u{1}", "\r", "2024-",
                "0x", "0b", "0o",
            ]),
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            arb_string().prop_map(Value::String),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<u64>().prop_map(|n| Value::Number(n.into())),
            (-1e6f64..1e6).prop_map(|f| Value::Number(f.into())),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
                prop::collection::vec((arb_string(), inner.clone()), 0..5).prop_map(|entries| {
                    let mut m = Mapping::new();
                    for (k, v) in entries {
                        m.insert(Value::String(k), v);
                    }
                    Value::Mapping(m)
                }),
                inner.prop_map(|v| Value::Tagged(Box::new(TaggedValue {
                    tag: Tag::new("!t"),
                    value: v,
                }))),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever is written reads back as the same value, and writing that
        /// again gives the same bytes (what makes injection idempotent).
        #[test]
        fn written_documents_read_back_unchanged(v in arb_value()) {
            let mut w = String::new();
            if write_document(&v, &mut w).is_ok() {
                let doc = serde_yaml::Deserializer::from_str(&w).next().expect("a document");
                let back = Load { input: &w }.deserialize(doc);
                prop_assert!(back.is_ok(), "{:?} wrote\n{}\nwhich does not read: {:?}", v, w, back);
                let back = back.unwrap();
                prop_assert_eq!(&back, &v, "written as\n{}", w);
                prop_assert_eq!(write(&back), w);
            }
        }
    }

    #[test]
    fn injects_once_and_then_leaves_it() {
        let first = out(DEPLOYMENT);
        assert!(first.contains("- name: corridor-proxy\n"), "{first}");
        assert!(
            first.contains("    metadata:\n      annotations:\n        corridor.dev/injected: "),
            "{first}"
        );
        assert_eq!(out(&first), first);
        let notes = inject(&first, &opts()).unwrap().notes;
        assert_eq!(
            notes,
            ["document 1: Deployment/web: already has corridor-proxy, left as it is"]
        );
    }

    #[test]
    fn opt_out_and_other_kinds_pass_through() {
        let disabled = DEPLOYMENT.replace(
            "  template:\n",
            "  template:\n    metadata:\n      annotations:\n        corridor.dev/inject: disabled\n",
        );
        let r = inject(&disabled, &opts()).unwrap();
        assert!(!r.yaml.contains("corridor-proxy"), "{}", r.yaml);
        assert_eq!(
            r.notes,
            ["document 1: Deployment/web: corridor.dev/inject: disabled, left as it is"]
        );
        // Not apps/v1: someone else's Deployment.
        let other = DEPLOYMENT.replace("apps/v1", "example.com/v1");
        assert_eq!(out(&other), write(&load(&other)));
        assert!(inject(&other, &opts()).unwrap().notes.is_empty());
    }

    #[test]
    fn grace_period_is_raised_never_lowered() {
        let with = |g: &str| {
            out(&DEPLOYMENT.replace(
                "      containers:",
                &format!("      terminationGracePeriodSeconds: {g}\n      containers:"),
            ))
        };
        assert!(out(DEPLOYMENT).contains("terminationGracePeriodSeconds: 30\n"));
        assert!(with("5").contains("terminationGracePeriodSeconds: 15\n"));
        assert!(with("15").contains("terminationGracePeriodSeconds: 15\n"));
        assert!(with("120").contains("terminationGracePeriodSeconds: 120\n"));
        assert!(with("null").contains("terminationGracePeriodSeconds: 30\n"));
        let e = inject(
            &DEPLOYMENT.replace(
                "      containers:",
                "      terminationGracePeriodSeconds: soon\n      containers:",
            ),
            &opts(),
        )
        .unwrap_err();
        assert_eq!(
            e.path.as_deref(),
            Some("spec.template.spec.terminationGracePeriodSeconds")
        );
    }

    #[test]
    fn pods_that_complete_get_a_native_sidecar() {
        let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: task, image: t}]\n";
        let v = load(&out(job));
        let spec = &v["spec"]["template"]["spec"];
        assert_eq!(spec["containers"].as_sequence().unwrap().len(), 1);
        let init = spec["initContainers"].as_sequence().unwrap();
        assert_eq!(init[0]["name"], s(SIDECAR_NAME));
        assert_eq!(init[0]["restartPolicy"], s("Always"));
        let keys: Vec<_> = init[0]
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(Value::as_str)
            .take(4)
            .collect();
        assert_eq!(keys, ["name", "image", "imagePullPolicy", "restartPolicy"]);
    }

    #[test]
    fn locality_flags_win_over_labels() {
        let labelled = DEPLOYMENT.replace(
            "  template:\n",
            "  template:\n    metadata:\n      labels:\n        corridor.dev/cloud: oci\n        topology.kubernetes.io/zone: z1\n        topology.kubernetes.io/region: ''\n",
        );
        let args = |o: &InjectOptions| -> Vec<String> {
            let v = load(&inject(&labelled, o).unwrap().yaml);
            v["spec"]["template"]["spec"]["containers"][1]["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        };
        let a = args(&opts()).join(" ");
        assert!(a.contains("--cloud oci --zone z1 --admin"), "{a}");
        let o = InjectOptions {
            cloud: Some("aws".into()),
            region: Some("eu-west-1".into()),
            ..opts()
        };
        let a = args(&o).join(" ");
        assert!(
            a.contains("--cloud aws --region eu-west-1 --zone z1 --admin"),
            "{a}"
        );
    }

    #[test]
    fn certificates_are_mounted_and_used_for_an_https_control_plane() {
        let o = InjectOptions {
            cert_secret: Some("web-certs".into()),
            control_plane: "https://cp:18000".into(),
            ..opts()
        };
        let v = load(&inject(DEPLOYMENT, &o).unwrap().yaml);
        let spec = &v["spec"]["template"]["spec"];
        assert_eq!(spec["volumes"][1]["secret"]["secretName"], s("web-certs"));
        let c = &spec["containers"][1];
        assert_eq!(c["volumeMounts"][1]["mountPath"], s(CERT_DIR));
        assert_eq!(c["volumeMounts"][1]["readOnly"], Value::Bool(true));
        let args = write(&c["args"]);
        assert!(
            args.contains("- --xds-cert-file\n- /etc/corridor/certs/tls.crt\n"),
            "{args}"
        );
        // A pod's own corridor-certs volume (a CSI driver, say) is mounted as it is.
        let own = DEPLOYMENT.to_string() + "      volumes:\n      - name: corridor-certs\n        csi: {driver: csi.spiffe.io, readOnly: true}\n";
        let v = load(&out(&own));
        let spec = &v["spec"]["template"]["spec"];
        assert_eq!(spec["volumes"].as_sequence().unwrap().len(), 2);
        assert_eq!(
            spec["containers"][1]["volumeMounts"][1]["name"],
            s(CERTS_VOLUME)
        );
        assert!(!write(&spec["containers"][1]["args"]).contains("--xds-ca-file"));
    }

    #[test]
    fn errors_name_document_workload_line_and_field() {
        let stream = format!(
            "kind: Service\napiVersion: v1\n---\n{}",
            DEPLOYMENT.replace(
                "      - name: app\n        image: app:1\n",
                "        name: app\n"
            )
        );
        let e = err(&stream);
        assert_eq!(e.document, 2);
        assert_eq!(e.workload.as_deref(), Some("Deployment/web"));
        assert_eq!(e.path.as_deref(), Some("spec.template.spec.containers"));
        assert_eq!(e.location, Some((12, 9)));
        assert_eq!(
            e.to_string(),
            "document 2 (Deployment/web), line 12 column 9: spec.template.spec.containers: expected a list of containers, found a mapping"
        );
        let e = err("a: 1\n---\nb: [1\n");
        assert_eq!(e.document, 2);
        assert!(
            e.to_string().starts_with("document 2: invalid YAML: "),
            "{e}"
        );
        assert!(e.to_string().contains("line 4"), "{e}");
        let e = err("a: 1\na: 2\n");
        assert_eq!(
            e.to_string(),
            "document 1, line 1 column 1: invalid YAML: duplicate key \"a\" in the mapping"
        );
        let e = err("kind: List\nitems:\n- kind: Pod\n  apiVersion: v1\n  metadata: {name: p}\n  spec: {containers: [{name: a, ports: [{containerPort: 9901}]}]}\n");
        assert_eq!(
            e.path.as_deref(),
            Some("items[0].spec.containers[0].ports[0].containerPort")
        );
        assert!(e.message.contains("choose another --admin-port"), "{e}");
        assert_eq!(
            show_path(&[key("metadata"), key("labels"), key("a.b/c")]),
            "metadata.labels[\"a.b/c\"]"
        );
    }

    #[test]
    fn flags_are_checked() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: InjectArgs,
        }
        let parse = |a: &[&str]| {
            let argv = ["inject", "-f", "x.yaml"].iter().chain(a).copied();
            Cli::try_parse_from(argv)
                .map_err(|e| e.to_string())?
                .args
                .options()
        };
        let o = parse(&[]).unwrap();
        assert_eq!(o.control_plane, DEFAULT_CONTROL_PLANE);
        assert_eq!(o.cpu_limit.as_deref(), Some("1"));
        assert!(parse(&["--cpu-limit", "none"]).unwrap().cpu_limit.is_none());
        for bad in [
            &["--control-plane", "cp:18000"][..],
            &["--memory-limit", "lots"],
            &["--cert-secret", "Web_Certs"],
            &["--proxy-port", "9901"],
            &["--admin-port", "0"],
            &["--zone", ""],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        for q in ["100m", "0.5", "1", "64Mi", "1e3", "+1.5Gi", ".5"] {
            assert!(is_quantity(q), "{q}");
        }
    }
}
