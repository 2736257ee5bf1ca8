-- Invitations to join an account (as the PostgreSQL migration 2026-12-01-000014).
CREATE TABLE invitations (
    id           text PRIMARY KEY NOT NULL,
    account_id   text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email        text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'member')),
    invited_by   text REFERENCES users (id) ON DELETE SET NULL,
    digest       blob UNIQUE CHECK (length(digest) = 32),
    created_at   text NOT NULL,
    expires_at   text NOT NULL,
    accepted_at  text,
    accepted_by  text REFERENCES users (id) ON DELETE SET NULL,
    cancelled_at text
);
CREATE INDEX invitations_account_pending_idx ON invitations (account_id, created_at DESC)
    WHERE accepted_at IS NULL AND cancelled_at IS NULL;
