#!/usr/bin/env bash
# Seeds for the token_response target: real answers of the development issuer (`tokend dev
# --issuer-only`), head and body as sent, for a good request, bad credentials, and each fault its
# /_dev/faults hook can inject. Also saves the config `tokend dev` generates, for the config
# target. Run from fuzz/ after `cargo build` in the main crate.
set -euo pipefail
cd "$(dirname "$0")"
tokend=../target/debug/tokend
out=corpus/token_response
mkdir -p "$out" corpus/config
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

"$tokend" dev --issuer-only --port 0 >"$work/url" 2>"$work/log" &
pid=$!
for _ in $(seq 50); do [ -s "$work/url" ] && break; sleep 0.1; done
url=$(head -1 "$work/url" | grep -o "http://[0-9.:]*")

n=0
token() { # token [curl args...]: one token request, saved as head and body
    n=$((n + 1))
    curl -s -i -X POST "$url/oauth/token" "$@" -o "$out/seed-issuer-$n"
}
fault() { # fault JSON: queue one fault, then a good request
    curl -s -X POST -H 'content-type: application/json' --data "[$1]" "$url/_dev/faults" >/dev/null
    token -d grant_type=client_credentials -d client_id=tokend-dev -d client_secret=tokend-dev-secret
}

token -d grant_type=client_credentials -d client_id=tokend-dev -d client_secret=tokend-dev-secret
token -d grant_type=client_credentials -d client_id=tokend-dev -d client_secret=tokend-dev-secret -d scope='read:a write:b'
token -u tokend-dev:tokend-dev-secret -d grant_type=client_credentials
token -d grant_type=client_credentials -d client_id=tokend-dev -d client_secret=wrong
token -d grant_type=password -d client_id=tokend-dev -d client_secret=tokend-dev-secret
token -d grant_type=client_credentials
fault '{"status": 429, "error": "slow_down", "retry_after": "7"}'
fault '{"status": 503, "retry_after": "Wed, 21 Oct 2026 07:28:00 GMT"}'
fault '{"status": 502, "body": "<html><body>Bad Gateway</body></html>", "content_type": "text/html; charset=utf-8"}'
fault '{"status": 500}'
fault '{"status": 200, "body": "{\"token_type\":\"Bearer\",\"expires_in\":3600}", "content_type": "application/json"}'
fault '{"status": 200, "body": "{\"access_token\":\"x\",\"expires_in\":\"3600\",\"token_type\":\"DPoP\"}", "content_type": "application/json"}'
fault '{"status": 200, "body": "{\"access_token\":\"x\",\"expires_in\":-1}", "content_type": "application/json"}'
fault '{"status": 200, "body": "{\"access_token\":\"x\",\"expires_in\":1e300}", "content_type": "application/json"}'
fault '{"status": 200, "body": "{\"error\":\"invalid_client\",\"error_description\":\"bad\\nline\"}", "content_type": "application/json"}'
fault '{"status": 302, "location": "http://127.0.0.1:1/steal"}'
fault '{"status": 401, "error": "invalid_client"}'
fault '{"lifetime_s": 0}'
fault '{"omit_expires_in": true}'
fault '{"lifetime_s": 315360000}'

kill "$pid"
"$tokend" dev --dir "$work/dev" --port 0 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$work/dev/config.yaml" ] && break; sleep 0.1; done
cp "$work/dev/config.yaml" corpus/config/seed-tokend-dev 2>/dev/null || echo "no tokend dev config" >&2
echo "token_response seeds: $n"
