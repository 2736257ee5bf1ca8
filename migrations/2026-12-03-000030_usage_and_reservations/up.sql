-- Usage and reservations: the ledger's new kinds of movement (a usage report's cost, which
-- may be nothing when its price is; a reservation held and what it gives back), the usage
-- records, their hourly totals, and reservations.
ALTER TABLE credit_entries DROP CONSTRAINT credit_entries_kind_check;
ALTER TABLE credit_entries DROP CONSTRAINT credit_entries_amount_check;
ALTER TABLE credit_entries ADD CONSTRAINT credit_entries_kind_check
    CHECK (kind IN ('grant', 'spend', 'usage', 'reserve', 'release'));
ALTER TABLE credit_entries ADD CONSTRAINT credit_entries_amount_check
    CHECK (amount > 0 OR (amount = 0 AND kind IN ('usage', 'release')));

-- One report each, sharing its ledger entry's id.
CREATE TABLE usage_records (
    id              uuid        PRIMARY KEY REFERENCES credit_entries (id) ON DELETE CASCADE,
    account_id      uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
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
    recorded_at     timestamptz NOT NULL
);
CREATE INDEX usage_records_account_idx ON usage_records (account_id, recorded_at, id);

-- What each hour came to, by model or agent operation and credential: the day and month
-- windows are sums of hours, never a scan of the records.
CREATE TABLE usage_hours (
    account_id    uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    hour          timestamptz NOT NULL,
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
    id              uuid        PRIMARY KEY REFERENCES credit_entries (id) ON DELETE CASCADE,
    account_id      uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    amount          bigint      NOT NULL CHECK (amount > 0),
    burns           jsonb       NOT NULL,
    status          text        NOT NULL CHECK (status IN ('held', 'settled', 'expired')),
    settled_amount  bigint      CHECK (settled_amount BETWEEN 0 AND amount),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    closed_at       timestamptz
);
CREATE INDEX credit_reservations_account_idx ON credit_reservations (account_id, created_at);
CREATE INDEX credit_reservations_held_idx ON credit_reservations (expires_at)
    WHERE status = 'held';
