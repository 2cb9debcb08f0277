#!/usr/bin/env bash
# Idle resident memory of the release daemon with 1, 10 and 100 clients (two outputs each), all
# holding a valid token from the development issuer. Usage: bench/idle-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
bin=$PWD/target/release/tokend
work=$(mktemp -d /tmp/tokend-bench-memory.XXXXXX)
trap 'kill $issuer 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" dev --issuer-only --lifetime 1h >"$work/issuer.out" 2>/dev/null &
issuer=$!
for _ in $(seq 50); do [ -s "$work/issuer.out" ] && break; sleep 0.1; done
url=$(head -1 "$work/issuer.out" | awk '{print $NF}')

printf '%-8s %-10s %-8s\n' clients rss_kib threads
for n in 1 10 100; do
  cfg=$work/c$n.yaml
  {
    echo "state_dir: $work/state$n"
    echo "defaults: { token_url: $url/oauth/token, client_id: tokend-dev, client_secret: tokend-dev-secret }"
    echo "clients:"
    for i in $(seq "$n"); do
      echo "  c$i: { audience: https://a$i/, outputs: [{ path: $work/out$n/c$i.token }, { path: $work/out$n/c$i.json, format: json }] }"
    done
  } >"$cfg"
  "$bin" --config "$cfg" --log-level warn run &
  pid=$!
  for _ in $(seq 100); do [ "$(ls "$work/out$n" 2>/dev/null | wc -l)" -ge $((2 * n)) ] && break; sleep 0.1; done
  sleep 1
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  printf '%-8s %-10s %-8s\n' "$n" "$rss" "$(ls /proc/$pid/task | wc -l)"
  kill $pid
  wait $pid
done
