-- Usage and reservations (as the PostgreSQL migration 2026-12-03-000030): the ledger's new
-- kinds of movement (a usage report's cost, which may be nothing when its price is; a
-- reservation held and what it gives back), the usage records, their hourly totals, and
-- reservations.
--
-- SQLite changes a CHECK constraint only by rebuilding its table; no table refers to
-- `credit_entries` before this migration, so it is rebuilt in place.
CREATE TABLE credit_entries_rebuilt (
    id              text        PRIMARY KEY NOT NULL,
    account_id      text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind            text        NOT NULL CHECK (kind IN ('grant', 'spend', 'usage', 'reserve', 'release')),
    amount          bigint      NOT NULL CHECK (amount > 0 OR (amount = 0 AND kind IN ('usage', 'release'))),
    balance_after   bigint      NOT NULL CHECK (balance_after >= 0),
    grant_id        text        REFERENCES credit_grants (id) ON DELETE CASCADE,
    burns           text        NOT NULL,
    idempotency_key text,
    reason          text,
    actor           text        NOT NULL,
    created_at      text        NOT NULL
);
INSERT INTO credit_entries_rebuilt SELECT id, account_id, kind, amount, balance_after, grant_id,
    burns, idempotency_key, reason, actor, created_at FROM credit_entries;
DROP TABLE credit_entries;
ALTER TABLE credit_entries_rebuilt RENAME TO credit_entries;
CREATE UNIQUE INDEX credit_entries_key_idx ON credit_entries (account_id, idempotency_key);
CREATE INDEX credit_entries_account_idx ON credit_entries (account_id, created_at);

-- One report each, sharing its ledger entry's id.
CREATE TABLE usage_records (
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
CREATE INDEX usage_records_account_idx ON usage_records (account_id, recorded_at, id);

-- What each hour came to, by model or agent operation and credential: the day and month
-- windows are sums of hours, never a scan of the records.
CREATE TABLE usage_hours (
    account_id    text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    hour          text        NOT NULL,
    meter         text        NOT NULL CHECK (meter IN ('model', 'agent')),
    subject       text        NOT NULL,
    operation     text        NOT NULL,
    credential    text        NOT NULL,
    reports       bigint      NOT NULL CHECK (reports >= 0),
    input_tokens  bigint      NOT NULL CHECK (input_tokens >= 0),
    output_tokens bigint      NOT NULL CHECK (output_tokens >= 0),
    invocations   bigint      NOT NULL CHECK (invocations >= 0),
    credits       bigint      NOT NULL CHECK (credits >= 0),
    PRIMARY KEY (account_id, hour, meter, subject, operation, credential)
);

-- Credits held for work under way, sharing the reserve entry's id, until settled for what
-- the work cost or expired.
CREATE TABLE credit_reservations (
    id              text        PRIMARY KEY NOT NULL REFERENCES credit_entries (id) ON DELETE CASCADE,
    account_id      text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    amount          bigint      NOT NULL CHECK (amount > 0),
    burns           text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('held', 'settled', 'expired')),
    settled_amount  bigint      CHECK (settled_amount BETWEEN 0 AND amount),
    expires_at      text        NOT NULL,
    created_at      text        NOT NULL,
    closed_at       text       
);
CREATE INDEX credit_reservations_account_idx ON credit_reservations (account_id, created_at);
CREATE INDEX credit_reservations_held_idx ON credit_reservations (expires_at)
    WHERE status = 'held';
