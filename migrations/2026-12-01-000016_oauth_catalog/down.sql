DROP TABLE agent_tools;
DROP TABLE oauth_scopes;
DROP TABLE oauth_catalogs;
DROP TABLE tools;
