#!/usr/bin/env bash
# tokend's image and Kubernetes manifests, for real, offline:
#
#   packaging/kubernetes/test-pods.sh [IMAGE]
#
# 1. The manifests: the kustomize base and an overlay that adds a client (as a user would) are
#    rendered and every object validated against the Kubernetes schemas in strict mode
#    (kubernetes-validate, which bundles them), with negative controls that must fail; then what
#    the base promises (identities, groups, probes, policies) is read off the rendered objects.
# 2. The image (IMAGE, default localhost/tokend:VERSION, built by
#    packaging/container/build-image.sh): run as `podman run --read-only --user 64023:64023
#    --cap-drop ALL --network host` against the development issuer, reached as a cluster pod
#    reaches an IdP: by a name that its resolv.conf's DNS server answers (dnsmasq), over TLS
#    (nginx in front of the issuer) with a certificate that the image's CA bundle must vouch for.
# 3. The pods: the DaemonSet's pod template and the example consumer played with `podman kube
#    play` (packaging/kubernetes/test/kubelet.py turns them into Pods), sharing the "node's"
#    /run/tokend: the probes pass, the consumer reads the token from the file and the socket and
#    sees a refresh, a ConfigMap update is reloaded without a restart, and a deleted and
#    replayed tokend pod sends no request while the consumer's reads never fail.
#
# TOKEND_TEST_KEEP=1 keeps the scratch directory (manifests, pods, logs) for a look afterwards.
# Needs root, podman (with runc and catatonit), kubectl (kustomize), python3 with PyYAML,
# kubernetes-validate, curl, openssl, nginx, dnsmasq and busybox-static; CONTAINERS_CONF
# defaults to packaging/container/containers.conf. Prints one line per check and ends with
# `N passed, M failed`; exits 0 only if every check passed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -1)
image=${1:-localhost/tokend:$version}
# The static binary the image was built from: the development issuer, and `tokend get` in the
# consumer image.
bin=${TOKEND_STATIC_BIN:-$top/target/x86_64-unknown-linux-gnu/release/tokend}
# The Kubernetes version whose schemas the manifests are validated against.
kube_version=1.32.0
# The identities the manifests give tokend and its readers (daemonset.yaml explains them).
uid=64023
socket_gid=64024
reader_gid=64100
export CONTAINERS_CONF=${CONTAINERS_CONF:-$top/packaging/container/containers.conf}

# shellcheck source=../checks.sh
. "$(dirname "$0")/../checks.sh"
# shellcheck source=test/common.sh
. "$here/test/common.sh"

work=$(mktemp -d /tmp/tokend-pods.XXXXXX)
tag="tokend-test-$$"
cleanup() {
  podman pod rm -f -t 0 "$tag-tokend" "$tag-token-consumer" >/dev/null 2>&1 || true
  podman rm -f -t 0 "$tag-run" "$tag-names" >/dev/null 2>&1 || true
  podman rmi -f "localhost/$tag-consumer" "localhost/$tag-ca" >/dev/null 2>&1 || true
  for pid in ${issuer:-} ${nginx:-} ${dnsmasq:-}; do kill "$pid" 2>/dev/null || true; done
  if [ -n "${TOKEND_TEST_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The development issuer on the host's loopback, the IdP of every test below: 30-second tokens,
# refreshed at half their lifetime by the pod's client, so that the consumer sees a refresh
# within seconds and a replayed pod has 15 seconds in which it must not ask for one.
port=$(free_port)
echo '{"node-agent": "s3cret-for-tests", "reports": "other-s3cret"}' >"$work/clients.json"
"$bin" dev --issuer-only --port "$port" --lifetime 30s \
  --clients-file "$work/clients.json" >"$work/issuer.log" 2>&1 &
issuer=$!
wait_for "curl -sf http://127.0.0.1:$port/.well-known/openid-configuration" 10 ||
  { echo "the development issuer did not start:"; cat "$work/issuer.log"; exit 1; }
# Every token request the issuer has answered (a command, for wait_for too).
requests_cmd="curl -s http://127.0.0.1:$port/_dev/requests | grep -o '\"at_ms\"' | wc -l"
requests() { sh -c "$requests_cmd"; }

# In front of it, as an IdP is reached from a pod: https://idp.test:$tls_port with a certificate
# from a throwaway CA, the name answered by a DNS server on a loopback address of its own.
tls_port=$(free_port)
dns_ip="127.53.$(( RANDOM % 250 + 1 )).$(( RANDOM % 250 + 1 ))"
pki="$work/pki"
mkdir -p "$pki" "$work/nginx/tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=tokend test CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=idp.test \
  -keyout "$pki/idp.key" -out "$pki/idp.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:idp.test\n' >"$pki/ext"
openssl x509 -req -in "$pki/idp.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
  -extfile "$pki/ext" -out "$pki/idp.crt" 2>/dev/null
cat >"$work/nginx/nginx.conf" <<NGINX
daemon off;
master_process off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  server {
    listen 127.0.0.1:$tls_port ssl;
    server_name idp.test;
    ssl_certificate $pki/idp.crt;
    ssl_certificate_key $pki/idp.key;
    location / { proxy_pass http://127.0.0.1:$port; }
  }
}
NGINX
"$(command -v nginx || echo /usr/sbin/nginx)" -p "$work/nginx/" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx=$!
"$(command -v dnsmasq || echo /usr/sbin/dnsmasq)" --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
  --listen-address="$dns_ip" --port=53 --address=/idp.test/127.0.0.1 --log-queries --log-facility="$work/dns.log" \
  --pid-file="$work/dnsmasq.pid" &
dnsmasq=$!
# As the kubelet writes a pod's resolv.conf: search domains, and ndots:5, so that idp.test is
# first tried with each search domain (answered "refused") before as it stands.
printf 'nameserver %s\nsearch tokend.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' "$dns_ip" >"$work/resolv.conf"
wait_for "curl -sf --cacert $pki/ca.crt --resolve idp.test:$tls_port:127.0.0.1 https://idp.test:$tls_port/.well-known/openid-configuration" 10 ||
  { echo "nginx did not start:"; cat "$work/nginx/error.log"; exit 1; }

say "manifests: render and validate offline (Kubernetes $kube_version schemas, strict)"
kubectl kustomize "$top/packaging/kubernetes" >"$work/base.yaml"
echo "rendered base: $(grep '^kind:' "$work/base.yaml" | cut -d' ' -f2 | tr '\n' ' ')"
# An overlay that adds a client, as docs/kubernetes.md tells users to write one.
metrics_port=$(free_port)
mkdir -p "$work/overlay/secrets"
printf %s s3cret-for-tests >"$work/overlay/secrets/node-agent"
cp -r "$top/packaging/kubernetes" "$work/base"
cat >"$work/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../base
configMapGenerator:
  - name: tokend-config
    behavior: replace
    files: [config.yaml]
    options: { disableNameSuffixHash: true }
secretGenerator:
  - name: tokend-secrets
    behavior: replace
    files: [secrets/node-agent]
images:
  - { name: localhost/tokend, newName: ${image%:*}, newTag: ${image##*:} }
EOF
# The base's layout (the socket's group, a readers group for the client), with the test's client.
cat >"$work/overlay/config.yaml" <<EOF
state_dir: /var/lib/tokend
socket: { path: /run/tokend/tokend.sock, mode: "0660", group: $socket_gid }
metrics: { listen: "127.0.0.1:$metrics_port" }
clients:
  node-agent:
    token_url: http://127.0.0.1:$port/oauth/token
    client_id: node-agent
    client_secret: { file: /etc/tokend/secrets/node-agent, group_readable: true }
    refresh: { at: 50%, jitter: 0%, min_remaining: 1s }
    outputs:
      - { path: /run/tokend/node-agent.token, mode: "0640", group: $reader_gid }
    readers: { groups: [$reader_gid] }
EOF
kubectl kustomize "$work/overlay" >"$work/overlay.yaml"
validate() { kubernetes-validate --strict --kubernetes-version "$kube_version" --quiet "$@" >"$work/validate.log" 2>&1; }
for f in base.yaml overlay.yaml; do
  if validate "$work/$f"; then ok "$f: every object is valid (strict)"; else bad "$f: $(cat "$work/validate.log")"; fi
done
kubernetes-validate --strict --kubernetes-version "$kube_version" "$work/base.yaml" 2>&1 | sed 's/^/  /'
if validate "$top/packaging/kubernetes/examples/consumer.yaml"; then ok "the example consumer is valid (strict)"
else bad "examples/consumer.yaml: $(cat "$work/validate.log")"; fi
# Negative controls: the validator must catch a misspelt field and a wrong type, by name.
sed 's/runAsNonRoot: true/runAsNonroot: true/' "$work/base.yaml" >"$work/typo.yaml"
validate "$work/typo.yaml" || true
check "a misspelt field fails strict validation, named (negative control)" grep -q "'runAsNonroot' was unexpected" "$work/validate.log"
sed 's/terminationGracePeriodSeconds: 30/terminationGracePeriodSeconds: thirty/' "$work/base.yaml" >"$work/type.yaml"
validate "$work/type.yaml" || true
check "a wrong type fails validation, named (negative control)" grep -q "terminationGracePeriodSeconds: 'thirty' is not of type 'integer'" "$work/validate.log"
# What the base promises, read off the rendered objects.
if python3 "$here/test/promises.py" "$work/base.yaml" "$top/packaging/kubernetes/examples/consumer.yaml" \
  "$uid" "$socket_gid" "$reader_gid" >"$work/promises.log" 2>&1; then
  ok "the base keeps its promises: $(cat "$work/promises.log")"
else
  bad "the base: $(cat "$work/promises.log")"
fi

say "image $image"
check "the image exists (built by packaging/container/build-image.sh)" podman image exists "$image"
size=$(podman image inspect "$image" --format '{{.Size}}')
echo "image size: $size bytes ($(( size / 1024 / 1024 )) MiB)"
check "it runs as $uid:$uid, numerically" test "$(podman image inspect "$image" --format '{{.Config.User}}')" = "$uid:$uid"
check "it carries the OCI labels" test "$(podman image inspect "$image" --format '{{index .Labels "org.opencontainers.image.version"}}')" = "$version"
podman run --rm --entrypoint /bin/sh "$image" -c true >"$work/shell.log" 2>&1 || true
check "it has no shell (/bin/sh: no such file)" grep -q '/bin/sh.*no such file or directory' "$work/shell.log"
# The image with the test CA added to its bundle, as a cluster with a private CA would build it.
mkdir -p "$work/ca-image"
cat /etc/ssl/certs/ca-certificates.crt "$pki/ca.crt" >"$work/ca-image/ca-certificates.crt"
printf 'FROM %s\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n' "$image" >"$work/ca-image/Containerfile"
podman build --quiet --pull=never -t "localhost/$tag-ca" "$work/ca-image" >/dev/null

say "podman run --read-only --user $uid:$uid --cap-drop ALL --network host"
run="$work/run"
mkdir -p "$run/config" "$run/secrets" "$run/tokens" "$run/state"
printf %s s3cret-for-tests >"$run/secrets/node-agent"
cat >"$run/config/config.yaml" <<EOF
state_dir: /var/lib/tokend
socket: { path: /run/tokend/tokend.sock }
metrics: { listen: "127.0.0.1:$metrics_port" }
clients:
  node-agent:
    token_url: https://idp.test:$tls_port/oauth/token
    client_id: node-agent
    client_secret: { file: /etc/tokend/secrets/node-agent }
    outputs:
      - { path: /run/tokend/node-agent.token }
EOF
chmod 0644 "$run/config/config.yaml"
# The secret is tokend's own, 0400: a secret others may read is refused.
chown "$uid:$uid" "$run/secrets/node-agent"
chmod 0400 "$run/secrets/node-agent"
chown "$uid:$uid" "$run/tokens" "$run/state"
# IMAGE PODMAN-OPTIONS... [-- ARGS...]: the image as the issue asks it run, with the mounts.
in_image() {
  local img=$1
  shift
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  podman run "${opts[@]}" --read-only --user "$uid:$uid" --cap-drop ALL --network host \
    -v "$work/resolv.conf:/etc/resolv.conf:ro" \
    -v "$run/config:/etc/tokend/config:ro" -v "$run/secrets:/etc/tokend/secrets:ro" \
    -v "$run/tokens:/run/tokend" -v "$run/state:/var/lib/tokend" "$img" "$@"
}
# Negative control: the shipped bundle does not know the test CA, so TLS must fail.
in_image "$image" --rm -- --config /etc/tokend/config/config.yaml once >"$work/untrusted.log" 2>&1 && untrusted_rc=0 || untrusted_rc=$?
check "the shipped image refuses the test CA's certificate (negative control: exit $untrusted_rc)" \
  sh -c "test $untrusted_rc != 0 && grep -qi 'certificate' $work/untrusted.log"
in_image "localhost/$tag-ca" -d --name "$tag-run" >/dev/null
check "the token appears in the mounted host directory (https://idp.test, by DNS, trusted by the image's bundle)" \
  wait_for "test -s $run/tokens/node-agent.token" 15
check "idp.test was looked up in DNS through the pod-style resolv.conf" grep -q 'query\[A\] idp.test from' "$work/dns.log"
check "the token file is 0600 and owned by $uid:$uid" test "$(stat -c '%a %u:%g' "$run/tokens/node-agent.token" 2>/dev/null)" = "600 $uid:$uid"
check "the socket serves it (JSON)" sh -c "curl -sf --unix-socket $run/tokens/tokend.sock 'http://localhost/v1/tokens/node-agent?format=json' | grep -q '\"expires_at\"'"
check "the socket's token is the file's" test "$(curl -sf --unix-socket "$run/tokens/tokend.sock" http://localhost/v1/tokens/node-agent 2>/dev/null)" = "$(cat "$run/tokens/node-agent.token" 2>/dev/null)"
check "/healthz and /readyz answer 200 over TCP" sh -c "curl -sf http://127.0.0.1:$metrics_port/healthz >/dev/null && curl -sf http://127.0.0.1:$metrics_port/readyz >/dev/null"
check "/metrics over TCP is Prometheus text" sh -c "curl -sf http://127.0.0.1:$metrics_port/metrics | grep -q '^tokend_token_expiry_timestamp_seconds{client=\"node-agent\"}'"
check "TCP never serves a token (404)" test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$metrics_port/v1/tokens/node-agent")" = 404
stop_started=$(date +%s%N)
podman stop -t 10 "$tag-run" >/dev/null
stop_ms=$(( ($(date +%s%N) - stop_started) / 1000000 ))
check "SIGTERM stops it cleanly (exit 0, in ${stop_ms} ms)" test "$(podman inspect "$tag-run" --format '{{.State.ExitCode}}')" = 0
check "the log says it stopped" sh -c "podman logs $tag-run 2>&1 | grep -q 'stopped'"
check "the socket file is gone after the stop" test ! -e "$run/tokens/tokend.sock"
before=$(requests)
podman start "$tag-run" >/dev/null
check "started again, it serves the saved token" wait_for "curl -sf --unix-socket $run/tokens/tokend.sock http://localhost/v1/tokens/node-agent" 15
check "… without a request to the IdP ($before before, $(requests) after)" test "$(requests)" = "$before"
podman stop -t 10 "$tag-run" >/dev/null
# Names need a user database, which the image does not have: a clear error, exit 78.
# (--passwd=false: podman would write an /etc/group for --user; Kubernetes runtimes do not.)
sed -i 's|- { path: /run/tokend/node-agent.token }|- { path: /run/tokend/node-agent.token, group: nogroup }|' "$run/config/config.yaml"
in_image "$image" --name "$tag-names" --passwd=false >"$work/names.log" 2>&1 && names_rc=0 || names_rc=$?
check "a group name in the config exits 78 (EX_CONFIG)" test "$names_rc" = 78
check "… saying names cannot be looked up and to write the number" grep -q 'write the numeric id' "$work/names.log"
sed 's/^/  /' "$work/names.log" | head -3

say "podman kube play: tokend's pod and a consumer pod on one node"
node="$work/node"
mkdir -p "$node"
# A consumer image: busybox for the shell, tokend for `tokend get` over the socket.
build_consumer_image "localhost/$tag-consumer" "$bin" "$work/consumer"
# Every second, a digest of the token from the file and from the socket (never the token
# itself) and the exit status of `tokend get`; ten times a second, a look for the file, saying
# only when it is not there.
consumer_loop='
while :; do [ -s /run/tokend/node-agent.token ] || echo "file missing"; sleep 0.1; done &
while :; do
  f=$(printf %s "$(cat /run/tokend/node-agent.token 2>/dev/null)" | sha256sum | cut -c1-12)
  t=$(tokend get --wait --timeout 20s --socket /run/tokend/tokend.sock node-agent 2>&1); rc=$?
  s=$(printf %s "$t" | sha256sum | cut -c1-12)
  echo "file=$f socket=$s rc=$rc"
  sleep 1
done'
NAME_PREFIX="$tag-" python3 "$here/test/kubelet.py" "$work/overlay.yaml" "$node" "$image" \
  "$top/packaging/kubernetes/examples/consumer.yaml" "localhost/$tag-consumer" "$consumer_loop"
podman kube play "$node/tokend-pod.yaml" >"$work/play.log" 2>&1 || { cat "$work/play.log"; bad "podman kube play of tokend's pod"; }
ctr="$tag-tokend-tokend"
check "the init container gave the host directories to $uid (/run/tokend 0755, /var/lib/tokend 0700)" \
  test "$(stat -c '%u:%g %a' "$node/run/tokend" "$node/var/lib/tokend" | tr '\n' ' ')" = "$uid:$uid 755 $uid:$uid 700 "
check "tokend's token appears on the node" wait_for "test -s $node/run/tokend/node-agent.token" 15
check "the token file is 0640, group $reader_gid (its readers)" test "$(stat -c '%a %u:%g' "$node/run/tokend/node-agent.token" 2>/dev/null)" = "640 $uid:$reader_gid"
check "the socket is 0660, group $socket_gid" test "$(stat -c '%a %u:%g' "$node/run/tokend/tokend.sock" 2>/dev/null)" = "660 $uid:$socket_gid"
check "readOnlyRootFilesystem is honoured" test "$(podman inspect "$ctr" --format '{{.HostConfig.ReadonlyRootfs}}')" = true
check "no capability is left" test "$(podman inspect "$ctr" --format '{{.EffectiveCaps}}')" = "[]"
check "it runs as $uid" test "$(podman inspect "$ctr" --format '{{.Config.User}}')" = "$uid:$uid"
# The probes as the kubelet runs them: each exec command as the manifest has it, in the
# container, without a shell. (podman's own healthcheck, made from the liveness probe, wraps the
# command in `/bin/sh -c`, which the image does not have: it cannot pass here, and is not used.)
probe_cmd() {
  python3 -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(" ".join(d["spec"]["containers"][0][sys.argv[2]]["exec"]["command"]))'     "$node/tokend-pod.yaml" "$1"
}
liveness=$(probe_cmd livenessProbe)
readiness=$(probe_cmd readinessProbe)
ready_cmd="podman exec $ctr $readiness"
check "the liveness probe passes ($liveness)" wait_for "podman exec $ctr $liveness" 10
check "the readiness probe passes ($readiness)" wait_for "$ready_cmd" 10
check "/healthz and /readyz over TCP too" sh -c "curl -sf http://127.0.0.1:$metrics_port/healthz >/dev/null && curl -sf http://127.0.0.1:$metrics_port/readyz >/dev/null"
podman kube play --network none "$node/consumer-pod.yaml" >>"$work/play.log" 2>&1 || { cat "$work/play.log"; bad "podman kube play of the consumer"; }
cons="$tag-token-consumer-app"
# How many different tokens the consumer has read, counting only reads where the file and the
# socket gave the same one (e3b0c44298fc is the digest of nothing: no token).
seen_cmd="podman logs $cons 2>/dev/null | grep -E '^file=[0-9a-f]{12} socket=[0-9a-f]{12} rc=0\$' | awk '{ split(\$1, f, \"=\"); split(\$2, s, \"=\"); if (f[2] == s[2] && f[2] != \"e3b0c44298fc\") print f[2] }' | sort -u | wc -l"
check "the consumer's root file system is read-only" test "$(podman inspect "$cons" --format '{{.HostConfig.ReadonlyRootfs}}')" = true
check "the consumer reads the token from the file and from the socket (the same)" wait_for "test \$($seen_cmd) -ge 1" 10
# Refreshed at half of 30 s: a new token within 15 s.
check "the consumer sees a refresh (a second token, in file and socket alike)" wait_for "test \$($seen_cmd) -ge 2" 25
echo "  consumer: $(podman logs "$cons" 2>/dev/null | grep -c file=) reads, $(sh -c "$seen_cmd") different tokens; last: $(podman logs "$cons" 2>/dev/null | grep file= | tail -1)"
pid=$(podman inspect "$ctr" --format '{{.State.Pid}}')
echo "  tokend's memory: $(grep -E '^(VmRSS|VmHWM)' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' ')(cgroup: $(podman stats --no-stream --format '{{.MemUsage}}' "$ctr" 2>/dev/null))"

say "a ConfigMap update is reloaded without a restart (--watch-config)"
started_at=$(podman inspect "$ctr" --format '{{.State.StartedAt}}')
sed 's|^clients:|clients:\n  reports:\n    token_url: http://127.0.0.1:'"$port"'/oauth/token\n    client_id: reports\n    client_secret: { file: /etc/tokend/secrets/reports, group_readable: true }\n    outputs: [{ path: /run/tokend/reports.token }]|' \
  "$work/overlay/config.yaml" >"$work/config-2.yaml"
printf %s other-s3cret >"$node/secret/reports"
chown "0:$uid" "$node/secret/reports"
chmod 0440 "$node/secret/reports"
python3 "$here/test/kubelet.py" update-configmap "$node/configmap" config.yaml "$work/config-2.yaml"
check "the new client's token appears" wait_for "test -s $node/run/tokend/reports.token" 15
check "… in the same container (not restarted)" test "$(podman inspect "$ctr" --format '{{.State.StartedAt}}')" = "$started_at"
printf 'clients:\n  broken: {\n' >"$work/config-bad.yaml"
python3 "$here/test/kubelet.py" update-configmap "$node/configmap" config.yaml "$work/config-bad.yaml"
check "a broken update is rejected, as on SIGHUP" wait_for "podman logs $ctr 2>&1 | grep -q '\"reload\":\"rejected\"'" 10
check "… and both clients are still served" sh -c "curl -sf --unix-socket $node/run/tokend/tokend.sock http://localhost/v1/tokens/reports >/dev/null && curl -sf --unix-socket $node/run/tokend/tokend.sock http://localhost/v1/tokens/node-agent >/dev/null"
# Back to the first configuration: the second client goes (and will not refresh below).
python3 "$here/test/kubelet.py" update-configmap "$node/configmap" config.yaml "$work/overlay/config.yaml"
check "a client removed from the ConfigMap is no longer served" \
  wait_for "test \$(curl -s -o /dev/null -w '%{http_code}' --unix-socket $node/run/tokend/tokend.sock http://localhost/v1/tokens/reports) = 404" 10

say "delete and replay tokend's pod: the saved tokens are reused"
# Right after a refresh, so that the replayed pod has 15 s in which no request is due.
n=$(requests)
wait_for "test \$($requests_cmd) -gt $n" 20 || bad "no refresh seen before the replay"
before=$(requests)
podman pod rm -f "$tag-tokend" >>"$work/play.log" 2>&1
# The init container fixes a mode someone changed, with CAP_CHOWN alone.
chmod 0777 "$node/run/tokend"
podman kube play "$node/tokend-pod.yaml" >>"$work/play.log" 2>&1 || { cat "$work/play.log"; bad "podman kube play (again)"; }
check "the replayed pod is ready (its readiness probe passes)" wait_for "$ready_cmd" 15
check "… with zero IdP requests ($before before, $(requests) after)" test "$(requests)" = "$before"
check "the init container put /run/tokend back to 0755" test "$(stat -c '%a' "$node/run/tokend")" = 755
reads_cmd="podman logs $cons 2>/dev/null | grep -c '^file='"
n=$(sh -c "$reads_cmd")
check "the consumer reads on from the replayed pod" wait_for "test \$($reads_cmd) -ge $((n + 2))" 10
# While the pod was gone the socket was too, but the file stayed where it was, and `tokend get
# --wait` waited for the new pod: no read failed, whichever way it read.
podman logs "$cons" >"$work/consumer.log" 2>&1 || true
reads=$(grep -c '^file=' "$work/consumer.log" || true)
missing=$(grep -c 'file missing\|^file=e3b0c44298fc' "$work/consumer.log" || true)
failed_gets=$(grep '^file=' "$work/consumer.log" | grep -vc ' rc=0$' || true)
differ=$(awk '/^file=/ { split($1, f, "="); split($2, s, "="); if (f[2] != s[2]) n++ } END { print n + 0 }' "$work/consumer.log")
tokens=$(sh -c "$seen_cmd")
check "the token file never went missing (looked for ten times a second; $missing misses)" test "$missing" = 0
check "no socket read failed ($failed_gets of $reads)" test "$failed_gets" = 0
# A refresh between the two reads of one line may make them differ: once per refresh at most.
check "file and socket gave the same token ($differ of $reads reads differ, $tokens tokens seen)" test "$differ" -lt "$tokens"
check "the log says the saved token was reused" sh -c "podman logs $ctr 2>&1 | grep -q '\"outcome\":\"reused\"'"

echo "---- pod test log (tokend, last lines)"
podman logs "$ctr" 2>&1 | tail -4 | sed 's/^/  /'
summary
