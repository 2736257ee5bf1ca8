DELETE FROM signing_keys WHERE alg <> 'RS256';
DROP INDEX signing_keys_one_active_key;
CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys (account_id) WHERE retired_at IS NULL;
ALTER TABLE signing_keys
    DROP CONSTRAINT signing_keys_public_half,
    DROP COLUMN alg,
    DROP COLUMN public_x,
    DROP COLUMN public_y,
    ALTER COLUMN public_n SET NOT NULL,
    ALTER COLUMN public_e SET NOT NULL;
