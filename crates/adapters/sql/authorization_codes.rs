//! Authorization codes (`d2_oauth::AuthorizationCodeRepo`), and their rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, SecretDigest, StoreError};
use d2_oauth::{
    AgentId, AuthorizationCode, AuthorizationCodeRepo, DelegationId, Issuance, OAuthTokenId,
    PrincipalId, Redemption,
};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;
use serde_json::Value;

use crate::audit::write_audit;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::oauth_tokens::TokenRow;
use crate::schema::{authorization_codes, oauth_tokens};

#[async_trait]
impl AuthorizationCodeRepo for crate::Store {
    async fn create_code(
        &self,
        code: &AuthorizationCode,
        digest: &SecretDigest,
    ) -> Result<bool, StoreError> {
        let row = CodeRow::from_domain(code, digest);
        let mut conn = self.writer().await?;
        let written = diesel::insert_into(authorization_codes::table)
            .values(&row)
            .execute(&mut conn)
            .await;
        match written {
            Ok(_) => Ok(true),
            // Its agent, principal or grant was deleted since the service read them.
            Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) => Ok(false),
            Err(error) => Err(from_diesel(error)),
        }
    }

    async fn code(
        &self,
        account: AccountId,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCode>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<CodeRow> = authorization_codes::table
            .filter(authorization_codes::digest.eq(digest.as_bytes().as_slice()))
            .filter(authorization_codes::account_id.eq(Id::from(account)))
            .select(CodeRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(CodeRow::into_domain).transpose()
    }

    async fn redeem_code(
        &self,
        account: AccountId,
        digest: &SecretDigest,
        issuance: &Issuance,
        audit: &AuditEntry,
        now: DateTime<Utc>,
    ) -> Result<Redemption, StoreError> {
        let rows = issuance
            .records()
            .map(TokenRow::from_domain)
            .collect::<Result<Vec<_>, _>>()?;
        let family = Id(*issuance.access.family_id.as_uuid());
        let mut conn = self.writer().await?;
        let redeemed = write_transaction!(conn, async |conn| {
            // Locked: of concurrent redemptions of one code, the first spends it and the
            // others find it spent.
            let spent: Option<(Option<DateTime<Utc>>, Option<Id>)> = locked!(
                authorization_codes::table
                    .filter(authorization_codes::digest.eq(digest.as_bytes().as_slice()))
                    .filter(authorization_codes::account_id.eq(Id::from(account)))
            )
            .select((
                authorization_codes::spent_at,
                authorization_codes::family_id,
            ))
            .first(conn)
            .await
            .optional()?;
            match spent {
                None => return Ok::<_, TxError>(Redemption::Unknown),
                Some((Some(_), family_id)) => {
                    return Ok(Redemption::Spent {
                        family_id: family_id.map(|id| OAuthTokenId::from_uuid(id.0)),
                    });
                }
                Some((None, _)) => {}
            }
            diesel::update(
                authorization_codes::table
                    .filter(authorization_codes::digest.eq(digest.as_bytes().as_slice())),
            )
            .set((
                authorization_codes::spent_at.eq(now),
                authorization_codes::family_id.eq(family),
            ))
            .execute(conn)
            .await?;
            insert_rows!(conn, oauth_tokens::table, rows);
            write_audit(conn, audit).await?;
            Ok(Redemption::Redeemed)
        })
        .await;
        match redeemed {
            Ok(redemption) => Ok(redemption),
            // The agent was deleted meanwhile: its tokens cannot be stored.
            Err(TxError::Diesel(DieselError::DatabaseError(
                DatabaseErrorKind::ForeignKeyViolation,
                _,
            ))) => Ok(Redemption::Unknown),
            Err(error) => Err(error.into()),
        }
    }

    async fn prune_codes(&self, expired_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut conn = self.writer().await?;
        let deleted = diesel::delete(
            authorization_codes::table.filter(authorization_codes::expires_at.lt(expired_before)),
        )
        .execute(&mut conn)
        .await
        .map_err(from_diesel)?;
        Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = authorization_codes, check_for_backend(crate::Db))]
pub(crate) struct CodeRow {
    pub digest: Vec<u8>,
    pub account_id: Id,
    pub agent_id: Id,
    pub principal_id: Id,
    pub delegation_id: Id,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scopes: Value,
    pub openid: bool,
    pub resources: Value,
    pub nonce: Option<String>,
    pub auth_time: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub spent_at: Option<DateTime<Utc>>,
    pub family_id: Option<Id>,
}

fn texts(list: &[String]) -> Value {
    Value::Array(list.iter().cloned().map(Value::String).collect())
}

fn list_of(value: Value, what: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_value(value).map_err(|_| corrupt(what))
}

impl CodeRow {
    fn from_domain(code: &AuthorizationCode, digest: &SecretDigest) -> Self {
        Self {
            digest: digest.as_bytes().to_vec(),
            account_id: Id::from(code.account_id),
            agent_id: Id(*code.agent_id.as_uuid()),
            principal_id: Id(*code.principal_id.as_uuid()),
            delegation_id: Id(*code.delegation_id.as_uuid()),
            redirect_uri: code.redirect_uri.clone(),
            code_challenge: code.code_challenge.clone(),
            scopes: texts(&code.scopes),
            openid: code.openid,
            resources: texts(&code.resources),
            nonce: code.nonce.clone(),
            auth_time: code.auth_time,
            created_at: code.created_at,
            expires_at: code.expires_at,
            spent_at: code.spent_at,
            family_id: code.family_id.map(|id| Id(*id.as_uuid())),
        }
    }

    fn into_domain(self) -> Result<AuthorizationCode, StoreError> {
        Ok(AuthorizationCode {
            account_id: AccountId::from_uuid(self.account_id.0),
            agent_id: AgentId::from_uuid(self.agent_id.0),
            principal_id: PrincipalId::from_uuid(self.principal_id.0),
            delegation_id: DelegationId::from_uuid(self.delegation_id.0),
            redirect_uri: self.redirect_uri,
            code_challenge: self.code_challenge,
            scopes: list_of(self.scopes, "authorization code scopes")?,
            openid: self.openid,
            resources: list_of(self.resources, "authorization code resources")?,
            nonce: self.nonce,
            auth_time: self.auth_time,
            created_at: self.created_at,
            expires_at: self.expires_at,
            spent_at: self.spent_at,
            family_id: self.family_id.map(|id| OAuthTokenId::from_uuid(id.0)),
        })
    }
}
