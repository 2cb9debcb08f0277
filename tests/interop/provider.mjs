#!/usr/bin/env node
// Interop fixture for tokend: a real oidc-provider (panva) OAuth 2.0 server with
// only the client_credentials grant, JWT access tokens for a resource indicator,
// and five clients (client_secret_post, client_secret_basic, private_key_jwt
// RS256/ES256, tls_client_auth). nginx terminates TLS in front of it and passes
// the client certificate on in a header.
//
// Environment:
//   STATE_DIR    where keys, certificates, clients.json, fixture.json and the
//                nginx config go (created; default: a fresh mkdtemp dir)
//   PORT         HTTPS port of nginx, the public face (default 0 = any free port)
//   HTTP_PORT    plain-HTTP port of oidc-provider itself (default 0)
//   TOKEN_TTL    access token lifetime in seconds (default 60)
//   RESOURCES    comma-separated resource indicators / audiences that are
//                accepted (default https://api.example.test/)
//   DEFAULT_RESOURCE  resource used when the client asks for neither resource
//                nor audience (default: none -> opaque access token)
//   NGINX        nginx binary (default: nginx from PATH or /usr/sbin/nginx)
//   STRICT_CLIENT_AUTH=0  accept client_secret_basic/_post interchangeably, as
//                stock oidc-provider does (default: only the registered one)
//   DEBUG_TOKEN_ERRORS=0  do not log failed token requests to stderr
//
// stdout carries exactly one line: the fixture JSON (also written to
// STATE_DIR/fixture.json). Everything else goes to stderr. SIGTERM/SIGINT stop
// nginx and the provider; the exit code is then 0.

import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

// oidc-provider prints notices with console.info (stdout). Keep stdout for the
// single JSON line: route console.log/info to stderr before loading it.
console.log = console.error;
console.info = console.error;
const writeJsonLine = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const { default: Provider, errors } = await import('oidc-provider');
const jose = await import('jose');

const env = process.env;
const TOKEN_TTL = Number.parseInt(env.TOKEN_TTL ?? '60', 10);
if (!Number.isInteger(TOKEN_TTL) || TOKEN_TTL <= 0) throw new Error(`bad TOKEN_TTL ${env.TOKEN_TTL}`);
const RESOURCES = (env.RESOURCES ?? 'https://api.example.test/').split(',').map((s) => s.trim()).filter(Boolean);
const DEFAULT_RESOURCE = env.DEFAULT_RESOURCE || undefined;
const STATE_DIR = path.resolve(env.STATE_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'tokend-interop-')));
const SCOPES = ['read', 'write'];
const MTLS_SUBJECT_DN = 'CN=mtls-client,O=tokend interop,C=US';

fs.mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
const p = (...parts) => path.join(STATE_DIR, ...parts);
const log = (...a) => console.error('[provider]', ...a);

// ---------------------------------------------------------------- helpers
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function openssl(...args) {
  return execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

function writeFile(file, data, mode = 0o600) {
  fs.writeFileSync(file, data, { mode });
  fs.chmodSync(file, mode);
}

// RFC 4514 string of a certificate subject (most specific RDN first), e.g.
// "CN=mtls-client,O=tokend interop,C=US". Good enough for the simple DNs used here.
function subjectDnOf(pem) {
  const x = new crypto.X509Certificate(pem);
  return x.subject.split('\n').reverse().join(',');
}
const normDn = (dn) => dn.split(',').map((rdn) => {
  const i = rdn.indexOf('=');
  return `${rdn.slice(0, i).trim().toUpperCase()}=${rdn.slice(i + 1).trim()}`;
}).join(',');

// ---------------------------------------------------------------- PKI (openssl)
function makePki() {
  const days = '7';
  const ext = p('openssl-ext.cnf');
  writeFile(ext, [
    '[server]',
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature, keyEncipherment',
    'extendedKeyUsage = serverAuth',
    'subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost',
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid',
    '[client]',
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    'extendedKeyUsage = clientAuth',
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid',
    '',
  ].join('\n'));

  // Throwaway CA.
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', days,
    '-subj', '/CN=tokend interop throwaway CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', p('ca.key'), '-out', p('ca.pem'));

  const issue = (name, subj, section, caKey = p('ca.key'), caCert = p('ca.pem')) => {
    openssl('req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', subj,
      '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`));
    openssl('x509', '-req', '-sha256', '-days', days, '-in', p(`${name}.csr`),
      '-CA', caCert, '-CAkey', caKey, '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`,
      '-extfile', ext, '-extensions', section, '-out', p(`${name}.pem`));
    fs.rmSync(p(`${name}.csr`));
  };

  // Server certificate for 127.0.0.1 / ::1 / localhost.
  issue('server', '/CN=127.0.0.1', 'server');
  // mTLS client certificate (subject must equal MTLS_SUBJECT_DN).
  issue('mtls-client', '/C=US/O=tokend interop/CN=mtls-client', 'client');
  // Trusted CA, but a subject that is not the registered one: for negative tests.
  issue('wrong-dn-client', '/C=US/O=tokend interop/CN=someone-else', 'client');
  // A client certificate from an untrusted, self-signed "rogue" CA with the very
  // same subject: for negative tests (nginx passes it, provider rejects it).
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', days,
    '-subj', '/CN=rogue CA', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', p('rogue-ca.key'), '-out', p('rogue-ca.pem'));
  issue('rogue-client', '/C=US/O=tokend interop/CN=mtls-client', 'client', p('rogue-ca.key'), p('rogue-ca.pem'));
  fs.rmSync(p('rogue-ca.key'));

  for (const n of ['mtls-client', 'rogue-client', 'wrong-dn-client']) {
    writeFile(p(`${n}.identity.pem`), fs.readFileSync(p(`${n}.pem`), 'utf8') + fs.readFileSync(p(`${n}.key`), 'utf8'));
  }
  for (const f of ['ca.pem', 'server.pem', 'mtls-client.pem', 'rogue-client.pem', 'rogue-ca.pem', 'wrong-dn-client.pem']) fs.chmodSync(p(f), 0o644);

  const dn = subjectDnOf(fs.readFileSync(p('mtls-client.pem')));
  if (normDn(dn) !== normDn(MTLS_SUBJECT_DN)) throw new Error(`client cert DN ${dn} != ${MTLS_SUBJECT_DN}`);
}

// ---------------------------------------------------------------- client keys
function makeClientKey(name, type, alg) {
  const { privateKey, publicKey } = type === 'rsa'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : type === 'ed25519'
      ? crypto.generateKeyPairSync('ed25519')
      : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  writeFile(p(`${name}.key`), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFile(p(`${name}.pub.pem`), publicKey.export({ type: 'spki', format: 'pem' }), 0o644);
  const jwk = publicKey.export({ format: 'jwk' });
  return { ...jwk, kid: name, alg, use: 'sig' };
}

// ---------------------------------------------------------------- setup
log(`state dir ${STATE_DIR}`);
const nginxDir = p('nginx');
// A previous run killed with SIGKILL may have left its nginx behind: stop it.
try {
  const oldPid = Number.parseInt(fs.readFileSync(path.join(nginxDir, 'nginx.pid'), 'utf8'), 10);
  const cmdline = fs.readFileSync(`/proc/${oldPid}/cmdline`, 'utf8');
  if (cmdline.includes('nginx') && cmdline.includes(nginxDir)) {
    log(`stopping stale nginx ${oldPid}`);
    process.kill(oldPid, 'SIGTERM');
    for (let i = 0; i < 50 && fs.existsSync(`/proc/${oldPid}`); i += 1) {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
} catch { /* none */ }

makePki();

const clientsSpec = {
  post: {
    client_id: 'post-client',
    client_secret: 'post-s3cret+&=%/~ x',
    token_endpoint_auth_method: 'client_secret_post',
  },
  basic: {
    client_id: 'basic:client+id%x',
    client_secret: 's3cr:t+p%ss word',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  pkjwt_rs256: {
    client_id: 'pkjwt-rs256',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'RS256',
    jwks: { keys: [makeClientKey('pkjwt-rs256', 'rsa', 'RS256')] },
  },
  pkjwt_es256: {
    client_id: 'pkjwt-es256',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks: { keys: [makeClientKey('pkjwt-es256', 'ec', 'ES256')] },
  },
  pkjwt_ps256: {
    client_id: 'pkjwt-ps256',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'PS256',
    jwks: { keys: [makeClientKey('pkjwt-ps256', 'rsa', 'PS256')] },
  },
  pkjwt_eddsa: {
    client_id: 'pkjwt-eddsa',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'EdDSA',
    jwks: { keys: [makeClientKey('pkjwt-eddsa', 'ed25519', 'EdDSA')] },
  },
  mtls: {
    client_id: 'mtls-client',
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: MTLS_SUBJECT_DN,
  },
};
// Keys that are NOT registered anywhere: for "signed with the wrong key" tests.
makeClientKey('unregistered-rs256', 'rsa', 'RS256');
makeClientKey('unregistered-es256', 'ec', 'ES256');

const clients = Object.values(clientsSpec).map((c) => ({
  ...c,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: SCOPES.join(' '),
}));
writeFile(p('clients.json'), `${JSON.stringify(clients, null, 2)}\n`);

// Token signing key (RS256), generated fresh at every start.
const { privateKey: signingKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(signingKey)), alg: 'RS256', use: 'sig' };
signingJwk.kid = await jose.calculateJwkThumbprint(signingJwk);

const httpsPort = Number.parseInt(env.PORT ?? '0', 10) || await freePort();
const httpPortWanted = Number.parseInt(env.HTTP_PORT ?? '0', 10);
const ISSUER = `https://127.0.0.1:${httpsPort}`;
const proxySecret = crypto.randomBytes(24).toString('base64url');

// ---------------------------------------------------------------- provider
// The client certificate is trusted only if the request carries nginx's
// per-run secret, so a request to the plain-HTTP port cannot forge one.
const fromProxy = (ctx) => ctx.get('x-interop-proxy-secret') === proxySecret;
function certificateFromProxy(ctx) {
  if (!fromProxy(ctx)) return undefined;
  const v = ctx.get('x-ssl-client-cert'); // nginx $ssl_client_escaped_cert
  return v ? decodeURIComponent(v) : undefined;
}

const configuration = {
  clients,
  jwks: { keys: [signingJwk] },
  responseTypes: [], // => no authorization_code / implicit
  scopes: ['openid', ...SCOPES], // no offline_access => no refresh_token grant
  clientAuthMethods: ['client_secret_post', 'client_secret_basic', 'private_key_jwt', 'tls_client_auth'],
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    idTokenSigningAlgValues: ['RS256'],
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    userinfo: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // Called only when the request has no `resource` parameter. Map the
      // Auth0-style `audience` form parameter (still present in the raw body)
      // onto a resource indicator; otherwise fall back to DEFAULT_RESOURCE.
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        const aud = ctx.oidc?.body?.audience;
        if (typeof aud === 'string' && aud) return aud;
        if (Array.isArray(aud)) throw new errors.InvalidRequest("'audience' parameter must only be provided once");
        return DEFAULT_RESOURCE;
      },
      async getResourceServerInfo(ctx, resourceIndicator, client) {
        if (!RESOURCES.includes(resourceIndicator)) {
          throw new errors.InvalidTarget(`unknown resource indicator ${resourceIndicator}`);
        }
        return {
          scope: SCOPES.join(' '),
          audience: resourceIndicator,
          accessTokenTTL: TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
      useGrantedResource: async () => true,
    },
    mTLS: {
      enabled: true,
      tlsClientAuth: true,
      getCertificate: certificateFromProxy,
      certificateAuthorized(ctx) {
        return fromProxy(ctx) && ctx.get('x-ssl-client-verify') === 'SUCCESS';
      },
      certificateSubjectMatches(ctx, property, expected) {
        if (property !== 'tls_client_auth_subject_dn') return false;
        const pem = certificateFromProxy(ctx);
        return !!pem && normDn(subjectDnOf(pem)) === normDn(expected);
      },
    },
  },
  ttl: {
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? TOKEN_TTL,
    AccessToken: TOKEN_TTL,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    IdToken: 3600,
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

const provider = new Provider(ISSUER, configuration);
provider.proxy = true; // trust X-Forwarded-Proto/Host from nginx

// Stock oidc-provider treats client_secret_basic and client_secret_post as
// interchangeable (a client registered for one may use the other). For interop
// testing we want to notice a client that uses the wrong one, so unless
// STRICT_CLIENT_AUTH=0 a successful token response is replaced by the same
// 401 invalid_client oidc-provider sends for a bad secret.
const STRICT_CLIENT_AUTH = env.STRICT_CLIENT_AUTH !== '0';
if (STRICT_CLIENT_AUTH) {
  provider.use(async (ctx, next) => {
    await next();
    const client = ctx.oidc?.client;
    if (ctx.oidc?.route !== 'token' || ctx.status !== 200 || !client) return;
    const registered = client.clientAuthMethod;
    if (registered !== 'client_secret_basic' && registered !== 'client_secret_post') return;
    const used = /^basic /i.test(ctx.get('authorization')) ? 'client_secret_basic' : 'client_secret_post';
    if (used === registered) return;
    log(`token error client=${client.clientId} invalid_client: client authentication failed (fixture STRICT_CLIENT_AUTH: used ${used}, registered ${registered}; token discarded)`);
    ctx.status = 401;
    ctx.type = 'json';
    ctx.body = { error: 'invalid_client', error_description: 'client authentication failed' };
    if (used === 'client_secret_basic') {
      ctx.set('www-authenticate', `Basic realm="${ISSUER}", error="invalid_client", error_description="client authentication failed"`);
    }
  });
}

if (env.DEBUG_TOKEN_ERRORS !== '0') {
  const describe = (err) => `${err.error || err.message}${err.error_description ? `: ${err.error_description}` : ''}${err.error_detail ? ` (${err.error_detail})` : ''}`;
  provider.on('grant.error', (ctx, err) => log(`token error client=${ctx.oidc?.client?.clientId ?? '-'} ${describe(err)}`));
  provider.on('server_error', (ctx, err) => log('server_error', err));
  provider.on('grant.success', (ctx) => log(`token issued to ${ctx.oidc.client.clientId}`));
}

const httpServer = http.createServer(provider.callback());
await new Promise((resolve, reject) => {
  httpServer.once('error', reject);
  httpServer.listen(httpPortWanted, '127.0.0.1', resolve);
});
const httpPort = httpServer.address().port;
const HTTP_URL = `http://127.0.0.1:${httpPort}`;

// ---------------------------------------------------------------- nginx
function findNginx() {
  if (env.NGINX) return env.NGINX;
  for (const dir of (env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/local/sbin'])) {
    const f = path.join(dir || '.', 'nginx');
    try { fs.accessSync(f, fs.constants.X_OK); return f; } catch { /* next */ }
  }
  throw new Error('nginx not found: apt-get install -y nginx (start.sh does this), or set NGINX=/path/to/nginx');
}

fs.mkdirSync(path.join(nginxDir, 'tmp'), { recursive: true });
const nginxConf = path.join(nginxDir, 'nginx.conf');
writeFile(nginxConf, `# generated by provider.mjs
daemon off;
master_process off;
worker_processes 1;
pid ${nginxDir}/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
  access_log ${nginxDir}/access.log;
  client_body_temp_path ${nginxDir}/tmp/body;
  proxy_temp_path ${nginxDir}/tmp/proxy;
  fastcgi_temp_path ${nginxDir}/tmp/fastcgi;
  uwsgi_temp_path ${nginxDir}/tmp/uwsgi;
  scgi_temp_path ${nginxDir}/tmp/scgi;
  server {
    listen 127.0.0.1:${httpsPort} ssl;
    server_name 127.0.0.1 localhost;
    ssl_certificate ${p('server.pem')};
    ssl_certificate_key ${p('server.key')};
    ssl_protocols TLSv1.2 TLSv1.3;
    # Ask for a client certificate but let the request through without one;
    # optional_no_ca also lets certificates from unknown CAs through so that
    # oidc-provider (not nginx) answers with invalid_client.
    ssl_client_certificate ${p('ca.pem')};
    ssl_verify_client optional_no_ca;
    ssl_verify_depth 2;
    location / {
      proxy_pass ${HTTP_URL};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
      proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
      proxy_set_header X-SSL-Client-S-DN $ssl_client_s_dn;
      proxy_set_header X-Interop-Proxy-Secret ${proxySecret};
    }
  }
}
`);

const nginxBin = findNginx();
const nginx = spawn(nginxBin, ['-p', `${nginxDir}/`, '-c', nginxConf, '-e', 'stderr'], {
  stdio: ['ignore', 'inherit', 'inherit'],
});
let stopping = false;
nginx.on('exit', (code, signal) => {
  if (!stopping) {
    log(`nginx exited unexpectedly (code ${code}, signal ${signal})`);
    httpServer.close();
    process.exit(1);
  }
});

async function shutdown(sig) {
  if (stopping) return;
  stopping = true;
  log(`${sig}: stopping`);
  const nginxGone = nginx.exitCode !== null || nginx.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => nginx.once('exit', resolve));
  try { nginx.kill('SIGTERM'); } catch { /* gone */ }
  const timer = setTimeout(() => { try { nginx.kill('SIGKILL'); } catch { /* gone */ } }, 3000);
  await nginxGone;
  clearTimeout(timer);
  httpServer.closeAllConnections?.();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGHUP', () => shutdown('SIGHUP'));

// Wait until discovery answers through nginx over TLS with our CA.
const ca = fs.readFileSync(p('ca.pem'));
async function discoveryOk() {
  return new Promise((resolve) => {
    const req = https.get(`${ISSUER}/.well-known/openid-configuration`, { ca, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => { req.destroy(); resolve(false); });
  });
}
const deadline = Date.now() + 15000;
while (!(await discoveryOk())) {
  if (Date.now() > deadline) {
    log('nginx did not come up');
    await shutdown('startup-timeout');
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 100));
}

// ---------------------------------------------------------------- report
const fixture = {
  issuer: ISSUER,
  http_url: HTTP_URL,
  discovery_url: `${ISSUER}/.well-known/openid-configuration`,
  token_endpoint: provider.urlFor('token'),
  token_endpoint_http: `${HTTP_URL}${new URL(provider.urlFor('token')).pathname}`,
  jwks_uri: provider.urlFor('jwks'),
  jwks_uri_http: `${HTTP_URL}${new URL(provider.urlFor('jwks')).pathname}`,
  ca_file: p('ca.pem'),
  state_dir: STATE_DIR,
  resource: RESOURCES[0],
  resources: RESOURCES,
  scopes: SCOPES,
  token_ttl: TOKEN_TTL,
  token_signing_alg: 'RS256',
  token_signing_kid: signingJwk.kid,
  strict_client_auth: STRICT_CLIENT_AUTH,
  pid: process.pid,
  nginx_pid: nginx.pid,
  clients: {
    post: { client_id: clientsSpec.post.client_id, auth_method: 'client_secret_post', client_secret: clientsSpec.post.client_secret },
    basic: { client_id: clientsSpec.basic.client_id, auth_method: 'client_secret_basic', client_secret: clientsSpec.basic.client_secret },
    pkjwt_rs256: { client_id: 'pkjwt-rs256', auth_method: 'private_key_jwt', alg: 'RS256', kid: 'pkjwt-rs256', key_file: p('pkjwt-rs256.key'), public_key_file: p('pkjwt-rs256.pub.pem') },
    pkjwt_es256: { client_id: 'pkjwt-es256', auth_method: 'private_key_jwt', alg: 'ES256', kid: 'pkjwt-es256', key_file: p('pkjwt-es256.key'), public_key_file: p('pkjwt-es256.pub.pem') },
    pkjwt_ps256: { client_id: 'pkjwt-ps256', auth_method: 'private_key_jwt', alg: 'PS256', kid: 'pkjwt-ps256', key_file: p('pkjwt-ps256.key'), public_key_file: p('pkjwt-ps256.pub.pem') },
    pkjwt_eddsa: { client_id: 'pkjwt-eddsa', auth_method: 'private_key_jwt', alg: 'EdDSA', kid: 'pkjwt-eddsa', key_file: p('pkjwt-eddsa.key'), public_key_file: p('pkjwt-eddsa.pub.pem') },
    mtls: { client_id: 'mtls-client', auth_method: 'tls_client_auth', cert_file: p('mtls-client.pem'), key_file: p('mtls-client.key'), identity_file: p('mtls-client.identity.pem'), subject_dn: MTLS_SUBJECT_DN },
  },
  negative: {
    unregistered_rs256_key_file: p('unregistered-rs256.key'),
    unregistered_es256_key_file: p('unregistered-es256.key'),
    rogue_cert_file: p('rogue-client.pem'),
    rogue_key_file: p('rogue-client.key'),
    rogue_identity_file: p('rogue-client.identity.pem'),
    wrong_dn_cert_file: p('wrong-dn-client.pem'),
    wrong_dn_key_file: p('wrong-dn-client.key'),
  },
};
writeFile(p('fixture.json'), `${JSON.stringify(fixture, null, 2)}\n`, 0o644);
log(`ready: ${ISSUER} (provider ${HTTP_URL}, nginx pid ${nginx.pid})`);
writeJsonLine(fixture);
