//! Provider events through the billing port: each id once (also when delivered
//! concurrently), the account found by its id or by a customer an earlier event linked,
//! what the decision writes (subscription, account, audit) read back whole, and
//! decisions on one account made one after another, never on a stale read; and the
//! credits ledger: grants, spends in burn order, idempotent keys, no overdraft under
//! concurrent spends; usage records and their hourly totals; reservations.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::sync::atomic::{AtomicUsize, Ordering};

use d2_accounts::{Account, AccountRepo};
use d2_audit::{AuditAction, AuditEntry, AuditLog};
use d2_billing::{
    BillingRepo, Budget, Burn, CheckoutReport, CloseRefusal, Closing, CreditGrant, CreditRepo,
    Decision, Earlier, EntryId, EntryKind, EventGrant, EventOutcome, GrantId, GrantSource,
    InsufficientCredits, InvoiceReport, LedgerEntry, LedgerFilter, Meter, MeterKind, ProviderEvent,
    RecordFilter, Recorded, Recording, Refusal, Report, Reservation, ReservationStatus,
    SpendOutcome, Spending, Subscription, SubscriptionStatus, UsageRecord, UsageRecordId,
    UsageRepo, balance, hour_totals, plan_spend,
};
use d2_billing::{
    INCLUDED_CREDITS, NOTICE_TASK, Notice, NoticeEndpoint, NoticeId, NoticeRepo, RaisedNotice,
};
use d2_kernel::{
    AccountId, AccountLock, Cursor, LockReason, NewTask, Page, PageRequest, Plan, StoreError,
};
use futures_util::future::join_all;

use super::audit::records_of;
use crate::fixtures::at;

pub trait Store:
    BillingRepo + CreditRepo + UsageRepo + NoticeRepo + AccountRepo + AuditLog
{
}
impl<T: BillingRepo + CreditRepo + UsageRepo + NoticeRepo + AccountRepo + AuditLog> Store for T {}

fn event(id: &str, account: Option<AccountId>, customer: Option<&str>) -> ProviderEvent {
    ProviderEvent {
        id: id.to_owned(),
        kind: "customer.subscription.updated".to_owned(),
        created: at(10),
        account,
        customer: customer.map(str::to_owned),
        report: Report::Checkout(CheckoutReport {
            session_id: "cs_contract".to_owned(),
            mode: "subscription".to_owned(),
            paid: true,
            currency: None,
            amount_subtotal: None,
        }),
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
    let decide = |account: &Account, current: Option<&Subscription>, _: bool| {
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
            grant: None,
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
    let by_customer = |account: &Account, current: Option<&Subscription>, _: bool| {
        assert_eq!(account.id, a);
        assert_eq!(current.map(|s| s.subscription_id.as_str()), Some("sub_1"));
        Decision::nothing(EventOutcome::Unchanged)
    };
    let linked = store
        .receive_event(&event("evt_2", None, Some("cus_a")), at(12), &by_customer)
        .await;
    assert_eq!(linked.ok(), Some((EventOutcome::Unchanged, Some(a))));
    // The first link holds: an event naming b with a's customer does not move it.
    let named = |account: &Account, _: Option<&Subscription>, _: bool| {
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
    let never = |_: &Account, _: Option<&Subscription>, _: bool| -> Decision {
        panic!("no account to decide on")
    };
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
    let once = |_: &Account, _: Option<&Subscription>, _: bool| {
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
    let count = |_: &Account, current: Option<&Subscription>, _: bool| {
        let count = current.map_or(0, |s| {
            s.subscription_id
                .parse::<u32>()
                .unwrap_or_else(|_| panic!("a count"))
        });
        Decision {
            outcome: EventOutcome::Applied,
            subscription: Some(subscription(a, &(count + 1).to_string())),
            account: None,
            grant: None,
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

/// The account's latest `limit` ledger entries, newest first.
async fn latest(store: &dyn Store, account: AccountId, limit: u32) -> Vec<LedgerEntry> {
    store
        .ledger(
            account,
            &LedgerFilter::default(),
            &PageRequest::first(limit),
        )
        .await
        .unwrap_or_else(|e| panic!("ledger: {e}"))
        .items
}

/// Every page of a list, `per_page` at a time, following each page's cursor.
async fn every_page<T, F>(per_page: u32, read: impl Fn(PageRequest) -> F) -> Vec<Vec<T>>
where
    F: Future<Output = Result<Page<T>, StoreError>>,
{
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let request = PageRequest::parse(Some(per_page), cursor.as_deref())
            .unwrap_or_else(|e| panic!("page request: {e}"));
        let page = read(request).await.unwrap_or_else(|e| panic!("page: {e}"));
        cursor = page.next.as_ref().map(Cursor::encode);
        pages.push(page.items);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 100, "the pages end");
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
        Ok(Spending {
            entry,
            reservation: None,
            audit,
        })
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
    let entries = latest(store, a, 10).await;
    assert_eq!(
        entries,
        vec![
            first.clone(),
            made_entries[1].clone(),
            made_entries[0].clone()
        ],
        "newest first, read back whole"
    );
    assert_eq!(latest(store, a, 1).await.len(), 1);
    assert_eq!(
        records_of(store, a, AuditAction::BillingCreditsSpend)
            .await
            .len(),
        1
    );

    // The other account: nothing, and its keys are its own.
    assert!(store.credit_grants(b).await.unwrap_or_default().is_empty());
    assert!(latest(store, b, 10).await.is_empty());
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

/// A model report of `credits` under `key`, recorded at `at(seconds)`.
fn usage_record(key: &str, model: &str, credits: u64, seconds: i64) -> UsageRecord {
    UsageRecord {
        id: UsageRecordId::random(),
        entry_id: EntryId::random(),
        idempotency_key: key.to_owned(),
        meter: Meter::Model {
            model: model.to_owned(),
            input_tokens: 1000,
            output_tokens: 10,
        },
        credits,
        price_version: 2,
        credential: "token:contract".to_owned(),
        recorded_at: at(seconds),
    }
}

/// Records `records` (new, paid by one entry, under the first one's `entry_id`, burned in
/// order from the grants) and answers `replays` (records made before, sent again under
/// fresh ids) as `UsageMeter` does, after checking what the store found under the keys.
async fn record(
    store: &dyn Store,
    account: AccountId,
    records: &[UsageRecord],
    replays: &[UsageRecord],
) -> Result<Recording, Refusal> {
    let entry_id = records
        .first()
        .map_or_else(EntryId::random, |first| first.entry_id);
    let new: Vec<UsageRecord> = records
        .iter()
        .map(|made| UsageRecord {
            entry_id,
            ..made.clone()
        })
        .collect();
    let batch: Vec<UsageRecord> = new
        .iter()
        .cloned()
        .chain(replays.iter().map(|replay| UsageRecord {
            id: UsageRecordId::random(),
            entry_id,
            ..replay.clone()
        }))
        .collect();
    let decide = |grants: &[CreditGrant], earlier: &Earlier| {
        if let Some(key) = earlier.spent_keys.first() {
            return Err(Refusal::KeyReused(key.clone()));
        }
        if earlier.records.len() != replays.len() {
            return Err(Refusal::KeyReused(format!(
                "{} found",
                earlier.records.len()
            )));
        }
        for replay in replays {
            assert!(
                earlier.records.contains(replay),
                "read back whole: {replay:?}"
            );
        }
        let charged = new.iter().map(|made| made.credits).sum();
        let burns = plan_spend(grants, charged, at(30)).map_err(Refusal::Insufficient)?;
        let mut grants = grants.to_vec();
        for burn in &burns {
            let grant = grants.iter_mut().find(|g| g.id == burn.grant).unwrap();
            grant.remaining -= burn.amount;
        }
        let entry = (!new.is_empty()).then(|| LedgerEntry {
            id: entry_id,
            burns,
            balance_after: balance(&grants, at(30)),
            ..ledger_entry(EntryKind::Usage, charged, None, 30)
        });
        let reports = new
            .iter()
            .map(|made| Recorded {
                record: made.clone(),
                replayed: false,
            })
            .chain(replays.iter().map(|replay| Recorded {
                record: replay.clone(),
                replayed: true,
            }))
            .collect();
        Ok(Recording {
            reports,
            entry,
            hours: hour_totals(&new),
            audit: Some(AuditEntry::system(
                account,
                AuditAction::BillingUsageRecord,
                at(30),
            )),
            balance: balance(&grants, at(30)),
        })
    };
    store
        .record_usage(account, &batch, &decide)
        .await
        .unwrap_or_else(|e| panic!("record usage: {e}"))
}

async fn grant_credits(store: &dyn Store, account: AccountId, amount: u64) -> CreditGrant {
    let made = grant(GrantSource::Purchase, amount, 10, None);
    let entry_of = |_: &[CreditGrant]| ledger_entry(EntryKind::Grant, amount, Some(made.id), 0);
    let audit = AuditEntry::system(account, AuditAction::BillingCreditsAdd, at(0));
    store
        .add_grant(account, &made, &entry_of, &audit)
        .await
        .unwrap_or_else(|e| panic!("grant: {e}"));
    made
}

async fn remaining(store: &dyn Store, account: AccountId) -> Vec<u64> {
    let grants = store.credit_grants(account).await.unwrap_or_default();
    grants.iter().map(|g| g.remaining).collect()
}

/// Usage records and their ledger entries written together, read back whole under their
/// keys, a key of a spend found as one, hourly totals added up across batches, a refused
/// batch writing nothing, and nothing of one account seen by another.
pub async fn usage_records(store: &dyn Store, a: AccountId, b: AccountId) {
    grant_credits(store, a, 100).await;
    let first = usage_record("u-1", "gpt-4o", 3, 3_600);
    let agent = UsageRecord {
        meter: Meter::Agent {
            agent: "researcher".to_owned(),
            operation: "invoke".to_owned(),
            invocations: 4,
        },
        ..usage_record("u-2", "", 0, 3_700)
    };
    let recording = record(store, a, &[first.clone(), agent.clone()], &[])
        .await
        .unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(recording.reports.len(), 2);
    assert_eq!(remaining(store, a).await, vec![97]);
    // One entry paid for the batch, and both records name it.
    let paid: Vec<LedgerEntry> = latest(store, a, 10)
        .await
        .into_iter()
        .filter(|e| e.kind == EntryKind::Usage)
        .collect();
    assert_eq!(paid.len(), 1);
    assert_eq!((paid[0].id, paid[0].amount), (first.entry_id, 3));
    assert_eq!(stored_keys(store, a).await, ["u-1", "u-2"]);

    // A retry of u-1 beside a new report of the same hour and dimension: the first
    // record found whole, the totals added up.
    let again = usage_record("u-3", "gpt-4o", 5, 3_900);
    record(
        store,
        a,
        std::slice::from_ref(&again),
        std::slice::from_ref(&first),
    )
    .await
    .unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(remaining(store, a).await, vec![92]);
    let hours = store
        .usage_hours(a, at(0), at(7_200))
        .await
        .unwrap_or_default();
    let mut expected = hour_totals(&[first.clone(), agent.clone(), again.clone()]);
    expected.sort_by(|x, y| (x.hour, &x.dimension).cmp(&(y.hour, &y.dimension)));
    assert_eq!(hours, expected);
    let model = hours
        .iter()
        .find(|h| h.dimension.subject == "gpt-4o")
        .unwrap();
    assert_eq!((model.totals.reports, model.totals.credits), (2, 8));
    assert_eq!(model.totals.input_tokens, 2000);
    assert!(
        store
            .usage_hours(a, at(7_200), at(10_000))
            .await
            .unwrap_or_default()
            .is_empty(),
        "the span is [from, to)"
    );

    // A spend's key: found as an entry without a usage record.
    spend(store, a, "spend-key", 1).await;
    let spent_key = usage_record("spend-key", "gpt-4o", 1, 3_900);
    assert!(matches!(
        record(store, a, std::slice::from_ref(&spent_key), &[]).await,
        Err(Refusal::KeyReused(key)) if key == "spend-key"
    ));
    assert!(matches!(
        spend(store, a, "u-2", 1).await,
        SpendOutcome::KeyOfUsage
    ));

    // Refused: nothing written.
    let too_much = usage_record("u-4", "gpt-4o", 1_000, 3_900);
    assert!(matches!(
        record(store, a, &[too_much], &[]).await,
        Err(Refusal::Insufficient(_))
    ));
    assert_eq!(remaining(store, a).await, vec![91]);
    assert_eq!(
        stored_keys(store, a).await,
        ["u-1", "u-2", "u-3"],
        "a refused batch's records are not kept"
    );
    assert_eq!(
        records_of(store, a, AuditAction::BillingUsageRecord)
            .await
            .len(),
        2
    );

    // The other account: nothing, and its keys are its own.
    assert!(
        store
            .usage_hours(b, at(0), at(7_200))
            .await
            .unwrap_or_default()
            .is_empty()
    );
    grant_credits(store, b, 10).await;
    record(store, b, &[usage_record("u-1", "gpt-4o", 3, 3_600)], &[])
        .await
        .unwrap_or_else(|r| panic!("b's u-1 is its own: {r:?}"));
}

/// The keys of the account's usage records, in order.
async fn stored_keys(store: &dyn Store, account: AccountId) -> Vec<String> {
    let page = store
        .usage_records(account, &RecordFilter::default(), &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("records: {e}"));
    let mut keys: Vec<String> = page.items.into_iter().map(|r| r.idempotency_key).collect();
    keys.sort();
    keys
}

/// Concurrent batches never overdraw, and concurrent retries of one report record it once.
pub async fn usage_races(store: &dyn Store, a: AccountId) {
    grant_credits(store, a, 100).await;
    let batches: Vec<UsageRecord> = (0..20)
        .map(|n| usage_record(&format!("race-{n}"), "gpt-4o", 7, 3_600))
        .collect();
    let outcomes = join_all(
        batches
            .iter()
            .map(|made| record(store, a, std::slice::from_ref(made), &[])),
    )
    .await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 14);
    assert_eq!(remaining(store, a).await, vec![2]);
    let hours = store
        .usage_hours(a, at(0), at(7_200))
        .await
        .unwrap_or_default();
    assert_eq!(hours.len(), 1);
    assert_eq!((hours[0].totals.reports, hours[0].totals.credits), (14, 98));

    let once = usage_record("once", "gpt-4o", 1, 3_600);
    let retries = join_all((0..8).map(|_| async {
        // Each request makes its own record of the report.
        let attempt = UsageRecord {
            id: UsageRecordId::random(),
            ..once.clone()
        };
        match record(store, a, &[attempt], &[]).await {
            Ok(_) => "recorded",
            // Not the first: finds it and is refused by this helper, which expected none.
            Err(Refusal::KeyReused(_)) => "found",
            Err(Refusal::Insufficient(_)) => "refused",
        }
    }))
    .await;
    assert_eq!(retries.iter().filter(|o| **o == "recorded").count(), 1);
    assert_eq!(retries.iter().filter(|o| **o == "found").count(), 7);
    assert_eq!(remaining(store, a).await, vec![1]);
}

/// A reserve of `amount` under `key`, held until `at(expires)`.
async fn reserve(
    store: &dyn Store,
    account: AccountId,
    key: &str,
    amount: u64,
    expires: i64,
) -> (SpendOutcome, Option<Reservation>) {
    let made = std::sync::Mutex::new(None);
    let decide = |grants: &[CreditGrant]| {
        let burns = plan_spend(grants, amount, at(20))?;
        let entry = LedgerEntry {
            burns: burns.clone(),
            idempotency_key: Some(key.to_owned()),
            balance_after: balance(grants, at(20)) - amount,
            ..ledger_entry(EntryKind::Reserve, amount, None, 20)
        };
        let reservation = Reservation {
            id: entry.id,
            amount,
            burns,
            status: ReservationStatus::Held,
            settled_amount: None,
            expires_at: at(expires),
            created_at: at(20),
            closed_at: None,
        };
        *made.lock().unwrap() = Some(reservation.clone());
        Ok(Spending {
            entry,
            reservation: Some(reservation),
            audit: AuditEntry::system(account, AuditAction::BillingCreditsReserve, at(20)),
        })
    };
    let outcome = store
        .spend(account, key, &decide)
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    (outcome, made.into_inner().unwrap())
}

/// Closes `id` giving back `back` (burns) as `status` at `at(seconds)`.
async fn close(
    store: &dyn Store,
    account: AccountId,
    id: EntryId,
    back: Vec<Burn>,
    status: ReservationStatus,
    seconds: i64,
) -> Result<Option<Result<Closing, CloseRefusal>>, d2_kernel::StoreError> {
    let decide = |_: &[CreditGrant], held: &Reservation| {
        if held.status != ReservationStatus::Held {
            return Err(CloseRefusal::Expired);
        }
        let amount = back.iter().map(|b| b.amount).sum();
        Ok(Closing {
            reservation: Reservation {
                status,
                settled_amount: Some(held.amount.saturating_sub(amount)),
                closed_at: Some(at(seconds)),
                ..held.clone()
            },
            release: Some(LedgerEntry {
                burns: back.clone(),
                ..ledger_entry(EntryKind::Release, amount, None, seconds)
            }),
            audit: Some(AuditEntry::system(
                account,
                AuditAction::BillingCreditsSettle,
                at(seconds),
            )),
        })
    };
    store.close_reservation(account, id, &decide).await
}

/// Reservations written with their reserve entry, read back whole, due at their expiry,
/// closed once with what they give back returned to their grants, never given back above
/// a grant's amount, and nothing of one account seen by another.
pub async fn reservations(store: &dyn Store, a: AccountId, b: AccountId) {
    let made = grant_credits(store, a, 100).await;
    let (outcome, held) = reserve(store, a, "job-1", 40, 100).await;
    let (SpendOutcome::Spent(entry), Some(held)) = (outcome, held) else {
        panic!("reserved")
    };
    assert_eq!(remaining(store, a).await, vec![60]);
    assert_eq!(
        store.reservation(a, entry.id).await.ok().flatten().as_ref(),
        Some(&held),
        "read back whole"
    );
    assert_eq!(store.reservation(b, entry.id).await.ok().flatten(), None);
    let due = |seconds| async move {
        store
            .due_reservations(at(seconds), 10)
            .await
            .unwrap_or_default()
    };
    assert!(due(99).await.is_empty());
    assert_eq!(due(100).await, vec![(a, entry.id)]);

    // The other account cannot close it.
    let back = vec![Burn {
        grant: made.id,
        amount: 15,
    }];
    assert!(matches!(
        close(
            store,
            b,
            entry.id,
            back.clone(),
            ReservationStatus::Settled,
            50
        )
        .await,
        Ok(None)
    ));
    let closed = close(
        store,
        a,
        entry.id,
        back.clone(),
        ReservationStatus::Settled,
        50,
    )
    .await;
    assert!(matches!(closed, Ok(Some(Ok(_)))), "{closed:?}");
    assert_eq!(remaining(store, a).await, vec![75]);
    let settled = store.reservation(a, entry.id).await.ok().flatten().unwrap();
    assert_eq!(settled.status, ReservationStatus::Settled);
    assert_eq!(settled.settled_amount, Some(25));
    assert_eq!(settled.closed_at, Some(at(50)));
    assert!(due(1_000).await.is_empty(), "settled: no longer due");
    let last = latest(store, a, 1).await;
    assert_eq!(last[0].kind, EntryKind::Release);
    assert_eq!(last[0].burns, back);
    // Closed: the decision refuses, nothing changes.
    assert!(matches!(
        close(store, a, entry.id, back, ReservationStatus::Settled, 60).await,
        Ok(Some(Err(CloseRefusal::Expired)))
    ));
    assert_eq!(remaining(store, a).await, vec![75]);

    // Giving back more than the grant's amount fails the whole transaction.
    let (SpendOutcome::Spent(second), _) = reserve(store, a, "job-2", 10, 100).await else {
        panic!("reserved")
    };
    let over = vec![Burn {
        grant: made.id,
        amount: 50,
    }];
    assert!(
        close(store, a, second.id, over, ReservationStatus::Expired, 70)
            .await
            .is_err()
    );
    assert_eq!(remaining(store, a).await, vec![65]);
    let still = store
        .reservation(a, second.id)
        .await
        .ok()
        .flatten()
        .unwrap();
    assert_eq!(still.status, ReservationStatus::Held);
    assert!(
        store
            .reservation(b, second.id)
            .await
            .ok()
            .flatten()
            .is_none()
    );
}

fn budget(kind: MeterKind, subject: &str, monthly_credits: u64, seconds: i64) -> Budget {
    Budget {
        kind,
        subject: subject.to_owned(),
        monthly_credits,
        updated_at: at(seconds),
    }
}

/// Budgets set, replaced, read back whole in order, deleted once, each change audited in
/// its transaction, and nothing of one account seen by another.
pub async fn budgets(store: &dyn Store, a: AccountId, b: AccountId) {
    let audit = |action| AuditEntry::system(a, action, at(1));
    let set = |made: Budget| async move {
        store
            .set_budget(a, &made, &audit(AuditAction::BillingBudgetSet))
            .await
            .unwrap_or_else(|e| panic!("set budget: {e}"));
    };
    set(budget(MeterKind::Model, "gpt-4o", 500, 1)).await;
    set(budget(MeterKind::Agent, "researcher", 40, 2)).await;
    set(budget(MeterKind::Model, "claude", 70, 3)).await;
    // The same model again: replaced, not added.
    set(budget(MeterKind::Model, "gpt-4o", 900, 4)).await;
    let read = store.budgets(a).await.unwrap_or_default();
    assert_eq!(
        read,
        vec![
            budget(MeterKind::Agent, "researcher", 40, 2),
            budget(MeterKind::Model, "claude", 70, 3),
            budget(MeterKind::Model, "gpt-4o", 900, 4),
        ]
    );
    assert!(store.budgets(b).await.unwrap_or_default().is_empty());
    let delete = |account, kind, subject: &'static str| async move {
        store
            .delete_budget(
                account,
                kind,
                subject,
                &audit(AuditAction::BillingBudgetDelete),
            )
            .await
            .unwrap_or_else(|e| panic!("delete budget: {e}"))
    };
    assert!(!delete(b, MeterKind::Model, "claude").await, "not b's");
    assert!(
        !delete(a, MeterKind::Agent, "claude").await,
        "the kind matters"
    );
    assert!(delete(a, MeterKind::Model, "claude").await);
    assert!(!delete(a, MeterKind::Model, "claude").await, "once");
    assert_eq!(store.budgets(a).await.unwrap_or_default().len(), 2);
    assert_eq!(
        records_of(store, a, AuditAction::BillingBudgetSet)
            .await
            .len(),
        4
    );
    assert_eq!(
        records_of(store, a, AuditAction::BillingBudgetDelete)
            .await
            .len(),
        1,
        "a delete that found nothing is not audited"
    );
}

/// Usage records and ledger entries paged newest first (ties on time in id order) without
/// loss or repeat, each filter applied, and nothing of one account in another's history.
pub async fn billing_history(store: &dyn Store, a: AccountId, b: AccountId) {
    grant_credits(store, a, 1_000).await;
    grant_credits(store, b, 10).await;
    let agent = UsageRecord {
        meter: Meter::Agent {
            agent: "researcher".to_owned(),
            operation: "invoke".to_owned(),
            invocations: 2,
        },
        ..usage_record("h-agent", "", 5, 100)
    };
    let other_credential = UsageRecord {
        credential: "token:other".to_owned(),
        ..usage_record("h-other", "claude", 7, 101)
    };
    let mut made = vec![agent, other_credential];
    // Three at one instant: their order is their ids'.
    for n in 0..3 {
        made.push(usage_record(&format!("h-tie-{n}"), "gpt-4o", 1, 102));
    }
    made.push(usage_record("h-late", "claude", 2, 103));
    // A batch each: one ledger entry each, all of one instant.
    for one in &made {
        record(store, a, std::slice::from_ref(one), &[])
            .await
            .unwrap_or_else(|r| panic!("{r:?}"));
    }
    record(store, b, &[usage_record("h-b", "gpt-4o", 1, 102)], &[])
        .await
        .unwrap_or_else(|r| panic!("{r:?}"));

    let mut newest_first = made.clone();
    newest_first.sort_by_key(|r| std::cmp::Reverse((r.recorded_at, r.id)));
    let records = |filter: RecordFilter| {
        move |page: PageRequest| {
            let filter = filter.clone();
            async move { store.usage_records(a, &filter, &page).await }
        }
    };
    let pages = every_page(2, records(RecordFilter::default())).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 2],
        "the last page says so: no empty page after it"
    );
    assert_eq!(
        pages.concat(),
        newest_first,
        "every record once, read back whole"
    );

    let keys = |pages: Vec<Vec<UsageRecord>>| -> Vec<String> {
        pages
            .concat()
            .into_iter()
            .map(|r| r.idempotency_key)
            .collect()
    };
    let claude = RecordFilter {
        subject: Some("claude".to_owned()),
        ..RecordFilter::default()
    };
    assert_eq!(
        keys(every_page(1, records(claude)).await),
        ["h-late", "h-other"]
    );
    let agents = RecordFilter {
        kind: Some(MeterKind::Agent),
        ..RecordFilter::default()
    };
    assert_eq!(keys(every_page(5, records(agents)).await), ["h-agent"]);
    let other = RecordFilter {
        credential: Some("token:other".to_owned()),
        ..RecordFilter::default()
    };
    assert_eq!(keys(every_page(5, records(other)).await), ["h-other"]);
    let span = RecordFilter {
        kind: Some(MeterKind::Model),
        since: Some(at(101)),
        until: Some(at(103)),
        ..RecordFilter::default()
    };
    assert_eq!(
        every_page(2, records(span)).await.concat().len(),
        4,
        "since included, until excluded"
    );
    let b_records = store
        .usage_records(b, &RecordFilter::default(), &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("records: {e}"));
    assert_eq!(b_records.items.len(), 1);
    assert_eq!(b_records.items[0].idempotency_key, "h-b");

    // The ledger: the grant and one entry per batch, all of one instant but the grant.
    let entries = |filter: LedgerFilter| {
        move |page: PageRequest| {
            let filter = filter.clone();
            async move { store.ledger(a, &filter, &page).await }
        }
    };
    let all = every_page(4, entries(LedgerFilter::default()))
        .await
        .concat();
    assert_eq!(all.len(), made.len() + 1);
    let positions: Vec<_> = all.iter().map(|e| (e.created_at, e.id)).collect();
    let mut sorted = positions.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    sorted.dedup();
    assert_eq!(positions, sorted, "newest first, none twice");
    assert_eq!(all.last().map(|e| e.kind), Some(EntryKind::Grant));
    let usage = LedgerFilter {
        kind: Some(EntryKind::Usage),
        ..LedgerFilter::default()
    };
    let usage_entries = every_page(4, entries(usage)).await.concat();
    assert_eq!(usage_entries.len(), made.len());
    let mut paid_by: Vec<EntryId> = made.iter().map(|r| r.entry_id).collect();
    let mut entry_ids: Vec<EntryId> = usage_entries.iter().map(|e| e.id).collect();
    paid_by.sort();
    entry_ids.sort();
    assert_eq!(
        entry_ids, paid_by,
        "a record names the entry that paid for it"
    );
    let before_usage = LedgerFilter {
        until: Some(at(30)),
        ..LedgerFilter::default()
    };
    let early = every_page(4, entries(before_usage)).await.concat();
    assert_eq!(
        early.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EntryKind::Grant]
    );
    let b_entries = store
        .ledger(b, &LedgerFilter::default(), &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("ledger: {e}"));
    assert_eq!(b_entries.items.len(), 2, "b's grant and its one record");
}

/// A paid invoice of `account`'s subscription, its id `invoice`.
fn paid_invoice(id: &str, account: AccountId, invoice: &str) -> ProviderEvent {
    ProviderEvent {
        report: Report::Invoice(InvoiceReport {
            invoice_id: invoice.to_owned(),
            subscription_id: "sub_1".to_owned(),
            paid: true,
            plan: Some(Plan::Pro),
            period: Some((at(0), at(86_400))),
        }),
        ..event(id, Some(account), None)
    }
}

/// A paid invoice's included credits granted with its event, once per invoice whatever
/// the events that report it, their entry's balance counting the grants held.
pub async fn included_grants(store: &dyn Store, a: AccountId, b: AccountId) {
    grant_credits(store, a, 5).await;
    let told = std::sync::Mutex::new(Vec::new());
    // What the service's decision does: the event's own origin, unless granted before.
    let decide_for = |event: &ProviderEvent| {
        let origin = event.credits_origin().unwrap();
        let told = &told;
        move |account: &Account, _: Option<&Subscription>, granted: bool| {
            told.lock().unwrap().push(granted);
            let made = grant(GrantSource::Plan, 1_000, 10, Some(86_400));
            let entry = LedgerEntry {
                balance_after: 0,
                ..ledger_entry(EntryKind::Grant, 1_000, Some(made.id), 12)
            };
            Decision {
                grant: (!granted).then(|| EventGrant {
                    origin: origin.clone(),
                    grant: made,
                    entry,
                    audit: AuditEntry::system(account.id, AuditAction::BillingCreditsAdd, at(12)),
                }),
                ..Decision::nothing(EventOutcome::Applied)
            }
        }
    };
    let paid = paid_invoice("evt_paid", a, "in_1");
    assert_eq!(paid.credits_origin().as_deref(), Some("invoice:in_1"));
    let received = store.receive_event(&paid, at(12), &decide_for(&paid)).await;
    assert_eq!(received.ok(), Some((EventOutcome::Applied, Some(a))));
    // invoice.payment_succeeded reports the same invoice: the store says it was granted.
    let succeeded = paid_invoice("evt_succeeded", a, "in_1");
    store
        .receive_event(&succeeded, at(13), &decide_for(&succeeded))
        .await
        .unwrap_or_else(|e| panic!("receive: {e}"));
    assert_eq!(*told.lock().unwrap(), [false, true]);
    let grants = store.credit_grants(a).await.unwrap_or_default();
    assert_eq!(grants.len(), 2, "the purchase and one plan grant");
    assert_eq!(grants[1].source, GrantSource::Plan);
    assert_eq!(grants[1].expires_at, Some(at(86_400)));
    let entries = latest(store, a, 10).await;
    assert_eq!(entries[0].amount, 1_000);
    assert_eq!(
        entries[0].balance_after, 1_005,
        "the grants held, the new one too"
    );
    assert_eq!(
        records_of(store, a, AuditAction::BillingCreditsAdd)
            .await
            .len(),
        2
    );
    // The next invoice grants again; b's invoice of the same id is b's own.
    let next = paid_invoice("evt_next", a, "in_2");
    store
        .receive_event(&next, at(14), &decide_for(&next))
        .await
        .unwrap_or_else(|e| panic!("receive: {e}"));
    assert_eq!(told.lock().unwrap().last(), Some(&false));
    told.lock().unwrap().clear();
    let theirs = paid_invoice("evt_b", b, "in_1");
    store
        .receive_event(&theirs, at(14), &decide_for(&theirs))
        .await
        .unwrap_or_else(|e| panic!("receive: {e}"));
    assert_eq!(*told.lock().unwrap(), [false]);
    assert_eq!(store.credit_grants(a).await.unwrap_or_default().len(), 3);
    assert_eq!(store.credit_grants(b).await.unwrap_or_default().len(), 1);
}

fn raised(
    account: AccountId,
    subject: &str,
    period: i64,
    threshold: u8,
    seconds: i64,
) -> RaisedNotice {
    let notice = Notice {
        id: NoticeId::random(),
        account_id: account,
        subject: subject.to_owned(),
        period_start: at(period),
        threshold,
        used: u64::from(threshold) * 10,
        limit: 1_000,
        created_at: at(seconds),
    };
    RaisedNotice {
        audit: AuditEntry::system(account, AuditAction::BillingThresholdNotice, at(seconds))
            .target("notice", notice.id),
        task: NewTask {
            kind: NOTICE_TASK.to_owned(),
            account_id: Some(account),
            payload: serde_json::json!({ "notice_id": notice.id }),
            run_at: at(seconds),
        },
        notice,
    }
}

/// Notice endpoints set, replaced and removed with their audit records; notices recorded
/// once per account, subject, period and threshold (also when raised concurrently), read
/// back whole, newest first, each account's own; the accounts that spent since an instant
/// and have a plan grant in effect or a budget.
pub async fn notices(store: &dyn Store, a: AccountId, b: AccountId) {
    let endpoint = |url: &str, seconds| NoticeEndpoint {
        url: url.to_owned(),
        updated_at: at(seconds),
    };
    let audit = |account, action| AuditEntry::system(account, action, at(1));
    assert_eq!(store.notice_endpoint(a).await.ok(), Some(None));
    for (url, seconds) in [
        ("https://hooks.example/a", 1),
        ("https://hooks.example/a2", 2),
    ] {
        store
            .set_notice_endpoint(
                a,
                &endpoint(url, seconds),
                &audit(a, AuditAction::BillingNoticeEndpointSet),
            )
            .await
            .unwrap_or_else(|e| panic!("set endpoint: {e}"));
    }
    assert_eq!(
        store.notice_endpoint(a).await.ok(),
        Some(Some(endpoint("https://hooks.example/a2", 2))),
        "replaced"
    );
    assert_eq!(store.notice_endpoint(b).await.ok(), Some(None), "a's only");
    let delete = |account| async move {
        store
            .delete_notice_endpoint(
                account,
                &audit(account, AuditAction::BillingNoticeEndpointDelete),
            )
            .await
            .unwrap_or_else(|e| panic!("delete endpoint: {e}"))
    };
    assert!(!delete(b).await, "b has none");
    assert!(delete(a).await);
    assert!(!delete(a).await, "once");
    assert_eq!(store.notice_endpoint(a).await.ok(), Some(None));
    assert_eq!(
        records_of(store, a, AuditAction::BillingNoticeEndpointSet)
            .await
            .len(),
        2
    );
    assert_eq!(
        records_of(store, a, AuditAction::BillingNoticeEndpointDelete)
            .await
            .len(),
        1,
        "a delete that found nothing is not audited"
    );
    assert!(
        records_of(store, b, AuditAction::BillingNoticeEndpointDelete)
            .await
            .is_empty()
    );

    // Candidates: who spent since, with a limit to measure against.
    let candidates = |since, now| async move {
        store
            .notice_candidates(at(since), at(now))
            .await
            .unwrap_or_else(|e| panic!("candidates: {e}"))
    };
    assert!(candidates(0, 100).await.is_empty());
    let included = grant(GrantSource::Plan, 1_000, 10, Some(86_400));
    let entry_of = |_: &[CreditGrant]| ledger_entry(EntryKind::Grant, 1_000, Some(included.id), 0);
    store
        .add_grant(
            a,
            &included,
            &entry_of,
            &AuditEntry::system(a, AuditAction::BillingCreditsAdd, at(0)),
        )
        .await
        .unwrap_or_else(|e| panic!("grant: {e}"));
    grant_credits(store, b, 100).await;
    assert!(
        candidates(0, 100).await.is_empty(),
        "granted, nothing spent"
    );
    spend(store, a, "notice-a", 10).await;
    spend(store, b, "notice-b", 10).await;
    assert_eq!(candidates(0, 100).await, [a], "b has nothing to measure");
    store
        .set_budget(
            b,
            &budget(MeterKind::Model, "gpt-4o", 50, 1),
            &audit(b, AuditAction::BillingBudgetSet),
        )
        .await
        .unwrap_or_else(|e| panic!("budget: {e}"));
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(candidates(0, 100).await, both);
    assert_eq!(candidates(20, 100).await, both, "from the instant on");
    assert!(candidates(21, 100).await.is_empty(), "nothing spent since");
    assert_eq!(
        candidates(0, 86_400).await,
        [b],
        "a's plan grant has lapsed at its end"
    );

    // Notices: once per account, subject, period and threshold.
    let raise = |notices: Vec<RaisedNotice>| async move {
        store
            .raise_notices(&notices)
            .await
            .unwrap_or_else(|e| panic!("raise: {e}"))
    };
    let first = raised(a, INCLUDED_CREDITS, 0, 80, 10);
    let second = raised(a, INCLUDED_CREDITS, 0, 90, 10);
    assert_eq!(raise(vec![first.clone(), second.clone()]).await, 2);
    assert_eq!(
        raise(vec![
            raised(a, INCLUDED_CREDITS, 0, 80, 20),
            raised(a, INCLUDED_CREDITS, 0, 100, 20),
        ])
        .await,
        1,
        "80 % of that period was told before"
    );
    assert_eq!(
        raise(vec![
            raised(a, INCLUDED_CREDITS, 3_600, 80, 30),
            raised(a, "budget:model:gpt-4o", 0, 80, 30),
            raised(b, INCLUDED_CREDITS, 0, 80, 30),
        ])
        .await,
        3,
        "another period, another subject, another account"
    );
    let listed = store.notices(a, 10).await.unwrap_or_default();
    let keys: Vec<(&str, i64, u8)> = listed
        .iter()
        .map(|n| {
            (
                n.subject.as_str(),
                n.period_start.timestamp() - at(0).timestamp(),
                n.threshold,
            )
        })
        .collect();
    assert_eq!(keys.len(), 5);
    assert_eq!(
        &keys[3..],
        [(INCLUDED_CREDITS, 0, 90), (INCLUDED_CREDITS, 0, 80)]
    );
    assert_eq!(keys[2], (INCLUDED_CREDITS, 0, 100), "newest first");
    assert_eq!(store.notices(a, 2).await.unwrap_or_default().len(), 2);
    assert_eq!(
        store.notice(a, first.notice.id).await.ok(),
        Some(Some(first.notice.clone())),
        "read back whole"
    );
    assert_eq!(
        store.notice(b, first.notice.id).await.ok(),
        Some(None),
        "a's notice is not b's"
    );
    assert_eq!(store.notices(b, 10).await.unwrap_or_default().len(), 1);
    assert_eq!(
        records_of(store, a, AuditAction::BillingThresholdNotice)
            .await
            .len(),
        5,
        "each notice recorded is audited, none other"
    );

    // Raised by several replicas at once: recorded once.
    let racing = join_all((0..8).map(|_| async {
        store
            .raise_notices(&[raised(a, "budget:agent:researcher", 0, 100, 40)])
            .await
    }))
    .await;
    let recorded: u64 = racing.into_iter().map(|r| r.unwrap_or(0)).sum();
    assert_eq!(recorded, 1);
}
