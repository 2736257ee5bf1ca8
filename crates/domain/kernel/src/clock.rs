//! The `Clock` port: every rule that depends on time (expiry, trials, grace periods) reads
//! the time from here, so tests move time instead of sleeping.

use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Timelike, Utc};

pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time, truncated to microseconds (the precision the stores keep), so a
    /// value read back from storage compares equal to the value written.
    fn now(&self) -> DateTime<Utc>;
}

/// `at + by`, or the end of chrono's range when that is past it: a time nothing reaches.
/// Domain code adds durations through this (the crates deny unchecked arithmetic).
pub fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(if by < Duration::zero() {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

/// `at - by`, or the start of chrono's range when that is before it.
pub fn earlier(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    at.checked_sub_signed(by)
        .unwrap_or(if by < Duration::zero() {
            DateTime::<Utc>::MAX_UTC
        } else {
            DateTime::<Utc>::MIN_UTC
        })
}

fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    // Plain integer work: `duration_trunc` costs ten times as much, on every request.
    at.with_nanosecond((at.nanosecond() / 1000).saturating_mul(1000))
        .unwrap_or(at)
}

/// The real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        to_micros(Utc::now())
    }
}

/// A clock that only moves when told to. For tests, and for embedders that replay history.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(to_micros(start)),
        }
    }

    /// Starts at the current real time.
    pub fn starting_now() -> Self {
        Self::new(Utc::now())
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = later(*now, by);
    }

    pub fn set(&self, at: DateTime<Utc>) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = to_micros(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_added_past_the_range_stop_at_its_ends() {
        let now = Utc::now();
        assert_eq!(later(now, Duration::seconds(5)), now + Duration::seconds(5));
        assert_eq!(
            earlier(now, Duration::seconds(5)),
            now - Duration::seconds(5)
        );
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(later(now, Duration::MIN), DateTime::<Utc>::MIN_UTC);
        assert_eq!(earlier(now, Duration::MAX), DateTime::<Utc>::MIN_UTC);
        assert_eq!(earlier(now, Duration::MIN), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::starting_now();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::seconds(90));
        assert_eq!(clock.now() - start, Duration::seconds(90));
    }

    #[test]
    fn system_clock_keeps_microsecond_precision() {
        let now = SystemClock.now();
        assert_eq!(now.timestamp_subsec_nanos() % 1000, 0);
    }
}
