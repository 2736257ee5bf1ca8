//! The price table: what each model's tokens and each agent operation cost, in credits,
//! as versions that take effect at set times.
//!
//! A price is never changed in place: a new version with a later `from` is appended, and
//! each usage record keeps the version it was priced at and the credits it cost, so a
//! price change never rewrites what was already charged. The table is the operator's
//! (one for the whole deployment), read from a YAML file when the server starts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// One version of a meter's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceVersion {
    /// Increasing with `from`, from 1.
    pub version: u32,
    /// When it takes effect.
    pub from: DateTime<Utc>,
    /// Credits per million input tokens (models).
    #[serde(default)]
    pub input_per_million: u64,
    /// Credits per million output tokens (models).
    #[serde(default)]
    pub output_per_million: u64,
    /// Credits per invocation (agent operations).
    #[serde(default)]
    pub per_invocation: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    models: HashMap<String, Vec<PriceVersion>>,
    #[serde(default)]
    operations: HashMap<String, Vec<PriceVersion>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPriceTable(pub String);

/// Every meter's price versions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    models: HashMap<String, Vec<PriceVersion>>,
    operations: HashMap<String, Vec<PriceVersion>>,
}

/// The longest model or operation name.
pub const MAX_METER_CHARS: usize = 128;

impl PriceTable {
    /// The table of a YAML document `{models: {<id>: [versions]}, operations: {<name>:
    /// [versions]}}`, or what is wrong with it.
    pub fn from_yaml(text: &str) -> Result<Self, InvalidPriceTable> {
        let document: Document = serde_saphyr::from_str(text)
            .map_err(|e| InvalidPriceTable(format!("not a price table: {e}")))?;
        for (kind, meters) in [
            ("model", &document.models),
            ("operation", &document.operations),
        ] {
            for (name, versions) in meters {
                checked(kind, name, versions)?;
            }
        }
        Ok(Self {
            models: document.models,
            operations: document.operations,
        })
    }

    /// The price of `model`'s tokens in force at `at`.
    pub fn model(&self, model: &str, at: DateTime<Utc>) -> Option<PriceVersion> {
        in_force(self.models.get(model)?, at)
    }

    /// The price of an invocation of `operation` in force at `at`.
    pub fn operation(&self, operation: &str, at: DateTime<Utc>) -> Option<PriceVersion> {
        in_force(self.operations.get(operation)?, at)
    }

    /// The priced models, sorted.
    pub fn models(&self) -> Vec<&str> {
        sorted(&self.models)
    }

    /// The priced operations, sorted.
    pub fn operations(&self) -> Vec<&str> {
        sorted(&self.operations)
    }
}

fn sorted(meters: &HashMap<String, Vec<PriceVersion>>) -> Vec<&str> {
    let mut names: Vec<&str> = meters.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

fn in_force(versions: &[PriceVersion], at: DateTime<Utc>) -> Option<PriceVersion> {
    versions
        .iter()
        .rev()
        .find(|version| version.from <= at)
        .copied()
}

fn checked(kind: &str, name: &str, versions: &[PriceVersion]) -> Result<(), InvalidPriceTable> {
    let invalid = |problem: &str| {
        Err(InvalidPriceTable(format!(
            "{kind} `{}`: {problem}",
            name.escape_debug()
        )))
    };
    if name.is_empty()
        || name.chars().count() > MAX_METER_CHARS
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return invalid("a name of 1 to 128 characters without spaces");
    }
    if versions.is_empty() {
        return invalid("at least one version");
    }
    let mut previous: Option<&PriceVersion> = None;
    for version in versions {
        let in_order = match previous {
            None => version.version >= 1,
            Some(before) => version.version > before.version && version.from > before.from,
        };
        if !in_order {
            return invalid("versions numbered from 1, each later and higher than the one before");
        }
        let over = |price: u64| price > crate::MAX_CREDITS;
        if over(version.input_per_million)
            || over(version.output_per_million)
            || over(version.per_invocation)
        {
            return invalid("prices of at most 10^12 credits");
        }
        previous = Some(version);
    }
    Ok(())
}
