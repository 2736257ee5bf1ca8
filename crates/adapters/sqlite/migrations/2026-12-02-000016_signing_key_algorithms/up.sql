-- Signing keys of two algorithms (as the PostgreSQL migration 2026-12-02-000020). SQLite
-- cannot drop a NOT NULL, so the table is rebuilt with its rows.
CREATE TABLE signing_keys_new (
    kid            text     PRIMARY KEY NOT NULL,
    account_id     text     NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    public_n       text,
    public_e       text,
    aes_key_id     text     NOT NULL,
    sealed_private blob     NOT NULL,
    created_at     text     NOT NULL,
    retired_at     text,
    seal_version   smallint NOT NULL DEFAULT 1 CHECK (seal_version IN (1, 2)),
    alg            text     NOT NULL DEFAULT 'RS256' CHECK (alg IN ('RS256', 'ES256')),
    public_x       text,
    public_y       text,
    CHECK (
        (alg = 'RS256' AND public_n IS NOT NULL AND public_e IS NOT NULL
            AND public_x IS NULL AND public_y IS NULL)
        OR (alg = 'ES256' AND public_x IS NOT NULL AND public_y IS NOT NULL
            AND public_n IS NULL AND public_e IS NULL)
    )
);
INSERT INTO signing_keys_new
    (kid, account_id, public_n, public_e, aes_key_id, sealed_private, created_at, retired_at, seal_version)
    SELECT kid, account_id, public_n, public_e, aes_key_id, sealed_private, created_at, retired_at, seal_version
    FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_new RENAME TO signing_keys;
CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys (account_id, alg) WHERE retired_at IS NULL;
CREATE INDEX signing_keys_account_created_idx ON signing_keys (account_id, created_at DESC);
CREATE INDEX signing_keys_aes_key_idx ON signing_keys (aes_key_id);
