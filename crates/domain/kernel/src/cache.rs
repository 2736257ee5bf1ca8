//! A read-through cache that stays coherent with explicit invalidation.
//!
//! Lookups that miss read from the source and store the result. An invalidation bumps an
//! epoch; a load that started before the epoch moved is not kept, so a value read just
//! before a revoke can never outlive the revoke's invalidation.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;

/// Size and lifetime of a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Entries older than this are reloaded, whatever happened meanwhile.
    pub ttl: Duration,
    pub capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            capacity: 100_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
}

pub struct CoherentCache<K, V> {
    cache: Cache<K, V>,
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K, V> std::fmt::Debug for CoherentCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoherentCache")
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K, V> CoherentCache<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `settings.capacity` entries.
    pub fn new(settings: CacheSettings) -> Self {
        Self::from_builder(Cache::builder().max_capacity(settings.capacity), settings)
    }

    /// At most `settings.capacity` in total of what `weigh` says each entry costs (bytes,
    /// for caches whose values vary from a few bytes to megabytes).
    pub fn weighted(
        settings: CacheSettings,
        weigh: impl Fn(&K, &V) -> u32 + Send + Sync + 'static,
    ) -> Self {
        Self::from_builder(
            Cache::builder()
                .max_capacity(settings.capacity)
                .weigher(weigh),
            settings,
        )
    }

    fn from_builder(
        builder: moka::future::CacheBuilder<K, V, Cache<K, V>>,
        settings: CacheSettings,
    ) -> Self {
        Self {
            cache: builder
                .time_to_live(settings.ttl)
                .support_invalidation_closures()
                .build(),
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached value of `key`, if any (nothing is loaded).
    pub async fn get(&self, key: &K) -> Option<V> {
        let value = self.cache.get(key).await;
        if value.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        value
    }

    /// The cached value of `key`, or the one `load` reads (then cached).
    pub async fn get_or_load<E, F, Fut>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.cache.get(key).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(value);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.reload(key, load).await
    }

    /// Reads `key`'s value again with `load` and caches it, whatever is cached now (for a
    /// value refreshed before it expires).
    pub async fn reload<E, F, Fut>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let epoch = self.epoch.load(Ordering::Acquire);
        let value = load().await?;
        self.cache.insert(key.clone(), value.clone()).await;
        if self.epoch.load(Ordering::Acquire) != epoch {
            // An invalidation ran while we read: what we read may predate it.
            self.cache.invalidate(key).await;
        }
        Ok(value)
    }

    pub async fn invalidate(&self, key: &K) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(key).await;
    }

    /// Drops every entry matching `predicate` (entries are checked lazily, on access).
    pub fn invalidate_if(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if self.cache.invalidate_entries_if(predicate).is_err() {
            self.cache.invalidate_all();
        }
    }

    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.cache.entry_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[tokio::test]
    async fn a_weighted_cache_holds_bytes_not_entries() {
        let settings = CacheSettings {
            ttl: Duration::from_secs(60),
            capacity: 1_000,
        };
        let cache: CoherentCache<u32, String> =
            CoherentCache::weighted(settings, |_, value: &String| {
                u32::try_from(value.len()).unwrap_or(u32::MAX)
            });
        for key in 0..10 {
            let value = cache
                .get_or_load(&key, || async { Ok::<_, ()>("x".repeat(300)) })
                .await;
            assert_eq!(value.map(|v| v.len()), Ok(300));
        }
        cache.cache.run_pending_tasks().await;
        assert!(
            cache.cache.weighted_size() <= 1_000,
            "{} bytes held",
            cache.cache.weighted_size()
        );
        assert!(cache.cache.entry_count() <= 3);
    }

    #[tokio::test]
    async fn reads_through_once_and_reloads_after_invalidation() {
        let cache: CoherentCache<u32, u32> = CoherentCache::new(CacheSettings::default());
        let loads = AtomicU32::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ()>(7)
        };
        assert_eq!(cache.get_or_load(&1, load).await, Ok(7));
        assert_eq!(cache.get_or_load(&1, load).await, Ok(7));
        assert_eq!(loads.load(Ordering::Relaxed), 1);
        cache.invalidate(&1).await;
        assert_eq!(cache.get_or_load(&1, load).await, Ok(7));
        assert_eq!(loads.load(Ordering::Relaxed), 2);
        cache.invalidate_if(|_, v| *v == 7);
        cache.get_or_load(&1, load).await.unwrap();
        assert_eq!(loads.load(Ordering::Relaxed), 3);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 3));
    }

    #[tokio::test]
    async fn a_load_that_races_an_invalidation_is_not_kept() {
        let cache: Arc<CoherentCache<u32, &str>> =
            Arc::new(CoherentCache::new(CacheSettings::default()));
        let racing = cache.clone();
        let stale = cache
            .get_or_load(&1, || async move {
                // The value is revoked while it is being read.
                racing.invalidate(&1).await;
                Ok::<_, ()>("stale")
            })
            .await;
        assert_eq!(stale, Ok("stale"));
        let fresh = cache
            .get_or_load(&1, || async { Ok::<_, ()>("fresh") })
            .await;
        assert_eq!(fresh, Ok("fresh"), "the racing load was not cached");
    }

    #[tokio::test]
    async fn a_reload_replaces_the_cached_value_unless_invalidated_meanwhile() {
        let cache: Arc<CoherentCache<u32, &str>> =
            Arc::new(CoherentCache::new(CacheSettings::default()));
        cache
            .get_or_load(&1, || async { Ok::<_, ()>("old") })
            .await
            .unwrap();
        cache
            .reload(&1, || async { Ok::<_, ()>("new") })
            .await
            .unwrap();
        assert_eq!(cache.get(&1).await, Some("new"));
        let racing = cache.clone();
        cache
            .reload(&1, || async move {
                racing.invalidate(&1).await;
                Ok::<_, ()>("stale")
            })
            .await
            .unwrap();
        assert_eq!(cache.get(&1).await, None, "the racing reload was not kept");
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let cache: CoherentCache<u32, u32> = CoherentCache::new(CacheSettings::default());
        assert_eq!(
            cache
                .get_or_load(&1, || async { Err::<u32, _>("down") })
                .await,
            Err("down")
        );
        assert_eq!(
            cache.get_or_load(&1, || async { Ok::<_, &str>(3) }).await,
            Ok(3)
        );
    }
}
