//! The scheduled job of signing keys.

use std::sync::Arc;

use d2_kernel::{JobFailure, JobReport, ScheduledJob};

use crate::Jwks;

/// Deletes signing keys retired for longer than the grace period.
#[derive(Debug)]
pub struct KeyPruning(pub Arc<Jwks>);

#[async_trait::async_trait]
impl ScheduledJob for KeyPruning {
    fn name(&self) -> &'static str {
        "key-pruning"
    }

    async fn run(&self, _: &(dyn Fn() -> bool + Send + Sync)) -> Result<JobReport, JobFailure> {
        Ok(JobReport::items(self.0.prune_retired().await?))
    }
}
