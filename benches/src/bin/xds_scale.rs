//! `xds_scale`: the driver of the control-stream scale benchmark. Run it
//! through `benches/xds_scale.sh`, which installs nginx and wrk, builds this
//! binary and Corridor, starts the upstream, picks the ports and pins this
//! process to the load CPU (see benches/README.md).
//!
//! Per ADS variant (SotW, then delta): generate the resource files, start
//! `corridor control-plane` on them, start one `corridor run` proxy plus
//! `subscribers - 1` engine clients at once and time their convergence; then
//! time a 10k-route change and a 1-endpoint change (`updates` times each);
//! then drop the engine clients and compare the proxy's p99 under wrk
//! without and with a push storm (`rounds` times). Prints a Markdown report
//! and writes it, with every number, into `--out`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use corridor_benches::xds_scale::gen::{write_atomic, Layout, Shape};
use corridor_benches::xds_scale::probe::{self, ProcSample};
use corridor_benches::xds_scale::report::Records;
use corridor_benches::xds_scale::swarm::Swarm;
use corridor_config::Kind;

#[path = "xds_scale/costs.rs"]
mod costs;
#[path = "xds_scale/load.rs"]
mod load;
#[path = "xds_scale/phases.rs"]
mod phases;
#[path = "xds_scale/summary.rs"]
mod summary;

/// Command line (the script passes every knob explicitly).
#[derive(Parser, Debug, Clone)]
#[command(about = "Corridor control-stream scale benchmark (run benches/xds_scale.sh)")]
pub struct Opts {
    /// The corridor binary (control plane and proxy).
    #[arg(long)]
    pub corridor: PathBuf,
    /// Results directory (report.md, metrics.tsv, logs/, raw/).
    #[arg(long)]
    pub out: PathBuf,
    /// Scratch directory for resource files and configs.
    #[arg(long)]
    pub work: PathBuf,
    /// Port of the upstream, listening on 127.0.0.1..=endpoints_per_cluster.
    #[arg(long)]
    pub upstream_port: u16,
    /// Control-plane ADS port.
    #[arg(long)]
    pub cp_port: u16,
    /// Control-plane admin port.
    #[arg(long)]
    pub cp_admin_port: u16,
    /// Port of the listener pushed to the proxy.
    #[arg(long)]
    pub proxy_port: u16,
    /// Proxy admin port.
    #[arg(long)]
    pub proxy_admin_port: u16,
    /// Subscribers: one proxy plus engine clients.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// ADS variants to run, in order.
    #[arg(long, default_value = "sotw,delta", value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Virtual hosts with routes.
    #[arg(long, default_value_t = 100)]
    pub vhosts: usize,
    /// Routes per virtual host.
    #[arg(long, default_value_t = 100)]
    pub routes_per_vhost: usize,
    /// Clusters (one Endpoints resource each).
    #[arg(long, default_value_t = 1000)]
    pub clusters: usize,
    /// Endpoints per cluster.
    #[arg(long, default_value_t = 50)]
    pub endpoints_per_cluster: usize,
    /// Files the Endpoints are spread over.
    #[arg(long, default_value_t = 50)]
    pub endpoint_files: usize,
    /// Repetitions of each update measurement.
    #[arg(long, default_value_t = 5)]
    pub updates: usize,
    /// Steady/storm rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds per wrk measurement.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of wrk warm-up before each measurement.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Storm: one endpoint moves every this many ms (0: never).
    #[arg(long, default_value_t = 100)]
    pub storm_endpoint_ms: u64,
    /// Storm: all routes change every this many ms (0: never).
    #[arg(long, default_value_t = 1000)]
    pub storm_routes_ms: u64,
    /// CPU the proxy is pinned to (none: not pinned).
    #[arg(long)]
    pub proxy_cpu: Option<usize>,
    /// CPU the control plane and this process (the engine clients) are pinned
    /// to (none: not pinned), except during initial convergences, when they
    /// may use every CPU: on a real deployment each subscriber has its own.
    #[arg(long)]
    pub cp_cpu: Option<usize>,
    /// Seconds to wait for a convergence before giving up.
    #[arg(long, default_value_t = 60)]
    pub converge_timeout: u64,
    /// Skip the steady/storm load test.
    #[arg(long)]
    pub skip_storm: bool,
    /// A line of context for the report header (date, load, git revision).
    #[arg(long, default_value = "")]
    pub header: String,
}

fn main() {
    let opts = Opts::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("xds_scale: cannot start a tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let _guard = runtime.enter();
    let mut bench = Bench::new(opts);
    let result = bench.run();
    let tsv = bench.rec.tsv();
    let _ = std::fs::write(bench.opts.out.join("metrics.tsv"), tsv);
    let report = summary::render(&bench);
    let _ = std::fs::write(bench.opts.out.join("report.md"), &report);
    print!("{report}");
    if let Err(e) = result {
        log(&format!("ERROR: {e}"));
        std::process::exit(1);
    }
}

/// Progress on stderr, like the shell scripts' `[bench HH:MM:SS]` lines.
pub fn log(msg: &str) {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    eprintln!("[xds {h:02}:{m:02}:{s:02}Z] {msg}");
}

/// Everything one run measures and the knobs it ran with.
pub struct Bench {
    /// The knobs.
    pub opts: Opts,
    /// Every number measured.
    pub rec: Records,
    /// Problems worth a line under the table.
    pub warnings: Vec<String>,
    /// `getconf CLK_TCK`.
    pub ticks: f64,
    /// Sizes.
    pub shape: Shape,
}

impl Bench {
    fn new(opts: Opts) -> Bench {
        let shape = Shape {
            vhosts: opts.vhosts,
            routes_per_vhost: opts.routes_per_vhost,
            clusters: opts.clusters.max(2),
            endpoints_per_cluster: opts.endpoints_per_cluster.clamp(1, 250),
            endpoint_files: opts.endpoint_files.max(1),
        };
        Bench {
            opts,
            rec: Records::default(),
            warnings: Vec::new(),
            ticks: probe::clock_ticks(),
            shape,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The layout of variant `variant`'s resource directory.
    fn layout(&self, variant: &str) -> Layout {
        Layout {
            dir: self.opts.work.join(format!("resources-{variant}")),
            shape: self.shape,
            listener: format!("127.0.0.1:{}", self.opts.proxy_port),
            upstream_port: self.opts.upstream_port,
            churn_cluster: self.shape.clusters / 2,
        }
    }

    fn run(&mut self) -> Result<(), String> {
        for dir in ["logs", "raw", "configs"] {
            std::fs::create_dir_all(self.opts.out.join(dir))
                .map_err(|e| format!("cannot create {}: {e}", self.opts.out.display()))?;
        }
        if self.opts.subscribers < 1 {
            return Err("--subscribers must be at least 1 (the proxy)".into());
        }
        let variants = self.opts.variants.clone();
        for v in &variants {
            if v != "sotw" && v != "delta" {
                return Err(format!("unknown variant {v:?}: use sotw and/or delta"));
            }
        }
        let first = self.layout(&variants[0]);
        first
            .write_all()
            .map_err(|e| format!("cannot write resource files: {e}"))?;
        costs::costs(self, &first)?;
        for v in &variants {
            phases::variant(self, v)?;
        }
        Ok(())
    }
}

// === child processes ===

/// A child process, killed (SIGKILL) when dropped. Its pid is also in
/// `pid_file` (until then), so the script can stop it should this process
/// die without unwinding.
pub struct Proc {
    name: String,
    child: Child,
    pid_file: Option<PathBuf>,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

/// Sets the CPUs every thread of process `pid` may run on (`taskset -a -p`).
pub fn set_cpus(pid: u32, cpus: &str) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| format!("cannot run taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -a -p -c {cpus} {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Proc {
    /// Starts `program args` (pinned to `cpu` with taskset when given), output to `log`.
    pub fn spawn(
        name: &str,
        pid_dir: &Path,
        log: PathBuf,
        cpu: Option<usize>,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Proc, String> {
        let file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("cannot clone a file handle: {e}"))?;
        let mut cmd = match cpu {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c.to_string()).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(file).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        crate::log(&format!(
            "started {name} (pid {}): {} {}",
            child.id(),
            program.display(),
            args.join(" ")
        ));
        let pid_file = pid_dir.join(format!("{}.pid", child.id()));
        let pid_file = std::fs::create_dir_all(pid_dir)
            .and_then(|()| std::fs::write(&pid_file, format!("{}\n", child.id())))
            .is_ok()
            .then_some(pid_file);
        Ok(Proc {
            name: name.to_string(),
            child,
            pid_file,
            log,
        })
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its pid, as text for `/proc`.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// CPU and memory now.
    pub fn sample(&self, ticks: f64) -> ProcSample {
        probe::proc_sample(&self.pid(), ticks)
    }

    /// An error if it exited, with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.tail(20)
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// The log from byte `from` on.
    pub fn log_since(&self, from: usize) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(text.get(from..).unwrap_or_default()).into_owned()
    }

    /// The log's current length.
    pub fn log_len(&self) -> usize {
        std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize)
    }

    /// The last `n` lines of its log.
    pub fn tail(&self, n: usize) -> String {
        let text = self.log_since(0);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until `GET path` on `addr` answers 200.
    pub fn wait_http(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let last = match probe::http_get(addr, path) {
                Ok((200, _)) => return Ok(()),
                Ok((status, _)) => format!("status {status}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not answer 200 on http://{addr}{path} within {timeout:?} (last: {last}); last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(f) = &self.pid_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

// === the storm writer ===

/// Rewrites the churn endpoints file every `endpoint_ms` and the routes file
/// every `routes_ms`, alternating between two prepared contents each, until stopped.
pub struct Storm {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Storm {
    /// Starts writing.
    pub fn start(layout: &Layout, endpoint_ms: u64, routes_ms: u64) -> Storm {
        let f = layout.shape.endpoint_file_of(layout.churn_cluster);
        let endpoints = [
            layout.endpoints_yaml(f, 1001),
            layout.endpoints_yaml(f, 1002),
        ];
        let routes = [layout.routes_yaml(1001), layout.routes_yaml(1002)];
        let (ep_path, routes_path) = (layout.churn_path(), layout.routes_path());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let (mut ep_writes, mut route_writes) = (0u64, 0u64);
            let mut next_ep = start;
            let mut next_routes = start;
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                if endpoint_ms > 0 && now >= next_ep {
                    let text = &endpoints[(ep_writes % 2) as usize];
                    if write_atomic(&ep_path, text).is_ok() {
                        ep_writes += 1;
                    }
                    next_ep += Duration::from_millis(endpoint_ms);
                }
                if routes_ms > 0 && now >= next_routes {
                    let text = &routes[(route_writes % 2) as usize];
                    if write_atomic(&routes_path, text).is_ok() {
                        route_writes += 1;
                    }
                    next_routes += Duration::from_millis(routes_ms);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ep_writes, route_writes)
        });
        Storm {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops writing; how many endpoint and route writes were made.
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, 0))
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// === convergence ===

/// Per (node id, type URL): the version ACKed.
pub type Acked = HashMap<(String, String), String>;

/// What every connected node ACKed, per type.
pub fn acked_now(admin: SocketAddr) -> Result<Acked, String> {
    Ok(probe::nodes(admin)?
        .into_iter()
        .flat_map(|n| {
            let id = n.id;
            n.types
                .into_iter()
                .map(move |(t, s)| ((id.clone(), t), s.acked))
        })
        .collect())
}

/// What to wait for.
pub struct Wait<'a> {
    /// The engine clients, checked in-process first (cheap) when running.
    pub swarm: Option<&'a Swarm>,
    /// Their versions before the change (None: initial).
    pub swarm_before: Option<&'a [Vec<String>]>,
    /// Every node's ACKed versions before the change (None: initial).
    pub before: Option<&'a Acked>,
    /// The kinds that must change (initial: every kind).
    pub kinds: &'a [Kind],
    /// Connected subscribers expected.
    pub nodes: usize,
    /// When the change (or the subscribers' start) happened.
    pub t0: SystemTime,
}

/// Waits until every subscriber ACKed a new version of every kind in
/// `w.kinds`, all the same; returns the time from `t0` to the last ACK
/// the control plane recorded.
pub fn converge(bench: &Bench, w: &Wait<'_>) -> Result<f64, String> {
    let admin = Bench::addr(bench.opts.cp_admin_port);
    let timeout = Duration::from_secs(bench.opts.converge_timeout);
    let deadline = Instant::now() + timeout;
    let idx: Vec<usize> = w
        .kinds
        .iter()
        .filter_map(|k| Kind::ALL.iter().position(|x| x == k))
        .collect();
    if let Some(swarm) = w.swarm {
        loop {
            let now = swarm.versions();
            let done = idx.iter().all(|&i| {
                let first = now.first().map(|v| v[i].clone()).unwrap_or_default();
                now.iter().enumerate().all(|(c, v)| {
                    !v[i].is_empty()
                        && v[i] == first
                        && w.swarm_before.is_none_or(|b| b[c][i] != v[i])
                })
            });
            if done {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the engine clients did not converge within {timeout:?} ({} reconnects, {} NACKs)",
                    swarm.troubles().0,
                    swarm.troubles().1
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let urls: Vec<&str> = w.kinds.iter().map(|k| k.type_url()).collect();
    loop {
        let nodes = probe::nodes(admin)?;
        let mut done = nodes.len() == w.nodes;
        let mut last_ack: Option<SystemTime> = None;
        for url in &urls {
            let mut version: Option<&str> = None;
            for n in &nodes {
                let Some(t) = n.types.get(*url) else {
                    done = false;
                    continue;
                };
                if t.nacks > 0 {
                    return Err(format!(
                        "{} NACKed {url}: {}",
                        n.id,
                        t.last_nack.as_deref().unwrap_or("?")
                    ));
                }
                let fresh = w
                    .before
                    .is_none_or(|b| b.get(&(n.id.clone(), url.to_string())) != Some(&t.acked));
                let same = *version.get_or_insert(&t.acked) == t.acked;
                if t.pending || t.acked.is_empty() || t.acked != t.sent || !fresh || !same {
                    done = false;
                }
                last_ack = last_ack.max(t.last_ack_at);
            }
        }
        if done {
            let at = last_ack.ok_or("no ACK time on /nodes")?;
            return Ok(at.duration_since(w.t0).map_or(0.0, |d| d.as_secs_f64()));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no convergence within {timeout:?} ({} of {} subscribers connected); see the control plane's /nodes and /files",
                nodes.len(),
                w.nodes
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
