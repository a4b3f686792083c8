#!/usr/bin/env bash
# Installs what is missing, builds Corridor (release) and runs the embedded demo:
# the proxy on 127.0.0.1:8080 plus three built-in "cloud" upstreams. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked -p corridor-proxy --bin corridor -- demo "$@"
