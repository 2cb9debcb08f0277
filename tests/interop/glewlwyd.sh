#!/usr/bin/env bash
# tokend against a real OAuth 2.0 / OpenID Connect server nobody here wrote: Glewlwyd 2.7.5 as
# Debian bookworm packages it. Sets up a throwaway Glewlwyd (sqlite database from the package's
# init script, its own config, on loopback) behind nginx with TLS (a private CA made here with
# openssl; tokend trusts it through `ca_file`), creates the "oidc" plugin instance and the
# clients through Glewlwyd's admin REST API (admin / password, the init script's default), then
# runs `tokend once` once per case and records what Glewlwyd answered (nginx's access log: the
# status and body size of tokend's own request), what the same request made with curl gets, and
# what tokend logged:
#   a  wrong client secret (client_secret_basic)
#   b  a client allowed only client_secret_post, used with client_secret_basic
#   c  private_key_jwt signed with a key Glewlwyd does not know (c0: the registered key)
#   d  a scope the client may not have, alone (d2: no scope at all; Glewlwyd requires one)
#   e  `api.read api.admin` where only api.read is allowed: the narrowed grant
#   f  a secret with special characters, `p+q/r=s%t&u v~w:x`: raw vs form-encoded Basic (curl),
#      tokend by default, tokend with `basic_encoding: raw`, and client_secret_post
#   g  the happy path, client_secret_basic and client_secret_post, tokens published to files
#   h  a wrong token URL path (404)
#   x  the TLS setup without `ca_file` (the private CA is not trusted)
# and prints a summary, one line per case; then checks that each refusal came with advice that
# names the setting to look at, that the ways through work (`basic_encoding: raw`, post), that a
# narrowed scope is warned about, and that no secret reached a log (`ok`/`FAIL` per check and a
# summary line, as packaging/checks.sh prints them; exit 1 if any failed). The integration
# suite runs it (environments::interop_suite, with the other interop servers).
#
# Usage: tests/interop/glewlwyd.sh [TOKEND_BIN]
#        (default target/debug/tokend, else target/release/tokend;
#        KEEP=1 keeps the work directory (configs, logs, tokens) and prints its path;
#        VERBOSE=1 also prints each case's tokend config, full output and Glewlwyd's log lines)
#
# Requires: root (for apt-get, if a package is missing), Debian bookworm packages glewlwyd,
# nginx (or nginx-light), openssl, curl, jq, sqlite3 (installed with apt-get if missing), and
# python3 (free ports). Starts its own glewlwyd and nginx on free loopback ports, never the
# packaged services; stops them and removes its temporary directory on exit. Takes ~10 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${1:-}
if [ -z "$BIN" ]; then
  for b in target/debug/tokend target/release/tokend; do
    if [ -x "$b" ]; then BIN=$b; break; fi
  done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || { echo "usage: $0 [TOKEND_BIN]  (no tokend binary found)" >&2; exit 2; }
BIN=$(realpath "$BIN")

# --- packages -------------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v glewlwyd >/dev/null || missing+=(glewlwyd)
command -v nginx >/dev/null || missing+=(nginx-light)
for c in openssl curl jq sqlite3; do command -v "$c" >/dev/null || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is needed (free ports)" >&2; exit 2; }
init_sql=""
for f in /usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz /usr/share/doc/glewlwyd/database/init.sqlite3.sql; do
  if [ -f "$f" ]; then init_sql=$f; break; fi
done
[ -n "$init_sql" ] || { echo "Glewlwyd's init.sqlite3.sql not found under /usr/share/doc/glewlwyd/database" >&2; exit 2; }

# --- work directory, cleanup ----------------------------------------------------------------
start_ns=$(date +%s%N)
work=$(mktemp -d /tmp/tokend-glewlwyd.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gw_port=$(free_port)
tls_port=$(free_port)
ext="https://127.0.0.1:$tls_port"            # what clients use, through nginx
token_url="$ext/api/oidc/token"
admin="http://127.0.0.1:$gw_port/api"        # the admin API, straight to glewlwyd
mkdir -p "$work"/{gw,nginx,pki,secrets,keys,cases}
# A private copy (a hard link when possible) of the binary: a rebuild may replace it mid-run.
for i in $(seq 120); do [ -x "$BIN" ] && break; sleep 0.5; done
ln "$BIN" "$work/tokend" 2>/dev/null || cp "$BIN" "$work/tokend"
tokend_bin=$BIN
BIN=$work/tokend
chmod 0700 "$work/secrets" "$work/keys"

# --- PKI: a private CA and a certificate for 127.0.0.1 ---------------------------------------
(
  cd "$work/pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout ca.key -out ca.pem -subj "/CN=tokend bench private CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
  printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.pem 2>/dev/null
)

# --- Glewlwyd: database, config, start ------------------------------------------------------
if [[ $init_sql == *.gz ]]; then zcat "$init_sql"; else cat "$init_sql"; fi | sqlite3 "$work/gw/glewlwyd.db"
# No `use_secure_connection` line at all: Glewlwyd 2.7.5 exits ("secure connection is active
# but certificate is not valid") when the key is present, even as `false`, without cert files.
# external_url has no trailing slash: the plugin's URL (and so the `aud` a private_key_jwt
# assertion must carry) is external_url + "/api/oidc".
cat >"$work/gw/glewlwyd.conf" <<EOF
port=$gw_port
bind_address="127.0.0.1"
external_url="$ext"
login_url="login.html"
api_prefix="api"
allow_origin="*"
log_mode="file"
log_level="DEBUG"
log_file="$work/gw/glewlwyd.log"
cookie_secure=0
session_expiration=3600
session_key="GLEWLWYD2_SESSION_ID"
admin_session_authentication="cookie"
profile_session_authentication="cookie"
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="/usr/lib/glewlwyd/user"
client_module_path="/usr/lib/glewlwyd/client"
user_auth_scheme_module_path="/usr/lib/glewlwyd/scheme"
plugin_module_path="/usr/lib/glewlwyd/plugin"
hash_algorithm="SHA512"
database =
{
  type = "sqlite3"
  path = "$work/gw/glewlwyd.db"
};
EOF
glewlwyd --config-file="$work/gw/glewlwyd.conf" >"$work/gw/stdout" 2>&1 &
pids+=($!)
gw_pid=$!

# --- nginx: TLS on loopback, proxying to Glewlwyd -------------------------------------------
cat >"$work/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  client_body_temp_path $work/nginx/tmp-body;
  proxy_temp_path $work/nginx/tmp-proxy;
  fastcgi_temp_path $work/nginx/tmp-fastcgi;
  uwsgi_temp_path $work/nginx/tmp-uwsgi;
  scgi_temp_path $work/nginx/tmp-scgi;
  log_format bench '\$status \$body_bytes_sent \$request_method \$uri';
  access_log $work/nginx/access.log bench;
  server {
    listen 127.0.0.1:$tls_port ssl;
    ssl_certificate $work/pki/server.pem;
    ssl_certificate_key $work/pki/server.key;
    location / {
      proxy_pass http://127.0.0.1:$gw_port;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
EOF
nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
pids+=($!)

wait_up() {  # URL WHAT PID
  local i
  for i in $(seq 100); do
    if curl -s -o /dev/null --cacert "$work/pki/ca.pem" "$1"; then return 0; fi
    kill -0 "$3" 2>/dev/null || { echo "$2 exited:" >&2; cat "$work/gw/stdout" "$work/nginx/error.log" 2>/dev/null >&2; exit 1; }
    sleep 0.1
  done
  echo "$2 did not come up" >&2; exit 1
}
wait_up "$admin/mod/plugin/" glewlwyd "$gw_pid"
wait_up "$ext/api/mod/plugin/" nginx "${pids[1]}"

# --- Glewlwyd's admin API: log in, the oidc plugin, scopes, clients -------------------------
jar="$work/gw/admin.cookies"
api() {  # METHOD PATH JSON: the admin API; fails loudly unless 200
  local code
  code=$(curl -s -o "$work/gw/api.out" -w '%{http_code}' -b "$jar" -c "$jar" -X "$1" \
    -H 'Content-Type: application/json' --data-binary "$3" "$admin$2")
  [ "$code" = 200 ] || { echo "admin API $1 $2 answered $code: $(cat "$work/gw/api.out")" >&2; exit 1; }
}
api POST /auth/ '{"username":"admin","password":"password"}'
# The OpenID Connect plugin, instance "oidc" (token endpoint /api/oidc/token): client_credentials
# needs auth-type-client-enabled and allow-non-oidc; private_key_jwt needs request-parameter-allow
# and the client property holding the public key (client-pubkey-parameter).
api POST /mod/plugin/ "$(jq -nc --arg iss "$ext/api/oidc" '{
  module: "oidc", name: "oidc", display_name: "OpenID Connect", enabled: true,
  parameters: {
    iss: $iss, "jwt-type": "sha", "jwt-key-size": "256", key: "tokend-bench-glewlwyd-signing-key",
    "access-token-duration": 3600, "refresh-token-duration": 1209600, "code-duration": 600,
    "refresh-token-rolling": true, "allow-non-oidc": true,
    "auth-type-client-enabled": true, "auth-type-code-enabled": true, "auth-type-token-enabled": false,
    "auth-type-id-token-enabled": true, "auth-type-none-enabled": false,
    "auth-type-password-enabled": false, "auth-type-refresh-enabled": true,
    "request-parameter-allow": true, "request-maximum-exp": 3600,
    "client-pubkey-parameter": "pubkey", "client-jwks-parameter": "jwks", "client-jwks_uri-parameter": "jwks_uri"
  }}')"
for s in api.read api.admin; do
  api POST /scope/ "$(jq -nc --arg s "$s" '{name: $s, display_name: $s, description: "tokend bench", password_required: false, password_max_age: 0, scheme: {}}')"
done

secret_basic='s3cret-basic'
secret_post='s3cret-post-only'
secret_special='p+q/r=s%t&u v~w:x'
secret_jwt='unused-secret-of-the-jwt-client'
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/keys/registered.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/keys/unknown.pem" 2>/dev/null
openssl pkey -in "$work/keys/registered.pem" -pubout -out "$work/keys/registered.pub" 2>/dev/null
chmod 0600 "$work"/keys/*.pem

client() {  # ID SECRET AUTH_METHODS_JSON [EXTRA_JSON]
  local extra=${4:-'{}'}
  api POST /client/ "$(jq -nc --arg id "$1" --arg secret "$2" --argjson methods "$3" --argjson extra "$extra" '{
    client_id: $id, name: $id, confidential: true, enabled: true, client_secret: $secret,
    authorization_type: ["client_credentials"], scope: ["api.read"], redirect_uri: [],
    token_endpoint_auth_method: $methods} + $extra')"
}
client cc-basic "$secret_basic" '["client_secret_basic","client_secret_post"]'
client cc-post-only "$secret_post" '["client_secret_post"]'
client cc-special "$secret_special" '["client_secret_basic","client_secret_post"]'
client cc-jwt "$secret_jwt" '["private_key_jwt"]' "$(jq -nc --rawfile k "$work/keys/registered.pub" '{pubkey: $k}')"

printf %s "$secret_basic" >"$work/secrets/basic"
printf %s wrong-secret >"$work/secrets/wrong"
printf %s "$secret_post" >"$work/secrets/post"
printf %s "$secret_special" >"$work/secrets/special"
chmod 0600 "$work"/secrets/*

# --- the cases ------------------------------------------------------------------------------
summary=()
details=()
declare -A rcs
b64url() {  # decode base64url without padding
  local s
  s=$(printf %s "$1" | tr '_-' '/+')
  case $(( ${#s} % 4 )) in 2) s="$s==" ;; 3) s="$s=" ;; esac
  printf %s "$s" | base64 -d 2>/dev/null
}
claims() { b64url "$(printf %s "$1" | cut -d. -f2)"; }

# curl_token NAME ARGS…: the token request with curl, through nginx; sets cstatus, cbody.
curl_token() {
  local name=$1; shift
  cstatus=$(curl -s -o "$work/cases/$name.curl" -w '%{http_code}' --cacert "$work/pki/ca.pem" "$@")
  cbody=$(cat "$work/cases/$name.curl")
}

# run_case ID DESCRIPTION CURL_NOTE CLIENT_YAML: one `tokend once` with one client `c`.
run_case() {
  local id=$1 desc=$2 note=$3 yaml=$4 dir="$work/cases/$1" before_ng before_gw rc=0 gw tk line
  mkdir -p "$dir"
  {
    echo "state_dir: $dir/state"
    echo "socket: { path: $dir/tokend.sock }"
    echo "clients:"
    echo "  c:"
    printf '%s\n' "$yaml" | sed 's/^/    /'
  } >"$dir/config.yaml"
  before_ng=$(wc -l <"$work/nginx/access.log")
  before_gw=$(wc -l <"$work/gw/glewlwyd.log")
  "$BIN" --config "$dir/config.yaml" once >"$dir/log" 2>&1 || rc=$?
  sleep 0.05   # nginx writes its access log line after the response
  gw=$(tail -n +"$((before_ng + 1))" "$work/nginx/access.log" | awk '$4 ~ /\/api\/oidc\// {printf "%s%s (%s B)", sep, $1, $2; sep=", "}')
  [ -n "$gw" ] || gw="no request"
  # tokend's verdict: the first ERROR/WARN line (the refusal and its advice), else the INFO line.
  tk=$(grep -E ' (ERROR|WARN) ' "$dir/log" | grep -v ' no valid token client=' | head -1 || true)
  [ -n "$tk" ] || tk=$(grep -E ' (ERROR|WARN|INFO) ' "$dir/log" | head -1 || true)
  [ -n "$tk" ] || tk=$(head -3 "$dir/log" | tr '\n' ' ')
  tk=$(printf %s "$tk" | sed -E 's/^[0-9T:.-]+Z +//')
  line=$(printf '%-6s %-46s glewlwyd: %s' "$id" "$desc" "$gw")
  [ -z "$note" ] || line+="; curl: $note"
  summary+=("$line; tokend rc=$rc: $tk")
  rcs[$id]=$rc
  details+=("== $id: $desc" "-- tokend config:" "$(sed -n '/^  c:/,$p' "$dir/config.yaml")" "-- tokend output (rc=$rc):" "$(cat "$dir/log")" \
    "-- glewlwyd log:" "$(tail -n +"$((before_gw + 1))" "$work/gw/glewlwyd.log" | grep -v -E 'Add endpoint|^\s*$' | sed -E 's/^[0-9T:-]+ - Glewlwyd //' | head -8 || true)")
}

ca="ca_file: $work/pki/ca.pem"
cc() { printf '%s\n' "token_url: ${5:-$token_url}" "client_id: $1" "client_secret: { file: $work/secrets/$2 }" "auth: $3" "$ca" "${4:+scope: $4}"; }

# a. wrong secret
curl_token a -u "cc-basic:wrong-secret" -d grant_type=client_credentials -d scope=api.read "$token_url"
run_case a "wrong secret, client_secret_basic" "$cstatus, ${#cbody} B" "$(cc cc-basic wrong client_secret_basic api.read)"

# b. basic where only post is allowed (b0: the same client with post)
curl_token b -u "cc-post-only:$secret_post" -d grant_type=client_credentials -d scope=api.read "$token_url"
run_case b "post-only client used with basic" "$cstatus, ${#cbody} B" "$(cc cc-post-only post client_secret_basic api.read)"
curl_token b0 -d client_id=cc-post-only --data-urlencode "client_secret=$secret_post" -d grant_type=client_credentials -d scope=api.read "$token_url"
run_case b0 "(control) post-only client with post" "$cstatus" "$(cc cc-post-only post client_secret_post api.read)"

# c. private_key_jwt: Glewlwyd verifies the assertion with the client's registered public key
# (`pubkey` property, PEM); its `aud` must be external_url/api/oidc/token, tokend's default.
jwt_client() { printf '%s\n' "token_url: $token_url" "client_id: cc-jwt" "auth: private_key_jwt" "private_key: $work/keys/$1.pem" "$ca" "scope: api.read"; }
run_case c "private_key_jwt, key Glewlwyd does not know" "" "$(jwt_client unknown)"
run_case c0 "(control) private_key_jwt, the registered key" "" "$(jwt_client registered)"

# d. a scope the client may not have (d2: none at all)
curl_token d -u "cc-basic:$secret_basic" -d grant_type=client_credentials -d scope=api.admin "$token_url"
run_case d "scope api.admin only (not allowed)" "$cstatus $cbody" "$(cc cc-basic basic client_secret_basic api.admin)"
curl_token d2 -u "cc-basic:$secret_basic" -d grant_type=client_credentials "$token_url"
run_case d2 "no scope parameter at all" "$cstatus, ${#cbody} B" "$(cc cc-basic basic client_secret_basic)"

# e. partly allowed scope: the narrowed grant
curl_token e -u "cc-basic:$secret_basic" -d grant_type=client_credentials --data-urlencode "scope=api.read api.admin" "$token_url"
e_resp_scope=$(jq -c 'if has("scope") then .scope else "(absent)" end' <<<"$cbody")
e_claim_scope=$(claims "$(jq -r .access_token <<<"$cbody")" | jq -c '.scope // "(absent)"')
run_case e "scope 'api.read api.admin', only api.read ok" "$cstatus, response scope=$e_resp_scope, token scope=$e_claim_scope" \
  "$(cc cc-basic basic client_secret_basic 'api.read api.admin')
outputs: [{ path: $work/cases/e/out/token }, { path: $work/cases/e/out/token.json, format: json }]"
if [ -f "$work/cases/e/out/token.json" ]; then
  e_tokend="tokend json output: scope=$(jq -c '.scope // "(absent)"' "$work/cases/e/out/token.json"), token claim scope=$(claims "$(cat "$work/cases/e/out/token")" | jq -c '.scope // "(absent)"')"
else
  e_tokend="tokend wrote no output"
fi
summary+=("       e: $e_tokend")

# f. a secret with special characters
curl_token f-raw -u "cc-special:$secret_special" -d grant_type=client_credentials -d scope=api.read "$token_url"
f_raw=$cstatus
# RFC 6749 §2.3.1: client id and secret each application/x-www-form-urlencoded, then Basic.
f_enc=$(jq -rn --arg s "$secret_special" '$s | @uri | gsub("%20"; "+")')
curl_token f-form -H "Authorization: Basic $(printf %s "cc-special:$f_enc" | base64 -w0)" -d grant_type=client_credentials -d scope=api.read "$token_url"
f_form="$cstatus, ${#cbody} B"
summary+=("$(printf '%-6s %-46s' f-curl "special secret with curl:") raw Basic (cc-special:$secret_special) -> $f_raw; form-encoded Basic (cc-special:$f_enc) -> $f_form")
run_case f "special secret, basic, tokend default" "" "$(cc cc-special special client_secret_basic api.read)"
run_case f-raw "special secret, basic, basic_encoding: raw" "" "$(cc cc-special special client_secret_basic api.read)
basic_encoding: raw"
run_case f-post "special secret, client_secret_post" "" "$(cc cc-special special client_secret_post api.read)"

# g. the happy path
curl_token g -u "cc-basic:$secret_basic" -d grant_type=client_credentials -d scope=api.read "$token_url"
g_note="$cstatus, token_type=$(jq -c .token_type <<<"$cbody"), expires_in=$(jq -c .expires_in <<<"$cbody"), scope=$(jq -c .scope <<<"$cbody")"
out_g() { printf '%s\n' "outputs:" "  - { path: $work/cases/$1/out/token }" "  - { path: $work/cases/$1/out/token.json, format: json }" "  - { path: $work/cases/$1/out/token.header, format: header }"; }
run_case g "happy path, client_secret_basic" "$g_note" "$(cc cc-basic basic client_secret_basic api.read; out_g g)"
run_case g-post "happy path, client_secret_post" "" "$(cc cc-basic basic client_secret_post api.read; out_g g-post)"
for g in g g-post; do
  o="$work/cases/$g/out"
  if [ -s "$o/token" ]; then
    summary+=("       $g: published $(wc -c <"$o/token") B token; json token_type=$(jq -c .token_type "$o/token.json") scope=$(jq -c '.scope // "(absent)"' "$o/token.json") expires_in=$(jq -c .expires_in "$o/token.json"); header file: $(cut -c1-21 "$o/token.header")…; claims: $(claims "$(cat "$o/token")" | jq -c '{iss, aud, sub, scope, type}')")
  else
    summary+=("       $g: no token published")
  fi
done

# h. wrong token URL path
curl_token h -u "cc-basic:$secret_basic" -d grant_type=client_credentials -d scope=api.read "$ext/api/oidc/tokn"
run_case h "wrong token URL path (/api/oidc/tokn)" "$cstatus $cbody" "$(cc cc-basic basic client_secret_basic api.read "$ext/api/oidc/tokn")"

# x. TLS without ca_file
run_case x "TLS without ca_file (private CA)" "" "$(cc cc-basic basic client_secret_basic api.read | grep -v '^ca_file:')"

# --- report ---------------------------------------------------------------------------------
elapsed_ds=$(( ($(date +%s%N) - start_ns) / 100000000 ))
if [ "${VERBOSE:-0}" = 1 ]; then printf '%s\n' "${details[@]}"; echo; fi
echo "tokend: $tokend_bin ($("$BIN" --version 2>/dev/null || echo '?'), $(date -r "$BIN" -u +%FT%TZ))"
echo "glewlwyd: $(dpkg-query -W -f '${Version}' glewlwyd 2>/dev/null), behind nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') with TLS (private CA, tokend ca_file); token endpoint $token_url"
echo "summary (glewlwyd = the status nginx logged for tokend's request, and the body size):"
printf '%s\n' "${summary[@]}"
echo "took $((elapsed_ds / 10)).$((elapsed_ds % 10)) s"

# --- checks ---------------------------------------------------------------------------------
. packaging/checks.sh
say "what tokend made of each answer"
# expect ID RC TEXT: case ID ended with exit status RC, and its log holds TEXT.
expect() {
  local id=$1 rc=$2 text=$3
  check "$id: exit $rc, and its log says: $text" \
    sh -c '[ "$1" = "$2" ] && grep -qF -- "$3" "$4"' _ "${rcs[$id]:-none}" "$rc" "$text" "$work/cases/$id/log"
}
credentials="check the client's \`client_id\`, its \`client_secret\`, and that the IdP lets it authenticate with \`client_secret_basic\` (\`auth\`)"
expect a 1 "$credentials"
expect b 1 "$credentials"
expect b0 0 "obtained a new token"
expect c 1 "its \`private_key\` and \`key_id\` (is the public key registered at the IdP?), and that the IdP lets it authenticate with \`private_key_jwt\`"
expect c0 0 "obtained a new token"
expect d 1 "check the client's \`scope\` and what the IdP lets it have"
expect d2 1 "then that the IdP grants it the \`scope\` and \`audience\` asked for"
expect e 0 "the IdP granted less than the scope asked for, leaving out \`api.admin\`"
check "e: the JSON document holds the granted scope" \
  sh -c '[ "$(jq -r .scope "$1")" = api.read ]' _ "$work/cases/e/out/token.json"
expect f 1 "try \`basic_encoding: raw\` (or \`auth: client_secret_post\`)"
expect f-raw 0 "obtained a new token"
expect f-post 0 "obtained a new token"
expect g 0 "obtained a new token"
expect g-post 0 "obtained a new token"
check "g: Glewlwyd's \`bearer\` is written \`Bearer\`" \
  sh -c '[ "$(jq -r .token_type "$1")" = Bearer ]' _ "$work/cases/g/out/token.json"
expect h 1 "check \`token_url\` (or \`issuer\`): nothing there takes token requests"
expect x 1 "name that CA in \`ca_file\`"
for id in a b c d d2 f h; do
  check "$id: the refusal does not blame what was right" \
    sh -c '! grep -E "ERROR token request rejected" "$1" | grep -qF "$2"' _ "$work/cases/$id/log" \
    "$([ "$id" = h ] && echo client_secret || echo token_url)"
done
leaked=$(grep -rlF -e "$secret_basic" -e "$secret_post" -e "$secret_special" -e wrong-secret "$work"/cases/*/log || true)
check "no secret in any log${leaked:+ (found in $leaked)}" [ -z "$leaked" ]
summary
