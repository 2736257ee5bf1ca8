-- Signing keys of two algorithms: RS256 (bundles, and access tokens by default) and ES256
-- (access tokens when oauth.signing_algorithm is ES256). An EC key keeps its public point
-- on P-256 (x, y) where an RSA key keeps n and e. Each account has at most one active key
-- of each algorithm.
ALTER TABLE signing_keys
    ADD COLUMN alg text NOT NULL DEFAULT 'RS256' CHECK (alg IN ('RS256', 'ES256')),
    ADD COLUMN public_x text,
    ADD COLUMN public_y text,
    ALTER COLUMN public_n DROP NOT NULL,
    ALTER COLUMN public_e DROP NOT NULL,
    ADD CONSTRAINT signing_keys_public_half CHECK (
        (alg = 'RS256' AND public_n IS NOT NULL AND public_e IS NOT NULL
            AND public_x IS NULL AND public_y IS NULL)
        OR (alg = 'ES256' AND public_x IS NOT NULL AND public_y IS NOT NULL
            AND public_n IS NULL AND public_e IS NULL)
    );
DROP INDEX signing_keys_one_active_key;
CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys (account_id, alg) WHERE retired_at IS NULL;
