//! The Markdown report: the summary table against the targets, then where
//! the time goes, costs measured in isolation, the load test and warnings.

use std::fmt::Write as _;

use corridor_benches::xds_scale::report::{fmt_secs, table, variant_title, Row, Target};

use crate::Bench;

fn mib(v: f64) -> String {
    format!("{v:.0} MiB")
}

fn cpu(v: f64) -> String {
    format!("{v:.2} s")
}

fn ratio(v: f64) -> String {
    format!("{v:.2}×")
}

fn pct(v: f64) -> String {
    format!("{v:.0} %")
}

fn int(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn per_s(v: f64) -> String {
    format!("{v:.1}/s")
}

fn bytes(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1} MB", v / 1e6)
    } else {
        format!("{:.0} kB", v / 1e3)
    }
}

/// A row reported without a target.
fn info<'a>(figure: &'a str, phase: &'a str, key: &'a str, fmt: fn(f64) -> String) -> Row<'a> {
    Row {
        figure,
        source: (phase, key),
        fmt,
        target_text: "-",
        target: Target::None,
    }
}

/// The whole report.
pub fn render(b: &Bench) -> String {
    let o = &b.opts;
    let sh = &b.shape;
    let variants = &o.variants;
    let mut s = String::new();
    let _ = writeln!(s, "## Control-stream scale benchmark\n");
    let _ = writeln!(
        s,
        "{}{} routes ({} hosts × {} + a catch-all) and {} endpoints ({} clusters × {}, in {} files), {} subscribers (1 `corridor run` proxy + {} `corridor_xds` engine clients that decode every resource they get, except state-of-the-world resources they hold at the same name and version, as the proxy does), served by `corridor control-plane` from YAML files. The proxy is pinned to a CPU of its own; the control plane and the engine clients share the other, except during the two initial convergences, when they may use both CPUs, the proxy's included (each real subscriber has its own CPU). Medians over {} update(s) and {} load round(s) (wrk -c{}, {} s); `benches/xds_scale.sh`.\n",
        if o.header.is_empty() { String::new() } else { format!("{} ", o.header) },
        int(sh.routes() as f64),
        sh.vhosts,
        sh.routes_per_vhost,
        int(sh.endpoints() as f64),
        int(sh.clusters as f64),
        sh.endpoints_per_cluster,
        sh.endpoint_files,
        o.subscribers,
        o.subscribers.saturating_sub(1),
        o.updates,
        o.rounds,
        o.connections,
        o.duration,
    );
    let conv = |figure, phase| Row {
        figure,
        source: (phase, "converge_s"),
        fmt: fmt_secs,
        target_text: "< 2 s",
        target: Target::Below(2.0),
    };
    let rows = [
        conv(
            "converge: initial push (all subscribers connect at once; engine clients ACK what they receive, the proxy decodes and applies it)",
            "initial_ack",
        ),
        Row {
            target_text: "- (CPU-bound here: 100 decoders on 2 cores)",
            target: Target::None,
            ..conv(
                "converge: initial push, every engine client also decoding on this machine",
                "initial",
            )
        },
        conv("converge: 10k routes change", "routes"),
        conv("converge: 1 endpoint changes", "endpoint"),
        conv(
            "converge, engine clients only ACK: 10k routes change",
            "routes_ack",
        ),
        conv(
            "converge, engine clients only ACK: 1 endpoint changes",
            "endpoint_ack",
        ),
        Row {
            figure: "proxy apply: 10k-route update",
            source: ("routes", "proxy_apply_s"),
            fmt: fmt_secs,
            target_text: "< 200 ms",
            target: Target::Below(0.2),
        },
        Row {
            figure: "proxy apply: 1-endpoint update",
            source: ("endpoint", "proxy_apply_s"),
            fmt: fmt_secs,
            target_text: "< 1 ms",
            target: Target::Below(0.001),
        },
        info(
            "proxy CPU, 10k-route update (all threads: receive, decode, apply, ACK; minus the idle rate)",
            "routes",
            "proxy_cpu_net_s",
            fmt_secs,
        ),
        info(
            "proxy CPU, 1-endpoint update (all threads, minus the idle rate)",
            "endpoint",
            "proxy_cpu_net_s",
            fmt_secs,
        ),
        info("proxy p99, steady load", "steady", "p99_s", fmt_secs),
        info(
            "proxy p99 during the push storm",
            "storm",
            "p99_s",
            fmt_secs,
        ),
        Row {
            figure: "p99 storm ÷ steady (median of rounds)",
            source: ("ratio", "p99_ratio"),
            fmt: ratio,
            target_text: "≤ 1.2×",
            target: Target::AtMost(1.2),
        },
        info(
            "control-plane CPU: initial push",
            "initial",
            "cp_cpu_s",
            cpu,
        ),
        info(
            "control-plane CPU: 10k-route change",
            "routes",
            "cp_cpu_s",
            cpu,
        ),
        info(
            "control-plane CPU: 1-endpoint change",
            "endpoint",
            "cp_cpu_s",
            cpu,
        ),
        info(
            "control-plane RSS: files loaded, no subscriber",
            "start",
            "cp_rss_mib",
            mib,
        ),
        info(
            "control-plane RSS: after the initial push",
            "initial",
            "cp_rss_mib",
            mib,
        ),
        info(
            "control-plane peak RSS (VmHWM), end of the updates",
            "updates",
            "cp_hwm_mib",
            mib,
        ),
        info(
            "control-plane peak RSS above loaded, per subscriber",
            "updates",
            "cp_hwm_per_subscriber_mib",
            |v| format!("{v:.1} MiB"),
        ),
    ];
    s.push_str(&table(&b.rec, variants, &rows));

    let _ = writeln!(s, "\n### Where the time goes\n");
    let detail = [
        info(
            "control plane start: read + validate every file",
            "start",
            "cp_load_s",
            fmt_secs,
        ),
        info(
            "10k routes: file written → control plane validated it",
            "routes",
            "detect_s",
            fmt_secs,
        ),
        info(
            "10k routes: validated → last subscriber ACKed",
            "routes",
            "distribute_s",
            fmt_secs,
        ),
        info(
            "1 endpoint: file written → control plane validated it",
            "endpoint",
            "detect_s",
            fmt_secs,
        ),
        info(
            "1 endpoint: validated → last subscriber ACKed",
            "endpoint",
            "distribute_s",
            fmt_secs,
        ),
        info(
            "engine client sink time per client: initial",
            "initial",
            "client_decode_s",
            fmt_secs,
        ),
        info(
            "engine client sink time per client: 10k routes",
            "routes",
            "client_decode_s",
            fmt_secs,
        ),
        info(
            "engine client sink time per client: 1 endpoint",
            "endpoint",
            "client_decode_s",
            fmt_secs,
        ),
        info(
            "engine clients' CPU (all, one process): initial",
            "initial",
            "clients_cpu_s",
            cpu,
        ),
        info(
            "engine clients' CPU: 10k routes",
            "routes",
            "clients_cpu_s",
            cpu,
        ),
        info(
            "engine clients' CPU: 1 endpoint",
            "endpoint",
            "clients_cpu_s",
            cpu,
        ),
        info(
            "proxy apply, initial (4 types, sum of took_us)",
            "initial",
            "proxy_apply_s",
            fmt_secs,
        ),
        info(
            "proxy apply 10k routes, from /metrics",
            "routes",
            "proxy_apply_hist_s",
            fmt_secs,
        ),
        info(
            "proxy apply 1 endpoint, from /metrics",
            "endpoint",
            "proxy_apply_hist_s",
            fmt_secs,
        ),
        info(
            "proxy CPU per 10k-route update, gross (with the idle rate)",
            "routes",
            "proxy_cpu_s",
            fmt_secs,
        ),
        info(
            "proxy CPU per 1-endpoint update, gross (with the idle rate)",
            "endpoint",
            "proxy_cpu_s",
            fmt_secs,
        ),
        info(
            "proxy idle CPU (measured just before each update)",
            "endpoint",
            "proxy_idle_cpu_pct",
            |v| format!("{v:.2} %"),
        ),
        info(
            "proxy RSS after the updates",
            "endpoint",
            "proxy_rss_mib",
            mib,
        ),
        info(
            "control-plane CPU, ACK-only clients: initial push",
            "initial_ack",
            "cp_cpu_s",
            cpu,
        ),
        info(
            "control-plane CPU, ACK-only clients: 10k-route change",
            "routes_ack",
            "cp_cpu_s",
            cpu,
        ),
        info(
            "control-plane CPU, ACK-only clients: 1-endpoint change",
            "endpoint_ack",
            "cp_cpu_s",
            cpu,
        ),
        info(
            "engine clients' CPU, ACK-only: initial push",
            "initial_ack",
            "clients_cpu_s",
            cpu,
        ),
        info(
            "engine clients' CPU, ACK-only: 1-endpoint change",
            "endpoint_ack",
            "clients_cpu_s",
            cpu,
        ),
    ];
    s.push_str(&table(&b.rec, variants, &detail));

    let mut each = String::new();
    for v in variants {
        for phase in ["routes", "endpoint", "routes_ack", "endpoint_ack"] {
            let list: Vec<String> = b
                .rec
                .all(v, phase, "proxy_apply_s")
                .iter()
                .map(|x| format!("{:.1}", x * 1e3))
                .collect();
            if !list.is_empty() {
                let _ = write!(
                    each,
                    "\n- {} {phase}: {} ms",
                    variant_title(v),
                    list.join(", ")
                );
            }
        }
    }
    if !each.is_empty() {
        let _ = writeln!(
            s,
            "\nProxy apply (`took_us`) of every update, in order:{each}"
        );
    }
    let _ = writeln!(s, "\n### Costs measured alone (this process, one thread)\n");
    let costs = [
        info("routes.yaml size", "cost", "routes_yaml_bytes", bytes),
        info("route table, protobuf", "cost", "routes_proto_bytes", bytes),
        info("all endpoints files", "cost", "endpoints_yaml_bytes", bytes),
        info("all Endpoints, protobuf", "cost", "endpoints_proto_bytes", bytes),
        info("one endpoints file (the one an endpoint update rewrites)", "cost", "churn_yaml_bytes", bytes),
        info("parse + validate routes.yaml (`check_file`, as the control plane)", "cost", "cp_check_routes_s", fmt_secs),
        info("parse + validate one endpoints file", "cost", "cp_check_churn_file_s", fmt_secs),
        info("parse + validate all endpoints files", "cost", "cp_check_all_endpoints_s", fmt_secs),
        info("decode the route table (before `took_us` starts)", "cost", "decode_routes_s", fmt_secs),
        info("decode every Endpoints (SotW without resource names)", "cost", "decode_all_endpoints_s", fmt_secs),
        info("decode one Endpoints (a delta endpoint update)", "cost", "decode_one_endpoints_s", fmt_secs),
        info("`Store::apply` + `snapshot`: new 10k-route table (inside `took_us`)", "cost", "store_routes_s", fmt_secs),
        info("`Store::apply` + `snapshot`: 1 Endpoints (delta, inside `took_us`)", "cost", "store_endpoint_delta_s", fmt_secs),
        info("`Store::apply` + `snapshot`: 1 changed + 999 unchanged Endpoints (SotW, inside `took_us`)", "cost", "store_endpoint_sotw_s", fmt_secs),
        info("… of which `Store::apply`: 10k-route table", "cost", "store_routes_apply_only_s", fmt_secs),
        info("… of which `Store::apply`: 1 Endpoints (delta)", "cost", "store_endpoint_delta_apply_only_s", fmt_secs),
        info("… of which `Store::apply`: all Endpoints (SotW)", "cost", "store_endpoint_sotw_apply_only_s", fmt_secs),
    ];
    s.push_str(&table(&b.rec, &["-".to_string()], &costs));

    if !o.skip_storm {
        let _ = writeln!(
            s,
            "\n### Load test\n\nwrk -t1 -c{} for {} s after {} s of warm-up, against the pushed listener (`/` → the upstream nginx's endpoints); file churn: an endpoint of {} moves every {} ms and all 10k routes change every {} ms. Storm: the churn is on the proxy's control plane, whose pushes the proxy applies. Steady: the same churn on a shadow control plane that serves a copy of the files to nobody, so that both runs share CPU {} with the same validation work. Only the proxy is subscribed; rounds alternate which run goes first.\n",
            o.connections, o.duration, o.warmup,
            corridor_benches::xds_scale::gen::cluster_name(sh.clusters / 2),
            o.storm_endpoint_ms, o.storm_routes_ms,
            o.cp_cpu.map_or("-".to_string(), |c| c.to_string())
        );
        let load = [
            info("steady: rps", "steady", "rps", int),
            info("storm: rps", "storm", "rps", int),
            info("steady: p50", "steady", "p50_s", fmt_secs),
            info("storm: p50", "storm", "p50_s", fmt_secs),
            info("steady: proxy CPU", "steady", "proxy_cpu_pct", pct),
            info("storm: proxy CPU", "storm", "proxy_cpu_pct", pct),
            info(
                "steady: shadow control-plane CPU (the churn)",
                "steady",
                "churn_cp_cpu_pct",
                pct,
            ),
            info(
                "storm: control-plane CPU (the churn + pushes)",
                "storm",
                "churn_cp_cpu_pct",
                pct,
            ),
            info(
                "storm: updates the proxy applied",
                "storm",
                "proxy_updates_per_s",
                per_s,
            ),
            info(
                "storm: proxy apply, route table (median)",
                "storm",
                "apply_RouteTable_median_s",
                fmt_secs,
            ),
            info(
                "storm: proxy apply, route table (max)",
                "storm",
                "apply_RouteTable_max_s",
                fmt_secs,
            ),
            info(
                "storm: proxy apply, endpoints (median)",
                "storm",
                "apply_Endpoints_median_s",
                fmt_secs,
            ),
            info(
                "storm: proxy apply, endpoints (max)",
                "storm",
                "apply_Endpoints_max_s",
                fmt_secs,
            ),
        ];
        s.push_str(&table(&b.rec, variants, &load));
        let mut rounds = String::new();
        for v in variants {
            let r = b.rec.all(v, "ratio", "p99_ratio");
            if !r.is_empty() {
                let list: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
                let _ = write!(rounds, " {}: {};", variant_title(v), list.join(", "));
            }
        }
        if !rounds.is_empty() {
            let _ = writeln!(s, "\np99 ratio per round:{}", rounds.trim_end_matches(';'));
        }
    }
    if !b.warnings.is_empty() {
        s.push_str("\nWarnings:\n\n");
        for w in &b.warnings {
            let _ = writeln!(s, "- {w}");
        }
    }
    s
}
