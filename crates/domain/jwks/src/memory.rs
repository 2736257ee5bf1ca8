//! In-memory signing keys, for tests.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::{AccountId, StoreError};

use crate::key::{KeyAlgorithm, SigningKey};
use crate::ports::{FirstKey, SigningKeyRepo};
use crate::seal::{Binding, Sealed};

#[derive(Debug, Default)]
pub struct MemorySigningKeys {
    keys: Mutex<Vec<SigningKey>>,
    audit: Arc<MemoryAuditLog>,
}

impl MemorySigningKeys {
    pub fn new(audit: Arc<MemoryAuditLog>) -> Self {
        Self {
            keys: Mutex::new(Vec::new()),
            audit,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Vec<SigningKey>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn audit(&self) -> &Arc<MemoryAuditLog> {
        &self.audit
    }
}

fn needs_reseal(key: &SigningKey, current_aes_key_id: &str) -> bool {
    key.sealed_private.aes_key_id != current_aes_key_id
        || key.sealed_private.binding != Binding::CURRENT
}

#[async_trait]
impl SigningKeyRepo for MemorySigningKeys {
    async fn keys(
        &self,
        account_id: AccountId,
        algorithm: KeyAlgorithm,
    ) -> Result<Vec<SigningKey>, StoreError> {
        let mut keys: Vec<SigningKey> = self
            .lock()
            .iter()
            .filter(|k| k.account_id == account_id && k.algorithm() == algorithm)
            .cloned()
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        Ok(keys)
    }

    async fn insert_first(
        &self,
        key: &SigningKey,
        audit: &AuditEntry,
    ) -> Result<FirstKey, StoreError> {
        let mut keys = self.lock();
        if let Some(active) = keys.iter().find(|k| {
            k.account_id == key.account_id && k.algorithm() == key.algorithm() && k.is_active()
        }) {
            return Ok(FirstKey::AlreadyActive(Box::new(active.clone())));
        }
        keys.push(key.clone());
        self.audit.append(audit.clone());
        Ok(FirstKey::Created)
    }

    async fn replace_active(
        &self,
        new_key: &SigningKey,
        expected_active_kid: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut keys = self.lock();
        let same_set = |k: &SigningKey| {
            k.account_id == new_key.account_id && k.algorithm() == new_key.algorithm()
        };
        let Some(active) = keys.iter_mut().find(|k| same_set(k) && k.is_active()) else {
            return Ok(false);
        };
        if active.kid != expected_active_kid {
            return Ok(false);
        }
        active.retired_at = Some(at);
        keys.push(new_key.clone());
        self.audit.append(audit.clone());
        Ok(true)
    }

    async fn to_reseal(
        &self,
        current_aes_key_id: &str,
        limit: u32,
    ) -> Result<Vec<SigningKey>, StoreError> {
        let mut keys: Vec<SigningKey> = self
            .lock()
            .iter()
            .filter(|k| needs_reseal(k, current_aes_key_id))
            .cloned()
            .collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(keys)
    }

    async fn count_to_reseal(&self, current_aes_key_id: &str) -> Result<u64, StoreError> {
        let count = self
            .lock()
            .iter()
            .filter(|k| needs_reseal(k, current_aes_key_id))
            .count();
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }

    async fn reseal(
        &self,
        kid: &str,
        expected: &Sealed,
        replacement: &Sealed,
    ) -> Result<bool, StoreError> {
        let mut keys = self.lock();
        match keys
            .iter_mut()
            .find(|k| k.kid == kid && k.sealed_private == *expected)
        {
            Some(key) => {
                key.sealed_private = replacement.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn prune_retired(&self, retired_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut keys = self.lock();
        let before = keys.len();
        keys.retain(|k| k.retired_at.is_none_or(|retired| retired >= retired_before));
        Ok(u64::try_from(before.saturating_sub(keys.len())).unwrap_or_default())
    }

    async fn accounts_with_keys(
        &self,
        algorithm: KeyAlgorithm,
    ) -> Result<Vec<AccountId>, StoreError> {
        let mut accounts: Vec<AccountId> = self
            .lock()
            .iter()
            .filter(|k| k.algorithm() == algorithm)
            .map(|k| k.account_id)
            .collect();
        accounts.sort();
        accounts.dedup();
        Ok(accounts)
    }
}
