//! The behaviour every storage adapter of accounts, tokens and audit must show. Each
//! function is run against the in-memory fakes and against every real adapter, so the
//! adapters cannot drift apart.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use d2_accounts::{Account, AccountName, AccountPatch, AccountRepo, Role, SampleRate, User};
use d2_audit::{AuditAction, AuditEntry, AuditFilter, AuditLog};
use d2_kernel::{AccountId, AppName, PageRequest, Plan, StoreError, TokenId, UserId};

use crate::ports::{BootstrapRepo, RevokeOutcome, RotateOutcome, TokenRepo};
use crate::secret::{Pepper, TokenSecret};
use crate::token::{ApiToken, NewToken, TokenGrant, TokenKind, TokenRequest};

/// Everything the suite needs from one store.
pub trait Store: TokenRepo + BootstrapRepo + AccountRepo + AuditLog {}
impl<T: TokenRepo + BootstrapRepo + AccountRepo + AuditLog> Store for T {}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
}

fn pepper() -> Pepper {
    Pepper::new(&[5; 32]).unwrap_or_else(|_| unreachable!())
}

fn new_token(account_id: AccountId, grant: TokenGrant, created_at: DateTime<Utc>) -> NewToken {
    let request = TokenRequest {
        name: Some("contract".into()),
        grant,
        app_name: None,
        expires_at: None,
    };
    let (new, _) = crate::service::mint(&pepper(), account_id, &request, None, created_at)
        .unwrap_or_else(|_| unreachable!());
    new
}

async fn tenant(store: &dyn Store, seconds: i64) -> (Account, User, NewToken) {
    let account = Account::new_trial(
        AccountId::random(),
        AccountName::parse("Contract Co").unwrap_or_else(|_| unreachable!()),
        at(seconds),
        14,
    );
    let owner = User {
        id: UserId::random(),
        account_id: account.id,
        email: Some(format!("owner+{}@contract.test", account.id)),
        display_name: Some("Owner".into()),
        full_name: None,
        role: Role::Owner,
        created_at: at(seconds),
    };
    let token = new_token(account.id, TokenGrant::Admin, at(seconds));
    let audit = AuditEntry::control_plane(account.id, AuditAction::AccountBootstrap, at(seconds));
    store
        .create_account(&account, &owner, &token, &audit)
        .await
        .unwrap_or_else(|e| panic!("bootstrap: {e}"));
    (account, owner, token)
}

async fn audit_count(store: &dyn Store, account_id: AccountId) -> usize {
    store
        .search(
            account_id,
            &AuditFilter::default(),
            &PageRequest::first(1000),
        )
        .await
        .map(|page| page.items.len())
        .unwrap_or_else(|e| panic!("audit list: {e}"))
}

/// Accounts and users: read back, atomic patch with audit, user listing, isolation.
pub async fn accounts(store: &dyn Store) {
    let (account, owner, _) = tenant(store, 0).await;
    let (other, _, _) = tenant(store, 0).await;
    let read = AccountRepo::find_account(store, account.id)
        .await
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("account stored"));
    assert_eq!(read, account);
    assert_eq!(read.plan, Plan::Trial);
    assert!(
        AccountRepo::find_account(store, AccountId::random())
            .await
            .is_ok_and(|a| a.is_none())
    );

    let patch = AccountPatch {
        name: Some(AccountName::parse("Renamed").unwrap_or_else(|_| unreachable!())),
        metrics_enabled: Some(false),
        event_sample: BTreeMap::from([(
            "authz_decision".to_owned(),
            Some(SampleRate::new(0.5).unwrap_or_else(|_| unreachable!())),
        )]),
    };
    let audit_of = |before: &Account, after: &Account| {
        AuditEntry::system(before.id, AuditAction::AccountUpdate, at(1))
            .metadata(AccountPatch::describe(before, after))
    };
    let updated = store
        .update(account.id, &patch, &audit_of)
        .await
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("updated"));
    assert_eq!(updated.name.as_str(), "Renamed");
    assert!(!updated.metrics_enabled);
    let read = AccountRepo::find_account(store, account.id)
        .await
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("account"));
    assert_eq!(read, updated);
    assert_eq!(audit_count(store, account.id).await, 2);
    assert_eq!(
        audit_count(store, other.id).await,
        1,
        "the other tenant's trail is untouched"
    );
    let missing = store.update(AccountId::random(), &patch, &audit_of).await;
    assert!(matches!(missing, Ok(None)));

    assert_eq!(store.count_users(account.id).await.unwrap_or_default(), 1);
    let users = store.list_users(account.id).await.unwrap_or_default();
    assert_eq!(users, vec![owner]);
    assert_eq!(store.count_users(AccountId::random()).await.unwrap_or(9), 0);
}

/// Tokens: lookup by digest, account-scoped reads, paging, conflicts, revoke, rotate.
pub async fn tokens(store: &dyn Store) {
    let (account, _, admin) = tenant(store, 0).await;
    let (other, _, foreign) = tenant(store, 0).await;

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
        let mut token = new_token(account.id, TokenGrant::Dev, created);
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
    assert_eq!(seen, issued);
    assert!(!seen.iter().any(|t| t.id == foreign.token.id));

    // A duplicate digest is a conflict and writes no audit record.
    let before = audit_count(store, account.id).await;
    let mut duplicate = new_token(account.id, TokenGrant::Dev, at(9));
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
    let mut server = new_token(account.id, TokenGrant::Server, at(20));
    server.token.app_name = Some(AppName::normalise("billing"));
    store
        .insert(
            &server,
            &AuditEntry::system(account.id, AuditAction::TokenCreate, at(20)),
        )
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let replacement = new_token(account.id, TokenGrant::Server, at(21));
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
    let again = new_token(account.id, TokenGrant::Server, at(22));
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

/// Audit: filters, paging newest first, isolation.
pub async fn audit(store: &dyn Store) {
    let (account, _, admin) = tenant(store, 0).await;
    let (other, _, _) = tenant(store, 0).await;
    for second in 1..=4 {
        let token = new_token(account.id, TokenGrant::Dev, at(second));
        let entry = AuditEntry::system(account.id, AuditAction::TokenCreate, at(second))
            .target("token", token.token.id);
        store
            .insert(&token, &entry)
            .await
            .unwrap_or_else(|e| panic!("insert: {e}"));
    }
    let entry = AuditEntry::system(account.id, AuditAction::TokenRevoke, at(5));
    let _ = store
        .revoke(account.id, admin.token.id, at(5), &entry)
        .await;

    let all = store
        .search(
            account.id,
            &AuditFilter::default(),
            &PageRequest::first(100),
        )
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(all.items.len(), 6);
    assert!(
        all.items
            .windows(2)
            .all(|w| w[0].entry.occurred_at >= w[1].entry.occurred_at)
    );
    assert!(all.items.iter().all(|r| r.entry.account_id == account.id));

    let creates = AuditFilter {
        action: Some(AuditAction::TokenCreate),
        ..AuditFilter::default()
    };
    let page = store
        .search(account.id, &creates, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.items.len(), 4);
    let window = AuditFilter {
        since: Some(at(2)),
        until: Some(at(4)),
        ..AuditFilter::default()
    };
    let page = store
        .search(account.id, &window, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.items.len(), 2);
    let by_control_plane = AuditFilter {
        actor: Some("control_plane".into()),
        ..AuditFilter::default()
    };
    let page = store
        .search(account.id, &by_control_plane, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.items.len(), 1);

    let first = store
        .search(account.id, &AuditFilter::default(), &PageRequest::first(4))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let next = first.next.unwrap_or_else(|| panic!("a second page"));
    let rest = store
        .search(
            account.id,
            &AuditFilter::default(),
            &PageRequest::parse(Some(4), Some(&next.encode())).unwrap_or_else(|_| unreachable!()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rest.items.len(), 2);
    assert!(rest.next.is_none());
    assert_eq!(audit_count(store, other.id).await, 1);
}
