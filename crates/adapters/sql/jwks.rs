use crate::id::Id;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_jwks::{Binding, FirstKey, KeyAlgorithm, PublishedKey, Sealed, SigningKey, SigningKeyRepo};
use d2_kernel::{AccountId, StoreError};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::audit::write_audit;
use crate::changes::{announce, lock};
use crate::error::{TxError, from_diesel};
use crate::schema::signing_keys;
use d2_kernel::Change;
use serde::{Deserialize, Serialize};

/// Keys sealed with another AES key than the current one, or not with the current binding.
fn needs_reseal(
    current_aes_key_id: &str,
) -> diesel::dsl::Or<
    diesel::dsl::NotEq<signing_keys::aes_key_id, &str>,
    diesel::dsl::NotEq<signing_keys::seal_version, i16>,
> {
    signing_keys::aes_key_id
        .ne(current_aes_key_id)
        .or(signing_keys::seal_version.ne(Binding::CURRENT.version()))
}

pub(crate) fn keys_lock(account_id: AccountId) -> String {
    format!("keys:{account_id}")
}

/// The account's active key of `algorithm`.
pub(crate) async fn active_key(
    conn: &mut crate::Conn,
    account_id: AccountId,
    algorithm: KeyAlgorithm,
) -> QueryResult<Option<SigningKeyRow>> {
    signing_keys::table
        .filter(signing_keys::account_id.eq(Id::from(account_id)))
        .filter(signing_keys::alg.eq(algorithm.as_str()))
        .filter(signing_keys::retired_at.is_null())
        .select(SigningKeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Retires the account's active key of `new_key`'s algorithm and stores `new_key` in its
/// place, if the active one is still `expected_active_kid` (`None`: there is none); `false`
/// with nothing written otherwise. The caller holds the account's keys lock.
pub(crate) async fn replace_active_key(
    conn: &mut crate::Conn,
    new_key: &SigningKey,
    expected_active_kid: Option<&str>,
    at: DateTime<Utc>,
) -> QueryResult<bool> {
    let algorithm = new_key.algorithm();
    let active = active_key(conn, new_key.account_id, algorithm).await?;
    if active.as_ref().map(|k| k.kid.as_str()) != expected_active_kid {
        return Ok(false);
    }
    diesel::update(
        signing_keys::table
            .filter(signing_keys::account_id.eq(Id::from(new_key.account_id)))
            .filter(signing_keys::alg.eq(algorithm.as_str()))
            .filter(signing_keys::retired_at.is_null()),
    )
    .set(signing_keys::retired_at.eq(at))
    .execute(conn)
    .await?;
    diesel::insert_into(signing_keys::table)
        .values(SigningKeyRow::from_domain(new_key))
        .execute(conn)
        .await?;
    Ok(true)
}

#[async_trait]
impl SigningKeyRepo for crate::Store {
    async fn keys(
        &self,
        account_id: AccountId,
        algorithm: KeyAlgorithm,
    ) -> Result<Vec<SigningKey>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = signing_keys::table
            .filter(signing_keys::account_id.eq(Id::from(account_id)))
            .filter(signing_keys::alg.eq(algorithm.as_str()))
            .order(signing_keys::created_at.desc())
            .select(SigningKeyRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(SigningKeyRow::into_domain).collect()
    }

    async fn insert_first(
        &self,
        key: &SigningKey,
        audit: &AuditEntry,
    ) -> Result<FirstKey, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            lock(conn, &keys_lock(key.account_id)).await?;
            if let Some(existing) = active_key(conn, key.account_id, key.algorithm()).await? {
                return Ok::<_, TxError>(FirstKey::AlreadyActive(Box::new(
                    existing.into_domain()?,
                )));
            }
            diesel::insert_into(signing_keys::table)
                .values(SigningKeyRow::from_domain(key))
                .execute(conn)
                .await?;
            write_audit(conn, audit).await?;
            announce(conn, Change::Keys(key.account_id)).await?;
            Ok(FirstKey::Created)
        })
        .await?;
        Ok(outcome)
    }

    async fn replace_active(
        &self,
        new_key: &SigningKey,
        expected_active_kid: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let replaced = write_transaction!(conn, async |conn| {
            lock(conn, &keys_lock(new_key.account_id)).await?;
            if !replace_active_key(conn, new_key, Some(expected_active_kid), at).await? {
                return Ok::<_, TxError>(false);
            }
            write_audit(conn, audit).await?;
            announce(conn, Change::Keys(new_key.account_id)).await?;
            Ok(true)
        })
        .await?;
        Ok(replaced)
    }

    async fn to_reseal(
        &self,
        current_aes_key_id: &str,
        limit: u32,
    ) -> Result<Vec<SigningKey>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = signing_keys::table
            .filter(needs_reseal(current_aes_key_id))
            .order(signing_keys::kid.asc())
            .limit(i64::from(limit))
            .select(SigningKeyRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(SigningKeyRow::into_domain).collect()
    }

    async fn count_to_reseal(&self, current_aes_key_id: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let count: i64 = signing_keys::table
            .filter(needs_reseal(current_aes_key_id))
            .count()
            .get_result(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn reseal(
        &self,
        kid: &str,
        expected: &Sealed,
        replacement: &Sealed,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let updated = diesel::update(
            signing_keys::table
                .filter(signing_keys::kid.eq(kid))
                .filter(signing_keys::aes_key_id.eq(&expected.aes_key_id))
                .filter(signing_keys::seal_version.eq(expected.binding.version()))
                .filter(signing_keys::sealed_private.eq(&expected.blob)),
        )
        .set((
            signing_keys::aes_key_id.eq(&replacement.aes_key_id),
            signing_keys::seal_version.eq(replacement.binding.version()),
            signing_keys::sealed_private.eq(&replacement.blob),
        ))
        .execute(&mut conn)
        .await
        .map_err(from_diesel)?;
        Ok(updated == 1)
    }

    async fn prune_retired(&self, retired_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut conn = self.writer().await?;
        let pruned = write_transaction!(conn, async |conn| {
            let mut accounts: Vec<Id> = diesel::delete(
                signing_keys::table.filter(signing_keys::retired_at.lt(retired_before)),
            )
            .returning(signing_keys::account_id)
            .get_results(conn)
            .await?;
            let pruned = accounts.len();
            accounts.sort();
            accounts.dedup();
            for account in accounts {
                announce(conn, Change::Keys(account.into())).await?;
            }
            Ok::<_, TxError>(pruned)
        })
        .await?;
        Ok(u64::try_from(pruned).unwrap_or_default())
    }

    async fn accounts_with_keys(
        &self,
        algorithm: KeyAlgorithm,
    ) -> Result<Vec<AccountId>, StoreError> {
        let mut conn = self.conn().await?;
        let ids: Vec<Id> = signing_keys::table
            .filter(signing_keys::alg.eq(algorithm.as_str()))
            .select(signing_keys::account_id)
            .distinct()
            .order(signing_keys::account_id.asc())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(ids.into_iter().map(AccountId::from).collect())
    }
}

// The rows of this module's tables, and their conversion to and from domain values.

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = signing_keys, check_for_backend(crate::Db))]
pub(crate) struct SigningKeyRow {
    pub kid: String,
    pub account_id: Id,
    pub public_n: Option<String>,
    pub public_e: Option<String>,
    pub aes_key_id: String,
    pub sealed_private: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub seal_version: i16,
    pub alg: String,
    pub public_x: Option<String>,
    pub public_y: Option<String>,
}

impl SigningKeyRow {
    pub fn from_domain(key: &SigningKey) -> Self {
        Self {
            kid: key.kid.clone(),
            account_id: Id::from(key.account_id),
            public_n: key.public.n.clone(),
            public_e: key.public.e.clone(),
            alg: key.algorithm().as_str().to_owned(),
            public_x: key.public.x.clone(),
            public_y: key.public.y.clone(),
            aes_key_id: key.sealed_private.aes_key_id.clone(),
            sealed_private: key.sealed_private.blob.clone(),
            created_at: key.created_at,
            retired_at: key.retired_at,
            seal_version: key.sealed_private.binding.version(),
        }
    }

    pub fn into_domain(self) -> Result<SigningKey, StoreError> {
        let corrupt =
            || StoreError::corrupt(format!("signing key {} has no public half", self.kid));
        let public = match self.alg.parse::<KeyAlgorithm>() {
            Ok(KeyAlgorithm::Rs256) => PublishedKey::rsa(
                &self.kid,
                self.public_n.as_deref().ok_or_else(corrupt)?,
                self.public_e.as_deref().ok_or_else(corrupt)?,
            ),
            Ok(KeyAlgorithm::Es256) => PublishedKey::ec(
                &self.kid,
                self.public_x.as_deref().ok_or_else(corrupt)?,
                self.public_y.as_deref().ok_or_else(corrupt)?,
            ),
            Err(_) => return Err(StoreError::corrupt("signing key algorithm")),
        };
        Ok(SigningKey {
            public,
            kid: self.kid,
            account_id: self.account_id.into(),
            sealed_private: Sealed {
                aes_key_id: self.aes_key_id,
                binding: Binding::from_version(self.seal_version),
                blob: self.sealed_private,
            },
            created_at: self.created_at,
            retired_at: self.retired_at,
        })
    }
}
