//! The test data the suites share, public for the adapters' own tests: a fixed clock, a
//! pepper, tokens, tenants, people and events. Each builder panics when a store refuses
//! what it writes: a fixture that cannot be made is a failed test.

#![expect(clippy::panic, reason = "a fixture that cannot be made fails its test")]

use chrono::{DateTime, Utc};
use d2_accounts::{Account, AccountName};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, Pepper, Role, UserId};
use d2_members::{Identity, MemberRepo, User};
use d2_tokens::{BootstrapRepo, NewToken, TokenGrant, TokenRequest};

/// Events as ingest would have stored them, and the start of the window they fall in.
pub use d2_events::sample::{event, t0};

/// The fixed clock of the suites: `seconds` after 2027-01-15T08:00:00Z.
pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000_i64.saturating_add(seconds), 0).unwrap_or_default()
}

/// The pepper the fixtures digest secrets with.
pub fn pepper() -> Pepper {
    Pepper::new(&[5; 32]).unwrap_or_else(|_| unreachable!("32 bytes are a pepper"))
}

/// A token of `account_id` with `grant`, named `contract`, minted at `created_at` as the
/// token service mints one (its secret is dropped).
pub fn token(account_id: AccountId, grant: TokenGrant, created_at: DateTime<Utc>) -> NewToken {
    let request = TokenRequest {
        name: Some("contract".into()),
        grant,
        app_name: None,
        expires_at: None,
        assigned_to: None,
    };
    let (new, _) = d2_tokens::mint(&pepper(), account_id, &request, None, created_at)
        .unwrap_or_else(|e| panic!("mint: {e}"));
    new
}

/// Stores `account` through the bootstrap port, at its creation, with its owner (named
/// Owner, `owner+<account id>@contract.test`, not signed in yet) and an admin token.
pub async fn bootstrap(store: &dyn BootstrapRepo, account: &Account) -> (User, NewToken) {
    let created = account.created_at;
    let owner = User::invited_owner(
        Some(format!("owner+{}@contract.test", account.id)),
        Some("Owner".into()),
        created,
    );
    let token = token(account.id, TokenGrant::Admin, created);
    let audit = AuditEntry::control_plane(account.id, AuditAction::AccountBootstrap, created);
    store
        .create_account(account, &owner, &token, &audit)
        .await
        .unwrap_or_else(|e| panic!("bootstrap: {e}"));
    (owner, token)
}

/// A tenant: a new trial account created at `created_at` through the bootstrap port, with
/// its owner and admin token (see [`bootstrap`]).
pub async fn tenant(
    store: &dyn BootstrapRepo,
    created_at: DateTime<Utc>,
) -> (Account, User, NewToken) {
    let account = Account::new_trial(
        AccountId::random(),
        AccountName::parse("Contract Co").unwrap_or_else(|_| unreachable!("a valid name")),
        created_at,
        14,
    );
    let (owner, token) = bootstrap(store, &account).await;
    (account, owner, token)
}

/// An identity of the test provider for `subject`, its email verified:
/// `<subject>@contract.test`, shown as `Person <subject>`.
pub fn identity(subject: &str) -> Identity {
    Identity {
        issuer: "https://idp.contract.test".into(),
        subject: subject.into(),
        email: Some(format!("{subject}@contract.test")),
        email_verified: true,
        display_name: Some(format!("Person {subject}")),
        role_cap: None,
    }
}

/// A person who signed in once, at [`at`]`(0)`, with a subject of their own (and is a
/// member of nothing).
pub async fn person(store: &dyn MemberRepo) -> User {
    sign_in(store, identity(&UserId::random().to_string())).await
}

/// A person who signed in once with these names, with a subject of their own (and is a
/// member of nothing).
pub async fn person_named(store: &dyn MemberRepo, email: &str, display_name: Option<&str>) -> User {
    let identity = Identity {
        email: Some(email.to_owned()),
        display_name: display_name.map(str::to_owned),
        ..identity(&UserId::random().to_string())
    };
    sign_in(store, identity).await
}

async fn sign_in(store: &dyn MemberRepo, identity: Identity) -> User {
    store
        .sign_in(&identity, at(0))
        .await
        .unwrap_or_else(|e| panic!("sign in: {e}"))
}

/// A new trial account named `Members Co`, created at [`at`]`(1)` by `owner`.
pub async fn account_of(store: &dyn MemberRepo, owner: UserId) -> Account {
    let account = Account::new_trial(
        AccountId::random(),
        AccountName::parse("Members Co").unwrap_or_else(|_| unreachable!("a valid name")),
        at(1),
        14,
    );
    let audit = AuditEntry::by_user(account.id, owner, AuditAction::AccountCreate, at(1));
    store
        .create_owned_account(&account, owner, &audit)
        .await
        .unwrap_or_else(|e| panic!("create account: {e}"));
    account
}

/// Makes `user`, not a member yet, a member of `account` with `role`, at [`at`]`(2)`.
pub async fn join(store: &dyn MemberRepo, account: AccountId, user: UserId, role: Role) {
    let audit = AuditEntry::by_user(account, user, AuditAction::MemberRoleChange, at(2));
    assert!(
        store
            .add_member(account, user, role, &audit)
            .await
            .unwrap_or_else(|e| panic!("add member: {e}")),
        "a new member is added"
    );
}
