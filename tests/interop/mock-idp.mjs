// A third-party token server for tokend's IdP fault tests: oauth2-mock-server (pinned in
// package.json) over HTTPS, with a control endpoint that switches faults on and off at run
// time. The faults are made with the server's own hooks: `beforeTokenSigning` sets the token's
// lifetime, `beforeResponse` rewrites the answer (status, JSON fields, headers) or, through the
// response it belongs to, delays it, sends a raw body, stalls the body, or drops the connection.
// Certificate faults swap the TLS context; "refused" stops listening on the port.
//
//   STATE_DIR=/tmp/x TOKEN_TTL=20 node tests/interop/mock-idp.mjs
//
// Prints one JSON line: {"token_endpoint", "control_url", "ca_file", "pid"}. Control (plain
// HTTP, loopback):
//   POST /fault  {...}   the fault for every token request from now on, until the next POST;
//                        {} switches it off. Fields (as the test issuer's `POST /_dev/faults`):
//                        status, error (a §5.2 body), body + content_type (a raw body),
//                        retry_after, location, delay_ms (before the headers), body_delay_ms
//                        (half the body, then the rest after this long), abort ("reset" or
//                        "close", nothing answered), expires_in, token_type (JSON overrides),
//                        omit (fields to leave out), certificate ("good", "untrusted",
//                        "wrong_name", "expired"), refused (true: nothing listens on the port).
//   GET /requests        {"count", "requests": [{"at_ms", "status"}]} (status 0: no answer),
//                        "connections" (TLS connections accepted so far), "peak_in_flight"
//                        (most token requests in progress at once)
// SIGTERM/SIGINT: stops, exit 0.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';

const stateDir = process.env.STATE_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'tokend-mock-idp-'));
fs.mkdirSync(stateDir, { recursive: true });
const ttl = Number(process.env.TOKEN_TTL || 20);
const p = (name) => path.join(stateDir, name);
const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });

// ------------------------------------------------------------------ PKI: one CA tokend trusts
const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
fs.writeFileSync(p('ext.cnf'), [
  '[good]', 'basicConstraints = critical, CA:FALSE', 'subjectAltName = IP:127.0.0.1, DNS:tokend-idp.test',
  '[wrong_name]', 'basicConstraints = critical, CA:FALSE', 'subjectAltName = DNS:elsewhere.example',
  '',
].join('\n'));
const ca = (name) => openssl('req', '-x509', ...ec, '-days', '2', '-subj', `/CN=${name}`,
  '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign',
  '-keyout', p(`${name}.key`), '-out', p(`${name}.pem`));
ca('ca');
ca('rogue-ca');
const issue = (name, section, days, caName = 'ca') => {
  openssl('req', '-new', ...ec, '-subj', '/CN=127.0.0.1', '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`));
  openssl('x509', '-req', '-days', String(days), '-in', p(`${name}.csr`), '-CA', p(`${caName}.pem`),
    '-CAkey', p(`${caName}.key`), '-extfile', p('ext.cnf'), '-extensions', section, '-out', p(`${name}.pem`));
};
issue('good', 'good', 2);
issue('wrong_name', 'wrong_name', 2);
issue('expired', 'good', -1); // not after = a day ago
issue('untrusted', 'good', 2, 'rogue-ca');
const contexts = Object.fromEntries(['good', 'wrong_name', 'expired', 'untrusted'].map((n) => [n, {
  key: fs.readFileSync(p(`${n}.key`)), cert: fs.readFileSync(p(`${n}.pem`)),
}]));

// ------------------------------------------------------------------ the third-party server
const issuer = new OAuth2Issuer();
await issuer.keys.generate('RS256');
const service = new OAuth2Service(issuer);
let fault = {};
const requests = [];
let connections = 0;
let inFlight = 0;
let peakInFlight = 0;

service.on('beforeTokenSigning', (token) => {
  token.payload.exp = token.payload.iat + ttl;
});

service.on('beforeResponse', (response, req) => {
  const res = req.res;
  response.body.expires_in = ttl;
  const f = fault;
  for (const field of ['expires_in', 'token_type']) {
    if (field in f) response.body[field] = f[field];
  }
  for (const field of f.omit || []) delete response.body[field];
  if (f.status) {
    response.statusCode = f.status;
    response.body = f.error ? { error: f.error, error_description: 'injected through beforeResponse' } : {};
  }
  if (f.retry_after !== undefined) res.set('Retry-After', String(f.retry_after));
  if (f.location) res.set('Location', f.location);
  const send = res.json.bind(res);
  let answer = (body) => send(body);
  if (f.body !== undefined) {
    answer = () => res.type(f.content_type || 'application/octet-stream').send(f.body);
  } else if (f.status && !f.error) {
    answer = () => res.end();
  }
  if (f.body_delay_ms) {
    answer = (body) => {
      const text = f.body !== undefined ? String(f.body) : JSON.stringify(body);
      res.type(f.body !== undefined ? (f.content_type || 'application/octet-stream') : 'application/json');
      res.writeHead(res.statusCode); // no Content-Length: chunked, the headers go at once
      res.write(text.slice(0, text.length >> 1));
      setTimeout(() => res.end(text.slice(text.length >> 1)), f.body_delay_ms);
    };
  }
  if (f.abort) {
    // A TLS socket cannot be reset itself: the TCP socket under it can.
    const tcp = req.socket._parent ?? req.socket;
    answer = () => (f.abort === 'reset' ? tcp.resetAndDestroy() : req.socket.destroy());
  }
  res.json = (body) => {
    if (f.delay_ms) setTimeout(() => answer(body), f.delay_ms);
    else answer(body);
    return res;
  };
});

const handler = service.requestHandler;
const server = https.createServer(contexts.good, (req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/token')) {
    const seen = { at_ms: Date.now(), status: 0 };
    requests.push(seen);
    inFlight += 1;
    peakInFlight = Math.max(peakInFlight, inFlight);
    let ended = false;
    const end = () => { if (!ended) { ended = true; inFlight -= 1; } };
    res.on('finish', () => { seen.status = res.statusCode; end(); });
    res.on('close', end);
  }
  handler(req, res);
});
server.on('clientError', (_e, socket) => socket.destroy());
server.on('secureConnection', () => { connections += 1; });
const listen = (port) => new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
await listen(0);
const port = server.address().port;
issuer.url = `https://127.0.0.1:${port}`;

// ------------------------------------------------------------------ control
const control = http.createServer((req, res) => {
  let data = '';
  req.on('data', (c) => { data += c; });
  req.on('end', async () => {
    if (req.method === 'GET' && req.url === '/requests') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ count: requests.length, requests, connections, peak_in_flight: peakInFlight }));
      return;
    }
    if (req.method !== 'POST' || req.url !== '/fault') {
      res.writeHead(404).end();
      return;
    }
    const next = JSON.parse(data || '{}');
    const certificate = next.certificate || 'good';
    if (certificate !== (fault.certificate || 'good')) {
      server.setSecureContext(contexts[certificate]);
    }
    if (next.refused && server.listening) {
      await new Promise((resolve) => { server.close(resolve); server.closeAllConnections(); });
    } else if (!next.refused && !server.listening) {
      await listen(port);
    }
    // Connections made under the old fault (or certificate) are not reused under the new one.
    server.closeIdleConnections();
    fault = next;
    res.writeHead(204).end();
  });
});
await new Promise((resolve) => control.listen(0, '127.0.0.1', resolve));

process.stdout.write(`${JSON.stringify({
  token_endpoint: `${issuer.url}/token`,
  control_url: `http://127.0.0.1:${control.address().port}`,
  ca_file: p('ca.pem'),
  pid: process.pid,
})}\n`);

const stop = () => {
  server.closeAllConnections();
  server.close();
  control.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
