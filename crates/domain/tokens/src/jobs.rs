//! The scheduled job of tokens.

use d2_kernel::{JobFailure, JobReport, ScheduledJob};

use crate::TokenService;

/// Marks tokens past their expiry, and rotated tokens past their grace, revoked (audited).
#[derive(Debug)]
pub struct TokenExpiry(pub TokenService);

#[async_trait::async_trait]
impl ScheduledJob for TokenExpiry {
    fn name(&self) -> &'static str {
        "token-expiry"
    }

    async fn run(&self, _: &(dyn Fn() -> bool + Send + Sync)) -> Result<JobReport, JobFailure> {
        Ok(JobReport::items(self.0.enforce_expiry().await?))
    }
}
