#!/usr/bin/env bash
# Socket API throughput and latency: tokend serving a token over its Unix socket
# (GET /v1/tokens/bench), against nginx serving the same token as a static file on a Unix socket,
# each loaded by two generators in one run: bench/loadgen.rs and oha (from crates.io, an
# independent HTTP load generator), at 1, 16, 64 and 256 keep-alive connections. Each point is
# run REPS times per generator, alternating the two servers (the one that goes first swaps every
# rep); medians of throughput, p50 and p99 are reported in one table per generator, with the
# ratios tokend/nginx. Any answer that is not a 200, or any error, from either generator fails
# the script. First, the idle memory each open connection costs tokend.
#
# Threads: tokend runs its usual 2 runtime workers, nginx 2 worker processes; both generators
# run 2 threads (loadgen's 2 runtime workers; oha `--worker-threads 2`), on the same 2 cores.
#
# Usage: bench/socket.sh   (DURATION=10s REPS=3 IDLE=1000 CONNS="1 16 64 256" to change the
#   defaults, CONNS to measure some points only, with more reps; with
#   BENCH_LOCK=/tmp/tokend-bench.lock each connection count's runs are taken under that flock,
#   so no locked section lasts longer than one point; OHA=/path/to/oha to use another oha)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
REPS=${REPS:-3}
IDLE=${IDLE:-1000}
read -r -a conns <<<"${CONNS:-1 16 64 256}"
BENCH_LOCK=${BENCH_LOCK:-}
OHA_VERSION=1.16.0
OHA_ROOT=/var/cache/tokend-ci/oha-$OHA_VERSION
OHA=${OHA:-$OHA_ROOT/bin/oha}

export PATH="$PATH:/usr/sbin"
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x "$OHA" ]; then
  cargo install --locked -q --version "$OHA_VERSION" --root "$OHA_ROOT" oha
fi
"$OHA" --help | grep -q -- --unix-socket || { echo "$OHA cannot connect to a Unix socket" >&2; exit 1; }
cargo build --release --locked -q
cargo build --release --locked -q --benches
bin=$PWD/target/release/tokend
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -1)
work=$(mktemp -d /tmp/tokend-bench-socket.XXXXXX)
mkdir -p "$work/www"
chmod 755 "$work" "$work/www"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The token server and tokend. tokend runs with max_connections 4096 (the load reaches 256 plus
# the idle test's IDLE) and header_timeout 60s (so idle connections stay open while measured).
# The token file is 0644: nginx's workers must read it.
. bench/dev-clients.sh
dev_issuer "$work" 24h "$bin"
pids+=($issuer_pid)
{
  echo "state_dir: $work/state"
  echo "socket: { path: $work/tokend.sock, max_connections: 4096, header_timeout: 60s }"
  bench_client "{ path: $work/www/token, mode: \"0644\" }"
} >"$work/tokend.yaml"
"$bin" --config "$work/tokend.yaml" --log-level warn run &
tokend_pid=$!
pids+=($tokend_pid)
for _ in $(seq 100); do [ -s "$work/www/token" ] && break; sleep 0.1; done

# nginx: the same bytes from a file, two workers (one per core), keep-alive without limits,
# accept_mutex (evens out the workers), no access log, the file's descriptor cached and sent with
# sendfile.
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; accept_mutex on; }
http {
  access_log off;
  open_file_cache max=16 inactive=60s;
  open_file_cache_valid 1s;
  sendfile on;
  keepalive_requests 100000000;
  keepalive_timeout 60s;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen unix:$work/nginx.sock;
    location = /v1/tokens/bench { alias $work/www/token; default_type text/plain; }
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 50); do [ -S "$work/nginx.sock" ] && break; sleep 0.1; done
cmp <(curl -s --unix-socket "$work/tokend.sock" http://localhost/v1/tokens/bench) \
    <(curl -s --unix-socket "$work/nginx.sock" http://localhost/v1/tokens/bench)
echo "token: $(wc -c <"$work/www/token") bytes, served identically by both"
echo "generators: bench/loadgen.rs (2 threads), $("$OHA" --version) (--worker-threads 2)"
echo "servers: tokend ($(ls /proc/$tokend_pid/task | wc -l) threads, 2 runtime workers), $(nginx -v 2>&1 | sed 's/.*: //') (2 workers)"

# Idle memory per open connection, on the fresh daemon (before the load runs grow its heap):
# RSS before, and with IDLE keep-alive connections open.
rss() { awk '/VmRSS/ {print $2}' "/proc/$tokend_pid/status"; }
before=$(rss)
"$loadgen" idle --socket "$work/tokend.sock" --path /v1/tokens/bench --connections "$IDLE" --hold 5s >"$work/idle.out" &
idle_pid=$!
for _ in $(seq 200); do grep -q idle-ready "$work/idle.out" 2>/dev/null && break; sleep 0.05; done
sleep 1
during=$(rss)
wait $idle_pid
echo "idle connections: $IDLE; tokend RSS ${before} KiB -> ${during} KiB; $(( (during - before) * 1024 / IDLE )) bytes per connection"

# One run prints one line: connections=… requests=… rps=… p50_us=… p99_us=… errors=…, where
# errors counts every request that did not end in a 200.
run_loadgen() { "$loadgen" load --socket "$1" --path /v1/tokens/bench --connections "$2" --duration "$DURATION"; }
# oha: -w lets the requests in flight at the deadline finish (else they count as aborted).
run_oha() {
  "$OHA" --no-tui --output-format json --worker-threads 2 -w -z "$DURATION" -c "$2" \
    --unix-socket "$1" http://localhost/v1/tokens/bench >"$work/oha.json"
  jq -r --arg c "$2" '
    ([.statusCodeDistribution | to_entries[] | .value] | add // 0) as $answered
    | (.statusCodeDistribution["200"] // 0) as $ok
    | ([.errorDistribution | to_entries[] | .value] | add // 0) as $failed
    | "connections=\($c) requests=\($ok) rps=\(.summary.requestsPerSec | round)"
      + " p50_us=\(.latencyPercentiles.p50 * 1e6 | round) p99_us=\(.latencyPercentiles.p99 * 1e6 | round)"
      + " errors=\($answered - $ok + $failed)"' "$work/oha.json"
}
field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

generators=(loadgen oha)
for c in "${conns[@]}"; do
  [ -n "$BENCH_LOCK" ] && { exec {lock}>"$BENCH_LOCK"; flock "$lock"; }
  for rep in $(seq "$REPS"); do
    order=(tokend nginx)
    [ $((rep % 2)) -eq 0 ] && order=(nginx tokend)
    for g in "${generators[@]}"; do
      for s in "${order[@]}"; do
        "run_$g" "$work/$s.sock" "$c" >>"$work/$g-$s-$c.txt"
      done
    done
  done
  [ -n "$BENCH_LOCK" ] && exec {lock}>&-
  echo "measured $c connections" >&2
done

failed=0
for g in "${generators[@]}"; do
  printf '\n%s\n%-6s %-7s %10s %8s %8s   %s\n' "$g:" conns server rps p50_us p99_us "runs (rps/p99_us)"
  for c in "${conns[@]}"; do
    for s in tokend nginx; do
      f=$work/$g-$s-$c.txt
      if grep -qv 'errors=0$' "$f"; then echo "answers other than 200 from $s ($g, $c connections):"; cat "$f"; failed=1; fi
      printf '%-6s %-7s %10s %8s %8s   %s\n' "$c" "$s" "$(field rps <"$f" | median)" \
        "$(field p50_us <"$f" | median)" "$(field p99_us <"$f" | median)" \
        "$(paste -d/ <(field rps <"$f") <(field p99_us <"$f") | tr '\n' ' ')"
    done
  done
done
[ $failed -eq 0 ] || exit 1

# tokend/nginx, and whether the target (throughput >= 1.0x, p99 <= 1.0x) holds at each point.
printf '\n%-8s %-6s %11s %8s  %s\n' generator conns "rps ratio" "p99 ratio" target
missed=0
for g in "${generators[@]}"; do
  for c in "${conns[@]}"; do
    read -r tr tp < <(paste <(field rps <"$work/$g-tokend-$c.txt" | median) <(field p99_us <"$work/$g-tokend-$c.txt" | median))
    read -r nr np < <(paste <(field rps <"$work/$g-nginx-$c.txt" | median) <(field p99_us <"$work/$g-nginx-$c.txt" | median))
    verdict=$(awk -v tr="$tr" -v nr="$nr" -v tp="$tp" -v np="$np" 'BEGIN {
      printf "%.2f %.2f %s", tr / nr, tp / np, (tr >= nr && tp <= np) ? "met" : "missed" }')
    set -- $verdict
    printf '%-8s %-6s %11s %8s  %s\n' "$g" "$c" "$1" "$2" "$3"
    [ "$3" = met ] || missed=1
  done
done
[ $missed -eq 0 ] && echo "target met at every point with both generators" || echo "target missed (see above)"
