//! Where CPU-heavy work runs (RSA key generation, password hashing): never on an async
//! worker thread, where tens of milliseconds of CPU would stall every request sharing it.
//!
//! Domain crates do not use an async runtime; they are handed a [`Blocking`] by the
//! composition root, whose implementation runs the job on the runtime's blocking pool.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

/// A job for [`Blocking::run`].
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs blocking jobs away from async worker threads.
///
/// Implementations MUST run `job` at most once and return once it has finished (or will
/// never run, when the pool is shutting down or the job panicked).
#[async_trait]
pub trait Blocking: Send + Sync + 'static {
    async fn run(&self, job: Job);
}

/// Runs the job on the calling thread: for tests and one-shot command-line tools.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inline;

#[async_trait]
impl Blocking for Inline {
    async fn run(&self, job: Job) {
        job();
    }
}

/// Runs `work` through `pool` and returns its result, or `None` when it did not complete
/// (it panicked, or the pool refused it).
pub async fn run_blocking<T, F>(pool: &dyn Blocking, work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(None));
    let out = Arc::clone(&slot);
    pool.run(Box::new(move || {
        let value = work();
        *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    }))
    .await;
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inline_runs_the_job_and_returns_its_value() {
        assert_eq!(run_blocking(&Inline, || 6 * 7).await, Some(42));
    }

    struct Refusing;

    #[async_trait]
    impl Blocking for Refusing {
        async fn run(&self, _job: Job) {}
    }

    #[tokio::test]
    async fn a_job_that_never_ran_is_none() {
        assert_eq!(run_blocking(&Refusing, || 1).await, None::<i32>);
    }
}
