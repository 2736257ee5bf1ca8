//! In-memory people and memberships, for tests. Memberships live in the accounts fake, so
//! member counts and owners answer from the same state.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::Account;
use d2_accounts::memory::{Membership as Row, MemoryAccountRepo};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, NewTask, Role, SecretDigest, StoreError, UserId};

use crate::invitation::{
    AcceptOutcome, Invitation, InvitationDetails, InvitationId, InviteOutcome,
};
use crate::ports::{
    InvitationAuditOf, InvitationRepo, MemberAuditOf, MemberOutcome, MemberRepo, MemberUpdate,
};
use crate::user::{Identity, Member, Membership, User};

#[derive(Debug)]
struct Person {
    user: User,
    identity: Option<(String, String)>,
}

#[derive(Debug)]
pub struct MemoryMembers {
    people: Mutex<Vec<Person>>,
    invitations: Mutex<Vec<(Invitation, Option<SecretDigest>)>>,
    tasks: Mutex<Vec<NewTask>>,
    accounts: Arc<MemoryAccountRepo>,
}

impl MemoryMembers {
    pub fn new(accounts: Arc<MemoryAccountRepo>) -> Self {
        Self {
            people: Mutex::new(Vec::new()),
            invitations: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            accounts,
        }
    }

    pub fn accounts(&self) -> &Arc<MemoryAccountRepo> {
        &self.accounts
    }

    /// Adds a person without an identity (as bootstrap creates an account's owner).
    pub fn insert_user(&self, user: User) {
        self.lock().push(Person {
            user,
            identity: None,
        });
    }

    /// The tasks enqueued with invitations, oldest first.
    pub fn enqueued(&self) -> Vec<NewTask> {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn invitations(&self) -> MutexGuard<'_, Vec<(Invitation, Option<SecretDigest>)>> {
        self.invitations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn details(&self, invitation: &Invitation) -> Option<InvitationDetails> {
        Some(InvitationDetails {
            account_name: self
                .accounts
                .account(invitation.account_id)?
                .name
                .to_string(),
            inviter_name: invitation.invited_by.and_then(|id| self.label_of(id)),
            invitation: invitation.clone(),
        })
    }

    fn is_member_email(&self, account: AccountId, email: &str) -> bool {
        self.accounts
            .memberships()
            .iter()
            .filter(|m| m.account_id == account)
            .filter_map(|m| self.user(m.user_id))
            .any(|user| user.email.is_some_and(|e| e.eq_ignore_ascii_case(email)))
    }

    /// How lists name the person `id` ([`User::label`]), if they exist.
    pub fn label_of(&self, id: UserId) -> Option<String> {
        self.user(id)
            .and_then(|user| user.label().map(str::to_owned))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Person>> {
        self.people.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn user(&self, id: UserId) -> Option<User> {
        self.lock()
            .iter()
            .find(|p| p.user.id == id)
            .map(|p| p.user.clone())
    }

    fn member_of(&self, row: &Row) -> Option<Member> {
        Some(Member {
            account_id: row.account_id,
            user: self.user(row.user_id)?,
            role: row.role,
            joined_at: row.joined_at,
        })
    }

    fn audit(&self, entry: AuditEntry) {
        self.accounts.audit().append(entry);
    }
}

#[async_trait]
impl MemberRepo for MemoryMembers {
    async fn sign_in(&self, identity: &Identity, at: DateTime<Utc>) -> Result<User, StoreError> {
        let mut people = self.lock();
        let key = (identity.issuer.clone(), identity.subject.clone());
        let index = match people
            .iter()
            .position(|p| p.identity.as_ref() == Some(&key))
        {
            Some(index) => index,
            None => {
                let unclaimed = match (&identity.email, identity.email_verified) {
                    (Some(email), true) => people
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| {
                            p.identity.is_none()
                                && p.user
                                    .email
                                    .as_deref()
                                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
                        })
                        .min_by_key(|(_, p)| (p.user.created_at, p.user.id))
                        .map(|(index, _)| index),
                    _ => None,
                };
                match unclaimed {
                    Some(index) => index,
                    None => {
                        people.push(Person {
                            user: User {
                                id: UserId::random(),
                                email: None,
                                email_verified: false,
                                display_name: None,
                                full_name: None,
                                created_at: at,
                                last_sign_in_at: None,
                            },
                            identity: None,
                        });
                        people.len().saturating_sub(1)
                    }
                }
            }
        };
        let person = people
            .get_mut(index)
            .ok_or_else(|| StoreError::internal("a person vanished"))?;
        person.identity = Some(key);
        apply_identity(&mut person.user, identity, at);
        Ok(person.user.clone())
    }

    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.user(id))
    }

    async fn role_of(&self, account: AccountId, user: UserId) -> Result<Option<Role>, StoreError> {
        Ok(self
            .accounts
            .memberships()
            .into_iter()
            .find(|m| m.account_id == account && m.user_id == user)
            .map(|m| m.role))
    }

    async fn member(&self, account: AccountId, user: UserId) -> Result<Option<Member>, StoreError> {
        Ok(self
            .accounts
            .memberships()
            .iter()
            .find(|m| m.account_id == account && m.user_id == user)
            .and_then(|row| self.member_of(row)))
    }

    async fn members(&self, account: AccountId) -> Result<Vec<Member>, StoreError> {
        Ok(self
            .accounts
            .memberships()
            .iter()
            .filter(|m| m.account_id == account)
            .filter_map(|row| self.member_of(row))
            .collect())
    }

    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>, StoreError> {
        Ok(self
            .accounts
            .memberships()
            .into_iter()
            .filter(|m| m.user_id == user)
            .filter_map(|m| {
                Some(Membership {
                    account_id: m.account_id,
                    account_name: self.accounts.account(m.account_id)?.name.to_string(),
                    role: m.role,
                    joined_at: m.joined_at,
                })
            })
            .collect())
    }

    async fn create_owned_account(
        &self,
        account: &Account,
        owner: UserId,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        if self.user(owner).is_none() {
            return Err(StoreError::internal("the owner does not exist"));
        }
        self.accounts.insert_account(account.clone());
        self.accounts.put_member(Row {
            account_id: account.id,
            user_id: owner,
            role: Role::Owner,
            joined_at: account.created_at,
        });
        self.audit(audit.clone());
        Ok(())
    }

    async fn add_member(
        &self,
        account: AccountId,
        user: UserId,
        role: Role,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        if self.accounts.account(account).is_none() || self.user(user).is_none() {
            return Err(StoreError::internal("no such account or person"));
        }
        if self.role_of(account, user).await?.is_some() {
            return Ok(false);
        }
        self.accounts.put_member(Row {
            account_id: account,
            user_id: user,
            role,
            joined_at: audit.occurred_at,
        });
        self.audit(audit.clone());
        Ok(true)
    }

    async fn update_member(
        &self,
        account: AccountId,
        user: UserId,
        expected: Role,
        update: MemberUpdate,
        audit_of: MemberAuditOf<'_>,
    ) -> Result<MemberOutcome, StoreError> {
        let rows = self.accounts.memberships();
        let Some(row) = rows
            .iter()
            .find(|m| m.account_id == account && m.user_id == user)
        else {
            return Ok(MemberOutcome::NotFound);
        };
        if row.role != expected {
            return Ok(MemberOutcome::Stale(row.role));
        }
        let owners = rows
            .iter()
            .filter(|m| m.account_id == account && m.role == Role::Owner)
            .count();
        let keeps_owner = match update {
            MemberUpdate::SetRole(role) => role == Role::Owner,
            MemberUpdate::Remove => false,
        };
        if row.role == Role::Owner && !keeps_owner && owners <= 1 {
            return Ok(MemberOutcome::LastOwner);
        }
        let before = self
            .member_of(row)
            .ok_or_else(|| StoreError::internal("a member without a person"))?;
        let after = match update {
            MemberUpdate::SetRole(role) => {
                self.accounts.put_member(Row {
                    role,
                    ..row.clone()
                });
                Some(Member {
                    role,
                    ..before.clone()
                })
            }
            MemberUpdate::Remove => {
                self.accounts.remove_member(account, user);
                None
            }
        };
        self.audit(audit_of(&before, after.as_ref()));
        Ok(MemberOutcome::Changed(after))
    }
}

/// What a sign-in updates on its person: the claims it carries, and when.
pub(crate) fn apply_identity(user: &mut User, identity: &Identity, at: DateTime<Utc>) {
    if identity.email.is_some() {
        user.email.clone_from(&identity.email);
        user.email_verified = identity.email_verified;
    }
    if identity.display_name.is_some() {
        user.display_name.clone_from(&identity.display_name);
    }
    user.last_sign_in_at = Some(at);
}

#[async_trait]
impl d2_audit::AuditLog for MemoryMembers {
    async fn search(
        &self,
        account_id: AccountId,
        filter: &d2_audit::AuditFilter,
        page: &d2_kernel::PageRequest,
    ) -> Result<d2_kernel::Page<d2_audit::AuditRecord>, StoreError> {
        d2_audit::AuditLog::search(self.accounts.audit().as_ref(), account_id, filter, page).await
    }
}

#[async_trait]
impl InvitationRepo for MemoryMembers {
    async fn create_invitation(
        &self,
        invitation: &Invitation,
        digest: Option<&SecretDigest>,
        max_members: u32,
        audit: &AuditEntry,
        email: Option<&NewTask>,
    ) -> Result<InviteOutcome, StoreError> {
        let now = invitation.created_at;
        let account = invitation.account_id;
        if self.is_member_email(account, &invitation.email) {
            return Ok(InviteOutcome::AlreadyMember);
        }
        let mut invitations = self.invitations();
        let pending: Vec<&Invitation> = invitations
            .iter()
            .map(|(i, _)| i)
            .filter(|i| i.account_id == account && i.is_pending(now))
            .collect();
        if pending
            .iter()
            .any(|i| i.email.eq_ignore_ascii_case(&invitation.email))
        {
            return Ok(InviteOutcome::AlreadyInvited);
        }
        let members = self
            .accounts
            .memberships()
            .iter()
            .filter(|m| m.account_id == account)
            .count();
        if members.saturating_add(pending.len())
            >= usize::try_from(max_members).unwrap_or(usize::MAX)
        {
            return Ok(InviteOutcome::MemberLimit);
        }
        invitations.push((invitation.clone(), digest.copied()));
        if let Some(task) = email {
            self.tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(task.clone());
        }
        self.audit(audit.clone());
        Ok(InviteOutcome::Created)
    }

    async fn pending_invitations(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Invitation>, StoreError> {
        let mut pending: Vec<Invitation> = self
            .invitations()
            .iter()
            .map(|(i, _)| i)
            .filter(|i| i.account_id == account && i.is_pending(now))
            .cloned()
            .collect();
        pending.sort_by_key(|i| std::cmp::Reverse((i.created_at, i.id)));
        Ok(pending)
    }

    async fn cancel_invitation(
        &self,
        account: AccountId,
        id: InvitationId,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut invitations = self.invitations();
        let Some((invitation, _)) = invitations
            .iter_mut()
            .find(|(i, _)| i.id == id && i.account_id == account && i.is_pending(now))
        else {
            return Ok(false);
        };
        invitation.cancelled_at = Some(now);
        self.audit(audit.clone());
        Ok(true)
    }

    async fn invitation_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<InvitationDetails>, StoreError> {
        let found = self
            .invitations()
            .iter()
            .find(|(_, d)| d.as_ref() == Some(digest))
            .map(|(i, _)| i.clone());
        Ok(found.and_then(|invitation| self.details(&invitation)))
    }

    async fn renew_invitation_token(
        &self,
        id: InvitationId,
        digest: &SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Option<InvitationDetails>, StoreError> {
        let renewed = {
            let mut invitations = self.invitations();
            let Some((invitation, stored)) = invitations
                .iter_mut()
                .find(|(i, _)| i.id == id && i.is_pending(now))
            else {
                return Ok(None);
            };
            *stored = Some(*digest);
            invitation.clone()
        };
        Ok(self.details(&renewed))
    }

    async fn accept_invitation(
        &self,
        digest: &SecretDigest,
        user: UserId,
        now: DateTime<Utc>,
        audit_of: InvitationAuditOf<'_>,
    ) -> Result<Option<AcceptOutcome>, StoreError> {
        let mut invitations = self.invitations();
        let Some((invitation, _)) = invitations
            .iter_mut()
            .find(|(_, d)| d.as_ref() == Some(digest))
        else {
            return Ok(None);
        };
        if invitation.accepted_at.is_some() || invitation.cancelled_at.is_some() {
            return Ok(Some(AcceptOutcome::Used));
        }
        if invitation.expires_at <= now {
            return Ok(Some(AcceptOutcome::Expired));
        }
        let account = invitation.account_id;
        if self
            .accounts
            .memberships()
            .iter()
            .any(|m| m.account_id == account && m.user_id == user)
        {
            return Ok(Some(AcceptOutcome::AlreadyMember));
        }
        invitation.accepted_at = Some(now);
        invitation.accepted_by = Some(user);
        self.accounts.put_member(Row {
            account_id: account,
            user_id: user,
            role: invitation.role,
            joined_at: now,
        });
        self.audit(audit_of(invitation));
        Ok(Some(AcceptOutcome::Accepted(account, invitation.role)))
    }
}

/// Implements [`MemberRepo`] for a fake of another domain that embeds a [`MemoryMembers`]
/// in its field `$field` (so one fake answers for people too, as a database store does).
#[macro_export]
macro_rules! delegate_member_repo {
    ($fake:ty, $field:ident) => {
        #[::async_trait::async_trait]
        impl $crate::MemberRepo for $fake {
            async fn sign_in(
                &self,
                identity: &$crate::Identity,
                at: ::chrono::DateTime<::chrono::Utc>,
            ) -> ::std::result::Result<$crate::User, ::d2_kernel::StoreError> {
                self.$field.sign_in(identity, at).await
            }

            async fn find_user(
                &self,
                id: ::d2_kernel::UserId,
            ) -> ::std::result::Result<Option<$crate::User>, ::d2_kernel::StoreError> {
                self.$field.find_user(id).await
            }

            async fn role_of(
                &self,
                account: ::d2_kernel::AccountId,
                user: ::d2_kernel::UserId,
            ) -> ::std::result::Result<Option<::d2_kernel::Role>, ::d2_kernel::StoreError> {
                self.$field.role_of(account, user).await
            }

            async fn member(
                &self,
                account: ::d2_kernel::AccountId,
                user: ::d2_kernel::UserId,
            ) -> ::std::result::Result<Option<$crate::Member>, ::d2_kernel::StoreError> {
                self.$field.member(account, user).await
            }

            async fn members(
                &self,
                account: ::d2_kernel::AccountId,
            ) -> ::std::result::Result<Vec<$crate::Member>, ::d2_kernel::StoreError> {
                self.$field.members(account).await
            }

            async fn memberships(
                &self,
                user: ::d2_kernel::UserId,
            ) -> ::std::result::Result<Vec<$crate::Membership>, ::d2_kernel::StoreError> {
                self.$field.memberships(user).await
            }

            async fn create_owned_account(
                &self,
                account: &::d2_accounts::Account,
                owner: ::d2_kernel::UserId,
                audit: &::d2_audit::AuditEntry,
            ) -> ::std::result::Result<(), ::d2_kernel::StoreError> {
                self.$field
                    .create_owned_account(account, owner, audit)
                    .await
            }

            async fn add_member(
                &self,
                account: ::d2_kernel::AccountId,
                user: ::d2_kernel::UserId,
                role: ::d2_kernel::Role,
                audit: &::d2_audit::AuditEntry,
            ) -> ::std::result::Result<bool, ::d2_kernel::StoreError> {
                self.$field.add_member(account, user, role, audit).await
            }

            async fn update_member(
                &self,
                account: ::d2_kernel::AccountId,
                user: ::d2_kernel::UserId,
                expected: ::d2_kernel::Role,
                update: $crate::MemberUpdate,
                audit_of: $crate::MemberAuditOf<'_>,
            ) -> ::std::result::Result<$crate::MemberOutcome, ::d2_kernel::StoreError> {
                self.$field
                    .update_member(account, user, expected, update, audit_of)
                    .await
            }
        }
    };
}
