DROP TABLE billing_notices;
DROP TABLE billing_notice_endpoints;
