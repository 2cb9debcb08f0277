#!/usr/bin/env bash
# Builds a Redis image offline for the fleet's pod test (packaging/kubernetes/test-fleet-pods.sh),
# from this machine's Debian redis-server and nothing else: no registry, no base image.
#
#   packaging/container/build-redis-image.sh [TAG]
#
# The image holds the redis-server binary and the shared libraries `ldd` lists for it (the
# dynamic loader included), on `scratch`, and runs as 6379:6379. Its tag names the Redis version
# and a digest of those files, so an image built before from the same files is reused, not
# rebuilt (it stays in podman's store, which CI keeps between runs). Prints the tag.
# Needs root, podman and redis-server (apt-get install redis-server).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

# Debian's /usr/bin/redis-server is a symlink to redis-check-rdb, one binary that decides what
# it is by the name it was started as: copied as the file itself, named redis-server.
server=$(readlink -f "$(command -v redis-server)")
libs=$(ldd "$server" | awk '/=>/ { print $3 } /^\t\// { print $1 }' | sort -u)
version=$(redis-server --version | sed -n 's/.* v=\([0-9.]*\) .*/\1/p')
# shellcheck disable=SC2086 # one path a word
digest=$(cat "$server" $libs | sha256sum | cut -c1-12)
tag=${1:-localhost/tokend-test-redis:$version-$digest}
if podman image exists "$tag"; then
  echo "$tag"
  exit 0
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/bin"
cp "$server" "$ctx/rootfs/usr/bin/redis-server"
for lib in $libs; do
  # Where the binary looks for it (its path in ldd's list), with symlinks resolved.
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cat >"$ctx/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
USER 6379:6379
LABEL org.opencontainers.image.title="redis-server for tokend's tests" \\
      org.opencontainers.image.version="$version"
ENTRYPOINT ["/usr/bin/redis-server"]
EOF
podman build --quiet --pull=never -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "$tag"
