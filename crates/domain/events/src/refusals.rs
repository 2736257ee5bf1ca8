//! Events refused by the account's telemetry quota, counted per account and hour so that a
//! loss is never silent: the owner reads them in the metrics summary.
//!
//! A refusal is counted in memory and written by [`EventService::flush_refusals`]
//! (every second, and at shutdown): a fleet over its quota sends refused batches much
//! faster than the store should take one write each.
//!
//! [`EventService::flush_refusals`]: crate::EventService::flush_refusals

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use d2_kernel::AccountId;

/// Refused events of one account in the hour starting at `hour`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedEvents {
    pub account_id: AccountId,
    pub hour: DateTime<Utc>,
    pub events: u64,
    pub batches: u64,
}

/// The start of the hour of `at` (UTC).
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

/// Events and batches refused, per (account, hour).
pub(crate) type RefusalCounts = HashMap<(AccountId, DateTime<Utc>), (u64, u64)>;

/// Refusals not yet written.
#[derive(Debug, Default)]
pub(crate) struct RefusalTally {
    pending: Mutex<RefusalCounts>,
}

impl RefusalTally {
    pub(crate) fn add(&self, account_id: AccountId, at: DateTime<Utc>, events: u64) {
        self.merge(&[RefusedEvents {
            account_id,
            hour: hour_of(at),
            events,
            batches: 1,
        }]);
    }

    /// Puts counts back (a write that failed is retried at the next flush).
    pub(crate) fn merge(&self, refusals: &[RefusedEvents]) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for refusal in refusals {
            let counts = pending
                .entry((refusal.account_id, refusal.hour))
                .or_default();
            counts.0 = counts.0.saturating_add(refusal.events);
            counts.1 = counts.1.saturating_add(refusal.batches);
        }
    }

    pub(crate) fn take(&self) -> Vec<RefusedEvents> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending
            .drain()
            .map(|((account_id, hour), (events, batches))| RefusedEvents {
                account_id,
                hour,
                events,
                batches,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_add_up_per_account_and_hour() {
        let tally = RefusalTally::default();
        let account = AccountId::random();
        let at = "2026-12-01T10:20:30Z".parse().unwrap();
        tally.add(account, at, 5);
        tally.add(account, "2026-12-01T10:59:59Z".parse().unwrap(), 7);
        tally.add(account, "2026-12-01T11:00:00Z".parse().unwrap(), 1);
        let mut rows = tally.take();
        rows.sort_by_key(|r| r.hour);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].hour,
            "2026-12-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!((rows[0].events, rows[0].batches), (12, 2));
        assert_eq!((rows[1].events, rows[1].batches), (1, 1));
        assert!(tally.take().is_empty());
    }
}
