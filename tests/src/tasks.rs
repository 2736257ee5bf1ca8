//! The task queue through the worker: handlers, retries with backoff, the dead letter an
//! operator reads and revives (`d2ctl tasks`), and several workers on one queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d2_kernel::{NewTask, Task, TaskFailure, TaskHandler, TaskState};
use d2_worker::Worker;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::TestApp;

/// Counts each payload it is handed; `{"fail": n}` fails its first n attempts, `"never"`
/// fails for good.
#[derive(Default)]
struct Recorder {
    calls: Mutex<HashMap<String, u32>>,
}

impl Recorder {
    fn calls(&self) -> HashMap<String, u32> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl TaskHandler for Recorder {
    fn kind(&self) -> &'static str {
        "test.record"
    }

    async fn handle(&self, task: &Task) -> Result<(), TaskFailure> {
        let key = task.payload["key"].as_str().unwrap_or_default().to_owned();
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(key).or_default();
            *count += 1;
            *count
        };
        match &task.payload["fail"] {
            serde_json::Value::String(never) if never == "never" => {
                Err(TaskFailure::Permanent("the invitation is gone".into()))
            }
            serde_json::Value::Number(n) if u64::from(call) <= n.as_u64().unwrap() => {
                Err(TaskFailure::Retry(format!("smtp 451 on attempt {call}")))
            }
            _ => Ok(()),
        }
    }
}

fn task(payload: serde_json::Value, now: chrono::DateTime<chrono::Utc>) -> NewTask {
    NewTask {
        kind: "test.record".into(),
        account_id: None,
        payload,
        run_at: now,
    }
}

const FAST: [(&str, &str); 3] = [
    ("D2__WORKER__TASKS__POLL_INTERVAL_MS", "20"),
    ("D2__WORKER__TASKS__FIRST_RETRY_SECONDS", "0"),
    ("D2__WORKER__TASKS__MAX_ATTEMPTS", "3"),
];

/// Runs `worker` until `done` holds (at most 20 s), then stops it.
async fn run_until(worker: &Worker, done: impl Fn() -> bool) {
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let worker = worker.clone();
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });
    for _ in 0..1000 {
        if done() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await.unwrap();
    assert!(done(), "the worker did not get there within 20 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_retries_failed_tasks_and_keeps_the_dead_for_the_operator() {
    let app = TestApp::spawn_with(&FAST).await;
    let recorder = Arc::new(Recorder::default());
    let handlers: Vec<Arc<dyn TaskHandler>> = vec![recorder.clone()];
    let worker = Worker::with_task_handlers(app.app.clone(), &handlers).unwrap();
    let now = app.app.clock.now();
    let queue = &app.app.tasks;
    queue
        .enqueue(&task(json!({ "key": "ok" }), now), now)
        .await
        .unwrap();
    queue
        .enqueue(&task(json!({ "key": "flaky", "fail": 2 }), now), now)
        .await
        .unwrap();
    let dead = queue
        .enqueue(&task(json!({ "key": "gone", "fail": "never" }), now), now)
        .await
        .unwrap();
    let stubborn = queue
        .enqueue(&task(json!({ "key": "stubborn", "fail": 99 }), now), now)
        .await
        .unwrap();

    run_until(&worker, || worker.metrics().task_outcomes("dead") == 2).await;
    let calls = recorder.calls();
    assert_eq!(calls["ok"], 1);
    assert_eq!(calls["flaky"], 3, "failed twice, done on the third attempt");
    assert_eq!(calls["gone"], 1, "a permanent failure is not tried again");
    assert_eq!(calls["stubborn"], 3, "max_attempts");
    assert_eq!(worker.metrics().task_outcomes("done"), 2);
    assert_eq!(worker.metrics().task_outcomes("retried"), 4);
    let metrics = worker.metrics().render();
    assert!(
        metrics.contains("d2_worker_tasks{state=\"dead\"} 2"),
        "{metrics}"
    );

    // The operator sees the dead tasks with their errors, and revives one.
    let listed = d2_cli::tasks::list(&app.app, TaskState::Dead, 10)
        .await
        .unwrap();
    assert!(listed.starts_with("0 pending, 2 dead\n"), "{listed}");
    assert!(
        listed.contains(&format!("{dead}\ttest.record\tdead\t-\tattempts=1")),
        "{listed}"
    );
    assert!(listed.contains("the invitation is gone"), "{listed}");
    assert!(listed.contains("smtp 451 on attempt 3"), "{listed}");
    assert!(
        !listed.contains("stubborn"),
        "payloads are not printed: {listed}"
    );
    d2_cli::tasks::revive(&app.app, stubborn.0).await.unwrap();
    assert!(d2_cli::tasks::revive(&app.app, stubborn.0).await.is_err());
    assert!(d2_cli::tasks::revive(&app.app, 987_654).await.is_err());
    run_until(&worker, || recorder.calls()["stubborn"] == 6).await;
    assert_eq!(queue.counts().await.unwrap().dead, 2, "dead again");
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_sharing_a_queue_do_each_task_once() {
    let app = TestApp::spawn_with(&FAST).await;
    let replica = app.replica(&FAST).await;
    let now = app.app.clock.now();
    for n in 0..150 {
        app.app
            .tasks
            .enqueue(&task(json!({ "key": format!("t{n}") }), now), now)
            .await
            .unwrap();
    }
    let recorders: Vec<Arc<Recorder>> = (0..3).map(|_| Arc::default()).collect();
    let workers: Vec<Worker> = recorders
        .iter()
        .enumerate()
        .map(|(i, recorder)| {
            // Two workers on one process's store, one on the replica's.
            let app = if i == 2 { &replica.app } else { &app.app };
            let handlers: Vec<Arc<dyn TaskHandler>> = vec![recorder.clone()];
            Worker::with_task_handlers(app.clone(), &handlers).unwrap()
        })
        .collect();
    let total = || -> u32 {
        recorders
            .iter()
            .map(|r| r.calls().values().sum::<u32>())
            .sum()
    };
    let runs: Vec<_> = workers
        .iter()
        .map(|worker| {
            let worker = worker.clone();
            let done = {
                let recorders = recorders.clone();
                move || {
                    recorders
                        .iter()
                        .map(|r| r.calls().values().sum::<u32>())
                        .sum::<u32>()
                        >= 150
                }
            };
            tokio::spawn(async move { run_until(&worker, done).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
    assert_eq!(total(), 150, "no task done twice");
    let mut seen = HashMap::new();
    for recorder in &recorders {
        for (key, count) in recorder.calls() {
            *seen.entry(key).or_insert(0) += count;
        }
    }
    assert_eq!(seen.len(), 150);
    assert!(seen.values().all(|count| *count == 1), "{seen:?}");
    assert_eq!(app.app.tasks.counts().await.unwrap().pending, 0);
}
