DROP TABLE credit_entries;
DROP TABLE credit_grants;
