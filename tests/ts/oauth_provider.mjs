#!/usr/bin/env node
// A real OAuth 2 authorization server for the tests (npm oauth2-mock-server):
// discovery document, JWK Set and a token endpoint (client credentials),
// tokens signed with real key pairs. Prints one JSON line on stdout:
//   {"issuer": "http://127.0.0.1:P", "control": "http://127.0.0.1:Q"}
// and serves until stdin closes.
//
// The control listener lets a test ask for the tokens it needs:
//   POST /mint  {claims?, header?, kid?, expires_in?, signer?}
//     claims/header are merged into the issuer's defaults (iss, iat, exp,
//     nbf); signer: "provider" (default), "rogue" (a key never published),
//     "none" (alg none) or "hs256-public-key" (HMAC keyed with the public
//     key's PEM: the algorithm-confusion attack). -> {"token": "..."}
//   POST /keys  {alg, kid}  generate and publish a signing key (rotation)
//   POST /slow  {ms}        answer JWK Set requests after `ms` (0: at once)
//   GET  /stats             {"jwks_fetches": n}
//
// Client-credentials tokens (POST {issuer}/token) carry sub = client_id,
// tenant = the client id's part before the first '.', aud = `resource`.

import http from 'node:http';
import crypto from 'node:crypto';
import { OAuth2Issuer, OAuth2Service, Events } from 'oauth2-mock-server';

const listen = (server) =>
  new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));

const readJson = (req) =>
  new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      try {
        resolve(body ? JSON.parse(body) : {});
      } catch (e) {
        reject(e);
      }
    });
  });

const b64url = (buf) => Buffer.from(buf).toString('base64url');

const issuer = new OAuth2Issuer();
await issuer.keys.generate('RS256', { kid: 'k1' });
const service = new OAuth2Service(issuer);
let jwksFetches = 0;
let jwksDelay = 0;
const provider = http.createServer((req, res) => {
  if (req.url.startsWith('/jwks')) {
    jwksFetches++;
    if (jwksDelay > 0) {
      setTimeout(() => service.requestHandler(req, res), jwksDelay);
      return;
    }
  }
  service.requestHandler(req, res);
});
issuer.url = `http://127.0.0.1:${await listen(provider)}`;

service.on(Events.BeforeTokenSigning, (token, req) => {
  const id = req.body?.client_id;
  if (typeof id === 'string') {
    token.payload.sub = id;
    token.payload.tenant = id.split('.')[0];
  }
  if (typeof req.body?.resource === 'string') token.payload.aud = req.body.resource;
});

// Same issuer URL, its key never in the JWK Set.
const rogue = new OAuth2Issuer();
rogue.url = issuer.url;
await rogue.keys.generate('RS256', { kid: 'rogue' });

async function mint(spec) {
  const transform = (header, payload) => {
    Object.assign(payload, spec.claims ?? {});
    Object.assign(header, spec.header ?? {});
  };
  const opts = { kid: spec.kid, expiresIn: spec.expires_in, scopesOrTransform: transform };
  switch (spec.signer ?? 'provider') {
    case 'provider':
      return issuer.buildToken(opts);
    case 'rogue':
      return rogue.buildToken({ ...opts, kid: 'rogue' });
    case 'none':
    case 'hs256-public-key': {
      // Built here on purpose: these are the attacks, not tokens.
      const good = await issuer.buildToken(opts);
      const payload = good.split('.')[1];
      const alg = spec.signer === 'none' ? 'none' : 'HS256';
      const header = b64url(JSON.stringify({ alg, typ: 'JWT', kid: spec.kid ?? 'k1', ...(spec.header ?? {}) }));
      if (alg === 'none') return `${header}.${payload}.`;
      const jwk = issuer.keys.toJSON().find((k) => k.kid === (spec.kid ?? 'k1'));
      const pem = crypto.createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
      const sig = crypto.createHmac('sha256', pem).update(`${header}.${payload}`).digest();
      return `${header}.${payload}.${b64url(sig)}`;
    }
    default:
      throw new Error(`unknown signer ${spec.signer}`);
  }
}

const control = http.createServer(async (req, res) => {
  try {
    let out;
    if (req.method === 'POST' && req.url === '/mint') out = { token: await mint(await readJson(req)) };
    else if (req.method === 'POST' && req.url === '/keys') {
      const { alg, kid } = await readJson(req);
      await issuer.keys.generate(alg, { kid });
      out = { kid };
    } else if (req.method === 'POST' && req.url === '/slow') {
      jwksDelay = (await readJson(req)).ms ?? 0;
      out = { ms: jwksDelay };
    } else if (req.method === 'GET' && req.url === '/stats') out = { jwks_fetches: jwksFetches };
    else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out));
  } catch (e) {
    res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(e) }));
  }
});
const controlPort = await listen(control);

console.log(JSON.stringify({ issuer: issuer.url, control: `http://127.0.0.1:${controlPort}` }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
