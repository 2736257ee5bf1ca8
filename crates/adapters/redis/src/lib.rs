#![doc = include_str!("../README.md")]
#![deny(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::panic
)]

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use d2_kernel::limit::{Decision, LocalQuotas, QuotaStore, Rate, RateLimit};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A GCRA token bucket. `KEYS[1]` holds the bucket's theoretical arrival time: the instant
/// (milliseconds, Redis's clock) at which it is full again. Arguments: capacity, the time
/// to refill the whole bucket (ms), the cost. Answers {allowed, remaining, retry-after ms,
/// ms until full}. All or nothing: a refused cost spends nothing.
const GCRA: &str = r"
local capacity = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local interval = period / capacity
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local remaining = math.floor((period - (tat - now)) / interval + 1e-9)
if cost > remaining then
  return {0, remaining, math.ceil(tat + cost * interval - period - now), math.ceil(tat - now)}
end
local full_at = tat + cost * interval
redis.call('SET', KEYS[1], string.format('%.3f', full_at), 'PX', math.ceil(full_at - now) + 1000)
return {1, remaining - cost, 0, math.ceil(full_at - now)}
";

/// Where and how to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub url: String,
    /// A decision waits at most this long for Redis before counting locally.
    pub timeout: Duration,
    /// After a failure, decisions are local for this long before Redis is tried again.
    pub retry_after: Duration,
    /// Prefix of every key written.
    pub key_prefix: String,
}

impl RedisSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_millis(250),
            retry_after: Duration::from_secs(1),
            key_prefix: "d2".to_owned(),
        }
    }
}

/// How the shared quotas are doing, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaStats {
    /// Whether the last decision was made by Redis.
    pub redis_available: bool,
    /// Decisions made locally because Redis was away.
    pub local_decisions: u64,
    /// Times Redis was lost.
    pub outages: u64,
}

/// Account quotas in Redis, shared by every replica; local buckets while Redis is away.
pub struct RedisQuotas {
    manager: ConnectionManager,
    script: redis::Script,
    settings: RedisSettings,
    local: LocalQuotas,
    available: AtomicBool,
    /// When Redis last failed, while it is considered away.
    failed_at: Mutex<Option<Instant>>,
    local_decisions: AtomicU64,
    outages: AtomicU64,
}

impl std::fmt::Debug for RedisQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuotas")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RedisQuotas {
    /// Connects lazily: a server starts even when Redis is away, and limits locally until
    /// it answers.
    pub fn new(settings: RedisSettings) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(settings.retry_after);
        let manager = client.get_connection_manager_lazy(config)?;
        Ok(Self {
            manager,
            script: redis::Script::new(GCRA),
            settings,
            local: LocalQuotas::default(),
            available: AtomicBool::new(true),
            failed_at: Mutex::new(None),
            local_decisions: AtomicU64::new(0),
            outages: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> QuotaStats {
        QuotaStats {
            redis_available: self.available.load(Ordering::Relaxed),
            local_decisions: self.local_decisions.load(Ordering::Relaxed),
            outages: self.outages.load(Ordering::Relaxed),
        }
    }

    /// Forgets idle local buckets.
    pub fn forget_idle(&self) {
        self.local.forget_idle();
    }

    fn in_pause(&self) -> bool {
        let failed_at = self
            .failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        failed_at.is_some_and(|at| at.elapsed() < self.settings.retry_after)
    }

    async fn ask_redis(&self, key: &str, cost: u32, rate: Rate) -> Result<Decision, String> {
        let period_ms = u64::try_from(rate.period.as_millis()).unwrap_or(u64::MAX);
        let mut connection = self.manager.clone();
        let call = async {
            self.script
                .key(format!("{}:quota:{key}", self.settings.key_prefix))
                .arg(rate.capacity)
                .arg(period_ms.max(1))
                .arg(cost)
                .invoke_async::<Vec<i64>>(&mut connection)
                .await
        };
        let answer = tokio::time::timeout(self.settings.timeout, call)
            .await
            .map_err(|_| format!("no answer within {:?}", self.settings.timeout))?
            .map_err(|e| e.to_string())?;
        let [allowed, remaining, retry_ms, full_ms] = answer.as_slice() else {
            return Err(format!("unexpected answer of {} values", answer.len()));
        };
        let seconds = |ms: i64| u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000);
        let limit = RateLimit {
            limit: rate.capacity,
            remaining: u32::try_from((*remaining).max(0))
                .unwrap_or(u32::MAX)
                .min(rate.capacity),
            reset_seconds: seconds(*full_ms),
            retry_after_seconds: 0,
        };
        Ok(if *allowed == 1 {
            Decision::Allowed(limit)
        } else {
            Decision::Refused(RateLimit {
                retry_after_seconds: seconds(*retry_ms).max(1),
                ..limit
            })
        })
    }

    fn mark_available(&self) {
        if !self.available.swap(true, Ordering::Relaxed) {
            tracing::info!("Redis answers again: account quotas are shared by every replica");
        }
        *self
            .failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn mark_failed(&self, reason: &str) {
        *self
            .failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        if self.available.swap(false, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error.cause = reason,
                "Redis is unreachable: account quotas are counted by this replica alone until it answers"
            );
        }
    }
}

#[async_trait]
impl QuotaStore for RedisQuotas {
    async fn take(&self, key: &str, cost: u32, rate: Rate) -> Decision {
        if !self.in_pause() {
            match self.ask_redis(key, cost, rate).await {
                Ok(decision) => {
                    self.mark_available();
                    return decision;
                }
                Err(reason) => self.mark_failed(&reason),
            }
        }
        self.local_decisions.fetch_add(1, Ordering::Relaxed);
        self.local.take_now(key, cost, rate)
    }
}

#[cfg(test)]
mod tests;
