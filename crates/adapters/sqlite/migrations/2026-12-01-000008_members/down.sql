-- Back to one account per user (as the PostgreSQL migration's down.sql): each person keeps
-- their oldest membership, an admin as a member; people who belong to none are removed.
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE users_rebuilt (
    id           text    PRIMARY KEY NOT NULL,
    account_id   text    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email        text,
    display_name text,
    full_name    text,
    role         text    NOT NULL CHECK (role IN ('owner', 'dev', 'member')),
    created_at   text    NOT NULL
);
INSERT INTO users_rebuilt (id, account_id, email, display_name, full_name, role, created_at)
    SELECT u.id, m.account_id, u.email, u.display_name, u.full_name,
        CASE m.role WHEN 'developer' THEN 'dev' WHEN 'admin' THEN 'member' ELSE m.role END,
        u.created_at
    FROM users AS u
    JOIN members AS m ON m.user_id = u.id
    WHERE m.rowid = (
        SELECT first.rowid FROM members AS first
        WHERE first.user_id = u.id
        ORDER BY first.created_at, first.account_id
        LIMIT 1
    );
UPDATE api_tokens SET created_by = NULL
    WHERE created_by IS NOT NULL AND created_by NOT IN (SELECT id FROM users_rebuilt);
DROP TABLE members;
DROP TABLE users;
ALTER TABLE users_rebuilt RENAME TO users;
CREATE INDEX users_account_created_idx ON users (account_id, created_at, id);
CREATE UNIQUE INDEX users_account_email_key ON users (account_id, lower(email)) WHERE email IS NOT NULL;

COMMIT;
PRAGMA foreign_keys = ON;
