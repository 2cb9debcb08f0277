#!/usr/bin/env bash
# Socket API throughput and latency: tokend serving a token over its Unix socket, against nginx
# serving the same token as a static file on a Unix socket, loaded the same way by
# bench/loadgen.rs at 1, 16, 64 and 256 keep-alive connections, in one run. Each point is run
# REPS times, alternating the two servers; medians are reported. First, the idle memory each open
# connection costs tokend.
#
# Usage: bench/socket.sh            (DURATION=10s REPS=3 IDLE=1000 to change the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
REPS=${REPS:-3}
IDLE=${IDLE:-1000}

if ! command -v nginx >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
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
"$bin" dev --issuer-only --lifetime 24h >"$work/issuer.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/issuer.out" ] && break; sleep 0.1; done
url=$(head -1 "$work/issuer.out" | awk '{print $NF}')
cat >"$work/tokend.yaml" <<YAML
state_dir: $work/state
socket: { path: $work/tokend.sock, max_connections: 4096, header_timeout: 60s }
clients:
  bench:
    token_url: $url/oauth/token
    client_id: tokend-dev
    client_secret: tokend-dev-secret
    audience: https://bench/
    outputs: [{ path: $work/www/token, mode: "0644" }]   # nginx's workers must read it
YAML
"$bin" --config "$work/tokend.yaml" --log-level warn run &
tokend_pid=$!
pids+=($tokend_pid)
for _ in $(seq 100); do [ -s "$work/www/token" ] && break; sleep 0.1; done

# nginx: the same bytes from a file, two workers (one per core), keep-alive without limits,
# the file's descriptor cached.
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; accept_mutex on; }
http {
  access_log off;
  # Tuned for this: descriptors of the one file cached, sent with sendfile.
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

run() { "$loadgen" load --socket "$1" --path /v1/tokens/bench --connections "$2" --duration "$DURATION"; }
field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '\n%-6s %-7s %10s %8s %8s   %s\n' conns server rps p50_us p99_us "runs (rps)"
for c in 1 16 64 256; do
  : >"$work/t.txt"; : >"$work/n.txt"
  for _ in $(seq "$REPS"); do
    run "$work/tokend.sock" "$c" >>"$work/t.txt"
    run "$work/nginx.sock" "$c" >>"$work/n.txt"
  done
  for s in tokend nginx; do
    f=$work/${s:0:1}.txt
    if grep -qv 'errors=0$' "$f"; then echo "errors against $s:"; cat "$f"; exit 1; fi
    printf '%-6s %-7s %10s %8s %8s   %s\n' "$c" "$s" "$(field rps <"$f" | median)" \
      "$(field p50_us <"$f" | median)" "$(field p99_us <"$f" | median)" "$(field rps <"$f" | tr '\n' ' ')"
  done
done

