-- People belong to many accounts: a user is a person, found by their identity provider's
-- issuer and subject, and each membership (with its role) is a row of its own. Owners
-- created by bootstrap have no identity until their first sign-in with their verified
-- email claims them.
CREATE TABLE members (
    account_id uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text        NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'member')),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
-- A person's accounts (`GET /v1/users/me`, the first sign-in's checks).
CREATE INDEX members_user_idx ON members (user_id);

-- Each user was the member of one account; the role `dev` is now `developer`.
INSERT INTO members (account_id, user_id, role, created_at)
    SELECT account_id, id, CASE role WHEN 'dev' THEN 'developer' ELSE role END, created_at
    FROM users;

ALTER TABLE users
    DROP COLUMN account_id,
    DROP COLUMN role,
    ADD COLUMN issuer          text,
    ADD COLUMN subject         text,
    ADD COLUMN email_verified  boolean     NOT NULL DEFAULT false,
    ADD COLUMN last_sign_in_at timestamptz,
    ADD CONSTRAINT users_identity_check CHECK ((issuer IS NULL) = (subject IS NULL)),
    -- Unique where set: NULLs are distinct, so people without an identity never collide.
    ADD CONSTRAINT users_identity_key UNIQUE (issuer, subject);
-- Bootstrap owners waiting to be claimed, by email.
CREATE INDEX users_unclaimed_email_idx ON users (lower(email)) WHERE issuer IS NULL;
