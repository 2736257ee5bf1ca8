//! The behaviour every storage adapter of people and memberships must show, run against the
//! in-memory fake and both SQL stores (`d2_testkit::contract_suites!`).

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use chrono::{DateTime, Utc};
use d2_accounts::{Account, AccountName};
use d2_audit::{AuditAction, AuditEntry, AuditFilter, AuditLog};
use d2_kernel::{AccountId, PageRequest, Pepper, Role, SecretDigest, UserId};
use futures_util::future::join_all;

use crate::invitation::{AcceptOutcome, Invitation, InviteOutcome};
use crate::ports::{InvitationRepo, MemberOutcome, MemberRepo, MemberUpdate};
use crate::user::{Identity, Member, User};

/// Everything the suite needs from one store.
pub trait Store: MemberRepo + InvitationRepo + AuditLog {}
impl<T: MemberRepo + InvitationRepo + AuditLog> Store for T {}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
}

/// An identity of the test provider, for subject `subject`.
pub fn identity(subject: &str) -> Identity {
    Identity {
        issuer: "https://idp.contract.test".into(),
        subject: subject.into(),
        email: Some(format!("{subject}@contract.test")),
        email_verified: true,
        display_name: Some(format!("Person {subject}")),
        role_cap: None,
    }
}

/// A person who signed in once, with a subject of their own.
pub async fn person(store: &dyn MemberRepo) -> User {
    store
        .sign_in(&identity(&UserId::random().to_string()), at(0))
        .await
        .unwrap_or_else(|e| panic!("sign in: {e}"))
}

/// A new account owned by `owner`.
pub async fn account_of(store: &dyn MemberRepo, owner: UserId) -> Account {
    let account = Account::new_trial(
        AccountId::random(),
        AccountName::parse("Members Co").unwrap_or_else(|_| unreachable!()),
        at(1),
        14,
    );
    let audit = AuditEntry::by_user(account.id, owner, AuditAction::AccountCreate, at(1));
    store
        .create_owned_account(&account, owner, &audit)
        .await
        .unwrap_or_else(|e| panic!("create account: {e}"));
    account
}

async fn join(store: &dyn MemberRepo, account: AccountId, user: UserId, role: Role) {
    let audit = AuditEntry::by_user(account, user, AuditAction::MemberRoleChange, at(2));
    assert!(
        store
            .add_member(account, user, role, &audit)
            .await
            .unwrap_or_else(|e| panic!("add member: {e}")),
        "a new member is added"
    );
}

async fn audited(store: &dyn Store, account: AccountId, action: AuditAction) -> usize {
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

fn digest(text: &str) -> SecretDigest {
    Pepper::new(&[9; 32])
        .unwrap_or_else(|_| unreachable!())
        .digest_text(text)
}

fn invitation(account: AccountId, email: &str, role: Role, by: Option<UserId>) -> Invitation {
    Invitation::new(account, email.to_owned(), role, by, at(100))
}

async fn invite(
    store: &dyn Store,
    invitation: &Invitation,
    token: Option<&str>,
    max_members: u32,
) -> InviteOutcome {
    let audit = AuditEntry::system(
        invitation.account_id,
        AuditAction::InvitationCreate,
        at(100),
    );
    store
        .create_invitation(
            invitation,
            token.map(digest).as_ref(),
            max_members,
            &audit,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("invite: {e}"))
}

/// Invitations: pending ones listed and found by their token's digest, refused for members
/// and emails already invited (without case), within the plan's members, cancelled once.
pub async fn invitations(store: &dyn Store) {
    let owner = person(store).await;
    let account = account_of(store, owner.id).await;
    let other = account_of(store, owner.id).await;
    let ada = invitation(
        account.id,
        "Ada@Example.test",
        Role::Developer,
        Some(owner.id),
    );
    assert_eq!(
        invite(store, &ada, Some("ada-token"), 3).await,
        InviteOutcome::Created
    );
    assert_eq!(
        invite(
            store,
            &invitation(account.id, "ada@example.TEST", Role::Member, None),
            None,
            3
        )
        .await,
        InviteOutcome::AlreadyInvited
    );
    let owner_email = owner.email.clone().unwrap_or_default();
    assert_eq!(
        invite(
            store,
            &invitation(account.id, &owner_email.to_uppercase(), Role::Member, None),
            None,
            3
        )
        .await,
        InviteOutcome::AlreadyMember
    );
    // One member and one pending invitation: a limit of two is reached.
    assert_eq!(
        invite(
            store,
            &invitation(account.id, "bob@example.test", Role::Member, None),
            None,
            2
        )
        .await,
        InviteOutcome::MemberLimit
    );
    // Another account has its own pending invitations.
    assert_eq!(
        invite(
            store,
            &invitation(other.id, "ada@example.test", Role::Member, None),
            None,
            3
        )
        .await,
        InviteOutcome::Created
    );

    let pending = store
        .pending_invitations(account.id, at(101))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pending, vec![ada.clone()]);
    let expires = ada.expires_at;
    assert!(
        store
            .pending_invitations(account.id, expires)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty(),
        "expired at its expiry"
    );
    let found = store
        .invitation_by_digest(&digest("ada-token"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("found by digest"));
    assert_eq!(found.invitation, ada);
    assert_eq!(found.account_name, "Members Co");
    assert_eq!(found.inviter_name, owner.display_name);
    assert_eq!(
        store
            .invitation_by_digest(&digest("nope"))
            .await
            .ok()
            .flatten(),
        None
    );

    let cancel = AuditEntry::system(account.id, AuditAction::InvitationCancel, at(102));
    assert!(
        !store
            .cancel_invitation(other.id, ada.id, at(102), &cancel)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        "another account's invitation is not found"
    );
    assert!(
        store
            .cancel_invitation(account.id, ada.id, at(102), &cancel)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert!(
        !store
            .cancel_invitation(account.id, ada.id, at(103), &cancel)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    let cancelled = store
        .invitation_by_digest(&digest("ada-token"))
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("still found"));
    assert_eq!(cancelled.invitation.cancelled_at, Some(at(102)));
    assert!(
        store
            .pending_invitations(account.id, at(103))
            .await
            .unwrap_or_default()
            .is_empty()
    );
    // Cancelled, it no longer counts: two may be invited again within a limit of three.
    for email in ["bob@example.test", "ada@example.test"] {
        assert_eq!(
            invite(
                store,
                &invitation(account.id, email, Role::Member, None),
                None,
                3
            )
            .await,
            InviteOutcome::Created
        );
    }
    assert_eq!(
        audited(store, account.id, AuditAction::InvitationCreate).await,
        3
    );
    assert_eq!(
        audited(store, account.id, AuditAction::InvitationCancel).await,
        1
    );
}

/// Accepting: once, before expiry, by someone not yet a member; the email task's renewed
/// token replaces the one before.
pub async fn invitation_acceptance(store: &dyn Store) {
    let owner = person(store).await;
    let account = account_of(store, owner.id).await;
    let invitee = person(store).await;
    let mailed = invitation(
        account.id,
        "invitee@example.test",
        Role::Admin,
        Some(owner.id),
    );
    assert_eq!(
        invite(store, &mailed, None, 10).await,
        InviteOutcome::Created
    );
    let renewed = store
        .renew_invitation_token(mailed.id, &digest("first"), at(101))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("pending"));
    assert_eq!(renewed.invitation.id, mailed.id);
    store
        .renew_invitation_token(mailed.id, &digest("second"), at(102))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .invitation_by_digest(&digest("first"))
            .await
            .ok()
            .flatten(),
        None,
        "replaced"
    );
    assert_eq!(
        store
            .renew_invitation_token(mailed.id, &digest("late"), mailed.expires_at)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        None,
        "an expired invitation gets no token"
    );

    let audit_of =
        |i: &Invitation| AuditEntry::system(i.account_id, AuditAction::InvitationAccept, at(103));
    assert_eq!(
        store
            .accept_invitation(&digest("first"), invitee.id, at(103), &audit_of)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );
    assert_eq!(
        store
            .accept_invitation(&digest("second"), owner.id, at(103), &audit_of)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Some(AcceptOutcome::AlreadyMember),
        "a member cannot use it, and it stays pending"
    );
    assert_eq!(
        store
            .accept_invitation(&digest("second"), invitee.id, mailed.expires_at, &audit_of)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Some(AcceptOutcome::Expired)
    );
    assert_eq!(
        store
            .accept_invitation(&digest("second"), invitee.id, at(104), &audit_of)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Some(AcceptOutcome::Accepted(account.id, Role::Admin))
    );
    assert_eq!(
        store.role_of(account.id, invitee.id).await.ok().flatten(),
        Some(Role::Admin)
    );
    let used = store
        .invitation_by_digest(&digest("second"))
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("kept"));
    assert_eq!(used.invitation.accepted_at, Some(at(104)));
    assert_eq!(used.invitation.accepted_by, Some(invitee.id));
    let stranger = person(store).await;
    assert_eq!(
        store
            .accept_invitation(&digest("second"), stranger.id, at(105), &audit_of)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Some(AcceptOutcome::Used),
        "single use"
    );
    assert_eq!(
        store.role_of(account.id, stranger.id).await.ok().flatten(),
        None
    );
    assert_eq!(
        audited(store, account.id, AuditAction::InvitationAccept).await,
        1
    );
}

/// Concurrent invitations to one account never exceed the plan's members.
pub async fn invitation_limit_races(store: &dyn Store) {
    let owner = person(store).await;
    let account = account_of(store, owner.id).await;
    let invitations: Vec<Invitation> = (0..6)
        .map(|n| {
            invitation(
                account.id,
                &format!("racer{n}@example.test"),
                Role::Member,
                None,
            )
        })
        .collect();
    let outcomes = join_all(invitations.iter().map(|i| invite(store, i, None, 3))).await;
    let created = outcomes
        .iter()
        .filter(|o| **o == InviteOutcome::Created)
        .count();
    assert_eq!(created, 2, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, InviteOutcome::Created | InviteOutcome::MemberLimit))
    );
}
