#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite: unit tests, the CLI
# tests and the end-to-end tests (the real corridor binary, real sockets,
# real clients and servers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo test --workspace --locked "$@"
