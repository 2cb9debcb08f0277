#!/usr/bin/env bash
# Memory of a long-running `tokend run` (a leak, or glibc arenas growing and levelling off?).
# Against the built-in development issuer granting 10-second tokens (so every client refreshes
# about every 5 s), tokend runs N clients (each its own audience and one raw output; the socket
# enabled; --log-level warn) for DURATION seconds while a modest reader load hits the socket:
# every BURST_EVERY s, the socket benchmark's load generator (bench/loadgen.rs) opens CONNS
# connections to /v1/tokens/cK (K random) for 1 s of warm-up and 1 s measured. Every 60 s it
# appends to OUT/rss.tsv: minute, VmRSS, smaps_rollup Anonymous, threads, open fds (and the
# refresh count from /metrics to OUT/refreshes.tsv). At minute SNAP_MIN and at the end it
# attaches gdb for a glibc heap snapshot: malloc_stats() (per arena "system bytes" vs "in use
# bytes", taken from tokend's stderr: OUT/malloc-stats-M.txt) and malloc_info() as XML
# (OUT/malloc-info-M.xml); OUT/malloc.tsv sums them per snapshot.
# With HEAPTRACK=1 a second tokend (its own issuer and directory, HT_CONNS connections every
# 60 s) runs under heaptrack for the same time; OUT/ht/ gets its trace, its heaptrack_print
# summary (peaks, leaks) and a massif file (heap over time), and OUT/ht-rss.tsv its RSS.
# The process runs with MALLOC_ARENA_MAX=$ARENA_MAX when ARENA_MAX is set (only tokend).
#
# Usage: bench/soak-rss.sh [DURATION_S] [BIN] [LOADGEN]
#   e.g. OUT=/tmp/soak-rss HEAPTRACK=1 bench/soak-rss.sh 3600 \
#          target/release/tokend target/release/deps/loadgen-*[^d]
# Environment: OUT (default a new directory under /tmp), N (200), SNAP_MIN (10),
#   CONNS (8), BURST_EVERY (15), HEAPTRACK (0), HT_CONNS (1), ARENA_MAX (unset).
set -euo pipefail
DURATION=${1:-3600}
BIN=${2:-$(dirname "$0")/../target/release/tokend}
LOADGEN=${3:-$(ls "$(dirname "$0")"/../target/release/deps/loadgen-* 2>/dev/null | grep -v '\.d$' | head -1)}
N=${N:-200}
SNAP_MIN=${SNAP_MIN:-10}
CONNS=${CONNS:-8}
BURST_EVERY=${BURST_EVERY:-15}
HEAPTRACK=${HEAPTRACK:-0}
HT_CONNS=${HT_CONNS:-1}
OUT=${OUT:-$(mktemp -d)}
[ -x "$BIN" ] || { echo "soak-rss.sh: no $BIN (cargo build --release)" >&2; exit 1; }
[ -x "$LOADGEN" ] || { echo "soak-rss.sh: no load generator (cargo build --release --bench loadgen)" >&2; exit 1; }
command -v gdb >/dev/null || { echo "soak-rss.sh: needs gdb" >&2; exit 1; }
[ "$HEAPTRACK" = 0 ] || command -v heaptrack >/dev/null || { echo "soak-rss.sh: needs heaptrack" >&2; exit 1; }
. "$(dirname "$0")/dev-clients.sh"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

# setup DIR: an issuer granting 10-second tokens and DIR/c.yaml (dev_clients's, N clients).
setup() {
  local w=$1 i
  mkdir -p "$w/out"
  dev_issuer "$w" 10s "$BIN"
  pids+=("$issuer_pid")
  {
    echo "state_dir: $w/state"
    echo "socket: { path: $w/s.sock }"
    echo "defaults: { token_url: $issuer_url/oauth/token, client_id: tokend-dev, client_secret: tokend-dev-secret }"
    echo "clients:"
    for i in $(seq "$N"); do echo "  c$i: { audience: https://a$i/, outputs: [{ path: $w/out/c$i }] }"; done
  } >"$w/c.yaml"
}

# reader SOCKET CONNS EVERY UNTIL LOG: bursts of the load generator until the epoch second UNTIL.
reader() {
  while [ "$(date +%s)" -lt "$4" ]; do
    nice "$LOADGEN" load --socket "$1" --path "/v1/tokens/c$((RANDOM % N + 1))" \
      --connections "$2" --duration 1s >>"$5" 2>&1 || echo "loadgen failed: $?" >>"$5"
    sleep "$3"
  done
}

# sample PID MINUTE SOCKET TSV: one row of memory figures, and the refresh count.
sample() {
  local rss anon thr fds ref
  rss=$(awk '/^VmRSS:/{print $2}' "/proc/$1/status")
  thr=$(awk '/^Threads:/{print $2}' "/proc/$1/status")
  anon=$(awk '/^Anonymous:/{print $2}' "/proc/$1/smaps_rollup")
  fds=$(ls "/proc/$1/fd" | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\n' "$2" "$rss" "$anon" "$thr" "$fds" >>"$4"
  ref=$(curl -s --unix-socket "$3" http://tokend/metrics | awk '/^tokend_refreshes_total/{s+=$NF} END{print s+0}' || true)
  printf '%s\t%s\n' "$2" "$ref" >>"${4%.tsv}-refreshes.tsv"
}

# snapshot PID TAG STDERR: malloc_stats() (to tokend's stderr) and malloc_info() (to a file).
snapshot() {
  local before
  before=$(wc -c <"$3")
  gdb -p "$1" -batch -nx \
    -ex 'call (void)malloc_stats()' \
    -ex "set \$f = (void *)fopen(\"$OUT/malloc-info-$2.xml\", \"w\")" \
    -ex 'call (int)malloc_info(0, $f)' \
    -ex 'call (int)fclose($f)' >"$OUT/gdb-$2.log" 2>&1 || echo "soak-rss.sh: gdb failed ($2)" >&2
  sleep 1
  tail -c +"$((before + 1))" "$3" | grep -E '^(Arena|system|in use|Total|max mmap)' >"$OUT/malloc-stats-$2.txt" || true
  awk -v tag="$2" '/^Arena/{a++} /^system bytes/{s=$NF} /^in use bytes/{u=$NF}
    /^Total/{t=1} END{printf "%s\t%d\t%d\t%d\t%.1f\n", tag, a, s, u, 100*u/s}' \
    "$OUT/malloc-stats-$2.txt" >>"$OUT/malloc.tsv"
}

# child_of PID NAME: the pid of PID's descendant running NAME (heaptrack runs tokend as a child).
child_of() {
  local c
  for c in $(ps -o pid= --ppid "$1"); do
    if [ "$(cat "/proc/$c/comm" 2>/dev/null)" = "$2" ]; then echo "$c"; return; fi
    child_of "$c" "$2"
  done
}

printf 'minute\trss_kib\tanon_kib\tthreads\tfds\n' >"$OUT/rss.tsv"
printf 'tag\tarenas\tsystem_bytes\tin_use_bytes\tin_use_pct\n' >"$OUT/malloc.tsv"
setup "$OUT/main"
env ${ARENA_MAX:+MALLOC_ARENA_MAX=$ARENA_MAX} "$BIN" --config "$OUT/main/c.yaml" --log-level warn run \
  2>"$OUT/tokend.stderr" &
tp=$!
pids+=("$tp")

if [ "$HEAPTRACK" != 0 ]; then
  printf 'minute\trss_kib\tanon_kib\tthreads\tfds\n' >"$OUT/ht-rss.tsv"
  setup "$OUT/htw"
  mkdir -p "$OUT/ht"
  env ${ARENA_MAX:+MALLOC_ARENA_MAX=$ARENA_MAX} heaptrack -o "$OUT/ht/heaptrack.tokend" \
    "$BIN" --config "$OUT/htw/c.yaml" --log-level warn run >"$OUT/ht/heaptrack.log" 2>&1 &
  hp=$!
  pids+=("$hp")
fi

wait_for_outputs "$OUT/main" "$N"
[ "$HEAPTRACK" = 0 ] || { wait_for_outputs "$OUT/htw" "$N"; htp=$(child_of "$hp" tokend); pids+=("$htp"); }
start=$(date +%s)
end=$((start + DURATION))
echo "soak-rss.sh: tokend $tp${htp:+, under heaptrack $htp}; ${DURATION}s from $(date -u +%T); in $OUT" >&2
reader "$OUT/main/s.sock" "$CONNS" "$BURST_EVERY" "$end" "$OUT/reader.log" &
rd=$!
pids+=("$rd")
if [ "$HEAPTRACK" != 0 ]; then
  reader "$OUT/htw/s.sock" "$HT_CONNS" 60 "$end" "$OUT/ht-reader.log" &
  hrd=$!
pids+=("$rd")
fi

m=0
while :; do
  kill -0 "$tp" || { echo "soak-rss.sh: tokend exited" >&2; exit 1; }
  sample "$tp" "$m" "$OUT/main/s.sock" "$OUT/rss.tsv"
  [ "$HEAPTRACK" = 0 ] || sample "$htp" "$m" "$OUT/htw/s.sock" "$OUT/ht-rss.tsv"
  [ "$m" != "$SNAP_MIN" ] || snapshot "$tp" "$m" "$OUT/tokend.stderr"
  [ "$((start + (m + 1) * 60))" -le "$end" ] || break
  m=$((m + 1))
  t=$((start + m * 60 - $(date +%s)))
  [ "$t" -le 0 ] || sleep "$t"
done
[ "$m" = "$SNAP_MIN" ] || snapshot "$tp" "$m" "$OUT/tokend.stderr"
wait "$rd"
curl -s --unix-socket "$OUT/main/s.sock" http://tokend/metrics >"$OUT/metrics-end.txt"
grep tokend_refreshes_total "$OUT/metrics-end.txt" >&2 || true
awk '{for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "requests") r += kv[2]; if (kv[1] == "errors") e += kv[2] }}
  /failed/{f++} END{printf "reader: %d bursts, %d requests measured, %d errors, %d failed runs\n", NR - f, r, e, f}' \
  "$OUT/reader.log" | tee "$OUT/reader-summary.txt" >&2
kill "$tp"
wait "$tp" 2>/dev/null || true

if [ "$HEAPTRACK" != 0 ]; then
  wait "$hrd"
  curl -s --unix-socket "$OUT/htw/s.sock" http://tokend/metrics >"$OUT/ht/metrics-end.txt"
  kill "$htp"
  wait "$hp" 2>/dev/null || true
  trace=$(ls "$OUT"/ht/heaptrack.tokend.* | grep -v '\.log$' | head -1)
  nice heaptrack_print -f "$trace" -p 1 -l 1 -n 15 -M "$OUT/ht/massif.out" --massif-detailed-freq 0 \
    >"$OUT/ht/print.txt" 2>&1
  grep -E '^(total runtime|calls to allocation|temporary memory|peak heap|peak RSS|total memory leaked|suppressed)' \
    "$OUT/ht/print.txt" >&2 || true
fi
echo "soak-rss.sh: done; $OUT/rss.tsv, $OUT/malloc.tsv" >&2
