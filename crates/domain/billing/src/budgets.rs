//! Budgets: what the account lets one model or one agent cost in a month, set by its
//! admins and enforced by eligibility like the plan's limits.

use chrono::{DateTime, Utc};

use crate::usage::{MeterKind, UsageError, checked_name};

/// The credits one model or agent may cost in a calendar month (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub kind: MeterKind,
    /// The model, or the agent.
    pub subject: String,
    pub monthly_credits: u64,
    pub updated_at: DateTime<Utc>,
}

/// A budget's subject is named like the usage it caps.
pub(crate) fn checked_subject(subject: &str) -> Result<(), UsageError> {
    checked_name("subject", subject)
}
