//! A read-through cache that stays coherent with explicit invalidation.
//!
//! Lookups that miss read from the source and store the result. An invalidation bumps an
//! epoch; a load that started before the epoch moved is not kept, so a value read just
//! before a revoke can never outlive the revoke's invalidation.
//!
//! The store underneath is moka's synchronous cache, hashed with foldhash: a hit is on the
//! path of every authenticated request (three per bundle poll), and the asynchronous
//! cache's lookup and SipHash cost about twice as much. Nothing in it waits: a hit, an
//! insert and an invalidation never block, and loads run outside it.
//!
//! In front of it each thread keeps copies of the few entries it read last. A moka hit
//! writes memory every reader shares (the entry's access time and reference count, the
//! queue of recorded reads), so on a hot entry the cores take the same cache lines from
//! each other on every request; a thread's copy is read without writing anything shared.
//! A copy is answered only while nothing was inserted or invalidated since it was taken
//! (a generation every insert and invalidation moves), and for at most
//! [`COPY_LIFETIME`] (or the cache's lifetime, when shorter): an entry can be answered that
//! much past its lifetime, never past an invalidation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thread_local::ThreadLocal;

type Cache<K, V> = moka::sync::Cache<K, V, foldhash::fast::RandomState>;

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

/// How long a thread answers from its copy of an entry at most.
pub const COPY_LIFETIME: Duration = Duration::from_secs(1);

/// How many entries a thread keeps copies of, per cache: the hot ones (a poll reads three
/// caches), few enough that what the copies hold beyond the cache's own bound stays small.
const COPIES_PER_THREAD: usize = 16;

/// The heaviest entry a cache bounded by weight copies: what a thread's copies hold beyond
/// the bound is at most [`COPIES_PER_THREAD`] times this (a bundle may weigh megabytes).
pub const HEAVIEST_COPY: u32 = 64 * 1024;

type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;

pub struct CoherentCache<K: Send, V: Send> {
    cache: Cache<K, V>,
    /// Moved by every invalidation: a load that saw it move is not kept.
    epoch: AtomicU64,
    /// Moved by every invalidation and every insert: a copy taken before it moved is stale.
    generation: AtomicU64,
    copies: ThreadLocal<RefCell<Copies<K, V>>>,
    copy_lifetime: Duration,
    /// What an entry weighs, in a cache bounded by weight.
    weigh: Option<Weigher<K, V>>,
    hits: Count,
    misses: Count,
}

/// One thread's copies of the entries it read last, taken at `generation`.
struct Copies<K, V> {
    generation: u64,
    entries: HashMap<K, (V, Instant), foldhash::fast::RandomState>,
}

impl<K, V> Default for Copies<K, V> {
    fn default() -> Self {
        Self {
            generation: 0,
            entries: HashMap::default(),
        }
    }
}

/// A count each thread adds to in a cache line of its own: a hit, on every authenticated
/// request, must not be an atomic operation on a line every worker writes (each core would
/// take the line from the others in turn).
#[derive(Default)]
struct Count(ThreadLocal<PerThread>);

#[derive(Default)]
#[repr(align(128))]
struct PerThread(AtomicU64);

impl Count {
    fn add_one(&self) {
        self.0.get_or_default().0.fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|n| n.0.load(Ordering::Relaxed)).sum()
    }
}

impl<K: Send, V: Send> std::fmt::Debug for CoherentCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoherentCache")
            .field("hits", &self.hits.total())
            .field("misses", &self.misses.total())
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
        Self::from_builder(
            moka::sync::Cache::builder().max_capacity(settings.capacity),
            settings,
            None,
        )
    }

    /// At most `settings.capacity` in total of what `weigh` says each entry costs (bytes,
    /// for caches whose values vary from a few bytes to megabytes).
    pub fn weighted(
        settings: CacheSettings,
        weigh: impl Fn(&K, &V) -> u32 + Send + Sync + 'static,
    ) -> Self {
        let weigh: Weigher<K, V> = Arc::new(weigh);
        let weigher = Arc::clone(&weigh);
        Self::from_builder(
            moka::sync::Cache::builder()
                .max_capacity(settings.capacity)
                .weigher(move |key, value| weigher(key, value)),
            settings,
            Some(weigh),
        )
    }

    fn from_builder(
        builder: moka::sync::CacheBuilder<K, V, moka::sync::Cache<K, V>>,
        settings: CacheSettings,
        weigh: Option<Weigher<K, V>>,
    ) -> Self {
        Self {
            cache: builder
                .time_to_live(settings.ttl)
                .support_invalidation_closures()
                .build_with_hasher(foldhash::fast::RandomState::default()),
            epoch: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            copies: ThreadLocal::new(),
            copy_lifetime: settings.ttl.min(COPY_LIFETIME),
            weigh,
            hits: Count::default(),
            misses: Count::default(),
        }
    }

    /// The cached value of `key`, if any (nothing is loaded).
    pub async fn get(&self, key: &K) -> Option<V> {
        let value = self.cached(key);
        if value.is_some() {
            self.hits.add_one();
        }
        value
    }

    /// The value of `key` from this thread's copy, else from the cache (then copied).
    fn cached(&self, key: &K) -> Option<V> {
        if self.copy_lifetime.is_zero() {
            return self.cache.get(key);
        }
        // Read before the cache: a copy taken from a value older than an insert or an
        // invalidation that ran meanwhile is marked with the generation before it.
        let generation = self.generation.load(Ordering::Acquire);
        let now = Instant::now();
        let copies = self.copies.get_or_default();
        {
            let copies = copies.borrow();
            if copies.generation == generation
                && let Some((value, until)) = copies.entries.get(key)
                && now < *until
            {
                return Some(value.clone());
            }
        }
        let value = self.cache.get(key)?;
        let Some(until) = now.checked_add(self.copy_lifetime) else {
            return Some(value);
        };
        if self
            .weigh
            .as_ref()
            .is_some_and(|weigh| weigh(key, &value) > HEAVIEST_COPY)
        {
            return Some(value);
        }
        let mut copies = copies.borrow_mut();
        if copies.generation != generation || copies.entries.len() >= COPIES_PER_THREAD {
            copies.entries.clear();
            copies.generation = generation;
        }
        copies.entries.insert(key.clone(), (value.clone(), until));
        Some(value)
    }

    /// Marks every thread's copies stale: called once the cache has changed, so that a copy
    /// taken at the new generation was read from the changed cache.
    fn moved(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The cached value of `key`, or the one `load` reads (then cached).
    pub async fn get_or_load<E, F, Fut>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.cached(key) {
            self.hits.add_one();
            return Ok(value);
        }
        self.misses.add_one();
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
        self.cache.insert(key.clone(), value.clone());
        if self.epoch.load(Ordering::Acquire) != epoch {
            // An invalidation ran while we read: what we read may predate it.
            self.cache.invalidate(key);
        }
        self.moved();
        Ok(value)
    }

    pub async fn invalidate(&self, key: &K) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(key);
        self.moved();
    }

    /// Drops every entry matching `predicate` (entries are checked lazily, on access).
    pub fn invalidate_if(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if self.cache.invalidate_entries_if(predicate).is_err() {
            self.cache.invalidate_all();
        }
        self.moved();
    }

    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
        self.moved();
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.total(),
            misses: self.misses.total(),
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
        cache.cache.run_pending_tasks();
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
    async fn a_threads_copy_is_never_answered_after_an_insert_or_an_invalidation() {
        let cache: CoherentCache<u32, &str> = CoherentCache::new(CacheSettings::default());
        cache
            .get_or_load(&1, || async { Ok::<_, ()>("old") })
            .await
            .unwrap();
        // The first hit copies the entry; the second is answered from the copy.
        assert_eq!(cache.get(&1).await, Some("old"));
        assert_eq!(cache.get(&1).await, Some("old"));
        cache
            .reload(&1, || async { Ok::<_, ()>("new") })
            .await
            .unwrap();
        assert_eq!(cache.get(&1).await, Some("new"));
        cache.invalidate(&1).await;
        assert_eq!(cache.get(&1).await, None);
        cache
            .get_or_load(&2, || async { Ok::<_, ()>("two") })
            .await
            .unwrap();
        assert_eq!(cache.get(&2).await, Some("two"));
        cache.invalidate_if(|_, value| *value == "two");
        assert_eq!(cache.get(&2).await, None);
        cache
            .get_or_load(&3, || async { Ok::<_, ()>("three") })
            .await
            .unwrap();
        assert_eq!(cache.get(&3).await, Some("three"));
        cache.invalidate_all();
        assert_eq!(cache.get(&3).await, None);
        assert_eq!(cache.stats().hits, 5);
    }

    #[test]
    fn an_invalidation_on_one_thread_reaches_the_copies_of_every_other() {
        let cache: Arc<CoherentCache<u32, &str>> =
            Arc::new(CoherentCache::new(CacheSettings::default()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(cache.get_or_load(&1, || async { Ok::<_, ()>("revoked") }))
            .unwrap();
        let (copied, invalidated) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|threads| {
            let reader = threads.spawn(|| {
                let before = [cache.cached(&1), cache.cached(&1)];
                copied.wait();
                invalidated.wait();
                (before, cache.cached(&1))
            });
            copied.wait();
            runtime.block_on(cache.invalidate(&1));
            invalidated.wait();
            let (before, after) = reader.join().unwrap();
            assert_eq!(before, [Some("revoked"), Some("revoked")]);
            assert_eq!(after, None, "the reader's copy outlived the invalidation");
        });
    }

    #[tokio::test]
    async fn a_weighted_cache_copies_no_entry_heavier_than_the_heaviest_copy() {
        let cache: CoherentCache<u32, String> =
            CoherentCache::weighted(CacheSettings::default(), |_, value: &String| {
                u32::try_from(value.len()).unwrap_or(u32::MAX)
            });
        let heavy = usize::try_from(HEAVIEST_COPY).unwrap() + 1;
        for (key, size) in [(1, 100), (2, heavy)] {
            cache
                .get_or_load(&key, || async { Ok::<_, ()>("x".repeat(size)) })
                .await
                .unwrap();
            assert_eq!(cache.get(&key).await.map(|v| v.len()), Some(size));
        }
        let copies = cache.copies.get().expect("copies").borrow();
        assert!(copies.entries.contains_key(&1));
        assert!(!copies.entries.contains_key(&2), "a heavy entry was copied");
    }

    #[tokio::test]
    async fn without_a_lifetime_nothing_is_copied() {
        let cache: CoherentCache<u32, u32> = CoherentCache::new(CacheSettings {
            ttl: Duration::ZERO,
            capacity: 10,
        });
        assert_eq!(cache.cached(&1), None);
        assert!(cache.copies.get().is_none(), "a copy was made");
    }

    #[tokio::test]
    async fn a_copy_is_answered_for_at_most_its_lifetime() {
        let cache: CoherentCache<u32, &str> = CoherentCache::new(CacheSettings {
            ttl: Duration::from_millis(50),
            capacity: 10,
        });
        cache
            .get_or_load(&1, || async { Ok::<_, ()>("short") })
            .await
            .unwrap();
        assert_eq!(cache.get(&1).await, Some("short"));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            cache.get(&1).await,
            None,
            "answered past the cache's lifetime"
        );
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
