//! The `corridor` command line: run a configuration file, run the embedded
//! demo, validate files, or inject the sidecar into Kubernetes manifests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corridor_proxy::{
    demo_config, init_logging, print_banner, start_upstreams, DemoOptions, Shared,
};

const EXAMPLES: &str = "\
Examples:
  corridor demo                                # proxy + three fake clouds, prints curl commands
  corridor run -c examples/demo.yaml           # serve a file; reloads on change and on SIGHUP
  corridor control-plane --dir examples/control-plane --listen 127.0.0.1:18000
  corridor run --xds http://127.0.0.1:18000 --node-id sidecar-1 --cloud aws --region eu-west-1
  corridor validate examples/*.yaml            # check files, print every error with file:line:column
  corridor validate --resources examples/control-plane/*.yaml   # check control-plane resource files
  corridor inject -f deploy.yaml | kubectl apply -f -   # add the Corridor sidecar to Kubernetes workloads
  kill -TERM <pid>                             # drain in-flight requests (runtime.drain_timeout), then exit";

/// Corridor: an L7 data-plane proxy for AI inference across clouds.
#[derive(Parser)]
#[command(
    name = "corridor",
    version,
    about = "Corridor: an L7 data-plane proxy for AI inference across clouds",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration file (YAML or JSON; reloaded when it changes or on
    /// SIGHUP), a control stream, or both (the file's resources and the pushed ones).
    Run {
        /// Configuration file.
        #[arg(short, long, value_name = "FILE", required_unless_present = "xds")]
        config: Option<PathBuf>,
        #[command(flatten)]
        xds: XdsArgs,
    },
    /// Run the reference control plane: serve a directory of resource files
    /// over ADS (state of the world and delta), per node, pushing every change.
    ControlPlane {
        /// Directory of resource files (YAML or JSON `ResourceFile`s).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// ADS (gRPC) listener.
        #[arg(long, default_value = "127.0.0.1:18000")]
        listen: SocketAddr,
        /// Admin listener: /nodes, /files, /ready.
        #[arg(long, default_value = "127.0.0.1:18001")]
        admin: SocketAddr,
        /// Serve ADS over TLS with this certificate chain (PEM; read per connection).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The key of --tls-cert (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require client certificates whose SPIFFE ID names this trust domain
        /// and chains to this bundle: DOMAIN=CA_FILE; repeatable (mTLS).
        #[arg(long, value_name = "DOMAIN=FILE", requires = "tls_cert")]
        client_trust_bundle: Vec<String>,
    },
    /// Run the embedded demo: the proxy plus built-in upstreams standing in for three clouds.
    Demo {
        /// Proxy listener address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Addresses of the three built-in upstreams (OCI, AWS, Azure), comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "ADDR,ADDR,ADDR")]
        upstreams: Vec<SocketAddr>,
    },
    /// Check configuration files; exits 1 and prints every error if any is invalid.
    Validate {
        /// Files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The files are the control plane's resource files (as
        /// `corridor control-plane --dir` reads them), not configurations.
        #[arg(long)]
        resources: bool,
    },
    /// Add the Corridor sidecar to the Kubernetes workloads of a YAML stream and
    /// print it (explicit-proxy mode: no iptables, no init container).
    #[command(after_help = corridor_proxy::INJECT_HELP)]
    Inject {
        #[command(flatten)]
        args: corridor_proxy::InjectArgs,
    },
}

/// Control-stream options of `corridor run`; they override the file's `xds` section.
#[derive(clap::Args)]
struct XdsArgs {
    /// Control-plane URL, for example http://10.0.0.2:18000 (state of the world).
    #[arg(long, value_name = "URL")]
    xds: Option<String>,
    /// Speak the delta variant of ADS.
    #[arg(long)]
    xds_delta: bool,
    /// Node id sent to the control plane.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Node cluster sent to the control plane.
    #[arg(long, value_name = "NAME")]
    node_cluster: Option<String>,
    /// Cloud of this Corridor (node metadata).
    #[arg(long)]
    cloud: Option<String>,
    /// Region of this Corridor (node metadata).
    #[arg(long)]
    region: Option<String>,
    /// Zone of this Corridor (node metadata).
    #[arg(long)]
    zone: Option<String>,
    /// Role of this Corridor (node metadata): sidecar or ingress.
    #[arg(long, value_parser = ["sidecar", "ingress"])]
    role: Option<String>,
    /// Fail static: keep the pushed configuration in this file and boot from it
    /// when the control plane cannot be reached.
    #[arg(long, value_name = "FILE")]
    persist: Option<PathBuf>,
    /// Admin listener (without a configuration file; default 127.0.0.1:9901).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// CA certificates (PEM) the control plane must chain to (needs an https:// URL).
    #[arg(long, value_name = "FILE")]
    xds_ca_file: Option<PathBuf>,
    /// This Corridor's certificate chain (PEM) for mTLS to the control plane.
    #[arg(long, value_name = "FILE", requires = "xds_key_file")]
    xds_cert_file: Option<PathBuf>,
    /// The key of --xds-cert-file (PEM).
    #[arg(long, value_name = "FILE", requires = "xds_cert_file")]
    xds_key_file: Option<PathBuf>,
    /// An identity the control plane must present (SPIFFE ID or DNS name); repeatable.
    #[arg(long, value_name = "ID")]
    xds_identity: Vec<String>,
}

impl XdsArgs {
    /// Puts the flags into `b`'s `xds` (and admin) sections.
    fn apply(&self, b: &mut corridor_config::proto::Bootstrap) {
        use corridor_config::proto;
        if let Some(a) = self.admin {
            b.admin.get_or_insert_with(Default::default).address = a.to_string();
        }
        let any = self.xds.is_some()
            || self.xds_delta
            || self.node_id.is_some()
            || self.node_cluster.is_some()
            || self.cloud.is_some()
            || self.region.is_some()
            || self.zone.is_some()
            || self.persist.is_some()
            || self.role.is_some()
            || self.tls_given();
        if !any && b.xds.is_none() {
            return;
        }
        let x = b.xds.get_or_insert_with(Default::default);
        if let Some(v) = &self.xds {
            x.server = v.clone();
        }
        if self.xds_delta {
            x.delta = true;
        }
        if let Some(v) = &self.node_id {
            x.node_id = v.clone();
        }
        if let Some(v) = &self.node_cluster {
            x.node_cluster = v.clone();
        }
        let l = x.locality.get_or_insert_with(Default::default);
        for (flag, field) in [
            (&self.cloud, &mut l.cloud),
            (&self.region, &mut l.region),
            (&self.zone, &mut l.zone),
        ] {
            if let Some(v) = flag {
                *field = v.clone();
            }
        }
        match self.role.as_deref() {
            Some("ingress") => x.role = proto::xds::Role::Ingress as i32,
            Some(_) => x.role = proto::xds::Role::Sidecar as i32,
            None => {}
        }
        if let Some(p) = &self.persist {
            x.persist_file = p.display().to_string();
        }
        if self.tls_given() {
            let t = x.tls.get_or_insert_with(Default::default);
            let path = |p: &PathBuf| p.display().to_string();
            for (flag, field) in [
                (&self.xds_ca_file, &mut t.ca_file),
                (&self.xds_cert_file, &mut t.cert_file),
                (&self.xds_key_file, &mut t.key_file),
            ] {
                if let Some(p) = flag {
                    *field = path(p);
                }
            }
            if !self.xds_identity.is_empty() {
                t.expected_identities.clone_from(&self.xds_identity);
            }
        }
    }

    fn tls_given(&self) -> bool {
        self.xds_ca_file.is_some() || self.xds_cert_file.is_some() || !self.xds_identity.is_empty()
    }
}

/// The control plane's TLS from its flags (`None`: plaintext).
fn control_plane_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    bundles: &[String],
) -> Result<Option<corridor_proxy::ServerTls>, String> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let mut trust_bundles = Vec::new();
    for b in bundles {
        let (domain, file) = b
            .split_once('=')
            .ok_or_else(|| format!("--client-trust-bundle {b}: write it as DOMAIN=CA_FILE"))?;
        corridor_config::check_trust_domain(domain)
            .map_err(|e| format!("--client-trust-bundle {b}: {e}"))?;
        trust_bundles.push((domain.into(), file.into()));
    }
    Ok(Some(corridor_proxy::ServerTls {
        cert_file: cert.display().to_string(),
        key_file: key.display().to_string(),
        client_auth: (!trust_bundles.is_empty()).then_some(corridor_config::ClientAuth {
            trust_bundles,
            required: true,
        }),
    }))
}

/// The store `corridor run` starts from: the file (if any) with the flags applied.
fn initial_store(
    config: Option<&PathBuf>,
    flags: &XdsArgs,
) -> Result<corridor_config::Store, String> {
    let (mut bootstrap, map, name) = match config {
        Some(path) => {
            let (b, map) = corridor_config::read_bootstrap(path).map_err(|e| e.to_string())?;
            (b, map, path.display().to_string())
        }
        None => (
            corridor_config::proto::Bootstrap::default(),
            corridor_config::SourceMap::default(),
            "<command line>".to_string(),
        ),
    };
    flags.apply(&mut bootstrap);
    corridor_config::Store::from_bootstrap(bootstrap, &corridor_config::DiskFiles)
        .map_err(|e| corridor_config::locate_errors(e, &map, &name).to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files, resources } => validate(&files, resources),
        Command::Inject { args } => corridor_proxy::run_inject(&args),
        Command::Run { config, xds } => match initial_store(config.as_ref(), &xds) {
            Ok(store) => {
                let flags = std::sync::Arc::new(xds);
                let overrides: corridor_proxy::Overrides =
                    std::sync::Arc::new(move |b: &mut corridor_config::proto::Bootstrap| {
                        flags.apply(b)
                    });
                serve(store, config, false, Some(overrides))
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("corridor: not starting: the configuration is invalid");
                ExitCode::FAILURE
            }
        },
        Command::ControlPlane {
            dir,
            listen,
            admin,
            tls_cert,
            tls_key,
            client_trust_bundle,
        } => {
            init_logging(
                corridor_config::LogFormat::Text,
                corridor_config::DEFAULT_LOG_QUEUE_LINES,
            );
            let tls = match control_plane_tls(tls_cert, tls_key, &client_trust_bundle) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("corridor control-plane: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match corridor_proxy::run_control_plane(dir, listen, admin, tls) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("corridor control-plane: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            listen,
            admin,
            upstreams,
        } => {
            let yaml = demo_config(&DemoOptions {
                listen: Some(listen),
                admin: Some(admin),
                upstreams,
            });
            match corridor_config::load_store_str(&yaml, "examples/demo.yaml (embedded)") {
                Ok(store) => serve(store, None, true, None),
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn validate(files: &[PathBuf], resources: bool) -> ExitCode {
    let mut failed = false;
    for f in files {
        if resources {
            let checked = std::fs::read_to_string(f)
                .map_err(|e| format!("{}: cannot read: {e}", f.display()))
                .and_then(|text| {
                    corridor_xds::check_file(&text, &f.display().to_string())
                        .map_err(|e| e.to_string())
                });
            match checked {
                Ok(n) => println!("{}: ok ({n} resources)", f.display()),
                Err(e) => {
                    failed = true;
                    eprintln!("{e}");
                }
            }
            continue;
        }
        match corridor_config::load_file(f) {
            Ok(s) => {
                let routes: usize = s
                    .route_tables
                    .iter()
                    .flat_map(|t| &t.virtual_hosts)
                    .map(|v| v.routes.len())
                    .sum();
                println!(
                    "{}: ok (version {}; {} listeners, {} routes, {} clusters)",
                    f.display(),
                    s.version,
                    s.listeners.len(),
                    routes,
                    s.clusters.len()
                );
            }
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn serve(
    store: corridor_config::Store,
    file: Option<PathBuf>,
    demo: bool,
    overrides: Option<corridor_proxy::Overrides>,
) -> ExitCode {
    let snapshot = store.clone().snapshot();
    init_logging(snapshot.admin.log_format, snapshot.admin.log_queue_lines);
    if let Err(e) = check_bindable(&snapshot) {
        eprintln!("corridor: {e}");
        return ExitCode::FAILURE;
    }
    if demo {
        if let Err(e) = start_upstreams(&snapshot) {
            eprintln!("corridor: {e}");
            return ExitCode::FAILURE;
        }
        print_banner(&snapshot);
    }
    let registry = prometheus::Registry::new();
    let process = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = registry.register(Box::new(process)) {
        eprintln!("corridor: process metrics unavailable: {e}");
    }
    let shared = match Shared::new(store, file, registry) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(o) = overrides {
        shared.set_overrides(o);
    }
    match corridor_proxy::run(shared) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corridor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Fails early, with the address named, when the admin socket is already
/// taken (listener sockets are bound, with the same check, when the state is built).
fn check_bindable(s: &corridor_config::Snapshot) -> Result<(), String> {
    let addr = s.admin.address;
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| format!("admin: cannot listen on {addr}: {e}"))
}
