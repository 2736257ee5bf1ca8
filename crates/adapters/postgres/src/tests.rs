//! The adapter against a real PostgreSQL: the shared port contract, plus what only a
//! database shared between processes does (change feed, migrations).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, TokenId};
use d2_tokens::contract;
use tokio_util::sync::CancellationToken;

use crate::testing::TestDatabase;
use d2_kernel::Change;

use crate::{ChangeListener, PgStore, PoolSettings, pending_migrations};

async fn store(db: &TestDatabase) -> PgStore {
    PgStore::connect(&PoolSettings::new(db.url()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_contract() {
    let db = TestDatabase::new().await;
    contract::accounts(&store(&db).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_contract() {
    let db = TestDatabase::new().await;
    contract::tokens(&store(&db).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_contract() {
    let db = TestDatabase::new().await;
    contract::audit(&store(&db).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloned_database_has_every_migration_applied() {
    let db = TestDatabase::new().await;
    assert!(pending_migrations(db.url()).await.unwrap().is_empty());
    // Running them again is a no-op.
    assert!(crate::run_migrations(db.url()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn revokes_are_announced_to_listeners_on_commit() {
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
    let audit = AuditEntry::system(account_id, AuditAction::TokenRevoke, Utc::now());
    store
        .revoke(account_id, token_id, Utc::now(), &audit)
        .await
        .unwrap();
    wait_for(&seen, |changes| changes.contains(&Change::Token(token_id))).await;
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|c| matches!(c, Change::Token(_)))
            .count(),
        1
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

/// Creates a tenant with a token through the bootstrap port and returns the token's ids.
async fn contract_token(store: &PgStore) -> (TokenId, AccountId) {
    use d2_accounts::{Account, AccountName, Role, User};
    use d2_tokens::{BootstrapRepo, NewToken, Pepper, TokenGrant, TokenSecret};

    let now = Utc::now();
    let account = Account::new_trial(
        AccountId::random(),
        AccountName::parse("Feed").unwrap(),
        now,
        14,
    );
    let owner = User {
        id: d2_kernel::UserId::random(),
        account_id: account.id,
        email: None,
        display_name: None,
        full_name: None,
        role: Role::Owner,
        created_at: now,
    };
    let secret = TokenSecret::generate().unwrap();
    let token = d2_tokens::ApiToken {
        id: TokenId::random(),
        account_id: account.id,
        kind: TokenGrant::Dev.kind(),
        scopes: TokenGrant::Dev.scopes(),
        name: None,
        app_name: None,
        created_by: Some(owner.id),
        created_at: now,
        expires_at: None,
        revoked_at: None,
        replaced_by: None,
    };
    let new = NewToken {
        digest: Pepper::new(&[1; 32]).unwrap().digest(&secret),
        token,
    };
    let audit = AuditEntry::control_plane(account.id, AuditAction::AccountBootstrap, now);
    store
        .create_account(&account, &owner, &new, &audit)
        .await
        .unwrap();
    (new.token.id, account.id)
}

async fn wait_for(seen: &Arc<Mutex<Vec<Change>>>, done: impl Fn(&[Change]) -> bool) {
    for _ in 0..100 {
        if done(&seen.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the change did not arrive within 2 s: {:?}",
        seen.lock().unwrap()
    );
}

async fn two_accounts(store: &PgStore) -> (AccountId, AccountId) {
    (contract_token(store).await.1, contract_token(store).await.1)
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_contract() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let (a, b) = two_accounts(&store).await;
    d2_policy::contract::policies(&store, a, b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publisher_keys_contract() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let (a, b) = two_accounts(&store).await;
    d2_policy::contract::publisher_keys(&store, a, b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_keys_contract() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let (a, b) = two_accounts(&store).await;
    d2_policy::contract::signing_keys(&store, a, b).await;
}

/// Creates bare accounts so events can reference them.
async fn ensure_accounts(store: &PgStore, ids: impl IntoIterator<Item = AccountId>) {
    use diesel_async::RunQueryDsl;

    let mut conn = store.conn().await.unwrap();
    for id in ids {
        diesel::sql_query(
            "INSERT INTO accounts (id, name, plan, created_at, updated_at) \
             VALUES ($1, 'Events', 'pro', now(), now()) ON CONFLICT DO NOTHING",
        )
        .bind::<diesel::sql_types::Uuid, _>(id.as_uuid())
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn event_store_contract() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let (a, b) = (AccountId::random(), AccountId::random());
    ensure_accounts(&store, [a, b]).await;
    d2_events::contract::event_store(&store, a, b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_contract() {
    use d2_events::EventStore;

    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let feeder = &store;
    d2_events::contract::analytics(&store, |events| async move {
        ensure_accounts(feeder, events.iter().map(|e| e.account_id)).await;
        feeder.insert_events(&events).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_are_kept_per_job_and_overwritten() {
    use d2_events::{ExportCheckpoints, ExportCursor};

    let db = TestDatabase::new().await;
    let store = store(&db).await;
    assert_eq!(store.load("analytics-export").await.unwrap(), None);
    let first = ExportCursor {
        ingested_at: Utc::now(),
        id: 7,
    };
    store.save("analytics-export", first).await.unwrap();
    let second = ExportCursor { id: 9, ..first };
    store.save("analytics-export", second).await.unwrap();
    let loaded = store.load("analytics-export").await.unwrap().unwrap();
    assert_eq!(loaded.id, 9);
    assert_eq!(
        loaded.ingested_at.timestamp_micros(),
        first.ingested_at.timestamp_micros()
    );
    assert_eq!(store.load("other").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etag_resolves_to_its_app_in_its_account_only() {
    use d2_events::AppResolver;

    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let (a, b) = two_accounts(&store).await;
    let etag = d2_policy::contract::publish_one(&store, a, "billing").await;
    assert_eq!(
        store.app_for_etag(a, &etag).await.unwrap(),
        Some(d2_kernel::AppName::normalise("billing"))
    );
    assert_eq!(store.app_for_etag(b, &etag).await.unwrap(), None);
    assert_eq!(store.app_for_etag(a, "nope").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn trial_locker_contract() {
    let db = TestDatabase::new().await;
    contract::trial_locker(&store(&db).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_expiry_contract() {
    let db = TestDatabase::new().await;
    contract::token_expiry(&store(&db).await).await;
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
