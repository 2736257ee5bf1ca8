//! The bundle-poll ceiling: abuse protection, not a schedule.
//!
//! A server token is shared by every pod of a service, so the ceiling is sized for fleets:
//! a token bucket per credential of `burst` requests (every pod of a large fleet starting
//! at once), refilled at `per_second`. 200 and 304 answers both spend from it; both come
//! from memory. The plan's poll interval is advice to the SDK (`X-D2-Poll-Seconds`), never
//! enforced. The ceiling is per process: each replica protects itself.

use std::time::Duration;

use d2_kernel::limit::{Rate, RateBuckets, RateLimit};
use d2_kernel::{AccountId, TokenId};

type Key = (AccountId, Option<TokenId>);

/// Requests per second per credential, and how many may come at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollCeiling {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for PollCeiling {
    fn default() -> Self {
        Self {
            per_second: 1000,
            burst: 5000,
        }
    }
}

impl PollCeiling {
    fn rate(self) -> Rate {
        let per_second = self.per_second.max(1);
        let burst = self.burst.max(per_second);
        Rate::new(
            burst,
            Duration::from_secs(1)
                .saturating_mul(burst)
                .checked_div(per_second)
                .unwrap_or(Duration::from_secs(1)),
        )
    }
}

#[derive(Debug)]
pub struct PollLimiter {
    buckets: RateBuckets<Key>,
}

impl PollLimiter {
    pub fn new(ceiling: PollCeiling) -> Self {
        Self {
            buckets: RateBuckets::new(ceiling.rate()),
        }
    }

    /// Spends one poll of the credential's bucket.
    pub fn check(&self, key: Key) -> Result<RateLimit, RateLimit> {
        self.buckets.check(&key)
    }

    pub fn forget_idle(&self) {
        self.buckets.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_starting_at_once_fits_the_burst_and_a_flood_does_not() {
        let limiter = PollLimiter::new(PollCeiling {
            per_second: 10,
            burst: 1000,
        });
        let key = (AccountId::random(), Some(TokenId::random()));
        for _ in 0..1000 {
            assert!(limiter.check(key).is_ok());
        }
        let refused = limiter.check(key).unwrap_err();
        assert_eq!(refused.limit, 1000);
        assert_eq!(refused.retry_after_seconds, 1);
        assert!(
            limiter.check((key.0, Some(TokenId::random()))).is_ok(),
            "another token has its own bucket"
        );
    }

    #[test]
    fn the_burst_is_never_below_one_second_of_rate() {
        let rate = PollCeiling {
            per_second: 50,
            burst: 3,
        }
        .rate();
        assert_eq!(rate.capacity, 50);
        assert_eq!(rate.period, Duration::from_secs(1));
    }
}
