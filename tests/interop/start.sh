#!/usr/bin/env bash
# Start the tokend interop fixture: oidc-provider behind nginx (TLS + client certs).
#
#   STATE_DIR=/tmp/tokend-interop tests/interop/start.sh
#
# Installs nothing: it needs node, openssl, nginx, and `npm ci` done in this
# directory (.ci/run and the Rust suite do that). Then execs `node provider.mjs`:
# stdout is the single fixture JSON line, SIGTERM stops nginx and the provider
# with exit code 0. Environment: see provider.mjs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

export PATH="$PATH:/usr/sbin"
for tool in node openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "start.sh: $tool is missing" >&2; exit 1; }
done
command -v "${NGINX:-nginx}" >/dev/null 2>&1 || { echo "start.sh: nginx is missing (Debian: apt-get install nginx)" >&2; exit 1; }
if [ ! -d "$here/node_modules/oidc-provider" ] || [ ! -d "$here/node_modules/jose" ]; then
  echo "start.sh: the npm packages are missing; run: (cd $here && npm ci)" >&2
  exit 1
fi

exec node "$here/provider.mjs"
