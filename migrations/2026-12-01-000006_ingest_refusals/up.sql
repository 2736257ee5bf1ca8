-- Telemetry events refused by an account's quota, per hour, so a loss is never silent.
CREATE TABLE ingest_refusals (
    account_id  uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    hour        timestamptz NOT NULL,
    events      bigint      NOT NULL,
    batches     bigint      NOT NULL,
    PRIMARY KEY (account_id, hour)
);
