//! Accounts through the bootstrap port: reading them back, atomic patches with their
//! audit record, the owner bootstrap made and the first sign-in that claims them, and the
//! trial locker, a job across all accounts.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use d2_accounts::{Account, AccountName, AccountPatch, AccountRepo, SampleRate};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, AccountLock, LockReason, Plan, UserId};
use d2_members::Identity;

use super::audit::{audit_count, records_of};
use super::tokens::Store;
use crate::fixtures::{self, at, tenant};

/// Accounts and users: read back, atomic patch with audit, user listing, isolation.
pub async fn accounts(store: &dyn Store) {
    assert!(
        AccountRepo::has_accounts(store).await.is_ok_and(|any| !any),
        "a new store has no account"
    );
    let (account, owner, _) = tenant(store, at(0)).await;
    assert!(AccountRepo::has_accounts(store).await.is_ok_and(|any| any));
    let (other, _, _) = tenant(store, at(0)).await;
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
        email: Some(email.to_uppercase()),
        email_verified: verified,
        display_name: None,
        ..fixtures::identity(subject)
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
    fixtures::bootstrap(store, &account).await;
    account
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
