#!/usr/bin/env bash
# Start the tokend interop fixture: oidc-provider behind nginx (TLS + client certs).
#
#   STATE_DIR=/tmp/tokend-interop tests/interop/start.sh
#
# Installs what is missing first (Debian package nginx via apt-get when run as
# root; npm ci in this directory when node_modules/ is absent), all on stderr.
# Then execs `node provider.mjs`: stdout is the single fixture JSON line, SIGTERM
# stops nginx and the provider with exit code 0. Environment: see provider.mjs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] && [ -z "${NGINX:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "start.sh: installing nginx" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx; } 1>&2
  else
    echo "start.sh: nginx missing; run: sudo apt-get install -y nginx" >&2
    exit 1
  fi
fi
command -v openssl >/dev/null 2>&1 || { echo "start.sh: openssl missing" >&2; exit 1; }

if [ ! -d "$here/node_modules/oidc-provider" ] || [ ! -d "$here/node_modules/jose" ]; then
  echo "start.sh: npm ci in $here" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) 1>&2
fi

export PATH="$PATH:/usr/sbin"
exec node "$here/provider.mjs"
