use crate::id::Id;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::Account;
use d2_audit::AuditEntry;
use d2_kernel::{
    AccountId, AppName, Change, Cursor, Page, PageRequest, Role, ScopeSet, StoreError, TokenId,
};
use d2_members::User;
use d2_tokens::{
    ApiToken, BootstrapRepo, IssueOutcome, ListedToken, NewToken, RevokeOutcome, RotateOutcome,
    TokenAuditOf, TokenChangeAuditOf, TokenDigest, TokenPatch, TokenRepo, TokenState,
    UpdateOutcome,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::accounts::AccountRow;
use crate::audit::write_audit;
use crate::changes::{announce, lock};
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::members::{PersonNames, UserRow, insert_member};
use crate::position::{Side, beyond};
use crate::schema::{accounts, api_tokens, members, users};

diesel::alias!(users as creators: CreatorsAlias, users as assignees: AssigneesAlias);

/// A token row with the names of its creator and its assignee, as the lists read them.
type ListedRow = (TokenRow, Option<PersonNames>, Option<PersonNames>);

/// The account's tokens, each joined to the people it names (one query, however many).
macro_rules! listed_tokens {
    () => {
        api_tokens::table
            .left_join(creators.on(api_tokens::created_by.eq(creators.field(users::id).nullable())))
            .left_join(
                assignees.on(api_tokens::assigned_to.eq(assignees.field(users::id).nullable())),
            )
            .select((
                TokenRow::as_select(),
                creators.fields(PersonNames::COLUMNS).nullable(),
                assignees.fields(PersonNames::COLUMNS).nullable(),
            ))
    };
}

fn listed((row, creator, assignee): ListedRow) -> Result<ListedToken, StoreError> {
    Ok(ListedToken {
        token: row.into_domain()?,
        created_by_name: creator.and_then(PersonNames::label),
        assigned_to_name: assignee.and_then(PersonNames::label),
    })
}

/// Issues in one account wait for each other on this lock, so two cannot both take the
/// plan's last free place.
fn issue_lock(account_id: AccountId) -> String {
    format!("tokens:{account_id}")
}

async fn insert_token(conn: &mut crate::Conn, token: &NewToken) -> QueryResult<()> {
    diesel::insert_into(api_tokens::table)
        .values(NewTokenRow::from_domain(token))
        .execute(conn)
        .await?;
    Ok(())
}

fn cursor_of(listed: &ListedToken) -> Cursor {
    Cursor::new(listed.token.created_at, listed.token.id.to_string())
}

#[async_trait]
impl TokenRepo for crate::Store {
    async fn find_by_digest(&self, digest: &TokenDigest) -> Result<Option<ApiToken>, StoreError> {
        let mut conn = self.conn().await?;
        let row = api_tokens::table
            .filter(api_tokens::digest.eq(digest.as_bytes().as_slice()))
            .select(TokenRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(TokenRow::into_domain).transpose()
    }

    async fn find_token(
        &self,
        account_id: AccountId,
        id: TokenId,
    ) -> Result<Option<ApiToken>, StoreError> {
        let mut conn = self.conn().await?;
        let row = api_tokens::table
            .filter(api_tokens::account_id.eq(Id::from(account_id)))
            .filter(api_tokens::id.eq(Id::from(id)))
            .select(TokenRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(TokenRow::into_domain).transpose()
    }

    async fn listed_token(
        &self,
        account_id: AccountId,
        id: TokenId,
    ) -> Result<Option<ListedToken>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<ListedRow> = listed_tokens!()
            .filter(api_tokens::account_id.eq(Id::from(account_id)))
            .filter(api_tokens::id.eq(Id::from(id)))
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(listed).transpose()
    }

    async fn list_tokens(
        &self,
        account_id: AccountId,
        page: &PageRequest,
    ) -> Result<Page<ListedToken>, StoreError> {
        let mut query = listed_tokens!()
            .filter(api_tokens::account_id.eq(Id::from(account_id)))
            .order((api_tokens::created_at.desc(), api_tokens::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .into_boxed();
        if let Some(cursor) = page.after() {
            let id: TokenId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("token cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "api_tokens.created_at, api_tokens.id",
                Side::Before,
                cursor.at,
                Id::from(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<ListedRow> = query.load(&mut conn).await.map_err(from_diesel)?;
        let tokens = rows
            .into_iter()
            .map(listed)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(tokens, cursor_of))
    }

    async fn issue(
        &self,
        token: &NewToken,
        max_active: u32,
        audit: &AuditEntry,
    ) -> Result<IssueOutcome, StoreError> {
        let new = &token.token;
        let account = Id::from(new.account_id);
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            lock(conn, &issue_lock(new.account_id)).await?;
            let active: i64 = api_tokens::table
                .filter(api_tokens::account_id.eq(account))
                .filter(api_tokens::revoked_at.is_null())
                .filter(
                    api_tokens::expires_at
                        .is_null()
                        .or(api_tokens::expires_at.gt(new.created_at)),
                )
                .count()
                .get_result(conn)
                .await?;
            if active >= i64::from(max_active) {
                return Ok::<_, TxError>(IssueOutcome::LimitReached);
            }
            if let Some(assignee) = new.assigned_to {
                // Held until the token is stored, so the membership cannot end meanwhile.
                let role: Option<String> = locked!(
                    members::table
                        .find((account, Id::from(assignee)))
                        .select(members::role)
                )
                .first(conn)
                .await
                .optional()?;
                if role.is_none() {
                    return Ok(IssueOutcome::NotAMember);
                }
            }
            insert_token(conn, token).await?;
            write_audit(conn, audit).await?;
            Ok(IssueOutcome::Issued)
        })
        .await?;
        Ok(outcome)
    }

    async fn update_token(
        &self,
        account_id: AccountId,
        id: TokenId,
        patch: &TokenPatch,
        at: DateTime<Utc>,
        audit_of: TokenChangeAuditOf<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let row = locked_token(conn, account_id, id).await?;
            let Some(row) = row else {
                return Ok::<_, TxError>(UpdateOutcome::NotFound);
            };
            let before = row.into_domain()?;
            match before.state(at) {
                TokenState::Revoked => return Ok(UpdateOutcome::AlreadyRevoked),
                TokenState::Expired => return Ok(UpdateOutcome::Expired),
                TokenState::Active
                    if patch.expires_at.is_some() && before.replaced_by.is_some() =>
                {
                    return Ok(UpdateOutcome::AlreadyRotated);
                }
                TokenState::Active => {}
            }
            let after = patch.apply(&before);
            diesel::update(api_tokens::table.find(Id::from(id)))
                .set((
                    api_tokens::name.eq(after.name.as_deref()),
                    api_tokens::expires_at.eq(after.expires_at),
                ))
                .execute(conn)
                .await?;
            write_audit(conn, &audit_of(&before, &after)).await?;
            announce(conn, Change::Token(id)).await?;
            Ok(UpdateOutcome::Updated(Box::new(after)))
        })
        .await?;
        Ok(outcome)
    }

    async fn record_usage(&self, used: &[(TokenId, DateTime<Utc>)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer().await?;
        crate::token_writes::record_usage(&mut conn, used)
            .await
            .map_err(from_diesel)?;
        Ok(())
    }

    async fn insert(&self, token: &NewToken, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            insert_token(conn, token).await?;
            write_audit(conn, audit).await?;
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }

    async fn revoke(
        &self,
        account_id: AccountId,
        id: TokenId,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let current: Option<Option<DateTime<Utc>>> = locked!(
                api_tokens::table
                    .filter(api_tokens::account_id.eq(Id::from(account_id)))
                    .filter(api_tokens::id.eq(Id::from(id)))
                    .select(api_tokens::revoked_at)
            )
            .first(conn)
            .await
            .optional()?;
            match current {
                None => return Ok::<_, TxError>(RevokeOutcome::NotFound),
                Some(Some(_)) => return Ok(RevokeOutcome::AlreadyRevoked),
                Some(None) => {}
            }
            diesel::update(api_tokens::table.find(Id::from(id)))
                .set(api_tokens::revoked_at.eq(at))
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            announce(conn, Change::Token(id)).await?;
            Ok(RevokeOutcome::Revoked)
        })
        .await?;
        Ok(outcome)
    }

    async fn rotate(
        &self,
        account_id: AccountId,
        id: TokenId,
        replacement: &NewToken,
        at: DateTime<Utc>,
        grace_until: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<RotateOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let row = locked_token(conn, account_id, id).await?;
            let Some(row) = row else {
                return Ok::<_, TxError>(RotateOutcome::NotFound);
            };
            let mut old = row.into_domain()?;
            match old.state(at) {
                TokenState::Revoked => return Ok(RotateOutcome::AlreadyRevoked),
                TokenState::Expired => return Ok(RotateOutcome::Expired),
                TokenState::Active if old.replaced_by.is_some() => {
                    return Ok(RotateOutcome::AlreadyRotated);
                }
                TokenState::Active => {}
            }
            insert_token(conn, replacement).await?;
            old.replaced_by = Some(replacement.token.id);
            old.expires_at = Some(old.expires_at.map_or(grace_until, |e| e.min(grace_until)));
            diesel::update(api_tokens::table.find(Id::from(id)))
                .set((
                    api_tokens::replaced_by.eq(Id::from(replacement.token.id)),
                    api_tokens::expires_at.eq(old.expires_at),
                ))
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            announce(conn, Change::Token(id)).await?;
            Ok(RotateOutcome::Rotated {
                previous: Box::new(old),
            })
        })
        .await?;
        Ok(outcome)
    }

    async fn revoke_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: TokenAuditOf<'_>,
    ) -> Result<Vec<TokenId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.writer().await?;
        let expired = write_transaction!(conn, async |conn| {
            // Rows another transaction holds (a revoke, a rotation, another worker)
            // are left for a later run rather than waited for.
            let ids: Vec<Id> = locked_skipping!(
                api_tokens::table
                    .filter(api_tokens::revoked_at.is_null())
                    .filter(api_tokens::expires_at.le(now))
                    .order(api_tokens::id.asc())
                    .limit(i64::from(limit))
                    .select(api_tokens::id)
            )
            .load(conn)
            .await?;
            if ids.is_empty() {
                return Ok::<_, TxError>(Vec::new());
            }
            let rows: Vec<TokenRow> =
                diesel::update(api_tokens::table.filter(api_tokens::id.eq_any(&ids)))
                    .set(api_tokens::revoked_at.eq(api_tokens::expires_at))
                    .returning(TokenRow::as_returning())
                    .get_results(conn)
                    .await?;
            let mut expired = rows
                .into_iter()
                .map(TokenRow::into_domain)
                .collect::<Result<Vec<_>, _>>()?;
            expired.sort_by_key(|token| token.id);
            for token in &expired {
                write_audit(conn, &audit_of(token)).await?;
                announce(conn, Change::Token(token.id)).await?;
            }
            Ok(expired.into_iter().map(|token| token.id).collect())
        })
        .await?;
        Ok(expired)
    }
}

#[async_trait]
impl BootstrapRepo for crate::Store {
    async fn create_account(
        &self,
        account: &Account,
        owner: &User,
        token: &NewToken,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            diesel::insert_into(accounts::table)
                .values(AccountRow::from_domain(account, account.created_at))
                .execute(conn)
                .await?;
            diesel::insert_into(users::table)
                .values(UserRow::from_domain(owner))
                .execute(conn)
                .await?;
            insert_member(conn, account.id, owner.id, Role::Owner, account.created_at).await?;
            insert_token(conn, token).await?;
            write_audit(conn, audit).await?;
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }
}

/// The account's token `id`, locked until the transaction ends.
async fn locked_token(
    conn: &mut crate::Conn,
    account_id: AccountId,
    id: TokenId,
) -> QueryResult<Option<TokenRow>> {
    locked!(
        api_tokens::table
            .filter(api_tokens::account_id.eq(Id::from(account_id)))
            .filter(api_tokens::id.eq(Id::from(id)))
            .select(TokenRow::as_select())
    )
    .first(conn)
    .await
    .optional()
}

// The rows of this module's tables, and their conversion to and from domain values.

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_tokens, check_for_backend(crate::Db))]
pub(crate) struct TokenRow {
    pub id: Id,
    pub account_id: Id,
    pub kind: String,
    pub scopes: String,
    pub name: Option<String>,
    pub app_name: Option<String>,
    pub created_by: Option<Id>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub replaced_by: Option<Id>,
    pub assigned_to: Option<Id>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl TokenRow {
    pub fn into_domain(self) -> Result<ApiToken, StoreError> {
        Ok(ApiToken {
            id: self.id.into(),
            account_id: self.account_id.into(),
            kind: self.kind.parse().map_err(|_| corrupt("token kind"))?,
            scopes: self
                .scopes
                .parse::<ScopeSet>()
                .map_err(|_| corrupt("token scopes"))?,
            name: self.name,
            app_name: self.app_name.as_deref().map(AppName::normalise),
            created_by: self.created_by.map(Into::into),
            assigned_to: self.assigned_to.map(Into::into),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            replaced_by: self.replaced_by.map(Into::into),
            last_used_at: self.last_used_at,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = api_tokens, check_for_backend(crate::Db))]
pub(crate) struct NewTokenRow<'a> {
    pub id: Id,
    pub account_id: Id,
    pub digest: &'a [u8],
    pub kind: &'static str,
    pub scopes: String,
    pub name: Option<&'a str>,
    pub app_name: Option<&'a str>,
    pub created_by: Option<Id>,
    pub assigned_to: Option<Id>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl<'a> NewTokenRow<'a> {
    pub fn from_domain(new: &'a NewToken) -> Self {
        let token = &new.token;
        Self {
            id: Id::from(token.id),
            account_id: Id::from(token.account_id),
            digest: new.digest.as_bytes(),
            kind: token.kind.as_str(),
            scopes: token.scopes.names().join(" "),
            name: token.name.as_deref(),
            app_name: token.app_name.as_ref().map(AppName::as_str),
            created_by: token.created_by.map(Id::from),
            assigned_to: token.assigned_to.map(Id::from),
            created_at: token.created_at,
            expires_at: token.expires_at,
        }
    }
}
