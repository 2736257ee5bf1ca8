//! `d2ctl tasks`: what the task queue holds, and reviving dead tasks.

use d2_app::App;
use d2_kernel::{TaskId, TaskState};

/// The tasks in `state`, oldest first, one line each: id, kind, account, attempts, when
/// due, and the last error. Payloads are left out: they may carry personal data.
pub async fn list(app: &App, state: TaskState, limit: u32) -> anyhow::Result<String> {
    let counts = app.tasks.counts().await?;
    let mut out = format!("{} pending, {} dead\n", counts.pending, counts.dead);
    for task in app.tasks.tasks(state, limit).await? {
        let account = task
            .account_id
            .map_or_else(|| "-".to_owned(), |id| id.to_string());
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\tattempts={}\trun_at={}\t{}\n",
            task.id,
            task.kind,
            task.state,
            account,
            task.attempts,
            task.run_at.to_rfc3339(),
            task.last_error.as_deref().unwrap_or("")
        ));
    }
    Ok(out)
}

/// Makes a dead task pending again, due now, with its attempts reset.
pub async fn revive(app: &App, id: i64) -> anyhow::Result<()> {
    let revived = app.tasks.revive(TaskId(id), app.clock.now()).await?;
    anyhow::ensure!(revived, "no dead task {id}");
    Ok(())
}
