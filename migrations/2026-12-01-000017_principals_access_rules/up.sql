-- Principals: each account's own end users (seed 003's resource owners), on whose behalf
-- agents act. Not the account's members. `attributes` is the JSON object access rules read.
CREATE TABLE principals (
    id           uuid        PRIMARY KEY,
    account_id   uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    username     text        NOT NULL CHECK (char_length(username) BETWEEN 1 AND 200),
    email        text,
    display_name text,
    attributes   jsonb       NOT NULL CHECK (jsonb_typeof(attributes) = 'object'),
    active       boolean     NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    CONSTRAINT principals_account_username_key UNIQUE (account_id, username)
);
-- An account's principals, newest first.
CREATE INDEX principals_account_created_idx ON principals (account_id, created_at DESC, id DESC);

-- Access rules, decided at token issuance. `document` is the validated rule as canonical
-- JSON (what the domain's `RuleSpec::to_json` writes and `RuleSpec::from_value` reads);
-- `name` and `enabled` are copied from it by the same write, for uniqueness and for
-- reading the enabled rules alone.
CREATE TABLE access_rules (
    id          uuid        PRIMARY KEY,
    account_id  uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    enabled     boolean     NOT NULL,
    document    jsonb       NOT NULL CHECK (jsonb_typeof(document) = 'object'),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT access_rules_account_name_key UNIQUE (account_id, name)
);
-- An account's rules, newest first.
CREATE INDEX access_rules_account_created_idx ON access_rules (account_id, created_at DESC, id DESC);
