//! Rules of the token domain, tested against the in-memory ports.

use std::sync::Arc;

use chrono::Duration;
use d2_accounts::memory::MemoryAccountRepo;
use d2_audit::AuditAction;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{
    AccountId, AppName, AuthContext, Clock, Code, ErrorCode, ManualClock, PageRequest, Scope,
};

use crate::memory::MemoryStore;
use crate::*;

mod people;

struct World {
    clock: Arc<ManualClock>,
    audit: Arc<MemoryAuditLog>,
    repo: Arc<MemoryStore>,
    verifier: Arc<TokenVerifier>,
    tokens: TokenService,
    bootstrap: BootstrapService,
}

const CONTROL_PLANE: &str = "control-plane-secret-for-tests";

fn world() -> World {
    let clock = Arc::new(ManualClock::starting_now());
    let audit = Arc::new(MemoryAuditLog::default());
    let accounts = Arc::new(MemoryAccountRepo::new(audit.clone()));
    let repo = Arc::new(MemoryStore::new(accounts.clone()));
    let pepper = Arc::new(Pepper::new(&[9; 32]).unwrap());
    let verifier = Arc::new(TokenVerifier::new(
        repo.clone(),
        pepper.clone(),
        clock.clone(),
        CacheSettings::default(),
    ));
    let entitlements = d2_accounts::AccountService::new(
        accounts.clone(),
        Arc::new(d2_kernel::PlanCatalog::default()),
        Arc::new(d2_accounts::SamplingPolicy::default()),
        clock.clone(),
        CacheSettings::default(),
    );
    let tokens = TokenService::new(
        repo.clone(),
        verifier.clone(),
        pepper.clone(),
        clock.clone(),
        Arc::new(entitlements),
        Duration::minutes(10),
    );
    let bootstrap = BootstrapService::new(
        Some(ControlPlaneSecret::new(CONTROL_PLANE).unwrap()),
        repo.clone(),
        accounts,
        repo.clone(),
        pepper,
        clock.clone(),
        14,
    );
    World {
        clock,
        audit,
        repo,
        verifier,
        tokens,
        bootstrap,
    }
}

impl World {
    async fn admin(&self) -> (Arc<AuthContext>, String) {
        let done = self
            .bootstrap
            .issue(Some(CONTROL_PLANE), BootstrapRequest::default())
            .await
            .unwrap();
        let secret = done.issued.secret.expose().to_owned();
        (self.verifier.verify(&secret).await.unwrap(), secret)
    }

    async fn issue(&self, admin: &AuthContext, grant: TokenGrant) -> String {
        let request = TokenRequest {
            name: None,
            grant,
            app_name: None,
            expires_at: None,
            assigned_to: None,
        };
        let issued = self
            .tokens
            .create(admin, admin.account_id, request)
            .await
            .unwrap();
        issued.secret.expose().to_owned()
    }
}

#[tokio::test]
async fn bootstrap_needs_the_control_plane_token_and_writes_everything_with_one_audit_record() {
    let w = world();
    let wrong = w
        .bootstrap
        .issue(Some("nope"), BootstrapRequest::default())
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidControlPlaneToken);
    let missing = w
        .bootstrap
        .issue(None, BootstrapRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidControlPlaneToken);
    assert!(w.audit.all().is_empty());

    let (admin, _) = w.admin().await;
    for scope in Scope::ALL {
        assert!(admin.scopes.allows(scope), "{scope}");
    }
    let records = w.audit.all();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].entry.action, AuditAction::AccountBootstrap);
    assert_eq!(records[0].entry.actor, "control_plane");
}

#[tokio::test]
async fn bootstrap_is_disabled_without_a_secret_and_break_glass_needs_a_real_account() {
    let w = world();
    let disabled = BootstrapService::new(
        None,
        w.repo.clone(),
        Arc::new(MemoryAccountRepo::new(w.audit.clone())),
        w.repo.clone(),
        Arc::new(Pepper::new(&[1; 32]).unwrap()),
        w.clock.clone(),
        14,
    );
    let error = disabled
        .issue(Some(CONTROL_PLANE), BootstrapRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::BootstrapDisabled);

    let unknown = BootstrapRequest {
        account_id: Some(AccountId::random()),
        ..BootstrapRequest::default()
    };
    let error = w
        .bootstrap
        .issue(Some(CONTROL_PLANE), unknown)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::AccountNotFound);

    let (admin, _) = w.admin().await;
    let again = BootstrapRequest {
        account_id: Some(admin.account_id),
        ..BootstrapRequest::default()
    };
    let glass = w.bootstrap.issue(Some(CONTROL_PLANE), again).await.unwrap();
    assert!(!glass.created_account);
    assert_eq!(glass.user_id, admin.user_id);
    assert_eq!(
        w.audit.all().last().unwrap().entry.action,
        AuditAction::TokenBreakGlass
    );
}

#[tokio::test]
async fn malformed_tokens_never_reach_the_store() {
    let w = world();
    for bad in [
        "",
        "Bearer",
        "d2_short",
        "not-a-token-at-all-but-quite-long-enough-to-look-real-xx",
    ] {
        assert!(matches!(
            w.verifier.verify(bad).await,
            Err(AuthError::Malformed)
        ));
    }
    assert_eq!(w.repo.lookups(), 0);
    let unknown = TokenSecret::generate().unwrap();
    assert!(matches!(
        w.verifier.verify(unknown.expose()).await,
        Err(AuthError::Unknown)
    ));
    assert_eq!(w.repo.lookups(), 1);
    // The miss is cached as well.
    assert!(matches!(
        w.verifier.verify(unknown.expose()).await,
        Err(AuthError::Unknown)
    ));
    assert_eq!(w.repo.lookups(), 1);
}

#[tokio::test]
async fn verification_is_cached_and_revocation_takes_effect_at_once() {
    let w = world();
    let (admin, _) = w.admin().await;
    let dev = w.issue(&admin, TokenGrant::Dev).await;
    let before = w.repo.lookups();
    let ctx = w.verifier.verify(&dev).await.unwrap();
    w.verifier.verify(&dev).await.unwrap();
    assert_eq!(w.repo.lookups(), before + 1);
    assert!(w.verifier.stats().hits >= 1);

    let token_id = ctx.token_id().unwrap();
    assert_eq!(
        w.tokens
            .revoke(&admin, admin.account_id, token_id)
            .await
            .unwrap(),
        Revocation::Revoked
    );
    assert!(matches!(
        w.verifier.verify(&dev).await,
        Err(AuthError::Revoked)
    ));
    assert_eq!(
        w.tokens
            .revoke(&admin, admin.account_id, token_id)
            .await
            .unwrap(),
        Revocation::WasAlreadyRevoked
    );
    let revokes = w
        .audit
        .all()
        .iter()
        .filter(|r| r.entry.action == AuditAction::TokenRevoke)
        .count();
    assert_eq!(revokes, 1, "a repeated revoke writes nothing");
}

#[tokio::test]
async fn rotation_keeps_the_old_token_for_the_grace_period_only() {
    let w = world();
    let (admin, _) = w.admin().await;
    let server = {
        let request = TokenRequest {
            name: Some("billing".into()),
            grant: TokenGrant::Server,
            app_name: Some(AppName::normalise("billing agent")),
            expires_at: None,
            assigned_to: None,
        };
        w.tokens
            .create(&admin, admin.account_id, request)
            .await
            .unwrap()
    };
    let old_secret = server.secret.expose().to_owned();
    w.verifier.verify(&old_secret).await.unwrap();

    let rotation = w
        .tokens
        .rotate(&admin, admin.account_id, server.token.id)
        .await
        .unwrap();
    assert_eq!(
        rotation.issued.token.app_name.as_ref().unwrap().as_str(),
        "billing_agent"
    );
    assert_eq!(rotation.issued.token.kind, TokenKind::Server);
    assert_eq!(
        rotation.previous_valid_until(),
        Some(w.clock.now() + Duration::minutes(10))
    );
    let new_secret = rotation.issued.secret.expose().to_owned();

    w.clock.advance(Duration::minutes(9));
    assert!(
        w.verifier.verify(&old_secret).await.is_ok(),
        "inside the grace period"
    );
    w.clock.advance(Duration::minutes(2));
    assert!(matches!(
        w.verifier.verify(&old_secret).await,
        Err(AuthError::Expired)
    ));
    assert!(w.verifier.verify(&new_secret).await.is_ok());

    let again = w
        .tokens
        .rotate(&admin, admin.account_id, server.token.id)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::TokenAlreadyExpired);
}

#[tokio::test]
async fn a_rotated_token_cannot_be_rotated_twice_and_revoked_ones_not_at_all() {
    let w = world();
    let (admin, _) = w.admin().await;
    let dev = w.issue(&admin, TokenGrant::Dev).await;
    let ctx = w.verifier.verify(&dev).await.unwrap();
    w.tokens.rotate_own(&ctx).await.unwrap();
    assert_eq!(
        w.tokens.rotate_own(&ctx).await.unwrap_err().code(),
        Code::TokenAlreadyRotated
    );

    let other = w.issue(&admin, TokenGrant::Dev).await;
    let other_ctx = w.verifier.verify(&other).await.unwrap();
    w.tokens.revoke_own(&other_ctx).await.unwrap();
    assert_eq!(
        w.tokens.rotate_own(&other_ctx).await.unwrap_err().code(),
        Code::TokenAlreadyRevoked
    );
}

#[tokio::test]
async fn management_needs_admin_of_the_same_account() {
    let w = world();
    let (admin, _) = w.admin().await;
    let (stranger, _) = w.admin().await;
    let dev = w.issue(&admin, TokenGrant::Dev).await;
    let dev_ctx = w.verifier.verify(&dev).await.unwrap();
    let page = PageRequest::first(10);

    let denied = w
        .tokens
        .list(&dev_ctx, admin.account_id, &page)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::InsufficientScope);
    let mismatch = w
        .tokens
        .list(&stranger, admin.account_id, &page)
        .await
        .unwrap_err();
    assert_eq!(mismatch.code(), Code::AccountMismatch);
    let mismatch = w
        .tokens
        .revoke(&stranger, admin.account_id, dev_ctx.token_id().unwrap())
        .await
        .unwrap_err();
    assert_eq!(mismatch.code(), Code::AccountMismatch);
    // A stranger naming a token of another account under their own account finds nothing.
    let hidden = w
        .tokens
        .revoke(&stranger, stranger.account_id, dev_ctx.token_id().unwrap())
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::TokenNotFound);
    assert!(w.verifier.verify(&dev).await.is_ok());
}

#[tokio::test]
async fn requests_are_validated_before_anything_is_written() {
    let w = world();
    let (admin, _) = w.admin().await;
    let records = w.audit.all().len();
    let cases = [
        (
            TokenRequest {
                name: None,
                grant: TokenGrant::Scopes(vec![]),
                app_name: None,
                expires_at: None,
                assigned_to: None,
            },
            Code::InvalidTokenRequest,
        ),
        (
            TokenRequest {
                name: None,
                grant: TokenGrant::Dev,
                app_name: Some(AppName::normalise("x")),
                expires_at: None,
                assigned_to: None,
            },
            Code::InvalidTokenRequest,
        ),
        (
            TokenRequest {
                name: Some("n".repeat(101)),
                grant: TokenGrant::Dev,
                app_name: None,
                expires_at: None,
                assigned_to: None,
            },
            Code::InvalidTokenRequest,
        ),
        (
            TokenRequest {
                name: None,
                grant: TokenGrant::Dev,
                app_name: None,
                expires_at: Some(w.clock.now()),
                assigned_to: None,
            },
            Code::InvalidExpiry,
        ),
    ];
    for (request, code) in cases {
        let error = w
            .tokens
            .create(&admin, admin.account_id, request)
            .await
            .unwrap_err();
        assert_eq!(error.code(), code);
    }
    assert_eq!(w.audit.all().len(), records);
}

#[tokio::test]
async fn custom_scopes_and_expiry_are_honoured() {
    let w = world();
    let (admin, _) = w.admin().await;
    let request = TokenRequest {
        name: Some("dashboard".into()),
        grant: TokenGrant::Scopes(vec![Scope::MetricsRead]),
        app_name: None,
        expires_at: Some(w.clock.now() + Duration::hours(1)),
        assigned_to: None,
    };
    let issued = w
        .tokens
        .create(&admin, admin.account_id, request)
        .await
        .unwrap();
    let ctx = w.verifier.verify(issued.secret.expose()).await.unwrap();
    assert!(ctx.scopes.allows(Scope::MetricsRead));
    assert!(!ctx.scopes.allows(Scope::PolicyRead));
    w.clock.advance(Duration::hours(1));
    assert!(matches!(
        w.verifier.verify(issued.secret.expose()).await,
        Err(AuthError::Expired)
    ));
}

#[tokio::test]
async fn lists_page_newest_first() {
    let w = world();
    let (admin, _) = w.admin().await;
    for _ in 0..4 {
        w.clock.advance(Duration::seconds(1));
        w.issue(&admin, TokenGrant::Dev).await;
    }
    let first = w
        .tokens
        .list(&admin, admin.account_id, &PageRequest::first(3))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(
        first
            .items
            .windows(2)
            .all(|p| p[0].token.created_at >= p[1].token.created_at)
    );
    let cursor = first.next.unwrap().encode();
    let rest = w
        .tokens
        .list(
            &admin,
            admin.account_id,
            &PageRequest::parse(Some(3), Some(&cursor)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2, "four issued plus the bootstrap token");
    assert!(rest.next.is_none());
}

#[tokio::test]
async fn the_expiry_job_revokes_expired_tokens_at_their_expiry_in_batches() {
    let w = world();
    let (admin, admin_secret) = w.admin().await;
    let start = w.clock.now();
    let expiring_at = |at| TokenRequest {
        name: Some("ci".into()),
        grant: TokenGrant::Dev,
        app_name: None,
        expires_at: Some(at),
        assigned_to: None,
    };
    let mut expiring = Vec::new();
    for _ in 0..3 {
        let issued = w
            .tokens
            .create(
                &admin,
                admin.account_id,
                expiring_at(start + Duration::hours(1)),
            )
            .await
            .unwrap();
        expiring.push(issued);
    }
    let rotated_secret = w.issue(&admin, TokenGrant::Dev).await;
    let rotated = w.verifier.verify(&rotated_secret).await.unwrap();
    let rotation = w.tokens.rotate_own(&rotated).await.unwrap();
    let revoked = w
        .tokens
        .create(
            &admin,
            admin.account_id,
            expiring_at(start + Duration::hours(1)),
        )
        .await
        .unwrap();
    w.tokens
        .revoke(&admin, admin.account_id, revoked.token.id)
        .await
        .unwrap();
    let lasting = w
        .tokens
        .create(
            &admin,
            admin.account_id,
            expiring_at(start + Duration::days(1)),
        )
        .await
        .unwrap();

    assert_eq!(
        w.tokens.enforce_expiry().await.unwrap(),
        0,
        "nothing expired yet"
    );

    w.clock.advance(Duration::hours(2));
    let mut stale: Vec<&str> = expiring.iter().map(|t| t.secret.expose()).collect();
    stale.push(&rotated_secret);
    for secret in &stale {
        assert!(matches!(
            w.verifier.verify(secret).await,
            Err(AuthError::Expired)
        ));
    }
    let lookups = w.repo.lookups();
    let records = w.audit.all().len();

    // Four expired tokens (one of them rotated) in batches of two: the service loops.
    assert_eq!(w.tokens.enforce_expiry_in_batches(2).await.unwrap(), 4);

    for issued in &expiring {
        let stored = w
            .repo
            .find_token(admin.account_id, issued.token.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.revoked_at, stored.expires_at);
        assert_eq!(stored.expires_at, Some(start + Duration::hours(1)));
    }
    let previous = w
        .repo
        .find_token(admin.account_id, rotation.previous.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        previous.revoked_at,
        Some(start + Duration::minutes(10)),
        "a rotated token is finished when its grace ended"
    );
    let stored_revoked = w
        .repo
        .find_token(admin.account_id, revoked.token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored_revoked.revoked_at,
        Some(start),
        "its own revocation is kept"
    );

    // The cached verdicts were dropped, and the stored rows give the same answer.
    for secret in &stale {
        assert!(matches!(
            w.verifier.verify(secret).await,
            Err(AuthError::Expired)
        ));
    }
    assert_eq!(w.repo.lookups(), lookups + 4, "read again after the job");
    assert!(matches!(
        w.verifier.verify(revoked.secret.expose()).await,
        Err(AuthError::Revoked)
    ));
    assert!(w.verifier.verify(lasting.secret.expose()).await.is_ok());
    assert!(w.verifier.verify(&admin_secret).await.is_ok());
    assert!(
        w.verifier
            .verify(rotation.issued.secret.expose())
            .await
            .is_ok()
    );
    let again = w
        .tokens
        .rotate(&admin, admin.account_id, expiring[0].token.id)
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        Code::TokenAlreadyExpired,
        "still expired, not revoked"
    );

    let all = w.audit.all();
    assert_eq!(all.len(), records + 4);
    let expiries: Vec<_> = all
        .iter()
        .filter(|r| r.entry.action == AuditAction::TokenExpire)
        .map(|r| &r.entry)
        .collect();
    assert_eq!(expiries.len(), 4);
    for entry in &expiries {
        assert_eq!(entry.account_id, admin.account_id);
        assert_eq!(entry.actor, "system");
        assert_eq!(entry.token_id, None);
        assert_eq!(entry.occurred_at, w.clock.now());
        assert_eq!(entry.resource_type.as_deref(), Some("token"));
        assert_eq!(entry.metadata["reason"], "expired");
        assert!(entry.metadata["expired_at"].is_string());
    }
    let mut audited: Vec<String> = expiries
        .iter()
        .filter_map(|e| e.resource_id.clone())
        .collect();
    audited.sort();
    let mut expected: Vec<String> = expiring
        .iter()
        .map(|t| t.token.id.to_string())
        .chain([rotation.previous.id.to_string()])
        .collect();
    expected.sort();
    assert_eq!(audited, expected);

    assert_eq!(w.tokens.enforce_expiry().await.unwrap(), 0, "a second run");
    assert_eq!(w.audit.all().len(), records + 4);
}

#[tokio::test]
async fn a_chain_revoke_follows_every_rotation_and_a_plain_revoke_keeps_the_replacement() {
    let w = world();
    let (admin, _) = w.admin().await;
    let first = w.issue(&admin, TokenGrant::Server).await;
    let first_ctx = w.verifier.verify(&first).await.unwrap();
    let first_id = first_ctx.token_id().unwrap();
    let second = w
        .tokens
        .rotate(&admin, admin.account_id, first_id)
        .await
        .unwrap();
    let third = w
        .tokens
        .rotate(&admin, admin.account_id, second.issued.token.id)
        .await
        .unwrap();
    let third_secret = third.issued.secret.expose().to_owned();

    // A plain revoke of the first: its replacements keep working.
    w.tokens
        .revoke(&admin, admin.account_id, first_id)
        .await
        .unwrap();
    assert!(w.verifier.verify(&third_secret).await.is_ok());

    // The chain: everything after it too, once; again, nothing more.
    let revoked = w
        .tokens
        .revoke_chain(&admin, admin.account_id, first_id)
        .await
        .unwrap();
    assert_eq!(revoked, [second.issued.token.id, third.issued.token.id]);
    assert_eq!(
        w.verifier.verify(&third_secret).await.unwrap_err().code(),
        Code::TokenRevoked
    );
    assert!(
        w.tokens
            .revoke_chain(&admin, admin.account_id, first_id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn only_admin_and_dev_tokens_rotate_themselves() {
    let w = world();
    let (admin, _) = w.admin().await;
    for grant in [TokenGrant::Dev, TokenGrant::Admin] {
        let secret = w.issue(&admin, grant).await;
        let ctx = w.verifier.verify(&secret).await.unwrap();
        w.tokens.rotate_own(&ctx).await.unwrap();
    }
    let server = w.issue(&admin, TokenGrant::Server).await;
    let ctx = w.verifier.verify(&server).await.unwrap();
    assert_eq!(
        w.tokens.rotate_own(&ctx).await.unwrap_err().code(),
        Code::SelfRotationRefused
    );
    assert!(w.verifier.verify(&server).await.is_ok(), "nothing changed");
}
