//! The bundle-poll limit: a token bucket per (account, app, token), refilled once per the
//! plan's poll interval, with a burst so the SDK's back-to-back listener and loader fetches
//! never lose an update. Answers that carry nothing new (304) do not spend from it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use d2_kernel::{AccountId, AppName, Plan, PlanCatalog, TokenId};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

type Key = (AccountId, AppName, Option<TokenId>);

#[derive(Debug)]
pub struct PollLimiter {
    burst: NonZeroU32,
    limiters: Mutex<HashMap<u32, std::sync::Arc<DefaultKeyedRateLimiter<Key>>>>,
}

impl PollLimiter {
    pub fn new(burst: u32) -> Self {
        Self {
            burst: NonZeroU32::new(burst.max(3)).unwrap_or(NonZeroU32::MIN),
            limiters: Mutex::new(HashMap::new()),
        }
    }

    fn limiter(&self, poll_seconds: u32) -> std::sync::Arc<DefaultKeyedRateLimiter<Key>> {
        let mut limiters = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limiters
            .entry(poll_seconds)
            .or_insert_with(|| {
                let period = Duration::from_secs(u64::from(poll_seconds.max(1)));
                let quota = Quota::with_period(period)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(self.burst);
                std::sync::Arc::new(RateLimiter::keyed(quota))
            })
            .clone()
    }

    /// Spends one fetch; `Err(seconds)` to wait when the bucket is empty.
    pub fn check(&self, plans: &PlanCatalog, plan: Plan, key: Key) -> Result<(), u64> {
        let poll_seconds = plans.quotas(plan).poll_seconds;
        self.limiter(poll_seconds)
            .check_key(&key)
            .map_err(|not_until| {
                not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs()
                    + 1
            })
    }

    /// Forgets idle keys, so memory stays bounded.
    pub fn forget_idle(&self) {
        let limiters: Vec<_> = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for limiter in limiters {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_three_then_a_wait_of_about_one_interval() {
        let limiter = PollLimiter::new(3);
        let plans = PlanCatalog::default();
        let key = (
            AccountId::random(),
            AppName::normalise("app"),
            Some(TokenId::random()),
        );
        for _ in 0..3 {
            assert!(limiter.check(&plans, Plan::Trial, key.clone()).is_ok());
        }
        let wait = limiter.check(&plans, Plan::Trial, key.clone()).unwrap_err();
        assert!((1..=301).contains(&wait), "{wait}");
        // Another token, app or account has its own bucket.
        let other = (key.0, key.1, Some(TokenId::random()));
        assert!(limiter.check(&plans, Plan::Trial, other).is_ok());
    }
}
