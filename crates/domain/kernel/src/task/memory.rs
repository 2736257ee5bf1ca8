//! The queue in memory: the reference the contract suite (`d2_testkit::suites::tasks`) is
//! written against.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::{NewTask, Task, TaskCounts, TaskId, TaskQueue, TaskState};
use crate::error::StoreError;

#[derive(Debug, Default)]
pub struct MemoryTasks {
    tasks: Mutex<(i64, Vec<Task>)>,
}

impl MemoryTasks {
    fn with<T>(&self, work: impl FnOnce(&mut i64, &mut Vec<Task>) -> T) -> T {
        let mut guard = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, tasks) = &mut *guard;
        work(next, tasks)
    }

    fn update(&self, id: TaskId, attempt: u32, change: impl FnOnce(&mut Vec<Task>, usize)) -> bool {
        self.with(|_, tasks| {
            let found = tasks
                .iter()
                .position(|t| t.id == id && t.attempts == attempt && t.state == TaskState::Pending);
            found.is_some_and(|index| {
                change(tasks, index);
                true
            })
        })
    }
}

#[async_trait::async_trait]
impl TaskQueue for MemoryTasks {
    async fn enqueue(&self, task: &NewTask, now: DateTime<Utc>) -> Result<TaskId, StoreError> {
        Ok(self.with(|next, tasks| {
            *next = next.saturating_add(1);
            let id = TaskId(*next);
            tasks.push(Task {
                id,
                kind: task.kind.clone(),
                account_id: task.account_id,
                payload: task.payload.clone(),
                state: TaskState::Pending,
                attempts: 0,
                run_at: task.run_at,
                last_error: None,
                created_at: now,
            });
            id
        }))
    }

    async fn claim(
        &self,
        kinds: &[&str],
        limit: u32,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<Task>, StoreError> {
        Ok(self.with(|_, tasks| {
            let mut due: Vec<&mut Task> = tasks
                .iter_mut()
                .filter(|t| {
                    t.state == TaskState::Pending
                        && t.run_at <= now
                        && kinds.contains(&t.kind.as_str())
                })
                .collect();
            due.sort_by_key(|t| (t.run_at, t.id));
            due.into_iter()
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .map(|task| {
                    task.attempts = task.attempts.saturating_add(1);
                    task.run_at = crate::clock::later(now, lease);
                    task.clone()
                })
                .collect()
        }))
    }

    async fn complete(&self, id: TaskId, attempt: u32) -> Result<bool, StoreError> {
        Ok(self.update(id, attempt, |tasks, index| {
            tasks.remove(index);
        }))
    }

    async fn retry(
        &self,
        id: TaskId,
        attempt: u32,
        run_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.update(id, attempt, |tasks, index| {
            if let Some(task) = tasks.get_mut(index) {
                task.run_at = run_at;
                task.last_error = Some(error.to_owned());
            }
        }))
    }

    async fn bury(&self, id: TaskId, attempt: u32, error: &str) -> Result<bool, StoreError> {
        Ok(self.update(id, attempt, |tasks, index| {
            if let Some(task) = tasks.get_mut(index) {
                task.state = TaskState::Dead;
                task.last_error = Some(error.to_owned());
            }
        }))
    }

    async fn tasks(&self, state: TaskState, limit: u32) -> Result<Vec<Task>, StoreError> {
        Ok(self.with(|_, tasks| {
            let mut found: Vec<Task> = tasks.iter().filter(|t| t.state == state).cloned().collect();
            found.sort_by_key(|t| t.id);
            found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            found
        }))
    }

    async fn revive(&self, id: TaskId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.with(|_, tasks| {
            let dead = tasks
                .iter_mut()
                .find(|t| t.id == id && t.state == TaskState::Dead);
            dead.map(|task| {
                task.state = TaskState::Pending;
                task.attempts = 0;
                task.run_at = now;
            })
            .is_some()
        }))
    }

    async fn counts(&self) -> Result<TaskCounts, StoreError> {
        Ok(self.with(|_, tasks| {
            let count = |state| {
                u64::try_from(tasks.iter().filter(|t| t.state == state).count()).unwrap_or(u64::MAX)
            };
            TaskCounts {
                pending: count(TaskState::Pending),
                dead: count(TaskState::Dead),
            }
        }))
    }
}
