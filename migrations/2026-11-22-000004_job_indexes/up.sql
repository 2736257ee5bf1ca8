-- What the worker's jobs look for, without scanning every account and token.
CREATE INDEX accounts_trial_expiry_idx ON accounts (trial_expires_at) WHERE plan = 'trial';
CREATE INDEX api_tokens_unrevoked_expiry_idx ON api_tokens (expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
