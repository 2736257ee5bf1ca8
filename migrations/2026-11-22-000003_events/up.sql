-- Telemetry events, the system of record (ClickHouse holds a copy for analytics at volume).

CREATE TABLE events (
    id           bigserial        PRIMARY KEY,
    account_id   uuid             NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- SHA-256 of the client's event id, or of the event's content: a retried batch is not
    -- stored twice.
    event_key    bytea            NOT NULL CHECK (octet_length(event_key) = 32),
    token_id     uuid,
    event_type   text             NOT NULL,
    occurred_at  timestamptz      NOT NULL,
    ingested_at  timestamptz      NOT NULL,
    app_name     text,
    service      text,
    host         text,
    source_ip    text,
    request_id   text,
    -- 1 allowed, 0 denied; null for events that are not authorizations.
    decision     smallint         CHECK (decision IN (0, 1)),
    tool         text,
    latency_ms   double precision,
    payload      jsonb            NOT NULL,
    UNIQUE (account_id, event_key)
);

-- Analytics windows and the listing, newest first.
CREATE INDEX events_account_occurred_idx ON events (account_id, occurred_at);
CREATE INDEX events_account_ingested_idx ON events (account_id, ingested_at DESC, id DESC);
-- The export stream, across accounts.
CREATE INDEX events_ingested_idx ON events (ingested_at, id);

-- Where each job that walks the event stream has got to.
CREATE TABLE job_checkpoints (
    job          text        PRIMARY KEY,
    ingested_at  timestamptz NOT NULL,
    event_id     bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
