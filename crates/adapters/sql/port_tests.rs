//! The repository ports' contract suites (`d2_testkit::suites`), run against this adapter
//! on a fresh database per test. Shared by both SQL adapters: `super::fresh()` (and
//! `another`, `until_events_final`) is each one's own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{another, fresh, until_events_final};
use crate::id::Id;
use crate::schema::accounts;
use chrono::Utc;
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, Change, TokenId};
use d2_testkit::fixtures::Parties;

/// This store, for the contract suites: a fresh database per suite.
struct Kit;

impl d2_testkit::ContractStore for Kit {
    type Guard = super::TestDatabase;
    type Tokens = crate::Store;
    type Policies = crate::Store;
    type Events = crate::Store;
    type Tasks = crate::Store;
    type Members = crate::Store;
    type Agents = crate::Store;
    type Principals = crate::Store;
    type AccessRules = crate::Store;
    type Catalog = crate::Store;
    type Delegations = crate::Store;
    type Billing = crate::Store;

    async fn tokens() -> (Self::Guard, crate::Store) {
        fresh().await
    }

    async fn members() -> (Self::Guard, crate::Store) {
        fresh().await
    }

    async fn agents() -> (Self::Guard, crate::Store, AccountId, AccountId) {
        Self::policies().await
    }

    async fn principals() -> (Self::Guard, crate::Store, AccountId, AccountId) {
        Self::policies().await
    }

    async fn access_rules() -> (Self::Guard, crate::Store, AccountId, AccountId) {
        Self::policies().await
    }

    async fn catalog() -> (Self::Guard, crate::Store, AccountId, AccountId) {
        Self::policies().await
    }

    async fn delegations() -> (Self::Guard, crate::Store, Parties, Parties) {
        let (db, store, a, b) = Self::policies().await;
        let (a, b) = (
            Parties::stored(&store, a).await,
            Parties::stored(&store, b).await,
        );
        (db, store, a, b)
    }

    async fn billing() -> (Self::Guard, crate::Store, AccountId, AccountId) {
        Self::policies().await
    }

    async fn policies() -> (Self::Guard, crate::Store, AccountId, AccountId) {
        let (db, store) = fresh().await;
        let (a, b) = two_accounts(&store).await;
        (db, store, a, b)
    }

    async fn events() -> (Self::Guard, crate::Store, AccountId, AccountId) {
        let (db, store) = fresh().await;
        let (a, b) = (AccountId::random(), AccountId::random());
        ensure_accounts(&store, [a, b]).await;
        (db, store, a, b)
    }

    async fn until_final(store: &crate::Store) {
        until_events_final(store).await;
    }

    async fn feed(store: &crate::Store, events: Vec<d2_events::NewEvent>) {
        use d2_events::EventStore as _;

        ensure_accounts(store, events.iter().map(|e| e.account_id)).await;
        store.insert_events(&events).await.unwrap();
    }

    async fn tasks() -> (Self::Guard, crate::Store, AccountId) {
        let (db, store) = fresh().await;
        let (_, account) = contract_token(&store).await;
        (db, store, account)
    }
}

d2_testkit::contract_suites!(Kit);

/// Creates a tenant, now, with its admin token through the bootstrap port and returns the
/// token's ids.
pub(super) async fn contract_token(store: &crate::Store) -> (TokenId, AccountId) {
    let (account, _, token) = d2_testkit::fixtures::tenant(store, Utc::now()).await;
    (token.token.id, account.id)
}

/// Waits up to 2 s for the changes seen to satisfy `done`.
pub(super) async fn wait_for(seen: &Arc<Mutex<Vec<Change>>>, done: impl Fn(&[Change]) -> bool) {
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

async fn two_accounts(store: &crate::Store) -> (AccountId, AccountId) {
    (contract_token(store).await.1, contract_token(store).await.1)
}

#[tokio::test(flavor = "multi_thread")]
async fn earlier_content_without_digests_contract() {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    use crate::schema::policies;

    let (_db, store) = fresh().await;
    let (a, _) = two_accounts(&store).await;
    let forget = async || {
        let mut conn = store.writer().await.unwrap();
        diesel::update(policies::table)
            .set(policies::content_digest.eq(None::<String>))
            .execute(&mut conn)
            .await
            .unwrap();
    };
    d2_testkit::suites::policies::earlier_content_without_digests(&store, a, forget).await;
    let mut conn = store.conn().await.unwrap();
    let missing: i64 = policies::table
        .filter(policies::content_digest.is_null())
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(missing, 0, "the publish stored the missing digests");
}

/// Creates bare accounts so events can reference them.
pub(super) async fn ensure_accounts(
    store: &crate::Store,
    ids: impl IntoIterator<Item = AccountId>,
) {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    let now = Utc::now();
    let mut conn = store.writer().await.unwrap();
    for id in ids {
        diesel::insert_into(accounts::table)
            .values((
                accounts::id.eq(Id::from(id)),
                accounts::name.eq("Events"),
                accounts::plan.eq("pro"),
                accounts::created_at.eq(now),
                accounts::updated_at.eq(now),
            ))
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etag_resolves_to_its_app_in_its_account_only() {
    use d2_events::AppResolver;

    let (_db, store) = fresh().await;
    let (a, b) = two_accounts(&store).await;
    let etag = d2_testkit::suites::policies::publish_one(&store, a, "billing").await;
    assert_eq!(
        store.app_for_etag(a, &etag).await.unwrap(),
        Some(d2_kernel::AppName::normalise("billing"))
    );
    assert_eq!(store.app_for_etag(b, &etag).await.unwrap(), None);
    assert_eq!(store.app_for_etag(a, "nope").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_process_at_a_time_holds_a_job_until_it_lets_go() {
    let (db, first) = fresh().await;
    let second = another(&db).await;
    let held = first.try_lock_job("analytics-export").await.unwrap();
    assert!(held.is_some());
    let taken = second.try_lock_job("analytics-export").await.unwrap();
    assert!(taken.is_none(), "held by the first");
    let other_job = second.try_lock_job("trial-locker").await.unwrap();
    assert!(other_job.is_some(), "other jobs are independent");
    drop(held);
    // Released asynchronously (a closed connection, a deleted lease).
    let mut taken = None;
    for _ in 0..100 {
        taken = second.try_lock_job("analytics-export").await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(taken.is_some(), "released when the holder lets go");
}

/// After the migration of a checkpoint in the former order (ids 1 to 5 stored, 1, 2 and 4
/// exported): the export resumes with what was not exported (and 4 again) then new events,
/// and retention stops at the checkpoint.
pub(super) async fn resumes_from_a_migrated_checkpoint(
    store: &crate::Store,
    account: AccountId,
    checkpoint: d2_events::ExportCheckpoint,
) {
    use chrono::Duration;
    use d2_events::EventStore as _;
    use d2_testkit::fixtures::{event, t0};

    assert_eq!(checkpoint.ingested_at, t0() + Duration::seconds(3));
    let new = event(
        account,
        "policy_poll",
        serde_json::json!({ "new": true }),
        t0(),
        0,
    );
    store.insert_events(&[new]).await.unwrap();
    until_events_final(store).await;
    let next = store
        .events_after(Some(checkpoint.cursor), 100)
        .await
        .unwrap();
    let ids: Vec<i64> = next.events.iter().map(|s| s.id).collect();
    assert_eq!(
        ids,
        vec![3, 4, 5, 6],
        "the events not exported (and 4 again), then new ones"
    );
    assert_eq!(
        store
            .prune_events(checkpoint.cursor, t0() + Duration::days(1))
            .await
            .unwrap(),
        2,
        "retention stops at the migrated checkpoint"
    );
}

#[derive(diesel::QueryableByName)]
struct TableName {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// `d2ctl migrate-store` copies every table there is, or says why not (`NOT_COPIED`).
#[tokio::test(flavor = "multi_thread")]
async fn every_table_is_copied_by_migrate_store_or_named_as_not_copied() {
    use diesel_async::RunQueryDsl as _;

    let (_db, store) = fresh().await;
    let mut conn = store.conn().await.unwrap();
    let tables: Vec<TableName> = diesel::sql_query(super::TABLE_NAMES)
        .load(&mut conn)
        .await
        .unwrap();
    let existing: Vec<&str> = tables.iter().map(|table| table.name.as_str()).collect();
    for table in &existing {
        assert!(
            crate::transfer::TABLES.contains(table)
                || crate::transfer::NOT_COPIED
                    .iter()
                    .any(|(name, _)| name == table),
            "`{table}` is neither copied (transfer::TABLES) nor named in transfer::NOT_COPIED"
        );
    }
    for table in crate::transfer::TABLES {
        assert!(
            existing.contains(&table),
            "`{table}` is copied but does not exist"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_enqueued_in_a_write_transaction_commits_and_rolls_back_with_it() {
    use d2_kernel::{NewTask, TaskQueue as _};

    use crate::error::TxError;

    let (_db, store) = fresh().await;
    let now = d2_kernel::Clock::now(&d2_kernel::SystemClock);
    let task = NewTask {
        kind: "contract.outbox".into(),
        account_id: None,
        payload: serde_json::json!({ "n": 1 }),
        run_at: now,
    };
    let mut conn = store.writer().await.unwrap();
    let rolled_back: Result<(), TxError> = write_transaction!(conn, async |conn| {
        crate::tasks::enqueue(conn, &task, now).await?;
        // The change the task belonged to failed.
        Err(TxError::Retry)
    })
    .await;
    assert!(rolled_back.is_err());
    assert_eq!(
        store.counts().await.unwrap().pending,
        0,
        "gone with its change"
    );
    write_transaction!(conn, async |conn| {
        crate::tasks::enqueue(conn, &task, now).await?;
        Ok::<_, TxError>(())
    })
    .await
    .unwrap();
    drop(conn);
    let pending = store
        .tasks(d2_kernel::TaskState::Pending, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].payload, task.payload);
}

/// `d2ctl migrate-store` copies an account's lock with it.
#[tokio::test(flavor = "multi_thread")]
async fn an_account_is_copied_with_its_lock() {
    use d2_accounts::AccountRepo as _;

    let (_db, store) = fresh().await;
    let (_target_db, target) = fresh().await;
    let (_, id) = contract_token(&store).await;
    let lock_audit = |account: &d2_accounts::Account| {
        AuditEntry::system(account.id, AuditAction::AccountLock, Utc::now())
    };
    let after_the_trial = Utc::now() + chrono::Duration::days(15);
    assert_eq!(
        store
            .lock_expired_trials(after_the_trial, 10, &lock_audit)
            .await
            .unwrap(),
        vec![id]
    );
    let locked = store.find_account(id).await.unwrap().unwrap();
    assert!(locked.locked.is_some());

    let (rows, next) = store.export_rows("accounts", None).await.unwrap();
    assert!(next.is_none());
    target.import_rows("accounts", rows).await.unwrap();
    assert_eq!(target.find_account(id).await.unwrap(), Some(locked));
}

/// A time of the accounts below, in whole seconds (both stores keep them exactly).
fn lock_migration_time(days: i64) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::Duration::days(days)
}

/// Accounts as the release before the migration that made locked a state (`*_account_lock`)
/// stored them, written before that migration runs: a trial its trial locker stored as
/// `locked` on day 1 (the trial ended on day 0), an account stored as `locked` without a
/// trial end (changed last on day 2), a trial ended on day 0 and not locked yet, a paid
/// account. Returns their ids in that order.
pub(super) async fn accounts_with_a_locked_plan(store: &crate::Store) -> [AccountId; 4] {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    let ids = [(); 4].map(|()| AccountId::random());
    let rows = [
        (
            "locked",
            Some(lock_migration_time(0)),
            lock_migration_time(1),
        ),
        ("locked", None, lock_migration_time(2)),
        (
            "trial",
            Some(lock_migration_time(0)),
            lock_migration_time(0),
        ),
        ("pro", None, lock_migration_time(0)),
    ];
    let mut conn = store.writer().await.unwrap();
    for (id, (plan, trial_expires_at, updated_at)) in ids.iter().zip(rows) {
        diesel::insert_into(accounts::table)
            .values((
                accounts::id.eq(Id::from(*id)),
                accounts::name.eq("Before"),
                accounts::plan.eq(plan),
                accounts::trial_expires_at.eq(trial_expires_at),
                accounts::created_at.eq(lock_migration_time(-14)),
                accounts::updated_at.eq(updated_at),
            ))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    ids
}

/// After the migration: the accounts of [`accounts_with_a_locked_plan`] keep their plan (a
/// trial is a trial) and those stored as `locked` are locked, since their trial's end or,
/// without one, their last change; the plan `locked` cannot be stored any more; the trial
/// locker then locks the expired trial alone.
pub(super) async fn a_locked_plan_became_a_lock(store: &crate::Store, ids: [AccountId; 4]) {
    use d2_accounts::AccountRepo as _;
    use d2_kernel::{AccountLock, LockReason, Plan};
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    let [ended, no_end, expired, paid] = ids;
    let ended_lock = |days| AccountLock {
        since: lock_migration_time(days),
        reason: LockReason::TrialEnded,
    };
    let read = async |id: AccountId| store.find_account(id).await.unwrap().unwrap();
    let account = read(ended).await;
    assert_eq!(
        (account.plan, account.trial_expires_at, account.locked),
        (
            Plan::Trial,
            Some(lock_migration_time(0)),
            Some(ended_lock(0))
        )
    );
    let account = read(no_end).await;
    assert_eq!(
        (account.plan, account.trial_expires_at, account.locked),
        (Plan::Trial, None, Some(ended_lock(2)))
    );
    let account = read(expired).await;
    assert_eq!((account.plan, account.locked), (Plan::Trial, None));
    assert_eq!(
        account.lock_at(lock_migration_time(3)),
        Some(ended_lock(0)),
        "served as locked"
    );
    let account = read(paid).await;
    assert_eq!((account.plan, account.locked), (Plan::Pro, None));

    let mut conn = store.writer().await.unwrap();
    let previous_release_lock = diesel::update(accounts::table.find(Id::from(expired)))
        .set(accounts::plan.eq("locked"))
        .execute(&mut conn)
        .await;
    assert!(
        previous_release_lock.is_err(),
        "the plan `locked` is refused"
    );
    drop(conn);

    let lock_audit = |account: &d2_accounts::Account| {
        AuditEntry::system(account.id, AuditAction::AccountLock, lock_migration_time(3))
    };
    let locked = store
        .lock_expired_trials(lock_migration_time(3), 10, &lock_audit)
        .await
        .unwrap();
    assert_eq!(locked, vec![expired], "only the trial not locked yet");
    assert_eq!(read(expired).await.locked, Some(ended_lock(0)));
}

/// After the migration is reverted: every locked account is stored with the plan `locked`
/// again, the others keep theirs.
pub(super) async fn a_lock_became_a_locked_plan_again(store: &crate::Store, ids: [AccountId; 4]) {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    let mut conn = store.conn().await.unwrap();
    let mut plans = Vec::new();
    for id in ids {
        let plan: String = accounts::table
            .find(Id::from(id))
            .select(accounts::plan)
            .first(&mut conn)
            .await
            .unwrap();
        plans.push(plan);
    }
    assert_eq!(plans, ["locked", "locked", "locked", "pro"]);
}

/// Before the members migration: an account whose users are an owner, a `dev` and a
/// member, each a user of that one account (written as that release wrote them).
pub(super) async fn people_of_one_account(
    store: &crate::Store,
) -> (AccountId, [d2_kernel::UserId; 3]) {
    use diesel_async::RunQueryDsl;

    let account = AccountId::random();
    let users = [(); 3].map(|()| d2_kernel::UserId::random());
    let at = "2026-11-01 00:00:00+00:00";
    let mut statements = vec![format!(
        "INSERT INTO accounts (id, name, plan, created_at, updated_at) \
         VALUES ('{account}', 'Before', 'pro', '{at}', '{at}')"
    )];
    for (user, role) in users.iter().zip(["owner", "dev", "member"]) {
        statements.push(format!(
            "INSERT INTO users (id, account_id, email, role, created_at) \
             VALUES ('{user}', '{account}', '{role}@before.test', '{role}', '{at}')"
        ));
    }
    statements.push(format!(
        "INSERT INTO api_tokens (id, account_id, digest, kind, scopes, created_by, created_at) \
         VALUES ('{}', '{account}', {}, 'dev', 'dev', '{}', '{at}')",
        TokenId::random(),
        super::blob_literal(&"01".repeat(32)),
        users[1]
    ));
    let mut conn = store.writer().await.unwrap();
    for statement in statements {
        diesel::sql_query(statement)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    (account, users)
}

/// After it: each of them is a member of that account with their role (`dev` is now
/// `developer`), and a person who has not signed in yet; their token still names its
/// creator.
pub(super) async fn people_became_members(
    store: &crate::Store,
    (account, users): (AccountId, [d2_kernel::UserId; 3]),
) {
    use d2_accounts::AccountRepo as _;
    use d2_kernel::Role;
    use d2_members::MemberRepo as _;

    let members = store.members(account).await.unwrap();
    let roles: Vec<(d2_kernel::UserId, Role)> =
        members.iter().map(|m| (m.user.id, m.role)).collect();
    let mut expected = vec![
        (users[0], Role::Owner),
        (users[1], Role::Developer),
        (users[2], Role::Member),
    ];
    expected.sort_by_key(|(user, _)| *user);
    let mut roles = roles;
    roles.sort_by_key(|(user, _)| *user);
    assert_eq!(roles, expected);
    assert_eq!(
        members[0]
            .user
            .email
            .as_deref()
            .map(|e| e.ends_with("@before.test")),
        Some(true)
    );
    assert!(members.iter().all(|m| m.user.last_sign_in_at.is_none()));
    assert_eq!(store.count_members(account).await.unwrap(), 3);
    assert_eq!(store.first_owner(account).await.unwrap(), Some(users[0]));
    // The token keeps its creator (read as stored: later migrations add columns the
    // repository reads).
    use crate::schema::api_tokens;
    use diesel::{ExpressionMethods as _, QueryDsl as _};
    use diesel_async::RunQueryDsl as _;
    let mut conn = store.conn().await.unwrap();
    let creator: Option<Id> = api_tokens::table
        .filter(api_tokens::account_id.eq(Id::from(account)))
        .select(api_tokens::created_by)
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(creator, Some(Id::from(users[1])));
}

/// After reverting it: the users are the account's again, with their former roles.
pub(super) async fn members_became_people_again(
    store: &crate::Store,
    (account, users): (AccountId, [d2_kernel::UserId; 3]),
) {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        role: String,
        #[diesel(sql_type = Text)]
        account: String,
    }
    let mut conn = store.writer().await.unwrap();
    for (user, role) in users.iter().zip(["owner", "dev", "member"]) {
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT role, CAST(account_id AS text) AS account FROM users WHERE id = '{user}'"
        ))
        .load(&mut conn)
        .await
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].role, role);
        assert_eq!(rows[0].account, account.to_string());
    }
}

/// Every change of an account's access rules is announced with its commit (create, update,
/// delete), and a refused write announces nothing: `seen` collects what a listener heard.
pub(super) async fn access_rule_changes_are_announced(
    store: &crate::Store,
    seen: &Arc<Mutex<Vec<Change>>>,
) {
    use d2_oauth::{AccessRule, AccessRuleRepo as _, RuleSpec, RuleWrite};

    let (_, account) = contract_token(store).await;
    let spec =
        RuleSpec::from_value(&serde_json::json!({"name": "deny", "effect": "deny"})).unwrap();
    let rule = AccessRule::new(account, spec.clone(), Utc::now());
    let audit = AuditEntry::system(account, AuditAction::AccessRuleCreate, Utc::now());
    let announced = |seen: &[Change]| {
        seen.iter()
            .filter(|c| **c == Change::AccessRules(account))
            .count()
    };
    assert!(matches!(
        store.create_rule(&rule, 10, &audit).await.unwrap(),
        RuleWrite::Written(_)
    ));
    wait_for(seen, |changes| announced(changes) == 1).await;
    let twin = AccessRule::new(account, spec.clone(), Utc::now());
    assert_eq!(
        store.create_rule(&twin, 10, &audit).await.unwrap(),
        RuleWrite::NameTaken
    );
    let audit_of = |_: &AccessRule| audit.clone();
    assert!(matches!(
        store
            .update_rule(account, rule.id, &spec, Utc::now(), &audit_of)
            .await
            .unwrap(),
        RuleWrite::Written(_)
    ));
    wait_for(seen, |changes| announced(changes) == 2).await;
    assert!(store.delete_rule(account, rule.id, &audit).await.unwrap());
    wait_for(seen, |changes| announced(changes) == 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        announced(&seen.lock().unwrap()),
        3,
        "the refused creation announced nothing"
    );
}

/// `d2ctl migrate-store` copies the OAuth tokens in pages by id (three rows a page in these
/// tests): every row arrives once, as it was.
#[tokio::test(flavor = "multi_thread")]
async fn oauth_tokens_are_copied_in_pages() {
    use d2_kernel::{PageRequest, Pepper};
    use d2_oauth::{
        Agent, AgentRepo as _, AgentSpec, AuthMethod, GrantType, Issuance, OAuthTokenId,
        OAuthTokenRepo as _, PendingRegistration, TokenFilter, TokenKind, TokenRecord,
    };

    let (_db, store) = fresh().await;
    let (_target_db, target) = fresh().await;
    let (_, account) = contract_token(&store).await;
    let pepper = Pepper::new(&[3; 32]).unwrap();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let spec = AgentSpec {
        name: "Copied".into(),
        description: None,
        scopes: vec!["a".into()],
        redirect_uris: vec![],
        resources: vec![],
        attributes: serde_json::Map::new(),
        auth_method: AuthMethod::ClientSecretBasic,
        jwks: None,
        jwks_uri: None,
        access_token_seconds: 3_600,
        refresh_token_seconds: Some(7_200),
    };
    let agent = Agent::new(account, spec, None, now);
    let registration = PendingRegistration::new(pepper.digest_text("reg"), now);
    let entry = AuditEntry::system(account, AuditAction::AgentRegister, now);
    store.register(&agent, &registration, &entry).await.unwrap();
    let record = |kind: TokenKind, family: Option<OAuthTokenId>, i: usize| {
        let id = OAuthTokenId::random();
        TokenRecord {
            id,
            account_id: account,
            agent_id: agent.id,
            kind,
            family_id: family.unwrap_or(id),
            parent_id: None,
            subject: agent.client_id(),
            scopes: vec!["a".into()],
            audience: vec!["https://api.example/".into()],
            task_id: format!("task-{i}"),
            parent_task_id: None,
            grant_type: GrantType::ClientCredentials,
            digest: pepper.digest_text(&format!("{kind:?}-{i}")),
            issued_at: now,
            expires_at: now + chrono::Duration::hours(1),
            revoked_at: None,
            revoked_reason: None,
            principal_id: None,
            chain: Vec::new(),
            may_act: None,
            dpop_jkt: None,
        }
    };
    for i in 0..4 {
        let refresh = record(TokenKind::Refresh, None, i);
        let issuance = Issuance {
            access: record(TokenKind::Access, Some(refresh.id), i),
            refresh: Some(refresh),
        };
        let entry = AuditEntry::system(account, AuditAction::OAuthTokenIssue, now);
        assert!(store.issue(&issuance, &entry).await.unwrap());
    }

    for table in ["accounts", "agents"] {
        let (rows, _) = store.export_rows(table, None).await.unwrap();
        target.import_rows(table, rows).await.unwrap();
    }
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let (rows, next) = store
            .export_rows("oauth_tokens", after.as_deref())
            .await
            .unwrap();
        pages.push(rows.len());
        target.import_rows("oauth_tokens", rows).await.unwrap();
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, [3, 3, 2]);
    let filter = TokenFilter::default();
    let first_page = PageRequest::first(100);
    let copied = target.tokens(account, &filter, &first_page).await.unwrap();
    let original = store.tokens(account, &filter, &first_page).await.unwrap();
    assert_eq!(copied.items.len(), 8);
    assert_eq!(copied.items, original.items);
    assert!(
        store
            .export_rows("oauth_tokens", Some("not a uuid"))
            .await
            .is_err()
    );
}

/// A grant naming an agent deleted since the service read it is refused by the foreign
/// key: `false`, and nothing written (the in-memory store holds no agents to check).
#[tokio::test(flavor = "multi_thread")]
async fn a_delegation_to_a_deleted_agent_is_not_stored() {
    use d2_oauth::{AgentRepo as _, Delegation, DelegationRepo as _, DelegationSpec, Grantor};

    let (_db, store, a, _) = <Kit as d2_testkit::ContractStore>::delegations().await;
    let gone = a.agents[1];
    let entry = AuditEntry::system(a.account, AuditAction::AgentDelete, Utc::now());
    assert!(store.delete(a.account, gone, &entry).await.unwrap());
    let spec = DelegationSpec {
        grantor: Grantor::Principal(a.principal),
        agent_id: gone,
        scopes: ["reports.read".to_owned()].into(),
        tools: None,
        resources: Default::default(),
        task_id: None,
        max_depth: 1,
        expires_in_seconds: 3_600,
    };
    let delegation = Delegation::new(a.account, spec, "token:test".into(), Utc::now());
    let entry = AuditEntry::system(a.account, AuditAction::DelegationCreate, Utc::now());
    assert!(!store.create_delegation(&delegation, &entry).await.unwrap());
    assert_eq!(
        store.delegation(a.account, delegation.id).await.unwrap(),
        None
    );
    assert_eq!(
        d2_testkit::fixtures::audited(&store, a.account, AuditAction::DelegationCreate).await,
        0
    );
}

/// Revoking a grant revokes, in its transaction, every token issued under it and every
/// token derived from one (refreshed or exchanged, to any depth), and nothing else;
/// deactivating a principal revokes every token acting for it. The audit records name
/// exactly the tokens revoked.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_grant_or_deactivating_its_principal_reaches_every_derived_token() {
    use d2_kernel::Pepper;
    use d2_oauth::{
        Delegation, DelegationRepo as _, DelegationRevocation, DelegationRevoke, DelegationSpec,
        GrantType, Grantor, Hop, Issuance, OAuthTokenId, OAuthTokenRepo as _, PrincipalRepo as _,
        PrincipalSpec, PrincipalWrite, TokenKind, TokenRecord,
    };

    let (_db, store, a, b) = <Kit as d2_testkit::ContractStore>::delegations().await;
    // Whole seconds: the stores keep microseconds.
    let now = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let pepper = Pepper::new(&[5; 32]).unwrap();
    let [planner, researcher, writer] = a.agents;
    let grant = |grantor, agent_id, max_depth| {
        let spec = DelegationSpec {
            grantor,
            agent_id,
            scopes: ["reports.read".to_owned()].into(),
            tools: None,
            resources: Default::default(),
            task_id: None,
            max_depth,
            expires_in_seconds: 3_600,
        };
        Delegation::new(a.account, spec, "token:test".into(), now)
    };
    let to_planner = grant(Grantor::Principal(a.principal), planner, 2);
    let to_researcher = grant(Grantor::Agent(planner), researcher, 1);
    let to_writer = grant(Grantor::Principal(a.principal), writer, 1);
    for delegation in [&to_planner, &to_researcher, &to_writer] {
        let entry = AuditEntry::system(a.account, AuditAction::DelegationCreate, now);
        assert!(store.create_delegation(delegation, &entry).await.unwrap());
    }
    let hop = |agent_id, delegation: &Delegation| Hop {
        agent_id,
        delegation_id: delegation.id,
    };
    let token = |agent_id, kind, chain: Vec<Hop>, family: Option<OAuthTokenId>, parent| {
        let id = OAuthTokenId::random();
        TokenRecord {
            id,
            account_id: a.account,
            agent_id,
            kind,
            family_id: family.unwrap_or(id),
            parent_id: parent,
            subject: if chain.is_empty() {
                agent_id.to_string()
            } else {
                a.principal.to_string()
            },
            principal_id: (!chain.is_empty()).then_some(a.principal),
            chain,
            may_act: None,
            dpop_jkt: Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into()),
            scopes: vec!["reports.read".into()],
            audience: vec!["https://api.example/".into()],
            task_id: "task-1".into(),
            parent_task_id: None,
            grant_type: GrantType::ClientCredentials,
            digest: pepper.digest_text(&id.to_string()),
            issued_at: now,
            expires_at: now + chrono::Duration::hours(1),
            revoked_at: None,
            revoked_reason: None,
        }
    };
    let store_all = async |records: &[&TokenRecord]| {
        for record in records {
            let issuance = Issuance {
                access: (*record).clone(),
                refresh: None,
            };
            let entry = AuditEntry::system(a.account, AuditAction::OAuthTokenIssue, now);
            assert!(store.issue(&issuance, &entry).await.unwrap());
        }
    };
    // The planner acts for the principal (an access token and a refresh token, then a
    // refresh); the researcher exchanged the planner's first token; the writer acts for
    // the principal under its own grant; the researcher also holds a token of its own.
    let planner_chain = vec![hop(planner, &to_planner)];
    let refresh = token(
        planner,
        TokenKind::Refresh,
        planner_chain.clone(),
        None,
        None,
    );
    let first = token(
        planner,
        TokenKind::Access,
        planner_chain.clone(),
        Some(refresh.id),
        None,
    );
    let refreshed = token(
        planner,
        TokenKind::Access,
        planner_chain.clone(),
        Some(refresh.id),
        Some(refresh.id),
    );
    let exchanged = token(
        researcher,
        TokenKind::Access,
        vec![hop(planner, &to_planner), hop(researcher, &to_researcher)],
        None,
        Some(first.id),
    );
    let writers = token(
        writer,
        TokenKind::Access,
        vec![hop(writer, &to_writer)],
        None,
        None,
    );
    let own = token(researcher, TokenKind::Access, Vec::new(), None, None);
    store_all(&[&refresh, &first, &refreshed, &exchanged, &writers, &own]).await;
    let stored = store.token(a.account, exchanged.id).await.unwrap().unwrap();
    assert_eq!(stored, exchanged, "the chain and the principal are stored");
    assert_eq!(stored.delegation_id(), Some(to_researcher.id));

    let revocation = DelegationRevocation {
        at: now,
        reason: "admin".into(),
        by: "token:test".into(),
    };
    let named = std::sync::Mutex::new(Vec::new());
    let audit_of = |d: &Delegation, revoked: &[OAuthTokenId]| {
        named.lock().unwrap().extend_from_slice(revoked);
        AuditEntry::system(d.account_id, AuditAction::DelegationRevoke, now)
    };
    // Another account cannot reach the grant.
    assert_eq!(
        store
            .revoke_delegation(b.account, to_planner.id, &revocation, &audit_of)
            .await
            .unwrap(),
        DelegationRevoke::NotFound
    );
    assert!(matches!(
        store
            .revoke_delegation(a.account, to_planner.id, &revocation, &audit_of)
            .await
            .unwrap(),
        DelegationRevoke::Revoked(_)
    ));
    let mut expected = vec![refresh.id, first.id, refreshed.id, exchanged.id];
    expected.sort();
    assert_eq!(*named.lock().unwrap(), expected);
    let state = async |id| store.token(a.account, id).await.unwrap().unwrap();
    for id in &expected {
        let record = state(*id).await;
        assert_eq!(
            record.revoked_at.map(|t| t.timestamp()),
            Some(now.timestamp())
        );
        assert_eq!(record.revoked_reason.as_deref(), Some("delegation_revoked"));
    }
    for id in [writers.id, own.id] {
        assert_eq!(state(id).await.revoked_at, None, "untouched: {id}");
    }
    // Deactivating the principal reaches the writer's token, and not the researcher's own.
    let named_by_principal = std::sync::Mutex::new(Vec::new());
    let principal_audit = |p: &d2_oauth::Principal, revoked: &[OAuthTokenId]| {
        named_by_principal
            .lock()
            .unwrap()
            .extend_from_slice(revoked);
        AuditEntry::system(p.account_id, AuditAction::PrincipalUpdate, now)
    };
    let inactive = PrincipalSpec {
        username: "ada".into(),
        email: None,
        display_name: None,
        attributes: serde_json::Map::new(),
        active: false,
    };
    assert!(matches!(
        store
            .update_principal(a.account, a.principal, &inactive, now, &principal_audit)
            .await
            .unwrap(),
        PrincipalWrite::Written(_)
    ));
    assert_eq!(*named_by_principal.lock().unwrap(), vec![writers.id]);
    assert_eq!(
        state(writers.id).await.revoked_reason.as_deref(),
        Some("principal_inactive")
    );
    assert_eq!(state(own.id).await.revoked_at, None);
}

/// A report recorded before batches were paid by one entry had an entry of its own, of kind
/// `usage`, under the report's key: a retry of it finds its record, and the key is not
/// taken for a spend's.
#[tokio::test(flavor = "multi_thread")]
async fn a_report_paid_by_an_entry_of_its_own_is_still_found_by_its_key() {
    use d2_billing::{
        CreditGrant, Earlier, EntryId, EntryKind, LedgerEntry, Meter, Recorded, Recording, Refusal,
        UsageRecord, UsageRecordId, UsageRepo as _,
    };
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    use crate::schema::credit_entries;

    let (_db, store) = fresh().await;
    let (a, _) = two_accounts(&store).await;
    let report = || UsageRecord {
        id: UsageRecordId::random(),
        entry_id: EntryId::random(),
        idempotency_key: "legacy".to_owned(),
        meter: Meter::Model {
            model: "gpt-4o".to_owned(),
            input_tokens: 10,
            output_tokens: 1,
        },
        credits: 0,
        price_version: 1,
        credential: "token:contract".to_owned(),
        // Whole seconds: both stores keep them exactly.
        recorded_at: chrono::SubsecRound::trunc_subsecs(Utc::now(), 0),
    };
    let record = async |made: UsageRecord| {
        let decide = |_: &[CreditGrant], earlier: &Earlier| {
            if let [key, ..] = earlier.spent_keys.as_slice() {
                return Err(Refusal::KeyReused(key.clone()));
            }
            let first = <[UsageRecord]>::first(&earlier.records).cloned();
            let entry = first.is_none().then(|| LedgerEntry {
                id: made.entry_id,
                kind: EntryKind::Usage,
                amount: 0,
                balance_after: 0,
                grant_id: None,
                burns: Vec::new(),
                idempotency_key: None,
                reason: None,
                actor: made.credential.clone(),
                created_at: made.recorded_at,
            });
            Ok(Recording {
                reports: vec![Recorded {
                    replayed: first.is_some(),
                    record: first.unwrap_or_else(|| made.clone()),
                }],
                entry,
                hours: Vec::new(),
                audit: None,
                balance: 0,
            })
        };
        store
            .record_usage(a, std::slice::from_ref(&made), &decide)
            .await
            .unwrap()
    };
    let first = record(report()).await.unwrap();
    // As it was written then: the report's entry under its key.
    let mut conn = store.writer().await.unwrap();
    diesel::update(
        credit_entries::table
            .filter(credit_entries::id.eq(Id::from(first.reports[0].record.entry_id))),
    )
    .set(credit_entries::idempotency_key.eq("legacy"))
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    let retry = record(report()).await.unwrap_or_else(|r| panic!("{r:?}"));
    assert!(retry.reports[0].replayed);
    assert_eq!(retry.reports[0].record, first.reports[0].record);
    assert!(retry.entry.is_none());
}
