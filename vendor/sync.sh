#!/usr/bin/env bash
# Rebuilds vendor/<crate>/ from the exact released crate (checksum-verified) plus
# vendor/patches/*.patch applied in order, or with --check verifies that the
# committed vendor/ tree is exactly that (CI runs the check).
#
#   vendor/sync.sh           # regenerate vendor/pingora-core and vendor/pingora-proxy
#   vendor/sync.sh --check   # exit 1 if vendor/ differs from crates + patches
#
# The .crate files come from cargo's cache when present, else from crates.io.
set -euo pipefail
cd "$(dirname "$0")"

# name version sha256 (Cargo.lock's checksums of the released crates)
CRATES=(
  "pingora-core 0.9.1 a535f47f65fdcb003f9e1df04cd18e614c128dfe9388acce3f211ae38ac14d68"
  "pingora-proxy 0.9.1 8e3d5670490740405ecc8c6f75c3fcbce4d24f7adaffb355ca44550e7918e358"
)

check=0
[[ ${1:-} == --check ]] && check=1

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for entry in "${CRATES[@]}"; do
  read -r name version sum <<<"$entry"
  file="$name-$version.crate"
  cached=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$file" 2>/dev/null | head -n 1 || true)
  if [[ -n $cached ]]; then
    cp "$cached" "$tmp/$file"
  else
    curl -fsSL --retry 3 -o "$tmp/$file" "https://static.crates.io/crates/$name/$file"
  fi
  echo "$sum  $tmp/$file" | sha256sum -c --quiet - || { echo "sync: $file checksum mismatch" >&2; exit 1; }
  tar -xzf "$tmp/$file" -C "$tmp"
  mv "$tmp/$name-$version" "$tmp/$name"
done

for p in patches/*.patch; do
  patch -s -p1 -d "$tmp" --fuzz=0 --no-backup-if-mismatch <"$p" || { echo "sync: $p does not apply" >&2; exit 1; }
done

status=0
for entry in "${CRATES[@]}"; do
  read -r name _ _ <<<"$entry"
  if ((check)); then
    if ! diff -r -q "$tmp/$name" "$name" >/dev/null; then
      echo "sync: vendor/$name differs from the released crate plus vendor/patches:" >&2
      diff -r -u "$tmp/$name" "$name" | head -n 60 >&2 || true
      status=1
    fi
  else
    rm -rf "$name"
    cp -r "$tmp/$name" "$name"
  fi
done
if ((check)) && ((status == 0)); then
  echo "sync: vendor/ is the released crates plus $(ls patches/*.patch | wc -l) patches"
fi
exit "$status"
