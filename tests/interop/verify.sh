#!/usr/bin/env bash
# End-to-end self-test of the interop fixture with curl, openssl and jose:
# starts start.sh (provider + nginx) and resource-server.mjs in a fresh state
# dir, gets a token for each of the five clients, checks it is a JWT with the
# right aud/iss/exp and that the resource server accepts it, runs the negative
# cases, stops everything, and ends with "N passed, N failed".
#
#   tests/interop/verify.sh            # TOKEN_TTL=60 (default)
#   TOKEN_TTL=3 tests/interop/verify.sh  # also waits for expiry and checks 401
#
# Needs: bash, curl, jq, openssl, node (>= 20.19). Exit code 0 iff all passed.
# The temp dir is removed on success unless KEEP=1.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/tokend-interop-verify.XXXXXX")
export STATE_DIR="$work/state"
export TOKEN_TTL="${TOKEN_TTL:-60}"
RES=https://api.example.test/
pass=0 fail=0
provider_pid= rs_pid=

cleanup() {
  [ -n "$rs_pid" ] && kill -TERM "$rs_pid" 2>/dev/null && wait "$rs_pid" 2>/dev/null
  if [ -n "$provider_pid" ] && kill -0 "$provider_pid" 2>/dev/null; then
    kill -TERM "$provider_pid"; wait "$provider_pid"; rc=$?
    nginx_pid=$(jq -r .nginx_pid "$work/provider.json" 2>/dev/null)
    if [ "$rc" = 0 ] && ! kill -0 "$nginx_pid" 2>/dev/null; then
      echo "ok   - provider exited 0 on SIGTERM and nginx ($nginx_pid) is gone"; pass=$((pass + 1))
    else
      echo "FAIL - provider exit code $rc after SIGTERM, nginx $nginx_pid alive?"; fail=$((fail + 1))
    fi
  fi
}

ok() { echo "ok   - $*"; pass=$((pass + 1)); }
nok() { echo "FAIL - $*"; fail=$((fail + 1)); }
show() { printf '  $ %s\n' "$*"; }
# base64url-decode segment $2 (0 header, 1 payload) of JWT $1
jwt_part() { local s; s=$(cut -d. -f$(($2 + 1)) <<<"$1" | tr '_-' '/+'); while [ $((${#s} % 4)) != 0 ]; do s="$s="; done; base64 -d <<<"$s"; }

# token <label> <curl args...>: POST to the token endpoint; sets $status, $body
token() {
  local label=$1; shift
  status=$(curl -sS -o "$work/body" -D "$work/headers" -w '%{http_code}' --cacert "$CA" "$@" "$TE")
  body=$(cat "$work/body")
  printf '  -> %s %s\n' "$status" "$(sed -E 's/"access_token":"([^".]{0,12})[^"]*"/"access_token":"\1…"/' <<<"$body")"
}

# expect_token <label> <client_id>: the last response is a JWT access token for $RES
expect_token() {
  local label=$1 cid=$2 at hdr pl
  if [ "$status" != 200 ]; then nok "$label: HTTP $status"; return 1; fi
  at=$(jq -r .access_token <<<"$body")
  hdr=$(jwt_part "$at" 0) pl=$(jwt_part "$at" 1)
  echo "     header  $hdr"
  echo "     payload $pl"
  if jq -e --arg aud "$RES" --arg iss "$ISS" --arg cid "$cid" --argjson ttl "$TOKEN_TTL" \
      '.aud == $aud and .iss == $iss and .client_id == $cid and .sub == $cid and (.exp - .iat) == $ttl' <<<"$pl" >/dev/null \
     && jq -e '.typ == "at+jwt" and .alg == "RS256"' <<<"$hdr" >/dev/null \
     && jq -e --argjson ttl "$TOKEN_TTL" '.token_type == "Bearer" and .expires_in == $ttl' <<<"$body" >/dev/null; then
    ok "$label: JWT access token aud=$RES client_id=$cid"
  else
    nok "$label: unexpected token claims"; return 1
  fi
  show "curl -H 'Authorization: Bearer \$AT' ${RS}api/whoami"
  local rs_status
  rs_status=$(curl -sS -o "$work/rs-body" -w '%{http_code}' -H "Authorization: Bearer $at" "${RS}api/whoami")
  printf '  -> %s %s\n' "$rs_status" "$(jq -c '{ok, claims: {iss: .claims.iss, aud: .claims.aud, client_id: .claims.client_id, scope: .claims.scope}}' "$work/rs-body")"
  [ "$rs_status" = 200 ] && ok "$label: resource server accepted it (200)" || nok "$label: resource server said $rs_status"
  last_at=$at
}

# expect_error <label> <http-status> <error-code>
expect_error() {
  local label=$1 st=$2 code=$3
  if [ "$status" = "$st" ] && jq -e --arg c "$code" '.error == $c' <<<"$body" >/dev/null; then
    ok "$label: $st $code"
  else
    nok "$label: wanted $st $code, got $status $body"
  fi
}

assertion() { node "$here/client-assertion.mjs" "$@"; }

# ------------------------------------------------------------------ start
echo "# starting provider (STATE_DIR=$STATE_DIR TOKEN_TTL=$TOKEN_TTL)"
"$here/start.sh" >"$work/provider.json" 2>"$work/provider.log" &
provider_pid=$!
trap cleanup EXIT
for _ in $(seq 1 300); do [ -s "$work/provider.json" ] && break; kill -0 "$provider_pid" 2>/dev/null || break; sleep 0.2; done
if ! jq -e .issuer "$work/provider.json" >/dev/null 2>&1; then
  echo "provider did not start:"; cat "$work/provider.log"; nok "provider start"; echo "$pass passed, $fail failed"; exit 1
fi
[ "$(wc -l <"$work/provider.json")" = 1 ] && ok "provider printed exactly one JSON line" || nok "provider stdout is not one line"
F=$work/provider.json
ISS=$(jq -r .issuer "$F") TE=$(jq -r .token_endpoint "$F") CA=$(jq -r .ca_file "$F") TE_HTTP=$(jq -r .token_endpoint_http "$F")
c() { jq -r ".clients.$1" "$F"; }

node "$here/resource-server.mjs" >"$work/rs.json" 2>"$work/rs.log" &
rs_pid=$!
for _ in $(seq 1 100); do [ -s "$work/rs.json" ] && break; sleep 0.1; done
RS=$(jq -r .url "$work/rs.json")
echo "# provider: $(cat "$F")"
echo "# resource server: $(cat "$work/rs.json")"

# ------------------------------------------------------------------ TLS / discovery
echo "# discovery over TLS (trusting only the generated CA)"
show "curl --cacert \$CA $ISS/.well-known/openid-configuration"
disc=$(curl -sS --cacert "$CA" "$ISS/.well-known/openid-configuration")
jq -c '{issuer, token_endpoint, jwks_uri, grant_types_supported, token_endpoint_auth_methods_supported, token_endpoint_auth_signing_alg_values_supported}' <<<"$disc" | sed 's/^/  -> /'
jq -e --arg iss "$ISS" --arg te "$TE" '.issuer == $iss and .token_endpoint == $te and .grant_types_supported == ["client_credentials"]' <<<"$disc" >/dev/null \
  && ok "discovery: issuer, token_endpoint, only client_credentials" || nok "discovery"
jwks=$(curl -sS --cacert "$CA" "$(jq -r .jwks_uri <<<"$disc")")
jq -e '.keys | length == 1 and .[0].kty == "RSA" and .[0].alg == "RS256" and (.[0] | has("d") | not)' <<<"$jwks" >/dev/null \
  && ok "jwks_uri: one public RS256 key" || nok "jwks_uri: $jwks"
show "openssl s_client -connect ${ISS#https://} -CAfile \$CA -verify_return_error"
v=$(openssl s_client -connect "${ISS#https://}" -CAfile "$CA" -verify_return_error </dev/null 2>&1 | awk '/^Acceptable client certificate CA names/ {getline; printf "client CA names: %s; ", $0} /Verify return code/ && !seen++ {sub(/^ +/, ""); print}')
echo "  -> $v"
grep -q 'Verify return code: 0 (ok)' <<<"$v" && ok "openssl: server certificate verifies against the CA" || nok "openssl s_client: $v"
v=$(openssl verify -CAfile "$CA" "$(c mtls.cert_file)" 2>&1)
[ "$v" = "$(c mtls.cert_file): OK" ] && ok "openssl verify: mTLS client cert chains to the CA" || nok "openssl verify: $v"
dn=$(openssl x509 -in "$(c mtls.cert_file)" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
[ "$dn" = "$(c mtls.subject_dn)" ] && ok "mTLS cert subject (RFC 2253) = registered tls_client_auth_subject_dn: $dn" || nok "DN $dn"

# ------------------------------------------------------------------ positive
echo "# a) client_secret_post"
show "curl --cacert \$CA $TE -d grant_type=client_credentials -d client_id=post-client --data-urlencode client_secret=\"\$SECRET\" --data-urlencode resource=$RES -d 'scope=read write'"
token post -d grant_type=client_credentials -d client_id=post-client --data-urlencode "client_secret=$(c post.client_secret)" \
  --data-urlencode "resource=$RES" --data-urlencode 'scope=read write'
expect_token "client_secret_post" post-client
jq -e '.scope == "read write"' <<<"$body" >/dev/null && ok "scope read write granted" || nok "scope: $body"

echo "# b) client_secret_basic, id and secret form-urlencoded (space as '+')"
form() { node -e 'process.stdout.write(new URLSearchParams({v: process.argv[1]}).toString().slice(2))' "$1"; }
BID=$(form "$(c basic.client_id)") BSEC=$(form "$(c basic.client_secret)")
echo "  encoded: $BID:$BSEC"
show "curl --cacert \$CA $TE -u '$BID:$BSEC' -d grant_type=client_credentials --data-urlencode resource=$RES"
token basic -u "$BID:$BSEC" -d grant_type=client_credentials --data-urlencode "resource=$RES"
expect_token "client_secret_basic" "$(c basic.client_id)"
echo "# b') client_secret_basic with Auth0-style audience= instead of resource="
show "curl --cacert \$CA $TE -u '$BID:$BSEC' -d grant_type=client_credentials --data-urlencode audience=$RES"
token basic-aud -u "$BID:$BSEC" -d grant_type=client_credentials --data-urlencode "audience=$RES"
expect_token "audience= parameter" "$(c basic.client_id)"

echo "# c) private_key_jwt RS256 (assertion aud = issuer)"
A=$(assertion pkjwt-rs256 "$(c pkjwt_rs256.key_file)" RS256 "$ISS" pkjwt-rs256)
echo "     assertion header $(jwt_part "$A" 0) payload $(jwt_part "$A" 1)"
show "curl --cacert \$CA $TE -d grant_type=client_credentials -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d client_assertion=\$A --data-urlencode resource=$RES"
token pkjwt-rs256 -d grant_type=client_credentials -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \
  -d "client_assertion=$A" --data-urlencode "resource=$RES"
expect_token "private_key_jwt RS256" pkjwt-rs256
echo "# c') same assertion again (jti replay)"
token pkjwt-rs256-replay -d grant_type=client_credentials -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \
  -d "client_assertion=$A" --data-urlencode "resource=$RES"
expect_error "replayed client assertion" 401 invalid_client

echo "# d) private_key_jwt ES256 (assertion aud = token endpoint, client_id also in the form)"
A=$(assertion pkjwt-es256 "$(c pkjwt_es256.key_file)" ES256 "$TE" pkjwt-es256)
echo "     assertion header $(jwt_part "$A" 0)"
token pkjwt-es256 -d grant_type=client_credentials -d client_id=pkjwt-es256 -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \
  -d "client_assertion=$A" --data-urlencode "resource=$RES"
expect_token "private_key_jwt ES256" pkjwt-es256

echo "# e) tls_client_auth through nginx"
show "curl --cacert \$CA --cert $(c mtls.cert_file) --key $(c mtls.key_file) $TE -d grant_type=client_credentials -d client_id=mtls-client --data-urlencode resource=$RES"
token mtls --cert "$(c mtls.cert_file)" --key "$(c mtls.key_file)" -d grant_type=client_credentials -d client_id=mtls-client --data-urlencode "resource=$RES"
expect_token "tls_client_auth" mtls-client
mtls_at=$last_at

echo "# no resource/audience: opaque token, not accepted by the resource server"
token opaque -d grant_type=client_credentials -d client_id=post-client --data-urlencode "client_secret=$(c post.client_secret)"
at=$(jq -r .access_token <<<"$body")
if [ "$status" = 200 ] && [ "$(tr -cd . <<<"$at" | wc -c)" = 0 ]; then ok "no resource => opaque access token (${#at} chars)"; else nok "no resource: $status $body"; fi
st=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $at" "${RS}api")
[ "$st" = 401 ] && ok "resource server rejects the opaque token (401)" || nok "opaque token at RS: $st"

# ------------------------------------------------------------------ negative
echo "# negative: wrong secrets"
show "curl -i --cacert \$CA $TE -d grant_type=client_credentials -d client_id=post-client -d client_secret=wrong --data-urlencode resource=$RES"
token wrong-post -d grant_type=client_credentials -d client_id=post-client -d client_secret=wrong --data-urlencode "resource=$RES"
expect_error "client_secret_post, wrong secret" 401 invalid_client
sed -n '1p;/^content-type/Ip;/^www-authenticate/Ip' "$work/headers" | sed 's/^/     /'
token wrong-basic -u "$BID:wrong" -d grant_type=client_credentials --data-urlencode "resource=$RES"
expect_error "client_secret_basic, wrong secret" 401 invalid_client
grep -i '^www-authenticate' "$work/headers" | sed 's/^/     /'
grep -qi '^www-authenticate: Basic realm=' "$work/headers" && ok "basic failure carries WWW-Authenticate: Basic" || nok "no WWW-Authenticate"
echo "# negative: basic credentials sent without form-urlencoding"
token raw-basic -u "$(c basic.client_id):$(c basic.client_secret)" -d grant_type=client_credentials --data-urlencode "resource=$RES"
expect_error "unencoded basic credentials" 400 invalid_request
echo "# negative: the other secret method than the registered one (fixture's STRICT_CLIENT_AUTH)"
token post-as-basic -u "post-client:$(form "$(c post.client_secret)")" -d grant_type=client_credentials --data-urlencode "resource=$RES"
expect_error "post-client using client_secret_basic" 401 invalid_client
token basic-as-post -d grant_type=client_credentials --data-urlencode "client_id=$(c basic.client_id)" --data-urlencode "client_secret=$(c basic.client_secret)" --data-urlencode "resource=$RES"
expect_error "basic client using client_secret_post" 401 invalid_client

echo "# negative: client assertions"
A=$(assertion pkjwt-rs256 "$STATE_DIR/unregistered-rs256.key" RS256 "$ISS" pkjwt-rs256)
token wrong-key -d grant_type=client_credentials -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d "client_assertion=$A" --data-urlencode "resource=$RES"
expect_error "assertion signed with an unregistered RSA key" 401 invalid_client
A=$(assertion pkjwt-es256 "$STATE_DIR/unregistered-es256.key" ES256 "$ISS" pkjwt-es256)
token wrong-key-ec -d grant_type=client_credentials -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d "client_assertion=$A" --data-urlencode "resource=$RES"
expect_error "assertion signed with an unregistered EC key" 401 invalid_client
A=$(assertion pkjwt-es256 "$(c pkjwt_rs256.key_file)" RS256 "$ISS")
token wrong-alg -d grant_type=client_credentials -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d "client_assertion=$A" --data-urlencode "resource=$RES"
expect_error "ES256 client, RS256 assertion" 401 invalid_client
A=$(assertion pkjwt-rs256 "$(c pkjwt_rs256.key_file)" RS256 "https://elsewhere.example/token" pkjwt-rs256)
token wrong-aud -d grant_type=client_credentials -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer -d "client_assertion=$A" --data-urlencode "resource=$RES"
expect_error "assertion with a foreign aud" 401 invalid_client
A=$(assertion pkjwt-rs256 "$(c pkjwt_rs256.key_file)" RS256 "$ISS" pkjwt-rs256)
token no-type -d grant_type=client_credentials -d "client_assertion=$A" --data-urlencode "resource=$RES"
expect_error "assertion without client_assertion_type" 400 invalid_request

echo "# negative: mTLS"
show "curl --cacert \$CA $TE -d grant_type=client_credentials -d client_id=mtls-client --data-urlencode resource=$RES"
token mtls-nocert -d grant_type=client_credentials -d client_id=mtls-client --data-urlencode "resource=$RES"
expect_error "mTLS client without a certificate" 401 invalid_client
token mtls-rogue --cert "$STATE_DIR/rogue-client.pem" --key "$STATE_DIR/rogue-client.key" -d grant_type=client_credentials -d client_id=mtls-client --data-urlencode "resource=$RES"
expect_error "mTLS client with a same-DN cert from an untrusted CA" 401 invalid_client
token mtls-wrong-dn --cert "$(jq -r .negative.wrong_dn_cert_file "$F")" --key "$(jq -r .negative.wrong_dn_key_file "$F")" -d grant_type=client_credentials -d client_id=mtls-client --data-urlencode "resource=$RES"
expect_error "mTLS client with a CA-signed cert of another subject DN" 401 invalid_client
pem_esc=$(jq -rn --rawfile p "$(c mtls.cert_file)" '$p|@uri')
status=$(curl -sS -o "$work/body" -w '%{http_code}' -H "X-SSL-Client-Cert: $pem_esc" -H 'X-SSL-Client-Verify: SUCCESS' \
  "$TE_HTTP" -d grant_type=client_credentials -d client_id=mtls-client --data-urlencode "resource=$RES"); body=$(cat "$work/body")
echo "  -> $status $body"
expect_error "forged certificate headers on the plain-HTTP port" 401 invalid_client

echo "# negative: request shape"
token bad-resource -d grant_type=client_credentials -d client_id=post-client --data-urlencode "client_secret=$(c post.client_secret)" --data-urlencode "resource=https://other.example.test/"
expect_error "unknown resource" 400 invalid_target
token bad-scope -d grant_type=client_credentials -d client_id=post-client --data-urlencode "client_secret=$(c post.client_secret)" --data-urlencode "resource=$RES" -d scope=openid
expect_error "scope not allowed for the client" 400 invalid_scope
token bad-grant -d grant_type=password -d client_id=post-client --data-urlencode "client_secret=$(c post.client_secret)"
expect_error "other grant type" 400 unsupported_grant_type
token unknown-client -d grant_type=client_credentials -d client_id=nobody -d client_secret=x
expect_error "unknown client" 401 invalid_client
status=$(curl -sS -o "$work/body" -w '%{http_code}' --cacert "$CA" "$TE" -H 'content-type: application/json' -d '{"grant_type":"client_credentials"}'); body=$(cat "$work/body")
echo "  -> $status $body"
expect_error "JSON body" 400 invalid_request

echo "# negative: resource server"
st=$(curl -sS -o /dev/null -w '%{http_code}' "${RS}api"); [ "$st" = 401 ] && ok "RS: no token -> 401" || nok "RS no token $st"
# flip one character in the middle of the signature (the last one may only carry padding bits)
sig=${mtls_at##*.} mid=$(( ${#sig} / 2 ))
[ "${sig:$mid:1}" = A ] && r=B || r=A
bad="${mtls_at%.*}.${sig:0:$mid}$r${sig:$((mid + 1))}"
st=$(curl -sS -o "$work/rs-body" -w '%{http_code}' -H "Authorization: Bearer $bad" "${RS}api"); echo "  -> $st $(cat "$work/rs-body")"
[ "$st" = 401 ] && ok "RS: tampered signature -> 401" || nok "RS tampered $st"
forged=$(cd "$here" && node --input-type=module -e '
import * as jose from "jose"; import fs from "node:fs";
const k = await jose.importPKCS8(fs.readFileSync(process.argv[1], "utf8"), "RS256");
console.log(await new jose.SignJWT({client_id: "x"}).setProtectedHeader({alg: "RS256", typ: "at+jwt", kid: process.argv[4]})
  .setIssuer(process.argv[2]).setAudience(process.argv[3]).setIssuedAt().setExpirationTime("1m").sign(k));' \
  "$STATE_DIR/unregistered-rs256.key" "$ISS" "$RES" "$(jq -r .token_signing_kid "$F")")
st=$(curl -sS -o "$work/rs-body" -w '%{http_code}' -H "Authorization: Bearer $forged" "${RS}api"); echo "  -> $st $(cat "$work/rs-body")"
[ -n "$forged" ] && [ "$st" = 401 ] && ok "RS: token signed by another key with the provider's kid -> 401" || nok "RS forged $st"

if [ "$TOKEN_TTL" -le 10 ]; then
  echo "# expiry: waiting $((TOKEN_TTL + 2)) s"
  sleep $((TOKEN_TTL + 2))
  st=$(curl -sS -o "$work/rs-body" -w '%{http_code}' -H "Authorization: Bearer $mtls_at" "${RS}api"); echo "  -> $st $(cat "$work/rs-body")"
  [ "$st" = 401 ] && grep -q ERR_JWT_EXPIRED "$work/rs-body" && ok "RS: expired token -> 401 ERR_JWT_EXPIRED" || nok "RS expired $st"
fi

echo "# provider log (stderr):"; sed 's/^/   | /' "$work/provider.log"
cleanup; provider_pid=; rs_pid=
echo "$pass passed, $fail failed"
if [ "$fail" = 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "# kept $work" >&2; fi
[ "$fail" = 0 ]
