//! Usage priced from the price table and paid from the ledger, windows of usage, and
//! reservations, through the services on the in-memory store.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use d2_accounts::memory::MemoryAccountRepo;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{AccountId, AuthContext, Credential, Grant, ManualClock, Scope, ScopeSet, TokenId};

use crate::memory::MemoryBillingRepo;
use crate::{
    CreditError, CreditLedger, GrantRequest, GrantSource, Meter, PriceTable, SpendRequest,
    UsageError, UsageMeter, UsageQuery, UsageReport, Window,
};

const PRICES: &str = "
models:
  gpt-4o:
    - version: 1
      from: 2026-01-01T00:00:00Z
      input_per_million: 2500
      output_per_million: 10000
    - version: 2
      from: 2026-12-03T13:00:00Z
      input_per_million: 5000
      output_per_million: 10000
  free-model:
    - version: 1
      from: 2026-01-01T00:00:00Z
operations:
  invoke:
    - version: 1
      from: 2026-01-01T00:00:00Z
      per_invocation: 3
";

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

struct World {
    usage: UsageMeter,
    credits: CreditLedger,
    clock: Arc<ManualClock>,
    ctx: AuthContext,
}

pub(crate) fn context(account: AccountId, scopes: &[Scope]) -> AuthContext {
    AuthContext {
        account_id: account,
        credential: Credential::ApiToken(TokenId::random()),
        user_id: None,
        acting_for: None,
        role: None,
        scopes: ScopeSet::new(scopes.iter().map(|scope| Grant::Scope(*scope))),
        app_name: None,
    }
}

async fn world(credits: u64) -> World {
    let clock = Arc::new(ManualClock::new(start()));
    let accounts = Arc::new(MemoryAccountRepo::new(Arc::new(MemoryAuditLog::default())));
    let repo = Arc::new(MemoryBillingRepo::new(accounts));
    let table = PriceTable::from_yaml(PRICES).unwrap();
    let world = World {
        usage: UsageMeter::new(repo.clone(), Arc::new(table), clock.clone()),
        credits: CreditLedger::new(repo, clock.clone()),
        clock,
        ctx: context(AccountId::random(), &[Scope::Admin, Scope::UsageReport]),
    };
    world
        .credits
        .add(
            &world.ctx,
            GrantRequest {
                source: GrantSource::Purchase,
                amount: credits,
                priority: 10,
                effective_at: None,
                expires_at: None,
                reason: None,
            },
        )
        .await
        .unwrap();
    world
}

fn model(key: &str, model: &str, input_tokens: u64, output_tokens: u64) -> UsageReport {
    UsageReport {
        idempotency_key: key.to_owned(),
        meter: Meter::Model {
            model: model.to_owned(),
            input_tokens,
            output_tokens,
        },
    }
}

fn agent(key: &str, operation: &str, invocations: u64) -> UsageReport {
    UsageReport {
        idempotency_key: key.to_owned(),
        meter: Meter::Agent {
            agent: "researcher".to_owned(),
            operation: operation.to_owned(),
            invocations,
        },
    }
}

impl World {
    async fn balance(&self) -> u64 {
        self.credits.overview(&self.ctx).await.unwrap().balance
    }
}

#[test]
fn a_price_table_is_checked_when_it_is_read() {
    let table = PriceTable::from_yaml(PRICES).unwrap();
    assert_eq!(table.models(), ["free-model", "gpt-4o"]);
    assert_eq!(table.model("gpt-4o", start()).map(|p| p.version), Some(1));
    assert_eq!(
        table
            .model("gpt-4o", start() + Duration::hours(1))
            .map(|p| p.version),
        Some(2),
        "the later version from its time on"
    );
    assert_eq!(
        table.model("gpt-4o", Utc.timestamp_opt(0, 0).unwrap()),
        None,
        "nothing before the first version"
    );
    assert_eq!(
        table.operation("invoke", start()).map(|p| p.per_invocation),
        Some(3)
    );
    for bad in [
        "models: {m: []}",
        "models: {m: [{version: 0, from: 2026-01-01T00:00:00Z}]}",
        "models: {m: [{version: 2, from: 2026-02-01T00:00:00Z}, {version: 1, from: 2026-03-01T00:00:00Z}]}",
        "models: {m: [{version: 1, from: 2026-02-01T00:00:00Z}, {version: 2, from: 2026-01-01T00:00:00Z}]}",
        "models: {'a b': [{version: 1, from: 2026-01-01T00:00:00Z}]}",
        "models: {m: [{version: 1, from: 2026-01-01T00:00:00Z, per_token: 1}]}",
        "models: {m: [{version: 1, from: 2026-01-01T00:00:00Z, input_per_million: -1}]}",
        "models: {m: [{version: 1, from: 2026-01-01T00:00:00Z, input_per_million: 1000000000001}]}",
        "plans: {}",
    ] {
        assert!(PriceTable::from_yaml(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn reports_are_priced_at_the_version_in_force_and_rounded_up_once() {
    let world = world(1000).await;
    let recording = world
        .usage
        .record(
            &world.ctx,
            vec![
                // 1000 × 2500 + 100 × 10000 = 3,500,000 millionths: 3.5, so 4 credits.
                model("a", "gpt-4o", 1000, 100),
                // 3 per invocation.
                agent("b", "invoke", 5),
                // A price of nothing costs nothing.
                model("c", "free-model", 10_000, 10_000),
                // One token: a millionth of 2500 credits, rounded up to one.
                model("d", "gpt-4o", 1, 0),
            ],
        )
        .await
        .unwrap();
    let costs: Vec<u64> = recording.reports.iter().map(|r| r.record.credits).collect();
    assert_eq!(costs, [4, 15, 0, 1]);
    assert_eq!(recording.balance, 980);
    assert_eq!(world.balance().await, 980);
    assert!(
        recording
            .reports
            .iter()
            .all(|r| r.record.price_version == 1)
    );
    assert!(
        recording
            .reports
            .iter()
            .all(|r| r.record.credential == world.ctx.actor())
    );

    world.clock.advance(Duration::hours(1));
    let later = world
        .usage
        .record(&world.ctx, vec![model("e", "gpt-4o", 1000, 100)])
        .await
        .unwrap();
    let record = &later.reports[0].record;
    assert_eq!((record.credits, record.price_version), (6, 2));
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_and_a_retry_charges_nothing() {
    let world = world(20).await;
    let first = world
        .usage
        .record(&world.ctx, vec![agent("a", "invoke", 2)])
        .await
        .unwrap();
    assert_eq!(world.balance().await, 14);

    // The retry beside a new report: the first record again, only the new one charged.
    let again = world
        .usage
        .record(
            &world.ctx,
            vec![agent("a", "invoke", 2), agent("b", "invoke", 1)],
        )
        .await
        .unwrap();
    assert_eq!(again.reports[0].record, first.reports[0].record);
    assert!(again.reports[0].replayed);
    assert!(!again.reports[1].replayed);
    assert_eq!(world.balance().await, 11);

    // Too much: 402 for the batch, nothing recorded, not even the affordable report.
    let refused = world
        .usage
        .record(
            &world.ctx,
            vec![agent("c", "invoke", 1), agent("d", "invoke", 4)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            UsageError::Insufficient(crate::InsufficientCredits {
                requested: 15,
                available: 11
            })
        ),
        "{refused:?}"
    );
    assert_eq!(world.balance().await, 11);
    let c_again = world
        .usage
        .record(&world.ctx, vec![agent("c", "invoke", 1)])
        .await
        .unwrap();
    assert!(!c_again.reports[0].replayed, "c was never recorded");

    // The same key for other usage, or for a spend: 409; nothing written.
    let reused = world
        .usage
        .record(&world.ctx, vec![agent("a", "invoke", 3)])
        .await
        .unwrap_err();
    assert!(matches!(reused, UsageError::KeyReused(ref key) if key == "a"));
    world
        .credits
        .spend(
            &world.ctx,
            SpendRequest {
                amount: 1,
                idempotency_key: "spent".to_owned(),
                reason: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        world
            .usage
            .record(&world.ctx, vec![agent("spent", "invoke", 1)])
            .await,
        Err(UsageError::KeyReused(_))
    ));
    // And a usage key cannot be spent under.
    assert!(matches!(
        world
            .credits
            .spend(
                &world.ctx,
                SpendRequest {
                    amount: 3,
                    idempotency_key: "c".to_owned(),
                    reason: None,
                },
            )
            .await,
        Err(CreditError::KeyReused)
    ));
    assert_eq!(world.balance().await, 7);
}

#[tokio::test]
async fn bad_reports_are_refused_before_anything_is_written() {
    let world = world(100).await;
    let cases: Vec<(Vec<UsageReport>, &str)> = vec![
        (vec![], "invalid"),
        (
            (0..1001)
                .map(|n| agent(&n.to_string(), "invoke", 1))
                .collect(),
            "invalid",
        ),
        (
            vec![agent("a", "invoke", 1), agent("a", "invoke", 1)],
            "invalid",
        ),
        (vec![model("", "gpt-4o", 1, 1)], "invalid"),
        (vec![model("k\n", "gpt-4o", 1, 1)], "invalid"),
        (vec![model("k", "gpt-4o", 0, 0)], "invalid"),
        (vec![model("k", "gpt-4o", 1_000_000_000_001, 0)], "invalid"),
        (vec![model("k", "gpt 4o", 1, 0)], "invalid"),
        (vec![agent("k", "invoke", 0)], "invalid"),
        (vec![model("k", "gpt-5-unpriced", 1, 0)], "unknown_model"),
        (vec![agent("k", "teleport", 1)], "unknown_operation"),
        (
            vec![agent("ok", "invoke", 1), model("k", "nope", 1, 0)],
            "unknown_model",
        ),
    ];
    for (reports, expected) in cases {
        let error = world.usage.record(&world.ctx, reports).await.unwrap_err();
        let kind = match error {
            UsageError::Invalid(_) => "invalid",
            UsageError::UnknownModel(_) => "unknown_model",
            UsageError::UnknownOperation(_) => "unknown_operation",
            other => panic!("{other:?}"),
        };
        assert_eq!(kind, expected);
    }
    assert_eq!(world.balance().await, 100);

    let reader = context(world.ctx.account_id, &[Scope::PolicyRead]);
    assert!(matches!(
        world
            .usage
            .record(&reader, vec![agent("k", "invoke", 1)])
            .await,
        Err(UsageError::Access(_))
    ));
    assert!(matches!(
        world
            .usage
            .usage(
                &context(world.ctx.account_id, &[Scope::UsageReport]),
                UsageQuery {
                    window: Window::Day,
                    from: None,
                    to: None,
                    subject: None,
                    credential: None,
                }
            )
            .await,
        Err(UsageError::Access(_))
    ));
}

#[tokio::test]
async fn usage_is_summed_by_hour_day_and_month_and_filtered() {
    let world = world(10_000).await;
    let other = context(world.ctx.account_id, &[Scope::UsageReport]);
    world
        .usage
        .record(
            &world.ctx,
            vec![agent("a", "invoke", 1), model("b", "gpt-4o", 400, 0)],
        )
        .await
        .unwrap();
    world.clock.advance(Duration::minutes(30));
    world
        .usage
        .record(&other, vec![agent("c", "invoke", 2)])
        .await
        .unwrap();
    world.clock.advance(Duration::hours(1));
    world
        .usage
        .record(&world.ctx, vec![agent("d", "invoke", 4)])
        .await
        .unwrap();
    world.clock.advance(Duration::days(1));
    world
        .usage
        .record(&world.ctx, vec![agent("e", "invoke", 8)])
        .await
        .unwrap();
    let query = |window, subject: Option<&str>, credential: Option<String>| UsageQuery {
        window,
        from: Some(start()),
        to: Some(start() + Duration::days(3)),
        subject: subject.map(str::to_owned),
        credential,
    };

    let hours = world
        .usage
        .usage(&world.ctx, query(Window::Hour, None, None))
        .await
        .unwrap();
    let by_hour: Vec<(DateTime<Utc>, u64)> = hours
        .buckets
        .iter()
        .map(|b| (b.start, b.totals.invocations))
        .collect();
    assert_eq!(
        by_hour,
        [
            (start(), 3),
            (start() + Duration::hours(1), 4),
            (start() + Duration::hours(25), 8)
        ]
    );
    assert_eq!(hours.totals.invocations, 15);
    assert_eq!(hours.totals.credits, 45 + 1);
    assert_eq!(
        hours.buckets[0].by.len(),
        3,
        "model, and invoke by two credentials"
    );

    let days = world
        .usage
        .usage(&world.ctx, query(Window::Day, None, None))
        .await
        .unwrap();
    let by_day: Vec<u64> = days.buckets.iter().map(|b| b.totals.invocations).collect();
    assert_eq!(by_day, [7, 8]);
    let months = world
        .usage
        .usage(&world.ctx, query(Window::Month, None, None))
        .await
        .unwrap();
    assert_eq!(months.buckets.len(), 1);
    assert_eq!(
        months.buckets[0].start,
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
    );
    assert_eq!(months.totals, hours.totals);

    let models = world
        .usage
        .usage(&world.ctx, query(Window::Day, Some("gpt-4o"), None))
        .await
        .unwrap();
    assert_eq!(
        (models.totals.input_tokens, models.totals.credits),
        (400, 1)
    );
    let by_other = world
        .usage
        .usage(&world.ctx, query(Window::Day, None, Some(other.actor())))
        .await
        .unwrap();
    assert_eq!(by_other.totals.invocations, 2);

    for (from, to) in [(start(), start()), (start(), start() + Duration::days(32))] {
        let bad = world
            .usage
            .usage(
                &world.ctx,
                UsageQuery {
                    from: Some(from),
                    to: Some(to),
                    ..query(Window::Hour, None, None)
                },
            )
            .await;
        assert!(matches!(bad, Err(UsageError::Invalid(_))));
    }
}

fn hold(key: &str, amount: u64) -> SpendRequest {
    SpendRequest {
        amount,
        idempotency_key: key.to_owned(),
        reason: None,
    }
}

#[tokio::test]
async fn a_reservation_holds_credits_until_settled_for_what_the_work_cost() {
    let world = world(100).await;
    let (held, made) = world
        .credits
        .reserve(&world.ctx, hold("job", 50), Duration::minutes(10))
        .await
        .unwrap();
    assert!(!made.replayed);
    assert_eq!(world.balance().await, 50);
    let (again, retry) = world
        .credits
        .reserve(&world.ctx, hold("job", 50), Duration::minutes(10))
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(again, held);
    assert!(matches!(
        world
            .credits
            .reserve(&world.ctx, hold("job", 51), Duration::minutes(10))
            .await,
        Err(CreditError::KeyReused)
    ));
    assert!(matches!(
        world.credits.settle(&world.ctx, held.id, 51).await,
        Err(CreditError::AboveReservation(50))
    ));

    let (settled, release) = world.credits.settle(&world.ctx, held.id, 20).await.unwrap();
    assert_eq!(settled.settled_amount, Some(20));
    assert_eq!(release.map(|r| r.amount), Some(30));
    assert_eq!(world.balance().await, 80);
    // A retry: the same settlement, nothing given back again.
    let (same, none) = world.credits.settle(&world.ctx, held.id, 20).await.unwrap();
    assert_eq!((same, none), (settled, None));
    assert_eq!(world.balance().await, 80);
    assert!(matches!(
        world.credits.settle(&world.ctx, held.id, 10).await,
        Err(CreditError::ReservationSettled(20))
    ));

    // Another account's, or none at all: not found.
    let stranger = context(AccountId::random(), &[Scope::UsageReport]);
    assert!(matches!(
        world.credits.settle(&stranger, held.id, 20).await,
        Err(CreditError::ReservationNotFound)
    ));
    assert!(matches!(
        world.credits.reservation(&stranger, held.id).await,
        Err(CreditError::ReservationNotFound)
    ));
    for seconds in [0, 5, 604_801] {
        assert!(matches!(
            world
                .credits
                .reserve(&world.ctx, hold("short", 1), Duration::seconds(seconds))
                .await,
            Err(CreditError::Invalid(_))
        ));
    }
    assert!(matches!(
        world
            .credits
            .reserve(&world.ctx, hold("big", 81), Duration::minutes(1))
            .await,
        Err(CreditError::Insufficient(_))
    ));
}

#[tokio::test]
async fn an_unsettled_reservation_gives_everything_back_at_its_expiry() {
    let world = world(100).await;
    let (held, _) = world
        .credits
        .reserve(&world.ctx, hold("job", 60), Duration::minutes(1))
        .await
        .unwrap();
    let (later, _) = world
        .credits
        .reserve(&world.ctx, hold("later", 10), Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(world.credits.expire_due().await.unwrap(), 0, "not due yet");
    world.clock.advance(Duration::minutes(1));
    // At its expiry it can no longer be settled, even before the job runs.
    assert!(matches!(
        world.credits.settle(&world.ctx, held.id, 10).await,
        Err(CreditError::ReservationExpired)
    ));
    assert_eq!(world.credits.expire_due().await.unwrap(), 1);
    assert_eq!(world.balance().await, 90);
    assert_eq!(world.credits.expire_due().await.unwrap(), 0, "once");
    let expired = world
        .credits
        .reservation(&world.ctx, held.id)
        .await
        .unwrap();
    assert_eq!(expired.status.as_str(), "expired");
    assert!(matches!(
        world.credits.settle(&world.ctx, held.id, 10).await,
        Err(CreditError::ReservationExpired)
    ));
    let still = world
        .credits
        .reservation(&world.ctx, later.id)
        .await
        .unwrap();
    assert_eq!(still.status.as_str(), "held");
}
