-- Invitations to join an account (seed 001 §5.6). The token that accepts one is stored as
-- its keyed digest only, set when the invitation is made, or by the task that mails it.
CREATE TABLE invitations (
    id           uuid        PRIMARY KEY,
    account_id   uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email        text        NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    role         text        NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'member')),
    invited_by   uuid        REFERENCES users (id) ON DELETE SET NULL,
    digest       bytea       UNIQUE CHECK (length(digest) = 32),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    accepted_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    cancelled_at timestamptz
);
-- An account's pending invitations (listed, counted against the plan's members).
CREATE INDEX invitations_account_pending_idx ON invitations (account_id, created_at DESC)
    WHERE accepted_at IS NULL AND cancelled_at IS NULL;
