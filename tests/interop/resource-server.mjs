#!/usr/bin/env node
// Tiny protected API for the tokend interop fixture. Every request must carry
// `Authorization: Bearer <JWT>`; the JWT is verified with jose against the
// provider's JWKS (signature, RS256, typ at+jwt, issuer, audience, exp/nbf).
// 200 + JSON {ok, header, claims} when valid, 401 + WWW-Authenticate otherwise.
// GET /healthz answers 200 without a token.
//
// Configuration (env), taken from the provider's fixture.json when FIXTURE or
// STATE_DIR points at it, each overridable:
//   FIXTURE   path of fixture.json (default $STATE_DIR/fixture.json)
//   ISSUER    expected iss
//   JWKS_URI  JWKS URL (https is fetched trusting CA_FILE)
//   CA_FILE   PEM CA bundle for the JWKS fetch
//   AUDIENCE  expected aud (default https://api.example.test/)
//   PORT      listen port on 127.0.0.1 (default 0 = any free port)
//   CLOCK_TOLERANCE  seconds (default 0)
// stdout: one JSON line {"url": ..., "issuer": ..., "audience": ..., "jwks_uri": ...}.

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';

import * as jose from 'jose';

const env = process.env;
const fixtureFile = env.FIXTURE || (env.STATE_DIR && path.join(env.STATE_DIR, 'fixture.json'));
const fixture = fixtureFile && fs.existsSync(fixtureFile) ? JSON.parse(fs.readFileSync(fixtureFile, 'utf8')) : {};

const ISSUER = env.ISSUER || fixture.issuer;
const JWKS_URI = env.JWKS_URI || fixture.jwks_uri;
const CA_FILE = env.CA_FILE || fixture.ca_file;
const AUDIENCE = env.AUDIENCE || fixture.resource || 'https://api.example.test/';
const PORT = Number.parseInt(env.PORT ?? '0', 10) || 0;
const CLOCK_TOLERANCE = Number.parseInt(env.CLOCK_TOLERANCE ?? '0', 10) || 0;
if (!ISSUER || !JWKS_URI) {
  console.error('resource-server: need ISSUER and JWKS_URI (or FIXTURE / STATE_DIR with fixture.json)');
  process.exit(2);
}
const ca = CA_FILE ? fs.readFileSync(CA_FILE) : undefined;

// jose fetches the JWKS with globalThis.fetch, which cannot be given a CA file;
// hand it a node:https based fetch that trusts the fixture CA.
function fetchWithCa(url, options = {}) {
  return new Promise((resolve, reject) => {
    url = String(url);
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.request(url, {
      method: options.method || 'GET',
      headers: options.headers instanceof Headers ? Object.fromEntries(options.headers) : options.headers,
      ca,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(new Response(Buffer.concat(chunks), {
        status: res.statusCode,
        headers: Object.entries(res.headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]])),
      })));
      res.on('error', reject);
    });
    req.on('error', reject);
    options.signal?.addEventListener('abort', () => req.destroy(options.signal.reason));
    req.end();
  });
}

const JWKS = jose.createRemoteJWKSet(new URL(JWKS_URI), { [jose.customFetch]: fetchWithCa });

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(`${JSON.stringify(body)}\n`);
}

function unauthorized(res, error, description) {
  const esc = (s) => String(s).replace(/["\\]/g, '\\$&');
  const challenge = error
    ? `Bearer error="${error}", error_description="${esc(description)}"`
    : 'Bearer';
  send(res, 401, { error: error || 'unauthorized', error_description: description }, { 'www-authenticate': challenge });
}

const server = http.createServer(async (req, res) => {
  if (req.url === '/healthz') return send(res, 200, { ok: true });
  const m = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/.exec(req.headers.authorization ?? '');
  if (!m) return unauthorized(res, undefined, 'missing bearer token');
  try {
    const { payload, protectedHeader } = await jose.jwtVerify(m[1], JWKS, {
      issuer: ISSUER,
      audience: AUDIENCE,
      algorithms: ['RS256'],
      typ: 'at+jwt',
      requiredClaims: ['exp', 'iat', 'client_id'],
      clockTolerance: CLOCK_TOLERANCE,
    });
    console.error(`[resource-server] 200 ${req.method} ${req.url} client_id=${payload.client_id}`);
    return send(res, 200, { ok: true, path: req.url, header: protectedHeader, claims: payload });
  } catch (err) {
    console.error(`[resource-server] 401 ${req.method} ${req.url} ${err.code ?? err.name}: ${err.message}`);
    return unauthorized(res, 'invalid_token', `${err.code ?? err.name}: ${err.message}`);
  }
});

server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({
    url: `http://127.0.0.1:${port}/`, issuer: ISSUER, audience: AUDIENCE, jwks_uri: JWKS_URI, pid: process.pid,
  })}\n`);
});

const stop = () => { server.closeAllConnections?.(); server.close(() => process.exit(0)); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
