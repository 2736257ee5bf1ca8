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
    _connection: AsyncPgConnection,
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
        Ok(row.locked.then_some(JobLock {
            _connection: connection,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::TestDatabase;
    use crate::{PgStore, PoolSettings};

    #[tokio::test(flavor = "multi_thread")]
    async fn one_holder_per_job_until_the_lock_is_dropped() {
        let db = TestDatabase::new().await;
        let first = PgStore::connect(&PoolSettings::new(db.url()))
            .await
            .unwrap();
        let second = PgStore::connect(&PoolSettings::new(db.url()))
            .await
            .unwrap();
        let held = first.try_lock_job("analytics-export").await.unwrap();
        assert!(held.is_some());
        assert!(
            second
                .try_lock_job("analytics-export")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            second.try_lock_job("trial-locker").await.unwrap().is_some(),
            "other jobs are independent"
        );
        drop(held);
        let mut taken = None;
        // The server releases the lock when it sees the connection close.
        for _ in 0..100 {
            taken = second.try_lock_job("analytics-export").await.unwrap();
            if taken.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            taken.is_some(),
            "released when the holder's connection closes"
        );
    }
}
