-- DPoP (RFC 9449): the JWK SHA-256 thumbprint of the key a token is bound to (its
-- `cnf.jkt`); null for a bearer token. A bound refresh token is spent only with a proof
-- of the same key.
ALTER TABLE oauth_tokens ADD COLUMN dpop_jkt text;
