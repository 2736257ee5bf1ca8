//! Mutual exclusion of scheduled jobs across worker processes.

use d2_kernel::StoreError;
use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::{from_diesel, from_pool};
use crate::pool::PgStore;

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// A job's lock: a session-level advisory lock held on a connection of its own, outside
/// the pool. Dropping it closes the connection, which releases the lock even when the
/// job panicked or was abandoned; if the process dies, PostgreSQL releases it too.
pub struct JobLock {
    connection: AsyncPgConnection,
}

impl JobLock {
    /// Unlocks now, rather than when the server notices the connection closed.
    pub async fn release(mut self) {
        if let Err(error) = diesel::sql_query("SELECT pg_advisory_unlock_all()")
            .execute(&mut self.connection)
            .await
        {
            tracing::warn!(error = %error, "cannot unlock a job; closing its connection does");
        }
    }
}

impl std::fmt::Debug for JobLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobLock")
    }
}

impl PgStore {
    /// Takes the lock of `job` if no other process holds it; `None` when one does.
    pub async fn try_lock_job(&self, job: &str) -> Result<Option<JobLock>, StoreError> {
        let mut connection = self.dedicated_connection().await.map_err(from_pool)?;
        let row: Locked = diesel::sql_query(
            "SELECT pg_try_advisory_lock(hashtextextended('job:' || $1, 0)) AS locked",
        )
        .bind::<Text, _>(job)
        .get_result(&mut connection)
        .await
        .map_err(from_diesel)?;
        Ok(row.locked.then_some(JobLock { connection }))
    }
}
