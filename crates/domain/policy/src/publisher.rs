//! Publisher keys: the Ed25519 keys whose signatures authorise a publish.
//!
//! A key's id is derived from the key exactly as the D2 SDK derives it: `ed_` followed by
//! the hex of BLAKE2s with a 6-byte digest over the 32 raw key bytes. So the id the SDK
//! sends in `X-D2-Key-Id` always names the key it registered.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use blake2::Blake2s;
use blake2::digest::Digest;
use blake2::digest::consts::U6;
use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{
    AccessError, AccountId, AuthContext, Clock, Code, ErrorCode, Scope, StoreError, TokenId, UserId,
};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde_json::json;

use crate::ports::{KeyRegistration, PublisherKeyRepo};

pub const KEY_BYTES: usize = 32;

/// `ed_` + hex(BLAKE2s-48(key)).
pub fn derive_key_id(key: &[u8; KEY_BYTES]) -> String {
    let digest = Blake2s::<U6>::digest(key);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("ed_{hex}")
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
}

impl PublisherKey {
    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.public_key)
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
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PublisherKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherKeys").finish_non_exhaustive()
    }
}

impl PublisherKeys {
    pub fn new(repo: Arc<dyn PublisherKeyRepo>, clock: Arc<dyn Clock>) -> Self {
        Self { repo, clock }
    }

    /// Registers a key. Registering the same key again is not an error: the D2 CLI does it
    /// before every publish. Returns the key and whether it is new.
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
        };
        let audit = AuditEntry::by(ctx, AuditAction::KeyUpload, now)
            .target("publisher_key", &key_id)
            .metadata(json!({ "algorithm": "ed25519", "key_id": key_id }));
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
    ) -> Result<Vec<PublisherKey>, PublisherKeyError> {
        ctx.require(Scope::KeyUpload)?;
        Ok(self.repo.list(ctx.account_id, include_revoked).await?)
    }

    pub async fn revoke(&self, ctx: &AuthContext, key_id: &str) -> Result<(), PublisherKeyError> {
        ctx.require(Scope::KeyUpload)?;
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

    /// Checks an Ed25519 signature over `body` by a live key of `account_id`.
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
        let key = self
            .repo
            .find(account_id, key_id)
            .await?
            .ok_or_else(|| SignatureError::UnknownKey(key_id.chars().take(64).collect()))?;
        if key.revoked_at.is_some() {
            return Err(SignatureError::KeyRevoked(key.key_id));
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
    }
}
