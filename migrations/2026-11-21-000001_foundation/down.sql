DROP TABLE audit_logs;
DROP TABLE api_tokens;
DROP TABLE users;
DROP TABLE accounts;
