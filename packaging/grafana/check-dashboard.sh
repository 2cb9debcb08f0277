#!/usr/bin/env bash
# The dashboard's queries against real data: the test issuer (tokens living 20 s), a real
# `tokend run` with three clients and `metrics.listen`, and Debian's `prometheus` scraping it
# every second; meanwhile the IdP refuses some requests, one output cannot be written, and a
# caller who is not a reader is refused on the socket, so that every panel has something to
# show. After DURATION seconds (default 60) it runs check-dashboard.py: every expression of every panel
# must return series. With PNG=FILE it also draws the panels' queries to FILE.
#
# Usage: packaging/grafana/check-dashboard.sh [TOKEND_BIN] [TEST_ISSUER_BIN]
#        (default target/debug/tokend and target/debug/tokend-test-issuer: `cargo build --bins`)
# Needs root (a caller of another uid, with setpriv), prometheus, curl, python3 (matplotlib
# for PNG).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
BIN=$(realpath "${1:-target/debug/tokend}")
ISSUER=$(realpath "${2:-target/debug/tokend-test-issuer}")
DURATION=${DURATION:-60}
w=$(mktemp -d /tmp/tokend-dashboard.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$w"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metrics_port=$(port)
prom_port=$(port)

echo '{"app": "s3cret"}' >"$w/clients.json"
"$ISSUER" --lifetime 20s --clients-file "$w/clients.json" >"$w/issuer.out" &
pids+=($!)
until [ -s "$w/issuer.out" ]; do sleep 0.1; done
issuer=$(head -1 "$w/issuer.out" | awk '{print $NF}')
printf %s s3cret >"$w/secret"
chmod 0600 "$w/secret"
chmod 0755 "$w"   # the refused caller (uid 65534) must reach the socket to be refused
: >"$w/not-a-directory"
cat >"$w/config.yaml" <<YAML
state_dir: $w/state
socket: { path: $w/tokend.sock, mode: "0666" }
metrics: { listen: 127.0.0.1:$metrics_port }
defaults:
  token_url: $issuer/oauth/token
  client_id: app
  client_secret: { file: $w/secret }
  refresh: { min_remaining: 2s }
  retry: { initial: 1s, max: 4s }
clients:
  billing: { audience: https://billing/, outputs: [{ path: $w/out/billing }] }
  reports: { audience: https://reports/, outputs: [{ path: $w/out/reports }] }
  broken:
    audience: https://broken/
    outputs: [{ path: $w/not-a-directory/token }]
YAML
"$BIN" --config "$w/config.yaml" --log-level warn run 2>"$w/tokend.log" &
pids+=($!)

cat >"$w/prometheus.yml" <<YAML
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: tokend
    static_configs: [{ targets: ["127.0.0.1:$metrics_port"] }]
YAML
prometheus --config.file="$w/prometheus.yml" --storage.tsdb.path="$w/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$w/prometheus.log" 2>&1 &
pids+=($!)
until curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null; do sleep 0.2; done

# Traffic while Prometheus watches: readers (and one refused caller), IdP refusals.
end=$(( $(date +%s) + DURATION ))
n=0
while [ "$(date +%s)" -lt "$end" ]; do
  curl -s -o /dev/null --unix-socket "$w/tokend.sock" http://tokend/v1/tokens/billing || true
  setpriv --reuid 65534 --regid 65534 --clear-groups \
    curl -s -o /dev/null --unix-socket "$w/tokend.sock" http://tokend/v1/tokens/billing 2>/dev/null || true
  n=$((n + 1))
  if [ $((n % 20)) = 0 ]; then
    # A malformed request: a connection error (and hyper's 400).
    python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"NOT HTTP\r\n\r\n"); s.recv(200)' "$w/tokend.sock" || true
    curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
      -d '[{"status": 503, "retry_after": "1"}, {"status": 500}]' "$issuer/_dev/faults"
  fi
  sleep 0.5
done
args=("http://127.0.0.1:$prom_port" "$here/tokend-dashboard.json")
[ -z "${PNG:-}" ] || args+=(--png "$PNG" --minutes $(( (DURATION + 59) / 60 )))
# Debian's python3 has matplotlib (python3-matplotlib) when another python3 comes first in PATH.
py=python3
[ -z "${PNG:-}" ] || ! [ -x /usr/bin/python3 ] || py=/usr/bin/python3
"$py" "$here/check-dashboard.py" "${args[@]}"
