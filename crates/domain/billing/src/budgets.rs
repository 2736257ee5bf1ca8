//! Budgets: what the account lets one model or one agent cost in a month, set by its
//! admins and enforced by eligibility like the plan's limits.

use chrono::{DateTime, Utc};

use crate::usage::{UsageError, checked_name};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown budget kind `{0}`: use model or agent")]
pub struct UnknownBudgetKind(pub String);

d2_kernel::named_values! {
    /// What a budget caps. The names are stored.
    pub enum BudgetKind (unknown: UnknownBudgetKind) {
        /// One model's usage.
        Model = "model",
        /// One agent's usage, every operation.
        Agent = "agent",
    }
}

/// The credits one model or agent may cost in a calendar month (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub kind: BudgetKind,
    /// The model, or the agent.
    pub subject: String,
    pub monthly_credits: u64,
    pub updated_at: DateTime<Utc>,
}

/// A budget's subject is named like the usage it caps.
pub(crate) fn checked_subject(subject: &str) -> Result<(), UsageError> {
    checked_name("subject", subject)
}
