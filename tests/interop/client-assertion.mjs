#!/usr/bin/env node
// Print a private_key_jwt client assertion (RFC 7523) for the interop fixture.
//
//   node client-assertion.mjs <client_id> <pkcs8-key.pem> <alg> <aud> [kid] [lifetime-seconds]
//
// Claims: iss = sub = client_id, aud, jti (random), iat, exp = iat + lifetime (default 60).
// Header: alg, typ JWT, kid if given.
import crypto from 'node:crypto';
import fs from 'node:fs';

import * as jose from 'jose';

const [clientId, keyFile, alg, aud, kid, lifetime = '60'] = process.argv.slice(2);
if (!clientId || !keyFile || !alg || !aud) {
  console.error('usage: client-assertion.mjs <client_id> <key.pem> <RS256|ES256|PS256> <aud> [kid] [lifetime]');
  process.exit(2);
}
const key = await jose.importPKCS8(fs.readFileSync(keyFile, 'utf8'), alg);
const now = Math.floor(Date.now() / 1000);
const jwt = await new jose.SignJWT({})
  .setProtectedHeader({ alg, typ: 'JWT', ...(kid ? { kid } : {}) })
  .setIssuer(clientId)
  .setSubject(clientId)
  .setAudience(aud)
  .setJti(crypto.randomUUID())
  .setIssuedAt(now)
  .setExpirationTime(now + Number.parseInt(lifetime, 10))
  .sign(key);
process.stdout.write(`${jwt}\n`);
