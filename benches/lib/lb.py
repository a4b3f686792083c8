#!/usr/bin/env python3
"""Helpers for benches/lb.sh, the load-balancing benchmark (Python 3 standard
library only; shares percentile and metric loading with bench.py).

Subcommands (all print to stdout):
  window LOG BEFORE AFTER SLOW_PORT SENT
        one measured run: latency percentiles of the successful requests in the
        h2load --log-file LOG, errors (failed or non-2xx/3xx requests, and
        requests of the SENT that never completed), and the requests each
        endpoint received between the lb_upstream /__stats tables BEFORE and
        AFTER, with the share of the endpoint on SLOW_PORT -> "key=value" lines
  report DIR
        Markdown report from DIR/meta.env and DIR/metrics.tsv
"""

import os
import statistics
import sys

sys.dont_write_bytecode = True  # no __pycache__ in benches/lib
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import load_meta, load_metrics, percentile  # noqa: E402

# Share of PROXY_CPU used by processes other than the proxy under test (in
# a measured window) from which the report flags the target as disturbed.
OTHER_CPU_WARN_PCT = 5.0

# Target ids in the order lb.sh runs them, with the label of the report.
TARGETS = [
    ("direct", "direct (one fast endpoint, no proxy)"),
    ("corridor-rr", "corridor `round_robin`"),
    ("corridor-lr", "corridor `least_request`"),
    ("corridor-ewma", "corridor `peak_ewma`"),
    ("envoy", "envoy `LEAST_REQUEST`"),
    ("nginx", "nginx `least_conn`"),
    ("haproxy", "haproxy `leastconn`"),
]


# --------------------------------------------------------------------------
# one measured run


def read_stats(path):
    """lb_upstream's /__stats table -> {port: requests}."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out[int(parts[0])] = int(parts[2])
    if not out:
        raise SystemExit(f"lb.py: no endpoint counters in {path}")
    return out


def window(log, before, after, slow_port, sent):
    lats, starts, failed = [], [], 0
    with open(log) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            start, status, lat = int(parts[0]), int(parts[1]), int(parts[2])
            if status < 200 or status >= 400:
                failed += 1
                continue
            starts.append(start)
            lats.append(lat)
    lats.sort()
    done = len(lats) + failed
    res = {
        "sent": sent,
        "requests": len(lats),
        "errors": failed + max(0, sent - done),
        "not_completed": max(0, sent - done),
    }
    if lats:
        span = (max(starts) - min(starts)) / 1e6 if len(starts) > 1 else 0.0
        res["achieved_rps"] = len(lats) / span if span > 0 else 0.0
        for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
            res[f"{name}_us"] = percentile(lats, p)
        res["max_us"] = lats[-1]
    b, a = read_stats(before), read_stats(after)
    total = 0
    for port in sorted(a):
        n = a[port] - b.get(port, 0)
        res[f"endpoint_{port}"] = n
        total += n
    slow = a.get(slow_port, 0) - b.get(slow_port, 0)
    res["upstream_requests"] = total
    res["slow_requests"] = slow
    if total > 0:
        res["slow_share_pct"] = 100.0 * slow / total
    for k, v in res.items():
        print(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}")


# --------------------------------------------------------------------------
# report


def values(data, target, key):
    return data.get(target, {}).get(key, [])


def fmt_ms(us):
    if us is None:
        return "-"
    ms = us / 1000.0
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def fmt_ratio(a, b):
    if a is None or not b:
        return "-"
    r = a / b
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def fmt_pct(v):
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 1 else f"{v:.1f}"


def report(d):
    meta = load_meta(d)
    data = load_metrics(d)  # {target: {key: [value per round]}}
    rate = float(meta.get("RATE", "0") or 0)
    measured = [t for t in meta.get("TARGETS", "").split(",") if t]
    rows, warnings = [], []

    def med(t, k):
        v = values(data, t, k)
        return statistics.median(v) if v else None

    def total(t, k):
        v = values(data, t, k)
        return sum(v) if v else None

    direct_p99 = med("direct", "p99_us")
    for t, label in TARGETS:
        if t not in measured:
            continue
        p50, p99 = med(t, "p50_us"), med(t, "p99_us")
        errors = total(t, "errors")
        sent = total(t, "sent")
        up_total = total(t, "upstream_requests")
        up_slow = total(t, "slow_requests")
        share = None
        if t != "direct" and up_total:
            share = 100.0 * up_slow / up_total
        rows.append(
            f"| {label} | {fmt_ms(p50)} | {fmt_ms(p99)} | {fmt_ratio(p99, direct_p99)} | "
            f"{fmt_pct(share)} | {int(errors) if errors is not None else '-'} |"
        )
        if p99 is None:
            warnings.append(f"{t}: no successful request was measured (see raw/)")
        if errors:
            warnings.append(f"{t}: {int(errors)} failed, non-2xx/3xx or never completed requests")
        for r in values(data, t, "achieved_rps"):
            if rate and r < 0.95 * rate:
                warnings.append(
                    f"{t}: achieved {r:.0f} req/s of the {rate:.0f} asked for in a round "
                    "(the load generator or the target could not keep up)")
                break
        for o in values(data, t, "other_cpu_pct"):
            if o >= OTHER_CPU_WARN_PCT:
                warnings.append(
                    f"{t}: other processes used {o:.0f} % of the proxies' CPU during a measured window "
                    "(the machine was busy); its latencies are disturbed, re-run")
                break
        if t != "direct" and sent and up_total is not None and up_total != sent:
            warnings.append(
                f"{t}: the endpoints received {int(up_total)} requests for {int(sent)} sent "
                "(retries, or requests lost)")
    for k, v in sorted(meta.items()):
        if k.startswith("SKIPPED_"):
            warnings.insert(0, f"{k[len('SKIPPED_'):]} was NOT measured in this run: {v}")
    for w in meta.get("WARNINGS", "").split(" | "):
        if w:
            warnings.append(w)
    try:
        if float(meta.get("LOADAVG", "0").split()[0]) >= 0.5:
            warnings.append(
                f"the machine was busy at the start (load average {meta.get('LOADAVG')}); re-run for clean figures")
    except ValueError:
        pass

    endpoints = meta.get("ENDPOINTS", "?")
    rounds = meta.get("ROUNDS", "1")
    out = []
    out.append("# Load balancing with one slow endpoint")
    out.append("")
    out.append(
        f"{meta.get('DATE', '?')} · corridor {meta.get('GIT_REV', '?')} · {endpoints} endpoints on 127.0.0.1, "
        f"one answering {meta.get('SLOW_MS', '?')} ms later · {meta.get('RATE', '?')} req/s open loop over "
        f"{meta.get('CONNECTIONS', '?')} HTTP/1.1 connections · {meta.get('DURATION', '?')} s measured after "
        f"{meta.get('WARMUP', '?')} s of warm-up · {rounds} round{'s' if rounds != '1' else ''}"
        f"{' (medians)' if rounds != '1' else ''} · load average {meta.get('LOADAVG', '?')} → "
        f"{meta.get('LOADAVG_END', '?')}")
    out.append("")
    out.append("| target | p50 ms | p99 ms | p99 / fast-endpoint p99 | slow endpoint share % | errors |")
    out.append("|---|---:|---:|---:|---:|---:|")
    out.extend(rows)
    out.append("")
    try:
        even = f"{100.0 / int(endpoints):.0f} %"
    except ValueError:
        even = "an even share"
    out.append(
        f"Fast endpoints' p99 (direct, same rate and connections): {fmt_ms(direct_p99)} ms. "
        f"An even spread (round robin) sends the slow endpoint {even} of the requests; "
        "its share is counted by the endpoints themselves over the measured window.")
    out.append("")
    ran = set(measured)
    notes = []
    if ran & {"corridor-rr", "corridor-lr", "corridor-ewma"}:
        notes.append("Corridor's clusters with `outlier_detection: {}`" if meta.get("CORRIDOR_OUTLIER") == "1"
                     else "Corridor's clusters WITHOUT `outlier_detection` (CORRIDOR_OUTLIER=0)")
    if "envoy" in ran:
        notes.append("Envoy's with `outlier_detection: {}`")
    versions = [
        f"{meta.get('CORRIDOR_VERSION')} ({meta.get('CORRIDOR_BIN')})" if meta.get("CORRIDOR_VERSION") else "",
        meta.get("NGINX_VERSION", "") if "nginx" in ran else "",
        meta.get("HAPROXY_VERSION", "") if "haproxy" in ran else "",
        meta.get("ENVOY_VERSION", "") if "envoy" in ran else "",
        meta.get("H2LOAD_VERSION", ""),
    ]
    pinning = (f"Proxies pinned to CPU {meta.get('PROXY_CPU', '?')}, load generator and endpoints to "
               f"CPU {meta.get('LOAD_CPU', '?')}." if meta.get("PINNED") == "1" else "Not pinned.")
    out.append(
        f"Versions: {', '.join(v for v in versions if v)}"
        f"{'; ' + ', '.join(notes) if notes else ''}. {pinning} "
        f"CPU: {meta.get('CPU_MODEL', '?')} ({meta.get('NPROC', '?')} CPUs).")
    if warnings:
        out.append("")
        out.append("**Warnings**")
        out.append("")
        out.extend(f"- {w}" for w in warnings)
    print("\n".join(out))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "window" and len(args) == 5:
        window(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "report" and len(args) == 1:
        report(args[0])
    else:
        sys.exit(f"lb.py: bad command line {argv[1:]}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
