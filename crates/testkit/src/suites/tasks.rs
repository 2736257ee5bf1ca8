//! The task queue: claims lease due tasks of the asked kinds in order, a lease that runs
//! out frees its task, failed tasks wait or die and the dead can be revived, concurrent
//! claims never hand a task out twice, and the runner retries with backoff.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use d2_kernel::{
    AccountId, Clock as _, ManualClock, NewTask, RetryPolicy, Task, TaskCounts, TaskFailure,
    TaskHandler, TaskId, TaskPass, TaskQueue, TaskRunner, TaskState,
};
use serde_json::json;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
}

fn task(kind: &str, payload: serde_json::Value, run_at: DateTime<Utc>) -> NewTask {
    NewTask {
        kind: kind.to_owned(),
        account_id: None,
        payload,
        run_at,
    }
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// Every rule of the queue, in turn, on `queue`; `account` is an account tasks may name.
pub async fn task_queue(queue: Arc<dyn TaskQueue>, account: AccountId) {
    claims_lease_due_tasks_of_the_asked_kinds_in_order(&*queue, account).await;
    a_lease_that_runs_out_passes_the_task_to_the_next_claim(&*queue).await;
    failed_tasks_wait_or_die_and_dead_ones_can_be_revived(&*queue).await;
    concurrent_claims_never_hand_out_a_task_twice(queue.clone()).await;
    the_runner_retries_with_backoff_and_buries_what_keeps_failing(queue).await;
}

async fn claims_lease_due_tasks_of_the_asked_kinds_in_order(
    queue: &dyn TaskQueue,
    account: AccountId,
) {
    let now = start();
    let payload = json!({ "to": "ada@example.com", "nested": { "list": [1, 2.5, "ü"] } });
    let mut first = task("contract.mail", payload.clone(), now - minutes(2));
    first.account_id = Some(account);
    let first = queue.enqueue(&first, now).await.unwrap();
    let second = queue
        .enqueue(&task("contract.mail", json!(2), now - minutes(1)), now)
        .await
        .unwrap();
    let later = queue
        .enqueue(&task("contract.mail", json!(3), now + minutes(5)), now)
        .await
        .unwrap();
    let other = queue
        .enqueue(&task("contract.hook", json!(4), now - minutes(3)), now)
        .await
        .unwrap();
    assert!(first < second && second < later);

    let claimed = queue
        .claim(&["contract.mail"], 10, now, minutes(1))
        .await
        .unwrap();
    let ids: Vec<TaskId> = claimed.iter().map(|t| t.id).collect();
    assert_eq!(ids, [first, second], "due ones of the kind, oldest first");
    let claimed = &claimed[0];
    assert_eq!(claimed.payload, payload);
    assert_eq!(claimed.account_id, Some(account));
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.run_at, now + minutes(1), "leased");
    assert_eq!(claimed.state, TaskState::Pending);
    assert_eq!(claimed.created_at, now);
    assert!(
        queue
            .claim(&["contract.mail"], 10, now, minutes(1))
            .await
            .unwrap()
            .is_empty(),
        "a leased task is not claimed again"
    );
    let limited = queue
        .claim(&["contract.mail", "contract.hook"], 1, now, minutes(1))
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].id, other);

    for task in [first, second] {
        assert!(queue.complete(task, 1).await.unwrap());
        assert!(!queue.complete(task, 1).await.unwrap(), "gone once done");
    }
    assert!(queue.complete(other, 1).await.unwrap());
    let left = queue.tasks(TaskState::Pending, 100).await.unwrap();
    assert_eq!(left.iter().map(|t| t.id).collect::<Vec<_>>(), [later]);
    assert!(queue.complete(later, 0).await.unwrap(), "done unclaimed");
    assert_eq!(queue.counts().await.unwrap(), TaskCounts::default());
}

async fn a_lease_that_runs_out_passes_the_task_to_the_next_claim(queue: &dyn TaskQueue) {
    let now = start();
    let id = queue
        .enqueue(&task("contract.lease", json!(null), now), now)
        .await
        .unwrap();
    let first = queue
        .claim(&["contract.lease"], 1, now, minutes(1))
        .await
        .unwrap();
    assert_eq!(first[0].attempts, 1);
    let after_lease = now + minutes(1);
    let second = queue
        .claim(&["contract.lease"], 1, after_lease, minutes(1))
        .await
        .unwrap();
    assert_eq!(
        second.len(),
        1,
        "the first worker died: the task is free again"
    );
    assert_eq!(second[0].attempts, 2);
    assert!(
        !queue.complete(id, 1).await.unwrap(),
        "the first claim finishing late changes nothing"
    );
    assert!(!queue.retry(id, 1, now, "late").await.unwrap());
    assert!(!queue.bury(id, 1, "late").await.unwrap());
    assert!(queue.complete(id, 2).await.unwrap());
}

async fn failed_tasks_wait_or_die_and_dead_ones_can_be_revived(queue: &dyn TaskQueue) {
    let now = start();
    let retried = queue
        .enqueue(&task("contract.fail", json!("r"), now), now)
        .await
        .unwrap();
    let buried = queue
        .enqueue(&task("contract.fail", json!("b"), now), now)
        .await
        .unwrap();
    let claimed = queue
        .claim(&["contract.fail"], 2, now, minutes(1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(
        queue
            .retry(retried, 1, now + minutes(10), "smtp: 451 try later")
            .await
            .unwrap()
    );
    assert!(queue.bury(buried, 1, "no such invitation").await.unwrap());
    assert!(
        queue
            .claim(&["contract.fail"], 2, now + minutes(9), minutes(1))
            .await
            .unwrap()
            .is_empty(),
        "a retry waits for its time; the dead are never claimed"
    );
    let pending = queue.tasks(TaskState::Pending, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].last_error.as_deref(),
        Some("smtp: 451 try later")
    );
    assert_eq!(pending[0].run_at, now + minutes(10));
    let dead = queue.tasks(TaskState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, buried);
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("no such invitation"));
    assert_eq!(
        queue.counts().await.unwrap(),
        TaskCounts {
            pending: 1,
            dead: 1
        }
    );

    assert!(!queue.revive(retried, now).await.unwrap(), "only the dead");
    assert!(queue.revive(buried, now + minutes(20)).await.unwrap());
    let again = queue
        .claim(&["contract.fail"], 5, now + minutes(20), minutes(1))
        .await
        .unwrap();
    let ids: HashSet<TaskId> = again.iter().map(|t| t.id).collect();
    assert_eq!(ids, HashSet::from([retried, buried]));
    let revived = again.iter().find(|t| t.id == buried).unwrap();
    assert_eq!(revived.attempts, 1, "attempts start over");
    for task in again {
        assert!(queue.complete(task.id, task.attempts).await.unwrap());
    }
}

async fn concurrent_claims_never_hand_out_a_task_twice(queue: Arc<dyn TaskQueue>) {
    let now = start();
    let mut enqueued = HashSet::new();
    for n in 0..120 {
        let id = queue
            .enqueue(&task("contract.race", json!(n), now), now)
            .await
            .unwrap();
        enqueued.insert(id);
    }
    let claimers: Vec<_> = (0..6)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = queue
                        .claim(&["contract.race"], 7, now, minutes(10))
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|t| t.id));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    let unique: HashSet<TaskId> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), unique.len(), "no task claimed twice");
    assert_eq!(unique, enqueued, "every task claimed");
    for id in unique {
        assert!(queue.complete(id, 1).await.unwrap());
    }
}

/// Fails the first `failures` times, then succeeds; `permanent` fails for good.
struct Flaky {
    failures: u32,
    calls: AtomicU32,
    seen: Mutex<Vec<serde_json::Value>>,
}

#[async_trait::async_trait]
impl TaskHandler for Flaky {
    fn kind(&self) -> &'static str {
        "contract.flaky"
    }

    async fn handle(&self, task: &Task) -> Result<(), TaskFailure> {
        self.seen.lock().unwrap().push(task.payload.clone());
        if task.payload == json!("permanent") {
            return Err(TaskFailure::Permanent("cannot ever".into()));
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.failures {
            return Err(TaskFailure::Retry(format!("failure {}", call + 1)));
        }
        Ok(())
    }
}

async fn the_runner_retries_with_backoff_and_buries_what_keeps_failing(queue: Arc<dyn TaskQueue>) {
    let clock = Arc::new(ManualClock::new(start()));
    let flaky = Arc::new(Flaky {
        failures: 2,
        calls: AtomicU32::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let runner = TaskRunner::new(
        queue.clone(),
        vec![flaky.clone()],
        clock.clone(),
        RetryPolicy {
            max_attempts: 3,
            first_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(15),
        },
        Duration::from_secs(60),
        10,
    );
    assert_eq!(runner.kinds(), ["contract.flaky"]);
    let now = clock.now();
    queue
        .enqueue(&task("contract.flaky", json!("flaky"), now), now)
        .await
        .unwrap();
    let unrelated = queue
        .enqueue(&task("contract.other", json!(0), now), now)
        .await
        .unwrap();

    let pass = runner.run_once().await.unwrap();
    assert_eq!(pass.retried, 1);
    clock.advance(chrono::Duration::seconds(9));
    assert_eq!(runner.run_once().await.unwrap().claimed(), 0, "waits 10 s");
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(runner.run_once().await.unwrap().retried, 1);
    clock.advance(chrono::Duration::seconds(15));
    assert_eq!(
        runner.run_once().await.unwrap(),
        TaskPass {
            done: 1,
            ..TaskPass::default()
        },
        "doubled to 20 s, capped at 15 s; the third attempt succeeds"
    );

    let now = clock.now();
    let permanent = queue
        .enqueue(&task("contract.flaky", json!("permanent"), now), now)
        .await
        .unwrap();
    assert_eq!(runner.run_once().await.unwrap().dead, 1);
    let dead = queue.tasks(TaskState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, permanent);
    assert_eq!(dead[0].last_error.as_deref(), Some("cannot ever"));
    assert_eq!(flaky.seen.lock().unwrap().len(), 4);

    let pending = queue.tasks(TaskState::Pending, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, unrelated, "kinds without a handler are left");
    assert!(queue.complete(unrelated, 0).await.unwrap());
    assert!(queue.revive(permanent, clock.now()).await.unwrap());
    assert_eq!(runner.run_once().await.unwrap().dead, 1);
    let dead = queue.tasks(TaskState::Dead, 10).await.unwrap();
    assert!(queue.revive(dead[0].id, clock.now()).await.unwrap());
    let claimed = queue
        .claim(&["contract.flaky"], 1, clock.now(), minutes(1))
        .await
        .unwrap();
    assert!(queue.complete(claimed[0].id, 1).await.unwrap());
    assert_eq!(queue.counts().await.unwrap(), TaskCounts::default());
}
