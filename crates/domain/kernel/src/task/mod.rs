//! The task queue: work a domain enqueues in the same transaction as the change that calls
//! for it (an invitation's email, a webhook, a usage report), done afterwards by a worker.
//! Committed together, the change never happens without its task nor the task without its
//! change; a task is done at least once, so its handler is idempotent.
//!
//! A claim leases a task: its `run_at` moves to the end of the lease and its attempt count
//! grows, so a worker that dies mid-task leaves it to be claimed again once the lease runs
//! out. Completing, retrying or burying names the attempt it was claimed as, and does
//! nothing once a later claim has taken the task over. PostgreSQL claims with
//! `FOR UPDATE SKIP LOCKED`, so workers never wait for each other; SQLite's single writer
//! claims one batch at a time. Tasks that fail `max_attempts` times, or fail for good, are
//! kept as `dead` for an operator to read and revive.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::error::StoreError;
use crate::ids::AccountId;

/// A task's number in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub i64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A task to enqueue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    /// Which handler does it (`invitation.email`, ...).
    pub kind: String,
    /// The account it is for, when it is for one.
    pub account_id: Option<AccountId>,
    /// What the handler needs, as the domain that enqueues it writes it.
    pub payload: serde_json::Value,
    /// Not before this.
    pub run_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting for its `run_at`, or leased to a worker until then.
    Pending,
    /// Failed for good; kept until an operator revives it.
    Dead,
}

impl TaskState {
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(TaskState::Pending),
            "dead" => Some(TaskState::Dead),
            _ => None,
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task in the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: TaskId,
    pub kind: String,
    pub account_id: Option<AccountId>,
    pub payload: serde_json::Value,
    pub state: TaskState,
    /// Claims so far; a claimed task carries the number of its claim.
    pub attempts: u32,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// How many tasks are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub pending: u64,
    pub dead: u64,
}

/// The queue's storage. Adapters also expose a way to enqueue inside their own write
/// transactions; [`TaskQueue::enqueue`] is for work that has no change of its own.
#[async_trait::async_trait]
pub trait TaskQueue: Send + Sync {
    async fn enqueue(&self, task: &NewTask, now: DateTime<Utc>) -> Result<TaskId, StoreError>;

    /// Leases up to `limit` due pending tasks of the given kinds, oldest `run_at` first:
    /// each one's attempts grow by one and its `run_at` becomes `now + lease`.
    async fn claim(
        &self,
        kinds: &[&str],
        limit: u32,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Vec<Task>, StoreError>;

    /// Removes a task done by the claim numbered `attempt`; false when a later claim took
    /// it over (the lease ran out) or it is gone.
    async fn complete(&self, id: TaskId, attempt: u32) -> Result<bool, StoreError>;

    /// Gives a failed claim's task back for `run_at`, with its error.
    async fn retry(
        &self,
        id: TaskId,
        attempt: u32,
        run_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, StoreError>;

    /// Marks a failed claim's task dead, with its error.
    async fn bury(&self, id: TaskId, attempt: u32, error: &str) -> Result<bool, StoreError>;

    /// The tasks in `state`, oldest first.
    async fn tasks(&self, state: TaskState, limit: u32) -> Result<Vec<Task>, StoreError>;

    /// Makes a dead task pending again, due `now`, with its attempts reset; false when no
    /// dead task has this id.
    async fn revive(&self, id: TaskId, now: DateTime<Utc>) -> Result<bool, StoreError>;

    async fn counts(&self) -> Result<TaskCounts, StoreError>;
}

/// Why a handler did not finish a task.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskFailure {
    /// Worth another try later (a network error, a busy server).
    #[error("{0}")]
    Retry(String),
    /// No try can succeed (the payload names something that no longer exists).
    #[error("{0}")]
    Permanent(String),
}

/// Does the tasks of one kind; registered by the domain that enqueues them.
#[async_trait::async_trait]
pub trait TaskHandler: Send + Sync {
    fn kind(&self) -> &'static str;

    async fn handle(&self, task: &Task) -> Result<(), TaskFailure>;
}

/// When failed tasks are tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Claims at most; a task failing this many times is dead.
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles after each one.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait after the claim numbered `attempt` failed, or `None` when it was the last.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let doublings = attempt.saturating_sub(1).min(30);
        let delay = self.first_delay.saturating_mul(1u32 << doublings);
        Some(delay.min(self.max_delay))
    }
}

/// What one pass of a [`TaskRunner`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskPass {
    pub done: u64,
    pub retried: u64,
    pub dead: u64,
    /// Finished after their lease ran out and another claim took them over.
    pub lost: u64,
}

impl TaskPass {
    pub fn claimed(&self) -> u64 {
        self.done
            .saturating_add(self.retried)
            .saturating_add(self.dead)
            .saturating_add(self.lost)
    }
}

/// Claims due tasks and hands each to its handler.
pub struct TaskRunner {
    queue: Arc<dyn TaskQueue>,
    handlers: Vec<Arc<dyn TaskHandler>>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    lease: chrono::Duration,
    batch: u32,
}

impl fmt::Debug for TaskRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRunner")
            .field("kinds", &self.kinds())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl TaskRunner {
    /// A runner of the `handlers`' kinds, leasing `batch` tasks at a time for `lease`.
    pub fn new(
        queue: Arc<dyn TaskQueue>,
        handlers: Vec<Arc<dyn TaskHandler>>,
        clock: Arc<dyn Clock>,
        policy: RetryPolicy,
        lease: Duration,
        batch: u32,
    ) -> Self {
        Self {
            queue,
            handlers,
            clock,
            policy,
            lease: chrono_of(lease),
            batch: batch.max(1),
        }
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.handlers.iter().map(|handler| handler.kind()).collect()
    }

    pub fn queue(&self) -> &Arc<dyn TaskQueue> {
        &self.queue
    }

    /// Claims one batch of due tasks and runs each; a task's outcome is written as soon as
    /// it is known.
    pub async fn run_once(&self) -> Result<TaskPass, StoreError> {
        let kinds = self.kinds();
        let mut pass = TaskPass::default();
        if kinds.is_empty() {
            return Ok(pass);
        }
        let claimed = self
            .queue
            .claim(&kinds, self.batch, self.clock.now(), self.lease)
            .await?;
        for task in claimed {
            let Some(handler) = self.handlers.iter().find(|h| h.kind() == task.kind) else {
                continue;
            };
            let (kept, counter) = match handler.handle(&task).await {
                Ok(()) => (
                    self.queue.complete(task.id, task.attempts).await?,
                    &mut pass.done,
                ),
                Err(failure) => {
                    let retry_at = match &failure {
                        TaskFailure::Retry(_) => self.policy.delay(task.attempts),
                        TaskFailure::Permanent(_) => None,
                    };
                    let error = failure.to_string();
                    match retry_at {
                        Some(delay) => {
                            let at = crate::clock::later(self.clock.now(), chrono_of(delay));
                            (
                                self.queue.retry(task.id, task.attempts, at, &error).await?,
                                &mut pass.retried,
                            )
                        }
                        None => (
                            self.queue.bury(task.id, task.attempts, &error).await?,
                            &mut pass.dead,
                        ),
                    }
                }
            };
            let counter = if kept { counter } else { &mut pass.lost };
            *counter = counter.saturating_add(1);
        }
        Ok(pass)
    }
}

fn chrono_of(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

#[cfg(any(test, feature = "testing"))]
pub mod memory;

#[cfg(test)]
mod tests {
    use super::*;

    /// The third failure of a task allowed three attempts buries it.
    #[test]
    fn retry_policy_doubles_and_stops() {
        let policy = RetryPolicy {
            max_attempts: 3,
            first_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(15),
        };
        assert_eq!(policy.delay(1), Some(Duration::from_secs(10)));
        assert_eq!(policy.delay(2), Some(Duration::from_secs(15)));
        assert_eq!(policy.delay(3), None);
    }
}
