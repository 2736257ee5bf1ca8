//! Publisher keys: the Ed25519 keys whose signatures authorise a publish.
//!
//! A key's id is derived from the key exactly as the D2 SDK derives it: `ed_` followed by
//! the hex of BLAKE2s with a 6-byte digest over the 32 raw key bytes. So the id the SDK
//! sends in `X-D2-Key-Id` always names the key it registered.
//!
//! An account may require approval of keys (`require_publisher_key_approval`): a key
//! registered then by a credential without the `admin` scope is *pending* and authorises
//! nothing until an admin approves it. Keys registered by admins are active at once, and
//! turning the setting on leaves keys already active as they are.
//!
//! Only the credential that registered a key, or an admin, may revoke it. A key is the
//! caller's own when the same API token registered it: an API token's user is the person
//! who created the token (the account owner, for most tokens), not the person holding it,
//! so two tokens with the same user are still two parties.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use blake2::Blake2s;
use blake2::digest::Digest;
use blake2::digest::consts::U6;
use chrono::{DateTime, Utc};
use d2_accounts::{AccountError, AccountService};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccessError, AccountId, AuthContext, Clock, Code, Credential, ErrorCode, Scope, StoreError,
    TokenId, UserId,
};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde_json::json;

use crate::ports::{ApprovalOutcome, KeyRegistration, PublisherKeyRepo};

pub const KEY_BYTES: usize = 32;

/// `ed_` + hex(BLAKE2s-48(key)).
pub fn derive_key_id(key: &[u8; KEY_BYTES]) -> String {
    let digest = Blake2s::<U6>::digest(key);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("ed_{hex}")
}

/// Whether a key authorises publishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    Active,
    /// Waiting for an admin's approval.
    Pending,
    Revoked,
}

impl KeyState {
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Pending => "pending",
            KeyState::Revoked => "revoked",
        }
    }
}

/// Who approved a pending key (`token:<id>`), and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyApproval {
    pub at: DateTime<Utc>,
    pub by: String,
}

/// Whether `text` has the shape of a derived key id; no other text names a key, so it is
/// answered without a lookup (and text no store keeps, such as U+0000, never reaches one).
fn is_key_id(text: &str) -> bool {
    text.strip_prefix("ed_").is_some_and(|hex| {
        hex.len() == 12 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A registered publisher key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherKey {
    pub key_id: String,
    pub account_id: AccountId,
    pub public_key: [u8; KEY_BYTES],
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who registered it (`token:<id>`), and on whose behalf.
    pub uploaded_by: String,
    pub token_id: Option<TokenId>,
    pub user_id: Option<UserId>,
    /// Registered while the account required approval, and not approved since.
    pub pending: bool,
    /// Set when a pending key was approved; keys active from the start have none.
    pub approval: Option<KeyApproval>,
}

/// A key as the list shows it: with the name of the person it was registered for (their
/// display name, else full name, else email; `None` for a credential without a person,
/// such as a server token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedKey {
    pub key: PublisherKey,
    pub uploaded_by_name: Option<String>,
}

impl PublisherKey {
    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.public_key)
    }

    pub fn state(&self) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.pending {
            KeyState::Pending
        } else {
            KeyState::Active
        }
    }

    /// Whether `ctx` is the credential that registered the key.
    pub fn registered_by(&self, ctx: &AuthContext) -> bool {
        match ctx.credential {
            Credential::ApiToken(id) => self.token_id == Some(id),
            // A key records the token that registered it, not a session: a key registered
            // in a session is revoked by an admin.
            Credential::UserSession(_) => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublisherKeyError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("`public_key` must be the standard base64 of a 32-byte Ed25519 public key")]
    InvalidPublicKey,
    #[error("`key_id` {claimed} does not match the key; its id is {derived}")]
    KeyIdMismatch { claimed: String, derived: String },
    #[error("this key was revoked; register a new key")]
    Revoked,
    #[error("no such publisher key in this account")]
    NotFound,
    #[error(
        "publisher key `{0}` was registered by another credential; only that credential or an admin may revoke it"
    )]
    NotOwner(String),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for PublisherKeyError {
    fn code(&self) -> Code {
        match self {
            PublisherKeyError::Access(error) => error.code(),
            PublisherKeyError::InvalidPublicKey => Code::InvalidPublicKey,
            PublisherKeyError::KeyIdMismatch { .. } => Code::KeyIdMismatch,
            PublisherKeyError::Revoked => Code::PublisherKeyRevoked,
            PublisherKeyError::NotFound => Code::PublisherKeyNotFound,
            PublisherKeyError::NotOwner(_) => Code::KeyOwnerOrAdminRequired,
            PublisherKeyError::Account(error) => error.code(),
            PublisherKeyError::Store(error) => error.code(),
        }
    }
}

/// Why a publish signature is refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("publishing needs `X-D2-Signature` (Ed25519 over the request body) and `X-D2-Key-Id`")]
    Missing,
    #[error("no publisher key `{0}` is registered in this account")]
    UnknownKey(String),
    #[error("publisher key `{0}` is revoked")]
    KeyRevoked(String),
    #[error(
        "publisher key `{0}` awaits an admin's approval (POST /v1/keys/{0}/approve) before it authorises publishing"
    )]
    KeyPending(String),
    #[error("the signature does not verify against publisher key `{0}`")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for SignatureError {
    fn code(&self) -> Code {
        match self {
            SignatureError::Missing => Code::SignatureRequired,
            SignatureError::UnknownKey(_) => Code::UnknownPublisherKey,
            SignatureError::KeyRevoked(_) => Code::PublisherKeyRevoked,
            SignatureError::KeyPending(_) => Code::PublisherKeyPending,
            SignatureError::Invalid(_) => Code::InvalidSignature,
            SignatureError::Store(error) => error.code(),
        }
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .ok()
}

#[derive(Clone)]
pub struct PublisherKeys {
    repo: Arc<dyn PublisherKeyRepo>,
    /// Where the account's `require_publisher_key_approval` is read (cached).
    accounts: AccountService,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PublisherKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherKeys").finish_non_exhaustive()
    }
}

impl PublisherKeys {
    pub fn new(
        repo: Arc<dyn PublisherKeyRepo>,
        accounts: AccountService,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            accounts,
            clock,
        }
    }

    /// Registers a key. Registering the same key again is not an error: the D2 CLI does it
    /// before every publish. Returns the key and whether it is new. When the account
    /// requires approval and the caller is not an admin, the new key is pending.
    pub async fn register(
        &self,
        ctx: &AuthContext,
        public_key: &str,
        claimed_id: Option<&str>,
    ) -> Result<(PublisherKey, bool), PublisherKeyError> {
        ctx.require(Scope::KeyUpload)?;
        let bytes: [u8; KEY_BYTES] = decode_base64(public_key)
            .and_then(|b| b.try_into().ok())
            .ok_or(PublisherKeyError::InvalidPublicKey)?;
        let key_id = derive_key_id(&bytes);
        if let Some(claimed) = claimed_id.filter(|c| *c != key_id) {
            return Err(PublisherKeyError::KeyIdMismatch {
                claimed: claimed.chars().take(64).collect(),
                derived: key_id,
            });
        }
        let requires_approval = self
            .accounts
            .overview(ctx)
            .await?
            .account
            .require_publisher_key_approval;
        let now = self.clock.now();
        let key = PublisherKey {
            key_id: key_id.clone(),
            account_id: ctx.account_id,
            public_key: bytes,
            created_at: now,
            revoked_at: None,
            uploaded_by: ctx.actor(),
            token_id: ctx.token_id(),
            user_id: ctx.user_id,
            pending: requires_approval && !ctx.scopes.allows(Scope::Admin),
            approval: None,
        };
        let audit = AuditEntry::by(ctx, AuditAction::KeyUpload, now)
            .target("publisher_key", &key_id)
            .metadata(json!({
                "algorithm": "ed25519",
                "key_id": key_id,
                "state": key.state().as_str(),
            }));
        match self.repo.register(&key, &audit).await? {
            KeyRegistration::Created => Ok((key, true)),
            KeyRegistration::Exists(existing) if existing.revoked_at.is_some() => {
                Err(PublisherKeyError::Revoked)
            }
            KeyRegistration::Exists(existing) => Ok((*existing, false)),
        }
    }

    pub async fn list(
        &self,
        ctx: &AuthContext,
        include_revoked: bool,
    ) -> Result<Vec<ListedKey>, PublisherKeyError> {
        ctx.require(Scope::KeyUpload)?;
        Ok(self.repo.list(ctx.account_id, include_revoked).await?)
    }

    /// Revokes a key of the caller's account: the caller's own (see the module doc), or any
    /// key for an admin. Audited as `key.revoke`; revoking a revoked key writes nothing.
    pub async fn revoke(&self, ctx: &AuthContext, key_id: &str) -> Result<(), PublisherKeyError> {
        ctx.require(Scope::KeyUpload)?;
        if !is_key_id(key_id) {
            return Err(PublisherKeyError::NotFound);
        }
        let key = self
            .repo
            .find(ctx.account_id, key_id)
            .await?
            .ok_or(PublisherKeyError::NotFound)?;
        if !ctx.scopes.allows(Scope::Admin) && !key.registered_by(ctx) {
            return Err(PublisherKeyError::NotOwner(key.key_id));
        }
        let now = self.clock.now();
        let audit =
            AuditEntry::by(ctx, AuditAction::KeyRevoke, now).target("publisher_key", key_id);
        if self
            .repo
            .revoke(ctx.account_id, key_id, now, &audit)
            .await?
        {
            Ok(())
        } else {
            Err(PublisherKeyError::NotFound)
        }
    }

    /// Approves a pending key of the caller's account (admin only), so that it authorises
    /// publishing. Audited as `key.approve`. Approving an active key changes nothing;
    /// a revoked key stays revoked (`Revoked`).
    pub async fn approve(
        &self,
        ctx: &AuthContext,
        key_id: &str,
    ) -> Result<PublisherKey, PublisherKeyError> {
        ctx.require(Scope::Admin)?;
        if !is_key_id(key_id) {
            return Err(PublisherKeyError::NotFound);
        }
        let approval = KeyApproval {
            at: self.clock.now(),
            by: ctx.actor(),
        };
        let audit = AuditEntry::by(ctx, AuditAction::KeyApprove, approval.at)
            .target("publisher_key", key_id)
            .metadata(json!({ "key_id": key_id }));
        match self
            .repo
            .approve(ctx.account_id, key_id, &approval, &audit)
            .await?
        {
            ApprovalOutcome::Approved(key) => Ok(*key),
            ApprovalOutcome::NotPending(key) if key.revoked_at.is_some() => {
                Err(PublisherKeyError::Revoked)
            }
            ApprovalOutcome::NotPending(key) => Ok(*key),
            ApprovalOutcome::NotFound => Err(PublisherKeyError::NotFound),
        }
    }

    /// Checks an Ed25519 signature over `body` by a live key of `account_id`: one neither
    /// revoked nor waiting for approval.
    pub async fn verify(
        &self,
        account_id: AccountId,
        key_id: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<PublisherKey, SignatureError> {
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Err(SignatureError::Missing);
        };
        let key_id = key_id.trim();
        let unknown = || SignatureError::UnknownKey(key_id.chars().take(64).collect());
        if !is_key_id(key_id) {
            return Err(unknown());
        }
        let key = self
            .repo
            .find(account_id, key_id)
            .await?
            .ok_or_else(unknown)?;
        match key.state() {
            KeyState::Active => {}
            KeyState::Revoked => return Err(SignatureError::KeyRevoked(key.key_id)),
            KeyState::Pending => return Err(SignatureError::KeyPending(key.key_id)),
        }
        let signature =
            decode_base64(signature).ok_or_else(|| SignatureError::Invalid(key.key_id.clone()))?;
        UnparsedPublicKey::new(&ED25519, key.public_key)
            .verify(body, &signature)
            .map_err(|_| SignatureError::Invalid(key.key_id.clone()))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_match_the_sdk_derivation() {
        // The SDK's own example: 32 zero bytes.
        assert_eq!(derive_key_id(&[0; 32]), "ed_65eeddb02509");
        assert_ne!(derive_key_id(&[1; 32]), derive_key_id(&[0; 32]));
        assert_eq!(derive_key_id(&[1; 32]).len(), 15);
        assert!(is_key_id(&derive_key_id(&[7; 32])));
        for text in [
            "",
            "ed_",
            "ed_65EEDDB02509",
            "ed_65eeddb0250",
            "ed_65eeddb025099",
            "ed_65eeddb0250\0",
            "xx_65eeddb02509",
        ] {
            assert!(!is_key_id(text), "{text:?}");
        }
    }
}
