-- Clients named by the URL of their metadata document (draft-ietf-oauth-client-id-metadata-
-- document) become agents of the account the first time they ask: public clients
-- (`auth_method` none), whose OAuth client_id is that URL, one agent per account and URL.
ALTER TABLE agents DROP CONSTRAINT agents_auth_method_check;
ALTER TABLE agents ADD CONSTRAINT agents_auth_method_check
    CHECK (auth_method IN ('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'));
ALTER TABLE agents ADD COLUMN metadata_url text;
CREATE UNIQUE INDEX agents_metadata_url_idx ON agents (account_id, metadata_url);

-- What an account lets such clients have: whether it accepts them at all, and the scopes
-- and resources their agents may be given. No row: it accepts none.
CREATE TABLE oauth_client_policies (
    account_id         uuid        PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    metadata_documents boolean     NOT NULL,
    scopes             jsonb       NOT NULL,
    resources          jsonb       NOT NULL,
    updated_at         timestamptz NOT NULL
);
