//! People: a user is a person, found by their identity provider's issuer and subject, and a
//! member is a user's membership of one account, with its role.

use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, Role, UserId};

/// A person known to D2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Option<String>,
    /// Whether the identity provider asserted `email` verified at the last sign-in.
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub full_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

impl User {
    /// A person created with an account by the control plane (bootstrap), not signed in
    /// yet: their first sign-in with this (verified) email claims them.
    pub fn invited_owner(email: Option<String>, name: Option<String>, now: DateTime<Utc>) -> Self {
        Self {
            id: UserId::random(),
            email,
            email_verified: false,
            display_name: name.clone(),
            full_name: name,
            created_at: now,
            last_sign_in_at: None,
        }
    }

    /// How lists show this person: display name, else full name, else email.
    pub fn label(&self) -> Option<&str> {
        person_label(
            self.display_name.as_deref(),
            self.full_name.as_deref(),
            self.email.as_deref(),
        )
    }
}

/// How lists show a person with these names ([`User::label`]), for stores that read the
/// names without the rest of the person.
pub fn person_label<'a>(
    display_name: Option<&'a str>,
    full_name: Option<&'a str>,
    email: Option<&'a str>,
) -> Option<&'a str> {
    display_name.or(full_name).or(email)
}

/// What an identity provider's verified token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The provider's `iss`.
    pub issuer: String,
    /// The provider's `sub`: with `issuer`, who the person is.
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    /// The role claim, when the provider sends one: it caps the role of every session (see
    /// [`Role::lower`]); a value naming no role caps at [`Role::Member`].
    pub role_cap: Option<Role>,
}

/// A person's membership of an account, as the account's member list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub account_id: AccountId,
    pub user: User,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

/// One of a person's memberships, as `GET /v1/users/me` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub account_id: AccountId,
    pub account_name: String,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}
