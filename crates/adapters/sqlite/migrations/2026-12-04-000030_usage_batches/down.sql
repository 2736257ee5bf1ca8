-- Records paid by a batch's entry have no entry of their own: they cannot be kept.
CREATE TABLE usage_records_rebuilt (
    id              text        PRIMARY KEY NOT NULL REFERENCES credit_entries (id) ON DELETE CASCADE,
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
    recorded_at     text        NOT NULL
);
INSERT INTO usage_records_rebuilt SELECT id, account_id, idempotency_key, meter, subject,
    operation, input_tokens, output_tokens, invocations, credits, price_version, credential,
    recorded_at FROM usage_records WHERE id = entry_id;
DROP TABLE usage_records;
ALTER TABLE usage_records_rebuilt RENAME TO usage_records;
CREATE INDEX usage_records_account_idx ON usage_records (account_id, recorded_at, id);
