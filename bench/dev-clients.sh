# Sourced by the benchmarks that run tokend against its development issuer.
#
# dev_issuer DIR LIFETIME BIN   starts `BIN dev --issuer-only` granting LIFETIME tokens, its
#                               output in DIR/iss; its pid in $issuer_pid, its URL in $issuer_url.
# dev_clients DIR N BIN         dev_issuer (1-hour tokens), and writes DIR/c.yaml: N clients,
#                               each with its own audience (one request each) and one raw output
#                               in DIR/out.
# bench_client OUTPUT           prints the `clients:` section of the socket benchmarks: the one
#                               client `bench` of $issuer_url, its output OUTPUT (a YAML mapping).
# wait_for_outputs DIR N        returns once the N outputs exist.
dev_issuer() {
  local w=$1 lifetime=$2 bin=$3
  "$bin" dev --issuer-only --lifetime "$lifetime" >"$w/iss" 2>/dev/null &
  issuer_pid=$!
  while ! [ -s "$w/iss" ]; do
    kill -0 "$issuer_pid" 2>/dev/null || { echo "$(basename "$0"): the issuer exited" >&2; return 1; }
    sleep 0.1
  done
  issuer_url=$(head -1 "$w/iss" | awk '{print $NF}')
}

dev_clients() {
  local w=$1 n=$2 bin=$3 i
  mkdir -p "$w/out"
  dev_issuer "$w" 1h "$bin"
  {
    echo "state_dir: $w/state"
    echo "socket: { path: $w/s.sock }"
    echo "defaults: { token_url: $issuer_url/oauth/token, client_id: tokend-dev, client_secret: tokend-dev-secret }"
    echo "clients:"
    for i in $(seq "$n"); do echo "  c$i: { audience: https://a$i/, outputs: [{ path: $w/out/c$i }] }"; done
  } >"$w/c.yaml"
}

bench_client() {
  cat <<YAML
clients:
  bench:
    token_url: $issuer_url/oauth/token
    client_id: tokend-dev
    client_secret: tokend-dev-secret
    audience: https://bench/
    outputs: [$1]
YAML
}

wait_for_outputs() {
  while [ "$(find "$1/out" -maxdepth 1 -type f ! -name '.*' | wc -l)" -lt "$2" ]; do sleep 0.2; done
}
