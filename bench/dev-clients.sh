# Sourced by bench/rss.sh and bench/clock-step.sh: N clients against the development issuer.
#
# dev_clients DIR N BIN   starts `BIN dev --issuer-only` (1-hour tokens; its pid in $issuer_pid)
#                         and writes DIR/c.yaml: N clients, each with its own audience (one
#                         request each) and one raw output in DIR/out.
# wait_for_outputs DIR N  returns once the N outputs exist.
dev_clients() {
  local w=$1 n=$2 bin=$3 url i
  mkdir -p "$w/out"
  "$bin" dev --issuer-only --lifetime 1h >"$w/iss" 2>/dev/null &
  issuer_pid=$!
  while ! [ -s "$w/iss" ]; do
    kill -0 "$issuer_pid" 2>/dev/null || { echo "$(basename "$0"): the issuer exited" >&2; return 1; }
    sleep 0.1
  done
  url=$(head -1 "$w/iss" | awk '{print $NF}')
  {
    echo "state_dir: $w/state"
    echo "socket: { path: $w/s.sock }"
    echo "defaults: { token_url: $url/oauth/token, client_id: tokend-dev, client_secret: tokend-dev-secret }"
    echo "clients:"
    for i in $(seq "$n"); do echo "  c$i: { audience: https://a$i/, outputs: [{ path: $w/out/c$i }] }"; done
  } >"$w/c.yaml"
}

wait_for_outputs() {
  while [ "$(find "$1/out" -maxdepth 1 -type f ! -name '.*' | wc -l)" -lt "$2" ]; do sleep 0.2; done
}
