//! The task queue (`d2_kernel::task`): its rows, [`enqueue`] for the write transactions of
//! the other repositories, and the queue port.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_kernel::{NewTask, StoreError, Task, TaskCounts, TaskId, TaskQueue, TaskState};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{TxError, from_diesel};
use crate::id::Id;
use crate::schema::tasks;

/// A task as stored: its number, and the rest as the copy carries it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = tasks, check_for_backend(crate::Db))]
struct TaskRow {
    id: i64,
    #[diesel(embed)]
    task: TaskCopy,
}

impl TaskRow {
    fn into_domain(self) -> Result<Task, StoreError> {
        let task = self.task;
        Ok(Task {
            id: TaskId(self.id),
            kind: task.kind,
            account_id: task.account_id.map(Into::into),
            payload: task.payload,
            state: TaskState::parse(&task.state)
                .ok_or_else(|| StoreError::corrupt(format!("task state {}", task.state)))?,
            attempts: u32::try_from(task.attempts)
                .map_err(|_| StoreError::corrupt("task attempts"))?,
            run_at: task.run_at,
            last_error: task.last_error,
            created_at: task.created_at,
        })
    }
}

/// A task as `d2ctl migrate-store` copies it; the target numbers it anew, in order.
#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = tasks, check_for_backend(crate::Db))]
pub(crate) struct TaskCopy {
    kind: String,
    account_id: Option<Id>,
    payload: Value,
    state: String,
    attempts: i32,
    run_at: DateTime<Utc>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
}

/// Enqueues `task` inside the caller's transaction: it commits, or rolls back, with the
/// change that called for it.
pub(crate) async fn enqueue(
    conn: &mut crate::Conn,
    task: &NewTask,
    now: DateTime<Utc>,
) -> QueryResult<TaskId> {
    diesel::insert_into(tasks::table)
        .values((
            tasks::kind.eq(&task.kind),
            tasks::account_id.eq(task.account_id.map(Id::from)),
            tasks::payload.eq(&task.payload),
            tasks::state.eq(TaskState::Pending.as_str()),
            tasks::attempts.eq(0),
            tasks::run_at.eq(task.run_at),
            tasks::created_at.eq(now),
        ))
        .returning(tasks::id)
        .get_result(conn)
        .await
        .map(TaskId)
}

fn attempt_of(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

/// The task `id` as the claim numbered `attempt` left it: still pending, not claimed since.
macro_rules! claimed {
    ($id:expr, $attempt:expr) => {
        tasks::table
            .filter(tasks::id.eq($id.0))
            .filter(tasks::attempts.eq(attempt_of($attempt)))
            .filter(tasks::state.eq(TaskState::Pending.as_str()))
    };
}

#[async_trait]
impl TaskQueue for crate::Store {
    async fn enqueue(&self, task: &NewTask, now: DateTime<Utc>) -> Result<TaskId, StoreError> {
        let mut conn = self.writer().await?;
        enqueue(&mut conn, task, now).await.map_err(from_diesel)
    }

    async fn claim(
        &self,
        kinds: &[&str],
        limit: u32,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<Task>, StoreError> {
        let lease_end = d2_kernel::later(now, lease);
        let mut conn = self.writer().await?;
        let rows = write_transaction!(conn, async |conn| {
            // Tasks another worker is claiming right now are skipped, not waited for.
            let ids: Vec<i64> = locked_skipping!(
                tasks::table
                    .filter(tasks::state.eq(TaskState::Pending.as_str()))
                    .filter(tasks::run_at.le(now))
                    .filter(tasks::kind.eq_any(kinds))
                    .order((tasks::run_at.asc(), tasks::id.asc()))
                    .limit(i64::from(limit))
                    .select(tasks::id)
            )
            .load(conn)
            .await?;
            if ids.is_empty() {
                return Ok::<_, TxError>(Vec::new());
            }
            let mut rows: Vec<TaskRow> =
                diesel::update(tasks::table.filter(tasks::id.eq_any(&ids)))
                    .set((
                        tasks::attempts.eq(tasks::attempts + 1),
                        tasks::run_at.eq(lease_end),
                    ))
                    .returning(TaskRow::as_returning())
                    .get_results(conn)
                    .await?;
            // The update returns rows in no particular order; the claim is in due order.
            rows.sort_by_key(|row| ids.iter().position(|id| *id == row.id));
            Ok(rows)
        })
        .await?;
        rows.into_iter().map(TaskRow::into_domain).collect()
    }

    async fn complete(&self, id: TaskId, attempt: u32) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let deleted = diesel::delete(claimed!(id, attempt))
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(deleted > 0)
    }

    async fn retry(
        &self,
        id: TaskId,
        attempt: u32,
        run_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let updated = diesel::update(claimed!(id, attempt))
            .set((tasks::run_at.eq(run_at), tasks::last_error.eq(error)))
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(updated > 0)
    }

    async fn bury(&self, id: TaskId, attempt: u32, error: &str) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let updated = diesel::update(claimed!(id, attempt))
            .set((
                tasks::state.eq(TaskState::Dead.as_str()),
                tasks::last_error.eq(error),
            ))
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(updated > 0)
    }

    async fn tasks(&self, state: TaskState, limit: u32) -> Result<Vec<Task>, StoreError> {
        let mut conn = self.conn().await?;
        tasks::table
            .filter(tasks::state.eq(state.as_str()))
            .order(tasks::id.asc())
            .limit(i64::from(limit))
            .select(TaskRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?
            .into_iter()
            .map(TaskRow::into_domain)
            .collect()
    }

    async fn revive(&self, id: TaskId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let updated = diesel::update(
            tasks::table
                .filter(tasks::id.eq(id.0))
                .filter(tasks::state.eq(TaskState::Dead.as_str())),
        )
        .set((
            tasks::state.eq(TaskState::Pending.as_str()),
            tasks::attempts.eq(0),
            tasks::run_at.eq(now),
        ))
        .execute(&mut conn)
        .await
        .map_err(from_diesel)?;
        Ok(updated > 0)
    }

    async fn counts(&self) -> Result<TaskCounts, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(String, i64)> = tasks::table
            .group_by(tasks::state)
            .select((tasks::state, diesel::dsl::count_star()))
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        let mut counts = TaskCounts::default();
        for (state, count) in rows {
            let count = u64::try_from(count).unwrap_or(0);
            match TaskState::parse(&state) {
                Some(TaskState::Pending) => counts.pending = count,
                Some(TaskState::Dead) => counts.dead = count,
                None => return Err(StoreError::corrupt(format!("task state {state}"))),
            }
        }
        Ok(counts)
    }
}
