// The OpenID provider of the end-to-end tests: oidc-provider on 127.0.0.1, issuing signed
// JWT access tokens for test users through the token endpoint.
//
//   node server.mjs PORT          (or PORT=... node server.mjs)
//
// Issuer http://127.0.0.1:PORT. One confidential client, `d2-tests` / `d2-tests-secret`
// (client_secret_basic or client_secret_post), with the grant type `urn:d2:test:user`:
//
//   grant_type=urn:d2:test:user  sub=...  resource=...   (required; resource becomes `aud`)
//   email=...  email_verified=true|false  name=...  role=...  ttl=SECONDS (default 3600)
//   alg=RS256|ES256|EdDSA (default RS256)
//
// answers {access_token, token_type, expires_in}; the token carries iss, sub, aud, exp,
// iat, jti, client_id and the given user claims. Signing keys (one RSA, one P-256, one
// Ed25519) are made at start. Routes for the tests:
//
//   GET  /test/health   200 once ready
//   POST /test/rotate   new signing keys from now on; the JWKS lists them first, then the
//                       keys they replace (one generation back). Answers {"kids": [...]}.
//   POST /test/clients  {"redirect_uris": [...]}: a new confidential client for browser
//                       sign-in (authorization code with PKCE, client_secret_basic).
//                       Answers {"client_id", "client_secret"}. With "client_id" and
//                       "client_secret" of such a client: its redirect URIs replaced.
//
// Browser sign-in uses oidc-provider's development login page (any login, any password:
// the login is the person's `sub` and, when it holds an `@`, their verified email; their
// `name` too). Clients made by /test/clients are first-party: no consent screen, and the
// ID token carries the email and name.
//
// oidc-provider takes its keys when it is built, so the HTTP server in front of it forwards
// every request to the current instance, and a rotation builds a new one.
//
// OIDC_EXIT_WITH_PID, when set, makes the server exit once that process is gone.
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const GRANT_TYPE = 'urn:d2:test:user';
const CLIENT = {
  client_id: 'd2-tests',
  client_secret: 'd2-tests-secret',
  grant_types: [GRANT_TYPE],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
};
const DEFAULT_TTL = 3600;
/** The clients of /test/clients, all first-party. */
const BROWSER_CLIENT_PREFIX = 'd2-browser-';
const DEFAULT_ALG = 'RS256';

const port = Number.parseInt(process.argv[2] ?? process.env.PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node server.mjs PORT (or PORT=... node server.mjs)');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// ---------------------------------------------------------------------------------------
// Keys

const KEY_TYPES = {
  RS256: ['rsa', { modulusLength: 2048 }],
  ES256: ['ec', { namedCurve: 'P-256' }],
  EdDSA: ['ed25519', {}],
};

/** A new signing key per algorithm, as private JWKs with their own kid. */
function newKeys() {
  const generation = randomBytes(6).toString('hex');
  return Object.entries(KEY_TYPES).map(([alg, [type, options]]) => {
    const { privateKey } = generateKeyPairSync(type, options);
    return {
      ...privateKey.export({ format: 'jwk' }),
      kid: `${alg.toLowerCase()}-${generation}`,
      alg,
      use: 'sig',
    };
  });
}

// ---------------------------------------------------------------------------------------
// The provider

/** The resource server behind a `resource` value: its audience, JWT access tokens. */
function resourceServerInfo(resource, { ttl = DEFAULT_TTL, alg = DEFAULT_ALG, kid } = {}) {
  return {
    audience: resource,
    accessTokenFormat: 'jwt',
    accessTokenTTL: ttl,
    jwt: { sign: { alg, kid } },
  };
}

/** The claims of test users' tokens, by token. */
const userClaims = new WeakMap();

function required(params, name) {
  const value = params[name];
  if (typeof value !== 'string' || value === '') {
    throw new errors.InvalidRequest(`missing required parameter '${name}'`);
  }
  return value;
}

/** The `urn:d2:test:user` grant: a JWT access token for the user the request describes. */
function testUserGrant(kids) {
  return async function handler(ctx) {
    const { params, client, provider } = ctx.oidc;
    const sub = required(params, 'sub');
    const resource = required(params, 'resource');

    const alg = params.alg || DEFAULT_ALG;
    if (!Object.hasOwn(kids, alg)) {
      throw new errors.InvalidRequest(`alg must be one of ${Object.keys(kids).join(', ')}`);
    }
    let ttl = DEFAULT_TTL;
    if (params.ttl !== undefined) {
      ttl = Number(params.ttl);
      if (!/^[0-9]+$/.test(params.ttl) || !Number.isSafeInteger(ttl) || ttl <= 0) {
        throw new errors.InvalidRequest('ttl must be a positive number of seconds');
      }
    }
    const claims = {};
    for (const name of ['email', 'name', 'role']) {
      if (params[name] !== undefined) claims[name] = params[name];
    }
    if (params.email_verified !== undefined) {
      if (params.email_verified !== 'true' && params.email_verified !== 'false') {
        throw new errors.InvalidRequest('email_verified must be true or false');
      }
      claims.email_verified = params.email_verified === 'true';
    }

    const token = new provider.AccessToken({
      accountId: sub,
      client,
      gty: GRANT_TYPE,
      resourceServer: new provider.ResourceServer(
        resource,
        resourceServerInfo(resource, { ttl, alg, kid: kids[alg] }),
      ),
    });
    userClaims.set(token, claims);
    ctx.oidc.entity('AccessToken', token);
    const value = await token.save();

    ctx.body = {
      access_token: value,
      token_type: token.tokenType,
      expires_in: token.expiration,
    };
  };
}

/** A store for what the provider keeps (nothing, for JWT access tokens), in memory. */
class MemoryStore {
  static #models = new Map();

  constructor(name) {
    if (!MemoryStore.#models.has(name)) MemoryStore.#models.set(name, new Map());
    this.entries = MemoryStore.#models.get(name);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    this.entries.set(id, { payload, expiresAt });
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt <= Date.now()) this.entries.delete(key);
    }
  }

  async find(id) {
    const entry = this.entries.get(id);
    return entry && entry.expiresAt > Date.now() ? entry.payload : undefined;
  }

  async findByUserCode(userCode) {
    return [...this.entries.values()].find((e) => e.payload.userCode === userCode)?.payload;
  }

  async findByUid(uid) {
    return [...this.entries.values()].find((e) => e.payload.uid === uid)?.payload;
  }

  async consume(id) {
    const entry = this.entries.get(id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.entries.delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of this.entries) {
      if (entry.payload.grantId === grantId) this.entries.delete(key);
    }
  }
}

/** The grant of a sign-in: the one the person gave, or (first-party clients) one made now. */
async function firstPartyGrant(ctx) {
  const { client, session, provider, result } = ctx.oidc;
  const grantId = result?.consent?.grantId || session.grantIdFor(client.clientId);
  if (grantId) return provider.Grant.find(grantId);
  if (!client.clientId.startsWith(BROWSER_CLIENT_PREFIX)) return undefined;
  const grant = new provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  grant.addOIDCScope('openid email profile');
  await grant.save();
  return grant;
}

/** Registers a browser sign-in client in the store the provider reads clients from. */
async function registerClient(body) {
  const { redirect_uris: redirectUris, client_id: id, client_secret: secret } = JSON.parse(body || '{}');
  if (!Array.isArray(redirectUris) || redirectUris.length === 0) {
    throw new Error('redirect_uris must be a non-empty array');
  }
  const store = new MemoryStore('Client');
  if (id !== undefined) {
    const known = await store.find(id);
    if (!known || known.client_secret !== secret) throw new Error('no such client');
  }
  const client = {
    client_id: id ?? `${BROWSER_CLIENT_PREFIX}${randomUUID()}`,
    client_secret: secret ?? randomBytes(24).toString('base64url'),
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  };
  await store.upsert(client.client_id, client);
  return { client_id: client.client_id, client_secret: client.client_secret };
}

/** A provider signing with `signing` (one key per algorithm) and publishing `published`. */
function buildProvider(signing, published) {
  const kids = Object.fromEntries(signing.map((key) => [key.alg, key.kid]));
  const provider = new Provider(issuer, {
    adapter: MemoryStore,
    clients: [CLIENT],
    jwks: { keys: published },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({
        sub,
        ...(sub.includes('@') ? { email: sub, email_verified: true } : {}),
        name: sub,
      }),
    }),
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    conformIdTokenClaims: false,
    loadExistingGrant: firstPartyGrant,
    features: {
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (_ctx, resource) => resourceServerInfo(resource, { kid: kids[DEFAULT_ALG] }),
      },
    },
    ttl: { AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? DEFAULT_TTL },
    extraTokenClaims: async (_ctx, token) => userClaims.get(token),
  });
  provider.registerGrantType(GRANT_TYPE, testUserGrant(kids), [
    'sub', 'email', 'email_verified', 'name', 'role', 'resource', 'ttl', 'alg',
  ]);
  provider.on('server_error', (_ctx, error) => console.error('oidc-provider: server error', error));
  return { handle: provider.callback(), kids: Object.values(kids) };
}

// ---------------------------------------------------------------------------------------
// The server

let keys = newKeys();
let previous = [];
let current = buildProvider(keys, keys);

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

const server = createServer((req, res) => {
  const path = (req.url ?? '').split('?')[0];
  if (path === '/test/health' && req.method === 'GET') {
    reply(res, 200, { status: 'ok', issuer });
  } else if (path === '/test/rotate' && req.method === 'POST') {
    req.resume();
    previous = keys;
    keys = newKeys();
    current = buildProvider(keys, [...keys, ...previous]);
    reply(res, 200, { kids: current.kids });
  } else if (path === '/test/clients' && req.method === 'POST') {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      registerClient(body).then(
        (client) => reply(res, 201, client),
        (error) => reply(res, 400, { error: String(error.message ?? error) }),
      );
    });
  } else {
    current.handle(req, res);
  }
});

server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider: ready at ${issuer}`);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

const watched = Number.parseInt(process.env.OIDC_EXIT_WITH_PID ?? '', 10);
if (Number.isInteger(watched) && watched > 0) {
  setInterval(() => {
    try {
      process.kill(watched, 0);
    } catch (error) {
      if (error.code === 'ESRCH') shutdown();
    }
  }, 1000).unref();
}
