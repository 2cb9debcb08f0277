#!/usr/bin/env bash
# The refresh path (bench/refresh_path.rs): time, allocations and bytes allocated per refresh
# through Runner::refresh (token request over loopback HTTP to `tokend dev --issuer-only` as its
# own process, validation, a state file and four outputs written atomically and fsynced), the
# same with fsync skipped, the steps on their own, and each format's rendering. RUNS runs, each
# under the shared benchmark lock; the raw per-refresh samples go to OUT/<fourth>-<n>.csv.
#
# Usage: bench/refresh_path.sh     (RUNS=3 REFRESHES=1000 WARMUP=50 FOURTH=env|template OUT=dir)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
REFRESHES=${REFRESHES:-1000}
WARMUP=${WARMUP:-50}
FOURTH=${FOURTH:-env}
OUT=${OUT:-$(mktemp -d /tmp/tokend-bench-refresh.XXXXXX)}
mkdir -p "$OUT"

cargo build --release --locked -q --bench refresh_path
bench=$(ls -t target/release/deps/refresh_path-* | grep -v '\.d$' | head -1)
for n in $(seq "$RUNS"); do
  flock /tmp/tokend-bench.lock "$bench" --refreshes "$REFRESHES" --warmup "$WARMUP" --fourth "$FOURTH" \
    --raw "$OUT/$FOURTH-$n.csv" | tee "$OUT/$FOURTH-$n.txt"
done
echo "raw samples in $OUT"
