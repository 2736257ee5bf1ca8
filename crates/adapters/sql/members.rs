//! People and their memberships (`d2_members::MemberRepo`), and their rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::Account;
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Change, Role, StoreError, UserId};
use d2_members::{
    Identity, Member, MemberAuditOf, MemberOutcome, MemberRepo, MemberUpdate, Membership, User,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::accounts::AccountRow;
use crate::audit::write_audit;
use crate::changes::announce;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::schema::{accounts, members, users};

diesel::define_sql_function! {
    #[sql_name = "lower"]
    /// SQL's `lower`, for emails compared without case.
    fn lower(text: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>;
}

#[async_trait]
impl MemberRepo for crate::Store {
    async fn sign_in(&self, identity: &Identity, at: DateTime<Utc>) -> Result<User, StoreError> {
        let mut conn = self.writer().await?;
        let row = write_transaction!(conn, async |conn| {
            let id = match person_of(conn, identity).await? {
                Some(id) => id,
                None => match claim_unclaimed(conn, identity).await? {
                    Some(id) => id,
                    None => {
                        // Concurrent first sign-ins of one subject: one insert wins, the
                        // others insert nothing and read the winner's person.
                        diesel::insert_into(users::table)
                            .values(NewUserRow {
                                id: Id::from(UserId::random()),
                                created_at: at,
                                issuer: Some(&identity.issuer),
                                subject: Some(&identity.subject),
                            })
                            .on_conflict((users::issuer, users::subject))
                            .do_nothing()
                            .execute(conn)
                            .await?;
                        person_of(conn, identity)
                            .await?
                            .ok_or_else(|| TxError::from(corrupt("a person signed in twice")))?
                    }
                },
            };
            diesel::update(users::table.find(id))
                .set(SignInChangeset {
                    email: identity.email.as_deref(),
                    email_verified: identity.email.as_ref().map(|_| identity.email_verified),
                    display_name: identity.display_name.as_deref(),
                    last_sign_in_at: at,
                })
                .execute(conn)
                .await?;
            Ok::<_, TxError>(
                users::table
                    .find(id)
                    .select(UserRow::as_select())
                    .first(conn)
                    .await?,
            )
        })
        .await?;
        Ok(row.into_domain())
    }

    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let mut conn = self.conn().await?;
        let row = users::table
            .find(Id::from(id))
            .select(UserRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        Ok(row.map(UserRow::into_domain))
    }

    async fn role_of(&self, account: AccountId, user: UserId) -> Result<Option<Role>, StoreError> {
        let mut conn = self.conn().await?;
        let role: Option<String> = members::table
            .find((Id::from(account), Id::from(user)))
            .select(members::role)
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        role.as_deref().map(parse_role).transpose()
    }

    async fn member(&self, account: AccountId, user: UserId) -> Result<Option<Member>, StoreError> {
        let mut conn = self.conn().await?;
        let row = members::table
            .inner_join(users::table)
            .filter(members::account_id.eq(Id::from(account)))
            .filter(members::user_id.eq(Id::from(user)))
            .select((MemberRow::as_select(), UserRow::as_select()))
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(member_of).transpose()
    }

    async fn members(&self, account: AccountId) -> Result<Vec<Member>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = members::table
            .inner_join(users::table)
            .filter(members::account_id.eq(Id::from(account)))
            .order((members::created_at.asc(), members::user_id.asc()))
            .select((MemberRow::as_select(), UserRow::as_select()))
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(member_of).collect()
    }

    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(MemberRow, String)> = members::table
            .inner_join(accounts::table)
            .filter(members::user_id.eq(Id::from(user)))
            .order((members::created_at.asc(), members::account_id.asc()))
            .select((MemberRow::as_select(), accounts::name))
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter()
            .map(|(row, account_name)| {
                Ok(Membership {
                    account_id: row.account_id.into(),
                    account_name,
                    role: parse_role(&row.role)?,
                    joined_at: row.created_at,
                })
            })
            .collect()
    }

    async fn create_owned_account(
        &self,
        account: &Account,
        owner: UserId,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            diesel::insert_into(accounts::table)
                .values(AccountRow::from_domain(account, account.created_at))
                .execute(conn)
                .await?;
            insert_member(conn, account.id, owner, Role::Owner, account.created_at).await?;
            write_audit(conn, audit).await?;
            announce(conn, Change::Member(account.id, owner)).await?;
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }

    async fn add_member(
        &self,
        account: AccountId,
        user: UserId,
        role: Role,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let added = write_transaction!(conn, async |conn| {
            let added = diesel::insert_into(members::table)
                .values(MemberRow::new(account, user, role, audit.occurred_at))
                .on_conflict((members::account_id, members::user_id))
                .do_nothing()
                .execute(conn)
                .await?
                == 1;
            if added {
                write_audit(conn, audit).await?;
                announce(conn, Change::Member(account, user)).await?;
            }
            Ok::<_, TxError>(added)
        })
        .await?;
        Ok(added)
    }

    async fn update_member(
        &self,
        account: AccountId,
        user: UserId,
        expected: Role,
        update: MemberUpdate,
        audit_of: MemberAuditOf<'_>,
    ) -> Result<MemberOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            // The account's row is the lock every member change of the account takes, so
            // the owner count below cannot change before this transaction ends.
            let exists = held!(accounts::table.find(Id::from(account)))
                .select(accounts::id)
                .first::<Id>(conn)
                .await
                .optional()?;
            if exists.is_none() {
                return Ok::<_, TxError>(MemberOutcome::NotFound);
            }
            let row = members::table
                .inner_join(users::table)
                .filter(members::account_id.eq(Id::from(account)))
                .filter(members::user_id.eq(Id::from(user)))
                .select((MemberRow::as_select(), UserRow::as_select()))
                .first(conn)
                .await
                .optional()?;
            let Some(row) = row else {
                return Ok(MemberOutcome::NotFound);
            };
            let before = member_of(row)?;
            if before.role != expected {
                return Ok(MemberOutcome::Stale(before.role));
            }
            let stays_owner = update == MemberUpdate::SetRole(Role::Owner);
            if before.role == Role::Owner && !stays_owner {
                let owners: i64 = members::table
                    .filter(members::account_id.eq(Id::from(account)))
                    .filter(members::role.eq(Role::Owner.as_str()))
                    .count()
                    .get_result(conn)
                    .await?;
                if owners <= 1 {
                    return Ok(MemberOutcome::LastOwner);
                }
            }
            let key = members::table.find((Id::from(account), Id::from(user)));
            let after = match update {
                MemberUpdate::SetRole(role) => {
                    diesel::update(key)
                        .set(members::role.eq(role.as_str()))
                        .execute(conn)
                        .await?;
                    Some(Member {
                        role,
                        ..before.clone()
                    })
                }
                MemberUpdate::Remove => {
                    diesel::delete(key).execute(conn).await?;
                    None
                }
            };
            write_audit(conn, &audit_of(&before, after.as_ref())).await?;
            announce(conn, Change::Member(account, user)).await?;
            Ok(MemberOutcome::Changed(after))
        })
        .await?;
        Ok(outcome)
    }
}

/// The person an identity already signed in as.
async fn person_of(conn: &mut crate::Conn, identity: &Identity) -> QueryResult<Option<Id>> {
    users::table
        .filter(users::issuer.eq(&identity.issuer))
        .filter(users::subject.eq(&identity.subject))
        .select(users::id)
        .first(conn)
        .await
        .optional()
}

/// Gives `identity` the oldest person without one who has its email, when the provider
/// verified it (an owner bootstrap created); `None` when there is none.
async fn claim_unclaimed(conn: &mut crate::Conn, identity: &Identity) -> QueryResult<Option<Id>> {
    let (Some(email), true) = (&identity.email, identity.email_verified) else {
        return Ok(None);
    };
    let candidate: Option<Id> = locked!(
        users::table
            .filter(users::issuer.is_null())
            .filter(lower(users::email).eq(email.to_lowercase()))
            .order((users::created_at.asc(), users::id.asc()))
            .select(users::id)
    )
    .first(conn)
    .await
    .optional()?;
    let Some(id) = candidate else {
        return Ok(None);
    };
    let claimed = diesel::update(users::table.find(id).filter(users::issuer.is_null()))
        .set((
            users::issuer.eq(&identity.issuer),
            users::subject.eq(&identity.subject),
        ))
        .execute(conn)
        .await?;
    Ok((claimed == 1).then_some(id))
}

/// Adds a membership in the caller's transaction.
pub(crate) async fn insert_member(
    conn: &mut crate::Conn,
    account: AccountId,
    user: UserId,
    role: Role,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(members::table)
        .values(MemberRow::new(account, user, role, at))
        .execute(conn)
        .await?;
    Ok(())
}

fn parse_role(text: &str) -> Result<Role, StoreError> {
    text.parse().map_err(|_| corrupt("member role"))
}

fn member_of((member, user): (MemberRow, UserRow)) -> Result<Member, StoreError> {
    Ok(Member {
        account_id: member.account_id.into(),
        role: parse_role(&member.role)?,
        joined_at: member.created_at,
        user: user.into_domain(),
    })
}

// The rows of this module's tables, and their conversion to and from domain values.

/// The names a list shows a person by, read with the rows that name them (a join, not a
/// query per person).
#[derive(Queryable)]
pub(crate) struct PersonNames {
    pub display_name: Option<String>,
    pub full_name: Option<String>,
    pub email: Option<String>,
}

impl PersonNames {
    pub const COLUMNS: (users::display_name, users::full_name, users::email) =
        (users::display_name, users::full_name, users::email);

    /// As [`User::label`]: display name, else full name, else email.
    pub fn label(self) -> Option<String> {
        d2_members::person_label(
            self.display_name.as_deref(),
            self.full_name.as_deref(),
            self.email.as_deref(),
        )
        .map(str::to_owned)
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = users, check_for_backend(crate::Db))]
pub(crate) struct UserRow {
    pub id: Id,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub full_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub email_verified: bool,
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

impl UserRow {
    /// A person without an identity (bootstrap's owner).
    pub fn from_domain(user: &User) -> Self {
        Self {
            id: Id::from(user.id),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            full_name: user.full_name.clone(),
            created_at: user.created_at,
            issuer: None,
            subject: None,
            email_verified: user.email_verified,
            last_sign_in_at: user.last_sign_in_at,
        }
    }

    pub fn into_domain(self) -> User {
        User {
            id: self.id.into(),
            email: self.email,
            email_verified: self.email_verified,
            display_name: self.display_name,
            full_name: self.full_name,
            created_at: self.created_at,
            last_sign_in_at: self.last_sign_in_at,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = users, check_for_backend(crate::Db))]
struct NewUserRow<'a> {
    id: Id,
    created_at: DateTime<Utc>,
    issuer: Option<&'a str>,
    subject: Option<&'a str>,
}

/// What a sign-in updates: the claims it carries (`None`: not sent, kept), and when.
#[derive(AsChangeset)]
#[diesel(table_name = users, check_for_backend(crate::Db))]
struct SignInChangeset<'a> {
    email: Option<&'a str>,
    email_verified: Option<bool>,
    display_name: Option<&'a str>,
    last_sign_in_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = members, check_for_backend(crate::Db))]
pub(crate) struct MemberRow {
    pub account_id: Id,
    pub user_id: Id,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

impl MemberRow {
    fn new(account: AccountId, user: UserId, role: Role, at: DateTime<Utc>) -> Self {
        Self {
            account_id: Id::from(account),
            user_id: Id::from(user),
            role: role.as_str().to_owned(),
            created_at: at,
        }
    }
}
