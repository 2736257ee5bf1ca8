//! The audit trail: filters, paging newest first, one account's records only.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use d2_audit::{AuditAction, AuditEntry, AuditFilter, AuditLog};
use d2_kernel::{AccountId, PageRequest};
use d2_tokens::TokenGrant;

use super::tokens::Store;
use crate::fixtures::{self, at, tenant};

/// The number of records in an account's trail.
pub(super) async fn audit_count(store: &dyn AuditLog, account_id: AccountId) -> usize {
    store
        .search(
            account_id,
            &AuditFilter::default(),
            &PageRequest::first(1000),
        )
        .await
        .map(|page| page.items.len())
        .unwrap_or_else(|e| panic!("audit list: {e}"))
}

/// The records of one action in an account's trail.
pub(super) async fn records_of(
    store: &dyn AuditLog,
    account_id: AccountId,
    action: AuditAction,
) -> Vec<AuditEntry> {
    let filter = AuditFilter {
        action: Some(action),
        ..AuditFilter::default()
    };
    store
        .search(account_id, &filter, &PageRequest::first(1000))
        .await
        .unwrap_or_else(|e| panic!("audit list: {e}"))
        .items
        .into_iter()
        .map(|record| record.entry)
        .collect()
}

/// Audit: filters, paging newest first, isolation.
pub async fn audit(store: &dyn Store) {
    let (account, _, admin) = tenant(store, at(0)).await;
    let (other, _, _) = tenant(store, at(0)).await;
    for second in 1..=4 {
        let token = fixtures::token(account.id, TokenGrant::Dev, at(second));
        let task = if second % 2 == 0 {
            "task-even"
        } else {
            "task-odd"
        };
        let entry = AuditEntry::system(account.id, AuditAction::TokenCreate, at(second))
            .target("token", token.token.id)
            .metadata(serde_json::json!({ "task_id": task }));
        store
            .insert(&token, &entry)
            .await
            .unwrap_or_else(|e| panic!("insert: {e}"));
    }
    let entry = AuditEntry::system(account.id, AuditAction::TokenRevoke, at(5));
    let _ = store
        .revoke(account.id, admin.token.id, at(5), &entry)
        .await;

    let all = store
        .search(
            account.id,
            &AuditFilter::default(),
            &PageRequest::first(100),
        )
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(all.items.len(), 6);
    assert!(
        all.items
            .windows(2)
            .all(|w| w[0].entry.occurred_at >= w[1].entry.occurred_at)
    );
    assert!(all.items.iter().all(|r| r.entry.account_id == account.id));

    let creates = AuditFilter {
        action: Some(AuditAction::TokenCreate),
        ..AuditFilter::default()
    };
    let page = store
        .search(account.id, &creates, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.items.len(), 4);
    let window = AuditFilter {
        since: Some(at(2)),
        until: Some(at(4)),
        ..AuditFilter::default()
    };
    let page = store
        .search(account.id, &window, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.items.len(), 2);
    let by_control_plane = AuditFilter {
        actor: Some("control_plane".into()),
        ..AuditFilter::default()
    };
    let page = store
        .search(account.id, &by_control_plane, &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.items.len(), 1);
    let of_task = |task: &str| AuditFilter {
        task_id: Some(task.to_owned()),
        ..AuditFilter::default()
    };
    for (account_id, task, expected) in [
        (account.id, "task-even", 2),
        (account.id, "task-none", 0),
        (other.id, "task-even", 0),
    ] {
        let page = store
            .search(account_id, &of_task(task), &PageRequest::first(100))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.items.len(), expected, "{task}");
        assert!(
            page.items
                .iter()
                .all(|r| r.entry.metadata["task_id"] == task)
        );
    }

    let first = store
        .search(account.id, &AuditFilter::default(), &PageRequest::first(4))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let next = first.next.unwrap_or_else(|| panic!("a second page"));
    let rest = store
        .search(
            account.id,
            &AuditFilter::default(),
            &PageRequest::parse(Some(4), Some(&next.encode())).unwrap_or_else(|_| unreachable!()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rest.items.len(), 2);
    assert!(rest.next.is_none());
    assert_eq!(audit_count(store, other.id).await, 1);
}
