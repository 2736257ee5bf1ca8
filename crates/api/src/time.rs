//! Instants callers send in query strings (`start`, `end`, `since`, `until`).
//!
//! chrono reads years from -262144 to +262143, beyond what the stores keep in order
//! (SQLite compares RFC 3339 text, which sorts only with four-digit years) and where
//! adding or subtracting a window overflows. Every caller-supplied instant is therefore
//! held to RFC 3339's four-digit years, 0001 to 9999, at the edge: anything else is 400
//! `invalid_time_range`, before it reaches a service, a store or any arithmetic.

use chrono::{DateTime, Datelike, Utc};
use d2_kernel::Code;

use crate::error::ApiError;

/// The first and last years a caller may name.
const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Checks each named instant that is present.
pub fn check_instants(instants: &[(&str, Option<DateTime<Utc>>)]) -> Result<(), ApiError> {
    for (name, instant) in instants {
        if let Some(instant) = instant
            && !YEARS.contains(&instant.year())
        {
            return Err(ApiError::new(
                Code::InvalidTimeRange,
                format!("`{name}` must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<DateTime<Utc>> {
        Some(DateTime::parse_from_rfc3339(text).unwrap().to_utc())
    }

    #[test]
    fn four_digit_years_pass_and_others_are_refused() {
        assert!(check_instants(&[("a", at("0001-01-01T00:00:00Z")), ("b", None)]).is_ok());
        assert!(check_instants(&[("a", at("9999-12-31T23:59:59.999Z"))]).is_ok());
        assert!(check_instants(&[("a", Some(DateTime::<Utc>::MIN_UTC))]).is_err());
        assert!(check_instants(&[("a", Some(DateTime::<Utc>::MAX_UTC))]).is_err());
        let error = check_instants(&[
            ("ok", at("2026-01-01T00:00:00Z")),
            ("end", Some(DateTime::<Utc>::MIN_UTC)),
        ])
        .unwrap_err();
        assert_eq!(error.code(), Code::InvalidTimeRange);
    }
}
