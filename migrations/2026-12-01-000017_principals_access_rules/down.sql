DROP TABLE access_rules;
DROP TABLE principals;
