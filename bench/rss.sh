#!/usr/bin/env bash
# RSS of `tokend run` with N clients right after their first fetch, against the built-in
# development issuer (plain HTTP, its own process): VmRSS, PSS and anonymous memory from
# /proc/PID/smaps_rollup, 3 s after every output exists; with VERBOSE=1 also RSS per mapping;
# with SCRAPE=1 also the size of one /metrics answer and the RSS after it (Prometheus's view).
# A quick check between bench/scale.py runs (which is the measurement BENCHMARKS.md quotes).
#
# Usage: bench/rss.sh N [BIN] [LD_PRELOAD]   e.g. bench/rss.sh 10000
set -euo pipefail
N=$1
BIN=${2:-$(dirname "$0")/../target/release/tokend}
PRE=${3:-}
[ -x "$BIN" ] || { echo "rss.sh: no $BIN (cargo build --release)" >&2; exit 1; }
. "$(dirname "$0")/dev-clients.sh"
w=$(mktemp -d)
issuer_pid=
trap 'kill $issuer_pid 2>/dev/null || true; rm -rf "$w"' EXIT
dev_clients "$w" "$N" "$BIN"
LD_PRELOAD=$PRE "$BIN" --config "$w/c.yaml" --log-level warn run &
tp=$!
wait_for_outputs "$w" "$N"
sleep 3
grep -E "^(Rss|Pss|Anonymous):" /proc/$tp/smaps_rollup | tr -s ' \n' ' '
echo
if [ -n "${VERBOSE:-}" ]; then
  awk '/^[0-9a-f]+-/{name=$6} /^Rss:/{r[name]+=$2} END{for (n in r) if (r[n] > 100) print r[n] " KiB", n}' \
    /proc/$tp/smaps | sort -rn | head -12
fi
if [ -n "${SCRAPE:-}" ]; then
  curl -s --unix-socket "$w/s.sock" -o "$w/metrics" http://tokend/metrics
  echo "/metrics: $(wc -c <"$w/metrics") bytes, $(wc -l <"$w/metrics") lines"
  grep -E "^(Rss|Pss|Anonymous):" /proc/$tp/smaps_rollup | tr -s ' \n' ' '
  echo
fi
kill $tp
wait $tp 2>/dev/null || true
