#!/usr/bin/env bash
# Creates the Python venv for the xDS interop harness (tests/interop/) in
# target/pyenv and installs tests/interop/requirements.txt into it
# (grpcio, grpcio-tools, protobuf, xds-protos).
# Idempotent: does nothing when the venv already has exactly those packages.
# Prints the venv's python path as its last line. CORRIDOR_PYVENV overrides the location.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CORRIDOR_PYVENV:-$root/target/pyenv}"
req="$root/tests/interop/requirements.txt"
stamp="$venv/.requirements.installed"
py="$venv/bin/python"

fail() { echo "setup-python: $*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || fail "python3 not found; install Python 3.9+ (Debian: apt-get install python3 python3-venv)"

# One setup at a time (parallel test processes may call this together).
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

if [ -x "$py" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp" \
   && "$py" -c 'import grpc, grpc_tools, google.protobuf, envoy.service.discovery.v3.ads_pb2_grpc' 2>/dev/null; then
  echo "setup-python: $venv is up to date"
  echo "$py"
  exit 0
fi

if [ ! -x "$py" ] || ! "$py" -m pip --version >/dev/null 2>&1; then
  echo "setup-python: creating venv $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 ships venv/ensurepip separately.
    if command -v apt-get >/dev/null 2>&1; then
      echo "setup-python: python3 -m venv failed; installing python3-venv"
      sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
      export DEBIAN_FRONTEND=noninteractive
      $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
        || fail "could not install python3-venv"
      rm -rf "$venv"
      python3 -m venv "$venv" || fail "python3 -m venv $venv failed"
    else
      fail "python3 -m venv $venv failed (is the venv module installed?)"
    fi
  fi
fi

echo "setup-python: installing $(grep -v '^#' "$req" | xargs) into $venv"
if ! "$py" -m pip install --disable-pip-version-check -q -r "$req"; then
  fail "pip install -r $req failed (is PyPI reachable?)"
fi
"$py" -c 'import grpc, grpc_tools, google.protobuf, envoy.service.discovery.v3.ads_pb2_grpc' \
  || fail "packages installed but the imports fail"
cp "$req" "$stamp"
"$py" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(grpcio|grpcio-tools|protobuf|xds-protos) ' | sed 's/^/setup-python:   /'
echo "$py"
