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

/// What delegation grants name in one account: three agents and a principal.
#[derive(Clone, Copy, Debug)]
pub struct Parties {
    pub account: AccountId,
    pub agents: [d2_oauth::AgentId; 3],
    pub principal: d2_oauth::PrincipalId,
}

impl Parties {
    /// Ids only, for a store that holds no agents or principals (the in-memory one).
    pub fn unstored(account: AccountId) -> Self {
        Self {
            account,
            agents: [(); 3].map(|()| d2_oauth::AgentId::random()),
            principal: d2_oauth::PrincipalId::random(),
        }
    }

    /// Three agents and a principal of `account`, stored.
    pub async fn stored(
        store: &(impl d2_oauth::AgentRepo + d2_oauth::PrincipalRepo),
        account: AccountId,
    ) -> Self {
        let mut agents = Vec::new();
        for name in ["planner", "researcher", "writer"] {
            let spec = d2_oauth::AgentSpec {
                name: name.to_owned(),
                description: None,
                scopes: vec!["reports.read".into()],
                redirect_uris: vec![],
                resources: vec![],
                attributes: serde_json::Map::new(),
                auth_method: d2_oauth::AuthMethod::ClientSecretBasic,
                jwks: None,
                jwks_uri: None,
                access_token_seconds: 600,
                refresh_token_seconds: None,
            };
            let agent = d2_oauth::Agent::new(account, spec, None, at(0));
            let registration = d2_oauth::PendingRegistration::new(
                pepper().digest_text(&format!("{account}:{name}")),
                at(0),
            );
            let entry = AuditEntry::system(account, AuditAction::AgentRegister, at(0));
            store
                .register(&agent, &registration, &entry)
                .await
                .unwrap_or_else(|e| panic!("register: {e}"));
            agents.push(agent.id);
        }
        let principal = d2_oauth::Principal::new(
            account,
            d2_oauth::PrincipalSpec {
                username: "ada".into(),
                email: None,
                display_name: None,
                attributes: serde_json::Map::new(),
                active: true,
            },
            at(0),
        );
        let entry = AuditEntry::system(account, AuditAction::PrincipalCreate, at(0));
        store
            .create_principal(&principal, &entry)
            .await
            .unwrap_or_else(|e| panic!("principal: {e}"));
        let [first, second, third] = agents[..] else {
            unreachable!("three agents were registered")
        };
        Self {
            account,
            agents: [first, second, third],
            principal: principal.id,
        }
    }
}

/// How many audit records of `action` the store holds for `account`.
pub async fn audited(
    store: &dyn d2_audit::AuditLog,
    account: AccountId,
    action: AuditAction,
) -> usize {
    let filter = d2_audit::AuditFilter {
        action: Some(action),
        ..d2_audit::AuditFilter::default()
    };
    store
        .search(account, &filter, &d2_kernel::PageRequest::first(1000))
        .await
        .unwrap_or_else(|e| panic!("audit: {e}"))
        .items
        .len()
}
