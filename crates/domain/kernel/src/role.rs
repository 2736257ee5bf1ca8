//! What a person may do in an account: the role of their membership, and the scopes it
//! confers on their signed-in sessions.
//!
//! Every route already names the scope it requires, so a role is a scope set and the role
//! table of `docs/api.md` follows from the routes: a session is checked like a token with
//! the role's scopes. What scopes cannot say (only an owner makes or removes an owner) the
//! members service checks with [`Role::may_assign`].

use crate::scope::{Grant, Scope, ScopeSet};

crate::named_values! {
    /// A member's role in an account, from most to least powerful.
    pub enum Role (unknown: UnknownRole) {
        /// Everything, including making and removing owners. An account keeps at least one.
        Owner = "owner",
        /// Everything but the owners: members, invitations, tokens, keys, policies, audit.
        Admin = "admin",
        /// Policies (publish, revoke, revert), publisher keys, metrics: the seed's
        /// "developer or admin" routes.
        Developer = "developer",
        /// Read-only: policies, metrics and the member list.
        Member = "member",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: use owner, admin, developer or member")]
pub struct UnknownRole(pub String);

impl Role {
    const DEVELOPER_SCOPES: [Scope; 7] = [
        Scope::PolicyRead,
        Scope::PolicyPublish,
        Scope::PolicyRevoke,
        Scope::PolicyRevert,
        Scope::KeyUpload,
        Scope::MetricsRead,
        Scope::MembersRead,
    ];
    const MEMBER_SCOPES: [Scope; 3] = [Scope::PolicyRead, Scope::MetricsRead, Scope::MembersRead];

    /// The scopes a session of this role holds.
    pub fn scopes(self) -> ScopeSet {
        match self {
            Role::Owner | Role::Admin => ScopeSet::all(),
            Role::Developer => ScopeSet::new(Self::DEVELOPER_SCOPES.map(Grant::Scope)),
            Role::Member => ScopeSet::new(Self::MEMBER_SCOPES.map(Grant::Scope)),
        }
    }

    /// Does this role rank at least as high as `other`?
    pub fn outranks_or_equals(self, other: Role) -> bool {
        // Declared from most to least powerful.
        self <= other
    }

    /// May a member of this role give `to` to someone, or change or remove a member who
    /// holds `from`? Admins manage everyone but owners; only owners manage owners.
    pub fn may_assign(self, from: Role, to: Role) -> bool {
        match self {
            Role::Owner => true,
            Role::Admin => from != Role::Owner && to != Role::Owner,
            Role::Developer | Role::Member => false,
        }
    }

    /// The lower of two roles (a session capped by its identity provider's claim).
    pub fn lower(self, other: Role) -> Role {
        self.max(other)
    }

    /// The role an identity provider's role claim names: D2's own names, or the seed's
    /// `Admin`, `Developer` and `User`, in any case. `None` for anything else.
    pub fn from_claim(claim: &str) -> Option<Role> {
        match claim.trim().to_ascii_lowercase().as_str() {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "developer" | "dev" => Some(Role::Developer),
            "member" | "user" => Some(Role::Member),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_confer_scopes_from_everything_to_read_only() {
        for scope in Scope::ALL {
            assert!(Role::Owner.scopes().allows(scope));
            assert!(Role::Admin.scopes().allows(scope));
        }
        let developer = Role::Developer.scopes();
        assert!(developer.allows(Scope::PolicyPublish));
        assert!(developer.allows(Scope::MetricsRead), "granted explicitly");
        assert!(!developer.allows(Scope::Admin));
        assert!(!developer.allows(Scope::EventIngest));
        let member = Role::Member.scopes();
        assert!(member.allows(Scope::PolicyRead));
        assert!(!member.allows(Scope::PolicyPublish));
        assert!(!member.allows(Scope::KeyUpload));
    }

    #[test]
    fn only_owners_manage_owners_and_only_admins_manage_anyone() {
        assert!(Role::Owner.may_assign(Role::Owner, Role::Member));
        assert!(Role::Owner.may_assign(Role::Member, Role::Owner));
        assert!(Role::Admin.may_assign(Role::Member, Role::Admin));
        assert!(!Role::Admin.may_assign(Role::Member, Role::Owner));
        assert!(!Role::Admin.may_assign(Role::Owner, Role::Admin));
        assert!(!Role::Developer.may_assign(Role::Member, Role::Member));
        assert!(!Role::Member.may_assign(Role::Member, Role::Member));
    }

    #[test]
    fn claims_cap_and_name_roles() {
        assert_eq!(Role::Owner.lower(Role::Developer), Role::Developer);
        assert_eq!(Role::Member.lower(Role::Admin), Role::Member);
        assert!(Role::Admin.outranks_or_equals(Role::Developer));
        assert!(!Role::Member.outranks_or_equals(Role::Developer));
        assert_eq!(Role::from_claim("Admin"), Some(Role::Admin));
        assert_eq!(Role::from_claim("User"), Some(Role::Member));
        assert_eq!(Role::from_claim("DEVELOPER"), Some(Role::Developer));
        assert_eq!(Role::from_claim("root"), None);
        assert_eq!("developer".parse::<Role>(), Ok(Role::Developer));
        assert!(
            "dev".parse::<Role>().is_err(),
            "the API speaks only the four names"
        );
    }
}
