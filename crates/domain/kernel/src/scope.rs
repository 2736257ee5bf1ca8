//! Scopes: what a credential may do.
//!
//! A credential holds *grants*. A grant is either an atomic [`Scope`] or one of the
//! composites `dev` and `server`, which expand exactly as the D2 SDK expects:
//!
//! | grant    | expands to                                               |
//! |----------|----------------------------------------------------------|
//! | `dev`    | `policy.read`, `policy.publish`, `key.upload`, `event.ingest` |
//! | `server` | `policy.read`, `event.ingest`                            |
//!
//! *Strict* scopes (`metrics.read`) are satisfied only by an explicit grant, never through
//! a composite. An admin token holds every atomic scope explicitly, so it passes strict
//! checks as well.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

crate::named_values! {
    /// An atomic permission.
    pub enum Scope (unknown: UnknownScope) {
        PolicyRead = "policy.read",
        PolicyPublish = "policy.publish",
        PolicyRevoke = "policy.revoke",
        PolicyRevert = "policy.revert",
        KeyUpload = "key.upload",
        EventIngest = "event.ingest",
        MetricsRead = "metrics.read",
        /// Report metered usage (model tokens, agent invocations), paid for in credits.
        UsageReport = "usage.report",
        /// See the account's members (every role has it).
        MembersRead = "members.read",
        /// Management of the account: tokens, members, keys, rotation, audit.
        Admin = "admin",
    }
}

// Each scope has its bit in a `u64`.
const _: () = assert!(Scope::ALL.len() <= 64);

impl Scope {
    /// Strict scopes are never satisfied through a composite grant.
    pub const fn is_strict(self) -> bool {
        matches!(self, Scope::MetricsRead)
    }

    /// The scope's bit in a [`ScopeSet`]: its position in [`Scope::ALL`], so a new scope
    /// is one line in the declaration above, and a set holds up to 64.
    fn bit(self) -> u64 {
        Scope::ALL
            .iter()
            .position(|scope| *scope == self)
            .and_then(|index| u32::try_from(index).ok())
            .and_then(|index| 1_u64.checked_shl(index))
            .unwrap_or(0)
    }

    pub const fn description(self) -> &'static str {
        match self {
            Scope::PolicyRead => "Read policy bundles, versions and apps.",
            Scope::PolicyPublish => "Upload drafts and publish signed policy bundles.",
            Scope::PolicyRevoke => "Revoke an app's published policy.",
            Scope::PolicyRevert => "Make an earlier policy version active again.",
            Scope::KeyUpload => "Register and revoke publisher public keys.",
            Scope::EventIngest => "Send telemetry events.",
            Scope::MetricsRead => "Read events and metrics (strict: never granted by a composite).",
            Scope::MembersRead => "List the account's members and their roles.",
            Scope::UsageReport => {
                "Report metered usage (model tokens, agent invocations), paid in credits."
            }
            Scope::Admin => "Manage the account: tokens, members, keys, rotation and audit.",
        }
    }
}

/// The text is not a known scope or grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}`")]
pub struct UnknownScope(pub String);

/// What a credential was granted: an atomic scope or a composite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grant {
    Scope(Scope),
    /// `policy.read`, `policy.publish`, `key.upload`, `event.ingest`.
    Dev,
    /// `policy.read`, `event.ingest`.
    Server,
}

impl Grant {
    pub const DEV_SCOPES: [Scope; 4] = [
        Scope::PolicyRead,
        Scope::PolicyPublish,
        Scope::KeyUpload,
        Scope::EventIngest,
    ];
    pub const SERVER_SCOPES: [Scope; 2] = [Scope::PolicyRead, Scope::EventIngest];

    pub const fn as_str(self) -> &'static str {
        match self {
            Grant::Scope(scope) => scope.as_str(),
            Grant::Dev => "dev",
            Grant::Server => "server",
        }
    }

    /// The atomic scopes this grant confers to non-strict checks, as a bit set.
    fn bits(self) -> u64 {
        match self {
            Grant::Scope(scope) => scope.bit(),
            Grant::Dev => {
                Scope::PolicyRead.bit()
                    | Scope::PolicyPublish.bit()
                    | Scope::KeyUpload.bit()
                    | Scope::EventIngest.bit()
            }
            Grant::Server => Scope::PolicyRead.bit() | Scope::EventIngest.bit(),
        }
    }

    /// Does this grant confer `scope` to a non-strict check?
    pub fn confers(self, scope: Scope) -> bool {
        self.bits() & scope.bit() != 0
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Grant {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dev" => Ok(Grant::Dev),
            "server" => Ok(Grant::Server),
            other => other.parse().map(Grant::Scope),
        }
    }
}

impl Serialize for Grant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The grants of one credential, with the atomic scopes they confer precomputed so that
/// a check is two bit operations.
#[derive(Clone, PartialEq, Eq)]
pub struct ScopeSet {
    grants: Vec<Grant>,
    explicit: u64,
    effective: u64,
}

impl ScopeSet {
    pub fn new(grants: impl IntoIterator<Item = Grant>) -> Self {
        let mut list: Vec<Grant> = grants.into_iter().collect();
        list.sort_unstable();
        list.dedup();
        let mut explicit = 0;
        let mut effective = 0;
        for grant in &list {
            if let Grant::Scope(scope) = grant {
                explicit |= scope.bit();
            }
            effective |= grant.bits();
        }
        Self {
            grants: list,
            explicit,
            effective,
        }
    }

    /// Every atomic scope, each granted explicitly: what an admin credential holds.
    pub fn all() -> Self {
        Self::new(Scope::ALL.map(Grant::Scope))
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Does this set satisfy `scope`? Strict scopes need an explicit grant.
    pub fn allows(&self, scope: Scope) -> bool {
        let held = if scope.is_strict() {
            self.explicit
        } else {
            self.effective
        };
        held & scope.bit() != 0
    }

    /// The grants as stored and shown (`["dev"]`, `["server"]`, or atomic scope names).
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    pub fn names(&self) -> Vec<String> {
        self.grants.iter().map(|g| g.as_str().to_owned()).collect()
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.grants.iter().map(|g| g.as_str()))
            .finish()
    }
}

impl FromStr for ScopeSet {
    type Err = UnknownScope;

    /// Grants separated by commas or whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let grants = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Grant>, _>>()?;
        Ok(Self::new(grants))
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.grants.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Grant>::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dev_and_server_expand_as_the_sdk_expects() {
        let dev = ScopeSet::new([Grant::Dev]);
        for scope in Grant::DEV_SCOPES {
            assert!(dev.allows(scope), "{scope}");
        }
        assert!(!dev.allows(Scope::PolicyRevoke));
        assert!(!dev.allows(Scope::Admin));

        let server = ScopeSet::new([Grant::Server]);
        assert!(server.allows(Scope::PolicyRead));
        assert!(server.allows(Scope::EventIngest));
        assert!(!server.allows(Scope::PolicyPublish));
        assert!(!server.allows(Scope::KeyUpload));
    }

    #[test]
    fn strict_scopes_need_an_explicit_grant() {
        let both = ScopeSet::new([Grant::Dev, Grant::Server]);
        assert!(!both.allows(Scope::MetricsRead));
        let dashboard = ScopeSet::new([Grant::Scope(Scope::MetricsRead)]);
        assert!(dashboard.allows(Scope::MetricsRead));
        assert!(!dashboard.allows(Scope::PolicyRead));
    }

    #[test]
    fn admin_holds_every_scope_including_strict_ones() {
        let admin = ScopeSet::all();
        for scope in Scope::ALL {
            assert!(admin.allows(scope), "{scope}");
        }
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert!("policy.read,bogus".parse::<ScopeSet>().is_err());
        assert!("Dev".parse::<Grant>().is_err());
    }

    fn any_grant() -> impl Strategy<Value = Grant> {
        prop_oneof![
            Just(Grant::Dev),
            Just(Grant::Server),
            proptest::sample::select(Scope::ALL.to_vec()).prop_map(Grant::Scope),
        ]
    }

    proptest! {
        #[test]
        fn a_set_allows_exactly_the_union_of_its_expansions(grants in proptest::collection::vec(any_grant(), 0..6)) {
            let set = ScopeSet::new(grants.clone());
            for scope in Scope::ALL {
                let via_any = grants.iter().any(|g| g.confers(scope));
                let explicit = grants.contains(&Grant::Scope(scope));
                let expected = if scope.is_strict() { explicit } else { via_any };
                prop_assert_eq!(set.allows(scope), expected);
            }
        }

        #[test]
        fn names_round_trip(grants in proptest::collection::vec(any_grant(), 0..6)) {
            let set = ScopeSet::new(grants);
            let reparsed: ScopeSet = set.names().join(",").parse().unwrap();
            prop_assert_eq!(reparsed, set);
        }

        #[test]
        fn adding_a_grant_never_removes_a_scope(grants in proptest::collection::vec(any_grant(), 0..6), extra in any_grant()) {
            let before = ScopeSet::new(grants.clone());
            let mut more = grants;
            more.push(extra);
            let after = ScopeSet::new(more);
            for scope in Scope::ALL {
                prop_assert!(!before.allows(scope) || after.allows(scope));
            }
        }
    }
}
