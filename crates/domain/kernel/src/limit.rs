//! Token buckets keyed by caller, with the rate chosen per call (plans differ).

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The buckets of one rate: `burst` tokens per period.
type Buckets<K> = Arc<DefaultKeyedRateLimiter<K>>;

/// One bucket per key and rate: `burst` tokens, refilled evenly over `period`.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiters: Mutex<HashMap<(Duration, u32), Buckets<K>>>,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> Default for KeyedLimiter<K> {
    fn default() -> Self {
        Self {
            limiters: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    fn limiter(&self, per: Duration, burst: u32) -> Buckets<K> {
        let burst = burst.max(1);
        let mut limiters = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
        limiters
            .entry((per, burst))
            .or_insert_with(|| {
                let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
                // One token every `per / burst`, at most `burst` at once.
                let interval = (per / burst.get()).max(Duration::from_millis(1));
                let quota = Quota::with_period(interval)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(burst);
                Arc::new(RateLimiter::keyed(quota))
            })
            .clone()
    }

    /// Spends one token of `key`'s bucket (`burst` per `per`); `Err(seconds)` to wait.
    pub fn check(&self, key: &K, per: Duration, burst: u32) -> Result<(), u64> {
        self.limiter(per, burst)
            .check_key(key)
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
            .unwrap_or_else(PoisonError::into_inner)
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
    fn a_burst_then_a_wait_per_key() {
        let limiter: KeyedLimiter<u32> = KeyedLimiter::default();
        let minute = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.check(&1, minute, 3).is_ok());
        }
        let wait = limiter.check(&1, minute, 3).unwrap_err();
        assert!((1..=21).contains(&wait), "{wait}");
        assert!(
            limiter.check(&2, minute, 3).is_ok(),
            "another key has its own bucket"
        );
        assert!(
            limiter.check(&1, minute, 10).is_ok(),
            "another rate is another bucket"
        );
    }
}
