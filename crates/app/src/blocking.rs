//! The runtime's blocking pool, behind the domain's [`Blocking`] port.

use async_trait::async_trait;
use d2_kernel::Blocking;
use d2_kernel::blocking::Job;

/// Runs jobs with `tokio::task::spawn_blocking`, so CPU-heavy domain work (RSA key
/// generation) never occupies an async worker thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockingPool;

#[async_trait]
impl Blocking for BlockingPool {
    async fn run(&self, job: Job) {
        // A panicking job is reported by `run_blocking` as a job that did not complete.
        if let Err(error) = tokio::task::spawn_blocking(job).await {
            tracing::error!(%error, "a blocking job did not complete");
        }
    }
}

#[cfg(test)]
mod tests {
    use d2_kernel::run_blocking;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_run_on_another_thread_than_the_async_task() {
        let here = std::thread::current().id();
        let there = run_blocking(&BlockingPool, || std::thread::current().id()).await;
        assert!(there.is_some_and(|there| there != here));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_job_is_none() {
        let result: Option<()> = run_blocking(&BlockingPool, || panic!("boom")).await;
        assert!(result.is_none());
    }
}
