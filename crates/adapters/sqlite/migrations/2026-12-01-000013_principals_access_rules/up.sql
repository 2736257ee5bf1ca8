-- Principals and access rules (as the PostgreSQL migration 2026-12-01-000017).
CREATE TABLE principals (
    id           text    PRIMARY KEY NOT NULL,
    account_id   text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    username     text    NOT NULL CHECK (length(username) BETWEEN 1 AND 200),
    email        text,
    display_name text,
    attributes   text    NOT NULL CHECK (json_type(attributes) = 'object'),
    active       boolean NOT NULL,
    created_at   text    NOT NULL,
    updated_at   text    NOT NULL,
    UNIQUE (account_id, username)
);
CREATE INDEX principals_account_created_idx ON principals (account_id, created_at DESC, id DESC);

CREATE TABLE access_rules (
    id          text    PRIMARY KEY NOT NULL,
    account_id  text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        text    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    enabled     boolean NOT NULL,
    document    text    NOT NULL CHECK (json_type(document) = 'object'),
    created_at  text    NOT NULL,
    updated_at  text    NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX access_rules_account_created_idx ON access_rules (account_id, created_at DESC, id DESC);
