-- Usage paid by batch (as the PostgreSQL migration 2026-12-04-000034): each record names
-- the one ledger entry that paid for its batch (`entry_id`, without a foreign key: both are
-- written by one transaction), has an id of its own, and its idempotency key is unique
-- among its account's records. The records written before were paid one entry each, under
-- their own ids.
--
-- SQLite drops a foreign key only by rebuilding its table.
CREATE TABLE usage_records_rebuilt (
    id              text        PRIMARY KEY NOT NULL,
    account_id      text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    idempotency_key text        NOT NULL,
    meter           text        NOT NULL CHECK (meter IN ('model', 'agent')),
    subject         text        NOT NULL,
    operation       text        NOT NULL,
    input_tokens    bigint      NOT NULL CHECK (input_tokens >= 0),
    output_tokens   bigint      NOT NULL CHECK (output_tokens >= 0),
    invocations     bigint      NOT NULL CHECK (invocations >= 0),
    credits         bigint      NOT NULL CHECK (credits >= 0),
    price_version   integer     NOT NULL CHECK (price_version > 0),
    credential      text        NOT NULL,
    recorded_at     text        NOT NULL,
    entry_id        text        NOT NULL
);
INSERT INTO usage_records_rebuilt SELECT id, account_id, idempotency_key, meter, subject,
    operation, input_tokens, output_tokens, invocations, credits, price_version, credential,
    recorded_at, id FROM usage_records;
DROP TABLE usage_records;
ALTER TABLE usage_records_rebuilt RENAME TO usage_records;
CREATE INDEX usage_records_account_idx ON usage_records (account_id, recorded_at, id);
CREATE UNIQUE INDEX usage_records_key_idx ON usage_records (account_id, idempotency_key);
