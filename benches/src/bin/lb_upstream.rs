//! `lb_upstream`: the upstream endpoints of the load-balancing benchmark. Run
//! it through `benches/lb.sh` (see benches/README.md, "Load-balancing
//! benchmark").
//!
//! One process, one thread (a tokio current-thread runtime), listening on
//! several ports of one address, each port an endpoint with its own delay:
//!
//! ```text
//! lb_upstream [--host 127.0.0.1] PORT[:DELAY_MS]...
//! lb_upstream 28001 28002 28003 28004:100     # three fast endpoints, one 100 ms slower
//! ```
//!
//! - Any request except `GET /__stats` is counted on its port when its head
//!   has arrived, then answered `200 "hello\n"` (HTTP/1.1, keep-alive) after
//!   the port's delay. The delay is a tokio timer: it has millisecond
//!   resolution and rounds up, so a 100 ms endpoint answers in 100–101 ms.
//! - `GET /__stats` on any port answers one line per port, in the order of the
//!   command line: `port<TAB>delay_ms<TAB>requests<TAB>in_flight`. It is not
//!   counted itself.
//! - On SIGTERM or SIGINT the same table is printed to stdout, then the
//!   process exits.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Upstream endpoints of the load-balancing benchmark (run benches/lb.sh)")]
struct Opts {
    /// Address every port listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Endpoints: `PORT` (no delay) or `PORT:DELAY_MS`.
    #[arg(required = true, value_parser = parse_endpoint)]
    endpoints: Vec<EndpointSpec>,
}

/// One endpoint as given on the command line.
#[derive(Debug, Clone, Copy)]
struct EndpointSpec {
    /// TCP port.
    port: u16,
    /// Delay before each response.
    delay: Duration,
}

/// Parses `PORT` or `PORT:DELAY_MS`.
fn parse_endpoint(s: &str) -> Result<EndpointSpec, String> {
    let (port, delay) = match s.split_once(':') {
        Some((p, d)) => (p, Some(d)),
        None => (s, None),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{port}' is not a port (expected PORT or PORT:DELAY_MS)"))?;
    if port == 0 {
        return Err("port 0 is not allowed".to_owned());
    }
    let delay_ms: u64 = match delay {
        None => 0,
        Some(d) => d.parse().map_err(|_| {
            format!("'{d}' is not a delay in milliseconds (expected PORT:DELAY_MS)")
        })?,
    };
    Ok(EndpointSpec {
        port,
        delay: Duration::from_millis(delay_ms),
    })
}

/// Counters of one endpoint.
#[derive(Debug)]
struct Endpoint {
    spec: EndpointSpec,
    /// Requests received (not counting `/__stats`).
    requests: AtomicU64,
    /// Requests received and not yet answered.
    in_flight: AtomicU64,
}

/// Every endpoint of the process, in command-line order.
type Endpoints = Arc<[Endpoint]>;

/// The `/__stats` table: `port<TAB>delay_ms<TAB>requests<TAB>in_flight` lines.
fn stats_table(endpoints: &[Endpoint]) -> String {
    let mut out = String::new();
    for e in endpoints {
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}",
            e.spec.port,
            e.spec.delay.as_millis(),
            e.requests.load(Ordering::Relaxed),
            e.in_flight.load(Ordering::Relaxed)
        );
    }
    out
}

/// Decrements an endpoint's in-flight count when the request ends, also when
/// the client goes away before the delay is over (hyper drops the handler).
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The body of every counted response.
const HELLO: &[u8] = b"hello\n";

/// Answers one request on endpoint `index`.
async fn handle(
    req: Request<Incoming>,
    endpoints: Endpoints,
    index: usize,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/__stats" {
        let table = stats_table(&endpoints);
        return Ok(Response::new(Full::new(Bytes::from(table))));
    }
    let Some(e) = endpoints.get(index) else {
        return Ok(Response::new(Full::new(Bytes::from_static(HELLO))));
    };
    e.requests.fetch_add(1, Ordering::Relaxed);
    e.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(&e.in_flight);
    if !e.spec.delay.is_zero() {
        tokio::time::sleep(e.spec.delay).await;
    }
    Ok(Response::new(Full::new(Bytes::from_static(HELLO))))
}

/// Accepts connections on one endpoint's listener forever.
async fn serve(listener: TcpListener, endpoints: Endpoints, index: usize) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: say so, give the process a moment, go on.
                eprintln!("lb_upstream: accept on endpoint {index}: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, endpoints.clone(), index));
            // A client that resets its connection is not an error worth a line.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds every endpoint, serves until a signal, prints the counters.
async fn run(opts: Opts) -> Result<(), String> {
    let endpoints: Endpoints = opts
        .endpoints
        .iter()
        .map(|&spec| Endpoint {
            spec,
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        })
        .collect();
    let mut listeners = Vec::with_capacity(endpoints.len());
    for e in endpoints.iter() {
        let addr = SocketAddr::new(opts.host, e.spec.port);
        let l = TcpListener::bind(addr)
            .await
            .map_err(|err| format!("cannot listen on {addr}: {err}"))?;
        listeners.push(l);
    }
    for (index, l) in listeners.into_iter().enumerate() {
        tokio::spawn(serve(l, endpoints.clone(), index));
    }
    let ports: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{}:{}ms", e.spec.port, e.spec.delay.as_millis()))
        .collect();
    println!(
        "lb_upstream: listening on {} ports {}",
        opts.host,
        ports.join(" ")
    );
    corridor_benches::shutdown_signal()
        .await
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    print!("{}", stats_table(&endpoints));
    Ok(())
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lb_upstream: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb_upstream: {e}");
            ExitCode::FAILURE
        }
    }
}
