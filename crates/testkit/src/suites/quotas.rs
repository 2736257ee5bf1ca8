//! Account quotas ([`QuotaStore`]): a bucket spends until empty then refuses, a cost is all
//! or nothing, keys and rates are separate buckets, concurrent spends never pass the
//! capacity. Rates are slow (hours) so nothing refills mid-test.

#![expect(
    clippy::unwrap_used,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::sync::Arc;
use std::time::Duration;

use d2_kernel::limit::{Decision, QuotaStore, Rate};

fn unique(name: &str) -> String {
    format!("contract:{name}:{}", uuid::Uuid::new_v4())
}

/// Every rule of the port, in turn, on `store`.
pub async fn quota_store(store: Arc<dyn QuotaStore>) {
    spends_until_empty_then_refuses(&*store).await;
    costs_are_all_or_nothing(&*store).await;
    keys_and_rates_are_separate(&*store).await;
    concurrent_spends_never_exceed_the_capacity(store).await;
}

async fn spends_until_empty_then_refuses(store: &dyn QuotaStore) {
    let key = unique("spend");
    let rate = Rate::new(5, Duration::from_secs(3600));
    for left in (0..5).rev() {
        let limit = store.take(&key, 1, rate).await.into_result().unwrap();
        assert_eq!(limit.limit, 5);
        assert_eq!(limit.remaining, left);
        assert!(limit.reset_seconds >= 1);
    }
    let refused = store.take(&key, 1, rate).await.into_result().unwrap_err();
    assert_eq!(refused.remaining, 0);
    assert!(
        (600..=721).contains(&refused.retry_after_seconds),
        "one unit of 5 per hour comes back in about 12 minutes: {refused:?}"
    );
}

async fn costs_are_all_or_nothing(store: &dyn QuotaStore) {
    let key = unique("cost");
    let rate = Rate::new(100, Duration::from_secs(3600));
    let first = store.take(&key, 70, rate).await.into_result().unwrap();
    assert_eq!(first.remaining, 30);
    let refused = store.take(&key, 40, rate).await.into_result().unwrap_err();
    assert_eq!(refused.remaining, 30, "a refused cost spends nothing");
    let fits = store.take(&key, 30, rate).await.into_result().unwrap();
    assert_eq!(fits.remaining, 0);
    let too_big = store.take(&unique("huge"), 101, rate).await;
    assert!(
        matches!(too_big, Decision::Refused(_)),
        "more than the capacity never fits"
    );
}

async fn keys_and_rates_are_separate(store: &dyn QuotaStore) {
    let key = unique("separate");
    let rate = Rate::new(1, Duration::from_secs(3600));
    assert!(store.take(&key, 1, rate).await.rate_limit().is_allowed());
    assert!(!store.take(&key, 1, rate).await.rate_limit().is_allowed());
    assert!(
        store
            .take(&unique("other"), 1, rate)
            .await
            .rate_limit()
            .is_allowed(),
        "another key has its own bucket"
    );
}

async fn concurrent_spends_never_exceed_the_capacity(store: Arc<dyn QuotaStore>) {
    let key = unique("race");
    let rate = Rate::new(40, Duration::from_secs(3600));
    let takes = (0..100).map(|_| {
        let store = store.clone();
        let key = key.clone();
        async move { store.take(&key, 1, rate).await }
    });
    let decisions = futures_util::future::join_all(takes).await;
    let allowed = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Allowed(_)))
        .count();
    assert_eq!(allowed, 40, "exactly the capacity is allowed");
}
