#!/usr/bin/env bash
# Fleet simulation, the Kubernetes DaemonSet case on loopback: N release `tokend run` processes,
# started within the same second, each with its own config, state_dir and output directory but
# all with the same client (token_url, client_id, secret, audience), against ONE token server
# running as its own process: oauth2-mock-server (tests/interop/mock-idp.mjs), which records the
# arrival time of every token request on the server side. Tokens live LIFETIME seconds;
# `refresh: { min_remaining: 5s }` so the refresh lands at 80% ± jitter of the lifetime. Each run
# lasts until 2.75 lifetimes after the start-up burst: the start-up fetch and three refresh cycles
# (cycle k around k × 80%).
#
# Two modes, alternated, RUNS times each: `jitter` (the default refresh.jitter, 10%) and
# `nojitter` (`jitter: 0%`, the baseline). Each run is one `flock /tmp/tokend-bench.lock`
# section of about 3 minutes. Raw runs (every arrival time, per-process request counts, RSS and threads) go
# to bench/fleet-data/<mode>-<run>.json; bench/fleet_plot.py prints the tables and draws
# bench/fleet.png.
#
# Usage: bench/fleet.sh            (RUNS=3 N=200 LIFETIME=60 DATA=bench/fleet-data to change the
#                                   defaults; TOKEND_BIN=path measures another build, unbuilt)
#        bench/fleet.sh --one-run MODE RUN    (one run; what the locked section executes)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
N=${N:-200}
LIFETIME=${LIFETIME:-60}
data=${DATA:-$PWD/bench/fleet-data}
bin=${TOKEND_BIN:-$PWD/target/release/tokend}

one_run() {
  local mode=$1 run=$2 jitter_line ctl url ca
  case $mode in
    jitter) jitter_line="refresh: { min_remaining: 5s }" ;; # refresh.jitter left at its default
    nojitter) jitter_line="refresh: { min_remaining: 5s, jitter: 0% }" ;;
    *) echo "unknown mode $mode" >&2; return 2 ;;
  esac
  work=$(mktemp -d /tmp/tokend-bench-fleet.XXXXXX)
  pids=()
  cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${idp_pid:-}" ] && kill "$idp_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
  }
  trap cleanup EXIT

  STATE_DIR=$work/idp TOKEN_TTL=$LIFETIME node tests/interop/mock-idp.mjs >"$work/idp.json" &
  idp_pid=$!
  for _ in $(seq 100); do [ -s "$work/idp.json" ] && break; sleep 0.1; done
  url=$(jq -r .token_endpoint "$work/idp.json")
  ctl=$(jq -r .control_url "$work/idp.json")
  ca=$(jq -r .ca_file "$work/idp.json")

  for i in $(seq "$N"); do
    mkdir -p "$work/p$i"
    cat >"$work/p$i/config.yaml" <<YAML
state_dir: $work/p$i/state
socket: { path: $work/p$i/tokend.sock }
clients:
  fleet:
    token_url: $url
    client_id: fleet-node
    client_secret: fleet-node-secret
    audience: https://api.fleet.test/
    ca_file: $ca
    $jitter_line
    outputs: [{ path: $work/p$i/out/fleet.token }]
YAML
  done

  # "Within the same second": each process is forked first and waits, blocked opening a FIFO,
  # until the FIFO is opened for writing; then all exec tokend at once. t1 is when the last one
  # is tokend (its command name has changed).
  mkfifo "$work/go"
  for i in $(seq "$N"); do
    (
      exec 3<"$work/go"
      exec 3<&-
      exec "$bin" --config "$work/p$i/config.yaml" --log-format json run 2>"$work/p$i/log"
    ) &
    pids+=($!)
  done
  sleep 3
  local t0 t1 started comm name deadline
  name=$(basename "$bin" | cut -c1-15)
  t0=$(date +%s%3N)
  deadline=$((t0 + 30000))
  exec 4>"$work/go"
  while :; do
    started=0
    for p in "${pids[@]}"; do
      read -r comm 2>/dev/null </proc/"$p"/comm && [ "$comm" = "$name" ] && started=$((started + 1))
    done
    [ "$started" -eq "$N" ] || [ "$(date +%s%3N)" -gt "$deadline" ] && break
    sleep 0.01
  done
  t1=$(date +%s%3N)
  exec 4>&-
  sleep 1
  for i in $(seq "$N"); do
    if ! kill -0 "${pids[i - 1]}" 2>/dev/null; then
      echo "process $i is not running; its log:" >&2
      cat "$work/p$i/log" >&2
      return 1
    fi
  done

  # Until the server has seen every process's first request (the start-up burst), then the
  # footprint once every process holds its first token.
  local ready
  while [ "$(curl -sS "$ctl/requests" | jq .count)" -lt "$N" ]; do
    [ "$(date +%s%3N)" -gt "$((t0 + 60000))" ] && { echo "no start-up burst within 60 s" >&2; return 1; }
    sleep 0.2
  done
  ready=$(date +%s%3N)
  sleep 5
  local rss=() threads=()
  for p in "${pids[@]}"; do
    rss+=("$(awk '/^VmRSS/ {print $2}' /proc/"$p"/status)")
    threads+=("$(awk '/^Threads/ {print $2}' /proc/"$p"/status)")
  done

  # Until 2.75 lifetimes after the start-up burst: cycle 3 ends by 3 × 90%, cycle 4 starts at 4 × 70%.
  local end=$((ready + LIFETIME * 2750))
  while [ "$(date +%s%3N)" -lt "$end" ]; do sleep 0.2; done
  curl -sS "$ctl/requests" >"$work/requests.json"
  local alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
  for p in "${pids[@]}"; do kill "$p"; done
  wait "${pids[@]}" || true
  pids=()

  # Requests each process made, from its own log: successes ("refreshed") and anything else.
  local ok=() other=()
  for i in $(seq "$N"); do
    ok+=("$(grep -c '"outcome":"refreshed"' "$work/p$i/log" || true)")
    other+=("$(grep -c '"level":"\(WARN\|ERROR\)"' "$work/p$i/log" || true)")
  done

  # Each process's own view of its start-up: when it logged "tokend starting" and when its first
  # token was in its files (both RFC 3339, from the log).
  for i in $(seq "$N"); do
    jq -Rc 'fromjson? | select(.message == "tokend starting" or .outcome == "refreshed") | .timestamp' \
      "$work/p$i/log" | head -2 | jq -sc '{started: .[0], first_token: .[1]}'
  done | jq -sc . >"$work/startup.json"

  # What the processes warned about, message by message.
  cat "$work"/p*/log | jq -Rsc '[split("\n")[] | fromjson? | select(.level == "WARN" or .level == "ERROR")
    | {message: (.message | gsub("[0-9]+m?s"; "N")), error}] | group_by(.) | map(.[0] + {count: length})' \
    >"$work/warnings.json"

  mkdir -p "$data"
  jq -n --arg mode "$mode" --argjson run "$run" --argjson n "$N" --argjson lifetime "$LIFETIME" \
    --argjson t0 "$t0" --argjson t1 "$t1" --argjson alive "$alive" \
    --argjson rss "[$(IFS=,; echo "${rss[*]}")]" --argjson threads "[$(IFS=,; echo "${threads[*]}")]" \
    --argjson ok "[$(IFS=,; echo "${ok[*]}")]" --argjson warnings "[$(IFS=,; echo "${other[*]}")]" \
    --slurpfile server "$work/requests.json" --slurpfile messages "$work/warnings.json" \
    --slurpfile startup "$work/startup.json" \
    --arg binary "$(sha256sum "$bin" | cut -c1-16)" \
    '{mode: $mode, run: $run, n: $n, lifetime_s: $lifetime, launch_first_ms: $t0,
      launch_last_ms: $t1, alive_at_end: $alive, rss_kib: $rss, threads: $threads,
      refreshed_per_process: $ok, warnings_per_process: $warnings, warnings: $messages[0],
      binary_sha256: $binary, process_startup: $startup[0],
      requests: $server[0].requests}' >"$data/$mode-$run.json"
  echo "$mode run $run: $(jq '.requests | length' "$data/$mode-$run.json") requests at the server"
}

if [ "${1:-}" = --one-run ]; then
  one_run "$2" "$3"
  exit
fi

[ -n "${TOKEND_BIN:-}" ] || cargo build --release --locked -q
[ -d tests/interop/node_modules/oauth2-mock-server ] || (cd tests/interop && npm ci --silent)
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib
# Each process holds a handful of descriptors; the server holds one connection per process.
[ "$(ulimit -n)" -ge $((N * 4 + 256)) ] || ulimit -n $((N * 4 + 256))
rm -f "$data"/jitter-*.json "$data"/nojitter-*.json
for run in $(seq "$RUNS"); do
  for mode in jitter nojitter; do
    flock /tmp/tokend-bench.lock "$0" --one-run "$mode" "$run"
  done
done
# bench/fleet-data/before-salt: the jitter runs of the build before the jitter sample was salted
# per process (commit 4799d6a), measured with TOKEND_BIN=<that build> DATA=<dir>; drawn too.
if [ -d "$data/before-salt" ]; then
  python3 bench/fleet_plot.py "$data" bench/fleet.png "$data/before-salt" "jitter 10%, before the fix"
else
  python3 bench/fleet_plot.py "$data" bench/fleet.png
fi
