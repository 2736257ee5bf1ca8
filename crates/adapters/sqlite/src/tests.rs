//! The adapter on real SQLite files: the shared port contracts (`ports`), plus what only
//! this adapter does (the polled change feed, job leases, opening files, one writer).

use std::sync::{Arc, Mutex};

use chrono::Utc;
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{Change, TokenId};
use tokio_util::sync::CancellationToken;

use crate::testing::TestDatabase;
use crate::{
    ChangeListener, SqliteSettings, SqliteStore, Target, pending_migrations, run_migrations,
};

#[path = "../../sql/port_tests.rs"]
mod ports;

/// Every table of the database, by name (SQLite's own `sqlite_` tables aside).
const TABLE_NAMES: &str =
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'";

use ports::{contract_token, wait_for};

async fn fresh() -> (TestDatabase, SqliteStore) {
    TestDatabase::new().await
}

/// Every committed event is final for the export on SQLite: nothing to wait for.
async fn until_events_final(_: &SqliteStore) {}

/// Another process's view of the test's database.
/// A blob literal of the bytes `hex` spells, for SQL written by hand.
fn blob_literal(hex: &str) -> String {
    format!("X'{hex}'")
}

async fn another(db: &TestDatabase) -> SqliteStore {
    SqliteStore::connect(&db.settings()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_file_is_created_and_migrated_once() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("nested/dir/d2.sqlite");
    let store = SqliteStore::connect(&SqliteSettings::new(Target::File(path.clone())))
        .await
        .unwrap();
    assert!(path.exists(), "the file and its directories are created");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    }
    assert!(!pending_migrations(&store).await.unwrap().is_empty());
    assert!(!run_migrations(&store).await.unwrap().is_empty());
    assert!(pending_migrations(&store).await.unwrap().is_empty());
    assert!(
        run_migrations(&store).await.unwrap().is_empty(),
        "a second run is a no-op"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_a_database_is_refused_with_its_path() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("d2.sqlite");
    std::fs::write(&path, b"this is not a database, it only has its name").unwrap();
    let error = SqliteStore::connect(&SqliteSettings::new(Target::File(path.clone())))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a database"), "{message}");

    let error = SqliteStore::connect(&SqliteSettings::new(Target::File(
        directory.path().to_owned(),
    )))
    .await
    .unwrap_err();
    assert!(error.to_string().contains("directory"), "{error}");
}

/// Makes `path` unwritable: immutable for root (whom permission bits do not stop), read
/// only for anyone else. Returns the undo.
fn make_read_only(path: &std::path::Path) -> impl FnOnce() + use<> {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0"));
    let chattr = |flag: &str| {
        let status = std::process::Command::new("chattr")
            .arg(flag)
            .arg(path)
            .status()
            .expect("chattr runs");
        assert!(status.success(), "chattr {flag} {}", path.display());
    };
    if root {
        chattr("+i");
    } else {
        let mut permissions = std::fs::metadata(path).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(path, permissions).unwrap();
    }
    let path = path.to_owned();
    move || {
        if root {
            let status = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&path)
                .status()
                .expect("chattr runs");
            assert!(status.success());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_database_is_refused_with_its_path() {
    let db = TestDatabase::empty();
    {
        let store = SqliteStore::connect(&db.settings()).await.unwrap();
        run_migrations(&store).await.unwrap();
    }
    let undo = make_read_only(&db.path());
    let refused = SqliteStore::connect(&db.settings()).await;
    undo();
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains(&db.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("readonly"), "{message}");
}

#[test]
fn urls_name_a_file_or_memory() {
    let target = |url: &str| Target::from_url(url).map_err(|e| e.to_string());
    assert_eq!(
        target("sqlite://./data/d2.sqlite"),
        Ok(Some(Target::File("./data/d2.sqlite".into())))
    );
    assert_eq!(
        target("sqlite:///var/lib/d2/d2.sqlite"),
        Ok(Some(Target::File("/var/lib/d2/d2.sqlite".into())))
    );
    assert_eq!(target("sqlite::memory:"), Ok(Some(Target::Memory)));
    assert_eq!(target("postgres://localhost/d2"), Ok(None));
    let error = target("sqlite://").unwrap_err();
    assert!(error.contains("sqlite://PATH"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_in_memory_database_works_on_its_one_connection() {
    let store = SqliteStore::connect(&SqliteSettings::new(Target::Memory))
        .await
        .unwrap();
    run_migrations(&store).await.unwrap();
    let (token, account) = contract_token(&store).await;
    let found = d2_tokens::TokenRepo::find_token(&store, account, token)
        .await
        .unwrap();
    assert!(found.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_made_through_another_store_on_the_file_reach_the_listener() {
    use d2_tokens::TokenRepo;

    let (db, store) = fresh().await;
    // Another process's view of the same file.
    let other = another(&db).await;
    let seen: Arc<Mutex<Vec<Change>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let sink = seen.clone();
    let listener = ChangeListener::spawn(store.clone(), shutdown.clone(), move |change| {
        sink.lock().unwrap().push(change);
    });
    wait_for(&seen, |changes| changes.contains(&Change::Resync)).await;

    let (token_id, account_id) = contract_token(&other).await;
    // A changed expiry is announced: cached verifications hold the old one.
    let patch = d2_tokens::TokenPatch {
        expires_at: Some(Some(Utc::now() + chrono::Duration::hours(1))),
        ..d2_tokens::TokenPatch::default()
    };
    let audit_of = |_: &d2_tokens::ApiToken, _: &d2_tokens::ApiToken| {
        AuditEntry::system(account_id, AuditAction::TokenUpdate, Utc::now())
    };
    let updated = other
        .update_token(account_id, token_id, &patch, Utc::now(), &audit_of)
        .await
        .unwrap();
    assert!(matches!(updated, d2_tokens::UpdateOutcome::Updated(_)));
    let audit = AuditEntry::system(account_id, AuditAction::TokenRevoke, Utc::now());
    other
        .revoke(account_id, token_id, Utc::now(), &audit)
        .await
        .unwrap();
    // A revoke of an unknown token announces nothing.
    other
        .revoke(account_id, TokenId::random(), Utc::now(), &audit)
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
    let tokens: Vec<Change> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|c| matches!(c, Change::Token(_)))
        .cloned()
        .collect();
    assert_eq!(
        tokens,
        vec![Change::Token(token_id), Change::Token(token_id)]
    );

    shutdown.cancel();
    listener.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_in_two_stores_never_see_a_locked_database() {
    use d2_tokens::TokenRepo;

    let (db, first) = fresh().await;
    let second = another(&db).await;
    let (token_id, account_id) = contract_token(&first).await;
    let mut writes = Vec::new();
    for i in 0..200 {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        writes.push(tokio::spawn(async move {
            if i % 3 == 0 {
                contract_token(&store).await;
            } else {
                let audit = AuditEntry::system(account_id, AuditAction::TokenRevoke, Utc::now());
                store
                    .revoke(account_id, token_id, Utc::now(), &audit)
                    .await
                    .unwrap();
            }
        }));
    }
    for write in writes {
        write.await.expect("no write failed");
    }
}

mod export_order {
    use chrono::Duration;
    use d2_events::{EventStore, ExportCheckpoints, ExportCursor, NewEvent};
    use d2_testkit::fixtures::{event, t0};
    use diesel::ExpressionMethods as _;
    use diesel_async::RunQueryDsl;
    use serde_json::json;

    use super::{another, fresh};
    use crate::SqliteStore;
    use crate::id::Id;
    use crate::migrate::{run_migrations, run_migrations_before};
    use crate::testing::TestDatabase;

    fn polls(account: d2_kernel::AccountId, ingested: &[i64]) -> Vec<NewEvent> {
        ingested
            .iter()
            .map(|&s| {
                let at = t0() + Duration::seconds(s);
                event(account, "policy_poll", json!({ "s": s }), at, 0)
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_ingest_that_commits_after_a_read_comes_after_the_cursor_whatever_its_time() {
        use crate::schema::events;

        let (db, store) = fresh().await;
        let account = d2_kernel::AccountId::random();
        super::ports::ensure_accounts(&store, [account]).await;
        let first = polls(account, &[3600]);
        store.insert_events(&first).await.unwrap();

        // Another process's ingest, its transaction open, its event ingested before `first`.
        let other = another(&db).await;
        let mut held = other.writer().await.unwrap();
        diesel::sql_query("BEGIN IMMEDIATE")
            .execute(&mut held)
            .await
            .unwrap();
        diesel::insert_into(events::table)
            .values((
                events::account_id.eq(Id::from(account)),
                events::event_key.eq(vec![7_u8; 32]),
                events::event_type.eq("late"),
                events::occurred_at.eq(t0()),
                events::ingested_at.eq(t0()),
                events::payload.eq(json!({})),
            ))
            .execute(&mut held)
            .await
            .unwrap();
        let read = store.events_after(None, 100).await.unwrap();
        assert_eq!(
            read.events.len(),
            1,
            "the open transaction's event is not seen"
        );

        diesel::sql_query("COMMIT")
            .execute(&mut held)
            .await
            .unwrap();
        let next = store.events_after(read.end, 100).await.unwrap();
        let types: Vec<&str> = next
            .events
            .iter()
            .map(|s| s.event.event_type.as_str())
            .collect();
        assert_eq!(
            types,
            vec!["late"],
            "after the cursor, though ingested before"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_export_checkpoint_in_ingest_order_becomes_a_place_the_export_resumes_from() {
        let db = TestDatabase::empty();
        let store = SqliteStore::connect(&db.settings()).await.unwrap();
        run_migrations_before(&store, "2026-12-01-000003")
            .await
            .unwrap();
        let account = d2_kernel::AccountId::random();
        super::ports::ensure_accounts(&store, [account]).await;
        // Ids 1 to 5, ingested (by the seconds below) out of id order.
        for event in polls(account, &[3, 1, 5, 2, 4]) {
            store.insert_events(&[event]).await.unwrap();
        }
        // The former checkpoint: past every event up to (t0 + 3 s, id 1), so ids 2, 4 and
        // 1 were exported, 5 and 3 were not.
        {
            use diesel::sql_types::BigInt;

            use crate::types::Timestamptz;
            let mut conn = store.writer().await.unwrap();
            diesel::sql_query(
                "INSERT INTO job_checkpoints (job, ingested_at, event_id, updated_at) \
                 VALUES ('analytics-export', ?, ?, ?)",
            )
            .bind::<Timestamptz, _>(t0() + Duration::seconds(3))
            .bind::<BigInt, _>(1_i64)
            .bind::<Timestamptz, _>(t0())
            .execute(&mut conn)
            .await
            .unwrap();
        }
        run_migrations(&store).await.unwrap();

        let checkpoint = ExportCheckpoints::load(&store, "analytics-export")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            checkpoint.cursor,
            ExportCursor { position: 2, id: 2 },
            "every event up to id 2 was exported"
        );
        super::ports::resumes_from_a_migrated_checkpoint(&store, account, checkpoint).await;
    }
}

mod members {
    use super::ports;
    use crate::SqliteStore;
    use crate::migrate::{revert_last_migration, run_migrations_before};
    use crate::testing::TestDatabase;

    #[tokio::test(flavor = "multi_thread")]
    async fn users_of_one_account_become_members_and_back() {
        let db = TestDatabase::empty();
        let store = SqliteStore::connect(&db.settings()).await.unwrap();
        run_migrations_before(&store, "2026-12-01-000008")
            .await
            .unwrap();
        let people = ports::people_of_one_account(&store).await;
        run_migrations_before(&store, "2026-12-01-000009")
            .await
            .unwrap();
        ports::people_became_members(&store, people).await;
        assert_eq!(
            revert_last_migration(&store).await.unwrap(),
            "20261201000008"
        );
        ports::members_became_people_again(&store, people).await;
    }
}

mod account_lock {
    use super::ports;
    use crate::SqliteStore;
    use crate::migrate::{revert_last_migration, run_migrations_before};
    use crate::testing::TestDatabase;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_locked_plan_becomes_a_lock_on_the_plan_kept_and_back() {
        let db = TestDatabase::empty();
        let store = SqliteStore::connect(&db.settings()).await.unwrap();
        run_migrations_before(&store, "2026-12-01-000007")
            .await
            .unwrap();
        let ids = ports::accounts_with_a_locked_plan(&store).await;
        run_migrations_before(&store, "2026-12-01-000008")
            .await
            .unwrap();
        ports::a_locked_plan_became_a_lock(&store, ids).await;
        assert_eq!(
            revert_last_migration(&store).await.unwrap(),
            "20261201000007",
            "the version, as diesel records it"
        );
        ports::a_lock_became_a_locked_plan_again(&store, ids).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_rule_changes_reach_the_listener_on_commit() {
    let (db, store) = fresh().await;
    let other = another(&db).await;
    let seen: Arc<Mutex<Vec<Change>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let sink = seen.clone();
    let listener = ChangeListener::spawn(store.clone(), shutdown.clone(), move |change| {
        sink.lock().unwrap().push(change);
    });
    wait_for(&seen, |changes| changes.contains(&Change::Resync)).await;
    ports::access_rule_changes_are_announced(&other, &seen).await;
    shutdown.cancel();
    listener.await.unwrap();
}
