-- Budgets (as the PostgreSQL migration 2026-12-03-000031): what an account lets one model
-- or one agent cost in a calendar month, enforced by eligibility.
CREATE TABLE billing_budgets (
    account_id      text        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    meter           text        NOT NULL CHECK (meter IN ('model', 'agent')),
    subject         text        NOT NULL,
    monthly_credits bigint      NOT NULL CHECK (monthly_credits > 0),
    updated_at      text        NOT NULL,
    PRIMARY KEY (account_id, meter, subject)
);
