//! App names, normalised one way everywhere.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name of an agent application (a policy bundle's `metadata.name`).
///
/// Normalisation, applied to every name that enters the system (query parameters, token
/// bindings, drafts, publishes): trim surrounding whitespace, replace every character that
/// is not a letter, a digit, `_`, `-` or `.` with `_`, keep at most 100 characters, and use
/// `default` for an empty result. It is idempotent, so a normalised name normalises to
/// itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

impl AppName {
    pub const MAX_CHARS: usize = 100;
    pub const DEFAULT: &'static str = "default";

    pub fn normalise(raw: &str) -> Self {
        let name: String = raw
            .trim()
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .take(Self::MAX_CHARS)
            .collect();
        if name.is_empty() {
            Self::default_app()
        } else {
            Self(name)
        }
    }

    pub fn default_app() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppName({:?})", self.0)
    }
}

impl Serialize for AppName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AppName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Ok(Self::normalise(&raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_like_the_sdk_publish_and_draft_paths_agree() {
        assert_eq!(AppName::normalise("  my app! ").as_str(), "my_app_");
        assert_eq!(
            AppName::normalise("billing-agent.v2").as_str(),
            "billing-agent.v2"
        );
        assert_eq!(AppName::normalise("   ").as_str(), "default");
        assert_eq!(AppName::normalise("").as_str(), "default");
        assert_eq!(AppName::normalise("agent/../etc").as_str(), "agent_.._etc");
        assert_eq!(AppName::normalise(&"x".repeat(150)).as_str().len(), 100);
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(raw in ".{0,140}") {
            let once = AppName::normalise(&raw);
            prop_assert_eq!(&AppName::normalise(once.as_str()), &once);
            prop_assert!(!once.as_str().is_empty());
            prop_assert!(once.as_str().chars().count() <= AppName::MAX_CHARS);
        }
    }
}
