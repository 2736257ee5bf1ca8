//! Event sampling: the share of each event type the SDK sends.
//!
//! Rates merge in this order, later winning: built-in defaults, configuration, the
//! account's own settings. Unknown event types are allowed (the SDK uses 1.0 for types it
//! is not told about).

use std::collections::BTreeMap;

/// A sampling rate in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct SampleRate(f64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSampleRate {
    #[error("sampling rate for `{0}` must be a number between 0 and 1")]
    OutOfRange(String),
    #[error("`{0}` is not an event type name (1-64 characters: a-z, 0-9, `_`, `.`)")]
    BadEventType(String),
}

impl SampleRate {
    pub fn new(rate: f64) -> Result<Self, InvalidSampleRate> {
        if rate.is_finite() && (0.0..=1.0).contains(&rate) {
            Ok(Self(rate))
        } else {
            Err(InvalidSampleRate::OutOfRange(rate.to_string()))
        }
    }

    /// Clamps a configured value into range; `None` for NaN.
    pub fn clamped(rate: f64) -> Option<Self> {
        (!rate.is_nan()).then(|| Self(rate.clamp(0.0, 1.0)))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// Checks an event type name used as a sampling key.
pub fn validate_event_type(name: &str) -> Result<(), InvalidSampleRate> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(InvalidSampleRate::BadEventType(name.to_owned()))
    }
}

/// The defaults the SDK itself falls back to.
pub const DEFAULT_RATES: [(&str, f64); 4] = [
    ("authz_decision", 1.0),
    ("tool_invoked", 1.0),
    ("policy_poll_interval", 0.1),
    ("missing_policy", 0.5),
];

/// Built-in defaults merged with configuration; accounts add their own on top.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingPolicy {
    base: BTreeMap<String, SampleRate>,
}

impl SamplingPolicy {
    /// `configured` values are clamped into `[0, 1]`; NaN values are ignored.
    pub fn new(configured: &BTreeMap<String, f64>) -> Self {
        let mut base: BTreeMap<String, SampleRate> = DEFAULT_RATES
            .iter()
            .map(|(name, rate)| ((*name).to_owned(), SampleRate(*rate)))
            .collect();
        for (name, rate) in configured {
            if let Some(rate) = SampleRate::clamped(*rate) {
                base.insert(name.clone(), rate);
            }
        }
        Self { base }
    }

    pub fn merged(&self, account: &BTreeMap<String, SampleRate>) -> BTreeMap<String, f64> {
        let mut rates = self.base.clone();
        rates.extend(account.iter().map(|(k, v)| (k.clone(), *v)));
        rates.into_iter().map(|(k, v)| (k, v.0)).collect()
    }
}

impl Default for SamplingPolicy {
    fn default() -> Self {
        Self::new(&BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_beats_configuration_beats_defaults() {
        let configured = BTreeMap::from([
            ("policy_poll_interval".to_owned(), 0.3),
            ("tool_invoked".to_owned(), 7.0),
            ("jwks_fetch".to_owned(), -1.0),
            ("broken".to_owned(), f64::NAN),
        ]);
        let policy = SamplingPolicy::new(&configured);
        let account = BTreeMap::from([(
            "policy_poll_interval".to_owned(),
            SampleRate::new(0.9).unwrap(),
        )]);
        let rates = policy.merged(&account);
        assert_eq!(rates["policy_poll_interval"], 0.9);
        assert_eq!(rates["tool_invoked"], 1.0);
        assert_eq!(rates["jwks_fetch"], 0.0);
        assert_eq!(rates["missing_policy"], 0.5);
        assert_eq!(rates["authz_decision"], 1.0);
        assert!(!rates.contains_key("broken"));
    }

    #[test]
    fn rates_outside_the_unit_interval_are_refused() {
        for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(SampleRate::new(bad).is_err());
        }
        assert!(validate_event_type("authz_decision").is_ok());
        assert!(validate_event_type("Bad Type").is_err());
        assert!(validate_event_type("").is_err());
    }
}
