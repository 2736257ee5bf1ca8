use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, StoreError};

use crate::key::{KeyAlgorithm, SigningKey};
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
    /// Every key of the account of `algorithm`, active and retired, newest first.
    async fn keys(
        &self,
        account_id: AccountId,
        algorithm: KeyAlgorithm,
    ) -> Result<Vec<SigningKey>, StoreError>;

    /// Stores the account's first active key of its algorithm with its audit record, unless
    /// the account already has an active key of that algorithm (then nothing is written).
    /// MUST be safe against two concurrent first publishes.
    async fn insert_first(
        &self,
        key: &SigningKey,
        audit: &AuditEntry,
    ) -> Result<FirstKey, StoreError>;

    /// Makes `new_key` its account's active key of its algorithm, retiring the active one
    /// (published for the grace period from `at`), if that is still `expected_active_kid`;
    /// writes `audit` with it. `false`, with nothing written, when another rotation came
    /// first. Keys of the other algorithm are untouched.
    async fn replace_active(
        &self,
        new_key: &SigningKey,
        expected_active_kid: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` keys of any account that `d2ctl rotate-aes-key` still has to re-seal:
    /// sealed with an AES key other than `current_aes_key_id`, or with a binding other
    /// than [`Binding::CURRENT`](crate::Binding::CURRENT), in key id order.
    async fn to_reseal(
        &self,
        current_aes_key_id: &str,
        limit: u32,
    ) -> Result<Vec<SigningKey>, StoreError>;

    /// How many keys of any account [`SigningKeyRepo::to_reseal`] would list.
    async fn count_to_reseal(&self, current_aes_key_id: &str) -> Result<u64, StoreError>;

    /// Replaces a key's ciphertext (AES key id, binding and bytes) if it is still
    /// `expected` (so an interrupted or concurrent rotation never loses one). Returns
    /// whether it was replaced.
    async fn reseal(
        &self,
        kid: &str,
        expected: &Sealed,
        replacement: &Sealed,
    ) -> Result<bool, StoreError>;

    /// Deletes keys retired before `retired_before` (announcing the change of each account's
    /// keys); returns how many.
    async fn prune_retired(&self, retired_before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Accounts that have at least one signing key of `algorithm`.
    async fn accounts_with_keys(
        &self,
        algorithm: KeyAlgorithm,
    ) -> Result<Vec<AccountId>, StoreError>;
}
