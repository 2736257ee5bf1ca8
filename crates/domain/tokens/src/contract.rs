//! The behaviour every storage adapter of accounts, tokens and audit must show. Each
//! function is run against the in-memory fakes and against every real adapter, so the
//! adapters cannot drift apart.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use d2_accounts::{Account, AccountName, AccountPatch, AccountRepo, SampleRate};
use d2_audit::{AuditAction, AuditEntry, AuditFilter, AuditLog};
use d2_kernel::{
    AccountId, AccountLock, AppName, LockReason, PageRequest, Plan, StoreError, TokenId, UserId,
};
use d2_members::{Identity, MemberRepo, User};

mod issue;

pub use issue::{token_limit, token_limit_races, token_people, token_updates, token_usage};

use crate::ports::{BootstrapRepo, RevokeOutcome, RotateOutcome, TokenRepo};
use crate::secret::{Pepper, TokenSecret};
use crate::token::{ApiToken, NewToken, TokenGrant, TokenKind, TokenRequest};

/// Everything the suite needs from one store.
pub trait Store: TokenRepo + BootstrapRepo + AccountRepo + MemberRepo + AuditLog {}
impl<T: TokenRepo + BootstrapRepo + AccountRepo + MemberRepo + AuditLog> Store for T {}

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
        assigned_to: None,
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
    let owner = User::invited_owner(
        Some(format!("owner+{}@contract.test", account.id)),
        Some("Owner".into()),
        at(seconds),
    );
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
    assert!(
        AccountRepo::has_accounts(store).await.is_ok_and(|any| !any),
        "a new store has no account"
    );
    let (account, owner, _) = tenant(store, 0).await;
    assert!(AccountRepo::has_accounts(store).await.is_ok_and(|any| any));
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
        require_publisher_key_approval: Some(true),
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
    assert!(updated.require_publisher_key_approval);
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

    assert_eq!(store.count_members(account.id).await.unwrap_or_default(), 1);
    assert_eq!(
        store.first_owner(account.id).await.unwrap_or_default(),
        Some(owner.id)
    );
    assert_eq!(
        store.count_members(AccountId::random()).await.unwrap_or(9),
        0
    );
    assert_eq!(
        store
            .first_owner(AccountId::random())
            .await
            .unwrap_or_default(),
        None
    );
    assert_eq!(
        store.find_user(owner.id).await.unwrap_or_default(),
        Some(owner.clone())
    );

    // The owner bootstrap created is claimed by the first sign-in that proves their email,
    // and only by one the provider verified.
    let email = owner.email.clone().unwrap_or_default();
    let claim = |subject: &str, verified: bool| Identity {
        issuer: "https://idp.contract.test".into(),
        subject: subject.into(),
        email: Some(email.to_uppercase()),
        email_verified: verified,
        display_name: None,
        role_cap: None,
    };
    let unverified = store
        .sign_in(&claim(&UserId::random().to_string(), false), at(50))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(unverified.id, owner.id, "an unverified email claims nobody");
    let subject = UserId::random().to_string();
    let claimed = store
        .sign_in(&claim(&subject, true), at(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claimed.id, owner.id);
    assert_eq!(claimed.display_name.as_deref(), Some("Owner"), "kept");
    assert_eq!(claimed.last_sign_in_at, Some(at(60)));
    assert_eq!(
        store
            .role_of(account.id, owner.id)
            .await
            .unwrap_or_default(),
        Some(d2_kernel::Role::Owner)
    );
    let again = store
        .sign_in(&claim(&subject, true), at(70))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.id, owner.id, "the same identity from now on");
    let other_subject = store
        .sign_in(&claim(&UserId::random().to_string(), true), at(80))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        other_subject.id, owner.id,
        "a claimed person is claimed once"
    );
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
    let seen: Vec<ApiToken> = seen.into_iter().map(|listed| listed.token).collect();
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

/// Stores an account as given, with an owner and an admin token.
async fn account_as(
    store: &dyn Store,
    plan: Plan,
    trial_expires_at: Option<DateTime<Utc>>,
    locked: Option<AccountLock>,
) -> Account {
    let mut account = Account::new_trial(
        AccountId::random(),
        AccountName::parse("Job Co").unwrap_or_else(|_| unreachable!()),
        at(0),
        14,
    );
    account.plan = plan;
    account.trial_expires_at = trial_expires_at;
    account.locked = locked;
    let owner = User::invited_owner(None, None, at(0));
    let token = new_token(account.id, TokenGrant::Admin, at(0));
    let audit = AuditEntry::control_plane(account.id, AuditAction::AccountBootstrap, at(0));
    store
        .create_account(&account, &owner, &token, &audit)
        .await
        .unwrap_or_else(|e| panic!("bootstrap: {e}"));
    account
}

/// The records of one action in an account's trail.
async fn records_of(
    store: &dyn Store,
    account_id: AccountId,
    action: AuditAction,
) -> Vec<AuditEntry> {
    let filter = AuditFilter {
        action: Some(action),
        ..AuditFilter::default()
    };
    store
        .search(account_id, &filter, &PageRequest::first(1000))
        .await
        .unwrap_or_else(|e| panic!("audit list: {e}"))
        .items
        .into_iter()
        .map(|record| record.entry)
        .collect()
}

async fn read_account(store: &dyn Store, id: AccountId) -> Account {
    AccountRepo::find_account(store, id)
        .await
        .unwrap_or_else(|e| panic!("find account: {e}"))
        .unwrap_or_else(|| panic!("account {id} stored"))
}

/// The lock the end of a trial at `end` brings.
fn trial_ended(end: DateTime<Utc>) -> AccountLock {
    AccountLock {
        since: end,
        reason: LockReason::TrialEnded,
    }
}

/// The trial locker, a job across all accounts: only trials whose expiry has come and that
/// are not locked yet lock (keeping their plan), each with its audit record in its own
/// account, at most `limit` per call, once.
///
/// The job is global, so this needs a store of its own.
pub async fn trial_locker(store: &dyn Store) {
    let now = at(200);
    let mut expired = vec![
        account_as(store, Plan::Trial, Some(at(100)), None).await,
        account_as(store, Plan::Trial, Some(at(150)), None).await,
        // Expiring exactly now counts as expired.
        account_as(store, Plan::Trial, Some(now), None).await,
    ];
    expired.sort_by_key(|a| a.id);
    let untouched = vec![
        account_as(store, Plan::Trial, Some(now + Duration::seconds(1)), None).await,
        account_as(store, Plan::Trial, None, None).await,
        account_as(store, Plan::Pro, Some(at(50)), None).await,
        // Locked already (recorded after its end): never locked or audited again.
        account_as(store, Plan::Trial, Some(at(50)), Some(trial_ended(at(60)))).await,
    ];
    let audit_of = |account: &Account| {
        assert_eq!(account.plan, Plan::Trial, "the plan is kept");
        assert_eq!(
            account.locked,
            account.trial_expires_at.map(trial_ended),
            "audited as changed"
        );
        AuditEntry::system(account.id, AuditAction::AccountLock, now)
            .target("account", account.id)
            .metadata(serde_json::json!({
                "from": "trial",
                "to": "locked",
                "trial_expired_at": account.trial_expires_at,
            }))
    };

    let first = store
        .lock_expired_trials(now, 2, &audit_of)
        .await
        .unwrap_or_else(|e| panic!("lock: {e}"));
    assert_eq!(first.len(), 2, "the limit holds");
    let second = store
        .lock_expired_trials(now, 2, &audit_of)
        .await
        .unwrap_or_else(|e| panic!("lock: {e}"));
    assert_eq!(second.len(), 1, "the rest");
    let mut locked: Vec<AccountId> = first.into_iter().chain(second).collect();
    locked.sort_unstable();
    assert_eq!(
        locked,
        expired.iter().map(|a| a.id).collect::<Vec<_>>(),
        "exactly the expired trials, each once"
    );
    assert_eq!(
        store.lock_expired_trials(now, 2, &audit_of).await.ok(),
        Some(Vec::new()),
        "a second run locks nothing more"
    );

    for account in &expired {
        let read = read_account(store, account.id).await;
        assert_eq!(read.plan, Plan::Trial);
        assert_eq!(
            read,
            Account {
                locked: account.trial_expires_at.map(trial_ended),
                ..account.clone()
            },
            "locked since the trial's end; nothing else changes, the plan and the trial's end are kept"
        );
        let records = records_of(store, account.id, AuditAction::AccountLock).await;
        assert_eq!(records.len(), 1, "one record per locked account");
        assert_eq!(records[0].account_id, account.id);
        assert_eq!(records[0].actor, "system");
        assert_eq!(
            records[0].resource_id.as_deref(),
            Some(account.id.to_string().as_str())
        );
        assert_eq!(records[0].metadata["to"], "locked");
        assert_eq!(audit_count(store, account.id).await, 2);
    }
    for account in &untouched {
        assert_eq!(&read_account(store, account.id).await, account);
        assert_eq!(
            audit_count(store, account.id).await,
            1,
            "no record in an account that was not locked"
        );
    }
    assert_eq!(
        store
            .lock_expired_trials(at(10_000), 0, &audit_of)
            .await
            .ok(),
        Some(Vec::new()),
        "a limit of zero changes nothing"
    );
    let future = read_account(store, untouched[0].id).await;
    assert_eq!(future.plan, Plan::Trial);
    assert_eq!(future.locked, None);

    // An update writes the whole account: the lock it read stays.
    let patch = AccountPatch {
        name: Some(AccountName::parse("Still Locked").unwrap_or_else(|_| unreachable!())),
        ..AccountPatch::default()
    };
    let update_audit = |before: &Account, after: &Account| {
        AuditEntry::system(before.id, AuditAction::AccountUpdate, now)
            .metadata(AccountPatch::describe(before, after))
    };
    let recorded = [
        (&expired[0], expired[0].trial_expires_at.map(trial_ended)),
        (&untouched[3], untouched[3].locked),
    ];
    for (account, lock) in recorded {
        let updated = store
            .update(account.id, &patch, &update_audit)
            .await
            .unwrap_or_else(|e| panic!("update: {e}"))
            .unwrap_or_else(|| panic!("account {} stored", account.id));
        let read = read_account(store, account.id).await;
        assert_eq!(read, updated);
        assert_eq!(read.name.as_str(), "Still Locked");
        assert!(lock.is_some());
        assert_eq!(read.locked, lock, "the lock is kept");
    }
}

/// Inserts a token of `account_id` expiring at `expires_at`.
async fn token_expiring(
    store: &dyn Store,
    account_id: AccountId,
    expires_at: Option<DateTime<Utc>>,
) -> ApiToken {
    let mut token = new_token(account_id, TokenGrant::Dev, at(0));
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
    let (account, _, admin) = tenant(store, 0).await;
    let (other, _, foreign) = tenant(store, 0).await;

    let mut expired = vec![
        token_expiring(store, account.id, Some(at(100))).await,
        token_expiring(store, account.id, Some(now)).await,
        token_expiring(store, other.id, Some(at(150))).await,
    ];
    // A rotated token whose grace period ended.
    let rotated = token_expiring(store, account.id, None).await;
    let replacement = new_token(account.id, TokenGrant::Dev, at(60));
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
    let (account, _, _) = tenant(store, 0).await;
    let racing = new_token(account.id, TokenGrant::Dev, at(1));
    store
        .insert(
            &racing,
            &AuditEntry::system(account.id, AuditAction::TokenCreate, at(1)),
        )
        .await
        .unwrap_or_else(|e| panic!("insert: {e}"));
    let before = audit_count(store, account.id).await;
    let replacements: Vec<NewToken> = (0..8)
        .map(|_| new_token(account.id, TokenGrant::Dev, at(2)))
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
