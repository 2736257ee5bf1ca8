DROP TABLE policies;
DROP TABLE publisher_keys;
DROP TABLE signing_keys;
