//! The steady/storm load test of one ADS variant: wrk through the proxy
//! while a writer churns resource files, either on a shadow control plane
//! nobody subscribes to (steady) or on the proxy's own (storm).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use corridor_benches::xds_scale::gen::Layout;
use corridor_benches::xds_scale::probe;
use corridor_benches::xds_scale::report::median;
use corridor_config::Kind;

use crate::phases::{samples, wait_nodes, Ctx};
use crate::{log, Bench, Proc, Storm};

/// Steady versus storm, `rounds` times, alternating which goes first.
///
/// Both halves run the same file churn on CPU the control plane shares
/// with wrk and the upstream: during the storm on the proxy's control plane
/// (pushes reach the proxy), during "steady" on a shadow control plane that
/// serves a copy of the files to nobody. So the ratio shows what the pushes
/// cost the proxy, not what validating files costs the load generator's core.
pub(crate) fn load(b: &mut Bench, ctx: &mut Ctx) -> Result<(), String> {
    let v = ctx.v.clone();
    let cp_admin = Bench::addr(b.opts.cp_admin_port);
    wait_nodes(cp_admin, 1)?;
    let shadow_layout = Layout {
        dir: b.opts.work.join(format!("shadow-{v}")),
        ..ctx.layout.clone()
    };
    shadow_layout
        .write_all()
        .map_err(|e| format!("cannot write the shadow files: {e}"))?;
    let args: Vec<String> = vec![
        "control-plane".into(),
        "--dir".into(),
        shadow_layout.dir.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--admin".into(),
        "127.0.0.1:0".into(),
    ];
    let mut shadow = Proc::spawn(
        &format!("shadow control plane ({v})"),
        &b.opts.work.join("pids"),
        b.opts
            .out
            .join(format!("logs/shadow-control-plane-{v}.log")),
        b.opts.cp_cpu,
        &b.opts.corridor,
        &args,
        &[("RUST_LOG", "info")],
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !shadow.log_since(0).contains("control plane serving") {
        shadow.check_alive()?;
        if Instant::now() >= deadline {
            return Err("the shadow control plane did not start within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log(&format!(
        "[{v}] load: wrk -t1 -c{} -d{}s; churn: an endpoint moves every {} ms, all routes change every {} ms (steady: on a shadow control plane; storm: on the proxy's); {} round(s)",
        b.opts.connections, b.opts.duration, b.opts.storm_endpoint_ms, b.opts.storm_routes_ms, b.opts.rounds
    ));
    for round in 1..=b.opts.rounds {
        let order = if round % 2 == 1 {
            ["steady", "storm"]
        } else {
            ["storm", "steady"]
        };
        let mut p99 = [0.0; 2];
        for phase in order {
            let storm = phase == "storm";
            let (layout, churn_cp) = if storm {
                (&ctx.layout, None)
            } else {
                (&shadow_layout, Some(&shadow))
            };
            let writer = Storm::start(layout, b.opts.storm_endpoint_ms, b.opts.storm_routes_ms);
            p99[usize::from(storm)] = wrk(b, ctx, phase, round, writer, churn_cp)?;
            settle(b, ctx, cp_admin)?;
        }
        let [steady, stormy] = p99;
        if steady > 0.0 {
            b.rec.add(&v, "ratio", "p99_ratio", stormy / steady);
            log(&format!(
                "[{v}] round {round}: p99 steady {:.2} ms, storm {:.2} ms, ratio {:.2}",
                steady * 1e3,
                stormy * 1e3,
                stormy / steady
            ));
        }
    }
    Ok(())
}

/// Waits until the proxy ACKed the last response of every type.
fn settle(b: &Bench, ctx: &mut Ctx, cp_admin: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(b.opts.converge_timeout);
    loop {
        ctx.proxy.check_alive()?;
        let nodes = probe::nodes(cp_admin)?;
        if nodes.len() == 1
            && nodes[0]
                .types
                .values()
                .all(|t| !t.pending && t.acked == t.sent)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err("the proxy did not catch up with the control plane after the storm".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One warm-up and one measured wrk run while `writer` churns files (those of
/// the shadow control plane `churn_cp`, or the proxy's); returns the p99 in seconds.
fn wrk(
    b: &mut Bench,
    ctx: &mut Ctx,
    phase: &str,
    round: usize,
    writer: Storm,
    churn_cp: Option<&Proc>,
) -> Result<f64, String> {
    let v = ctx.v.clone();
    let url = format!("http://127.0.0.1:{}/", b.opts.proxy_port);
    let conns = format!("-c{}", b.opts.connections);
    let run = |secs: u64, latency: bool| -> Result<String, String> {
        let mut cmd = Command::new("wrk");
        cmd.args(["-t1", &conns, &format!("-d{secs}s")]);
        if latency {
            cmd.arg("--latency");
        }
        let out = cmd
            .arg(&url)
            .output()
            .map_err(|e| format!("cannot run wrk: {e}"))?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    let raw = |suffix: &str| {
        b.opts
            .out
            .join(format!("raw/{v}-{phase}-r{round}{suffix}.txt"))
    };
    let warm = run(b.opts.warmup, false)?;
    let _ = std::fs::write(raw(".warmup"), warm);
    let px_off = ctx.proxy.log_len();
    let churn = |ctx: &Ctx| churn_cp.unwrap_or(&ctx.cp).sample(b.ticks);
    let c0 = churn(ctx);
    let s0 = samples(b, ctx);
    let start = Instant::now();
    let out = run(b.opts.duration, true)?;
    let elapsed = start.elapsed().as_secs_f64();
    let s1 = samples(b, ctx);
    let c1 = churn(ctx);
    let (ep, routes) = writer.finish();
    let _ = std::fs::write(raw(""), &out);
    ctx.proxy.check_alive()?;
    let w = probe::parse_wrk(&out).ok_or_else(|| format!("wrk gave no result:\n{out}"))?;
    if w.errors > 0 {
        b.warnings.push(format!(
            "{v} {phase} round {round}: {} wrk errors or non-2xx responses",
            w.errors
        ));
    }
    let applied = probe::applied_updates(&ctx.proxy.log_since(px_off));
    let r = &mut b.rec;
    r.add(&v, phase, "p50_s", w.p50_us / 1e6);
    r.add(&v, phase, "p99_s", w.p99_us / 1e6);
    r.add(&v, phase, "rps", w.rps);
    r.add(&v, phase, "errors", w.errors as f64);
    r.add(
        &v,
        phase,
        "proxy_cpu_pct",
        s1.proxy.cpu_since(&s0.proxy) * 100.0 / elapsed,
    );
    r.add(
        &v,
        phase,
        "cp_cpu_pct",
        s1.cp.cpu_since(&s0.cp) * 100.0 / elapsed,
    );
    r.add(
        &v,
        phase,
        "churn_cp_cpu_pct",
        c1.cpu_since(&c0) * 100.0 / elapsed,
    );
    r.add(
        &v,
        phase,
        "proxy_updates_per_s",
        applied.len() as f64 / elapsed,
    );
    for kind in [Kind::RouteTable, Kind::Endpoints] {
        let took: Vec<f64> = applied
            .iter()
            .filter(|a| a.kind == kind.name())
            .map(|a| a.took_us as f64 / 1e6)
            .collect();
        if let Some(m) = median(took.clone()) {
            r.add(&v, phase, &format!("apply_{}_median_s", kind.name()), m);
            r.add(
                &v,
                phase,
                &format!("apply_{}_max_s", kind.name()),
                took.into_iter().fold(0.0, f64::max),
            );
        }
    }
    r.add(&v, phase, "endpoint_writes", ep as f64);
    r.add(&v, phase, "route_writes", routes as f64);
    log(&format!(
        "[{v}] {phase} r{round}: {:.0} rps, p50 {:.2} ms, p99 {:.2} ms, proxy applied {} updates",
        w.rps,
        w.p50_us / 1e3,
        w.p99_us / 1e3,
        applied.len()
    ));
    Ok(w.p99_us / 1e6)
}
