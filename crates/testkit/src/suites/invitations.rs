//! Invitations: pending ones listed and found by their token's digest, refused for members
//! and emails already invited, within the plan's members (and their race), accepted once.

#![expect(
    clippy::panic,
    reason = "a test suite for adapters: failing loudly is its job"
)]

use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, Role, SecretDigest, UserId};
use d2_members::{AcceptOutcome, Invitation, InviteOutcome};
use futures_util::future::join_all;

use super::members::{Store, audited};
use crate::fixtures::{account_of, at, pepper, person};

fn digest(text: &str) -> SecretDigest {
    pepper().digest_text(text)
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
