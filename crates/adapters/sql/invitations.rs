//! Invitations (`d2_members::InvitationRepo`), and their rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Change, NewTask, Role, SecretDigest, StoreError, UserId};
use d2_members::{
    AcceptOutcome, Invitation, InvitationAuditOf, InvitationDetails, InvitationId, InvitationRepo,
    InviteOutcome,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::audit::write_audit;
use crate::changes::announce;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::members::{insert_member, lower};
use crate::schema::{accounts, invitations, members, users};
use crate::tasks::enqueue;

/// The account's invitations pending at `now` (a query, and an update target).
macro_rules! pending_of {
    ($account:expr, $now:expr) => {
        invitations::table
            .filter(invitations::account_id.eq($account))
            .filter(invitations::accepted_at.is_null())
            .filter(invitations::cancelled_at.is_null())
            .filter(invitations::expires_at.gt($now))
    };
}

/// Invitations with the names their acceptance page shows: the account's, the inviter's.
macro_rules! with_details {
    () => {
        invitations::table
            .inner_join(accounts::table)
            .left_join(users::table.on(users::id.nullable().eq(invitations::invited_by)))
            .select((
                InvitationRow::as_select(),
                accounts::name,
                (users::display_name, users::full_name, users::email).nullable(),
            ))
    };
}

/// An invitation's row and what its acceptance page names: the account and the inviter.
type DetailsRow = (
    InvitationRow,
    String,
    Option<(Option<String>, Option<String>, Option<String>)>,
);

#[async_trait]
impl InvitationRepo for crate::Store {
    async fn create_invitation(
        &self,
        invitation: &Invitation,
        digest: Option<&SecretDigest>,
        max_members: u32,
        audit: &AuditEntry,
        email: Option<&NewTask>,
    ) -> Result<InviteOutcome, StoreError> {
        let account = Id::from(invitation.account_id);
        let now = invitation.created_at;
        let address = invitation.email.to_lowercase();
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            // The account's row is the lock every invitation and member change of the
            // account takes: the count below holds until this transaction ends.
            held!(accounts::table.find(account))
                .select(accounts::id)
                .first::<Id>(conn)
                .await?;
            let member_with_email: i64 = members::table
                .inner_join(users::table)
                .filter(members::account_id.eq(account))
                .filter(lower(users::email).eq(&address))
                .count()
                .get_result(conn)
                .await?;
            if member_with_email > 0 {
                return Ok::<_, TxError>(InviteOutcome::AlreadyMember);
            }
            let invited: i64 = pending_of!(account, now)
                .filter(lower(invitations::email.nullable()).eq(&address))
                .count()
                .get_result(conn)
                .await?;
            if invited > 0 {
                return Ok(InviteOutcome::AlreadyInvited);
            }
            let members: i64 = members::table
                .filter(members::account_id.eq(account))
                .count()
                .get_result(conn)
                .await?;
            let pending: i64 = pending_of!(account, now).count().get_result(conn).await?;
            if members.saturating_add(pending) >= i64::from(max_members) {
                return Ok(InviteOutcome::MemberLimit);
            }
            diesel::insert_into(invitations::table)
                .values(InvitationRow::from_domain(invitation, digest))
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            if let Some(task) = email {
                enqueue(conn, task, now).await?;
            }
            Ok(InviteOutcome::Created)
        })
        .await?;
        Ok(outcome)
    }

    async fn pending_invitations(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Invitation>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = pending_of!(Id::from(account), now)
            .order((invitations::created_at.desc(), invitations::id.desc()))
            .select(InvitationRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(InvitationRow::into_domain).collect()
    }

    async fn cancel_invitation(
        &self,
        account: AccountId,
        id: InvitationId,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let cancelled = write_transaction!(conn, async |conn| {
            let cancelled = diesel::update(
                pending_of!(Id::from(account), now).filter(invitations::id.eq(Id(*id.as_uuid()))),
            )
            .set(invitations::cancelled_at.eq(now))
            .execute(conn)
            .await?
                == 1;
            if cancelled {
                write_audit(conn, audit).await?;
            }
            Ok::<_, TxError>(cancelled)
        })
        .await?;
        Ok(cancelled)
    }

    async fn invitation_by_digest(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<InvitationDetails>, StoreError> {
        let mut conn = self.conn().await?;
        let row = with_details!()
            .filter(invitations::digest.eq(digest.as_bytes().as_slice()))
            .first::<DetailsRow>(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(details_of).transpose()
    }

    async fn renew_invitation_token(
        &self,
        id: InvitationId,
        digest: &SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Option<InvitationDetails>, StoreError> {
        let mut conn = self.writer().await?;
        let row = write_transaction!(conn, async |conn| {
            let renewed = diesel::update(
                invitations::table
                    .filter(invitations::id.eq(Id(*id.as_uuid())))
                    .filter(invitations::accepted_at.is_null())
                    .filter(invitations::cancelled_at.is_null())
                    .filter(invitations::expires_at.gt(now)),
            )
            .set(invitations::digest.eq(digest.as_bytes().as_slice()))
            .execute(conn)
            .await?;
            if renewed == 0 {
                return Ok::<_, TxError>(None);
            }
            Ok(Some(
                with_details!()
                    .filter(invitations::id.eq(Id(*id.as_uuid())))
                    .first::<DetailsRow>(conn)
                    .await?,
            ))
        })
        .await?;
        row.map(details_of).transpose()
    }

    async fn accept_invitation(
        &self,
        digest: &SecretDigest,
        user: UserId,
        now: DateTime<Utc>,
        audit_of: InvitationAuditOf<'_>,
    ) -> Result<Option<AcceptOutcome>, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let row = locked!(
                invitations::table.filter(invitations::digest.eq(digest.as_bytes().as_slice()))
            )
            .select(InvitationRow::as_select())
            .first(conn)
            .await
            .optional()?;
            let Some(row) = row else {
                return Ok::<_, TxError>(None);
            };
            let invitation = row.into_domain()?;
            if invitation.accepted_at.is_some() || invitation.cancelled_at.is_some() {
                return Ok(Some(AcceptOutcome::Used));
            }
            if invitation.expires_at <= now {
                return Ok(Some(AcceptOutcome::Expired));
            }
            let account = invitation.account_id;
            let member: Option<String> = members::table
                .find((Id::from(account), Id::from(user)))
                .select(members::role)
                .first(conn)
                .await
                .optional()?;
            if member.is_some() {
                return Ok(Some(AcceptOutcome::AlreadyMember));
            }
            diesel::update(invitations::table.find(Id(*invitation.id.as_uuid())))
                .set((
                    invitations::accepted_at.eq(now),
                    invitations::accepted_by.eq(Id::from(user)),
                ))
                .execute(conn)
                .await?;
            insert_member(conn, account, user, invitation.role, now).await?;
            write_audit(conn, &audit_of(&invitation)).await?;
            announce(conn, Change::Member(account, user)).await?;
            Ok(Some(AcceptOutcome::Accepted(account, invitation.role)))
        })
        .await?;
        Ok(outcome)
    }
}

fn details_of((row, account_name, inviter): DetailsRow) -> Result<InvitationDetails, StoreError> {
    Ok(InvitationDetails {
        invitation: row.into_domain()?,
        account_name,
        inviter_name: inviter.and_then(|(display, full, email)| display.or(full).or(email)),
    })
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = invitations, check_for_backend(crate::Db))]
pub(crate) struct InvitationRow {
    pub id: Id,
    pub account_id: Id,
    pub email: String,
    pub role: String,
    pub invited_by: Option<Id>,
    pub digest: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub accepted_by: Option<Id>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl InvitationRow {
    fn from_domain(invitation: &Invitation, digest: Option<&SecretDigest>) -> Self {
        Self {
            id: Id(*invitation.id.as_uuid()),
            account_id: Id::from(invitation.account_id),
            email: invitation.email.clone(),
            role: invitation.role.as_str().to_owned(),
            invited_by: invitation.invited_by.map(Id::from),
            digest: digest.map(|d| d.as_bytes().to_vec()),
            created_at: invitation.created_at,
            expires_at: invitation.expires_at,
            accepted_at: invitation.accepted_at,
            accepted_by: invitation.accepted_by.map(Id::from),
            cancelled_at: invitation.cancelled_at,
        }
    }

    fn into_domain(self) -> Result<Invitation, StoreError> {
        Ok(Invitation {
            id: InvitationId::from_uuid(self.id.0),
            account_id: self.account_id.into(),
            email: self.email,
            role: self
                .role
                .parse::<Role>()
                .map_err(|_| corrupt("invitation role"))?,
            invited_by: self.invited_by.map(Into::into),
            created_at: self.created_at,
            expires_at: self.expires_at,
            accepted_at: self.accepted_at,
            accepted_by: self.accepted_by.map(Into::into),
            cancelled_at: self.cancelled_at,
        })
    }
}
