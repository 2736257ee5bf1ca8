//! Scopes of an account's authorization server (seed 003's scope engine): named
//! permissions an agent's token carries, each of which may imply narrower ones.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use d2_kernel::AccountId;

use super::error::CatalogError;
use super::graph::{self, Graph};
use super::text;

/// What an admin defines: a scope's name and what it says and implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeSpec {
    /// An RFC 6749 §3.3 scope token, unique in the account (`tools:read`).
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    /// The names of the scopes this one implies, sorted, without repeats.
    pub implies: Vec<String>,
}

impl ScopeSpec {
    /// The spec with its text trimmed and its list sorted, or the first rule it breaks.
    /// Whether the implied scopes exist, and whether they make a cycle, is the catalog's
    /// question ([`KnownScopes::check`]).
    pub fn validate(mut self) -> Result<Self, CatalogError> {
        if !text::is_scope_name(&self.name) {
            return Err(CatalogError::InvalidScope(format!(
                "`{}` is not a scope name: printable ASCII without spaces, quotes or backslashes, 1 to {} characters",
                self.name.escape_debug(),
                text::limits::SCOPE_NAME_CHARS
            )));
        }
        self.description =
            text::description(self.description).map_err(CatalogError::InvalidScope)?;
        self.category = text::category(self.category).map_err(CatalogError::InvalidScope)?;
        self.implies =
            text::scope_list("implies", self.implies).map_err(CatalogError::InvalidScope)?;
        Ok(self)
    }
}

/// A scope of an account's catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthScope {
    pub account_id: AccountId,
    pub spec: ScopeSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OAuthScope {
    pub fn new(account_id: AccountId, spec: ScopeSpec, now: DateTime<Utc>) -> Self {
        Self {
            account_id,
            spec,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// A scope with everything it grants: itself and every scope it implies, directly or
/// through others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownScope {
    pub scope: OAuthScope,
    /// The closure under `implies`, the scope itself included.
    pub expanded: BTreeSet<String>,
}

/// An account's whole scope catalog, each scope with its expansion: what the token endpoint
/// asks, served from memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownScopes {
    scopes: BTreeMap<String, KnownScope>,
}

impl KnownScopes {
    /// The catalog of `scopes` (a stored catalog: no cycles, nothing implied that is
    /// missing; a stored cycle would only end each closure where it closes).
    pub fn new(scopes: Vec<OAuthScope>) -> Self {
        let graph = graph_of(&scopes);
        let scopes = scopes
            .into_iter()
            .map(|scope| {
                let expanded = graph::closure(&graph, [scope.name()]);
                (scope.spec.name.clone(), KnownScope { scope, expanded })
            })
            .collect();
        Self { scopes }
    }

    pub fn get(&self, name: &str) -> Option<&KnownScope> {
        self.scopes.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.scopes.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.scopes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// Every scope, by name.
    pub fn iter(&self) -> impl Iterator<Item = &KnownScope> {
        self.scopes.values()
    }

    /// The names given and every scope they imply, sorted; the names the catalog does not
    /// hold (sorted) when there are any.
    pub fn expand<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeSet<String>, Vec<String>> {
        let mut expanded = BTreeSet::new();
        let mut unknown = BTreeSet::new();
        for name in names {
            match self.scopes.get(name) {
                Some(known) => expanded.extend(known.expanded.iter().cloned()),
                None => {
                    unknown.insert(name.to_owned());
                }
            }
        }
        if unknown.is_empty() {
            Ok(expanded)
        } else {
            Err(unknown.into_iter().collect())
        }
    }

    /// The names of the scopes that imply `name` directly, sorted.
    pub fn implied_by(&self, name: &str) -> Vec<String> {
        self.scopes
            .values()
            .filter(|k| k.scope.spec.name != name && k.scope.spec.implies.iter().any(|i| i == name))
            .map(|k| k.scope.spec.name.clone())
            .collect()
    }

    /// Whether the catalog may hold `spec` (added, or replacing the scope of its name):
    /// every scope it implies exists (or is itself), and no cycle follows.
    pub fn check(&self, spec: &ScopeSpec) -> Result<(), CatalogError> {
        let unknown: Vec<String> = spec
            .implies
            .iter()
            .filter(|n| **n != spec.name && !self.contains(n))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(CatalogError::UnknownScopes(unknown));
        }
        let mut graph: Graph = self
            .scopes
            .values()
            .map(|k| {
                (
                    k.scope.spec.name.clone(),
                    k.scope.spec.implies.iter().cloned().collect(),
                )
            })
            .collect();
        graph.insert(spec.name.clone(), spec.implies.iter().cloned().collect());
        match graph::find_cycle(&graph) {
            Some(cycle) => Err(CatalogError::ScopeCycle(cycle)),
            None => Ok(()),
        }
    }
}

fn graph_of(scopes: &[OAuthScope]) -> Graph {
    scopes
        .iter()
        .map(|s| {
            (
                s.spec.name.clone(),
                s.spec.implies.iter().cloned().collect(),
            )
        })
        .collect()
}

/// A change of an account's scopes, decided from the catalog as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeChange {
    Create(OAuthScope),
    /// The scope of this name, replaced (its `created_at` kept by the store).
    Update(OAuthScope),
    Delete(String),
}

/// The description, category and implied scopes an update replaces (the name stays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopePatch {
    pub description: Option<String>,
    pub category: Option<String>,
    pub implies: Vec<String>,
}
