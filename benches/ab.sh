#!/usr/bin/env bash
# Before/after benchmark: two (or more) Corridor binaries against the same
# nginx upstream, in ONE run, rounds interleaved, so that a change's effect
# is measured beside its baseline on the same noisy machine (issue 16 reports
# each step this way). Per binary: CPU µs per proxied HTTP/1.1 request at
# saturation (closed loop) and at a fixed rate, client p50/p99 at the fixed
# rate, sends, receives and all syscalls per request (strace -c over a separate
# short run, one connection).
#
# Usage: benches/ab.sh BASE_BINARY NEW_BINARY [MORE_BINARIES...]
#   A binary named literally `nginx` is nginx as the proxy (run.sh's nginx
#   configuration), measured in the same interleaved rounds as a reference
#   row (no callgrind count for it). benches/src/bin/pingora_floor.rs takes
#   Corridor's command line, so it can be a row too.
#   e.g. git stash; cargo build --release -p corridor-proxy; cp target/release/corridor /tmp/base
#        git stash pop; cargo build --release -p corridor-proxy
#        benches/ab.sh /tmp/base target/release/corridor
#
# Environment knobs (defaults in brackets):
#   DURATION=8            seconds per measured window
#   WARMUP=2              seconds of load before each window
#   ROUNDS=3              rounds (binaries interleaved); medians shown
#   CONNECTIONS=50        h2load connections at saturation
#   RATE=6000             fixed rate, req/s (over 10 connections); 0 skips it
#   SYSCALLS=1            0 skips the strace run
#   INSNS=1               user-space instructions per request under callgrind:
#                         the only figure here that does not move with the
#                         VM's noise (rounds vary +-15 %); 0 skips it
#   INSNS_N=2500          requests counted (difference of two runs, 500 and
#                         500 + INSNS_N requests, so start-up cancels out)
#   PROXY_CPU=1, LOAD_CPU=0   pinning: proxy / load generator and upstream
#   READY_TIMEOUT=30, KEEP_TMP=1   as in the other scripts
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/lib/common.sh" ab
# shellcheck source=lib/configs.sh source-path=SCRIPTDIR
source "$LIB_DIR/configs.sh"

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
RATE=${RATE:-6000}
SYSCALLS=${SYSCALLS:-1}
INSNS=${INSNS:-1}
INSNS_N=${INSNS_N:-2500}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
READY_TIMEOUT=${READY_TIMEOUT:-30}
require_uint DURATION WARMUP ROUNDS CONNECTIONS RATE SYSCALLS INSNS INSNS_N PROXY_CPU LOAD_CPU READY_TIMEOUT

(($# >= 2)) || die "usage: benches/ab.sh BASE_BINARY NEW_BINARY [MORE...]"
BINS=()
for b in "$@"; do
    if [[ $b == nginx ]]; then
        BINS+=(nginx)
        continue
    fi
    [[ -x $b ]] || die "'$b' is not an executable"
    BINS+=("$(realpath "$b")")
done
install_missing nginx:nginx-light h2load:nghttp2-client curl:curl
((SYSCALLS)) && install_missing strace:strace
((INSNS)) && install_missing valgrind:valgrind

make_dirs -ab logs raw
setup_pinning

read -r UP_PORT PX_PORT ADMIN_PORT H2_PORT <<<"$(python3 "$LIB_DIR/bench.py" ports 38080 4)"
cat >"$TMP/nginx.conf" <<CONF
daemon off; worker_processes 1; error_log $RESULTS/logs/nginx.error.log; pid $TMP/nginx.pid;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP_PORT; keepalive_requests 1000000;
  location / { return 200 "hello from the upstream, a small body\n"; } } }
CONF
cat >"$TMP/corridor.yaml" <<CONF
listeners: [{ name: main, address: "127.0.0.1:$PX_PORT", route_table: t }]
admin: { address: "127.0.0.1:$ADMIN_PORT" }
runtime: { worker_threads: 1 }
route_tables: [{ name: t, virtual_hosts: [{ domains: ["*"], routes: [{ route: { cluster: c } }] }] }]
clusters: [{ name: c, endpoints: [{ address: "127.0.0.1:$UP_PORT" }] }]
CONF
start_server nginx "$LOAD_CPU" nginx -p "$TMP" -c "$TMP/nginx.conf"
wait_http nginx "http://127.0.0.1:$UP_PORT/"

URL="http://127.0.0.1:$PX_PORT/"
write_nginx_proxy_conf "$TMP/nginx-proxy.conf" "$TMP/nginx-proxy" "$RESULTS/logs/nginx-proxy.error.log" \
    "$PX_PORT" "$H2_PORT" "$UP_PORT" on 64

# start_target I: start BINS[I] as the proxy under test and wait until it answers.
start_target() {
    if [[ ${BINS[$1]} == nginx ]]; then
        start_server proxy "$PROXY_CPU" nginx -p "$TMP/nginx-proxy" -c "$TMP/nginx-proxy.conf"
    else
        start_server proxy "$PROXY_CPU" env RUST_LOG=warn "${BINS[$1]}" run -c "$TMP/corridor.yaml"
    fi
    wait_http proxy "$URL"
}

# worker_pid: the process that serves requests (nginx's worker, else the proxy).
worker_pid() {
    local pid=${PID_OF[proxy]} kids
    kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
    if [[ -n $kids ]]; then echo "${kids%% *}"; else echo "$pid"; fi
}
# measure NAME MODE: one window; records cpu µs/req (and latency at a rate).
measure() {
    local name=$1 mode=$2 pid=${PID_OF[proxy]} out t0 t1 n
    local -a cmd=(h2load --h1 -D "$DURATION" -c "$CONNECTIONS")
    [[ $mode == rate ]] && cmd=(h2load --h1 -D "$DURATION" -c 10 --rps $((RATE / 10))
        --log-file "$RESULTS/raw/$name-lat-r$round.log")
    load "$RESULTS/raw/warm.txt" h2load --h1 -D "$WARMUP" -c 10 "$URL" || true
    t0=$(cpu_ticks "$pid")
    out=$RESULTS/raw/$name-$mode-r$round.txt
    load "$out" "${cmd[@]}" "$URL" || die "h2load failed: $(tail -3 "$out")"
    t1=$(cpu_ticks "$pid")
    n=$(awk '/^requests:/ { print $8 }' "$out")
    ((n > 0)) || die "no request succeeded through $name: $(tail -3 "$out")"
    rec "$round" "$name" "${mode}_us_per_req" "$(calc "($t1 - $t0) * 1000000 / $HZ / $n")"
    rec "$round" "$name" "${mode}_rps" "$(calc "$n / $DURATION")"
    if [[ $mode == rate ]]; then
        parse_into LAT python3 "$LIB_DIR/bench.py" h2log "$RESULTS/raw/$name-lat-r$round.log"
        rec "$round" "$name" p50_us "${LAT[p50_us]:-0}"
        rec "$round" "$name" p99_us "${LAT[p99_us]:-0}"
    fi
}

declare -A LAT=()
for ((round = 1; round <= ROUNDS; round++)); do
    for i in "${!BINS[@]}"; do
        name=$i:$(basename "${BINS[$i]}")
        log "round $round: $name"
        start_target "$i"
        measure "$name" max
        ((RATE > 0)) && measure "$name" rate
        stop_server proxy
    done
done

if ((SYSCALLS)); then
    for i in "${!BINS[@]}"; do
        name=$i:$(basename "${BINS[$i]}")
        start_target "$i"
        load "$RESULTS/raw/warm.txt" h2load --h1 -n 500 -c 1 "$URL" || true
        strace -f -c -o "$RESULTS/raw/$name.strace" -p "$(worker_pid)" 2>>"$RESULTS/logs/strace.log" &
        spid=$!
        sleep 0.5
        load "$RESULTS/raw/$name-strace-load.txt" h2load --h1 -n 2000 -c 1 "$URL" || true
        kill -INT "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        rec 0 "$name" sends_per_req "$(awk '$NF ~ /^(sendto|sendmsg|write|writev)$/ { s += $4 } END { printf "%.2f", s / 2000 }' "$RESULTS/raw/$name.strace")"
        rec 0 "$name" recvs_per_req "$(awk '$NF ~ /^(recvfrom|recvmsg|read|readv)$/ { s += $4 } END { printf "%.2f", s / 2000 }' "$RESULTS/raw/$name.strace")"
        rec 0 "$name" syscalls_per_req "$(awk '$NF == "total" { printf "%.2f", $4 / 2000 }' "$RESULTS/raw/$name.strace")"
        stop_server proxy
    done
fi

# callgrind_ir BINARY NAME N: total instructions (Ir) of BINARY started under
# callgrind, serving N small GETs, then stopped with SIGINT.
callgrind_ir() {
    local bin=$1 name=$2 n=$3 vlog=$RESULTS/logs/$2-callgrind-$3.log i
    local READY_TIMEOUT=120 # start-up under valgrind is slow
    start_server proxy "$PROXY_CPU" env RUST_LOG=warn valgrind --tool=callgrind \
        --callgrind-out-file="$TMP/callgrind.out" "$bin" run -c "$TMP/corridor.yaml"
    wait_http proxy "$URL"
    load "$RESULTS/raw/$name-insns-$n.txt" h2load --h1 -n "$n" -c 10 "$URL" || true
    kill -INT "${PID_OF[proxy]}" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do kill -0 "${PID_OF[proxy]}" 2>/dev/null || break; sleep 0.2; done
    stop_server proxy
    cp "$RESULTS/logs/proxy.log" "$vlog" 2>/dev/null || true
    awk '/Collected :/ { ir = $NF } END { print ir + 0 }' "$vlog"
}

if ((INSNS)); then
    for i in "${!BINS[@]}"; do
        [[ ${BINS[$i]} == nginx ]] && continue
        name=$i:$(basename "${BINS[$i]}")
        log "instructions: $name under callgrind (500, then $((500 + INSNS_N)) requests)"
        a=$(callgrind_ir "${BINS[$i]}" "$name" 500)
        b=$(callgrind_ir "${BINS[$i]}" "$name" $((500 + INSNS_N)))
        ((a > 0 && b > a)) || die "callgrind gave no count for $name (see $RESULTS/logs/)"
        rec 0 "$name" insns_per_req "$(calc "($b - $a) / $INSNS_N")"
    done
fi

python3 - "$METRICS" "${#BINS[@]}" <<'PY' | tee "$RESULTS/report.md"
import collections, statistics, sys
rows = collections.defaultdict(lambda: collections.defaultdict(list))
order = []
for line in open(sys.argv[1]):
    r, name, key, val = line.rstrip("\n").split("\t")
    if name not in order:
        order.append(name)
    rows[name][key].append(float(val))
med = lambda n, k: statistics.median(rows[n][k]) if rows[n][k] else None
cols = [("max_us_per_req", "CPU µs/req at saturation"), ("max_rps", "req/s at saturation"),
        ("rate_us_per_req", "CPU µs/req at the fixed rate"), ("p50_us", "p50 µs"), ("p99_us", "p99 µs"),
        ("sends_per_req", "sends/req"), ("recvs_per_req", "receives/req"),
        ("syscalls_per_req", "syscalls/req (all)"),
        ("insns_per_req", "instructions/req (callgrind)")]
cols = [c for c in cols if any(rows[n][c[0]] for n in order)]
print("| binary | " + " | ".join(t for _, t in cols) + " |")
print("|---|" + "---|" * len(cols))
base = order[0]
for n in order:
    cells = []
    for k, _ in cols:
        v, b = med(n, k), med(base, k)
        if v is None:
            cells.append("")
        elif n != base and b:
            cells.append(f"{v:,.2f} ({v / b:.2f}×)")
        else:
            cells.append(f"{v:,.2f}")
    print(f"| {n} | " + " | ".join(cells) + " |")
print(f"\nMedians of {max(len(v) for v in rows[base].values())} interleaved rounds; ratios against {base}.")
PY
log "done; raw output in $RESULTS"
