#!/usr/bin/env bash
# Fleet mode on Kubernetes, for real, offline:
#
#   packaging/kubernetes/test-fleet-pods.sh [IMAGE]
#
# 1. The manifests: the base with the fleet component (packaging/kubernetes/fleet), in an overlay
#    made as the component's kustomization.yaml tells users, and the sidecar example
#    (examples/sidecar.yaml), rendered and validated against the Kubernetes schemas in strict
#    mode, with negative controls that must fail; then what they promise is read off the
#    rendered objects (test/fleet_promises.py: which pod holds which secret, followers and
#    refreshers on the same keys), and the Pod Security `restricted` checks are made on them
#    (test/podsecurity.py: the refreshers and the sidecar pass, the DaemonSet with its hostPath
#    does not, and each check catches a pod changed to break it).
# 2. The pods, played with `podman kube play` (test/kubelet.py turns the templates into Pods):
#    a Redis (an image built offline from Debian's redis-server, with the ACL users of docs/fleet.md),
#    the development issuer (20-second tokens, refreshed at half their lifetime), the
#    DaemonSet's follower on the test's "node", the two refreshers of the Deployment, and the
#    sidecar example with an app that reads the token from the shared volume. Followers started
#    first ask nothing and serve nothing; once the refreshers run, every pod serves the same
#    token, the followers without holding the client secret, and over two token lifetimes the
#    issuer sees one request per refresh, all of them the refreshers' (each one in a
#    refresher's log). With the store stopped (the negative control), both refreshers ask.
#
# TOKEND_TEST_KEEP=1 keeps the scratch directory. Needs root, podman (with runc and catatonit),
# kubectl (kustomize), python3 with PyYAML, kubernetes-validate, curl, openssl, redis-server and
# redis-cli, busybox-static; the image built by packaging/container/build-image.sh. Prints one
# line per check and ends with `N passed, M failed`; exits 0 only if every check passed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -1)
image=${1:-localhost/tokend:$version}
bin=${TOKEND_STATIC_BIN:-$top/target/x86_64-unknown-linux-gnu/release/tokend}
kube_version=1.32.0
uid=64023
socket_gid=64024
reader_gid=64100
# Tokens live 20 s and are refreshed at half that: a refresh every 10 s, one request each.
lifetime=20
cycle=10
# The requests are counted over two lifetimes.
window=$(( 2 * lifetime ))
export CONTAINERS_CONF=${CONTAINERS_CONF:-$top/packaging/container/containers.conf}

# shellcheck source=../checks.sh
. "$here/../checks.sh"
# shellcheck source=test/common.sh
. "$here/test/common.sh"

work=$(mktemp -d /tmp/tokend-fleet-pods.XXXXXX)
tag="tokend-fleet-$$"
follower="$tag-tokend"
refreshers=("$tag-tokend-refresher-0" "$tag-tokend-refresher-1")
sidecar="$tag-billing-api"
cleanup() {
  podman pod rm -f -t 0 "$follower" "${refreshers[@]}" "$sidecar" >/dev/null 2>&1 || true
  podman rm -f -t 0 "$tag-redis" >/dev/null 2>&1 || true
  podman rmi -f "localhost/$tag-app" >/dev/null 2>&1 || true
  [ -n "${issuer:-}" ] && kill "$issuer" 2>/dev/null || true
  if [ -n "${TOKEND_TEST_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The client's secret: whatever holds it can be found by this string.
client_secret="s3cret-of-the-refreshers-$RANDOM$RANDOM"
port=$(free_port)
printf '{"node-agent": "%s"}' "$client_secret" >"$work/clients.json"
"$bin" dev --issuer-only --port "$port" --lifetime "${lifetime}s" \
  --clients-file "$work/clients.json" >"$work/issuer.log" 2>&1 &
issuer=$!
wait_for "curl -sf http://127.0.0.1:$port/.well-known/openid-configuration" 10 ||
  { echo "the development issuer did not start:"; cat "$work/issuer.log"; exit 1; }
# The issuer's token requests: how many since a Unix time in ms (0: all), and a summary of them.
cat >"$work/requests.py" <<'EOF'
import json, sys, urllib.request
seen = json.load(urllib.request.urlopen(sys.argv[1]))["requests"]
since = int(sys.argv[3]) if len(sys.argv) > 3 else 0
seen = [r for r in seen if r["at_ms"] >= since]
if sys.argv[2] == "count":
    print(len(seen))
else:
    print(" ".join(sorted({f'{r["client_id"]}/{r["auth"]}/{r["status"]}' for r in seen})) or "none")
EOF
requests_url="http://127.0.0.1:$port/_dev/requests"
requests() { python3 "$work/requests.py" "$requests_url" count "${1:-0}"; }
now_ms() { date +%s%3N; }

say "manifests: the fleet component and the sidecar, rendered and validated offline (Kubernetes $kube_version, strict)"
cp -r "$top/packaging/kubernetes" "$work/base"
"$bin" fleet keygen >"$work/fleet.key"
# The Secret tokend-fleet and the two configurations, as the component's kustomization.yaml
# tells users to make them (its example configurations, unchanged).
mkdir -p "$work/shipped"
cp "$top/packaging/kubernetes/fleet/follower.yaml" "$top/packaging/kubernetes/fleet/refresher.yaml" "$work/shipped/"
cp "$work/fleet.key" "$work/shipped/fleet.key"
printf %s follower-pw >"$work/shipped/follower-password"
printf %s refresher-pw >"$work/shipped/refresher-password"
overlay() { # DIRECTORY: the user's overlay of the base with the fleet component, in DIRECTORY.
  cat >"$1/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../base]
components: [../base/fleet]
configMapGenerator:
  - name: tokend-config
    namespace: tokend
    behavior: replace
    files: [config.yaml=follower.yaml]
    options: { disableNameSuffixHash: true }
  - name: tokend-refresher-config
    namespace: tokend
    files: [config.yaml=refresher.yaml]
    options: { disableNameSuffixHash: true }
secretGenerator:
  - name: tokend-fleet
    namespace: tokend
    files: [fleet.key, follower-password, refresher-password]
    options: { disableNameSuffixHash: true }
EOF
}
overlay "$work/shipped"
kubectl kustomize "$work/shipped" >"$work/shipped.yaml"
echo "rendered: $(grep '^kind:' "$work/shipped.yaml" | cut -d' ' -f2 | tr '\n' ' ')"
validate() { kubernetes-validate --strict --kubernetes-version "$kube_version" --quiet "$@" >"$work/validate.log" 2>&1; }
if validate "$work/shipped.yaml"; then ok "the base with the fleet component: every object is valid (strict)"
else bad "the base with the fleet component: $(cat "$work/validate.log")"; fi
if validate "$top/packaging/kubernetes/examples/sidecar.yaml"; then ok "the sidecar example is valid (strict)"
else bad "examples/sidecar.yaml: $(cat "$work/validate.log")"; fi
# Negative controls, in the objects the component adds: a misspelt field, a wrong type.
sed 's/^  replicas: 2$/  replica: 2/' "$work/shipped.yaml" >"$work/typo.yaml"
validate "$work/typo.yaml" || true
check "a misspelt field of the Deployment fails strict validation, named (negative control)" grep -q "'replica' was unexpected" "$work/validate.log"
sed 's/^  minAvailable: 1$/  minAvailable: [1]/' "$work/shipped.yaml" >"$work/type.yaml"
validate "$work/type.yaml" || true
check "a wrong type in the PodDisruptionBudget fails validation (negative control)" grep -q "minAvailable" "$work/validate.log"

if python3 "$here/test/fleet_promises.py" "$work/shipped.yaml" "$top/packaging/kubernetes/examples/sidecar.yaml" >"$work/promises.log" 2>&1; then
  ok "the component and the sidecar keep their promises: $(cat "$work/promises.log")"
else
  bad "the component or the sidecar: $(cat "$work/promises.log")"
fi
# Negative control: an overlay that mounts the client secrets on the nodes again, and a follower
# configuration with a client secret in it.
mkdir -p "$work/mistaken"
cp "$work/shipped/"* "$work/mistaken/"
sed -i 's|^    audience: https://billing.example.com/|    client_secret: { file: /etc/tokend/secrets/billing, group_readable: true }\n&|' "$work/mistaken/follower.yaml"
overlay "$work/mistaken"
cat >>"$work/mistaken/kustomization.yaml" <<'EOF'
patches:
  - patch: |
      apiVersion: apps/v1
      kind: DaemonSet
      metadata: { name: tokend, namespace: tokend }
      spec:
        template:
          spec:
            containers:
              - name: tokend
                volumeMounts: [{ name: secrets, mountPath: /etc/tokend/secrets, readOnly: true }]
            volumes: [{ name: secrets, secret: { secretName: tokend-secrets, defaultMode: 0440 } }]
EOF
kubectl kustomize "$work/mistaken" >"$work/mistaken.yaml"
python3 "$here/test/fleet_promises.py" "$work/mistaken.yaml" >"$work/mistaken.log" 2>&1 && mistaken_rc=0 || mistaken_rc=$?
check "client secrets mounted on the nodes, and one in the followers' configuration, are both caught (negative control: $(cat "$work/mistaken.log"))" \
  sh -c "test $mistaken_rc = 1 && grep -q 'DaemonSet mounts no client secret (it mounts' $work/mistaken.log && grep -q 'holds no credentials (found' $work/mistaken.log"

python3 "$here/test/podsecurity.py" restricted "$work/shipped.yaml" "$top/packaging/kubernetes/examples/sidecar.yaml" >"$work/restricted.log" 2>&1 || true
sed 's/^/  /' "$work/restricted.log"
check "the refreshers' pods pass Pod Security restricted" grep -qx 'ok Deployment/tokend-refresher' "$work/restricted.log"
check "the sidecar's pod passes Pod Security restricted" grep -qx 'ok Deployment/billing-api' "$work/restricted.log"
check "the DaemonSet does not, for its hostPath volumes (negative control)" grep -q '^DaemonSet/tokend: hostPath volumes' "$work/restricted.log"
if python3 "$here/test/podsecurity.py" controls "$work/shipped.yaml" "$top/packaging/kubernetes/examples/sidecar.yaml" >"$work/controls.log" 2>&1; then
  ok "every restricted check fails a pod changed to break it (negative controls): $(cat "$work/controls.log")"
else
  bad "the restricted checks: $(cat "$work/controls.log")"
fi

say "Redis, built offline from Debian's redis-server, with the ACL users of docs/fleet.md"
redis_image=$("$top/packaging/container/build-redis-image.sh")
echo "redis image: $redis_image ($(podman image inspect "$redis_image" --format '{{.Size}}') bytes)"
redis_port=$(free_port)
admin_pw=$(openssl rand -hex 16)
refresher_pw=$(openssl rand -hex 16)
follower_pw=$(openssl rand -hex 16)
podman run -d --name "$tag-redis" --network host --read-only --cap-drop ALL "$redis_image" \
  --bind 127.0.0.1 --port "$redis_port" --requirepass "$admin_pw" --save '' --appendonly no >/dev/null
rcli() { redis-cli -h 127.0.0.1 -p "$redis_port" --no-auth-warning "$@"; }
wait_for "redis-cli -h 127.0.0.1 -p $redis_port --no-auth-warning --pass $admin_pw PING | grep -q PONG" 10 ||
  { echo "redis did not start:"; podman logs "$tag-redis"; exit 1; }
check "Redis runs as 6379, not root" test "$(podman inspect "$tag-redis" --format '{{.Config.User}}')" = 6379:6379
# The ACL lines docs/fleet.md gives (namespace prod), with the test's passwords.
acl_lines=$(grep -E '^ACL SETUSER tokend-(refresher|follower) ' "$top/docs/fleet.md" |
  sed -e "s/>REFRESHER-PASSWORD/>$refresher_pw/" -e "s/>FOLLOWER-PASSWORD/>$follower_pw/")
check "docs/fleet.md gives an ACL line for each role" test "$(printf '%s\n' "$acl_lines" | grep -c .)" = 2
while read -r line; do
  # shellcheck disable=SC2086 # the line is the command's words
  rcli --pass "$admin_pw" $line >/dev/null
done <<<"$acl_lines"
check "the followers' Redis user may not write" sh -c "redis-cli -h 127.0.0.1 -p $redis_port --no-auth-warning --user tokend-follower --pass $follower_pw SET tokend:prod:x y | grep -q NOPERM"

say "the pods: a follower on the node, the sidecar, then two refreshers"
# The test's overlay: the component as shipped; the configurations the issuer's client, this
# Redis and short tokens; the secrets the test's.
mkdir -p "$work/test"
fleet_config() { # ROLE USER SOCKET_GROUP: a configuration of the test's fleet.
  cat <<EOF
state_dir: /var/lib/tokend
socket: { path: /run/tokend/tokend.sock, mode: "0660", group: $3 }
fleet:
  redis:
    url: redis://127.0.0.1:$redis_port/0
    username: tokend-$2
    password: { file: /etc/tokend/fleet/$2-password, group_readable: true }
  key: { file: /etc/tokend/fleet/fleet.key, group_readable: true }
  namespace: prod
  role: $1
clients:
  node-agent:
    token_url: http://127.0.0.1:$port/oauth/token
    client_id: node-agent
    refresh: { at: 50%, jitter: 0%, min_remaining: 1s }
    outputs:
      - { path: /run/tokend/node-agent.token, mode: "0640", group: $reader_gid }
    readers: { groups: [$reader_gid] }
EOF
}
fleet_config follower follower "$socket_gid" >"$work/test/follower.yaml"
fleet_config refresher refresher "$socket_gid" |
  sed 's|^    client_id: node-agent$|&\n    client_secret: { file: /etc/tokend/secrets/node-agent, group_readable: true }|' >"$work/test/refresher.yaml"
# The sidecar's: the socket's group is the app's, 64100, as in the example.
fleet_config follower follower "$reader_gid" >"$work/sidecar.yaml"
cp "$work/fleet.key" "$work/test/fleet.key"
printf %s "$follower_pw" >"$work/test/follower-password"
printf %s "$refresher_pw" >"$work/test/refresher-password"
printf %s "$client_secret" >"$work/test/node-agent"
overlay "$work/test"
cat >>"$work/test/kustomization.yaml" <<EOF
  - name: tokend-secrets
    namespace: tokend
    behavior: replace
    files: [node-agent]
images:
  - { name: localhost/tokend, newName: ${image%:*}, newTag: ${image##*:} }
EOF
kubectl kustomize "$work/test" >"$work/test.yaml"
if validate "$work/test.yaml"; then ok "the test's overlay is valid (strict)"; else bad "the test's overlay: $(cat "$work/validate.log")"; fi

build_consumer_image "localhost/$tag-app" "$bin" "$work/app-image"
# The sidecar's app: every second, a digest of the token from the file and from the socket
# (never the token itself) and the exit status of `tokend get`.
# shellcheck disable=SC2016 # expanded in the app's container
app_loop='
while :; do
  f=$(printf %s "$(cat /run/tokend/node-agent.token 2>/dev/null)" | sha256sum | cut -c1-12)
  t=$(tokend get --wait --timeout 20s --socket /run/tokend/tokend.sock node-agent 2>&1); rc=$?
  s=$(printf %s "$t" | sha256sum | cut -c1-12)
  echo "file=$f socket=$s rc=$rc"
  sleep 1
done'
node="$work/node"
kubelet() { NAME_PREFIX="$tag-" python3 "$here/test/kubelet.py" pod "$@"; }
kubelet DaemonSet/tokend "$node" tokend "$work/follower-pod.yaml" "$work/test.yaml"
for i in 0 1; do
  kubelet Deployment/tokend-refresher "$node" "tokend-refresher-$i" "$work/tokend-refresher-$i-pod.yaml" "$work/test.yaml"
done
kubelet Deployment/billing-api "$node" billing-api "$work/sidecar-pod.yaml" \
  "$top/packaging/kubernetes/examples/sidecar.yaml" "$work/test.yaml" \
  --config "billing-api-tokend:config.yaml=$work/sidecar.yaml" \
  --image "tokend=$image" --image "app=localhost/$tag-app" --command "app=$app_loop"
play() { podman kube play "$1" >>"$work/play.log" 2>&1 || { cat "$work/play.log"; bad "podman kube play $1"; }; }
started_ms=$(now_ms)
play "$work/follower-pod.yaml"
play "$work/sidecar-pod.yaml"
# The followers alone: they reach the store, find nothing, and ask no one.
for pod in "$follower" "$sidecar"; do
  check "$pod runs (its liveness probe passes)" \
    wait_for "podman exec $pod-tokend /usr/bin/tokend probe live --socket /run/tokend/tokend.sock" 15
done
sleep 3
check "with no refresher, the followers serve nothing (not ready) ..." \
  sh -c "! podman exec $follower-tokend /usr/bin/tokend probe ready --socket /run/tokend/tokend.sock 2>/dev/null && ! podman exec $sidecar-tokend /usr/bin/tokend probe ready --socket /run/tokend/tokend.sock 2>/dev/null"
check "... and ask the IdP nothing ($(requests) requests)" test "$(requests)" = 0
for pod in "${refreshers[@]}"; do play "$work/${pod#"$tag-"}-pod.yaml"; done
for pod in "${refreshers[@]}" "$follower" "$sidecar"; do
  check "$pod is ready (its readiness probe passes)" wait_for "podman exec $pod-tokend /usr/bin/tokend probe ready --socket /run/tokend/tokend.sock" 20
done
echo "  ready $(( ($(now_ms) - started_ms) / 1000 )) s after the first pod was played"
check "the refreshers run with a read-only root and no capability" sh -c "test \"\$(podman inspect ${refreshers[0]}-tokend --format '{{.HostConfig.ReadonlyRootfs}} {{.EffectiveCaps}} {{.Config.User}}')\" = 'true [] $uid:$uid'"

say "no client secret but in the refreshers; the same token everywhere"
mounts() { podman inspect "$1" --format '{{range .Mounts}}{{.Source}}{{"\n"}}{{end}}'; }
holders() { # CONTAINER: those of its mounts and environment variables that hold the client secret.
  { mounts "$1" | while read -r source; do grep -rlF "$client_secret" "$source" 2>/dev/null || true; done
    podman inspect "$1" --format '{{range .Config.Env}}{{.}}{{"\n"}}{{end}}' | grep -F "$client_secret" || true; } | sort -u
}
for ctr in "$follower-tokend" "$sidecar-tokend" "$sidecar-app"; do
  check "$ctr holds no client secret (in $(mounts "$ctr" | grep -c .) mounts and its environment)" test -z "$(holders "$ctr")"
done
check "the refreshers hold it (the search finds it: positive control)" test -n "$(holders "${refreshers[0]}-tokend")"
# A digest of each pod's token, read from each pod's files and socket (the refreshers' and the
# sidecar's volumes are emptyDirs under the node's pods/ directory, as on a kubelet).
cat >"$work/tokens.sh" <<EOF
digest() { printf %s "\$1" | sha256sum | cut -c1-12; }
socket() { curl -sf --unix-socket "\$1/tokend.sock" http://localhost/v1/tokens/node-agent; }
for dir in $node/pods/${refreshers[0]}/run $node/pods/${refreshers[1]}/run $node/run/tokend $node/pods/$sidecar/tokens; do
  echo "\$(digest "\$(cat \$dir/node-agent.token 2>/dev/null)") \$(digest "\$(socket \$dir)")"
done | tr ' ' '\n'
podman logs --tail 1 $sidecar-app 2>/dev/null | sed -n 's/^file=\([0-9a-f]*\) socket=\([0-9a-f]*\) rc=0$/\1\n\2/p'
EOF
same_cmd="test \$(sh $work/tokens.sh | grep -v e3b0c44298fc | sort -u | wc -l) = 1 && test \$(sh $work/tokens.sh | wc -l) = 10"
check "refreshers, follower, sidecar and app all serve the same token (files and sockets)" wait_for "$same_cmd" 10
echo "  $(sh "$work/tokens.sh" | tr '\n' ' ')"
status() { curl -sf --unix-socket "$1/tokend.sock" http://localhost/v1/tokens; }
from_refresher() { # SOCKET_DIR: its role, and whether its token came from a refresher by name.
  status "$1" | python3 -c 'import json, sys
s = json.load(sys.stdin); c = s["clients"][0]
print(s["fleet"]["role"], c["from"], "from-refresher" if c["node"] in sys.argv[1:] else c["node"])' "${refreshers[@]}"
}
check "the follower says its token is the fleet's, from a refresher ($(from_refresher "$node/run/tokend"))" \
  test "$(from_refresher "$node/run/tokend")" = "follower fleet from-refresher"
check "so does the sidecar ($(from_refresher "$node/pods/$sidecar/tokens"))" \
  test "$(from_refresher "$node/pods/$sidecar/tokens")" = "follower fleet from-refresher"

say "over two lifetimes ($window s): one request per refresh, the refreshers'"
window_start=$(now_ms)
before_tokens=$(podman logs "$sidecar-app" 2>/dev/null | grep -c . || true)
sleep "$window"
window_end=$(now_ms)
in_window=$(( $(requests "$window_start") - $(requests "$window_end") ))
seconds=$(( (window_end - window_start) / 1000 ))
refreshes=$(( seconds / cycle ))
echo "  the issuer saw $in_window token requests in $seconds s: $refreshes refreshes of a $lifetime s token at half its lifetime, for 2 refreshers and 2 followers"
check "at most one request per refresh ($in_window for $refreshes refreshes; +1 for one at the window's edge)" test "$in_window" -le $(( refreshes + 1 ))
check "and the refreshers did refresh (at least $(( refreshes - 1 )))" test "$in_window" -ge $(( refreshes - 1 ))
check "every request was authenticated with the client's secret and answered 200 (none from a follower, which has none)" \
  test "$(python3 "$work/requests.py" "$requests_url" summary)" = "node-agent/client_secret_post/200"
# The tokens each refresher says it obtained from the IdP, and the issuer's count, read together
# (again, if a refresh came between the two).
cat >"$work/asked.sh" <<EOF
for pod in ${refreshers[*]}; do podman logs \$pod-tokend 2>&1 | grep -c '"outcome":"refreshed"'; done | awk '{ n += \$1 } END { print n }'
EOF
check "each of the issuer's requests is in a refresher's log" wait_for "test \$(sh $work/asked.sh) = \$(python3 $work/requests.py $requests_url count)" 5
for pod in "${refreshers[@]}"; do
  echo "  $pod: $(podman logs "$pod-tokend" 2>&1 | grep -c '"outcome":"refreshed"' || true) tokens from the IdP, $(podman logs "$pod-tokend" 2>&1 | grep -c '"outcome":"adopted"' || true) from the store"
done
echo "  the issuer: $(requests) requests since the start"
for pod in "$follower" "$sidecar"; do
  check "$pod took every token from the store ($(podman logs "$pod-tokend" 2>&1 | grep -c '"outcome":"adopted"' || true) adopted, none refreshed)" \
    sh -c "podman logs $pod-tokend 2>&1 | grep -q '\"outcome\":\"adopted\"' && ! podman logs $pod-tokend 2>&1 | grep -q '\"outcome\":\"refreshed\"'"
done
podman logs "$sidecar-app" >"$work/app.log" 2>&1 || true
app_tokens=$(tail -n +"$(( before_tokens + 1 ))" "$work/app.log" | awk '/ rc=0$/ { split($1, f, "="); split($2, s, "="); if (f[2] == s[2] && f[2] != "e3b0c44298fc") print f[2] }' | sort -u | wc -l)
failed=$(grep '^file=' "$work/app.log" | grep -vc ' rc=0$' || true)
check "the sidecar's app saw the refreshes ($app_tokens tokens in the window, file and socket alike)" test "$app_tokens" -ge $(( refreshes - 1 ))
check "none of the app's $(grep -c '^file=' "$work/app.log") socket reads failed" test "$failed" = 0
# Every value in Redis is sealed: neither the token served nor the client's secret in clear.
sealed() {
  local keys values
  keys=$(rcli --pass "$admin_pw" --scan | grep -v ':lock$')
  values=$(for k in $keys; do rcli --pass "$admin_pw" GET "$k"; done)
  echo "  in Redis: $(printf '%s\n' "$keys" | sed 's/:[0-9a-f]\{16,\}$/:<fingerprint>/' | sort | uniq -c | tr -s ' \n' ' ')"
  [ -n "$keys" ] && ! printf '%s\n' "$values" | grep -qv '^tokend1\.' &&
    ! printf '%s\n' "$values" | grep -qF -e "$client_secret" -e "$(cat "$node/run/tokend/node-agent.token")"
}
check "the store holds the token sealed, nothing in clear" sealed

say "negative control: with the store stopped, each refresher asks for itself"
podman stop -t 0 "$tag-redis" >/dev/null
stopped=$(now_ms)
check "within a refresh, both refreshers ask the IdP: 2 requests (the count above would have caught it)" \
  wait_for "test \$(python3 $work/requests.py $requests_url count $stopped) -ge 2" $(( cycle + 8 ))
check "and the follower still serves its token" sh -c "curl -sf --unix-socket $node/run/tokend/tokend.sock http://localhost/v1/tokens/node-agent >/dev/null"

echo "---- logs (last lines)"
for pod in "${refreshers[0]}" "$follower"; do podman logs "$pod-tokend" 2>&1 | tail -2 | sed "s/^/  $pod: /"; done
summary
