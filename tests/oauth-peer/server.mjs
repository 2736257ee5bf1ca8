// The peer of the OAuth load benchmark (scripts/bench-oauth.sh): panva's oidc-provider
// configured for what the benchmark measures on D2, with everything it persists stored in
// PostgreSQL through a small adapter over `pg`.
//
//   PEER_DATABASE_URL=postgres://... node server.mjs PORT
//
// Issuer http://127.0.0.1:PORT. One confidential client, `bench` / `bench-secret`
// (client_secret_basic, grant type client_credentials, scope `bench.read`), and two
// resources (RFC 8707), which decide the format of the access token:
//
//   resource=https://jwt.bench/      JWT access tokens (RFC 9068, `typ: at+jwt`), signed
//                                    with PEER_ALGORITHM: RS256 (RSA-2048, the default) or
//                                    ES256 (P-256)
//   resource=https://opaque.bench/   opaque access tokens, stored, hence introspectable
//
// Both with scope `bench.read` and a lifetime of one hour. Routes beside oidc-provider's
// own (`POST /token`, `POST /token/introspection`, `GET /jwks`):
//
//   GET /bench/health   200 once ready
//
// What oidc-provider persists goes to the table `oidc_payloads` of PEER_DATABASE_URL
// (created at start): one row per stored model instance. A JWT access token is not
// stored (oidc-provider signs it and keeps nothing); an opaque one is a row, read back
// by introspection. oidc-provider cannot introspect a JWT access token: its introspection
// endpoint answers `unsupported_token_type` to any structured token.
//
// PEER_WORKERS processes (node:cluster, default: one per core, as d2-api's workers) serve
// the port, sharing the signing key and the database; PEER_POOL_SIZE connections in all
// (default 16, as d2-api's pool), split among them. PEER_EXIT_WITH_PID, when set, makes
// the server exit once that process is gone.
import cluster from 'node:cluster';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { availableParallelism } from 'node:os';

import Provider from 'oidc-provider';
import pg from 'pg';

const ALGORITHM = process.env.PEER_ALGORITHM ?? 'RS256';
const CLIENT = {
  client_id: 'bench',
  client_secret: 'bench-secret',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: 'bench.read',
  // The provider holds one key; its ID token default (RS256) must be a key it has.
  id_token_signed_response_alg: ALGORITHM,
};
const SCOPE = 'bench.read';
const TTL = 3600;
if (!['RS256', 'ES256'].includes(ALGORITHM)) {
  console.error(`oauth-peer: PEER_ALGORITHM must be RS256 or ES256, not ${ALGORITHM}`);
  process.exit(2);
}
const RESOURCES = {
  'https://jwt.bench/': 'jwt',
  'https://opaque.bench/': 'opaque',
};

const port = Number.parseInt(process.argv[2] ?? process.env.PORT ?? '', 10);
const databaseUrl = process.env.PEER_DATABASE_URL;
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !databaseUrl) {
  console.error('usage: PEER_DATABASE_URL=postgres://... node server.mjs PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const workers = Number.parseInt(process.env.PEER_WORKERS ?? '', 10) || availableParallelism();
const poolSize = Number.parseInt(process.env.PEER_POOL_SIZE ?? '', 10) || 16;

// ---------------------------------------------------------------------------------------
// The store: one table, a row per model instance, keyed by the model's name and id.

const SCHEMA = `
CREATE TABLE IF NOT EXISTS oidc_payloads (
    model text NOT NULL,
    id text NOT NULL,
    payload jsonb NOT NULL,
    grant_id text,
    user_code text,
    uid text,
    expires_at timestamptz,
    consumed_at timestamptz,
    PRIMARY KEY (model, id)
);
CREATE INDEX IF NOT EXISTS oidc_payloads_grant_id ON oidc_payloads (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_payloads_user_code ON oidc_payloads (user_code) WHERE user_code IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_payloads_uid ON oidc_payloads (uid) WHERE uid IS NOT NULL;
`;

// Named statements: each connection prepares them once, as d2-api's diesel does.
const UPSERT = `
INSERT INTO oidc_payloads (model, id, payload, grant_id, user_code, uid, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (model, id) DO UPDATE SET payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id,
    user_code = EXCLUDED.user_code, uid = EXCLUDED.uid, expires_at = EXCLUDED.expires_at,
    consumed_at = NULL`;
const LIVE = '(expires_at IS NULL OR expires_at > now())';

/** What oidc-provider stores, in PostgreSQL (oidc-provider's adapter interface). */
function pgAdapter(pool) {
  const found = (rows) => {
    const row = rows[0];
    if (!row) return undefined;
    return row.consumed_at
      ? { ...row.payload, consumed: Math.floor(row.consumed_at.getTime() / 1000) }
      : row.payload;
  };
  return class PgAdapter {
    constructor(model) {
      this.model = model;
    }

    async upsert(id, payload, expiresIn) {
      const expiresAt = expiresIn ? new Date(Date.now() + expiresIn * 1000) : null;
      await pool.query({
        name: 'upsert',
        text: UPSERT,
        values: [this.model, id, payload, payload.grantId ?? null, payload.userCode ?? null,
          payload.uid ?? null, expiresAt],
      });
    }

    async find(id) {
      const { rows } = await pool.query({
        name: 'find',
        text: `SELECT payload, consumed_at FROM oidc_payloads WHERE model = $1 AND id = $2 AND ${LIVE}`,
        values: [this.model, id],
      });
      return found(rows);
    }

    async findByUserCode(userCode) {
      const { rows } = await pool.query({
        name: 'find_by_user_code',
        text: `SELECT payload, consumed_at FROM oidc_payloads WHERE model = $1 AND user_code = $2 AND ${LIVE}`,
        values: [this.model, userCode],
      });
      return found(rows);
    }

    async findByUid(uid) {
      const { rows } = await pool.query({
        name: 'find_by_uid',
        text: `SELECT payload, consumed_at FROM oidc_payloads WHERE model = $1 AND uid = $2 AND ${LIVE}`,
        values: [this.model, uid],
      });
      return found(rows);
    }

    async consume(id) {
      await pool.query({
        name: 'consume',
        text: 'UPDATE oidc_payloads SET consumed_at = now() WHERE model = $1 AND id = $2',
        values: [this.model, id],
      });
    }

    async destroy(id) {
      await pool.query({
        name: 'destroy',
        text: 'DELETE FROM oidc_payloads WHERE model = $1 AND id = $2',
        values: [this.model, id],
      });
    }

    async revokeByGrantId(grantId) {
      await pool.query({
        name: 'revoke_by_grant_id',
        text: 'DELETE FROM oidc_payloads WHERE grant_id = $1',
        values: [grantId],
      });
    }
  };
}

// ---------------------------------------------------------------------------------------
// The provider

function resourceServerInfo(resource) {
  const format = RESOURCES[resource];
  if (!format) return undefined;
  return {
    scope: SCOPE,
    audience: resource,
    accessTokenTTL: TTL,
    accessTokenFormat: format,
    ...(format === 'jwt' ? { jwt: { sign: { alg: ALGORITHM } } } : {}),
  };
}

function buildProvider({ signingKey, cookieKey }, pool) {
  const provider = new Provider(issuer, {
    adapter: pgAdapter(pool),
    clients: [CLIENT],
    jwks: { keys: [signingKey] },
    cookies: { keys: [cookieKey] },
    scopes: [SCOPE],
    ttl: { ClientCredentials: TTL },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Any authenticated client of the provider may introspect (as any active agent of
        // the account may on D2).
        allowedPolicy: async () => true,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (_ctx, resource) => {
          const info = resourceServerInfo(resource);
          if (!info) throw new Provider.errors.InvalidTarget();
          return info;
        },
      },
    },
  });
  provider.on('server_error', (_ctx, error) => console.error('oauth-peer: server error', error));
  return provider.callback();
}

// ---------------------------------------------------------------------------------------
// The processes

function watch(onGone) {
  const watched = Number.parseInt(process.env.PEER_EXIT_WITH_PID ?? '', 10);
  if (Number.isInteger(watched) && watched > 0) {
    setInterval(() => {
      try {
        process.kill(watched, 0);
      } catch (error) {
        if (error.code === 'ESRCH') onGone();
      }
    }, 1000).unref();
  }
}

if (cluster.isPrimary) {
  // The table once, then the workers, with the keys they share.
  const setup = new pg.Client({ connectionString: databaseUrl });
  await setup.connect();
  await setup.query(SCHEMA);
  await setup.end();

  const { privateKey } =
    ALGORITHM === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keys = {
    signingKey: {
      ...privateKey.export({ format: 'jwk' }),
      kid: `${ALGORITHM.toLowerCase()}-bench`,
      alg: ALGORITHM,
      use: 'sig',
    },
    cookieKey: randomBytes(32).toString('base64url'),
  };
  let stopping = false;
  let ready = 0;
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.kill();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`oauth-peer: worker ${worker.process.pid} exited (${signal ?? code}); stopping`);
      stop();
      process.exitCode = 1;
    } else if (Object.keys(cluster.workers).length === 0) {
      process.exit();
    }
  });
  cluster.on('listening', () => {
    ready += 1;
    if (ready === workers) console.log(`oauth-peer: ready at ${issuer}, ${workers} workers`);
  });
  for (let i = 0; i < workers; i += 1) {
    cluster.fork({ PEER_KEYS: JSON.stringify(keys) });
  }
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  watch(stop);
} else {
  const keys = JSON.parse(process.env.PEER_KEYS);
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: Math.max(1, Math.ceil(poolSize / workers)),
  });
  pool.on('error', (error) => console.error('oauth-peer: database connection error', error));
  const handle = buildProvider(keys, pool);
  const server = createServer((req, res) => {
    if (req.url === '/bench/health' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: 'ok', issuer }));
    } else {
      handle(req, res);
    }
  });
  // Node's default keep-alive timeout (5 s) is kept: wrk holds its connections busy.
  server.listen(port, '127.0.0.1');
  const shutdown = () => {
    server.close();
    server.closeAllConnections();
    pool.end().finally(() => process.exit(0));
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}
