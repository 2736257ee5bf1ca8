-- People belong to many accounts (as the PostgreSQL migration 2026-12-01-000012): a user
-- is a person, found by their identity provider's issuer and subject, and each membership
-- (with its role) is a row of its own.
--
-- SQLite drops a column with a foreign key only by rebuilding its table; with foreign keys
-- on, dropping the old `users` would first null every token's `created_by` (ON DELETE SET
-- NULL). So they are off for the rebuild, and checked before it commits.
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE members (
    account_id text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'member')),
    created_at text NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
CREATE INDEX members_user_idx ON members (user_id);

INSERT INTO members (account_id, user_id, role, created_at)
    SELECT account_id, id, CASE role WHEN 'dev' THEN 'developer' ELSE role END, created_at
    FROM users;

CREATE TABLE users_rebuilt (
    id              text    PRIMARY KEY NOT NULL,
    email           text,
    display_name    text,
    full_name       text,
    created_at      text    NOT NULL,
    issuer          text,
    subject         text,
    email_verified  boolean NOT NULL DEFAULT 0,
    last_sign_in_at text,
    CONSTRAINT users_identity_check CHECK ((issuer IS NULL) = (subject IS NULL)),
    CONSTRAINT users_identity_key UNIQUE (issuer, subject)
);
INSERT INTO users_rebuilt (id, email, display_name, full_name, created_at)
    SELECT id, email, display_name, full_name, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_rebuilt RENAME TO users;
CREATE INDEX users_unclaimed_email_idx ON users (lower(email)) WHERE issuer IS NULL;

COMMIT;
PRAGMA foreign_keys = ON;
