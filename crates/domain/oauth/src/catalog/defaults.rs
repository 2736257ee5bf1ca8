//! The default scopes an account's catalog starts from, read from a YAML document
//! (`config/scopes.yml`) and checked as a whole when the process starts.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::error::CatalogError;
use super::scope::{KnownScopes, OAuthScope, ScopeSpec};
use super::text::limits;

/// Why a default scope document cannot be used; the message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDefaultScopes(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    scopes: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    description: Option<String>,
    category: Option<String>,
    #[serde(default)]
    implies: Vec<String>,
}

/// The scopes every account's catalog starts from: valid scopes, unique names, nothing
/// implied that is not among them, no cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefaultScopes {
    specs: Vec<ScopeSpec>,
}

impl DefaultScopes {
    /// No default scopes: catalogs start empty.
    pub fn none() -> Self {
        Self::default()
    }

    /// The scopes of a YAML document `scopes: [{name, description, category, implies}]`,
    /// or what is wrong with it.
    pub fn from_yaml(text: &str) -> Result<Self, InvalidDefaultScopes> {
        let document: Document = serde_saphyr::from_str(text)
            .map_err(|e| InvalidDefaultScopes(format!("not a scope list: {e}")))?;
        let specs = document
            .scopes
            .into_iter()
            .map(|entry| ScopeSpec {
                name: entry.name,
                description: entry.description,
                category: entry.category,
                implies: entry.implies,
            })
            .collect();
        Self::from_specs(specs)
    }

    /// `specs` checked as a catalog.
    pub fn from_specs(specs: Vec<ScopeSpec>) -> Result<Self, InvalidDefaultScopes> {
        let invalid = |name: &str, error: CatalogError| {
            InvalidDefaultScopes(format!("scope `{}`: {error}", name.escape_debug()))
        };
        if specs.len() > limits::SCOPES {
            return Err(InvalidDefaultScopes(format!(
                "{} scopes; a catalog holds at most {}",
                specs.len(),
                limits::SCOPES
            )));
        }
        let mut names = BTreeSet::new();
        let mut checked = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.name.clone();
            let spec = spec.validate().map_err(|e| invalid(&name, e))?;
            if !names.insert(spec.name.clone()) {
                return Err(InvalidDefaultScopes(format!(
                    "scope `{}` is listed twice",
                    spec.name.escape_debug()
                )));
            }
            checked.push(spec);
        }
        // Implied scopes may come later in the list: check against the whole list.
        let nobody = d2_kernel::AccountId::random();
        let all = KnownScopes::new(
            checked
                .iter()
                .map(|spec| OAuthScope::new(nobody, spec.clone(), chrono::DateTime::UNIX_EPOCH))
                .collect(),
        );
        for spec in &checked {
            all.check(spec).map_err(|e| invalid(&spec.name, e))?;
        }
        Ok(Self { specs: checked })
    }

    pub fn specs(&self) -> &[ScopeSpec] {
        &self.specs
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}
