DROP TABLE oauth_client_assertions;
