//! The adapter against a real PostgreSQL: the shared port contracts (`ports`), plus what
//! only PostgreSQL does (the LISTEN change feed, migrations, skipped row locks).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, Change, TokenId};
use tokio_util::sync::CancellationToken;

use crate::testing::TestDatabase;
use crate::{ChangeListener, PgStore, PoolSettings, pending_migrations};

#[path = "../../sql/port_tests.rs"]
mod ports;

/// Every table of the database, by name.
const TABLE_NAMES: &str =
    "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()";

use ports::{contract_token, wait_for};

async fn store(db: &TestDatabase) -> PgStore {
    PgStore::connect(&PoolSettings::new(db.url()))
        .await
        .unwrap()
}

/// A `bytea` literal of the bytes `hex` spells, for SQL written by hand.
fn blob_literal(hex: &str) -> String {
    format!("'\\x{hex}'::bytea")
}

/// Another process's view of the test's database.
async fn another(db: &TestDatabase) -> PgStore {
    store(db).await
}

/// Returns once every stored event is final for the export (transactions begun before
/// them, on any database of the server, have ended).
async fn until_events_final(store: &PgStore) {
    store.wait_until_events_final().await;
}

/// A store on a database of its own, dropped with the guard.
async fn fresh() -> (TestDatabase, PgStore) {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    (db, store)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloned_database_has_every_migration_applied() {
    let db = TestDatabase::new().await;
    assert!(pending_migrations(db.url()).await.unwrap().is_empty());
    // Running them again is a no-op.
    assert!(crate::run_migrations(db.url()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn token_changes_are_announced_to_listeners_on_commit() {
    use d2_tokens::TokenRepo;

    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let seen: Arc<Mutex<Vec<Change>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let sink = seen.clone();
    let listener = ChangeListener::spawn(db.url().to_owned(), shutdown.clone(), move |change| {
        sink.lock().unwrap().push(change);
    });
    wait_for(&seen, |changes| changes.contains(&Change::Resync)).await;

    // A revoke of an unknown token announces nothing; a real one announces its id.
    let account = AccountId::random();
    let audit = AuditEntry::system(account, AuditAction::TokenRevoke, Utc::now());
    store
        .revoke(account, TokenId::random(), Utc::now(), &audit)
        .await
        .unwrap();
    let (token_id, account_id) = contract_token(&store).await;
    // A changed expiry is announced too: cached verifications hold the old one.
    let patch = d2_tokens::TokenPatch {
        expires_at: Some(Some(Utc::now() + chrono::Duration::hours(1))),
        ..d2_tokens::TokenPatch::default()
    };
    let audit_of = |_: &d2_tokens::ApiToken, _: &d2_tokens::ApiToken| {
        AuditEntry::system(account_id, AuditAction::TokenUpdate, Utc::now())
    };
    let updated = store
        .update_token(account_id, token_id, &patch, Utc::now(), &audit_of)
        .await
        .unwrap();
    assert!(matches!(updated, d2_tokens::UpdateOutcome::Updated(_)));
    wait_for(&seen, |changes| changes.contains(&Change::Token(token_id))).await;
    let audit = AuditEntry::system(account_id, AuditAction::TokenRevoke, Utc::now());
    store
        .revoke(account_id, token_id, Utc::now(), &audit)
        .await
        .unwrap();
    wait_for(&seen, |changes| {
        changes
            .iter()
            .filter(|c| **c == Change::Token(token_id))
            .count()
            == 2
    })
    .await;
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|c| matches!(c, Change::Token(_)))
            .count(),
        2
    );

    shutdown.cancel();
    listener.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_reported_as_unavailable() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    db.drop_now();
    let error = store.ping().await.unwrap_err();
    assert!(
        matches!(error, d2_kernel::StoreError::Unavailable(_)),
        "{error:?}"
    );
    let mut unreachable = PoolSettings::new("postgres://postgres@127.0.0.1:1/none");
    unreachable.acquire_timeout = Duration::from_millis(500);
    let error = PgStore::connect(&unreachable).await.unwrap_err();
    assert!(error.to_string().contains("127.0.0.1:1/none"), "{error}");
}

/// Stores a trial account whose trial ended a day ago.
async fn expired_trial(store: &PgStore) -> AccountId {
    use diesel_async::RunQueryDsl;

    let id = AccountId::random();
    let mut conn = store.conn().await.unwrap();
    diesel::sql_query(
        "INSERT INTO accounts (id, name, plan, trial_expires_at, created_at, updated_at) \
         VALUES ($1, 'Expired', 'trial', now() - interval '1 day', now(), now())",
    )
    .bind::<diesel::sql_types::Uuid, _>(id.as_uuid())
    .execute(&mut conn)
    .await
    .unwrap();
    id
}

/// Creates a tenant whose token expired a minute ago.
async fn expired_token(store: &PgStore) -> TokenId {
    use diesel_async::RunQueryDsl;

    let (token_id, _) = contract_token(store).await;
    let mut conn = store.conn().await.unwrap();
    diesel::sql_query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(token_id.as_uuid())
    .execute(&mut conn)
    .await
    .unwrap();
    token_id
}

fn lock_audit(account: &d2_accounts::Account) -> AuditEntry {
    AuditEntry::system(account.id, AuditAction::AccountLock, Utc::now())
}

fn expire_audit(token: &d2_tokens::ApiToken) -> AuditEntry {
    AuditEntry::system(token.account_id, AuditAction::TokenExpire, Utc::now())
        .target("token", token.id)
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_jobs_announce_each_change_on_commit() {
    use d2_accounts::AccountRepo;
    use d2_tokens::TokenRepo;

    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let seen: Arc<Mutex<Vec<Change>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let sink = seen.clone();
    let listener = ChangeListener::spawn(db.url().to_owned(), shutdown.clone(), move |change| {
        sink.lock().unwrap().push(change);
    });
    wait_for(&seen, |changes| changes.contains(&Change::Resync)).await;

    let account = expired_trial(&store).await;
    let token = expired_token(&store).await;
    let locked = store
        .lock_expired_trials(Utc::now(), 10, &lock_audit)
        .await
        .unwrap();
    assert_eq!(locked, vec![account]);
    let expired = store
        .revoke_expired(Utc::now(), 10, &expire_audit)
        .await
        .unwrap();
    assert_eq!(expired, vec![token]);
    wait_for(&seen, |changes| {
        changes.contains(&Change::Account(account)) && changes.contains(&Change::Token(token))
    })
    .await;

    shutdown.cancel();
    listener.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_jobs_skip_rows_another_transaction_holds() {
    use d2_accounts::AccountRepo;
    use d2_tokens::TokenRepo;
    use diesel_async::RunQueryDsl;

    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let account = expired_trial(&store).await;
    let token = expired_token(&store).await;

    // Another transaction (a concurrent update or revoke) holds both rows.
    let mut holder = store.conn().await.unwrap();
    diesel::sql_query("BEGIN")
        .execute(&mut holder)
        .await
        .unwrap();
    diesel::sql_query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind::<diesel::sql_types::Uuid, _>(account.as_uuid())
        .execute(&mut holder)
        .await
        .unwrap();
    diesel::sql_query("SELECT id FROM api_tokens WHERE id = $1 FOR UPDATE")
        .bind::<diesel::sql_types::Uuid, _>(token.as_uuid())
        .execute(&mut holder)
        .await
        .unwrap();

    let within = Duration::from_secs(5);
    let locked = tokio::time::timeout(
        within,
        store.lock_expired_trials(Utc::now(), 10, &lock_audit),
    )
    .await
    .expect("the job does not wait for held rows")
    .unwrap();
    assert!(locked.is_empty());
    let expired = tokio::time::timeout(within, store.revoke_expired(Utc::now(), 10, &expire_audit))
        .await
        .expect("the job does not wait for held rows")
        .unwrap();
    assert!(expired.is_empty());

    diesel::sql_query("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    drop(holder);
    assert_eq!(
        store
            .lock_expired_trials(Utc::now(), 10, &lock_audit)
            .await
            .unwrap(),
        vec![account],
        "a later run takes them"
    );
    assert_eq!(
        store
            .revoke_expired(Utc::now(), 10, &expire_audit)
            .await
            .unwrap(),
        vec![token]
    );
}

mod export_order {
    use chrono::Duration;
    use d2_events::{EventStore, ExportCheckpoints, ExportCursor, NewEvent};
    use d2_testkit::fixtures::{event, t0};
    use serde_json::json;

    use super::{fresh, store};
    use crate::migrate::{run_migrations, run_migrations_before};
    use crate::testing::TestDatabase;

    fn polls(account: d2_kernel::AccountId, ingested: &[i64]) -> Vec<NewEvent> {
        ingested
            .iter()
            .map(|&s| {
                event(
                    account,
                    "policy_poll",
                    json!({ "s": s }),
                    t0() + Duration::seconds(s),
                    0,
                )
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_ingest_still_open_holds_back_every_later_event_until_it_commits() {
        let (_db, store) = fresh().await;
        let account = d2_kernel::AccountId::random();
        super::ports::ensure_accounts(&store, [account]).await;
        let [early, later] = <[NewEvent; 2]>::try_from(polls(account, &[0, 3600])).unwrap();

        let held = store
            .insert_events_uncommitted(std::slice::from_ref(&early))
            .await;
        store
            .insert_events(std::slice::from_ref(&later))
            .await
            .unwrap();
        // `later` is committed, but its transaction began after the held one: a cursor
        // past it would pass `early` when that commits.
        let batch = store.events_after(None, 100).await.unwrap();
        assert!(batch.events.is_empty(), "{batch:?}");

        held.commit().await;
        store.wait_until_events_final().await;
        let batch = store.events_after(None, 100).await.unwrap();
        let stream: Vec<&NewEvent> = batch.events.iter().map(|s| &s.event).collect();
        assert_eq!(
            stream,
            vec![&early, &later],
            "in the order their transactions began"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_export_checkpoint_in_ingest_order_becomes_a_place_the_export_resumes_from() {
        let db = TestDatabase::unmigrated().await;
        run_migrations_before(db.url(), "2026-12-01-000007")
            .await
            .unwrap();
        let before = store(&db).await;
        let account = d2_kernel::AccountId::random();
        super::ports::ensure_accounts(&before, [account]).await;
        // Ids 1 to 5, ingested (by the seconds below) out of id order.
        let events = polls(account, &[3, 1, 5, 2, 4]);
        for event in &events {
            before
                .insert_events(std::slice::from_ref(event))
                .await
                .unwrap();
        }
        // The former checkpoint: past every event up to (t0 + 3 s, id 1), so ids 2, 4 and
        // 1 were exported, 5 and 3 were not.
        {
            use diesel::sql_types::{BigInt, Timestamptz};
            use diesel_async::RunQueryDsl;
            let mut conn = before.conn().await.unwrap();
            diesel::sql_query(
                "INSERT INTO job_checkpoints (job, ingested_at, event_id) \
                 VALUES ('analytics-export', $1, $2)",
            )
            .bind::<Timestamptz, _>(t0() + Duration::seconds(3))
            .bind::<BigInt, _>(1_i64)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        drop(before);
        run_migrations(db.url()).await.unwrap();

        let store = store(&db).await;
        let checkpoint = store.load("analytics-export").await.unwrap().unwrap();
        assert_eq!(
            checkpoint.cursor,
            ExportCursor { position: 0, id: 2 },
            "every event up to id 2 was exported"
        );
        super::ports::resumes_from_a_migrated_checkpoint(&store, account, checkpoint).await;
    }
}

mod members {
    use super::{ports, store};
    use crate::migrate::{revert_last_migration, run_migrations_before};
    use crate::testing::TestDatabase;

    #[tokio::test(flavor = "multi_thread")]
    async fn users_of_one_account_become_members_and_back() {
        let db = TestDatabase::unmigrated().await;
        run_migrations_before(db.url(), "2026-12-01-000012")
            .await
            .unwrap();
        let people = ports::people_of_one_account(&store(&db).await).await;
        run_migrations_before(db.url(), "2026-12-01-000013")
            .await
            .unwrap();
        ports::people_became_members(&store(&db).await, people).await;
        assert_eq!(
            revert_last_migration(db.url()).await.unwrap(),
            "20261201000012"
        );
        ports::members_became_people_again(&store(&db).await, people).await;
    }
}

mod account_lock {
    use super::{ports, store};
    use crate::migrate::{revert_last_migration, run_migrations_before};
    use crate::testing::TestDatabase;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_locked_plan_becomes_a_lock_on_the_plan_kept_and_back() {
        let db = TestDatabase::unmigrated().await;
        run_migrations_before(db.url(), "2026-12-01-000011")
            .await
            .unwrap();
        let ids = ports::accounts_with_a_locked_plan(&store(&db).await).await;
        run_migrations_before(db.url(), "2026-12-01-000012")
            .await
            .unwrap();
        ports::a_locked_plan_became_a_lock(&store(&db).await, ids).await;
        assert_eq!(
            revert_last_migration(db.url()).await.unwrap(),
            "20261201000011",
            "the version, as diesel records it"
        );
        ports::a_lock_became_a_locked_plan_again(&store(&db).await, ids).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_rule_changes_are_announced_to_listeners_on_commit() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let seen: Arc<Mutex<Vec<Change>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let sink = seen.clone();
    let listener = ChangeListener::spawn(db.url().to_owned(), shutdown.clone(), move |change| {
        sink.lock().unwrap().push(change);
    });
    wait_for(&seen, |changes| changes.contains(&Change::Resync)).await;
    ports::access_rule_changes_are_announced(&store, &seen).await;
    shutdown.cancel();
    listener.await.unwrap();
}
