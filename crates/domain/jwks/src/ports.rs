use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, StoreError};

use crate::key::SigningKey;
use crate::seal::Sealed;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstKey {
    Created,
    /// Another request created the account's key first; use this one.
    AlreadyActive(Box<SigningKey>),
}

/// Storage of signing keys.
#[async_trait]
pub trait SigningKeyRepo: Send + Sync + 'static {
    /// Every key of the account, active and retired, newest first.
    async fn keys(&self, account_id: AccountId) -> Result<Vec<SigningKey>, StoreError>;

    /// Stores the account's first active key with its audit record, unless the account
    /// already has an active key (then nothing is written). MUST be safe against two
    /// concurrent first publishes.
    async fn insert_first(
        &self,
        key: &SigningKey,
        audit: &AuditEntry,
    ) -> Result<FirstKey, StoreError>;

    /// Up to `limit` keys of any account sealed with an AES key other than
    /// `current_aes_key_id` (what an AES key rotation still has to re-seal).
    async fn sealed_with_other_keys(
        &self,
        current_aes_key_id: &str,
        limit: u32,
    ) -> Result<Vec<SigningKey>, StoreError>;

    /// How many keys of any account are sealed with an AES key other than the current one.
    async fn count_sealed_with_other_keys(
        &self,
        current_aes_key_id: &str,
    ) -> Result<u64, StoreError>;

    /// Replaces a key's ciphertext if it is still `expected` (so an interrupted or
    /// concurrent rotation never loses one). Returns whether it was replaced.
    async fn reseal(
        &self,
        kid: &str,
        expected: &Sealed,
        replacement: &Sealed,
    ) -> Result<bool, StoreError>;

    /// Deletes keys retired before `retired_before` (announcing the change of each account's
    /// keys); returns how many.
    async fn prune_retired(&self, retired_before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Accounts that have at least one signing key.
    async fn accounts_with_keys(&self) -> Result<Vec<AccountId>, StoreError>;
}
