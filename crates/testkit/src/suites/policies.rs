//! Policies and publisher keys: drafts, publishes, versions, revocation, content already
//! published, racing publishes, and publisher keys registered, approved and revoked.

#![expect(
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use d2_audit::{AuditAction, AuditEntry};
use d2_jwks::SigningKeyRepo;
use d2_kernel::{AccountId, AppName, PageRequest, PolicyId, UserId};
use d2_members::MemberRepo;
use d2_policy::{
    ApprovalOutcome, DraftOutcome, KeyApproval, KeyRegistration, KeyState, PolicyRecord,
    PolicyRepo, Publication, PublishOutcome, PublisherKey, PublisherKeyRepo, Stage, derive_key_id,
};
use serde_json::json;

use crate::fixtures::{at, person_named};

/// Everything the suites of policies, publisher keys and signing keys need from one store.
pub trait Store: PolicyRepo + PublisherKeyRepo + SigningKeyRepo + MemberRepo {}
impl<T: PolicyRepo + PublisherKeyRepo + SigningKeyRepo + MemberRepo> Store for T {}

pub(super) fn audit(account_id: AccountId, action: AuditAction) -> AuditEntry {
    AuditEntry::system(account_id, action, at(0))
}

pub(super) fn record(account_id: AccountId, app: &str, stage: Stage, seconds: i64) -> PolicyRecord {
    record_granting(account_id, app, stage, seconds, "t")
}

/// A record whose document grants `tool`: records granting the same tool have the same
/// content.
fn record_granting(
    account_id: AccountId,
    app: &str,
    stage: Stage,
    seconds: i64,
    tool: &str,
) -> PolicyRecord {
    let document = json!({ "metadata": { "name": app }, "policies": [{ "role": "r", "permissions": [tool] }] });
    PolicyRecord {
        id: PolicyId::random(),
        account_id,
        app_name: AppName::normalise(app),
        version: 0,
        stage,
        active: false,
        content_digest: d2_policy::content_digest(&document),
        document,
        jws: (stage == Stage::Published).then(|| format!("jws-{seconds}")),
        etag: format!("etag-{seconds}"),
        kid: None,
        tool_count: 1,
        size_bytes: 10,
        description: None,
        created_at: at(seconds),
        published_at: (stage == Stage::Published).then(|| at(seconds)),
        expires_at: None,
        revoked_at: None,
        actor: "system".into(),
        token_id: None,
        user_id: None,
        publisher_key_id: None,
        rotation_id: None,
    }
}

pub(super) async fn publish(
    store: &dyn Store,
    account: AccountId,
    app: &str,
    seconds: i64,
    expected: Option<PolicyId>,
) -> PublishOutcome {
    let publication = Publication {
        record: record(account, app, Stage::Published, seconds),
        expected_active: expected,
        requested_version: None,
        max_apps: 10,
        refuse_earlier_content: false,
    };
    let audit_of = |r: &PolicyRecord| audit(r.account_id, AuditAction::PolicyPublish);
    store
        .publish(&publication, &audit_of)
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"))
}

pub(super) fn published(outcome: PublishOutcome) -> PolicyRecord {
    match outcome {
        PublishOutcome::Published(record) => *record,
        other => panic!("expected a publish, got {other:?}"),
    }
}

/// Publishes one version of `app` and returns its ETag (for ports of other crates that read
/// policies, such as resolving an ETag to its app).
pub async fn publish_one(store: &dyn Store, account: AccountId, app: &str) -> String {
    published(publish(store, account, app, 1, None).await).etag
}

/// Drafts, publishes, versions, revocation and isolation. `a` and `b` are existing accounts.
pub async fn policies(store: &dyn Store, a: AccountId, b: AccountId) {
    let app = AppName::normalise("app");
    let audit_of = |r: &PolicyRecord| audit(r.account_id, AuditAction::PolicyDraft);
    let saved = |outcome: DraftOutcome| match outcome {
        DraftOutcome::Saved(record) => *record,
        DraftOutcome::AppLimit => panic!("refused as over the app limit"),
    };
    let draft = saved(
        store
            .save_draft(&record(a, "app", Stage::Draft, 1), 1, &audit_of)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(draft.version, 1);
    let again = saved(
        store
            .save_draft(&record(a, "app", Stage::Draft, 2), 1, &audit_of)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(
        store
            .save_draft(&record(a, "other", Stage::Draft, 1), 1, &audit_of)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        DraftOutcome::AppLimit,
        "a draft of a new app takes one of the account's apps"
    );
    assert!(
        store
            .app_state(a, &AppName::normalise("other"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .draft
            .is_none(),
        "nothing written"
    );
    assert_eq!(
        again.version, 2,
        "a new draft replaces the old one and moves the version up"
    );
    let state = store
        .app_state(a, &app)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.draft.as_ref().map(|d| d.id), Some(again.id));
    assert!(state.active.is_none());

    let v3 = published(publish(store, a, "app", 3, None).await);
    assert_eq!(v3.version, 3);
    assert!(v3.active);
    let state = store
        .app_state(a, &app)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(state.draft.is_none(), "publishing consumes the draft");
    assert_eq!(state.active.as_ref().map(|r| r.id), Some(v3.id));
    assert_eq!(state.max_version, 3);

    // A stale base is refused and writes nothing.
    assert_eq!(
        publish(store, a, "app", 4, None).await,
        PublishOutcome::Conflict
    );
    let v4 = published(publish(store, a, "app", 4, Some(v3.id)).await);
    assert_eq!(v4.version, 4);
    let versions = store
        .versions(a, &app, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items;
    assert_eq!(
        versions.iter().map(|r| r.version).collect::<Vec<_>>(),
        [4, 3]
    );
    assert_eq!(versions.iter().filter(|r| r.active).count(), 1);

    // An explicit version must be above the highest.
    let mut explicit = Publication {
        record: record(a, "app", Stage::Published, 5),
        expected_active: Some(v4.id),
        requested_version: Some(4),
        max_apps: 10,
        refuse_earlier_content: false,
    };
    let audit_publish = |r: &PolicyRecord| audit(r.account_id, AuditAction::PolicyPublish);
    assert_eq!(
        store.publish(&explicit, &audit_publish).await.ok(),
        Some(PublishOutcome::VersionRollback { highest: 4 })
    );
    explicit.requested_version = Some(9);
    assert_eq!(
        published(
            store
                .publish(&explicit, &audit_publish)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        )
        .version,
        9
    );

    // The app limit counts apps that serve something.
    let limited = Publication {
        record: record(a, "second", Stage::Published, 6),
        expected_active: None,
        requested_version: None,
        max_apps: 1,
        refuse_earlier_content: false,
    };
    assert_eq!(
        store.publish(&limited, &audit_publish).await.ok(),
        Some(PublishOutcome::AppLimit)
    );
    assert!(
        store
            .app_state(a, &AppName::normalise("second"))
            .await
            .is_ok_and(|s| s.max_version == 0)
    );

    // Revocation.
    let revoked = store
        .revoke_app(a, &app, at(7), &audit(a, AuditAction::PolicyRevoke))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(revoked, 1);
    let state = store
        .app_state(a, &app)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(state.active.is_none() && state.revoked);
    assert_eq!(
        store
            .revoke_app(a, &app, at(8), &audit(a, AuditAction::PolicyRevoke))
            .await
            .ok(),
        Some(0)
    );
    let fresh = published(publish(store, a, "app", 9, None).await);
    assert_eq!(fresh.version, 10);
    assert!(
        !store
            .app_state(a, &app)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .revoked
    );

    // Descriptions change beside the row; other accounts see nothing.
    let described = store
        .set_description(
            a,
            fresh.id,
            Some("release 10"),
            &audit(a, AuditAction::PolicyUpdate),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        described.and_then(|r| r.description).as_deref(),
        Some("release 10")
    );
    assert!(
        store
            .set_description(b, fresh.id, None, &audit(b, AuditAction::PolicyUpdate))
            .await
            .is_ok_and(|r| r.is_none())
    );
    assert!(
        store
            .find_policy(b, fresh.id)
            .await
            .is_ok_and(|r| r.is_none())
    );
    assert!(
        store
            .find_policy(a, fresh.id)
            .await
            .is_ok_and(|r| r.is_some())
    );
    assert!(store.apps(b).await.is_ok_and(|apps| apps.is_empty()));
    assert_eq!(store.apps(a).await.unwrap_or_default(), vec![app.clone()]);
    assert_eq!(store.active_policies(a).await.unwrap_or_default().len(), 1);

    // Paging newest first.
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let result = store
            .list_policies(a, None, &page)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        seen.extend(result.items.iter().map(|r| r.id));
        let Some(next) = result.next else { break };
        page = PageRequest::parse(Some(2), Some(&next.encode())).unwrap_or_else(|_| unreachable!());
    }
    assert_eq!(
        seen.len(),
        store
            .versions(a, &app, &PageRequest::first(100))
            .await
            .map(|page| page.items.len())
            .unwrap_or_default()
    );
    assert!(
        store
            .list_policies(b, None, &PageRequest::first(10))
            .await
            .is_ok_and(|p| p.items.is_empty())
    );
    // Only the named app's rows.
    assert_eq!(
        store
            .list_policies(a, Some(&app), &PageRequest::first(100))
            .await
            .map(|p| p.items.len())
            .unwrap_or_default(),
        seen.len()
    );
    assert!(
        store
            .list_policies(
                a,
                Some(&AppName::normalise("elsewhere")),
                &PageRequest::first(10)
            )
            .await
            .is_ok_and(|p| p.items.is_empty())
    );
}

fn publisher_key(account: AccountId, byte: u8, seconds: i64) -> PublisherKey {
    let public_key = [byte; 32];
    PublisherKey {
        key_id: derive_key_id(&public_key),
        account_id: account,
        public_key,
        created_at: at(seconds),
        revoked_at: None,
        uploaded_by: "token:x".into(),
        token_id: None,
        user_id: None,
        pending: false,
        approval: None,
    }
}

/// Publisher keys: idempotent registration per account, soft revocation.
pub async fn publisher_keys(store: &dyn Store, a: AccountId, b: AccountId) {
    let key = publisher_key(a, 1, 1);
    let upload = audit(a, AuditAction::KeyUpload);
    assert_eq!(
        store.register(&key, &upload).await.ok(),
        Some(KeyRegistration::Created)
    );
    assert!(matches!(
        store.register(&key, &upload).await,
        Ok(KeyRegistration::Exists(_))
    ));
    // The same key in another account is that account's own.
    assert_eq!(
        store
            .register(&publisher_key(b, 1, 1), &audit(b, AuditAction::KeyUpload))
            .await
            .ok(),
        Some(KeyRegistration::Created)
    );
    store
        .register(&publisher_key(a, 2, 2), &upload)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.find(a, &key.key_id).await.ok().flatten(),
        Some(key.clone())
    );
    assert!(
        store
            .find(a, "ed_nothinghere")
            .await
            .is_ok_and(|k| k.is_none())
    );

    let revoke = audit(a, AuditAction::KeyRevoke);
    assert_eq!(
        store.revoke(a, &key.key_id, at(3), &revoke).await.ok(),
        Some(true)
    );
    assert_eq!(
        store.revoke(a, &key.key_id, at(4), &revoke).await.ok(),
        Some(true)
    );
    assert_eq!(
        store.revoke(a, "ed_nothinghere", at(4), &revoke).await.ok(),
        Some(false)
    );
    let revoked = store
        .find(a, &key.key_id)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("still stored"));
    assert_eq!(revoked.revoked_at, Some(at(3)));
    assert_eq!(store.list(a, false).await.unwrap_or_default().len(), 1);
    assert_eq!(store.list(a, true).await.unwrap_or_default().len(), 2);
    assert!(
        store
            .list(a, true)
            .await
            .unwrap_or_default()
            .iter()
            .all(|k| k.uploaded_by_name.is_none()),
        "keys registered for nobody name nobody"
    );
    assert!(
        store
            .find(b, &key.key_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|k| k.revoked_at.is_none()),
        "b's key untouched"
    );

    // Pending keys: stored pending, approved once, by their own account only.
    let pending = PublisherKey {
        pending: true,
        ..publisher_key(a, 3, 5)
    };
    store
        .register(&pending, &upload)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stored = store.find(a, &pending.key_id).await.ok().flatten();
    assert_eq!(stored.as_ref(), Some(&pending));
    assert_eq!(stored.map(|k| k.state()), Some(KeyState::Pending));
    assert!(
        store
            .list(a, false)
            .await
            .unwrap_or_default()
            .iter()
            .any(|k| k.key.key_id == pending.key_id),
        "pending keys are listed"
    );
    let approval = KeyApproval {
        at: at(6),
        by: "token:admin".into(),
    };
    let approve = audit(a, AuditAction::KeyApprove);
    for (account, key_id) in [(b, pending.key_id.as_str()), (a, "ed_nothinghere")] {
        assert_eq!(
            store
                .approve(account, key_id, &approval, &approve)
                .await
                .ok(),
            Some(ApprovalOutcome::NotFound)
        );
    }
    assert!(
        store
            .find(a, &pending.key_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|k| k.pending),
        "another account's approval changed nothing"
    );
    let approved = PublisherKey {
        pending: false,
        approval: Some(approval.clone()),
        ..pending.clone()
    };
    assert_eq!(
        store
            .approve(a, &pending.key_id, &approval, &approve)
            .await
            .ok(),
        Some(ApprovalOutcome::Approved(Box::new(approved.clone())))
    );
    assert_eq!(
        store.find(a, &pending.key_id).await.ok().flatten(),
        Some(approved.clone())
    );
    let later = KeyApproval {
        at: at(7),
        by: "token:other".into(),
    };
    assert_eq!(
        store
            .approve(a, &pending.key_id, &later, &approve)
            .await
            .ok(),
        Some(ApprovalOutcome::NotPending(Box::new(approved))),
        "approving an active key changes nothing"
    );

    // A pending key can be revoked, and a revoked key is never approved.
    let rejected = PublisherKey {
        pending: true,
        ..publisher_key(a, 4, 8)
    };
    store
        .register(&rejected, &upload)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.revoke(a, &rejected.key_id, at(9), &revoke).await.ok(),
        Some(true)
    );
    let outcome = store
        .approve(a, &rejected.key_id, &later, &approve)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ApprovalOutcome::NotPending(unchanged) = outcome else {
        panic!("a revoked key is not approved: {outcome:?}");
    };
    assert_eq!(unchanged.state(), KeyState::Revoked);
    assert!(unchanged.approval.is_none());

    // The list names the person a key was registered for (display name, else full name,
    // else email), read with it; a person the store does not know is named by nobody.
    let kay = person_named(store, "kay@contract.test", Some("Kay Keys")).await;
    let lee = person_named(store, "lee@contract.test", None).await;
    for (byte, user) in [
        (5, Some(kay.id)),
        (6, Some(lee.id)),
        (7, Some(UserId::random())),
    ] {
        let key = PublisherKey {
            user_id: user,
            ..publisher_key(a, byte, 10 + i64::from(byte))
        };
        store
            .register(&key, &upload)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let names: Vec<Option<String>> = store
        .list(a, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .take(3)
        .map(|k| k.uploaded_by_name)
        .collect();
    assert_eq!(
        names,
        [
            None,
            Some("lee@contract.test".to_owned()),
            Some("Kay Keys".to_owned())
        ],
        "newest first"
    );
}

/// Rows stored without a content digest (written before adapters stored one) still count:
/// `forget_digests` makes the adapter forget the digests of the rows written so far.
/// `a` is an existing account.
pub async fn earlier_content_without_digests(
    store: &dyn Store,
    a: AccountId,
    forget_digests: impl AsyncFnOnce(),
) {
    let publish = async |seconds: i64, tool: &str| {
        let expected = store
            .app_state(a, &AppName::normalise("old"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .active
            .map(|r| r.id);
        let publication = Publication {
            record: record_granting(a, "old", Stage::Published, seconds, tool),
            expected_active: expected,
            requested_version: None,
            max_apps: 10,
            refuse_earlier_content: true,
        };
        let audit_of = |r: &PolicyRecord| audit(r.account_id, AuditAction::PolicyPublish);
        store
            .publish(&publication, &audit_of)
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"))
    };
    let first = published(publish(1, "a").await);
    published(publish(2, "b").await);
    forget_digests().await;
    assert_eq!(
        store
            .find_policy(a, first.id)
            .await
            .ok()
            .flatten()
            .map(|r| r.content_digest),
        Some(first.content_digest.clone()),
        "a row without a digest reads with the digest of its document"
    );
    assert_eq!(
        publish(3, "a").await,
        PublishOutcome::IdenticalTo {
            id: first.id,
            version: 1
        }
    );
    assert_eq!(published(publish(4, "c").await).version, 3);
}

/// Publishing an earlier version's content is refused when asked (`refuse_earlier_content`)
/// unless the active version has that content; a revert (not asking) brings it back.
/// `a` is an existing account.
pub async fn earlier_content(store: &dyn Store, a: AccountId) {
    let publish = async |seconds: i64, tool: &str, refuse: bool| {
        let expected = store
            .app_state(a, &AppName::normalise("same"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .active
            .map(|r| r.id);
        let publication = Publication {
            record: record_granting(a, "same", Stage::Published, seconds, tool),
            expected_active: expected,
            requested_version: None,
            max_apps: 10,
            refuse_earlier_content: refuse,
        };
        let audit_of = |r: &PolicyRecord| audit(r.account_id, AuditAction::PolicyPublish);
        store
            .publish(&publication, &audit_of)
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"))
    };
    let first = published(publish(1, "a", true).await);
    let second = published(publish(2, "b", true).await);
    assert_ne!(first.content_digest, second.content_digest);
    assert_eq!(
        publish(3, "a", true).await,
        PublishOutcome::IdenticalTo {
            id: first.id,
            version: 1
        }
    );
    let state = store
        .app_state(a, &AppName::normalise("same"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        state.active.map(|r| r.id),
        Some(second.id),
        "nothing written"
    );
    assert_eq!(state.max_version, 2);

    // A revert does not ask; then the active content may be published again.
    let reverted = published(publish(4, "a", false).await);
    assert_eq!(reverted.version, 3);
    assert_eq!(reverted.content_digest, first.content_digest);
    let again = published(publish(5, "a", true).await);
    assert_eq!(again.version, 4);
    assert_eq!(
        publish(6, "b", true).await,
        PublishOutcome::IdenticalTo {
            id: second.id,
            version: 2
        }
    );
    // The digest is stored and read back.
    assert_eq!(
        store
            .find_policy(a, second.id)
            .await
            .ok()
            .flatten()
            .map(|r| r.content_digest),
        Some(second.content_digest)
    );
    // Content is compared within the app: another app may hold the same content.
    let other = Publication {
        record: record_granting(a, "elsewhere", Stage::Published, 7, "a"),
        expected_active: None,
        requested_version: None,
        max_apps: 10,
        refuse_earlier_content: true,
    };
    let audit_of = |r: &PolicyRecord| audit(r.account_id, AuditAction::PolicyPublish);
    assert!(matches!(
        store.publish(&other, &audit_of).await,
        Ok(PublishOutcome::Published(_))
    ));
}

/// Racing publishes of one app, each expecting the same active version: exactly one
/// publishes, the others are told of the conflict, and the app has one active version.
/// `a` is an existing account.
pub async fn publish_races(store: &dyn Store, a: AccountId) {
    let first = published(publish(store, a, "race", 1, None).await);
    let outcomes = futures_util::future::join_all(
        (0..8).map(|i| publish(store, a, "race", 2 + i, Some(first.id))),
    )
    .await;
    let won = outcomes
        .iter()
        .filter(|o| matches!(o, PublishOutcome::Published(_)))
        .count();
    let lost = outcomes
        .iter()
        .filter(|o| matches!(o, PublishOutcome::Conflict))
        .count();
    assert_eq!((won, lost), (1, 7), "{outcomes:?}");
    let state = store
        .app_state(a, &AppName::normalise("race"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let active = state.active.unwrap_or_else(|| panic!("an active version"));
    assert_eq!(active.version, 2, "one version after the first");
    assert_eq!(state.max_version, 2);
}
