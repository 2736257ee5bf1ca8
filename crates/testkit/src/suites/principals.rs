//! Principals (the account's end users): created with a username unique in their account
//! (also under concurrent creations), read and listed newest first with the `active`
//! filter, replaced, deleted; every change audited, and nothing of one account reachable
//! from another.

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use d2_audit::{AuditAction, AuditEntry, AuditLog};
use d2_kernel::{AccountId, PageRequest};
use d2_oauth::{OAuthTokenId, Principal, PrincipalRepo, PrincipalSpec, PrincipalWrite};
use futures_util::future::join_all;
use serde_json::json;

use crate::fixtures::at;
use crate::fixtures::audited;

/// Everything the suite needs from one store.
pub trait Store: PrincipalRepo + AuditLog {}
impl<T: PrincipalRepo + AuditLog> Store for T {}

fn spec(username: &str, active: bool) -> PrincipalSpec {
    PrincipalSpec {
        username: username.to_owned(),
        email: Some(format!("{username}@example.com")),
        display_name: Some("Ada Lovelace".into()),
        attributes: json!({"department": "finance", "level": 3, "tags": ["eu", "vip"], "nested": {"a": null}})
            .as_object()
            .unwrap()
            .clone(),
        active,
    }
}

fn entry(principal: &Principal, action: AuditAction) -> AuditEntry {
    AuditEntry::system(principal.account_id, action, at(0)).target("principal", principal.id)
}

async fn create(store: &dyn Store, account: AccountId, username: &str, seconds: i64) -> Principal {
    let principal = Principal::new(account, spec(username, seconds % 2 == 0), at(seconds));
    let outcome = store
        .create_principal(&principal, &entry(&principal, AuditAction::PrincipalCreate))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    assert_eq!(
        outcome,
        PrincipalWrite::Written(Box::new(principal.clone()))
    );
    principal
}

pub async fn principals(store: &dyn Store, a: AccountId, b: AccountId) {
    let ada = create(store, a, "ada", 0).await;
    assert_eq!(
        store.principal(a, ada.id).await.unwrap(),
        Some(ada.clone()),
        "every column comes back as written"
    );
    assert_eq!(store.principal(b, ada.id).await.unwrap(), None);
    // The username is the account's: taken in `a`, free in `b`.
    let twin = Principal::new(a, spec("ada", true), at(1));
    assert_eq!(
        store
            .create_principal(&twin, &entry(&twin, AuditAction::PrincipalCreate))
            .await
            .unwrap(),
        PrincipalWrite::UsernameTaken
    );
    assert_eq!(store.principal(a, twin.id).await.unwrap(), None);
    create(store, b, "ada", 1).await;
    let grace = create(store, a, "grace", 3).await;
    let linus = create(store, a, "linus", 4).await;

    // Newest first, in pages, filtered by state.
    let first = store
        .principals(a, None, &PageRequest::first(2))
        .await
        .unwrap();
    assert_eq!(first.items, vec![linus.clone(), grace.clone()]);
    let cursor = first.next.unwrap().encode();
    let rest = store
        .principals(
            a,
            None,
            &PageRequest::parse(Some(2), Some(&cursor)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rest.items, vec![ada.clone()]);
    assert!(rest.next.is_none());
    let active = store
        .principals(a, Some(true), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(active.items, vec![linus.clone(), ada.clone()]);
    let inactive = store
        .principals(a, Some(false), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(inactive.items, vec![grace.clone()]);

    // Replacing: the username stays unique; another account's principal is not found.
    let audit_update = |p: &Principal, _: &[OAuthTokenId]| entry(p, AuditAction::PrincipalUpdate);
    let mut changed = spec("ada.l", false);
    changed.attributes = serde_json::Map::new();
    changed.email = None;
    let outcome = store
        .update_principal(a, ada.id, &changed, at(10), &audit_update)
        .await
        .unwrap();
    let PrincipalWrite::Written(updated) = outcome else {
        panic!("updated: {outcome:?}");
    };
    assert_eq!(updated.spec, changed);
    assert_eq!((updated.created_at, updated.updated_at), (at(0), at(10)));
    assert_eq!(
        store.principal(a, ada.id).await.unwrap(),
        Some(*updated.clone())
    );
    assert_eq!(
        store
            .update_principal(a, ada.id, &spec("grace", true), at(11), &audit_update)
            .await
            .unwrap(),
        PrincipalWrite::UsernameTaken
    );
    assert_eq!(
        store
            .update_principal(b, ada.id, &spec("mallory", true), at(11), &audit_update)
            .await
            .unwrap(),
        PrincipalWrite::NotFound
    );
    // Keeping one's own username is no clash.
    assert!(matches!(
        store
            .update_principal(a, grace.id, &spec("grace", true), at(12), &audit_update)
            .await
            .unwrap(),
        PrincipalWrite::Written(_)
    ));

    // Deleting, in its account only.
    let delete = entry(&linus, AuditAction::PrincipalDelete);
    assert!(!store.delete_principal(b, linus.id, &delete).await.unwrap());
    assert!(store.delete_principal(a, linus.id, &delete).await.unwrap());
    assert!(!store.delete_principal(a, linus.id, &delete).await.unwrap());
    assert_eq!(store.principal(a, linus.id).await.unwrap(), None);

    assert_eq!(audited(store, a, AuditAction::PrincipalCreate).await, 3);
    assert_eq!(audited(store, a, AuditAction::PrincipalUpdate).await, 2);
    assert_eq!(audited(store, a, AuditAction::PrincipalDelete).await, 1);
    assert_eq!(audited(store, b, AuditAction::PrincipalUpdate).await, 0);
}

/// Eight concurrent creations of one username: exactly one is written (and audited).
pub async fn principal_races(store: &dyn Store, account: AccountId) {
    let attempts: Vec<Principal> = (0..8)
        .map(|i| Principal::new(account, spec("same", true), at(i)))
        .collect();
    let entries: Vec<AuditEntry> = attempts
        .iter()
        .map(|principal| entry(principal, AuditAction::PrincipalCreate))
        .collect();
    let outcomes = join_all(
        attempts
            .iter()
            .zip(&entries)
            .map(|(principal, entry)| store.create_principal(principal, entry)),
    )
    .await;
    let written = outcomes
        .iter()
        .filter(|o| matches!(o.as_ref().unwrap(), PrincipalWrite::Written(_)))
        .count();
    assert_eq!(written, 1);
    assert_eq!(
        audited(store, account, AuditAction::PrincipalCreate).await,
        1
    );
    let all = store
        .principals(account, None, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1);
}
