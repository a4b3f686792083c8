//! The `corridor` command line: run a configuration file, run the embedded
//! demo, or validate files.

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
  corridor validate examples/*.yaml            # check files, print every error with file:line:column
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
    /// Serve a configuration file (YAML or JSON); reload it when it changes or on SIGHUP.
    Run {
        /// Configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Run { config } => match corridor_config::load_store_file(&config) {
            Ok(store) => serve(store, Some(config), false),
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("corridor: not starting: the configuration is invalid");
                ExitCode::FAILURE
            }
        },
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
                Ok(store) => serve(store, None, true),
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
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

fn serve(store: corridor_config::Store, file: Option<PathBuf>, demo: bool) -> ExitCode {
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
