#!/usr/bin/env bash
# Builds tokend's image offline, from `scratch`:
#
#   packaging/container/build-image.sh [STATIC_BINARY] [TAG]
#
# STATIC_BINARY defaults to target/x86_64-unknown-linux-gnu/release/tokend, built with
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target x86_64-unknown-linux-gnu
# (a glibc static-pie: this machine has no musl target); TAG to localhost/tokend:VERSION. The CA
# roots are this machine's (ca-certificates). Prints the image's size.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -1)
bin=${1:-$top/target/x86_64-unknown-linux-gnu/release/tokend}
tag=${2:-localhost/tokend:$version}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

file "$bin" | grep -q 'static' || { echo "$bin is not statically linked" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/tokend"
strip "$ctx/tokend"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
cp "$here/Containerfile" "$ctx/Containerfile"
# What it was built from, as labels: the tests refuse an image built from another binary or
# Containerfile.
podman build --quiet --pull=never --build-arg "VERSION=$version" \
  --label "tokend.binary.sha256=$(sha256sum "$bin" | cut -d' ' -f1)" \
  --label "tokend.containerfile.sha256=$(sha256sum "$here/Containerfile" | cut -d' ' -f1)" \
  -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
size=$(podman image inspect "$tag" --format '{{.Size}}')
echo "$tag: $size bytes ($(( size / 1024 )) KiB)"
