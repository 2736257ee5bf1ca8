//! Against the real Redis the test script starts (`D2_TEST_REDIS_URL`, default the local
//! one), and against a port where nothing listens.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use d2_kernel::limit::{Decision, QuotaStore, Rate};
use d2_testkit::suites::quotas::quota_store;

use super::*;

fn redis_url() -> String {
    std::env::var("D2_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

fn settings(url: String) -> RedisSettings {
    RedisSettings {
        key_prefix: format!("d2test{}", std::process::id()),
        ..RedisSettings::new(url)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_quotas_keep_the_contract() {
    let quotas = Arc::new(RedisQuotas::new(settings(redis_url())).unwrap());
    quota_store(quotas.clone()).await;
    let stats = quotas.stats();
    assert!(stats.redis_available);
    assert_eq!(stats.local_decisions, 0, "every decision was Redis's");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_one_bucket() {
    let first = RedisQuotas::new(settings(redis_url())).unwrap();
    let second = RedisQuotas::new(settings(redis_url())).unwrap();
    let rate = Rate::new(10, Duration::from_secs(3600));
    let key = format!("shared:{}", std::process::id());
    for _ in 0..5 {
        assert!(matches!(
            first.take(&key, 1, rate).await,
            Decision::Allowed(_)
        ));
        assert!(matches!(
            second.take(&key, 1, rate).await,
            Decision::Allowed(_)
        ));
    }
    assert!(matches!(
        first.take(&key, 1, rate).await,
        Decision::Refused(_)
    ));
    assert!(matches!(
        second.take(&key, 1, rate).await,
        Decision::Refused(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_decisions_are_local_and_never_fail() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let quotas = RedisQuotas::new(settings(format!("redis://127.0.0.1:{port}/"))).unwrap();
    let rate = Rate::new(3, Duration::from_secs(3600));
    for _ in 0..3 {
        assert!(matches!(
            quotas.take("k", 1, rate).await,
            Decision::Allowed(_)
        ));
    }
    assert!(
        matches!(quotas.take("k", 1, rate).await, Decision::Refused(_)),
        "the local bucket still limits"
    );
    let stats = quotas.stats();
    assert!(!stats.redis_available);
    assert_eq!(stats.outages, 1, "one outage, however many decisions");
    assert_eq!(stats.local_decisions, 4);
}
