//! API tokens: lookup by digest, account-scoped reads, paging, conflicts, revocation,
//! rotation and their races, the expiry job; issuing tokens for people in `issue`.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use chrono::{DateTime, Duration, Utc};
use d2_accounts::AccountRepo;
use d2_audit::{AuditAction, AuditEntry, AuditLog};
use d2_kernel::{AccountId, AppName, PageRequest, StoreError, TokenId};
use d2_members::MemberRepo;
use d2_tokens::{
    ApiToken, BootstrapRepo, NewToken, RevokeOutcome, RotateOutcome, TokenGrant, TokenKind,
    TokenRepo, TokenSecret,
};

use super::audit::{audit_count, records_of};
use crate::fixtures::{self, at, pepper, tenant};

mod issue;

pub use issue::{token_limit, token_limit_races, token_people, token_updates, token_usage};

/// Everything the suites of accounts, tokens and the audit trail need from one store.
pub trait Store: TokenRepo + BootstrapRepo + AccountRepo + MemberRepo + AuditLog {}
impl<T: TokenRepo + BootstrapRepo + AccountRepo + MemberRepo + AuditLog> Store for T {}

/// Tokens: lookup by digest, account-scoped reads, paging, conflicts, revoke, rotate.
pub async fn tokens(store: &dyn Store) {
    let (account, _, admin) = tenant(store, at(0)).await;
    let (other, _, foreign) = tenant(store, at(0)).await;

    let found = store
        .find_by_digest(&admin.digest)
        .await
        .unwrap_or_default();
    assert_eq!(found.as_ref(), Some(&admin.token));
    let unknown = pepper().digest(&TokenSecret::generate().unwrap_or_else(|_| unreachable!()));
    assert!(
        store
            .find_by_digest(&unknown)
            .await
            .is_ok_and(|t| t.is_none())
    );
    assert!(
        TokenRepo::find_token(store, other.id, admin.token.id)
            .await
            .is_ok_and(|t| t.is_none()),
        "account-scoped"
    );

    // Paging: newest first, stable across equal timestamps, nothing of the other account.
    let mut issued: Vec<ApiToken> = vec![admin.token.clone()];
    for second in 1..=5 {
        let created = at(if second == 3 { 2 } else { second });
        let mut token = fixtures::token(account.id, TokenGrant::Dev, created);
        if second == 4 {
            token.token.app_name = None;
        }
        let audit = AuditEntry::system(account.id, AuditAction::TokenCreate, created);
        store
            .insert(&token, &audit)
            .await
            .unwrap_or_else(|e| panic!("insert: {e}"));
        issued.push(token.token);
    }
    issued.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let result = TokenRepo::list_tokens(store, account.id, &page)
            .await
            .unwrap_or_else(|e| panic!("list: {e}"));
        seen.extend(result.items);
        let Some(next) = result.next else { break };
        page = PageRequest::parse(Some(2), Some(&next.encode())).unwrap_or_else(|_| unreachable!());
    }
    let seen: Vec<ApiToken> = seen.into_iter().map(|listed| listed.token).collect();
    assert_eq!(seen, issued);
    assert!(!seen.iter().any(|t| t.id == foreign.token.id));

    // A duplicate digest is a conflict and writes no audit record.
    let before = audit_count(store, account.id).await;
    let mut duplicate = fixtures::token(account.id, TokenGrant::Dev, at(9));
    duplicate.digest = admin.digest;
    let audit = AuditEntry::system(account.id, AuditAction::TokenCreate, at(9));
    assert!(matches!(
        store.insert(&duplicate, &audit).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audit_count(store, account.id).await, before);

    // Revoke: account-scoped, once.
    let target = issued
        .iter()
        .find(|t| t.kind == TokenKind::Dev)
        .cloned()
        .unwrap_or_else(|| unreachable!());
    let audit = AuditEntry::system(other.id, AuditAction::TokenRevoke, at(10));
    assert_eq!(
        store.revoke(other.id, target.id, at(10), &audit).await.ok(),
        Some(RevokeOutcome::NotFound)
    );
    let audit = AuditEntry::system(account.id, AuditAction::TokenRevoke, at(10));
    assert_eq!(
        store
            .revoke(account.id, target.id, at(10), &audit)
            .await
            .ok(),
        Some(RevokeOutcome::Revoked)
    );
    assert_eq!(
        store
            .revoke(account.id, target.id, at(11), &audit)
            .await
            .ok(),
        Some(RevokeOutcome::AlreadyRevoked)
    );
    let revoked = TokenRepo::find_token(store, account.id, target.id)
        .await
        .unwrap_or_default()
        .unwrap_or_else(|| unreachable!());
    assert_eq!(revoked.revoked_at, Some(at(10)));
    assert_eq!(audit_count(store, account.id).await, before + 1);
    assert_eq!(audit_count(store, other.id).await, 1);

    // Rotate: replacement stored, old one linked with a shortened expiry.
    let mut server = fixtures::token(account.id, TokenGrant::Server, at(20));
    server.token.app_name = Some(AppName::normalise("billing"));
    store
        .insert(
            &server,
            &AuditEntry::system(account.id, AuditAction::TokenCreate, at(20)),
        )
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let replacement = fixtures::token(account.id, TokenGrant::Server, at(21));
    let audit = AuditEntry::system(account.id, AuditAction::TokenRotate, at(21));
    let grace = at(21) + Duration::minutes(5);
    let outcome = store
        .rotate(
            account.id,
            server.token.id,
            &replacement,
            at(21),
            grace,
            &audit,
        )
        .await;
    let Ok(RotateOutcome::Rotated { previous }) = outcome else {
        panic!("rotated: {outcome:?}")
    };
    assert_eq!(previous.replaced_by, Some(replacement.token.id));
    assert_eq!(previous.expires_at, Some(grace));
    assert!(
        store
            .find_by_digest(&replacement.digest)
            .await
            .is_ok_and(|t| t.is_some())
    );
    let again = fixtures::token(account.id, TokenGrant::Server, at(22));
    assert_eq!(
        store
            .rotate(account.id, server.token.id, &again, at(22), grace, &audit)
            .await
            .ok(),
        Some(RotateOutcome::AlreadyRotated)
    );
    assert_eq!(
        store
            .rotate(account.id, target.id, &again, at(22), grace, &audit)
            .await
            .ok(),
        Some(RotateOutcome::AlreadyRevoked)
    );
    assert_eq!(
        store
            .rotate(other.id, admin.token.id, &again, at(22), grace, &audit)
            .await
            .ok(),
        Some(RotateOutcome::NotFound)
    );
    assert_eq!(
        store
            .rotate(
                account.id,
                server.token.id,
                &again,
                grace + Duration::seconds(1),
                grace,
                &audit
            )
            .await
            .ok(),
        Some(RotateOutcome::Expired)
    );
    assert!(
        store
            .find_by_digest(&again.digest)
            .await
            .is_ok_and(|t| t.is_none()),
        "refused rotations write nothing"
    );
    assert!(
        TokenRepo::find_token(store, account.id, TokenId::random())
            .await
            .is_ok_and(|t| t.is_none())
    );
}

/// Inserts a token of `account_id` expiring at `expires_at`.
async fn token_expiring(
    store: &dyn Store,
    account_id: AccountId,
    expires_at: Option<DateTime<Utc>>,
) -> ApiToken {
    let mut token = fixtures::token(account_id, TokenGrant::Dev, at(0));
    token.token.expires_at = expires_at;
    let audit = AuditEntry::system(account_id, AuditAction::TokenCreate, at(0));
    store
        .insert(&token, &audit)
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    token.token
}

async fn read_token(store: &dyn Store, token: &ApiToken) -> ApiToken {
    TokenRepo::find_token(store, token.account_id, token.id)
        .await
        .unwrap_or_else(|e| panic!("find token: {e}"))
        .unwrap_or_else(|| panic!("token {} stored", token.id))
}

/// The expiry job, across all accounts: tokens past their expiry (rotated ones past their
/// grace) and not revoked become revoked at their expiry, each with its audit record in
/// its own account, at most `limit` per call, once.
///
/// The job is global, so this needs a store of its own.
pub async fn token_expiry(store: &dyn Store) {
    let now = at(200);
    let (account, _, admin) = tenant(store, at(0)).await;
    let (other, _, foreign) = tenant(store, at(0)).await;

    let mut expired = vec![
        token_expiring(store, account.id, Some(at(100))).await,
        token_expiring(store, account.id, Some(now)).await,
        token_expiring(store, other.id, Some(at(150))).await,
    ];
    // A rotated token whose grace period ended.
    let rotated = token_expiring(store, account.id, None).await;
    let replacement = fixtures::token(account.id, TokenGrant::Dev, at(60));
    let rotate = AuditEntry::system(account.id, AuditAction::TokenRotate, at(60));
    let outcome = store
        .rotate(
            account.id,
            rotated.id,
            &replacement,
            at(60),
            at(120),
            &rotate,
        )
        .await;
    let Ok(RotateOutcome::Rotated { previous }) = outcome else {
        panic!("rotated: {outcome:?}")
    };
    assert_eq!(previous.expires_at, Some(at(120)));
    expired.push(*previous);
    expired.sort_by_key(|t| t.id);

    // Revoked before it expired: keeps its own revocation.
    let revoked = token_expiring(store, account.id, Some(at(50))).await;
    let revoke = AuditEntry::system(account.id, AuditAction::TokenRevoke, at(40));
    assert_eq!(
        store
            .revoke(account.id, revoked.id, at(40), &revoke)
            .await
            .ok(),
        Some(RevokeOutcome::Revoked)
    );
    let untouched = vec![
        read_token(store, &revoked).await,
        token_expiring(store, account.id, Some(now + Duration::seconds(1))).await,
        token_expiring(store, other.id, None).await,
        read_token(store, &replacement.token).await,
        admin.token.clone(),
        foreign.token.clone(),
    ];
    let account_records = audit_count(store, account.id).await;
    let other_records = audit_count(store, other.id).await;

    let audit_of = |token: &ApiToken| {
        assert_eq!(token.revoked_at, token.expires_at, "audited as changed");
        AuditEntry::system(token.account_id, AuditAction::TokenExpire, now)
            .target("token", token.id)
            .metadata(serde_json::json!({
                "reason": "expired",
                "expired_at": token.expires_at,
            }))
    };
    let mut changed = Vec::new();
    let mut batches = Vec::new();
    loop {
        let batch = store
            .revoke_expired(now, 2, &audit_of)
            .await
            .unwrap_or_else(|e| panic!("expire: {e}"));
        batches.push(batch.len());
        let done = batch.len() < 2;
        changed.extend(batch);
        if done {
            break;
        }
    }
    assert_eq!(batches, vec![2, 2, 0], "the limit holds");
    changed.sort_unstable();
    assert_eq!(
        changed,
        expired.iter().map(|t| t.id).collect::<Vec<_>>(),
        "exactly the expired tokens, each once"
    );
    assert_eq!(
        store.revoke_expired(now, 2, &audit_of).await.ok(),
        Some(Vec::new()),
        "a second run changes nothing more"
    );
    assert_eq!(
        store.revoke_expired(at(10_000), 0, &audit_of).await.ok(),
        Some(Vec::new()),
        "a limit of zero changes nothing"
    );

    for token in &expired {
        let read = read_token(store, token).await;
        assert_eq!(
            read.revoked_at, token.expires_at,
            "revoked when it stopped working"
        );
        assert_eq!(
            read,
            ApiToken {
                revoked_at: token.expires_at,
                ..token.clone()
            },
            "nothing else changes"
        );
        let records = records_of(store, token.account_id, AuditAction::TokenExpire).await;
        let mine: Vec<&AuditEntry> = records
            .iter()
            .filter(|r| r.resource_id.as_deref() == Some(token.id.to_string().as_str()))
            .collect();
        assert_eq!(mine.len(), 1, "one record per token, in its own account");
        assert_eq!(mine[0].resource_type.as_deref(), Some("token"));
        assert_eq!(mine[0].actor, "system");
        assert_eq!(mine[0].metadata["reason"], "expired");
    }
    assert_eq!(
        records_of(store, account.id, AuditAction::TokenExpire)
            .await
            .len(),
        3
    );
    assert_eq!(
        records_of(store, other.id, AuditAction::TokenExpire)
            .await
            .len(),
        1
    );
    assert_eq!(audit_count(store, account.id).await, account_records + 3);
    assert_eq!(audit_count(store, other.id).await, other_records + 1);
    for token in &untouched {
        assert_eq!(&read_token(store, token).await, token);
    }
}

/// Racing writes to one token: of eight concurrent rotations exactly one rotates (the
/// others see it rotated), and of eight concurrent revokes exactly one revokes; each
/// change is audited once.
pub async fn token_races(store: &dyn Store) {
    let (account, _, _) = tenant(store, at(0)).await;
    let racing = fixtures::token(account.id, TokenGrant::Dev, at(1));
    store
        .insert(
            &racing,
            &AuditEntry::system(account.id, AuditAction::TokenCreate, at(1)),
        )
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let before = audit_count(store, account.id).await;
    let replacements: Vec<NewToken> = (0..8)
        .map(|_| fixtures::token(account.id, TokenGrant::Dev, at(2)))
        .collect();
    let audit = AuditEntry::system(account.id, AuditAction::TokenRotate, at(2));
    let grace = at(2) + Duration::minutes(5);
    let rotations = futures_util::future::join_all(replacements.iter().map(|replacement| {
        store.rotate(
            account.id,
            racing.token.id,
            replacement,
            at(2),
            grace,
            &audit,
        )
    }))
    .await;
    let rotated = rotations
        .iter()
        .filter(|r| matches!(r, Ok(RotateOutcome::Rotated { .. })))
        .count();
    let refused = rotations
        .iter()
        .filter(|r| matches!(r, Ok(RotateOutcome::AlreadyRotated)))
        .count();
    assert_eq!((rotated, refused), (1, 7), "{rotations:?}");
    assert_eq!(audit_count(store, account.id).await, before + 1);

    let audit = AuditEntry::system(account.id, AuditAction::TokenRevoke, at(3));
    let revokes = futures_util::future::join_all(
        (0..8).map(|_| store.revoke(account.id, racing.token.id, at(3), &audit)),
    )
    .await;
    let revoked = revokes
        .iter()
        .filter(|r| matches!(r, Ok(RevokeOutcome::Revoked)))
        .count();
    let already = revokes
        .iter()
        .filter(|r| matches!(r, Ok(RevokeOutcome::AlreadyRevoked)))
        .count();
    assert_eq!((revoked, already), (1, 7), "{revokes:?}");
    assert_eq!(audit_count(store, account.id).await, before + 2);
}
