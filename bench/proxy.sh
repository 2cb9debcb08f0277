#!/usr/bin/env bash
# Token proxy overhead: requests to an upstream (nginx on loopback TCP, answering a 1 KiB body)
# made directly with the Authorization header, against the same requests through tokend's token
# proxy (a loopback TCP listener that adds the header), loaded the same way by bench/loadgen.rs
# at 1, 16 and 64 keep-alive connections, in one run. Each point runs REPS times, alternating
# the two; medians are reported, and the proxy's share of the direct throughput.
#
# Usage: bench/proxy.sh            (DURATION=10s REPS=3 to change the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
REPS=${REPS:-3}

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
export PATH="$PATH:/usr/sbin"
cargo build --release --locked -q
cargo build --release --locked -q --benches
bin=$PWD/target/release/tokend
loadgen=$(ls -t target/release/deps/loadgen-* | grep -v '\.d$' | head -1)
work=$(mktemp -d /tmp/tokend-bench-proxy.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
upstream_port=$(free_port)
proxy_port=$(free_port)

# The upstream: nginx, two workers, keep-alive without limits, a 1 KiB body from memory.
mkdir -p "$work/nginx"
body=$(head -c 1024 /dev/zero | tr '\0' x)
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 60s;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$upstream_port;
    location /api/ { default_type text/plain; return 200 "$body"; }
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)

. bench/dev-clients.sh
dev_issuer "$work" 24h "$bin"
pids+=($issuer_pid)
{
  echo "state_dir: $work/state"
  echo "socket: { path: $work/tokend.sock }"
  bench_client "{ path: $work/token }"
  echo "proxies:"
  echo "  - { client: bench, upstream: \"http://127.0.0.1:$upstream_port/api/\", listen: \"127.0.0.1:$proxy_port\", max_connections: 1024 }"
} >"$work/tokend.yaml"
"$bin" --config "$work/tokend.yaml" --log-level warn run &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/token" ] && break; sleep 0.1; done
token=$(cat "$work/token")
# Both answer the same bytes.
cmp <(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$upstream_port/api/x") \
    <(curl -s "http://127.0.0.1:$proxy_port/x")
echo "token: ${#token} bytes; body: 1024 bytes, answered identically directly and through the proxy"

run() { "$loadgen" load --tcp "$1" --path "$2" --connections "$3" --duration "$DURATION" "${@:4}"; }
field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '\n%-6s %-8s %10s %8s %8s   %s\n' conns path rps p50_us p99_us "runs (rps)"
for c in 1 16 64; do
  : >"$work/d.txt"; : >"$work/p.txt"
  for _ in $(seq "$REPS"); do
    run "127.0.0.1:$upstream_port" /api/x "$c" --header "Authorization: Bearer $token" >>"$work/d.txt"
    run "127.0.0.1:$proxy_port" /x "$c" >>"$work/p.txt"
  done
  for s in direct proxy; do
    f=$work/${s:0:1}.txt
    if grep -qv 'errors=0$' "$f"; then echo "errors against $s:"; cat "$f"; exit 1; fi
    printf '%-6s %-8s %10s %8s %8s   %s\n' "$c" "$s" "$(field rps <"$f" | median)" \
      "$(field p50_us <"$f" | median)" "$(field p99_us <"$f" | median)" "$(field rps <"$f" | tr '\n' ' ')"
  done
  echo "       proxy/direct throughput: $(awk -v p="$(field rps <"$work/p.txt" | median)" -v d="$(field rps <"$work/d.txt" | median)" 'BEGIN {printf "%.2f", p/d}')"
done
