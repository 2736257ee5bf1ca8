//! Mutual exclusion of scheduled jobs across worker processes on one database file: a
//! lease in `job_locks`, renewed while held and released when dropped. A holder that dies
//! without releasing blocks the job only until its lease runs out.

use std::time::Duration;

use chrono::Utc;
use d2_kernel::StoreError;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use tokio::task::JoinHandle;

use crate::error::from_diesel;
use crate::pool::SqliteStore;
use crate::schema::job_locks;
use crate::types::Timestamptz;

/// How long a lease lasts without renewal.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// Renewed well before it runs out.
const RENEW_EVERY: Duration = Duration::from_secs(15);

/// A job's lease. Dropping it releases the lease.
pub struct JobLock {
    store: SqliteStore,
    job: String,
    holder: String,
    renewal: JoinHandle<()>,
}

impl std::fmt::Debug for JobLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLock").field("job", &self.job).finish()
    }
}

impl JobLock {
    /// Ends the lease now.
    pub async fn release(mut self) {
        self.renewal.abort();
        let holder = std::mem::take(&mut self.holder);
        if let Err(error) = release(&self.store, &self.job, &holder).await {
            tracing::warn!(job = self.job, error = %error, "cannot release a job lease; it runs out on its own");
        }
    }
}

impl Drop for JobLock {
    // Not released yet (`release` empties the holder): a task ends the lease.
    fn drop(&mut self) {
        self.renewal.abort();
        if self.holder.is_empty() {
            return;
        }
        let (store, job, holder) = (self.store.clone(), self.job.clone(), self.holder.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = release(&store, &job, &holder).await {
                    tracing::warn!(job, error = %error, "cannot release a job lease; it runs out on its own");
                }
            });
        }
    }
}

impl SqliteStore {
    /// Takes the lease of `job` if no other process holds a live one; `None` when one does.
    pub async fn try_lock_job(&self, job: &str) -> Result<Option<JobLock>, StoreError> {
        let holder = uuid::Uuid::new_v4().to_string();
        if !self.take_lease(job, &holder).await? {
            return Ok(None);
        }
        let renewal = tokio::spawn({
            let (store, job, holder) = (self.clone(), job.to_owned(), holder.clone());
            async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    match store.take_lease(&job, &holder).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(job, "a job lease was taken over");
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(job, error = %error, "cannot renew a job lease");
                        }
                    }
                }
            }
        });
        Ok(Some(JobLock {
            store: self.clone(),
            job: job.to_owned(),
            holder,
            renewal,
        }))
    }

    /// Takes or renews the lease for `holder`: inserted when free, taken over when expired,
    /// extended when `holder` has it. True when `holder` holds it afterwards.
    async fn take_lease(&self, job: &str, holder: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let mut conn = self.writer().await?;
        let taken = diesel::sql_query(
            "INSERT INTO job_locks (job, holder, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
             WHERE job_locks.holder = excluded.holder OR job_locks.expires_at <= ?4",
        )
        .bind::<Text, _>(job)
        .bind::<Text, _>(holder)
        .bind::<Timestamptz, _>(now + LEASE)
        .bind::<Timestamptz, _>(now)
        .execute(&mut conn)
        .await
        .map_err(from_diesel)?;
        Ok(taken == 1)
    }
}

async fn release(store: &SqliteStore, job: &str, holder: &str) -> Result<(), StoreError> {
    let mut conn = store.writer().await?;
    diesel::delete(
        job_locks::table
            .filter(job_locks::job.eq(job))
            .filter(job_locks::holder.eq(holder)),
    )
    .execute(&mut conn)
    .await
    .map_err(from_diesel)?;
    Ok(())
}
