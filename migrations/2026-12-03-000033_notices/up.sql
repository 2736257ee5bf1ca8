-- Threshold notices: where an account's notices are posted, and each notice raised, once
-- per account, subject, period and threshold.
CREATE TABLE billing_notice_endpoints (
    account_id uuid        PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    url        text        NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE billing_notices (
    id           uuid        PRIMARY KEY,
    account_id   uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    subject      text        NOT NULL,
    period_start timestamptz NOT NULL,
    threshold    smallint    NOT NULL CHECK (threshold IN (80, 90, 100)),
    used         bigint      NOT NULL CHECK (used >= 0),
    allowed      bigint      NOT NULL CHECK (allowed > 0),
    created_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX billing_notices_once_idx
    ON billing_notices (account_id, subject, period_start, threshold);
CREATE INDEX billing_notices_account_idx ON billing_notices (account_id, created_at);
