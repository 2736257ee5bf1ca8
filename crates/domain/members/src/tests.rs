//! The members service and sessions on the in-memory store, with an identity provider
//! that vouches for whatever it was told to (the provider itself is tested in d2-oidc).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Duration;
use d2_accounts::memory::MemoryAccountRepo;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{
    AccountId, CacheSettings, Change, ChangeSubscriber, Clock, Code, Credential, ErrorCode,
    ManualClock, Pepper, Role, Scope,
};

use crate::memory::MemoryMembers;
use crate::ports::{IdentityError, IdentityProvider, MemberRepo, VerifiedIdentity};
use crate::service::{MemberError, MembersService};
use crate::sessions::SessionVerifier;
use crate::user::Identity;

/// Vouches for the tokens it was given, counting every verification.
#[derive(Default)]
struct Provider {
    tokens: Mutex<HashMap<String, VerifiedIdentity>>,
    calls: AtomicUsize,
}

#[async_trait]
impl IdentityProvider for Provider {
    async fn verify(&self, token: &str) -> Result<VerifiedIdentity, IdentityError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.tokens
            .lock()
            .unwrap()
            .get(token)
            .cloned()
            .ok_or(IdentityError::Invalid("unknown signing key"))
    }
}

struct World {
    provider: Arc<Provider>,
    store: Arc<MemoryMembers>,
    clock: Arc<ManualClock>,
    sessions: Arc<SessionVerifier>,
    service: MembersService,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::starting_now());
    let accounts = Arc::new(MemoryAccountRepo::new(Arc::new(MemoryAuditLog::default())));
    let store = Arc::new(MemoryMembers::new(accounts));
    let provider = Arc::new(Provider::default());
    let sessions = Arc::new(SessionVerifier::new(
        provider.clone(),
        store.clone(),
        Arc::new(Pepper::new(&[4; 32]).unwrap()),
        clock.clone(),
        CacheSettings::default(),
    ));
    let service = MembersService::new(store.clone(), Some(sessions.clone()), clock.clone(), 14);
    World {
        provider,
        store,
        clock,
        sessions,
        service,
    }
}

impl World {
    /// A token the provider vouches for, valid an hour.
    fn token(&self, subject: &str, role_cap: Option<Role>) -> String {
        let token = format!(
            "jwt-of-{subject}-{}",
            self.provider.tokens.lock().unwrap().len()
        );
        let identity = Identity {
            issuer: "https://idp.test".into(),
            subject: subject.into(),
            email: Some(format!("{subject}@people.test")),
            email_verified: true,
            display_name: Some(subject.into()),
            role_cap,
        };
        self.provider.tokens.lock().unwrap().insert(
            token.clone(),
            VerifiedIdentity {
                identity,
                expires_at: d2_kernel::later(self.clock.now(), Duration::hours(1)),
            },
        );
        token
    }
}

#[tokio::test]
async fn a_session_is_verified_once_then_served_from_memory_until_its_expiry() {
    let w = world();
    let token = w.token("ada", None);
    let ada = w.sessions.sign_in(&token).await.unwrap();
    let account = w
        .service
        .create_account(ada.user_id, "Ada's")
        .await
        .unwrap();

    assert!(
        w.sessions
            .authenticate_cached(&token, account.id)
            .await
            .is_none()
    );
    let session = w.sessions.authenticate(&token, account.id).await.unwrap();
    assert_eq!(session.credential, Credential::UserSession(ada.user_id));
    assert_eq!(session.role, Some(Role::Owner));
    assert!(session.scopes.allows(Scope::Admin));
    for _ in 0..3 {
        let cached = w
            .sessions
            .authenticate_cached(&token, account.id)
            .await
            .unwrap();
        assert_eq!(cached.unwrap(), session);
    }
    assert_eq!(w.provider.calls.load(Ordering::Relaxed), 1, "verified once");

    w.clock.advance(Duration::hours(1));
    let expired = w
        .sessions
        .authenticate_cached(&token, account.id)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(expired.code(), Code::TokenExpired);
    assert_eq!(
        w.sessions
            .authenticate(&token, account.id)
            .await
            .unwrap_err()
            .code(),
        Code::TokenExpired
    );
}

#[tokio::test]
async fn a_membership_change_reaches_cached_sessions_and_a_role_claim_caps_them() {
    let w = world();
    let owner = w.sessions.sign_in(&w.token("olive", None)).await.unwrap();
    let account = w
        .service
        .create_account(owner.user_id, "Team")
        .await
        .unwrap();
    let dev_token = w.token("dev", Some(Role::Member));
    let dev = w.sessions.sign_in(&dev_token).await.unwrap();
    let audit = d2_audit::AuditEntry::system(
        account.id,
        d2_audit::AuditAction::MemberRoleChange,
        w.clock.now(),
    );
    w.store
        .add_member(account.id, dev.user_id, Role::Admin, &audit)
        .await
        .unwrap();
    w.sessions
        .on_change(&Change::Member(account.id, dev.user_id));

    let capped = w
        .sessions
        .authenticate(&dev_token, account.id)
        .await
        .unwrap();
    assert_eq!(
        capped.role,
        Some(Role::Member),
        "the provider's claim caps an admin"
    );
    assert!(!capped.scopes.allows(Scope::Admin));

    // Another replica removed them: the announcement drops the cached session.
    let owner_session = w
        .sessions
        .authenticate(&w.token("olive", None), account.id)
        .await
        .unwrap();
    w.service
        .remove(&owner_session, account.id, dev.user_id)
        .await
        .unwrap();
    w.sessions
        .on_change(&Change::Member(account.id, dev.user_id));
    assert!(
        w.sessions
            .authenticate_cached(&dev_token, account.id)
            .await
            .is_none()
    );
    let refused = w
        .sessions
        .authenticate(&dev_token, account.id)
        .await
        .unwrap_err();
    assert!(matches!(refused, MemberError::NotAMember));
    assert_eq!(
        w.sessions
            .authenticate(&dev_token, AccountId::random())
            .await
            .unwrap_err()
            .code(),
        Code::NotAMember
    );
}

#[tokio::test]
async fn owners_alone_manage_owners_and_the_last_one_stays() {
    let w = world();
    let owner_token = w.token("olive", None);
    let owner = w.sessions.sign_in(&owner_token).await.unwrap();
    let account = w
        .service
        .create_account(owner.user_id, "Team")
        .await
        .unwrap();
    let admin_token = w.token("adam", None);
    let admin = w.sessions.sign_in(&admin_token).await.unwrap();
    let audit = d2_audit::AuditEntry::system(
        account.id,
        d2_audit::AuditAction::MemberRoleChange,
        w.clock.now(),
    );
    w.store
        .add_member(account.id, admin.user_id, Role::Admin, &audit)
        .await
        .unwrap();
    let as_owner = w
        .sessions
        .authenticate(&owner_token, account.id)
        .await
        .unwrap();
    let as_admin = w
        .sessions
        .authenticate(&admin_token, account.id)
        .await
        .unwrap();

    let error = w
        .service
        .change_role(&as_admin, account.id, owner.user_id, Role::Member)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::OwnerRequired);
    let error = w
        .service
        .change_role(&as_owner, account.id, owner.user_id, Role::Admin)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::LastOwner);
    let error = w
        .service
        .remove(&as_owner, account.id, owner.user_id)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::LastOwner);
    let promoted = w
        .service
        .change_role(&as_owner, account.id, admin.user_id, Role::Owner)
        .await
        .unwrap();
    assert_eq!(promoted.role, Role::Owner);
    // The service dropped the promoted admin's cached session itself.
    let now_owner = w
        .sessions
        .authenticate(&admin_token, account.id)
        .await
        .unwrap();
    assert_eq!(now_owner.role, Some(Role::Owner));
    assert_eq!(
        w.service
            .members(&as_owner, account.id)
            .await
            .unwrap()
            .len(),
        2
    );
}
