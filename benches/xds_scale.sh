#!/usr/bin/env bash
# Corridor control-stream scale benchmark (issue §5): 10 000 routes and
# 50 000 endpoints served by `corridor control-plane` to 100 subscribers (one
# real `corridor run` proxy + 99 corridor_xds engine clients), for state of
# the world and for delta. Measures time to converge (initial push, a change
# of all 10k routes, a change of one endpoint), control-plane CPU and memory,
# the proxy's apply time per update, and the proxy's p99 under wrk while
# pushes arrive versus steady. Prints a Markdown report with the targets.
# See benches/README.md ("Control-stream scale benchmark").
#
# Usage: benches/xds_scale.sh
#
# Environment knobs (defaults in brackets):
#   DURATION=10           seconds per wrk measurement (steady and storm)
#   WARMUP=2              seconds of wrk warm-up before each measurement
#   ROUNDS=5              steady/storm rounds per variant; the median ratio is reported
#   UPDATES=5             repetitions of the 10k-route and 1-endpoint updates
#   CONNECTIONS=50        wrk connections
#   SUBSCRIBERS=100       1 proxy + SUBSCRIBERS-1 engine clients
#   VARIANTS=sotw,delta   ADS variants, each run in full with a fresh control plane
#   VHOSTS=100, ROUTES_PER_VHOST=100   route table size (plus a catch-all host)
#   CLUSTERS=1000, ENDPOINTS_PER_CLUSTER=50   endpoints = CLUSTERS x ENDPOINTS_PER_CLUSTER
#   ENDPOINT_FILES=50     files the Endpoints are spread over (1: one endpoints.yaml)
#   STORM_ENDPOINT_MS=100 storm: one endpoint moves this often (0: never)
#   STORM_ROUTES_MS=1000  storm: all routes change this often (0: never)
#   SKIP_STORM=1          skip the load test (convergence and apply only)
#   CORRIDOR_BIN=         use this corridor binary and do not build it
#   XDS_SCALE_BIN=        use this xds_scale binary and do not build it
#   SKIP_BUILD=1          no cargo: use target/release/{corridor,xds_scale} as they are
#   BASE_PORT=29080       first port tried; free ports are picked from here up
#   PROXY_CPU=1, LOAD_CPU=0   pinning: the proxy / everything else (control
#                         plane, engine clients, wrk, upstream nginx); the
#                         control plane and engine clients use every CPU
#                         during the initial convergences
#   CONVERGE_TIMEOUT=60   seconds a convergence may take before the run fails
#   KEEP_TMP=1            keep the temp dir (resource files, configs)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/lib/common.sh" xds

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-5}
UPDATES=${UPDATES:-5}
CONNECTIONS=${CONNECTIONS:-50}
SUBSCRIBERS=${SUBSCRIBERS:-100}
VARIANTS=${VARIANTS:-sotw,delta}
VHOSTS=${VHOSTS:-100}
ROUTES_PER_VHOST=${ROUTES_PER_VHOST:-100}
CLUSTERS=${CLUSTERS:-1000}
ENDPOINTS_PER_CLUSTER=${ENDPOINTS_PER_CLUSTER:-50}
ENDPOINT_FILES=${ENDPOINT_FILES:-50}
STORM_ENDPOINT_MS=${STORM_ENDPOINT_MS:-100}
STORM_ROUTES_MS=${STORM_ROUTES_MS:-1000}
SKIP_STORM=${SKIP_STORM:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
BASE_PORT=${BASE_PORT:-29080}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
CONVERGE_TIMEOUT=${CONVERGE_TIMEOUT:-60}
KEEP_TMP=${KEEP_TMP:-0}

# ---------------------------------------------------------------- knobs

require_uint DURATION WARMUP ROUNDS UPDATES CONNECTIONS SUBSCRIBERS VHOSTS ROUTES_PER_VHOST CLUSTERS \
    ENDPOINTS_PER_CLUSTER ENDPOINT_FILES STORM_ENDPOINT_MS STORM_ROUTES_MS BASE_PORT PROXY_CPU LOAD_CPU CONVERGE_TIMEOUT
(( DURATION >= 1 )) || die "DURATION must be >= 1"
(( ROUNDS >= 1 )) || die "ROUNDS must be >= 1"
(( SUBSCRIBERS >= 1 )) || die "SUBSCRIBERS must be >= 1 (the proxy)"
(( CLUSTERS >= 2 )) || die "CLUSTERS must be >= 2 (c0000 carries the load, another one churns)"
(( ENDPOINTS_PER_CLUSTER >= 1 && ENDPOINTS_PER_CLUSTER <= 250 )) || die "ENDPOINTS_PER_CLUSTER must be in 1..250 (c0000's endpoints are 127.0.0.1..N)"
(( ENDPOINT_FILES >= 1 )) || die "ENDPOINT_FILES must be >= 1"
IFS=', ' read -r -a _variants <<<"$VARIANTS"
for v in "${_variants[@]}"; do
    [[ $v == sotw || $v == delta ]] || die "VARIANTS: unknown variant '$v' (use sotw,delta)"
done
(( ${#_variants[@]} > 0 )) || die "VARIANTS selects nothing"
VARIANTS=$(IFS=,; echo "${_variants[*]}")

# ---------------------------------------------------------------- cleanup

# Run by the cleanup (lib/common.sh) after it stopped the driver (a load
# generator) and before the upstream: the driver writes the pid of each
# server it starts into $TMP/work/pids and removes it when it stops the
# server; whatever is left there outlived a driver that died without
# cleaning up.
cleanup_hook() {
    local f pid
    [[ -n $TMP && -d $TMP/work/pids ]] || return 0
    for f in "$TMP"/work/pids/*.pid; do
        [[ -e $f ]] || continue
        pid=$(<"$f")
        if is_uint "$pid" && proc_alive "$pid" && grep -q corridor "/proc/$pid/cmdline" 2>/dev/null; then
            stop_tree "$pid"
        fi
    done
}

# ---------------------------------------------------------------- install

need=(nginx:nginx-light curl:curl python3:python3 taskset:util-linux)
[[ $SKIP_STORM == 1 ]] || need+=(wrk:wrk)
install_missing "${need[@]}"

# ---------------------------------------------------------------- build

bench_bin CORRIDOR_BIN corridor-proxy corridor
bench_bin XDS_SCALE_BIN corridor-benches xds_scale
CORRIDOR_BIN=$(realpath "$CORRIDOR_BIN")
XDS_SCALE_BIN=$(realpath "$XDS_SCALE_BIN")

# ---------------------------------------------------------------- setup

make_dirs -xds logs configs raw
mkdir -p "$TMP/work" "$TMP/upstream/tmp"
log "results: $RESULTS"
setup_pinning

read -r UP_PORT CP_PORT CP_ADMIN PROXY_PORT PROXY_ADMIN <<<"$(python3 "$LIB_DIR/bench.py" ports "$BASE_PORT" 5)"
log "ports: upstream $UP_PORT (on 127.0.0.1..$ENDPOINTS_PER_CLUSTER) | control plane $CP_PORT (admin $CP_ADMIN) | proxy $PROXY_PORT (admin $PROXY_ADMIN)"

# The upstream: one nginx worker answering "hello" on 127.0.0.1..N, so that
# the load-test cluster c0000 has N distinct real endpoints.
# shellcheck source=lib/configs.sh source-path=SCRIPTDIR
source "$LIB_DIR/configs.sh"
{
    _nginx_common_main "$TMP/upstream" "$RESULTS/logs/upstream.error.log"
    echo "http {"
    _nginx_common_http "$TMP/upstream"
    echo "    server {"
    for ((i = 1; i <= ENDPOINTS_PER_CLUSTER; i++)); do
        echo "        listen 127.0.0.$i:$UP_PORT backlog=4096;"
    done
    cat <<'EOF'
        location / {
            default_type text/plain;
            return 200 "hello\n";
        }
    }
}
EOF
} >"$TMP/upstream/nginx.conf"
cp "$TMP/upstream/nginx.conf" "$RESULTS/configs/upstream-nginx.conf"
start_server upstream "$LOAD_CPU" nginx -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -e "$RESULTS/logs/upstream.error.log"
for addr in 127.0.0.1 "127.0.0.$ENDPOINTS_PER_CLUSTER"; do
    deadline=$((SECONDS + 10))
    until [[ $(curl -s --max-time 2 "http://$addr:$UP_PORT/" 2>/dev/null || true) == hello ]]; do
        if ! proc_alive "${PID_OF[upstream]}" || ((SECONDS >= deadline)); then
            tail -n 20 "$RESULTS/logs/upstream.error.log" "$RESULTS/logs/upstream.log" >&2 2>/dev/null || true
            die "the upstream nginx does not answer on http://$addr:$UP_PORT/"
        fi
        sleep 0.1
    done
done

CPU_MODEL=$(cpu_model)
GIT_REV=$(git_rev)
RUN_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOADAVG_START=$(loadavg)
{
    host_meta "$RUN_DATE" "$LOADAVG_START"
    echo "GIT_REV=$GIT_REV"
    echo "CORRIDOR_BIN=$CORRIDOR_BIN"
    echo "NGINX_VERSION=$(first_line nginx -v)"
    echo "WRK_VERSION=$(first_line wrk -v)"
    for v in DURATION WARMUP ROUNDS UPDATES CONNECTIONS SUBSCRIBERS VARIANTS VHOSTS ROUTES_PER_VHOST CLUSTERS \
        ENDPOINTS_PER_CLUSTER ENDPOINT_FILES STORM_ENDPOINT_MS STORM_ROUTES_MS SKIP_STORM PINNED PROXY_CPU LOAD_CPU; do
        echo "$v=${!v}"
    done
} >"$RESULTS/meta.env"

# ---------------------------------------------------------------- run

args=(
    --corridor "$CORRIDOR_BIN" --out "$RESULTS" --work "$TMP/work"
    --upstream-port "$UP_PORT" --cp-port "$CP_PORT" --cp-admin-port "$CP_ADMIN"
    --proxy-port "$PROXY_PORT" --proxy-admin-port "$PROXY_ADMIN"
    --subscribers "$SUBSCRIBERS" --variants "$VARIANTS"
    --vhosts "$VHOSTS" --routes-per-vhost "$ROUTES_PER_VHOST" --clusters "$CLUSTERS"
    --endpoints-per-cluster "$ENDPOINTS_PER_CLUSTER" --endpoint-files "$ENDPOINT_FILES"
    --updates "$UPDATES" --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP"
    --connections "$CONNECTIONS" --storm-endpoint-ms "$STORM_ENDPOINT_MS" --storm-routes-ms "$STORM_ROUTES_MS"
    --converge-timeout "$CONVERGE_TIMEOUT"
    --header "Run $RUN_DATE (git $GIT_REV), load average $LOADAVG_START at the start."
)
((PINNED)) && args+=(--proxy-cpu "$PROXY_CPU" --cp-cpu "$LOAD_CPU")
[[ $SKIP_STORM == 1 ]] && args+=(--skip-storm)
log "pinning (pinned=$PINNED): proxy on CPU $PROXY_CPU; wrk and upstream on CPU $LOAD_CPU; control plane and engine clients on CPU $LOAD_CPU, except during initial convergences (every CPU)"
log "running $XDS_SCALE_BIN ${args[*]}"
# In the background, waited for, so that Ctrl-C and SIGTERM run the cleanup at once.
pin "$LOAD_CPU" "$XDS_SCALE_BIN" "${args[@]}" >"$RESULTS/stdout.txt" 2> >(tee -a "$RUN_LOG" >&2) &
LOAD_PIDS+=("$!")
rc=0
wait_loads || rc=$?
LOADAVG_END=$(loadavg)
echo "LOADAVG_END=$LOADAVG_END" >>"$RESULTS/meta.env"
if [[ -s $RESULTS/report.md ]]; then
    printf '\nLoad average %s at the start, %s at the end (1/5/15 min); %s, %s CPUs.\n' \
        "$LOADAVG_START" "$LOADAVG_END" "${CPU_MODEL:-unknown CPU}" "$NPROC" >>"$RESULTS/report.md"
    cat "$RESULTS/report.md"
fi
((rc == 0)) || die "xds_scale failed (exit $rc); see $RUN_LOG and $RESULTS/logs/"
log "done; results in $RESULTS"
