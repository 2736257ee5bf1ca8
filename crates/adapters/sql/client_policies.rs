//! The accounts' policies for clients named by a metadata document
//! (`d2_oauth::ClientPolicyRepo`), and their rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, Change, SecretDigest, StoreError};
use d2_oauth::{ClientPolicy, ClientPolicyRepo};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::write_audit;
use crate::changes::announce;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::schema::oauth_client_policies as policies;

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = policies, check_for_backend(crate::Db))]
pub(crate) struct ClientPolicyRow {
    pub account_id: Id,
    pub metadata_documents: bool,
    pub scopes: Value,
    pub resources: Value,
    pub updated_at: DateTime<Utc>,
    pub dynamic_registration: bool,
    pub initial_access_digest: Option<Vec<u8>>,
}

impl ClientPolicyRow {
    fn into_domain(self) -> Result<ClientPolicy, StoreError> {
        let list = |value: Value| {
            serde_json::from_value::<Vec<String>>(value).map_err(|_| corrupt("client policy list"))
        };
        let initial_access = self
            .initial_access_digest
            .as_deref()
            .map(|bytes| {
                SecretDigest::from_bytes(bytes).ok_or_else(|| corrupt("initial access digest"))
            })
            .transpose()?;
        Ok(ClientPolicy {
            metadata_documents: self.metadata_documents,
            dynamic_registration: self.dynamic_registration,
            initial_access,
            scopes: list(self.scopes)?,
            resources: list(self.resources)?,
            updated_at: Some(self.updated_at),
        })
    }
}

#[async_trait]
impl ClientPolicyRepo for crate::Store {
    async fn client_policy(&self, account: AccountId) -> Result<Option<ClientPolicy>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<ClientPolicyRow> = policies::table
            .find(Id::from(account))
            .select(ClientPolicyRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(ClientPolicyRow::into_domain).transpose()
    }

    async fn set_client_policy(
        &self,
        account: AccountId,
        policy: &ClientPolicy,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let row = ClientPolicyRow {
            account_id: Id::from(account),
            metadata_documents: policy.metadata_documents,
            scopes: Value::from(policy.scopes.clone()),
            resources: Value::from(policy.resources.clone()),
            updated_at: policy
                .updated_at
                .ok_or_else(|| StoreError::corrupt("a client policy without its time"))?,
            dynamic_registration: policy.dynamic_registration,
            initial_access_digest: None,
        };
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            diesel::insert_into(policies::table)
                .values(&row)
                .on_conflict(policies::account_id)
                .do_update()
                .set((
                    policies::metadata_documents.eq(excluded(policies::metadata_documents)),
                    policies::scopes.eq(excluded(policies::scopes)),
                    policies::resources.eq(excluded(policies::resources)),
                    policies::updated_at.eq(excluded(policies::updated_at)),
                    policies::dynamic_registration.eq(excluded(policies::dynamic_registration)),
                ))
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            announce(conn, Change::OAuth(account)).await?;
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }

    async fn set_initial_access(
        &self,
        account: AccountId,
        digest: &SecretDigest,
        now: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let default = ClientPolicyRow {
            account_id: Id::from(account),
            metadata_documents: false,
            scopes: Value::Array(Vec::new()),
            resources: Value::Array(Vec::new()),
            updated_at: now,
            dynamic_registration: false,
            initial_access_digest: Some(digest.as_bytes().to_vec()),
        };
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            diesel::insert_into(policies::table)
                .values(&default)
                .on_conflict(policies::account_id)
                .do_update()
                .set(policies::initial_access_digest.eq(excluded(policies::initial_access_digest)))
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            announce(conn, Change::OAuth(account)).await?;
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }
}
