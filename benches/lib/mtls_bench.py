#!/usr/bin/env python3
"""Helpers for benches/mtls.sh (Python 3 standard library only).

Subcommands (all print to stdout):
  sample PID STATUS_PORT SOCK BACKEND CPU [ENVOY_ADMIN CLUSTER]
        one sample of every counter a measured window needs, as key=value
        lines: ticks (utime+stime clock ticks of PID and its descendants,
        /proc/PID/stat), up_requests and up_accepts (the upstream nginx's
        stub_status on 127.0.0.1:STATUS_PORT), front_connect and front_reuse
        (the front haproxy's counters for BACKEND's server, from its stats
        socket SOCK; BACKEND "-" skips them), cpu_busy and cpu_total (ticks of
        CPU number CPU in /proc/stat); with ENVOY_ADMIN and CLUSTER also
        hs_handshakes, hs_reused and hs_connections (that Envoy's
        cluster.CLUSTER.ssl.handshake, .ssl.session_reused, .upstream_cx_total)
  envoy-tls ENVOY_ADMIN CLUSTER
        what the cluster's TLS connections negotiated (from its ssl.versions.*,
        ssl.ciphers.*, ssl.curves.*, ssl.sigalgs.* counters), one line
  handshake HOST PORT SECONDS CA CERT KEY SNI
        the full-handshake client: for SECONDS, one new TCP connection and
        one new TLS session (no resumption) per request, presenting CERT/KEY,
        verifying the server against CA and SNI, sending
        `GET / HTTP/1.1` with `Connection: close` and reading the answer to
        EOF; a connection counts when the answer is `200` with body `hello`.
        Prints handshakes, failed, reused (sessions resumed: must be 0),
        seconds, version, cipher, first_error. Exits 1 if the first 20
        attempts all failed (the proxy refuses the handshake or the request).
  report DIR
        the Markdown report from DIR/meta.env and DIR/metrics.tsv
"""

import os
import socket
import ssl
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import bench  # noqa: E402  (lib/bench.py: cpu_ticks, load_meta)


# --------------------------------------------------------------------------
# sampling


def ask(s, request):
    """Sends REQUEST on socket S and reads until the peer closes."""
    s.sendall(request)
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            return data
        data += c


def nginx_status(port):
    """(accepts, requests) of nginx's stub_status; the reading's own
    connection and request are included."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = ask(s, b"GET / HTTP/1.0\r\nHost: status\r\n\r\n")
    lines = data.decode("latin-1").splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("server accepts handled requests"):
            accepts, _handled, requests = (int(x) for x in lines[i + 1].split())
            return accepts, requests
    raise SystemExit(f"mtls_bench.py: no stub_status counters from 127.0.0.1:{port}")


def haproxy_server_stats(sock, backend):
    """(connect, reuse) of the server `proxy` of BACKEND."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sock)
    data = ask(s, b"show stat\n")
    s.close()
    lines = data.decode().splitlines()
    hdr = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        f = dict(zip(hdr, line.split(",")))
        if f.get("pxname") == backend and f.get("svname") == "proxy":
            return int(f.get("connect") or 0), int(f.get("reuse") or 0)
    raise SystemExit(f"mtls_bench.py: no server 'proxy' in backend {backend} on {sock}")


def cpu_line(cpu):
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0] == f"cpu{cpu}":
                v = [int(x) for x in parts[1:]]
                # user nice system idle iowait irq softirq steal
                busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                return busy, busy + v[3] + v[4]
    return 0, 0


def envoy_stats(port, prefix):
    """{name: value} of the counters of an Envoy admin whose names start with prefix."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(prefix) and value.strip().isdigit():
            out[name] = int(value)
    return out


def envoy_tls(port, cluster):
    st = envoy_stats(port, f"cluster.{cluster}.ssl.")
    parts = []
    for kind in ("versions", "ciphers", "curves", "sigalgs"):
        pre = f"cluster.{cluster}.ssl.{kind}."
        seen = sorted(((v, k[len(pre):]) for k, v in st.items() if k.startswith(pre) and v), reverse=True)
        if seen:
            parts.append("/".join(name for _v, name in seen))
    print(", ".join(parts) or "?")


def sample(pid, status_port, sock, backend, cpu, envoy_admin=None, cluster=None):
    out = {"ticks": bench.cpu_ticks(int(pid))}
    out["up_accepts"], out["up_requests"] = nginx_status(int(status_port))
    if backend != "-":
        out["front_connect"], out["front_reuse"] = haproxy_server_stats(sock, backend)
    if envoy_admin:
        st = envoy_stats(envoy_admin, f"cluster.{cluster}.")
        out["hs_handshakes"] = st.get(f"cluster.{cluster}.ssl.handshake", 0)
        out["hs_reused"] = st.get(f"cluster.{cluster}.ssl.session_reused", 0)
        out["hs_connections"] = st.get(f"cluster.{cluster}.upstream_cx_total", 0)
    out["cpu_busy"], out["cpu_total"] = cpu_line(int(cpu))
    for k, v in out.items():
        print(f"{k}={v}")


# --------------------------------------------------------------------------
# the full-handshake client


def handshake(host, port, seconds, ca, cert, key, sni):
    port, seconds = int(port), float(seconds)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    req = f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode()
    ok = failed = reused = 0
    first_error = ""
    version = cipher = ""
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=5) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # A new SSLSocket without `session=`: a full handshake every time.
                with ctx.wrap_socket(raw, server_hostname=sni) as s:
                    if s.session_reused:
                        reused += 1
                    s.sendall(req)
                    data = b""
                    while True:
                        c = s.recv(65536)
                        if not c:
                            break
                        data += c
                    if not version:
                        version, cipher = s.version() or "", (s.cipher() or ("",))[0]
            if data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nhello\n"):
                ok += 1
            else:
                failed += 1
                if not first_error:
                    first_error = "answer: " + data[:80].decode("latin-1").replace("\r\n", " | ")
        except (OSError, ssl.SSLError) as e:
            failed += 1
            if not first_error:
                first_error = f"{type(e).__name__}: {e}"
        if ok == 0 and failed >= 20:
            break
    elapsed = time.monotonic() - start
    for k, v in [("handshakes", ok), ("failed", failed), ("reused", reused),
                 ("seconds", f"{elapsed:.3f}"), ("version", version), ("cipher", cipher),
                 ("first_error", first_error.replace("\n", " "))]:
        print(f"{k}={v}")
    if ok == 0 and failed >= 20:
        sys.exit(1)


# --------------------------------------------------------------------------
# report


def med(data, t, k):
    vals = list(data.get(t, {}).get(k, {}).values())
    return statistics.median(vals) if vals else None


def total(data, t, k):
    vals = list(data.get(t, {}).get(k, {}).values())
    return sum(vals) if vals else None


def f(v, fmt="{:,.1f}", none="-"):
    return none if v is None else fmt.format(v)


NAMES = {"corridor": "Corridor", "envoy": "Envoy"}


def report(d):
    meta = bench.load_meta(d)
    data = bench.load_metrics(d, by_round=True)  # {target: {key: {round: value}}}
    targets = [t for t in meta.get("TARGETS", "").split(",") if t]
    rate = int(meta.get("RATE", "0") or 0)
    limit = float(meta.get("RATIO_TARGET", "1.3"))
    out = []
    p = out.append
    p(f"# mTLS vs plaintext ({meta.get('DATE', '?')})")
    p("")
    load = f"{rate:,} req/s open loop" if rate else "closed loop (saturation)"
    p(f"{meta.get('CPU_MODEL', '?')}, {meta.get('NPROC', '?')} CPUs, load average "
      f"{meta.get('LOADAVG', '?')} at start, {meta.get('LOADAVG_END', '?')} at end; "
      f"{meta.get('ROUNDS', '?')} interleaved rounds of {meta.get('DURATION', '?')} s "
      f"(+{meta.get('WARMUP', '?')} s warm-up) per figure; reused connections: {load} over "
      f"{meta.get('CONNECTIONS', '?')} client connections; keys {meta.get('KEY_TYPE', '?')}; "
      f"x-forwarded-client-cert {meta.get('XFCC', '?')}; git {meta.get('GIT_REV', '?')}; "
      f"{meta.get('ENVOY_VERSION', 'envoy ?')}.")
    p("")
    warnings = []
    for k, v in meta.items():
        if k.startswith("SKIPPED_"):
            warnings.append(f"**{k[8:]} was NOT measured in this run**: {v}")
    p(f"| proxy | plain CPU µs/req | mTLS CPU µs/req | mTLS / plain (≤ {limit:g}×?) | "
      "full handshakes/s per core | CPU µs per handshake + request |")
    p("|---|---|---|---|---|---|")
    for t in targets:
        r = med(data, t, "ratio")
        verdict = "" if r is None else (" ✓" if r <= limit else " ✗")
        p(f"| {NAMES.get(t, t)} | {f(med(data, t, 'plain_cpu_us'), '{:.1f}')} | "
          f"{f(med(data, t, 'mtls_cpu_us'), '{:.1f}')} | {f(r, '{:.2f}×')}{verdict} | "
          f"{f(med(data, t, 'hs_per_core'), '{:,.0f}')} | {f(med(data, t, 'hs_cpu_us'), '{:.0f}')} |")
    if "corridor" in targets and "envoy" in targets:
        def rel(k, inv=False):
            a, b = med(data, "corridor", k), med(data, "envoy", k)
            if not a or not b:
                return "-"
            return f"{(b / a if inv else a / b):.2f}×"
        p(f"| Corridor ÷ Envoy | {rel('plain_cpu_us')} | {rel('mtls_cpu_us')} | "
          f"{rel('ratio')} | {rel('hs_per_core')} | {rel('hs_cpu_us')} |")
    p("")
    p("CPU = utime + stime of the proxy process (all threads) from `/proc/<pid>/stat` over the "
      "measured window, ÷ requests the upstream received in it. Columns: medians over rounds; "
      "the ratio is the median of the per-round ratios (each round measures plain and mTLS back "
      "to back). Handshakes/s per core = handshakes completed ÷ proxy CPU-seconds (each one a "
      "new TCP connection, a full TLS handshake with a client certificate and one proxied "
      "`GET /`, so it includes one request's cost).")
    p("")
    # Per-round detail.
    p("| round | proxy | plain µs/req | mTLS µs/req | ratio | plain req/s | mTLS req/s | "
      "proxy CPU % plain / mTLS | handshakes/s (client) | proxy CPU % (handshakes) | handshakes/s per core | "
      "other % plain / mTLS / hs |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rounds = sorted({r for t in targets for k in data.get(t, {}) for r in data[t][k]})
    for rnd in rounds:
        for t in targets:
            g = lambda k, fmt="{:.1f}": f(data.get(t, {}).get(k, {}).get(rnd), fmt)  # noqa: E731
            p(f"| {rnd} | {NAMES.get(t, t)} | {g('plain_cpu_us')} | {g('mtls_cpu_us')} | "
              f"{g('ratio', '{:.3f}')} | {g('plain_rps', '{:,.0f}')} | {g('mtls_rps', '{:,.0f}')} | "
              f"{g('plain_cpu_pct', '{:.0f}')} / {g('mtls_cpu_pct', '{:.0f}')} | "
              f"{g('hs_client_rate', '{:,.0f}')} | {g('hs_cpu_pct', '{:.0f}')} | {g('hs_per_core', '{:,.0f}')} | "
              f"{g('plain_other_cpu_pct', '{:.0f}')} / {g('mtls_other_cpu_pct', '{:.0f}')} / {g('hs_other_cpu_pct', '{:.0f}')} |")
    p("")
    # Notes and warnings.
    notes = []
    for t in targets:
        name = NAMES.get(t, t)
        for mode in ("plain", "mtls"):
            new_front = total(data, t, f"{mode}_front_connects")
            new_up = total(data, t, f"{mode}_up_connects")
            reqs = total(data, t, f"{mode}_requests")
            if reqs:
                notes.append(
                    f"{name} {mode}: {reqs:,.0f} requests measured; connections opened during the "
                    f"measured windows: {new_front or 0:,.0f} front → proxy, {new_up or 0:,.0f} "
                    f"proxy → upstream (all rounds).")
            errs = total(data, t, f"{mode}_errors")
            if errs:
                warnings.append(f"{name} {mode}: {errs:,.0f} failed requests (h2load).")
            if rate:
                for rnd, v in data.get(t, {}).get(f"{mode}_rps", {}).items():
                    if v < 0.95 * rate:
                        warnings.append(f"{name} {mode}, round {rnd}: {v:,.0f} req/s, under 95 % of "
                                        f"RATE={rate:,}: the load side (CPU {meta.get('LOAD_CPU', '?')}) "
                                        "could not keep up; the per-request CPU is still valid, the "
                                        "two modes just did not see the same load.")
        hs = total(data, t, "hs_handshakes")
        if hs:
            reused = total(data, t, "hs_reused") or 0
            failed = total(data, t, "hs_failed") or 0
            pct = med(data, t, "hs_cpu_pct")
            bound = ("the client was the bottleneck (the proxy had idle time); the figure is per "
                     "proxy CPU-second, so it still holds" if pct is not None and pct < 90
                     else "the proxy was saturated")
            notes.append(
                f"{name} handshakes: {hs:,.0f} in the measured windows, {failed:,.0f} failed, "
                f"{reused:,.0f} resumed; {meta.get(f'HS_PROTO_{t}', '?')}; proxy CPU "
                f"{f(pct, '{:.0f}')} % (median): {bound}.")
            if reused:
                warnings.append(f"{name}: {reused:,.0f} handshakes were session resumptions, not full handshakes.")
            if failed:
                warnings.append(f"{name}: {failed:,.0f} handshake connections failed "
                                f"(first error: {meta.get(f'HS_ERROR_{t}', '?')}).")
    # Other processes on the proxy's CPU (its busy ticks minus the proxy's own).
    others = [v for t in targets for k in ("plain", "mtls", "hs")
              for v in data.get(t, {}).get(f"{k}_other_cpu_pct", {}).values()]
    busy = [v for v in others if v >= 5]
    if busy:
        warnings.append(f"other processes used CPU {meta.get('PROXY_CPU', '?')} (the proxies') in "
                        f"{len(busy)} of {len(others)} measured windows (up to {max(busy):.0f} %; column "
                        "\"other %\" above): something else ran (a build?), the figures of those windows "
                        "are less reliable; re-run on an idle machine.")
    try:
        if float(meta.get("LOADAVG", "0").split()[0]) >= 0.5:
            warnings.append(f"the machine was busy when the run started (load average {meta.get('LOADAVG')}).")
    except ValueError:
        pass
    if meta.get("PINNED") != "1":
        warnings.append("processes were not pinned (fewer than 2 CPUs?): the proxy shared its CPU with the load.")
    if warnings:
        p("**Warnings**")
        p("")
        for w in warnings:
            p(f"- {w}")
        p("")
    p("**Notes**")
    p("")
    p(f"- Reused connections: h2load ({meta.get('H2LOAD_VERSION', '?')}) → front haproxy "
      f"({meta.get('HAPROXY_VERSION', '?')}, plaintext from h2load; to the proxy plaintext or TLS "
      "with the client certificate, connections reused) → proxy → upstream nginx "
      f"({meta.get('NGINX_VERSION', '?')}; plaintext port, or TLS port requiring the proxy's client "
      "certificate). Only the proxy's CPU is counted; the front helper, h2load and the upstream "
      f"share CPU {meta.get('LOAD_CPU', '?')}, the proxy has CPU {meta.get('PROXY_CPU', '?')}.")
    if meta.get("HS_CLIENT") == "envoy":
        p(f"- Full handshakes: h2load (closed loop, {meta.get('HS_CONNECTIONS', '?')} keep-alive "
          f"connections) → a client Envoy ({meta.get('ENVOY_VERSION', '?')}, BoringSSL, one worker, "
          f"on CPU {meta.get('LOAD_CPU', '?')}) whose cluster opens a new connection to the proxy's "
          "mTLS listener for every request (`max_requests_per_connection: 1`) with a full handshake "
          "(`max_session_keys: 0`: no resumption), presenting the client certificate, offering the "
          f"key exchange groups {meta.get('HS_CURVES', '?')}. Handshakes "
          "counted by that Envoy (`ssl.handshake`; resumed ones: `ssl.session_reused`).")
    else:
        p(f"- Full handshakes: {meta.get('HS_PROCS', '?')} × `benches/lib/mtls_bench.py handshake` "
          f"(Python {meta.get('PYTHON_VERSION', '?')}, {meta.get('PYTHON_SSL', '?')}) on CPU "
          f"{meta.get('LOAD_CPU', '?')}, straight to the proxy's mTLS listener; every connection a "
          "new TLS session (no resumption), client certificate presented, response checked; "
          "handshakes counted as the requests the upstream received.")
    how = []
    if "corridor" in targets:
        how.append("Corridor: `client_auth` with one trust bundle (aws.corridor), cluster `tls` with "
                   "`expected_identities`.")
    if "envoy" in targets:
        how.append("Envoy: `require_client_certificate` with the SPIFFE certificate validator "
                   "(aws.corridor → aws CA); upstream `trusted_ca` + exact URI SAN match.")
    p("- Identities: client `spiffe://aws.corridor/ns/bench/sa/client` (aws CA), proxy "
      "`spiffe://oci.corridor/corridor/proxy` (oci CA; listener certificate and upstream client "
      "certificate), upstream `spiffe://gcp.corridor/ns/inference/sa/model` (gcp CA). "
      + " ".join(how) + " Checked before measuring: each proxy serves the client certificate "
      "and refuses a client without a certificate and one whose certificate comes from an "
      "untrusted CA.")
    for n in notes:
        p(f"- {n}")
    print("\n".join(out))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "sample" and len(args) in (5, 7):
        sample(*args)
    elif cmd == "envoy-tls" and len(args) == 2:
        envoy_tls(*args)
    elif cmd == "handshake" and len(args) == 7:
        handshake(*args)
    elif cmd == "report" and len(args) == 1:
        report(args[0])
    else:
        sys.exit(f"mtls_bench.py: bad command line {argv[1:]}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
