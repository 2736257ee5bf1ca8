//! Rate limits and quotas: token buckets keyed by caller, with the rate chosen per call
//! (plans differ), and the facts a limited answer reports (`X-RateLimit-*`, `Retry-After`).
//!
//! Two kinds of limit use them:
//! - **ceilings** that protect one process (requests per second per token, failed
//!   authentications per address) are [`KeyedLimiter`]s in memory: each replica protects
//!   itself, at no cost on the hot path;
//! - **quotas** that belong to an account (telemetry events per minute) go through the
//!   [`QuotaStore`] port, which an adapter may share across replicas (Redis); without one,
//!   [`LocalQuotas`] limits each replica alone.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

/// A rate: `capacity` units at once, refilled evenly over `period` (so `capacity` per
/// `period` in the long run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub capacity: u32,
    pub period: Duration,
}

impl Rate {
    pub fn new(capacity: u32, period: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            period: period.max(Duration::from_millis(1)),
        }
    }

    /// `capacity` per second.
    pub fn per_second(capacity: u32) -> Self {
        Self::new(capacity, Duration::from_secs(1))
    }

    /// `capacity` per minute.
    pub fn per_minute(capacity: u32) -> Self {
        Self::new(capacity, Duration::from_secs(60))
    }

    /// The time one unit takes to come back.
    pub fn interval(&self) -> Duration {
        self.period
            .checked_div(self.capacity.max(1))
            .unwrap_or(self.period)
            .max(Duration::from_nanos(1))
    }

    /// Whole seconds (rounded up) until `used` units have come back.
    pub fn seconds_to_refill(&self, used: u32) -> u64 {
        ceil_seconds(self.interval().saturating_mul(used))
    }
}

/// Where a bucket stands after a decision: what `X-RateLimit-Limit`, `-Remaining` and
/// `-Reset` report, and, when refused, `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// The bucket's capacity.
    pub limit: u32,
    /// Units left now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
    /// For a refusal: seconds until the refused cost would fit; 0 when allowed.
    pub retry_after_seconds: u64,
}

impl RateLimit {
    pub fn is_allowed(&self) -> bool {
        self.retry_after_seconds == 0
    }
}

/// The answer to "may this caller spend `cost` now?". Both arms carry the bucket's state,
/// so every answer of a limited route can report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed(RateLimit),
    Refused(RateLimit),
}

impl Decision {
    pub fn rate_limit(&self) -> RateLimit {
        match self {
            Decision::Allowed(limit) | Decision::Refused(limit) => *limit,
        }
    }

    /// The state when allowed, the state as an error when refused.
    pub fn into_result(self) -> Result<RateLimit, RateLimit> {
        match self {
            Decision::Allowed(limit) => Ok(limit),
            Decision::Refused(limit) => Err(limit),
        }
    }
}

fn ceil_seconds(duration: Duration) -> u64 {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        seconds.saturating_add(1)
    } else {
        seconds
    }
}

type Buckets<K> = Arc<
    RateLimiter<
        K,
        governor::state::keyed::DefaultKeyedStateStore<K>,
        DefaultClock,
        StateInformationMiddleware,
    >,
>;

/// In-memory token buckets of one rate, one per key. No lock of its own: the hot paths
/// whose rate is fixed (the poll ceiling, the per-IP limit) use it directly.
pub struct RateBuckets<K: Hash + Eq + Clone> {
    rate: Rate,
    buckets: Buckets<K>,
}

impl<K: Hash + Eq + Clone> fmt::Debug for RateBuckets<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateBuckets")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> RateBuckets<K> {
    pub fn new(rate: Rate) -> Self {
        let burst = NonZeroU32::new(rate.capacity).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(rate.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            rate,
            buckets: Arc::new(
                RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            ),
        }
    }

    /// Spends `cost` units of `key`'s bucket, all or nothing.
    pub fn take(&self, key: &K, cost: u32) -> Decision {
        let rate = self.rate;
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match self.buckets.check_key_n(key, cost) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity().min(rate.capacity);
                Decision::Allowed(RateLimit {
                    limit: rate.capacity,
                    remaining,
                    reset_seconds: rate.seconds_to_refill(rate.capacity.saturating_sub(remaining)),
                    retry_after_seconds: 0,
                })
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                // The units that fit now: the cost, less those still on their way back.
                let missing = u32::try_from(ceil_div(wait, rate.interval())).unwrap_or(u32::MAX);
                let remaining = cost.get().saturating_sub(missing).min(rate.capacity);
                Decision::Refused(RateLimit {
                    limit: rate.capacity,
                    remaining,
                    reset_seconds: rate.seconds_to_refill(rate.capacity.saturating_sub(remaining)),
                    retry_after_seconds: ceil_seconds(wait).max(1),
                })
            }
            // More than the bucket holds: never fits.
            Err(_) => Decision::Refused(RateLimit {
                limit: rate.capacity,
                remaining: 0,
                reset_seconds: rate.seconds_to_refill(rate.capacity),
                retry_after_seconds: ceil_seconds(rate.period).max(1),
            }),
        }
    }

    /// Spends one unit of `key`'s bucket: its state, or its state as an error when empty.
    pub fn check(&self, key: &K) -> Result<RateLimit, RateLimit> {
        self.take(key, 1).into_result()
    }

    /// Forgets idle keys, so memory stays bounded.
    pub fn forget_idle(&self) {
        self.buckets.retain_recent();
    }
}

/// In-memory token buckets per key and rate, for limits whose rate varies by call (plans
/// differ).
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiters: Mutex<HashMap<Rate, Arc<RateBuckets<K>>>>,
}

impl<K: Hash + Eq + Clone> fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    fn limiter(&self, rate: Rate) -> Arc<RateBuckets<K>> {
        let mut limiters = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
        limiters
            .entry(rate)
            .or_insert_with(|| Arc::new(RateBuckets::new(rate)))
            .clone()
    }

    /// Spends `cost` units of `key`'s bucket of `rate`, all or nothing.
    pub fn take(&self, key: &K, cost: u32, rate: Rate) -> Decision {
        self.limiter(rate).take(key, cost)
    }

    /// Spends one unit of `key`'s bucket of `rate`.
    pub fn check(&self, key: &K, rate: Rate) -> Result<RateLimit, RateLimit> {
        self.take(key, 1, rate).into_result()
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
            limiter.forget_idle();
        }
    }
}

fn ceil_div(wait: Duration, interval: Duration) -> u128 {
    let interval = interval.as_nanos().max(1);
    wait.as_nanos().div_ceil(interval)
}

/// Account-level quotas: buckets that may be shared by every replica.
///
/// Never fails: an adapter that loses its shared store answers from local buckets
/// instead (a quota then holds per replica until the store is back), so a quota can
/// never turn a request into a 5xx.
#[async_trait::async_trait]
pub trait QuotaStore: Send + Sync + fmt::Debug + 'static {
    /// Spends `cost` units of the bucket `key` (of rate `rate`), all or nothing.
    async fn take(&self, key: &str, cost: u32, rate: Rate) -> Decision;
}

/// Quotas kept in this process: each replica limits alone.
#[derive(Debug, Default)]
pub struct LocalQuotas {
    buckets: KeyedLimiter<String>,
}

impl LocalQuotas {
    pub fn take_now(&self, key: &str, cost: u32, rate: Rate) -> Decision {
        self.buckets.take(&key.to_owned(), cost, rate)
    }

    pub fn forget_idle(&self) {
        self.buckets.forget_idle();
    }
}

#[async_trait::async_trait]
impl QuotaStore for LocalQuotas {
    async fn take(&self, key: &str, cost: u32, rate: Rate) -> Decision {
        self.take_now(key, cost, rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_wait_per_key() {
        let limiter: KeyedLimiter<u32> = KeyedLimiter::default();
        let rate = Rate::per_minute(3);
        for left in (0..3).rev() {
            assert_eq!(limiter.check(&1, rate).unwrap().remaining, left);
        }
        let wait = limiter.check(&1, rate).unwrap_err().retry_after_seconds;
        assert!((1..=21).contains(&wait), "{wait}");
        assert!(
            limiter.check(&2, rate).is_ok(),
            "another key has its own bucket"
        );
        assert!(
            limiter.check(&1, Rate::per_minute(10)).is_ok(),
            "another rate is another bucket"
        );
    }

    #[test]
    fn refills_are_reported_in_whole_seconds() {
        let rate = Rate::per_minute(60);
        assert_eq!(rate.seconds_to_refill(0), 0);
        assert_eq!(rate.seconds_to_refill(1), 1);
        assert_eq!(rate.seconds_to_refill(60), 60);
        assert_eq!(Rate::per_minute(10_000).seconds_to_refill(1), 1);
    }
}
