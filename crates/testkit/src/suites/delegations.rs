//! Delegation grants: stored as made and read back whole, listed newest first by grantor,
//! by agent and by whether they work at an instant, revoked once (also under concurrent
//! revocations) with the record of it; every change audited, nothing of one account
//! reachable from another.

#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use std::collections::BTreeSet;

use d2_audit::{AuditAction, AuditEntry, AuditLog};
use d2_kernel::{AccountId, PageRequest};
use d2_oauth::{
    Delegation, DelegationFilter, DelegationRepo, DelegationRevocation, DelegationRevoke,
    DelegationSpec, DelegationStatus, Grantor, OAuthTokenId,
};
use futures_util::future::join_all;

use crate::fixtures::audited;
use crate::fixtures::{Parties, at};

/// Everything the suite needs from one store.
pub trait Store: DelegationRepo + AuditLog {}
impl<T: DelegationRepo + AuditLog> Store for T {}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A grant of `parties` by `grantor` to their agent `to`, made at `at(seconds)`, lasting
/// `lasting` seconds.
fn grant(parties: &Parties, grantor: Grantor, to: usize, seconds: i64, lasting: u32) -> Delegation {
    let spec = DelegationSpec {
        grantor,
        agent_id: parties.agents[to],
        scopes: set(&["reports.read", "tools:read"]),
        tools: (to == 2).then(|| set(&["search.web"])),
        resources: set(&["https://api.example.com/"]),
        task_id: (to == 1).then(|| "task-42".to_owned()),
        max_depth: 3,
        expires_in_seconds: lasting,
    };
    Delegation::new(parties.account, spec, "token:contract".into(), at(seconds))
}

fn entry(delegation: &Delegation, action: AuditAction) -> AuditEntry {
    AuditEntry::system(delegation.account_id, action, at(0)).target("delegation", delegation.id)
}

async fn store_grant(store: &dyn Store, delegation: &Delegation) {
    let stored = store
        .create_delegation(
            delegation,
            &entry(delegation, AuditAction::DelegationCreate),
        )
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    assert!(stored, "the grant's parties exist");
}

async fn listed(
    store: &dyn Store,
    account: AccountId,
    filter: DelegationFilter,
) -> Vec<Delegation> {
    store
        .delegations(account, &filter, &PageRequest::first(100))
        .await
        .unwrap()
        .items
}

fn revocation(seconds: i64) -> DelegationRevocation {
    DelegationRevocation {
        at: at(seconds),
        reason: "admin".into(),
        by: "token:contract".into(),
    }
}

pub async fn delegations(store: &dyn Store, a: Parties, b: Parties) {
    let by_principal = grant(&a, Grantor::Principal(a.principal), 0, 10, 3_600);
    let by_agent = grant(&a, Grantor::Agent(a.agents[0]), 1, 20, 3_600);
    let short = grant(&a, Grantor::Agent(a.agents[0]), 2, 30, 60);
    let elsewhere = grant(&b, Grantor::Principal(b.principal), 0, 40, 3_600);
    for delegation in [&by_principal, &by_agent, &short, &elsewhere] {
        store_grant(store, delegation).await;
    }
    assert_eq!(
        audited(store, a.account, AuditAction::DelegationCreate).await,
        3
    );

    // Read back whole, and only in its own account.
    for delegation in [&by_principal, &by_agent, &short] {
        let read = store.delegation(a.account, delegation.id).await.unwrap();
        assert_eq!(read.as_ref(), Some(delegation));
    }
    assert_eq!(
        store.delegation(b.account, by_principal.id).await.unwrap(),
        None
    );
    assert_eq!(
        store.delegation(a.account, elsewhere.id).await.unwrap(),
        None
    );

    // Listed newest first, filtered.
    let ids = |items: Vec<Delegation>| items.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(listed(store, a.account, DelegationFilter::default()).await),
        [short.id, by_agent.id, by_principal.id]
    );
    let of = |grantor| DelegationFilter {
        grantor: Some(grantor),
        ..DelegationFilter::default()
    };
    assert_eq!(
        ids(listed(store, a.account, of(Grantor::Principal(a.principal))).await),
        [by_principal.id]
    );
    assert_eq!(
        ids(listed(store, a.account, of(Grantor::Agent(a.agents[0]))).await),
        [short.id, by_agent.id]
    );
    assert_eq!(
        ids(listed(store, a.account, of(Grantor::Principal(b.principal))).await),
        []
    );
    let to = DelegationFilter {
        agent_id: Some(a.agents[1]),
        ..DelegationFilter::default()
    };
    assert_eq!(ids(listed(store, a.account, to).await), [by_agent.id]);
    let page = store
        .delegations(
            a.account,
            &DelegationFilter::default(),
            &PageRequest::first(2),
        )
        .await
        .unwrap();
    assert_eq!(ids(page.items), [short.id, by_agent.id]);
    let cursor = page.next.unwrap().encode();
    let rest = store
        .delegations(
            a.account,
            &DelegationFilter::default(),
            &PageRequest::parse(Some(2), Some(&cursor)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ids(rest.items), [by_principal.id]);
    assert!(rest.next.is_none());

    // Revoked once, with its record; the second time nothing is written.
    let audit_of = |d: &Delegation, _: &[OAuthTokenId]| entry(d, AuditAction::DelegationRevoke);
    let DelegationRevoke::Revoked(revoked) = store
        .revoke_delegation(a.account, by_agent.id, &revocation(100), &audit_of)
        .await
        .unwrap()
    else {
        panic!("the first revocation revokes");
    };
    assert_eq!(revoked.revocation, Some(revocation(100)));
    assert_eq!(revoked.status(at(101)), DelegationStatus::Revoked);
    let read = store.delegation(a.account, by_agent.id).await.unwrap();
    assert_eq!(read.as_ref(), Some(revoked.as_ref()));
    assert!(matches!(
        store
            .revoke_delegation(a.account, by_agent.id, &revocation(200), &audit_of)
            .await
            .unwrap(),
        DelegationRevoke::AlreadyRevoked(d) if d.revocation == Some(revocation(100))
    ));
    assert_eq!(
        audited(store, a.account, AuditAction::DelegationRevoke).await,
        1
    );
    // Another account's grant is not found from this one.
    assert_eq!(
        store
            .revoke_delegation(b.account, by_principal.id, &revocation(100), &audit_of)
            .await
            .unwrap(),
        DelegationRevoke::NotFound
    );
    assert_eq!(
        audited(store, b.account, AuditAction::DelegationRevoke).await,
        0
    );

    // Working at an instant: neither revoked nor expired.
    let working = |seconds| DelegationFilter {
        active_at: Some(at(seconds)),
        ..DelegationFilter::default()
    };
    assert_eq!(
        ids(listed(store, a.account, working(50)).await),
        [short.id, by_principal.id]
    );
    assert_eq!(
        ids(listed(store, a.account, working(90)).await),
        [by_principal.id],
        "the short grant expired at 90 s"
    );
    assert_eq!(
        ids(listed(store, b.account, working(90)).await),
        [elsewhere.id]
    );
}

/// Eight concurrent revocations of one grant: exactly one revokes it, one record.
pub async fn delegation_races(store: &dyn Store, a: Parties) {
    let delegation = grant(&a, Grantor::Principal(a.principal), 0, 0, 3_600);
    store_grant(store, &delegation).await;
    let audit_of = |d: &Delegation, _: &[OAuthTokenId]| entry(d, AuditAction::DelegationRevoke);
    let outcomes = join_all((0..8).map(|i| {
        let revocation = revocation(i);
        async move {
            store
                .revoke_delegation(a.account, delegation.id, &revocation, &audit_of)
                .await
                .unwrap()
        }
    }))
    .await;
    let revoked = outcomes
        .iter()
        .filter(|o| matches!(o, DelegationRevoke::Revoked(_)))
        .count();
    assert_eq!(revoked, 1, "{outcomes:?}");
    assert_eq!(
        audited(store, a.account, AuditAction::DelegationRevoke).await,
        1
    );
}
