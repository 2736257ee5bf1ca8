-- Back to one account per user: each person keeps their oldest membership, an admin as a
-- member (the release before knew no admins, and a rollback grants nothing; people who
-- belong to none, signed in but never joined, are removed; their tokens keep no creator).
DROP INDEX users_unclaimed_email_idx;
ALTER TABLE users
    DROP CONSTRAINT users_identity_key,
    DROP CONSTRAINT users_identity_check,
    DROP COLUMN last_sign_in_at,
    DROP COLUMN email_verified,
    DROP COLUMN subject,
    DROP COLUMN issuer,
    ADD COLUMN account_id uuid REFERENCES accounts (id) ON DELETE CASCADE,
    ADD COLUMN role text;
UPDATE users SET account_id = first.account_id, role = first.role
    FROM (
        SELECT DISTINCT ON (user_id) user_id, account_id,
            CASE role WHEN 'developer' THEN 'dev' WHEN 'admin' THEN 'member' ELSE role END AS role
        FROM members
        ORDER BY user_id, created_at, account_id
    ) AS first
    WHERE users.id = first.user_id;
DELETE FROM users WHERE account_id IS NULL;
ALTER TABLE users
    ALTER COLUMN account_id SET NOT NULL,
    ALTER COLUMN role SET NOT NULL,
    ADD CONSTRAINT users_role_check CHECK (role IN ('owner', 'dev', 'member'));
CREATE INDEX users_account_created_idx ON users (account_id, created_at, id);
CREATE UNIQUE INDEX users_account_email_key ON users (account_id, lower(email)) WHERE email IS NOT NULL;
DROP TABLE members;
