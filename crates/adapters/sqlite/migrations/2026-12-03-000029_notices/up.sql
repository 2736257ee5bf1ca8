-- Threshold notices (as the PostgreSQL migration 2026-12-03-000033): where an account's
-- notices are posted, and each notice raised, once per account, subject, period and
-- threshold.
CREATE TABLE billing_notice_endpoints (
    account_id text PRIMARY KEY NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    url        text NOT NULL,
    updated_at text NOT NULL
);

CREATE TABLE billing_notices (
    id           text    PRIMARY KEY NOT NULL,
    account_id   text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    subject      text    NOT NULL,
    period_start text    NOT NULL,
    threshold    smallint NOT NULL CHECK (threshold IN (80, 90, 100)),
    used         bigint  NOT NULL CHECK (used >= 0),
    allowed      bigint  NOT NULL CHECK (allowed > 0),
    created_at   text    NOT NULL
);
CREATE UNIQUE INDEX billing_notices_once_idx
    ON billing_notices (account_id, subject, period_start, threshold);
CREATE INDEX billing_notices_account_idx ON billing_notices (account_id, created_at);
