#!/usr/bin/env python3
"""Report of benches/sse.sh, the SSE benchmark (Python 3 standard library
only; shares meta and metric loading with bench.py).

Subcommands (all print to stdout):
  report DIR   Markdown report from DIR/meta.env and DIR/metrics.tsv
"""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in benches/lib
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import TARGET_ORDER, fmt_ratio, load_meta, load_metrics  # noqa: E402
from bench import fmt_num as fmt  # noqa: E402

# sse_load's own CPU share from which a run's client may have been the
# bottleneck; the proxy CPU share under which run 2 did not saturate it.
LOAD_CPU_WARN_PCT = 90.0
SATURATED_PCT = 90.0
# Share of either pinned CPU used by other processes during a run from which
# the report flags the run as disturbed.
OTHER_CPU_WARN_PCT = 5.0


def fmt_ms(us):
    """Microseconds as ms, 3 significant digits or whole ms."""
    if us is None:
        return "-"
    ms = us / 1000.0
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:,.0f}"


def report(d):
    meta = load_meta(d)
    data = load_metrics(d)  # {target: {key: [value]}}, one round
    measured = meta.get("TARGETS", "").split(",")
    targets = [t for t in TARGET_ORDER if t in measured]
    streams = int(meta.get("STREAMS", "0") or 0)
    sat = meta.get("SKIP_SAT") != "1"

    def get(t, k):
        v = data.get(t, {}).get(k)
        return v[0] if v else None

    def per_stream_kib(t):
        peak, idle = get(t, "stream_rss_peak_kib"), get(t, "stream_rss_idle_kib")
        if peak is None or idle is None or not streams:
            return None
        return (peak - idle) / streams

    def cpu_per_event(t):
        ms, ev = get(t, "stream_proxy_cpu_ms"), get(t, "stream_events")
        if ms is None or not ev:
            return None
        return ms * 1000.0 / ev

    nginx_kib, nginx_cpu = per_stream_kib("nginx"), cpu_per_event("nginx")
    cols = ["target", "idle RSS MiB", "RSS KiB/stream", "vs nginx", "CPU µs/event", "vs nginx",
            "gap ms p50 / p99 / max", "lost"]
    if sat:
        cols += ["sat: proxy CPU %", "sat: 1st event ms p50 / p99 / max", "sat: gap ms p99 / max",
                 "sat: delay ms p99", "sat: Jain @½", "sat: events/s", "sat: lost"]
    rows, warnings, details = [], [], []
    for t in targets:
        proxy = t != "direct"
        idle = get(t, "stream_rss_idle_kib")
        kib, cpu = per_stream_kib(t), cpu_per_event(t)
        gaps = " / ".join(fmt_ms(get(t, f"stream_gap_{p}_us")) for p in ("p50", "p99", "max"))
        row = [
            f"**{t}**",
            fmt(idle / 1024.0, 1) if proxy and idle is not None else "-",
            fmt(kib, 1) if proxy else "-",
            fmt_ratio(kib, nginx_kib) if proxy else "-",
            fmt(cpu, 1) if proxy else "-",
            fmt_ratio(cpu, nginx_cpu) if proxy else "-",
            gaps,
            fmt(get(t, "stream_lost")),
        ]
        if sat:
            busy = get(t, "sat_proxy_cpu_window_pct")
            row += [
                fmt(busy if busy is not None else get(t, "sat_proxy_cpu_pct")) if proxy else "-",
                " / ".join(fmt_ms(get(t, f"sat_ttfe_{p}_us")) for p in ("p50", "p99", "max")),
                " / ".join(fmt_ms(get(t, f"sat_gap_{p}_us")) for p in ("p99", "max")),
                fmt_ms(get(t, "sat_delay_p99_us")),
                fmt(get(t, "sat_jain_half"), 3),
                fmt(get(t, "sat_events_per_s")),
                fmt(get(t, "sat_lost")),
            ]
        rows.append(row)

        # Per target: what the table leaves out, and what to distrust.
        phases = [("stream", "run 1")] + ([("sat", "run 2")] if sat else [])
        parts = []
        for ph, label in phases:
            if get(t, f"{ph}_failed"):
                warnings.append(f"{t}: {label} returned no result (see raw/{ph}-{t}.txt)")
                continue
            bits = []

            def cpu(who):
                whole, window = get(t, f"{ph}_{who}_cpu_pct"), get(t, f"{ph}_{who}_cpu_window_pct")
                return fmt(whole) + (f" ({fmt(window)} with all streams open)" if window is not None else "")

            if proxy:
                bits.append(f"proxy CPU {cpu('proxy')} %")
            bits.append(f"sse_load CPU {cpu('load')} %")
            bits.append(f"delay p50/p99 {fmt_ms(get(t, f'{ph}_delay_p50_us'))}/{fmt_ms(get(t, f'{ph}_delay_p99_us'))} ms")
            bits.append(f"{fmt(get(t, f'{ph}_events_per_s'))} of {fmt(get(t, f'{ph}_offered_events_per_s'))} events/s")
            bits.append(f"{fmt(get(t, f'{ph}_delivered_half_pct'))} % delivered at ½")
            bits.append(f"last event at {fmt(get(t, f'{ph}_last_event_ms'))} ms of {fmt(get(t, f'{ph}_nominal_ms'))}")
            if proxy and ph == "sat":
                bits.append(f"RSS {fmt((get(t, 'sat_rss_idle_kib') or 0) / 1024)} → "
                            f"{fmt((get(t, 'sat_rss_peak_kib') or 0) / 1024)} MiB")
            parts.append(f"{label}: " + ", ".join(bits))
            lost, failed = get(t, f"{ph}_lost"), get(t, f"{ph}_streams_failed")
            late = get(t, f"{ph}_streams_timed_out")
            if lost:
                warnings.append(f"{t}: {label} lost {fmt(lost)} events ({fmt(failed)} streams failed, "
                                f"{fmt(late)} unfinished after the grace time)")
            odd = (get(t, f"{ph}_out_of_order") or 0) + (get(t, f"{ph}_malformed") or 0)
            if odd:
                warnings.append(f"{t}: {label} received {fmt(odd)} events out of order or malformed")
            # Busy shares while every stream is open (the whole run's when
            # the run has no such window).
            lc = get(t, f"{ph}_load_cpu_window_pct")
            lc = get(t, f"{ph}_load_cpu_pct") if lc is None else lc
            if lc is not None and lc >= LOAD_CPU_WARN_PCT:
                warnings.append(f"{t}: sse_load used {lc:.0f} % of its CPU in {label}: the client and "
                                "upstream may have been the bottleneck there")
            for cpu in ("load", "proxy"):
                o = get(t, f"{ph}_other_{cpu}_cpu_pct")
                if o is not None and o >= OTHER_CPU_WARN_PCT:
                    warnings.append(f"{t}: other processes used {o:.0f} % of the {cpu} CPU during {label} "
                                    "(the machine was busy): its figures are disturbed, re-run")
            pc = get(t, f"{ph}_proxy_cpu_window_pct")
            pc = get(t, f"{ph}_proxy_cpu_pct") if pc is None else pc
            if proxy and ph == "stream" and pc is not None and pc >= SATURATED_PCT:
                warnings.append(f"{t}: its CPU was {pc:.0f} % busy in run 1: saturated, so its gaps "
                                "include queueing")
            if proxy and ph == "sat" and pc is not None and pc < SATURATED_PCT:
                warnings.append(f"{t}: run 2 kept its CPU only {pc:.0f} % busy with all streams open: it "
                                "was not saturated (raise SAT_STREAMS or lower SAT_INTERVAL_MS)")
        details.append(f"- **{t}**: " + "; ".join(parts))

    if sat and "direct" in targets:
        interval_us = float(meta.get("SAT_INTERVAL_MS", "0") or 0) * 1000
        gp99, lost = get("direct", "sat_gap_p99_us"), get("direct", "sat_lost")
        if gp99 is not None and interval_us and (gp99 > 1.5 * interval_us or lost):
            warnings.append(f"direct did not deliver the saturation load on time (gap p99 {fmt_ms(gp99)} ms "
                            f"for {interval_us / 1000:.0f} ms spacing): sse_load itself is a bottleneck at "
                            "that load, lower SAT_STREAMS")
    for k, v in sorted(meta.items()):
        if k.startswith("SKIPPED_"):
            warnings.insert(0, f"**{k[len('SKIPPED_'):]} was NOT measured in this run**: {v}")
    for w in meta.get("WARNINGS", "").split(" | "):
        if w:
            warnings.append(w)
    try:
        if float(meta.get("LOADAVG", "0").split()[0]) >= 0.5:
            warnings.append(f"the machine was busy at the start (load average {meta.get('LOADAVG')}): "
                            "compare ratios, or re-run when idle")
    except ValueError:
        pass

    def offered(n, i):
        try:
            return f"{int(n) * 1000 / int(i):,.0f}"
        except (ValueError, ZeroDivisionError):
            return "?"

    out = []
    out.append(f"### SSE streaming through one proxy worker — {meta.get('DATE', '')}")
    out.append("")
    out.append(f"- host: {meta.get('CPU_MODEL', '?')}, {meta.get('NPROC', '?')} CPUs, kernel {meta.get('KERNEL', '?')}; "
               f"load average {meta.get('LOADAVG', '?')} → {meta.get('LOADAVG_END', '?')}")
    versions = [v for v in (meta.get("CORRIDOR_VERSION") if "corridor" in targets else "",
                            meta.get("NGINX_VERSION") if "nginx" in targets else "",
                            meta.get("HAPROXY_VERSION") if "haproxy" in targets else "",
                            meta.get("ENVOY_VERSION") if "envoy" in targets else "") if v]
    out.append(f"- versions: {', '.join(versions) or '-'}; git {meta.get('GIT_REV', '?')}"
               + (f"; corridor `{meta.get('CORRIDOR_BIN')}`" if "corridor" in targets else ""))
    out.append(f"- run 1: {meta.get('STREAMS')} streams × {meta.get('EVENTS')} events of 100 bytes, "
               f"{meta.get('INTERVAL_MS')} ms apart ({offered(meta.get('STREAMS'), meta.get('INTERVAL_MS'))} events/s), "
               f"connections opened over {meta.get('RAMP_MS')} ms; RSS of the proxy's process tree every "
               f"{meta.get('SAMPLE_MS')} ms; RSS KiB/stream = (peak − idle before the run) ÷ streams; CPU µs/event = "
               "the proxy's CPU time (schedstat, all threads) over the run ÷ events delivered")
    if sat:
        out.append(f"- run 2 (sat): {meta.get('SAT_STREAMS')} streams × {meta.get('SAT_EVENTS')} events, "
                   f"{meta.get('SAT_INTERVAL_MS')} ms apart ({offered(meta.get('SAT_STREAMS'), meta.get('SAT_INTERVAL_MS'))} "
                   f"events/s offered), same ramp; proxy CPU % while every stream is open (from the end of the "
                   "ramp to the nominal end of the first stream; ≥ 90: saturated); 1st event from connect start; "
                   "delay = arrival − the upstream's "
                   "send time; Jain = fairness of the streams' progress (events ÷ events due) at the nominal "
                   "halfway point; events/s delivered in the same window")
    out.append(f"- gap = time between two events of one stream as the client reads them (upstream spacing "
               f"{meta.get('INTERVAL_MS')} ms{', ' + meta.get('SAT_INTERVAL_MS', '?') + ' ms in run 2' if sat else ''}); "
               "lost = events due and never received")
    out.append("- one worker each (nginx `worker_processes 1` with `proxy_buffering off` and upstream keepalive, "
               "haproxy `nbthread 1`, corridor `worker_threads: 1`, envoy `--concurrency 1`), HTTP/1.1 both sides; "
               + (f"proxy on CPU {meta.get('PROXY_CPU')}, sse_load (upstream + client, one thread) on CPU "
                  f"{meta.get('LOAD_CPU')}" if meta.get("PINNED") == "1" else "**NOT pinned**"))
    out.append("")
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    out.append("")
    out.extend(details)
    if warnings:
        out.append("")
        out.append("Warnings:")
        out.extend(f"- {w}" for w in warnings)
    print("\n".join(out))


def main(argv):
    if len(argv) == 3 and argv[1] == "report":
        report(argv[2])
    else:
        sys.exit(f"sse.py: bad command line {argv[1:]}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
