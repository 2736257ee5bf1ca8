//! Rows as stored, and their conversion to and from domain values. A row that does not
//! convert is a corrupt record: `StoreError::Internal`.

use std::collections::BTreeMap;

use crate::id::Id;
use chrono::{DateTime, Utc};
use d2_accounts::{Account, AccountName, Role, SampleRate, User};
use d2_audit::{AuditEntry, AuditRecord};
use d2_kernel::{AppName, ScopeSet, StoreError};
use d2_tokens::{ApiToken, NewToken};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use d2_jwks::{Binding, PublishedKey, Sealed, SigningKey};
use d2_policy::{KeyApproval, PolicyRecord, PublisherKey, Stage, content_digest};

use crate::schema::{
    accounts, api_tokens, audit_logs, policies, publisher_keys, signing_keys, users,
};

fn corrupt(what: &str) -> StoreError {
    StoreError::corrupt(format!("stored {what} is not valid"))
}

/// An account as stored. It is read and written whole: an update sets every column,
/// `None` included (a lifted lock is written as `NULL`, not skipped).
#[derive(Queryable, Selectable, Insertable, AsChangeset, Serialize, Deserialize)]
#[diesel(table_name = accounts, check_for_backend(crate::Db), treat_none_as_null = true)]
pub(crate) struct AccountRow {
    pub id: Id,
    pub name: String,
    pub plan: String,
    pub trial_expires_at: Option<DateTime<Utc>>,
    pub metrics_enabled: bool,
    pub event_sample: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub require_publisher_key_approval: bool,
    /// With `lock_reason`, the account's lock: both set or both `NULL`.
    pub locked_at: Option<DateTime<Utc>>,
    pub lock_reason: Option<String>,
}

impl AccountRow {
    pub fn from_domain(account: &Account, updated_at: DateTime<Utc>) -> Self {
        let sample: serde_json::Map<String, Value> = account
            .event_sample
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.get())))
            .collect();
        Self {
            id: Id::from(account.id),
            name: account.name.as_str().to_owned(),
            plan: account.plan.as_str().to_owned(),
            trial_expires_at: account.trial_expires_at,
            metrics_enabled: account.metrics_enabled,
            event_sample: Value::Object(sample),
            created_at: account.created_at,
            updated_at,
            require_publisher_key_approval: account.require_publisher_key_approval,
            locked_at: account.locked.map(|lock| lock.since),
            lock_reason: account.locked.map(|lock| lock.reason.as_str().to_owned()),
        }
    }

    pub fn into_domain(self) -> Result<Account, StoreError> {
        let Value::Object(sample) = self.event_sample else {
            return Err(corrupt("event_sample"));
        };
        let event_sample = sample
            .into_iter()
            .map(|(k, v)| {
                let rate = v
                    .as_f64()
                    .and_then(|r| SampleRate::new(r).ok())
                    .ok_or_else(|| corrupt("event_sample"))?;
                Ok((k, rate))
            })
            .collect::<Result<BTreeMap<_, _>, StoreError>>()?;
        let locked = match (self.locked_at, self.lock_reason) {
            (None, None) => None,
            (Some(since), Some(reason)) => Some(d2_kernel::AccountLock {
                since,
                reason: reason.parse().map_err(|_| corrupt("lock_reason"))?,
            }),
            _ => return Err(corrupt("lock")),
        };
        Ok(Account {
            id: self.id.into(),
            name: AccountName::parse(&self.name).map_err(|_| corrupt("account name"))?,
            plan: self.plan.parse().map_err(|_| corrupt("plan"))?,
            trial_expires_at: self.trial_expires_at,
            locked,
            metrics_enabled: self.metrics_enabled,
            event_sample,
            require_publisher_key_approval: self.require_publisher_key_approval,
            created_at: self.created_at,
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = users, check_for_backend(crate::Db))]
pub(crate) struct UserRow {
    pub id: Id,
    pub account_id: Id,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub full_name: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    pub fn from_domain(user: &User) -> Self {
        Self {
            id: Id::from(user.id),
            account_id: Id::from(user.account_id),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            full_name: user.full_name.clone(),
            role: user.role.as_str().to_owned(),
            created_at: user.created_at,
        }
    }

    pub fn into_domain(self) -> Result<User, StoreError> {
        Ok(User {
            id: self.id.into(),
            account_id: self.account_id.into(),
            email: self.email,
            display_name: self.display_name,
            full_name: self.full_name,
            role: self.role.parse::<Role>().map_err(|_| corrupt("role"))?,
            created_at: self.created_at,
        })
    }
}

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
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            replaced_by: self.replaced_by.map(Into::into),
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
            created_at: token.created_at,
            expires_at: token.expires_at,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = audit_logs, check_for_backend(crate::Db))]
pub(crate) struct NewAuditRow<'a> {
    pub account_id: Id,
    pub actor: &'a str,
    pub token_id: Option<Id>,
    pub user_id: Option<Id>,
    pub action: &'static str,
    pub status: &'static str,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub metadata: &'a Value,
    pub created_at: DateTime<Utc>,
}

impl<'a> NewAuditRow<'a> {
    pub fn from_domain(entry: &'a AuditEntry) -> Self {
        Self {
            account_id: Id::from(entry.account_id),
            actor: &entry.actor,
            token_id: entry.token_id.map(Id::from),
            user_id: entry.user_id.map(Id::from),
            action: entry.action.as_str(),
            status: entry.status.as_str(),
            resource_type: entry.resource_type.as_deref(),
            resource_id: entry.resource_id.as_deref(),
            metadata: &entry.metadata,
            created_at: entry.occurred_at,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_logs, check_for_backend(crate::Db))]
pub(crate) struct AuditRow {
    pub id: i64,
    pub account_id: Id,
    pub actor: String,
    pub token_id: Option<Id>,
    pub user_id: Option<Id>,
    pub action: String,
    pub status: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

impl AuditRow {
    pub fn into_domain(self) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            id: self.id,
            entry: AuditEntry {
                account_id: self.account_id.into(),
                actor: self.actor,
                token_id: self.token_id.map(Into::into),
                user_id: self.user_id.map(Into::into),
                action: self.action.parse().map_err(|_| corrupt("audit action"))?,
                status: self.status.parse().map_err(|_| corrupt("audit status"))?,
                resource_type: self.resource_type,
                resource_id: self.resource_id,
                metadata: self.metadata,
                occurred_at: self.created_at,
            },
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = signing_keys, check_for_backend(crate::Db))]
pub(crate) struct SigningKeyRow {
    pub kid: String,
    pub account_id: Id,
    pub public_n: String,
    pub public_e: String,
    pub aes_key_id: String,
    pub sealed_private: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub seal_version: i16,
}

impl SigningKeyRow {
    pub fn from_domain(key: &SigningKey) -> Self {
        Self {
            kid: key.kid.clone(),
            account_id: Id::from(key.account_id),
            public_n: key.public.n.clone(),
            public_e: key.public.e.clone(),
            aes_key_id: key.sealed_private.aes_key_id.clone(),
            sealed_private: key.sealed_private.blob.clone(),
            created_at: key.created_at,
            retired_at: key.retired_at,
            seal_version: key.sealed_private.binding.version(),
        }
    }

    pub fn into_domain(self) -> SigningKey {
        SigningKey {
            public: PublishedKey::rsa(&self.kid, &self.public_n, &self.public_e),
            kid: self.kid,
            account_id: self.account_id.into(),
            sealed_private: Sealed {
                aes_key_id: self.aes_key_id,
                binding: Binding::from_version(self.seal_version),
                blob: self.sealed_private,
            },
            created_at: self.created_at,
            retired_at: self.retired_at,
        }
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = publisher_keys, check_for_backend(crate::Db))]
pub(crate) struct PublisherKeyRow {
    pub account_id: Id,
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub uploaded_by: String,
    pub token_id: Option<Id>,
    pub user_id: Option<Id>,
    pub pending: bool,
    pub approved_at: Option<DateTime<Utc>>,
    pub approved_by: Option<String>,
}

impl PublisherKeyRow {
    pub fn from_domain(key: &PublisherKey) -> Self {
        Self {
            account_id: Id::from(key.account_id),
            key_id: key.key_id.clone(),
            public_key: key.public_key.to_vec(),
            created_at: key.created_at,
            revoked_at: key.revoked_at,
            uploaded_by: key.uploaded_by.clone(),
            token_id: key.token_id.map(Id::from),
            user_id: key.user_id.map(Id::from),
            pending: key.pending,
            approved_at: key.approval.as_ref().map(|a| a.at),
            approved_by: key.approval.as_ref().map(|a| a.by.clone()),
        }
    }

    pub fn into_domain(self) -> Result<PublisherKey, StoreError> {
        Ok(PublisherKey {
            public_key: self
                .public_key
                .try_into()
                .map_err(|_| corrupt("publisher key"))?,
            key_id: self.key_id,
            account_id: self.account_id.into(),
            created_at: self.created_at,
            revoked_at: self.revoked_at,
            uploaded_by: self.uploaded_by,
            token_id: self.token_id.map(Into::into),
            user_id: self.user_id.map(Into::into),
            pending: self.pending,
            approval: match (self.approved_at, self.approved_by) {
                (Some(at), Some(by)) => Some(KeyApproval { at, by }),
                (None, None) => None,
                _ => return Err(corrupt("publisher key approval")),
            },
        })
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = policies, check_for_backend(crate::Db))]
pub(crate) struct PolicyRow {
    pub id: Id,
    pub account_id: Id,
    pub app_name: String,
    pub version: i64,
    pub stage: String,
    pub active: bool,
    pub document: Value,
    pub jws: Option<String>,
    pub etag: String,
    pub kid: Option<String>,
    pub tool_count: i32,
    pub size_bytes: i64,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub actor: String,
    pub token_id: Option<Id>,
    pub user_id: Option<Id>,
    pub publisher_key_id: Option<String>,
    pub rotation_id: Option<String>,
    /// `None` on rows written before the column existed (or by an older release).
    pub content_digest: Option<String>,
}

impl PolicyRow {
    pub fn from_domain(record: &PolicyRecord) -> Self {
        Self {
            id: Id::from(record.id),
            account_id: Id::from(record.account_id),
            app_name: record.app_name.as_str().to_owned(),
            version: record.version,
            stage: record.stage.as_str().to_owned(),
            active: record.active,
            document: record.document.clone(),
            jws: record.jws.clone(),
            etag: record.etag.clone(),
            kid: record.kid.clone(),
            tool_count: i32::try_from(record.tool_count).unwrap_or(i32::MAX),
            size_bytes: i64::try_from(record.size_bytes).unwrap_or(i64::MAX),
            description: record.description.clone(),
            created_at: record.created_at,
            published_at: record.published_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            actor: record.actor.clone(),
            token_id: record.token_id.map(Id::from),
            user_id: record.user_id.map(Id::from),
            publisher_key_id: record.publisher_key_id.clone(),
            rotation_id: record.rotation_id.clone(),
            content_digest: Some(record.content_digest.clone()),
        }
    }

    pub fn into_domain(self) -> Result<PolicyRecord, StoreError> {
        Ok(PolicyRecord {
            id: self.id.into(),
            account_id: self.account_id.into(),
            app_name: AppName::normalise(&self.app_name),
            version: self.version,
            stage: match self.stage.as_str() {
                "draft" => Stage::Draft,
                "published" => Stage::Published,
                _ => return Err(corrupt("policy stage")),
            },
            active: self.active,
            content_digest: self
                .content_digest
                .unwrap_or_else(|| content_digest(&self.document)),
            document: self.document,
            jws: self.jws,
            etag: self.etag,
            kid: self.kid,
            tool_count: u32::try_from(self.tool_count).map_err(|_| corrupt("tool count"))?,
            size_bytes: u64::try_from(self.size_bytes).map_err(|_| corrupt("size"))?,
            description: self.description,
            created_at: self.created_at,
            published_at: self.published_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            actor: self.actor,
            token_id: self.token_id.map(Into::into),
            user_id: self.user_id.map(Into::into),
            publisher_key_id: self.publisher_key_id,
            rotation_id: self.rotation_id,
        })
    }
}
