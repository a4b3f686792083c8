#!/usr/bin/env bash
# Usage: docker/build.sh
#
# Builds Corridor's runtime image from a local build, pulling nothing: FROM scratch, the
# `corridor` binary (a stripped copy) at /usr/local/bin/corridor, exactly the shared libraries
# `ldd` lists for it (with the dynamic loader), /etc/ssl/certs/ca-certificates.crt, and an
# /etc/passwd and /etc/group with the non-root user 65532 it runs as. No shell. Tags it
# corridor:<version> (the image `corridor inject` defaults to) and corridor:latest, and
# prints its size. docker/Dockerfile builds the same image where base images can be pulled.
#
# Environment:
#   CORRIDOR_BIN=PATH   the binary to package (default: target/release/corridor, built first
#                       with `cargo build --release --locked -p corridor-proxy`)
#   DOCKER_HOST=URL     the daemon to build in. Unset and no daemon answering on the default
#                       socket: a private dockerd is started in a temporary directory (root
#                       needed) and stopped at the end; the image is then also saved to
#                       target/docker/corridor-<version>.tar (`docker load -i` it elsewhere).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

work="$(mktemp -d /tmp/corridor-image.XXXXXX)"
dockerd_pid=""
cleanup() {
  if [ -n "$dockerd_pid" ]; then
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. The binary.
if [ -n "${CORRIDOR_BIN:-}" ]; then
  bin="$CORRIDOR_BIN"
else
  cargo build --release --locked -p corridor-proxy --bin corridor
  bin="target/release/corridor"
fi
[ -x "$bin" ] || { echo "build.sh: $bin is not an executable" >&2; exit 1; }
version="$("$bin" --version | awk '{print $2}')"
[ -n "$version" ] || { echo "build.sh: cannot read the version of $bin" >&2; exit 1; }
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
field() { sed -n "s/^$1 *= *\"\(.*\)\"/\1/p" Cargo.toml | head -n1; }
source_url="$(field repository)"
licenses="$(field license)"

# 2. The root file system.
rootfs="$work/context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$work/context/home/nonroot"
chmod 1777 "$rootfs/tmp"
cp "$bin" "$rootfs/usr/local/bin/corridor"
if command -v strip >/dev/null 2>&1; then
  strip "$rootfs/usr/local/bin/corridor"
else
  echo "build.sh: strip not found (binutils); packaging the binary unstripped" >&2
fi
# `ldd` lists every library the loader maps (transitively) and the loader itself; a static
# binary has none.
libs=()
if ldd_out="$(ldd "$bin" 2>&1)"; then
  while read -r lib; do
    libs+=("$lib")
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$ldd_out")
  if grep -q 'not found' <<<"$ldd_out"; then
    echo "build.sh: missing libraries:" >&2
    echo "$ldd_out" >&2
    exit 1
  fi
elif ! grep -q 'not a dynamic executable\|statically linked' <<<"$ldd_out"; then
  echo "build.sh: ldd $bin failed: $ldd_out" >&2
  exit 1
fi
for lib in "${libs[@]}"; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/" || {
  echo "build.sh: /etc/ssl/certs/ca-certificates.crt missing (apt-get install ca-certificates)" >&2
  exit 1
}
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$rootfs/etc/group"
printf '%s\n' 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"

cat >"$work/context/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 home/ /home/
ENV PATH=/usr/local/bin:/usr/bin:/bin
LABEL org.opencontainers.image.title="corridor" \\
      org.opencontainers.image.description="Corridor: an L7 proxy for AI inference traffic across clouds, built on Pingora" \\
      org.opencontainers.image.version="$version" \\
      org.opencontainers.image.revision="$revision" \\
      org.opencontainers.image.source="$source_url" \\
      org.opencontainers.image.licenses="$licenses"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/corridor"]
CMD ["--help"]
EOF

# 3. A daemon: the caller's, the default one, or a private one.
private=""
if [ -z "${DOCKER_HOST:-}" ] && ! docker version >/dev/null 2>&1; then
  command -v dockerd >/dev/null 2>&1 || {
    echo "build.sh: no Docker daemon answers and dockerd is not installed (apt-get install docker.io)" >&2
    exit 1
  }
  [ "$(id -u)" -eq 0 ] || { echo "build.sh: no Docker daemon answers; starting one needs root" >&2; exit 1; }
  d="$work/dockerd"
  mkdir -p "$d/data" "$d/exec"
  echo '{}' >"$d/daemon.json"
  dockerd --config-file "$d/daemon.json" --iptables=false --ip-forward=false --bridge=none \
    --storage-driver=vfs --data-root "$d/data" --exec-root "$d/exec" \
    -H "unix://$d/docker.sock" --pidfile "$d/docker.pid" >"$d/log" 2>&1 &
  dockerd_pid=$!
  export DOCKER_HOST="unix://$d/docker.sock"
  for _ in $(seq 150); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.2
  done
  docker version >/dev/null 2>&1 || {
    echo "build.sh: the private dockerd did not start:" >&2
    tail -n 20 "$d/log" >&2
    exit 1
  }
  private=1
fi

# 4. Build, tag, report.
image="corridor:$version"
docker build -q -t "$image" -t corridor:latest "$work/context" >/dev/null
if [ -n "$private" ]; then
  mkdir -p target/docker
  docker save -o "target/docker/corridor-$version.tar" "$image" corridor:latest
  echo "build.sh: saved to target/docker/corridor-$version.tar (the private daemon stops on exit)"
fi
size="$(docker image inspect -f '{{.Size}}' "$image")"
echo "build.sh: built $image and corridor:latest from $bin (${#libs[@]} shared libraries)"
echo "build.sh: image size $size bytes ($((size / 1024 / 1024)) MiB)"
