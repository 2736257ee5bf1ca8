DROP TABLE billing_budgets;
