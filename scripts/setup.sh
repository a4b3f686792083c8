#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Corridor:
# cmake (pingora's zlib-ng), a C compiler, curl (the demo and tests use it),
# patch (vendor/sync.sh).
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v patch >/dev/null 2>&1 || need+=(patch)   # vendor/sync.sh --check
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need+=(procps)   # the tests send signals

if ((${#need[@]})); then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) and rerun" >&2
  exit 1
fi
