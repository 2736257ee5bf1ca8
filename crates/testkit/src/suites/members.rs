//! People and memberships: sign-in by issuer and subject (and its race), accounts and
//! roles each account's own, role changes and removals that keep an owner (and their race).

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use d2_audit::{AuditAction, AuditEntry, AuditFilter, AuditLog};
use d2_kernel::{AccountId, PageRequest, Role, UserId};
use d2_members::{Identity, InvitationRepo, Member, MemberOutcome, MemberRepo, MemberUpdate};
use futures_util::future::join_all;

use crate::fixtures::{account_of, at, identity, join, person};

/// Everything the suites of people, memberships and invitations need from one store.
pub trait Store: MemberRepo + InvitationRepo + AuditLog {}
impl<T: MemberRepo + InvitationRepo + AuditLog> Store for T {}

/// The number of records of `action` in an account's trail.
pub(super) async fn audited(store: &dyn Store, account: AccountId, action: AuditAction) -> usize {
    store
        .search(account, &AuditFilter::default(), &PageRequest::first(100))
        .await
        .unwrap_or_else(|e| panic!("audit: {e}"))
        .items
        .iter()
        .filter(|record| record.entry.action == action)
        .count()
}

fn audit_of(before: &Member, after: Option<&Member>) -> AuditEntry {
    let action = match after {
        Some(_) => AuditAction::MemberRoleChange,
        None => AuditAction::MemberRemove,
    };
    AuditEntry::system(before.account_id, action, at(3)).target("user", before.user.id)
}

/// Sign-in finds a person by issuer and subject, creates them the first time, and keeps
/// their claims current.
pub async fn sign_in(store: &dyn Store) {
    let subject = UserId::random().to_string();
    let first = store
        .sign_in(&identity(&subject), at(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        first.email.as_deref(),
        Some(&*format!("{subject}@contract.test"))
    );
    assert!(first.email_verified);
    assert_eq!(
        first.display_name.as_deref(),
        Some(&*format!("Person {subject}"))
    );
    assert_eq!(first.created_at, at(10));
    assert_eq!(first.last_sign_in_at, Some(at(10)));

    let renamed = Identity {
        display_name: Some("Renamed".into()),
        email: None,
        ..identity(&subject)
    };
    let again = store
        .sign_in(&renamed, at(20))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.id, first.id, "the same subject is the same person");
    assert_eq!(again.display_name.as_deref(), Some("Renamed"));
    assert_eq!(again.email, first.email, "a claim not sent is kept");
    assert_eq!(again.created_at, at(10));
    assert_eq!(again.last_sign_in_at, Some(at(20)));
    assert_eq!(
        store
            .find_user(first.id)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Some(again)
    );

    let elsewhere = Identity {
        issuer: "https://other-idp.contract.test".into(),
        ..identity(&subject)
    };
    let stranger = store
        .sign_in(&elsewhere, at(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        stranger.id, first.id,
        "another issuer's subject is another person"
    );
    assert_eq!(store.find_user(UserId::random()).await.ok().flatten(), None);
}

/// Concurrent first sign-ins of one subject all answer the same, single person.
pub async fn sign_in_races(store: &dyn Store) {
    let subject = UserId::random().to_string();
    let identity = identity(&subject);
    let answers = join_all((0..8).map(|_| store.sign_in(&identity, at(40)))).await;
    let mut ids: Vec<UserId> = answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|e| panic!("{e}")).id)
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one person: {ids:?}");
}

/// Accounts, memberships and roles, each account's own.
pub async fn memberships(store: &dyn Store) {
    let owner = person(store).await;
    let developer = person(store).await;
    let account = account_of(store, owner.id).await;
    let other = account_of(store, developer.id).await;
    join(store, account.id, developer.id, Role::Developer).await;
    let audit = AuditEntry::system(account.id, AuditAction::MemberRoleChange, at(2));
    assert!(
        !store
            .add_member(account.id, developer.id, Role::Admin, &audit)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "a member is added once"
    );

    let members = store
        .members(account.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].user, owner, "longest-standing first");
    assert_eq!(members[0].role, Role::Owner);
    assert_eq!(members[1].user.id, developer.id);
    assert_eq!(
        members[1].role,
        Role::Developer,
        "the second add changed nothing"
    );
    assert_eq!(
        store.member(account.id, developer.id).await.ok().flatten(),
        Some(members[1].clone())
    );
    assert_eq!(
        store.role_of(account.id, owner.id).await.ok().flatten(),
        Some(Role::Owner)
    );
    assert_eq!(store.role_of(other.id, owner.id).await.ok().flatten(), None);
    assert_eq!(store.member(other.id, owner.id).await.ok().flatten(), None);
    assert_eq!(
        store
            .role_of(AccountId::random(), owner.id)
            .await
            .ok()
            .flatten(),
        None
    );

    let mine = store
        .memberships(developer.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].account_id, other.id, "oldest first");
    assert_eq!(mine[0].role, Role::Owner);
    assert_eq!(mine[0].account_name, "Members Co");
    assert_eq!(mine[1].account_id, account.id);
    assert_eq!(mine[1].role, Role::Developer);
    assert!(
        store
            .memberships(UserId::random())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    assert_eq!(
        audited(store, account.id, AuditAction::AccountCreate).await,
        1
    );
    assert_eq!(
        audited(store, other.id, AuditAction::AccountCreate).await,
        1
    );
}

/// Role changes and removals: checked against the role they were decided on, never leaving
/// an account without an owner, audited with the change.
pub async fn member_changes(store: &dyn Store) {
    let owner = person(store).await;
    let member = person(store).await;
    let account = account_of(store, owner.id).await;
    join(store, account.id, member.id, Role::Member).await;

    let outcome = store
        .update_member(
            account.id,
            member.id,
            Role::Admin,
            MemberUpdate::SetRole(Role::Developer),
            &audit_of,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        outcome,
        MemberOutcome::Stale(Role::Member),
        "decided on another role"
    );
    assert_eq!(
        store.role_of(account.id, member.id).await.ok().flatten(),
        Some(Role::Member),
        "nothing written"
    );

    let MemberOutcome::Changed(Some(after)) = store
        .update_member(
            account.id,
            member.id,
            Role::Member,
            MemberUpdate::SetRole(Role::Developer),
            &audit_of,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("the role changes");
    };
    assert_eq!(after.role, Role::Developer);
    assert_eq!(after.user.id, member.id);
    assert_eq!(
        store.role_of(account.id, member.id).await.ok().flatten(),
        Some(Role::Developer)
    );
    assert_eq!(
        audited(store, account.id, AuditAction::MemberRoleChange).await,
        2,
        "the join and the change"
    );

    for update in [MemberUpdate::SetRole(Role::Admin), MemberUpdate::Remove] {
        assert_eq!(
            store
                .update_member(account.id, owner.id, Role::Owner, update, &audit_of)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            MemberOutcome::LastOwner
        );
    }
    assert_eq!(
        store
            .update_member(
                account.id,
                owner.id,
                Role::Owner,
                MemberUpdate::SetRole(Role::Owner),
                &audit_of
            )
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        MemberOutcome::Changed(Some(Member {
            account_id: account.id,
            user: store
                .find_user(owner.id)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("owner")),
            role: Role::Owner,
            joined_at: at(1),
        })),
        "an owner staying owner keeps the account's owner"
    );

    // With a second owner, the first may step down.
    let MemberOutcome::Changed(_) = store
        .update_member(
            account.id,
            member.id,
            Role::Developer,
            MemberUpdate::SetRole(Role::Owner),
            &audit_of,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("promoted");
    };
    assert_eq!(
        store
            .update_member(
                account.id,
                owner.id,
                Role::Owner,
                MemberUpdate::Remove,
                &audit_of
            )
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        MemberOutcome::Changed(None)
    );
    assert_eq!(
        store.role_of(account.id, owner.id).await.ok().flatten(),
        None
    );
    assert!(
        store.find_user(owner.id).await.ok().flatten().is_some(),
        "the person stays"
    );
    assert_eq!(
        store
            .update_member(
                account.id,
                owner.id,
                Role::Owner,
                MemberUpdate::Remove,
                &audit_of
            )
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        MemberOutcome::NotFound
    );
    assert_eq!(
        store
            .update_member(
                AccountId::random(),
                member.id,
                Role::Owner,
                MemberUpdate::Remove,
                &audit_of
            )
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        MemberOutcome::NotFound,
        "another account's member is not found"
    );
    assert_eq!(
        audited(store, account.id, AuditAction::MemberRemove).await,
        1
    );
}

/// Two owners demoting each other at once: one succeeds, and the account keeps an owner.
pub async fn last_owner_races(store: &dyn Store) {
    for _ in 0..5 {
        let first = person(store).await;
        let second = person(store).await;
        let account = account_of(store, first.id).await;
        join(store, account.id, second.id, Role::Owner).await;
        let answers = join_all([first.id, second.id].map(|user| {
            store.update_member(
                account.id,
                user,
                Role::Owner,
                MemberUpdate::SetRole(Role::Admin),
                &audit_of,
            )
        }))
        .await;
        let mut changed = 0;
        for answer in answers {
            match answer.unwrap_or_else(|e| panic!("{e}")) {
                MemberOutcome::Changed(_) => changed += 1,
                MemberOutcome::LastOwner => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(changed, 1);
        let owners = store
            .members(account.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .filter(|m| m.role == Role::Owner)
            .count();
        assert_eq!(owners, 1);
    }
}
