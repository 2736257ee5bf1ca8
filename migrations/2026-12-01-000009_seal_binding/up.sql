-- Which associated data a sealed private key is bound to: 1 = its key id only (every key
-- sealed before this release), 2 = its account and key id. The default stays 1 so that a
-- replica of the previous release, still running during the deploy, labels the keys it
-- creates correctly; this release always writes the version.
ALTER TABLE signing_keys
    ADD COLUMN seal_version smallint NOT NULL DEFAULT 1 CHECK (seal_version IN (1, 2));
