-- The credits ledger (as the PostgreSQL migration 2026-12-03-000029): grants, what is left
-- of each being the balance's snapshot, and every movement, immutable, with the
-- idempotency key of each spend unique per account.
CREATE TABLE credit_grants (
    id           text        PRIMARY KEY NOT NULL,
    account_id   text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    source       text        NOT NULL CHECK (source IN ('purchase', 'plan', 'promotion')),
    amount       bigint      NOT NULL CHECK (amount > 0),
    remaining    bigint      NOT NULL CHECK (remaining BETWEEN 0 AND amount),
    priority     smallint    NOT NULL CHECK (priority BETWEEN 0 AND 255),
    effective_at text        NOT NULL,
    expires_at   text        CHECK (expires_at > effective_at),
    created_at   text        NOT NULL
);
CREATE INDEX credit_grants_account_idx ON credit_grants (account_id, created_at);

CREATE TABLE credit_entries (
    id              text        PRIMARY KEY NOT NULL,
    account_id      text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind            text        NOT NULL CHECK (kind IN ('grant', 'spend')),
    amount          bigint      NOT NULL CHECK (amount > 0),
    balance_after   bigint      NOT NULL CHECK (balance_after >= 0),
    grant_id        text        REFERENCES credit_grants (id) ON DELETE CASCADE,
    burns           text        NOT NULL,
    idempotency_key text,
    reason          text,
    actor           text        NOT NULL,
    created_at      text        NOT NULL
);
CREATE UNIQUE INDEX credit_entries_key_idx ON credit_entries (account_id, idempotency_key);
CREATE INDEX credit_entries_account_idx ON credit_entries (account_id, created_at);
