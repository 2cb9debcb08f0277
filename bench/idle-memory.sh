#!/usr/bin/env bash
# Idle resident memory of the release daemon with 1, 10 and 100 clients (two outputs each), all
# holding a valid token from the development issuer; the median of 3 runs each.
# Usage: bench/idle-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=$PWD/target/release/tokend
work=$(mktemp -d /tmp/tokend-bench-memory.XXXXXX)
issuer_pid=
trap 'kill $issuer_pid 2>/dev/null || true; rm -rf "$work"' EXIT

. bench/dev-clients.sh
dev_issuer "$work" 1h "$bin"

# One run: start the daemon with n clients, wait until every file exists, read VmRSS.
rss_with() {
  local n=$1 cfg=$work/c$1.yaml pid
  rm -rf "$work/state$n" "$work/out$n"
  {
    echo "state_dir: $work/state$n"
    echo "socket: { path: $work/tokend$n.sock }"
    echo "defaults: { token_url: $issuer_url/oauth/token, client_id: tokend-dev, client_secret: tokend-dev-secret }"
    echo "clients:"
    for i in $(seq "$n"); do
      echo "  c$i: { audience: https://a$i/, outputs: [{ path: $work/out$n/c$i.token }, { path: $work/out$n/c$i.json, format: json }] }"
    done
  } >"$cfg"
  "$bin" --config "$cfg" --log-level warn run &
  pid=$!
  for _ in $(seq 100); do [ "$(ls "$work/out$n" 2>/dev/null | wc -l)" -ge $((2 * n)) ] && break; sleep 0.1; done
  sleep 1
  awk '/VmRSS/ {print $2}' /proc/$pid/status
  kill $pid
  wait $pid
}

printf '%-8s %-16s %s\n' clients rss_kib_median runs
for n in 1 10 100; do
  samples=$(for _ in 1 2 3; do rss_with "$n"; done | sort -n)
  printf '%-8s %-16s %s\n' "$n" "$(echo "$samples" | sed -n 2p)" "$(echo $samples)"
done
