//! The bundle-poll limit: a token bucket per (account, app, token), refilled once per the
//! plan's poll interval, with a burst so the SDK's back-to-back listener and loader fetches
//! never lose an update. Answers that carry nothing new (304) do not spend from it.

use std::time::Duration;

use d2_kernel::limit::KeyedLimiter;
use d2_kernel::{AccountId, AppName, Quotas, TokenId};

type Key = (AccountId, AppName, Option<TokenId>);

#[derive(Debug)]
pub struct PollLimiter {
    burst: u32,
    buckets: KeyedLimiter<Key>,
}

impl PollLimiter {
    pub fn new(burst: u32) -> Self {
        Self {
            burst: burst.max(3),
            buckets: KeyedLimiter::default(),
        }
    }

    /// Spends one fetch; `Err(seconds)` to wait when the bucket is empty.
    pub fn check(&self, quotas: &Quotas, key: Key) -> Result<(), u64> {
        // `burst` fetches, refilled at one per poll interval.
        let per =
            Duration::from_secs(u64::from(quotas.poll_seconds.max(1)) * u64::from(self.burst));
        self.buckets.check(&key, per, self.burst)
    }

    pub fn forget_idle(&self) {
        self.buckets.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use d2_kernel::PlanCatalog;

    use super::*;

    #[test]
    fn a_burst_of_three_then_a_wait_of_about_one_interval() {
        let limiter = PollLimiter::new(3);
        let trial = PlanCatalog::default().trial;
        let key = (
            AccountId::random(),
            AppName::normalise("app"),
            Some(TokenId::random()),
        );
        for _ in 0..3 {
            assert!(limiter.check(&trial, key.clone()).is_ok());
        }
        let wait = limiter.check(&trial, key.clone()).unwrap_err();
        assert!((1..=301).contains(&wait), "{wait}");
        let other = (key.0, key.1, Some(TokenId::random()));
        assert!(
            limiter.check(&trial, other).is_ok(),
            "another token has its own bucket"
        );
    }
}
