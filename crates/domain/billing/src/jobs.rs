//! The scheduled job of billing.

use std::sync::Arc;

use d2_kernel::{JobFailure, JobReport, ScheduledJob};

use crate::CreditLedger;

/// Gives back the credits of reservations left unsettled past their expiry (audited).
#[derive(Debug)]
pub struct ReservationExpiry(pub Arc<CreditLedger>);

#[async_trait::async_trait]
impl ScheduledJob for ReservationExpiry {
    fn name(&self) -> &'static str {
        "reservation-expiry"
    }

    async fn run(&self, _: &(dyn Fn() -> bool + Send + Sync)) -> Result<JobReport, JobFailure> {
        Ok(JobReport::items(self.0.expire_due().await?))
    }
}
