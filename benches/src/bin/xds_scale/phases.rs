//! The phases of one ADS variant: start the control plane, the initial
//! convergence and the update measurements (costs measured alone are in
//! `costs`, the load test is in `load`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use corridor_benches::xds_scale::gen::{write_atomic, Layout};
use corridor_benches::xds_scale::probe::{self, Applied, ProcSample};
use corridor_benches::xds_scale::swarm::{Swarm, KINDS};
use corridor_config::Kind;

use crate::{acked_now, converge, log, Bench, Proc, Wait};

const MIB: f64 = 1024.0;

/// One ADS variant's running processes.
pub(crate) struct Ctx {
    pub(crate) v: String,
    pub(crate) layout: Layout,
    pub(crate) cp: Proc,
    pub(crate) proxy: Proc,
    pub(crate) swarm: Option<Swarm>,
}

impl Ctx {
    fn nodes(&self, b: &Bench) -> usize {
        if self.swarm.is_some() {
            b.opts.subscribers
        } else {
            1
        }
    }
}

/// Samples of the control plane, this process (the engine clients) and the proxy.
pub(crate) struct Samples {
    pub(crate) cp: ProcSample,
    pub(crate) me: ProcSample,
    pub(crate) proxy: ProcSample,
}

pub(crate) fn samples(b: &Bench, ctx: &Ctx) -> Samples {
    Samples {
        cp: ctx.cp.sample(b.ticks),
        me: probe::proc_sample("self", b.ticks),
        proxy: ctx.proxy.sample(b.ticks),
    }
}

/// Records CPU deltas and memory after a phase.
fn record_samples(b: &mut Bench, v: &str, phase: &str, s0: &Samples, s1: &Samples) {
    let r = &mut b.rec;
    r.add(v, phase, "cp_cpu_s", s1.cp.cpu_since(&s0.cp));
    r.add(v, phase, "cp_rss_mib", s1.cp.rss_kib as f64 / MIB);
    r.add(v, phase, "cp_hwm_mib", s1.cp.hwm_kib as f64 / MIB);
    r.add(v, phase, "clients_cpu_s", s1.me.cpu_since(&s0.me));
    r.add(v, phase, "proxy_cpu_s", s1.proxy.cpu_since(&s0.proxy));
    r.add(v, phase, "proxy_rss_mib", s1.proxy.rss_kib as f64 / MIB);
}

/// The proxy's `corridor_config_apply_seconds` sum and count for `source="xds"`.
fn apply_histogram(b: &Bench) -> (f64, f64) {
    let admin = Bench::addr(b.opts.proxy_admin_port);
    let Ok((200, text)) = probe::http_get(admin, "/metrics") else {
        return (0.0, 0.0);
    };
    let get = |n: &str| probe::prom_value(&text, n, "source=\"xds\"").unwrap_or(0.0);
    (
        get("corridor_config_apply_seconds_sum"),
        get("corridor_config_apply_seconds_count"),
    )
}

/// Waits (up to 5 s) until the proxy logged an applied update of every kind
/// in `kinds` after byte `from`; every applied update since then.
fn wait_applied(b: &mut Bench, proxy: &Proc, from: usize, kinds: &[Kind]) -> Vec<Applied> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = probe::applied_updates(&proxy.log_since(from));
        let missing: Vec<&str> = kinds
            .iter()
            .map(|k| k.name())
            .filter(|k| !lines.iter().any(|l| l.kind == *k))
            .collect();
        if missing.is_empty() {
            return lines;
        }
        if Instant::now() >= deadline {
            b.warnings.push(format!(
                "the proxy logged no `control-plane update applied` line for {} (RUST_LOG must include info for corridor_proxy)",
                missing.join(", ")
            ));
            return lines;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything about one variant: start, converge, update, load.
pub fn variant(b: &mut Bench, v: &str) -> Result<(), String> {
    let layout = b.layout(v);
    layout
        .write_all()
        .map_err(|e| format!("cannot write resource files: {e}"))?;
    let cp_admin = Bench::addr(b.opts.cp_admin_port);
    let args: Vec<String> = vec![
        "control-plane".into(),
        "--dir".into(),
        layout.dir.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", b.opts.cp_port),
        "--admin".into(),
        cp_admin.to_string(),
    ];
    // While subscribers converge, the control plane and the engine clients
    // (this process) may use every CPU; the proxy keeps its own.
    spread(b, None, true)?;
    let started = Instant::now();
    let pids = b.opts.work.join("pids");
    let mut cp = Proc::spawn(
        &format!("control plane ({v})"),
        &pids,
        b.opts.out.join(format!("logs/control-plane-{v}.log")),
        None,
        &b.opts.corridor,
        &args,
        &[("RUST_LOG", "info")],
    )?;
    cp.wait_http(cp_admin, "/ready", Duration::from_secs(120))?;
    b.rec
        .add(v, "start", "cp_load_s", started.elapsed().as_secs_f64());
    let (_, files) = probe::http_get(cp_admin, "/files")?;
    if files.contains("\"error\": \"") {
        return Err(format!(
            "the control plane rejects a generated file:\n{files}"
        ));
    }
    let start = cp.sample(b.ticks);
    b.rec
        .add(v, "start", "cp_rss_mib", start.rss_kib as f64 / MIB);
    b.rec.add(v, "start", "cp_cpu_s", start.cpu_s);

    let config = b.opts.work.join(format!("proxy-{v}.yaml"));
    let yaml = format!(
        "# Generated by benches/xds_scale.sh\nxds:\n  server: \"http://127.0.0.1:{}\"\n  node_id: proxy-{v}\n  delta: {}\n  initial_fetch_timeout: 120s\nadmin:\n  address: \"127.0.0.1:{}\"\nruntime:\n  worker_threads: 1\n",
        b.opts.cp_port,
        v == "delta",
        b.opts.proxy_admin_port
    );
    write_atomic(&config, &yaml).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let _ = std::fs::copy(&config, b.opts.out.join(format!("configs/proxy-{v}.yaml")));

    // Initial convergence: the proxy and the engine clients start together.
    log(&format!(
        "[{v}] starting 1 proxy + {} engine clients against {} routes / {} endpoints",
        b.opts.subscribers - 1,
        b.shape.routes(),
        b.shape.endpoints()
    ));
    let cp0 = cp.sample(b.ticks);
    let me0 = probe::proc_sample("self", b.ticks);
    let t0 = SystemTime::now();
    let proxy = Proc::spawn(
        &format!("proxy ({v})"),
        &pids,
        b.opts.out.join(format!("logs/proxy-{v}.log")),
        b.opts.proxy_cpu,
        &b.opts.corridor,
        &[
            "run".to_string(),
            "-c".to_string(),
            config.display().to_string(),
        ],
        &[("RUST_LOG", "info,pingora_core=warn,pingora_proxy=warn")],
    )?;
    let server = format!("http://127.0.0.1:{}", b.opts.cp_port);
    let clients = b.opts.subscribers - 1;
    let swarm = Swarm::start(&server, clients, v == "delta", false, &format!("bench-{v}"));
    let mut ctx = Ctx {
        v: v.to_string(),
        layout,
        cp,
        proxy,
        swarm: Some(swarm),
    };
    let secs = converge(
        b,
        &Wait {
            swarm: ctx.swarm.as_ref(),
            swarm_before: None,
            before: None,
            kinds: &Kind::ALL,
            nodes: b.opts.subscribers,
            t0,
        },
    )
    .inspect_err(|_| {
        let _ = ctx.proxy.check_alive().map_err(|e| log(&e));
    })?;
    let applied = wait_applied(b, &ctx.proxy, 0, &Kind::ALL);
    let s1 = samples(b, &ctx);
    spread(b, Some(&ctx.cp), false)?;
    let s0 = Samples {
        cp: cp0,
        me: me0,
        proxy: ProcSample::default(),
    };
    record_samples(b, v, "initial", &s0, &s1);
    b.rec.add(v, "initial", "converge_s", secs);
    let took: u64 = applied.iter().map(|a| a.took_us).sum();
    b.rec.add(v, "initial", "proxy_apply_s", took as f64 / 1e6);
    record_decode(b, &ctx, "initial", &Kind::ALL, [(0, 0); KINDS]);
    log(&format!(
        "[{v}] initial convergence of {} subscribers: {:.3} s (proxy applied {} updates in {:.1} ms)",
        b.opts.subscribers,
        secs,
        applied.len(),
        took as f64 / 1e3
    ));
    let proxy_admin = Bench::addr(b.opts.proxy_admin_port);
    ctx.proxy
        .wait_http(proxy_admin, "/ready", Duration::from_secs(10))?;
    ctx.proxy
        .wait_http(Bench::addr(b.opts.proxy_port), "/", Duration::from_secs(10))?;
    updates(b, &mut ctx, "", 0)?;

    // The same with engine clients that ACK without decoding: what the
    // control plane alone needs (the proxy stays connected and takes part).
    if clients > 0 {
        if let Some(s) = ctx.swarm.take() {
            troubles(b, v, &s);
            s.stop();
        }
        wait_nodes(cp_admin, 1)?;
        let cp0 = ctx.cp.sample(b.ticks);
        let me0 = probe::proc_sample("self", b.ticks);
        let px0 = ctx.proxy.sample(b.ticks);
        spread(b, Some(&ctx.cp), true)?;
        let t0 = SystemTime::now();
        ctx.swarm = Some(Swarm::start(
            &server,
            clients,
            v == "delta",
            true,
            &format!("ack-{v}"),
        ));
        let secs = converge(
            b,
            &Wait {
                swarm: ctx.swarm.as_ref(),
                swarm_before: None,
                before: None,
                kinds: &Kind::ALL,
                nodes: b.opts.subscribers,
                t0,
            },
        )?;
        let s1 = samples(b, &ctx);
        spread(b, Some(&ctx.cp), false)?;
        let s0 = Samples {
            cp: cp0,
            me: me0,
            proxy: px0,
        };
        record_samples(b, v, "initial_ack", &s0, &s1);
        b.rec.add(v, "initial_ack", "converge_s", secs);
        log(&format!(
            "[{v}] initial convergence of {clients} ACK-only engine clients: {secs:.3} s"
        ));
        updates(b, &mut ctx, "_ack", 100)?;
    }
    if let Some(s) = ctx.swarm.take() {
        troubles(b, v, &s);
        s.stop();
    }
    let peak = ctx.cp.sample(b.ticks);
    b.rec
        .add(v, "updates", "cp_hwm_mib", peak.hwm_kib as f64 / MIB);
    b.rec
        .add(v, "updates", "cp_rss_mib", peak.rss_kib as f64 / MIB);
    b.rec.add(
        v,
        "updates",
        "cp_hwm_per_subscriber_mib",
        peak.hwm_kib.saturating_sub(start.rss_kib) as f64 / MIB / b.opts.subscribers as f64,
    );
    if !b.opts.skip_storm {
        crate::load::load(b, &mut ctx)?;
    }
    Ok(())
}

/// With pinning on: lets the control plane and the engine clients (this
/// process) run on every CPU (`wide`, for an initial convergence, where each
/// real subscriber would have its own CPU), or puts them back on `cp_cpu`
/// (updates and the load test, so that the proxy's CPU stays its own).
fn spread(b: &Bench, cp: Option<&Proc>, wide: bool) -> Result<(), String> {
    let Some(cpu) = b.opts.cp_cpu else {
        return Ok(());
    };
    let cpus = if wide {
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map_err(|e| format!("cannot read the online CPUs: {e}"))?
            .trim()
            .to_string()
    } else {
        cpu.to_string()
    };
    crate::set_cpus(std::process::id(), &cpus)?;
    match cp {
        Some(cp) => crate::set_cpus(cp.id(), &cpus),
        None => Ok(()),
    }
}

/// `updates` route changes and endpoint changes, alternating; phases
/// `routes{suffix}` and `endpoint{suffix}`; generations from `first + 1`.
fn updates(b: &mut Bench, ctx: &mut Ctx, suffix: &str, first: u64) -> Result<(), String> {
    for u in first + 1..=first + b.opts.updates as u64 {
        let text = ctx.layout.routes_yaml(u);
        let path = ctx.layout.routes_path();
        update(
            b,
            ctx,
            &format!("routes{suffix}"),
            &path,
            &text,
            Kind::RouteTable,
        )?;
        let f = ctx.layout.shape.endpoint_file_of(ctx.layout.churn_cluster);
        let text = ctx.layout.endpoints_yaml(f, u);
        let path = ctx.layout.churn_path();
        update(
            b,
            ctx,
            &format!("endpoint{suffix}"),
            &path,
            &text,
            Kind::Endpoints,
        )?;
    }
    Ok(())
}

/// Warns when the engine clients reconnected or NACKed.
fn troubles(b: &mut Bench, v: &str, swarm: &Swarm) {
    let (r, n) = swarm.troubles();
    if r + n > 0 {
        b.warnings.push(format!(
            "{v}: the engine clients reconnected {r} times and NACKed {n} times"
        ));
    }
}

/// Waits (10 s at most) until `n` subscribers are connected.
pub(crate) fn wait_nodes(cp_admin: SocketAddr, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = probe::nodes(cp_admin)?.len();
        if now == n {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{now} subscribers connected after 10 s, expected {n}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Per engine client: decode time of this phase's updates of `kinds`.
fn record_decode(
    b: &mut Bench,
    ctx: &Ctx,
    phase: &str,
    kinds: &[Kind],
    before: [(u64, u64); KINDS],
) {
    let Some(swarm) = &ctx.swarm else { return };
    let (mut nanos, mut updates) = (0u64, 0u64);
    for k in kinds {
        let i = Kind::ALL.iter().position(|x| x == k).unwrap_or(0);
        let (n, u, _) = swarm.stats.get(*k);
        nanos += n - before[i].0;
        updates += u - before[i].1;
    }
    let clients = b.opts.subscribers.saturating_sub(1).max(1) as f64;
    if updates > 0 {
        b.rec.add(
            &ctx.v,
            phase,
            "client_decode_s",
            nanos as f64 / 1e9 / clients,
        );
    }
}

fn decode_before(ctx: &Ctx) -> [(u64, u64); KINDS] {
    let mut out = [(0, 0); KINDS];
    if let Some(swarm) = &ctx.swarm {
        for (i, k) in Kind::ALL.iter().enumerate() {
            let (n, u, _) = swarm.stats.get(*k);
            out[i] = (n, u);
        }
    }
    out
}

/// Writes `text` to `path` and times what follows.
fn update(
    b: &mut Bench,
    ctx: &mut Ctx,
    phase: &str,
    path: &Path,
    text: &str,
    kind: Kind,
) -> Result<(), String> {
    // Let the previous update's stragglers (logs, ACK bookkeeping) settle,
    // and measure what the proxy uses when nothing happens, as a baseline.
    std::thread::sleep(Duration::from_millis(100));
    let idle0 = (Instant::now(), ctx.proxy.sample(b.ticks));
    std::thread::sleep(Duration::from_millis(300));
    let idle_rate = ctx.proxy.sample(b.ticks).cpu_since(&idle0.1) / idle0.0.elapsed().as_secs_f64();
    let v = ctx.v.clone();
    let cp_admin = Bench::addr(b.opts.cp_admin_port);
    let before = acked_now(cp_admin)?;
    let swarm_before = ctx.swarm.as_ref().map(Swarm::versions);
    let (cp_off, px_off) = (ctx.cp.log_len(), ctx.proxy.log_len());
    let hist0 = apply_histogram(b);
    let dec0 = decode_before(ctx);
    let s0 = samples(b, ctx);
    let w0 = Instant::now();
    let t0 = SystemTime::now();
    write_atomic(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let secs = converge(
        b,
        &Wait {
            swarm: ctx.swarm.as_ref(),
            swarm_before: swarm_before.as_deref(),
            before: Some(&before),
            kinds: &[kind],
            nodes: ctx.nodes(b),
            t0,
        },
    )?;
    let applied = wait_applied(b, &ctx.proxy, px_off, &[kind]);
    let s1 = samples(b, ctx);
    let window = w0.elapsed().as_secs_f64();
    let hist1 = apply_histogram(b);
    record_samples(b, &v, phase, &s0, &s1);
    b.rec
        .add(&v, phase, "proxy_idle_cpu_pct", idle_rate * 100.0);
    b.rec.add(
        &v,
        phase,
        "proxy_cpu_net_s",
        (s1.proxy.cpu_since(&s0.proxy) - idle_rate * window).max(0.0),
    );
    record_decode(b, ctx, phase, &[kind], dec0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let loaded = probe::last_line_time(&ctx.cp.log_since(cp_off), &["resource file loaded", name]);
    let r = &mut b.rec;
    r.add(&v, phase, "converge_s", secs);
    if let Some(d) = loaded.and_then(|t| t.duration_since(t0).ok()) {
        r.add(&v, phase, "detect_s", d.as_secs_f64());
        r.add(&v, phase, "distribute_s", secs - d.as_secs_f64());
    }
    let took: u64 = applied.iter().map(|a| a.took_us).sum();
    r.add(&v, phase, "proxy_apply_s", took as f64 / 1e6);
    r.add(&v, phase, "proxy_apply_updates", applied.len() as f64);
    r.add(&v, phase, "proxy_apply_hist_s", hist1.0 - hist0.0);
    r.add(&v, phase, "proxy_apply_hist_count", hist1.1 - hist0.1);
    log(&format!(
        "[{v}] {phase}: converged in {secs:.3} s; proxy apply {:.3} ms ({} update(s)); control plane {:.2} s CPU",
        took as f64 / 1e3,
        applied.len(),
        s1.cp.cpu_since(&s0.cp)
    ));
    Ok(())
}
