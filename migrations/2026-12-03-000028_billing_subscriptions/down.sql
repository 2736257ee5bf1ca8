DROP TABLE billing_events;
DROP TABLE billing_subscriptions;
DROP TABLE billing_customers;
UPDATE accounts SET locked_at = NULL, lock_reason = NULL
    WHERE lock_reason IN ('payment_lapsed', 'subscription_ended');
ALTER TABLE accounts DROP CONSTRAINT accounts_lock_reason_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_lock_reason_check
    CHECK (lock_reason IN ('trial_ended'));
