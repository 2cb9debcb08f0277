#!/usr/bin/env bash
# What one clock step costs tokend at N clients: CPU time and context switches of every thread
# over 12 s with no step, then over the 12 s after the wall clock steps by STEP (libfaketime,
# preloaded into tokend alone, as tests/time does; the token server runs on the real clock).
# Before 7feed6e every refresh task woke on any step; now a step forward wakes only those due.
#
# Usage: bench/clock-step.sh N [BIN] [STEP]   e.g. bench/clock-step.sh 10000 target/release/tokend +60
set -euo pipefail
N=$1; BIN=${2:-$(dirname "$0")/../target/release/tokend}; STEP=${3:-+60}
LIB=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
[ -x "$BIN" ] || { echo "clock-step.sh: no $BIN (cargo build --release)" >&2; exit 1; }
[ -e "$LIB" ] || { echo "clock-step.sh: needs libfaketime (apt-get install faketime)" >&2; exit 1; }
. "$(dirname "$0")/dev-clients.sh"
w=$(mktemp -d)
issuer_pid= tp=
trap 'kill $issuer_pid $tp 2>/dev/null || true; rm -rf "$w"' EXIT
dev_clients "$w" "$N" "$BIN"
echo "+0" > "$w/ft"
LD_PRELOAD=$LIB FAKETIME_TIMESTAMP_FILE=$w/ft FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1 \
  "$BIN" --config "$w/c.yaml" --log-level warn run 2>"$w/log" &
tp=$!
wait_for_outputs "$w" "$N"
sleep 15
sample() { local cpu=0 cs=0; for t in /proc/$tp/task/*; do
  read -r run _ _ < "$t/schedstat"; cpu=$((cpu + run))
  v=$(awk '/^voluntary_ctxt_switches|^nonvoluntary_ctxt_switches/{s+=$2} END{print s}' "$t/status"); cs=$((cs + v)); done
  echo "$cpu $cs"; }
read -r c0 s0 < <(sample); sleep 12; read -r c1 s1 < <(sample)
# Renamed over, not rewritten in place: libfaketime reads the file at every clock reading, and
# one made while it is truncated reads the real time.
echo "$STEP" > "$w/ft.new"; mv "$w/ft.new" "$w/ft"; sleep 12; read -r c2 s2 < <(sample)
echo "no step: cpu $(( (c1-c0)/1000000 )) ms, switches $((s1-s0)); step $STEP: cpu $(( (c2-c1)/1000000 )) ms, switches $((s2-s1))"
