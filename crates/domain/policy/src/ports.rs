use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_jwks::SigningKey;
use d2_kernel::{AccountId, AppName, Page, PageRequest, PolicyId, StoreError};

use crate::model::{AppState, PolicyRecord};
use crate::publisher::{KeyApproval, ListedKey, PublisherKey};

/// Builds the audit record of a change from the stored record (whose version the store
/// assigns inside the transaction).
pub type AuditOf<'a> = &'a (dyn Fn(&PolicyRecord) -> AuditEntry + Send + Sync);

/// A new published version to store.
#[derive(Clone, Debug)]
pub struct Publication {
    /// The version's content; `version` is assigned by the store.
    pub record: PolicyRecord,
    /// The active version the decision to publish was based on (`None`: none was). If
    /// another is active by now, nothing is written.
    pub expected_active: Option<PolicyId>,
    /// The caller's explicit version, which must be above every existing one.
    pub requested_version: Option<i64>,
    /// For an app with nothing active: refuse when the account already serves this many.
    pub max_apps: u32,
    /// Refuse (`IdenticalTo`) a record whose `content_digest` is that of an earlier
    /// published version other than the active one: going back to earlier content is a
    /// revert. Republishing the active version's content is allowed (it renews
    /// `metadata.expires`).
    pub refuse_earlier_content: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DraftOutcome {
    Saved(Box<PolicyRecord>),
    /// The account uses `max_apps` apps already (with a draft or an active version).
    AppLimit,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PublishOutcome {
    Published(Box<PolicyRecord>),
    /// The active version changed since it was read.
    Conflict,
    /// The requested version is not above the app's highest.
    VersionRollback {
        highest: i64,
    },
    /// The requested version skips too far ahead (or no version is left).
    VersionOutOfRange {
        highest: i64,
    },
    /// The account uses `max_apps` apps already (with a draft or an active version).
    AppLimit,
    /// The content is that of this earlier version (the newest such), which is not active.
    IdenticalTo {
        id: PolicyId,
        version: i64,
    },
}

/// A signing-key rotation: the new key, and each active bundle re-signed with it.
#[derive(Clone, Debug)]
pub struct KeyRotation {
    pub account_id: AccountId,
    pub new_key: SigningKey,
    /// The key that must still be active (`None`: the account had none).
    pub expected_active_kid: Option<String>,
    pub at: DateTime<Utc>,
    /// Re-signed versions; each `expected_active` names the version it replaces.
    pub bundles: Vec<(PolicyRecord, PolicyId)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RotationOutcome {
    Rotated(Vec<PolicyRecord>),
    /// A key or a bundle changed meanwhile; nothing was written.
    Conflict,
}

/// Storage of policies.
///
/// Implementations shared between processes MUST announce every change of an app (and of
/// an account's keys) so caches elsewhere drop it.
#[async_trait]
pub trait PolicyRepo: Send + Sync + 'static {
    async fn app_state(&self, account_id: AccountId, app: &AppName)
    -> Result<AppState, StoreError>;

    async fn find_policy(
        &self,
        account_id: AccountId,
        id: PolicyId,
    ) -> Result<Option<PolicyRecord>, StoreError>;

    /// The app's rows, newest version first.
    async fn versions(
        &self,
        account_id: AccountId,
        app: &AppName,
        page: &PageRequest,
    ) -> Result<Page<PolicyRecord>, StoreError>;

    /// All rows of the account (only those of `app` when given), newest first by
    /// `(created_at, id)`.
    async fn list_policies(
        &self,
        account_id: AccountId,
        app: Option<&AppName>,
        page: &PageRequest,
    ) -> Result<Page<PolicyRecord>, StoreError>;

    /// Apps with a draft or a published version, sorted.
    async fn apps(&self, account_id: AccountId) -> Result<Vec<AppName>, StoreError>;

    /// The active version of every app of the account.
    async fn active_policies(&self, account_id: AccountId)
    -> Result<Vec<PolicyRecord>, StoreError>;

    /// Stores the app's draft (replacing an existing one) as version highest + 1, with its
    /// audit record. An app without a draft or an active version takes one of the
    /// account's `max_apps` (apps with a draft or an active version); writes nothing when
    /// none is free.
    async fn save_draft(
        &self,
        draft: &PolicyRecord,
        max_apps: u32,
        audit_of: AuditOf<'_>,
    ) -> Result<DraftOutcome, StoreError>;

    /// Stores a new active version (highest + 1), deactivates the previous one and
    /// removes the app's draft, with its audit record, in one transaction serialised per
    /// app. Writes nothing unless the outcome is `Published`, except that SQL adapters
    /// MAY store the content digests of the app's rows written without one.
    async fn publish(
        &self,
        publication: &Publication,
        audit_of: AuditOf<'_>,
    ) -> Result<PublishOutcome, StoreError>;

    /// Marks the app's published versions revoked; returns how many were active.
    async fn revoke_app(
        &self,
        account_id: AccountId,
        app: &AppName,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError>;

    /// Changes the description kept beside a row (not part of the signed content).
    async fn set_description(
        &self,
        account_id: AccountId,
        id: PolicyId,
        description: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<Option<PolicyRecord>, StoreError>;

    /// Activates the new key, retires the previous one and stores the re-signed versions,
    /// in one transaction.
    async fn rotate_signing_key(
        &self,
        rotation: &KeyRotation,
        audit: &AuditEntry,
    ) -> Result<RotationOutcome, StoreError>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// The pending key is active now.
    Approved(Box<PublisherKey>),
    /// The key was not pending (active, or revoked); nothing was written.
    NotPending(Box<PublisherKey>),
    /// The account has no such key.
    NotFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRegistration {
    Created,
    /// The account registered this key before (possibly revoked since).
    Exists(Box<PublisherKey>),
}

/// Storage of publisher keys.
#[async_trait]
pub trait PublisherKeyRepo: Send + Sync + 'static {
    /// Stores the key and its audit record, unless the account has it already.
    async fn register(
        &self,
        key: &PublisherKey,
        audit: &AuditEntry,
    ) -> Result<KeyRegistration, StoreError>;

    async fn find(
        &self,
        account_id: AccountId,
        key_id: &str,
    ) -> Result<Option<PublisherKey>, StoreError>;

    /// Newest first, each with the name of the person it was registered for, read in the
    /// same query.
    async fn list(
        &self,
        account_id: AccountId,
        include_revoked: bool,
    ) -> Result<Vec<ListedKey>, StoreError>;

    /// Makes a pending key active, recording `approval`, with the audit record, in one
    /// transaction. A key that is not pending (active or revoked) is returned unchanged,
    /// and nothing is written.
    async fn approve(
        &self,
        account_id: AccountId,
        key_id: &str,
        approval: &KeyApproval,
        audit: &AuditEntry,
    ) -> Result<ApprovalOutcome, StoreError>;

    /// Marks the key revoked (once); false if the account has no such key. A repeated
    /// revoke returns true and writes nothing. A pending key can be revoked.
    async fn revoke(
        &self,
        account_id: AccountId,
        key_id: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
}

/// The largest version: 2^53, so every JSON client (JavaScript's numbers included) reads
/// versions exactly.
pub const MAX_VERSION: i64 = 1 << 53;

/// How far an explicit version may skip ahead of the app's highest, so that no request can
/// use up the versions left and wedge the app.
pub const MAX_VERSION_STEP: i64 = 1_000_000;

/// The version a new publication of an app whose highest version is `highest` gets: the
/// next one, or `requested` when it is above `highest` and within [`MAX_VERSION_STEP`] of
/// it (and at most [`MAX_VERSION`]). Every adapter assigns versions through this, under the
/// app's lock.
pub fn next_version(highest: i64, requested: Option<i64>) -> Result<i64, PublishOutcome> {
    let next = highest
        .checked_add(1)
        .filter(|next| *next <= MAX_VERSION)
        .ok_or(PublishOutcome::VersionOutOfRange { highest })?;
    let Some(requested) = requested else {
        return Ok(next);
    };
    if requested <= highest {
        return Err(PublishOutcome::VersionRollback { highest });
    }
    let furthest = highest.saturating_add(MAX_VERSION_STEP).min(MAX_VERSION);
    if requested > furthest {
        return Err(PublishOutcome::VersionOutOfRange { highest });
    }
    Ok(requested)
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn versions_go_up_by_at_most_the_step_and_never_past_2_pow_53() {
        assert_eq!(next_version(0, None), Ok(1));
        assert_eq!(next_version(7, Some(9)), Ok(9));
        assert_eq!(
            next_version(7, Some(7)),
            Err(PublishOutcome::VersionRollback { highest: 7 })
        );
        assert_eq!(
            next_version(7, Some(-3)),
            Err(PublishOutcome::VersionRollback { highest: 7 })
        );
        assert_eq!(
            next_version(7, Some(7 + MAX_VERSION_STEP)),
            Ok(7 + MAX_VERSION_STEP)
        );
        for absurd in [8 + MAX_VERSION_STEP, MAX_VERSION, i64::MAX] {
            assert_eq!(
                next_version(7, Some(absurd)),
                Err(PublishOutcome::VersionOutOfRange { highest: 7 })
            );
        }
        assert_eq!(
            next_version(MAX_VERSION - 1, Some(MAX_VERSION)),
            Ok(MAX_VERSION)
        );
        for highest in [MAX_VERSION, i64::MAX] {
            assert_eq!(
                next_version(highest, None),
                Err(PublishOutcome::VersionOutOfRange { highest })
            );
        }
    }
}
