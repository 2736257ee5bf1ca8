//! Provider events through the billing port: each id once (also when delivered
//! concurrently), the account found by its id or by a customer an earlier event linked,
//! what the decision writes (subscription, account, audit) read back whole, and
//! decisions on one account made one after another, never on a stale read; and the
//! credits ledger: grants, spends in burn order, idempotent keys, no overdraft under
//! concurrent spends.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::sync::atomic::{AtomicUsize, Ordering};

use d2_accounts::{Account, AccountRepo};
use d2_audit::{AuditAction, AuditEntry, AuditLog};
use d2_billing::{
    BillingRepo, Burn, CreditGrant, CreditRepo, Decision, EntryId, EntryKind, EventOutcome,
    GrantId, GrantSource, InsufficientCredits, LedgerEntry, ProviderEvent, Report, SpendOutcome,
    Subscription, SubscriptionStatus, balance, plan_spend,
};
use d2_kernel::{AccountId, AccountLock, LockReason, Plan};
use futures_util::future::join_all;

use super::audit::records_of;
use crate::fixtures::at;

pub trait Store: BillingRepo + CreditRepo + AccountRepo + AuditLog {}
impl<T: BillingRepo + CreditRepo + AccountRepo + AuditLog> Store for T {}

fn event(id: &str, account: Option<AccountId>, customer: Option<&str>) -> ProviderEvent {
    ProviderEvent {
        id: id.to_owned(),
        kind: "customer.subscription.updated".to_owned(),
        created: at(10),
        account,
        customer: customer.map(str::to_owned),
        report: Report::Checkout,
    }
}

fn subscription(account: AccountId, id: &str) -> Subscription {
    Subscription {
        account_id: account,
        subscription_id: id.to_owned(),
        customer_id: "cus_contract".to_owned(),
        plan: Plan::Enterprise,
        status: SubscriptionStatus::PastDue,
        current_period_start: Some(at(0)),
        current_period_end: Some(at(86_400)),
        cancel_at_period_end: true,
        canceled_at: None,
        ended_at: Some(at(5)),
        event_id: "evt_contract".to_owned(),
        event_created_at: at(10),
        updated_at: at(11),
    }
}

async fn account(store: &dyn Store, id: AccountId) -> Account {
    store
        .find_account(id)
        .await
        .unwrap_or_else(|e| panic!("account read: {e}"))
        .unwrap_or_else(|| panic!("account {id} stored"))
}

/// Events recorded once, accounts found, decisions written whole and isolated.
pub async fn provider_events(store: &dyn Store, a: AccountId, b: AccountId) {
    let before = account(store, a).await;
    let seen = AtomicUsize::new(0);
    let decide = |account: &Account, current: Option<&Subscription>| {
        seen.fetch_add(1, Ordering::SeqCst);
        assert_eq!(account.id, a);
        assert!(current.is_none(), "no subscription yet");
        let mut after = account.clone();
        after.plan = Plan::Enterprise;
        after.locked = Some(AccountLock {
            since: at(5),
            reason: LockReason::SubscriptionEnded,
        });
        Decision {
            outcome: EventOutcome::Applied,
            subscription: Some(subscription(a, "sub_1")),
            account: Some(after),
            audit: vec![
                AuditEntry::system(a, AuditAction::BillingSubscriptionUpdate, at(11))
                    .target("subscription", "sub_1"),
            ],
        }
    };
    let first = event("evt_1", Some(a), Some("cus_a"));
    let received = store
        .receive_event(&first, at(11), &decide)
        .await
        .unwrap_or_else(|e| panic!("receive: {e}"));
    assert_eq!(received, (EventOutcome::Applied, Some(a)));
    assert_eq!(
        store.subscription(a).await.ok().flatten(),
        Some(subscription(a, "sub_1")),
        "read back whole"
    );
    let after = account(store, a).await;
    assert_eq!(after.plan, Plan::Enterprise);
    assert_eq!(
        after.locked,
        Some(AccountLock {
            since: at(5),
            reason: LockReason::SubscriptionEnded
        })
    );
    assert_eq!(
        (after.name, after.created_at),
        (before.name, before.created_at)
    );
    assert_eq!(
        records_of(store, a, AuditAction::BillingSubscriptionUpdate)
            .await
            .len(),
        1
    );

    // The same id again: nothing decided, nothing written.
    let again = store.receive_event(&first, at(12), &decide).await;
    assert_eq!(again.ok(), Some((EventOutcome::Duplicate, None)));
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // The customer the first event linked names the account of a later event.
    let by_customer = |account: &Account, current: Option<&Subscription>| {
        assert_eq!(account.id, a);
        assert_eq!(current.map(|s| s.subscription_id.as_str()), Some("sub_1"));
        Decision::nothing(EventOutcome::Unchanged)
    };
    let linked = store
        .receive_event(&event("evt_2", None, Some("cus_a")), at(12), &by_customer)
        .await;
    assert_eq!(linked.ok(), Some((EventOutcome::Unchanged, Some(a))));
    // The first link holds: an event naming b with a's customer does not move it.
    let named = |account: &Account, _: Option<&Subscription>| {
        assert_eq!(account.id, b);
        Decision::nothing(EventOutcome::Unchanged)
    };
    let moved = store
        .receive_event(&event("evt_3", Some(b), Some("cus_a")), at(12), &named)
        .await;
    assert_eq!(moved.ok(), Some((EventOutcome::Unchanged, Some(b))));
    let still = store
        .receive_event(&event("evt_4", None, Some("cus_a")), at(12), &by_customer)
        .await;
    assert_eq!(still.ok(), Some((EventOutcome::Unchanged, Some(a))));

    // No account it knows: recorded as ignored, nothing decided.
    let never =
        |_: &Account, _: Option<&Subscription>| -> Decision { panic!("no account to decide on") };
    for unknown in [
        event("evt_5", Some(AccountId::random()), None),
        event("evt_6", None, Some("cus_nobody")),
        event("evt_7", None, None),
    ] {
        let ignored = store.receive_event(&unknown, at(12), &never).await;
        assert_eq!(
            ignored.ok(),
            Some((EventOutcome::Ignored("unknown_account".to_owned()), None))
        );
        let again = store.receive_event(&unknown, at(13), &never).await;
        assert_eq!(again.ok(), Some((EventOutcome::Duplicate, None)));
    }

    // The other account has nothing of it.
    assert_eq!(store.subscription(b).await.ok().flatten(), None);
    assert_eq!(account(store, b).await.plan, Plan::Trial);
    assert!(
        records_of(store, b, AuditAction::BillingSubscriptionUpdate)
            .await
            .is_empty()
    );
}

/// Concurrent deliveries of one event decide once; concurrent events of one account
/// decide one after another, each on what the previous wrote.
pub async fn provider_event_races(store: &dyn Store, a: AccountId) {
    let decided = AtomicUsize::new(0);
    let once = |_: &Account, _: Option<&Subscription>| {
        decided.fetch_add(1, Ordering::SeqCst);
        Decision::nothing(EventOutcome::Applied)
    };
    let same = event("evt_same", Some(a), None);
    let outcomes = join_all((0..12).map(|_| store.receive_event(&same, at(11), &once))).await;
    let applied = outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|e| panic!("receive: {e}")).0)
        .filter(|outcome| *outcome == EventOutcome::Applied)
        .count();
    assert_eq!((applied, decided.load(Ordering::SeqCst)), (1, 1));

    // Each event counts one more than the subscription it finds: none is lost.
    let count = |_: &Account, current: Option<&Subscription>| {
        let count = current.map_or(0, |s| {
            s.subscription_id
                .parse::<u32>()
                .unwrap_or_else(|_| panic!("a count"))
        });
        Decision {
            outcome: EventOutcome::Applied,
            subscription: Some(subscription(a, &(count + 1).to_string())),
            account: None,
            audit: Vec::new(),
        }
    };
    let events: Vec<ProviderEvent> = (0..12)
        .map(|n| event(&format!("evt_{n}"), Some(a), None))
        .collect();
    for outcome in join_all(
        events
            .iter()
            .map(|e| store.receive_event(e, at(11), &count)),
    )
    .await
    {
        outcome.unwrap_or_else(|e| panic!("receive: {e}"));
    }
    let counted = store.subscription(a).await.ok().flatten();
    assert_eq!(counted.map(|s| s.subscription_id), Some("12".to_owned()));
}

fn grant(source: GrantSource, amount: u64, priority: u8, expires: Option<i64>) -> CreditGrant {
    CreditGrant {
        id: GrantId::random(),
        source,
        amount,
        remaining: amount,
        priority,
        effective_at: at(0),
        expires_at: expires.map(at),
    }
}

fn ledger_entry(kind: EntryKind, amount: u64, grant: Option<GrantId>, seconds: i64) -> LedgerEntry {
    LedgerEntry {
        id: EntryId::random(),
        kind,
        amount,
        balance_after: amount,
        grant_id: grant,
        burns: Vec::new(),
        idempotency_key: None,
        reason: Some("contract".to_owned()),
        actor: "system".to_owned(),
        created_at: at(seconds),
    }
}

/// A spend of `amount` under `key` at `at(seconds)`, burned in order from the grants.
async fn spend(store: &dyn Store, account: AccountId, key: &str, amount: u64) -> SpendOutcome {
    let decide = |grants: &[CreditGrant]| {
        let burns = plan_spend(grants, amount, at(20))?;
        let entry = LedgerEntry {
            burns,
            idempotency_key: Some(key.to_owned()),
            balance_after: balance(grants, at(20)) - amount,
            ..ledger_entry(EntryKind::Spend, amount, None, 20)
        };
        let audit = AuditEntry::system(account, AuditAction::BillingCreditsSpend, at(20));
        Ok((entry, audit))
    };
    store
        .spend(account, key, &decide)
        .await
        .unwrap_or_else(|e| panic!("spend: {e}"))
}

/// Grants read back whole, spends burned from them and recorded, a key answered with its
/// first spend, and nothing of one account seen by another.
pub async fn credit_ledger(store: &dyn Store, a: AccountId, b: AccountId) {
    let purchase = grant(GrantSource::Purchase, 100, 10, None);
    let promotion = grant(GrantSource::Promotion, 30, 10, Some(86_400));
    let mut made_entries = Vec::new();
    for (n, made) in [&purchase, &promotion].into_iter().enumerate() {
        // The entry is made from the grants as held, the new one last.
        let entry_of = |grants: &[CreditGrant]| {
            assert_eq!(grants.len(), n + 1);
            assert_eq!(grants.last(), Some(made));
            LedgerEntry {
                balance_after: balance(grants, at(20)),
                ..ledger_entry(EntryKind::Grant, made.amount, Some(made.id), n as i64)
            }
        };
        let audit = AuditEntry::system(a, AuditAction::BillingCreditsAdd, at(n as i64));
        let entry = store
            .add_grant(a, made, &entry_of, &audit)
            .await
            .unwrap_or_else(|e| panic!("grant: {e}"));
        made_entries.push(entry);
    }
    let balances: Vec<u64> = made_entries.iter().map(|e| e.balance_after).collect();
    assert_eq!(balances, vec![100, 130]);
    let grants = store.credit_grants(a).await.unwrap_or_default();
    assert_eq!(grants, vec![purchase.clone(), promotion.clone()]);

    let SpendOutcome::Spent(first) = spend(store, a, "report-1", 40).await else {
        panic!("spent")
    };
    // The promotion expires first: it goes first.
    assert_eq!(
        first.burns,
        vec![
            Burn {
                grant: promotion.id,
                amount: 30
            },
            Burn {
                grant: purchase.id,
                amount: 10
            }
        ]
    );
    let remaining: Vec<u64> = store
        .credit_grants(a)
        .await
        .unwrap_or_default()
        .iter()
        .map(|g| g.remaining)
        .collect();
    assert_eq!(remaining, vec![90, 0]);
    // The same key: the first spend, nothing spent again.
    assert_eq!(
        spend(store, a, "report-1", 40).await,
        SpendOutcome::Replayed(first.clone())
    );
    assert_eq!(
        spend(store, a, "report-2", 91).await,
        SpendOutcome::Refused(InsufficientCredits {
            requested: 91,
            available: 90
        })
    );
    let entries = store.ledger(a, 10).await.unwrap_or_default();
    assert_eq!(
        entries,
        vec![
            first.clone(),
            made_entries[1].clone(),
            made_entries[0].clone()
        ],
        "newest first, read back whole"
    );
    assert_eq!(store.ledger(a, 1).await.unwrap_or_default().len(), 1);
    assert_eq!(
        records_of(store, a, AuditAction::BillingCreditsSpend)
            .await
            .len(),
        1
    );

    // The other account: nothing, and its keys are its own.
    assert!(store.credit_grants(b).await.unwrap_or_default().is_empty());
    assert!(store.ledger(b, 10).await.unwrap_or_default().is_empty());
    assert!(matches!(
        spend(store, b, "report-1", 1).await,
        SpendOutcome::Refused(_)
    ));
}

/// Concurrent spends never overdraw, and concurrent retries of one spend spend once.
pub async fn credit_races(store: &dyn Store, a: AccountId) {
    let made = grant(GrantSource::Purchase, 100, 10, None);
    let entry_of = |_: &[CreditGrant]| ledger_entry(EntryKind::Grant, 100, Some(made.id), 0);
    let audit = AuditEntry::system(a, AuditAction::BillingCreditsAdd, at(0));
    store
        .add_grant(a, &made, &entry_of, &audit)
        .await
        .unwrap_or_else(|e| panic!("grant: {e}"));
    let keys: Vec<String> = (0..24).map(|n| format!("spend-{n}")).collect();
    let outcomes = join_all(keys.iter().map(|key| spend(store, a, key, 7))).await;
    let spent = outcomes
        .iter()
        .filter(|o| matches!(o, SpendOutcome::Spent(_)))
        .count();
    assert_eq!(spent, 14, "100 credits hold fourteen spends of 7");
    let left = store.credit_grants(a).await.unwrap_or_default();
    assert_eq!(left.first().map(|g| g.remaining), Some(2));

    let retries = join_all((0..10).map(|_| spend(store, a, "once", 1))).await;
    let spent = retries
        .iter()
        .filter(|o| matches!(o, SpendOutcome::Spent(_)))
        .count();
    let replayed = retries
        .iter()
        .filter(|o| matches!(o, SpendOutcome::Replayed(_)))
        .count();
    assert_eq!((spent, replayed), (1, 9));
    let left = store.credit_grants(a).await.unwrap_or_default();
    assert_eq!(left.first().map(|g| g.remaining), Some(1));
}
