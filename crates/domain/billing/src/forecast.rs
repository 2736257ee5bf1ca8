//! Forecasts of credit usage: what the period will have used by its end, and when the
//! balance runs out.
//!
//! The method is a linearly weighted moving average of the last [`WINDOW_DAYS`] complete
//! days: the most recent day weighs 7, the day before 6, down to 1. It follows a change of
//! pace within days (a plain mean of the period lags it by half the period) and a single
//! spike fades out of it within a week. The rate is kept as an exact fraction and every
//! figure derived from it is computed in integers, so a forecast never drifts by rounding.

use chrono::{DateTime, Duration, Utc};

/// The days the average looks back over.
pub const WINDOW_DAYS: usize = 7;

const SECONDS_PER_DAY: u128 = 86_400;

/// Credits per day, as the fraction `credits / days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    credits: u128,
    days: u128,
}

impl Rate {
    /// The weighted average of the last [`WINDOW_DAYS`] of `daily` (oldest first).
    fn of(daily: &[u64]) -> Self {
        let recent = daily
            .get(daily.len().saturating_sub(WINDOW_DAYS)..)
            .unwrap_or_default();
        let (mut credits, mut days) = (0_u128, 0_u128);
        for (weight, used) in (1_u128..).zip(recent) {
            credits = credits.saturating_add(weight.saturating_mul(u128::from(*used)));
            days = days.saturating_add(weight);
        }
        Self { credits, days }
    }

    /// The credits used over `seconds` at this rate, rounded up.
    fn over(self, seconds: u128) -> u128 {
        let denominator = self.days.saturating_mul(SECONDS_PER_DAY);
        if denominator == 0 {
            return 0;
        }
        self.credits.saturating_mul(seconds).div_ceil(denominator)
    }

    /// The seconds `credits` last at this rate; `None` when nothing is used.
    fn lasts(self, credits: u64) -> Option<u128> {
        u128::from(credits)
            .saturating_mul(self.days)
            .saturating_mul(SECONDS_PER_DAY)
            .checked_div(self.credits)
    }
}

/// A period's expected usage and the balance's expected end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forecast {
    /// Credits a day at the current pace, rounded up.
    pub daily_rate: u64,
    /// The period's usage by its end: what it used so far, and the pace over the rest.
    pub projected_period_usage: u64,
    /// When the balance runs out at this pace; `None` when nothing is being used (or not
    /// before the end of representable time).
    pub runs_out_at: Option<DateTime<Utc>>,
}

/// The forecast at `now` for a period ending at `period_end` that has used
/// `used_in_period` credits, from the usage of complete `daily` days (oldest first) and
/// the `balance` left.
pub fn forecast(
    daily: &[u64],
    used_in_period: u64,
    now: DateTime<Utc>,
    period_end: DateTime<Utc>,
    balance: u64,
) -> Forecast {
    let rate = Rate::of(daily);
    let left = u128::try_from(period_end.signed_duration_since(now).num_seconds()).unwrap_or(0);
    let rest = u64::try_from(rate.over(left)).unwrap_or(u64::MAX);
    Forecast {
        daily_rate: u64::try_from(rate.over(SECONDS_PER_DAY)).unwrap_or(u64::MAX),
        projected_period_usage: used_in_period.saturating_add(rest),
        runs_out_at: rate
            .lasts(balance)
            .and_then(|seconds| i64::try_from(seconds).ok())
            .and_then(Duration::try_seconds)
            .and_then(|lasts| now.checked_add_signed(lasts)),
    }
}
