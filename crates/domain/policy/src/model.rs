use chrono::{DateTime, Utc};
use d2_kernel::{AccountId, AppName, PolicyId, TokenId, UserId};
use serde_json::Value;

/// Whether a row is the app's working draft or a published (signed) version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Draft,
    Published,
}

impl Stage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Draft => "draft",
            Stage::Published => "published",
        }
    }
}

/// One version of an app's policy, or its draft. Published rows are never edited in
/// place: a change is a new version.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRecord {
    pub id: PolicyId,
    pub account_id: AccountId,
    pub app_name: AppName,
    /// Increases with every draft and publish of the app; assigned by the store.
    pub version: i64,
    pub stage: Stage,
    /// The one version the app serves.
    pub active: bool,
    pub document: Value,
    /// [`crate::content_digest`] of `document`: equal for versions with the same content.
    pub content_digest: String,
    /// The compact JWS, for published versions.
    pub jws: Option<String>,
    /// Hex SHA-256 of the JWS (published) or of the canonical document (draft).
    pub etag: String,
    /// The signing key that signed the JWS.
    pub kid: Option<String>,
    pub tool_count: u32,
    pub size_bytes: u64,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    /// `metadata.expires` of the document.
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who made this version (`token:<id>`, `system`).
    pub actor: String,
    pub token_id: Option<TokenId>,
    pub user_id: Option<UserId>,
    /// The publisher key whose signature authorised it.
    pub publisher_key_id: Option<String>,
    /// Set on versions created by re-signing during a key rotation.
    pub rotation_id: Option<String>,
}

impl PolicyRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// The state of one app: what it serves, its draft, and whether it was revoked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppState {
    pub active: Option<PolicyRecord>,
    pub draft: Option<PolicyRecord>,
    /// The newest published version is revoked and nothing is active.
    pub revoked: bool,
    /// The highest version of the app so far (0 if none).
    pub max_version: i64,
}

impl AppState {
    /// About what the state holds in bytes: each record's document and JWS, and a little
    /// for the rest (what the bundle cache is bounded by).
    pub fn weight(&self) -> u32 {
        let record = |r: &PolicyRecord| {
            let jws = r.jws.as_ref().map_or(0, String::len);
            u64::try_from(jws)
                .unwrap_or(u64::MAX)
                .saturating_add(r.size_bytes)
                .saturating_add(512)
        };
        let total = [&self.active, &self.draft]
            .into_iter()
            .flatten()
            .map(record)
            .fold(256, u64::saturating_add);
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}
