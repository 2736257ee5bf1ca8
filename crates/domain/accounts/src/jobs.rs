//! The scheduled job of accounts.

use d2_kernel::{JobFailure, JobReport, ScheduledJob};

use crate::AccountService;

/// Locks accounts whose trial has ended (audited).
#[derive(Debug)]
pub struct TrialLocker(pub AccountService);

#[async_trait::async_trait]
impl ScheduledJob for TrialLocker {
    fn name(&self) -> &'static str {
        "trial-locker"
    }

    async fn run(&self, _: &(dyn Fn() -> bool + Send + Sync)) -> Result<JobReport, JobFailure> {
        Ok(JobReport::items(self.0.lock_expired_trials().await?))
    }
}
