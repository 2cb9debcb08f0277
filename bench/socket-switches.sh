#!/usr/bin/env bash
# What each tokend thread does per socket request at C keep-alive connections (default 1), under
# bench/loadgen.rs: voluntary and involuntary context switches per request for every thread,
# over a 5 s load; then, with STRACE=1, the syscalls of the whole process per request over 2 s
# of a second load (strace -f -c; strace slows the server, so only the counts mean anything).
# Release build (cargo build --release; cargo build --release --benches).
#
# Usage: bench/socket-switches.sh [C]   (STRACE=1 for the syscall counts)
set -uo pipefail
cd "$(dirname "$0")/.."
C=${1:-1}
bin=$PWD/target/release/tokend
loadgen=$(ls -t target/release/deps/loadgen-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -x "$bin" ] && [ -n "$loadgen" ] || { echo "socket-switches.sh: cargo build --release && cargo build --release --benches" >&2; exit 1; }
work=$(mktemp -d /tmp/tokend-bench-switches.XXXXXX)
issuer_pid= tp=
trap 'kill $tp $issuer_pid 2>/dev/null; rm -rf "$work"' EXIT
. bench/dev-clients.sh
dev_issuer "$work" 24h "$bin"
{
  echo "state_dir: $work/state"
  echo "socket: { path: $work/tokend.sock, max_connections: 4096, header_timeout: 60s }"
  bench_client "{ path: $work/token }"
} >"$work/tokend.yaml"
"$bin" --config "$work/tokend.yaml" --log-level warn run & tp=$!
for _ in $(seq 100); do [ -s "$work/token" ] && break; sleep 0.1; done
switches() { for t in /proc/$tp/task/*; do
  echo "$(basename "$t") $(cat "$t/comm") $(awk '/^(non)?voluntary_ctxt_switches/{printf "%s ", $2}' "$t/status")"; done; }
load() { timeout 30 "$loadgen" load --socket "$work/tokend.sock" --path /v1/tokens/bench --connections "$C" --duration "$1"; }
switches > "$work/before"
out=$(load 5s)
switches > "$work/after"
echo "$out"
n=$(echo "$out" | sed 's/.*requests=\([0-9]*\).*/\1/')
join "$work/before" "$work/after" |
  awk -v n="$n" '{printf "thread %s %-16s voluntary %.3f, involuntary %.3f switches per request\n", $1, $2, ($6-$3)/n, ($7-$4)/n}'
if [ "${STRACE:-0}" = 1 ]; then
  load 4s > "$work/load" &
  sleep 1
  timeout -s INT 2 strace -f -c -p "$tp" -o "$work/strace" >/dev/null 2>&1
  wait $!
  cat "$work/load"
  awk '$NF ~ /^[a-z_0-9]+$/ && $0 !~ /total/ {print "  " $0}' "$work/strace"
fi
