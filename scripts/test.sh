#!/usr/bin/env bash
# Installs what is missing and runs the whole test suite: unit tests, the CLI
# tests and the end-to-end tests (the real corridor binary, real sockets,
# real clients and servers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The image test (tests/tests/e2e/docker.rs) starts a private dockerd, as root; without one it
# skips and says why, so a failed install does not stop the suite.
if ! command -v dockerd >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "test: installing docker.io" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends docker.io >/dev/null; } ||
    echo "test: could not install docker.io; the image test will skip" >&2
fi
exec cargo test --workspace --locked "$@"
