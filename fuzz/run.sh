#!/usr/bin/env bash
# Builds every cargo-fuzz target in this directory and runs each for DURATION
# seconds (default 60), one after the other, then prints per target the
# executions, exec/s, coverage and whether it crashed. Exits 1 when any target
# crashed (the input is kept under fuzz/artifacts/<target>/), 0 otherwise, and
# 0 with a message when no nightly toolchain is installed (libFuzzer's
# instrumentation needs nightly).
#
#   fuzz/run.sh [DURATION]
#
# Runs start from the checked-in seeds (fuzz/corpus/<target>/), copied into
# fuzz/corpus-run/<target>/, which keeps growing across runs and is not
# committed. Build output goes to fuzz/target/, logs to fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")"

DURATION="${1:-60}"
if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || [ "$DURATION" -eq 0 ]; then
    echo "usage: fuzz/run.sh [DURATION_SECONDS]" >&2
    exit 2
fi
TARGETS=(config_yaml config_json request_head h2_request header_edits xds_resources)

if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: no nightly toolchain; fuzz targets not run (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    nice -n 10 cargo +stable install cargo-fuzz --locked
fi

echo "fuzz: building ${#TARGETS[@]} targets (cargo +nightly fuzz build)"
nice -n 10 cargo +nightly fuzz build

dict_for() {
    case "$1" in
        config_yaml | config_json) echo dict/config.dict ;;
        request_head) echo dict/http.dict ;;
        *) echo "" ;;
    esac
}

mkdir -p logs
declare -a SUMMARY=()
CRASHED=0
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus-run/$t" "artifacts/$t"
    cp -n "corpus/$t"/* "corpus-run/$t/" 2>/dev/null || true
    # cargo fuzz passes -artifact_prefix=<this dir>/artifacts/<target>/.
    args=(-max_total_time="$DURATION" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1)
    dict="$(dict_for "$t")"
    [ -n "$dict" ] && args+=(-dict="$dict")
    log="logs/$t.log"
    echo "fuzz: running $t for ${DURATION}s (log: fuzz/$log)"
    status=0
    nice -n 10 cargo +nightly fuzz run "$t" "corpus-run/$t" -- "${args[@]}" >"$log" 2>&1 || status=$?

    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    status_line="$(grep -E '^#[0-9]+[[:space:]].*cov: ' "$log" | tail -1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status_line")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status_line")"
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
    if [ -z "$execs" ]; then
        # No final stats (a crash): the last status line's count.
        execs="$(sed -n 's/^#\([0-9]*\)[[:space:]].*/\1/p' <<<"$status_line")"
    fi
    if [ "$status" -ne 0 ] || [ -n "$artifact" ]; then
        CRASHED=1
        if [ -n "$artifact" ]; then
            verdict="CRASH: $artifact"
        else
            verdict="FAILED (exit $status, no artifact; see fuzz/$log)"
        fi
        echo "fuzz: $t: $verdict"
        { grep -m1 -A1 "panicked at" "$log" || grep -m1 -E "ERROR: (libFuzzer|AddressSanitizer)" "$log"; } |
            sed 's/^/    /' || true
    else
        verdict="no crash"
    fi
    SUMMARY+=("$(printf '%-13s execs %-10s exec/s %-7s cov %-6s ft %-7s %s' \
        "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$verdict")")
done

echo
echo "fuzz: summary (${DURATION}s per target)"
for line in "${SUMMARY[@]}"; do
    echo "  $line"
done
if [ "$CRASHED" -ne 0 ]; then
    echo "fuzz: a target crashed; reproduce with \`cd fuzz && cargo +nightly fuzz run <target> <artifact>\`"
    echo "      and turn the input into a regression test (fuzz/README.md)"
    exit 1
fi
echo "fuzz: no crashes"
