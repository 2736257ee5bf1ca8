//! The readiness state behind `/readyz`: refreshed at most once per [`Readiness::ttl`],
//! however many probes arrive. A probe flood (many load balancers, a misconfigured
//! monitor, an attacker: the route needs no credential) must not take database
//! connections from real requests, so one store ping answers every probe of its interval,
//! and concurrent probes of a stale state wait for the one ping in flight instead of each
//! starting their own.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// The outcome of the last check and when it was made.
#[derive(Debug, Clone, Copy)]
struct Checked {
    at: Instant,
    ready: bool,
}

#[derive(Debug)]
pub struct Readiness {
    ttl: Duration,
    /// Held across the check: the first caller of a stale state checks, the others queue
    /// on the lock and find the fresh answer when they get it.
    last: Mutex<Option<Checked>>,
}

impl Readiness {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            last: Mutex::new(None),
        }
    }

    /// Whether the process is ready: the answer of `check` made less than `ttl` ago, or of
    /// a new call of `check` (one at a time).
    pub async fn ready<F, Fut>(&self, check: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut last = self.last.lock().await;
        if let Some(checked) = *last
            && checked.at.elapsed() < self.ttl
        {
            return checked.ready;
        }
        let ready = check().await;
        *last = Some(Checked {
            at: Instant::now(),
            ready,
        });
        ready
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_probes_share_one_check_and_the_answer_is_kept_for_the_ttl() {
        let readiness = Arc::new(Readiness::new(Duration::from_secs(3600)));
        let checks = Arc::new(AtomicUsize::new(0));
        let mut probes = Vec::new();
        for _ in 0..50 {
            let readiness = readiness.clone();
            let checks = checks.clone();
            probes.push(tokio::spawn(async move {
                readiness
                    .ready(|| async move {
                        checks.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        false
                    })
                    .await
            }));
        }
        for probe in probes {
            assert!(!probe.await.unwrap());
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stale_answer_is_checked_again() {
        let readiness = Readiness::new(Duration::ZERO);
        assert!(!readiness.ready(|| async { false }).await);
        assert!(readiness.ready(|| async { true }).await);
    }
}
