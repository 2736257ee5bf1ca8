CREATE TABLE signing_keys_old (
    kid            text     PRIMARY KEY NOT NULL,
    account_id     text     NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    public_n       text     NOT NULL,
    public_e       text     NOT NULL,
    aes_key_id     text     NOT NULL,
    sealed_private blob     NOT NULL,
    created_at     text     NOT NULL,
    retired_at     text,
    seal_version   smallint NOT NULL DEFAULT 1 CHECK (seal_version IN (1, 2))
);
INSERT INTO signing_keys_old
    SELECT kid, account_id, public_n, public_e, aes_key_id, sealed_private, created_at, retired_at, seal_version
    FROM signing_keys WHERE alg = 'RS256';
DROP TABLE signing_keys;
ALTER TABLE signing_keys_old RENAME TO signing_keys;
CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys (account_id) WHERE retired_at IS NULL;
CREATE INDEX signing_keys_account_created_idx ON signing_keys (account_id, created_at DESC);
CREATE INDEX signing_keys_aes_key_idx ON signing_keys (aes_key_id);
