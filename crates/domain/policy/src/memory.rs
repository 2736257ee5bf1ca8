//! In-memory policies and publisher keys, for tests.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::memory::MemoryAccountRepo;
use d2_audit::AuditEntry;
use d2_audit::memory::MemoryAuditLog;
use d2_jwks::memory::MemorySigningKeys;
use d2_kernel::{AccountId, AppName, Cursor, Page, PageRequest, PolicyId, StoreError};
use d2_members::memory::MemoryMembers;

use crate::model::{AppState, PolicyRecord, Stage};
use crate::ports::{
    ApprovalOutcome, AuditOf, DraftOutcome, KeyRegistration, KeyRotation, PolicyRepo, Publication,
    PublishOutcome, PublisherKeyRepo, RotationOutcome, next_version,
};
use crate::publisher::{KeyApproval, ListedKey, PublisherKey};

#[derive(Debug)]
pub struct MemoryPolicies {
    rows: Mutex<Vec<PolicyRecord>>,
    keys: Mutex<Vec<PublisherKey>>,
    signing: Arc<MemorySigningKeys>,
    audit: Arc<MemoryAuditLog>,
    /// The people keys name, so lists read their names as the stores join them.
    members: Arc<MemoryMembers>,
}

impl MemoryPolicies {
    pub fn new(signing: Arc<MemorySigningKeys>) -> Self {
        let audit = signing.audit().clone();
        let accounts = Arc::new(MemoryAccountRepo::new(audit.clone()));
        Self {
            rows: Mutex::new(Vec::new()),
            keys: Mutex::new(Vec::new()),
            members: Arc::new(MemoryMembers::new(accounts)),
            audit,
            signing,
        }
    }

    /// The people beside these policies.
    pub fn members(&self) -> &Arc<MemoryMembers> {
        &self.members
    }

    pub fn rows(&self) -> MutexGuard<'_, Vec<PolicyRecord>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publisher_keys(&self) -> MutexGuard<'_, Vec<PublisherKey>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn state_of(rows: &[PolicyRecord], account_id: AccountId, app: &AppName) -> AppState {
    let of_app: Vec<&PolicyRecord> = rows
        .iter()
        .filter(|r| r.account_id == account_id && &r.app_name == app)
        .collect();
    let active = of_app.iter().find(|r| r.active).map(|r| (*r).clone());
    let newest_published = of_app
        .iter()
        .filter(|r| r.stage == Stage::Published)
        .max_by_key(|r| r.version);
    AppState {
        revoked: active.is_none() && newest_published.is_some_and(|r| r.is_revoked()),
        active,
        draft: of_app
            .iter()
            .find(|r| r.stage == Stage::Draft)
            .map(|r| (*r).clone()),
        max_version: of_app.iter().map(|r| r.version).max().unwrap_or(0),
    }
}

/// Whether the app may take one of the account's `max_apps` (apps with a draft or an
/// active version).
fn may_take_an_app(
    rows: &[PolicyRecord],
    state: &AppState,
    record: &PolicyRecord,
    max_apps: u32,
) -> bool {
    if state.active.is_some() || state.draft.is_some() {
        return true;
    }
    let in_use: std::collections::BTreeSet<&AppName> = rows
        .iter()
        .filter(|r| {
            r.account_id == record.account_id
                && r.app_name != record.app_name
                && (r.active || r.stage == Stage::Draft)
        })
        .map(|r| &r.app_name)
        .collect();
    in_use.len() < usize::try_from(max_apps).unwrap_or(usize::MAX)
}

/// The newest published version of the record's app with the record's content, unless the
/// active version has that content too (republishing the active content is allowed).
fn earlier_with_content<'a>(
    rows: &'a [PolicyRecord],
    state: &AppState,
    record: &PolicyRecord,
) -> Option<&'a PolicyRecord> {
    if state
        .active
        .as_ref()
        .is_some_and(|active| active.content_digest == record.content_digest)
    {
        return None;
    }
    rows.iter()
        .filter(|r| {
            r.account_id == record.account_id
                && r.app_name == record.app_name
                && r.stage == Stage::Published
                && r.content_digest == record.content_digest
        })
        .max_by_key(|r| r.version)
}

fn publish_into(rows: &mut Vec<PolicyRecord>, publication: &Publication) -> PublishOutcome {
    let record = &publication.record;
    let state = state_of(rows, record.account_id, &record.app_name);
    if state.active.as_ref().map(|a| a.id) != publication.expected_active {
        return PublishOutcome::Conflict;
    }
    let version = match next_version(state.max_version, publication.requested_version) {
        Ok(version) => version,
        Err(outcome) => return outcome,
    };
    if publication.refuse_earlier_content
        && let Some(earlier) = earlier_with_content(rows, &state, record)
    {
        return PublishOutcome::IdenticalTo {
            id: earlier.id,
            version: earlier.version,
        };
    }
    if !may_take_an_app(rows, &state, record, publication.max_apps) {
        return PublishOutcome::AppLimit;
    }
    let mut stored = record.clone();
    stored.version = version;
    stored.active = true;
    rows.retain(|r| {
        !(r.account_id == record.account_id
            && r.app_name == record.app_name
            && r.stage == Stage::Draft)
    });
    for row in rows
        .iter_mut()
        .filter(|r| r.account_id == record.account_id && r.app_name == record.app_name)
    {
        row.active = false;
    }
    rows.push(stored.clone());
    PublishOutcome::Published(Box::new(stored))
}

#[async_trait]
impl PolicyRepo for MemoryPolicies {
    async fn app_state(
        &self,
        account_id: AccountId,
        app: &AppName,
    ) -> Result<AppState, StoreError> {
        Ok(state_of(&self.rows(), account_id, app))
    }

    async fn find_policy(
        &self,
        account_id: AccountId,
        id: PolicyId,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        Ok(self
            .rows()
            .iter()
            .find(|r| r.account_id == account_id && r.id == id)
            .cloned())
    }

    async fn versions(
        &self,
        account_id: AccountId,
        app: &AppName,
        page: &PageRequest,
    ) -> Result<Page<PolicyRecord>, StoreError> {
        let below = match page.after() {
            Some(cursor) => cursor
                .id_as::<i64>()
                .map_err(|_| StoreError::corrupt("version cursor"))?,
            None => i64::MAX,
        };
        let mut rows: Vec<PolicyRecord> = self
            .rows()
            .iter()
            .filter(|r| r.account_id == account_id && &r.app_name == app && r.version < below)
            .cloned()
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.version));
        rows.truncate(
            usize::try_from(page.limit())
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        Ok(page.page_from(rows, |r| Cursor::new(r.created_at, r.version.to_string())))
    }

    async fn list_policies(
        &self,
        account_id: AccountId,
        app: Option<&AppName>,
        page: &PageRequest,
    ) -> Result<Page<PolicyRecord>, StoreError> {
        let after = match page.after() {
            Some(cursor) => Some((
                cursor.at,
                cursor
                    .id_as::<PolicyId>()
                    .map_err(|_| StoreError::corrupt("cursor"))?,
            )),
            None => None,
        };
        let mut rows: Vec<PolicyRecord> = self
            .rows()
            .iter()
            .filter(|r| r.account_id == account_id)
            .filter(|r| app.is_none_or(|app| r.app_name == *app))
            .filter(|r| after.is_none_or(|position| (r.created_at, r.id) < position))
            .cloned()
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        rows.truncate(
            usize::try_from(page.limit())
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        Ok(page.page_from(rows, |r| Cursor::new(r.created_at, r.id.to_string())))
    }

    async fn apps(&self, account_id: AccountId) -> Result<Vec<AppName>, StoreError> {
        let mut apps: Vec<AppName> = self
            .rows()
            .iter()
            .filter(|r| r.account_id == account_id)
            .map(|r| r.app_name.clone())
            .collect();
        apps.sort();
        apps.dedup();
        Ok(apps)
    }

    async fn active_policies(
        &self,
        account_id: AccountId,
    ) -> Result<Vec<PolicyRecord>, StoreError> {
        Ok(self
            .rows()
            .iter()
            .filter(|r| r.account_id == account_id && r.active)
            .cloned()
            .collect())
    }

    async fn save_draft(
        &self,
        draft: &PolicyRecord,
        max_apps: u32,
        audit_of: AuditOf<'_>,
    ) -> Result<DraftOutcome, StoreError> {
        let mut rows = self.rows();
        let state = state_of(&rows, draft.account_id, &draft.app_name);
        if !may_take_an_app(&rows, &state, draft, max_apps) {
            return Ok(DraftOutcome::AppLimit);
        }
        rows.retain(|r| {
            !(r.account_id == draft.account_id
                && r.app_name == draft.app_name
                && r.stage == Stage::Draft)
        });
        let mut stored = draft.clone();
        stored.version = next_version(state.max_version, None)
            .map_err(|_| StoreError::corrupt("no version left for the app"))?;
        stored.active = false;
        rows.push(stored.clone());
        self.audit.append(audit_of(&stored));
        Ok(DraftOutcome::Saved(Box::new(stored)))
    }

    async fn publish(
        &self,
        publication: &Publication,
        audit_of: AuditOf<'_>,
    ) -> Result<PublishOutcome, StoreError> {
        let mut rows = self.rows();
        let outcome = publish_into(&mut rows, publication);
        if let PublishOutcome::Published(stored) = &outcome {
            self.audit.append(audit_of(stored));
        }
        Ok(outcome)
    }

    async fn revoke_app(
        &self,
        account_id: AccountId,
        app: &AppName,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let mut rows = self.rows();
        let mut active = 0;
        for row in rows.iter_mut().filter(|r| {
            r.account_id == account_id && &r.app_name == app && r.stage == Stage::Published
        }) {
            if row.active {
                active = u64::saturating_add(active, 1);
            }
            row.active = false;
            row.revoked_at.get_or_insert(at);
        }
        if active > 0 {
            self.audit.append(audit.clone());
        }
        Ok(active)
    }

    async fn set_description(
        &self,
        account_id: AccountId,
        id: PolicyId,
        description: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let mut rows = self.rows();
        let Some(row) = rows
            .iter_mut()
            .find(|r| r.account_id == account_id && r.id == id)
        else {
            return Ok(None);
        };
        row.description = description.map(str::to_owned);
        self.audit.append(audit.clone());
        Ok(Some(row.clone()))
    }

    async fn rotate_signing_key(
        &self,
        rotation: &KeyRotation,
        audit: &AuditEntry,
    ) -> Result<RotationOutcome, StoreError> {
        let mut rows = self.rows();
        let mut keys = self.signing.lock();
        let algorithm = rotation.new_key.algorithm();
        let rotated = |k: &d2_jwks::SigningKey| {
            k.account_id == rotation.account_id && k.algorithm() == algorithm && k.is_active()
        };
        let active_kid = keys.iter().find(|k| rotated(k)).map(|k| k.kid.clone());
        if active_kid != rotation.expected_active_kid {
            return Ok(RotationOutcome::Conflict);
        }
        let mut scratch = rows.clone();
        let mut stored = Vec::new();
        for (record, replaces) in &rotation.bundles {
            let publication = Publication {
                record: record.clone(),
                expected_active: Some(*replaces),
                requested_version: None,
                max_apps: u32::MAX,
                refuse_earlier_content: false,
            };
            match publish_into(&mut scratch, &publication) {
                PublishOutcome::Published(record) => stored.push(*record),
                _ => return Ok(RotationOutcome::Conflict),
            }
        }
        *rows = scratch;
        for key in keys.iter_mut().filter(|k| rotated(k)) {
            key.retired_at = Some(rotation.at);
        }
        keys.push(rotation.new_key.clone());
        self.audit.append(audit.clone());
        Ok(RotationOutcome::Rotated(stored))
    }
}

#[async_trait]
impl PublisherKeyRepo for MemoryPolicies {
    async fn register(
        &self,
        key: &PublisherKey,
        audit: &AuditEntry,
    ) -> Result<KeyRegistration, StoreError> {
        let mut keys = self.publisher_keys();
        if let Some(existing) = keys
            .iter()
            .find(|k| k.account_id == key.account_id && k.key_id == key.key_id)
        {
            return Ok(KeyRegistration::Exists(Box::new(existing.clone())));
        }
        keys.push(key.clone());
        self.audit.append(audit.clone());
        Ok(KeyRegistration::Created)
    }

    async fn find(
        &self,
        account_id: AccountId,
        key_id: &str,
    ) -> Result<Option<PublisherKey>, StoreError> {
        Ok(self
            .publisher_keys()
            .iter()
            .find(|k| k.account_id == account_id && k.key_id == key_id)
            .cloned())
    }

    async fn list(
        &self,
        account_id: AccountId,
        include_revoked: bool,
    ) -> Result<Vec<ListedKey>, StoreError> {
        let mut keys: Vec<PublisherKey> = self
            .publisher_keys()
            .iter()
            .filter(|k| k.account_id == account_id && (include_revoked || k.revoked_at.is_none()))
            .cloned()
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        Ok(keys
            .into_iter()
            .map(|key| ListedKey {
                uploaded_by_name: key.user_id.and_then(|id| self.members.label_of(id)),
                key,
            })
            .collect())
    }

    async fn approve(
        &self,
        account_id: AccountId,
        key_id: &str,
        approval: &KeyApproval,
        audit: &AuditEntry,
    ) -> Result<ApprovalOutcome, StoreError> {
        let mut keys = self.publisher_keys();
        let Some(key) = keys
            .iter_mut()
            .find(|k| k.account_id == account_id && k.key_id == key_id)
        else {
            return Ok(ApprovalOutcome::NotFound);
        };
        if !key.pending || key.revoked_at.is_some() {
            return Ok(ApprovalOutcome::NotPending(Box::new(key.clone())));
        }
        key.pending = false;
        key.approval = Some(approval.clone());
        self.audit.append(audit.clone());
        Ok(ApprovalOutcome::Approved(Box::new(key.clone())))
    }

    async fn revoke(
        &self,
        account_id: AccountId,
        key_id: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut keys = self.publisher_keys();
        let Some(key) = keys
            .iter_mut()
            .find(|k| k.account_id == account_id && k.key_id == key_id)
        else {
            return Ok(false);
        };
        if key.revoked_at.is_none() {
            key.revoked_at = Some(at);
            self.audit.append(audit.clone());
        }
        Ok(true)
    }
}

/// Delegates to the signing keys it shares with the rotation, so one value stands for
/// every port (as a database adapter does).
#[async_trait]
impl d2_jwks::SigningKeyRepo for MemoryPolicies {
    async fn keys(
        &self,
        account_id: AccountId,
        algorithm: d2_jwks::KeyAlgorithm,
    ) -> Result<Vec<d2_jwks::SigningKey>, StoreError> {
        self.signing.keys(account_id, algorithm).await
    }

    async fn insert_first(
        &self,
        key: &d2_jwks::SigningKey,
        audit: &AuditEntry,
    ) -> Result<d2_jwks::FirstKey, StoreError> {
        self.signing.insert_first(key, audit).await
    }

    async fn replace_active(
        &self,
        new_key: &d2_jwks::SigningKey,
        expected_active_kid: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        self.signing
            .replace_active(new_key, expected_active_kid, at, audit)
            .await
    }

    async fn to_reseal(
        &self,
        current_aes_key_id: &str,
        limit: u32,
    ) -> Result<Vec<d2_jwks::SigningKey>, StoreError> {
        self.signing.to_reseal(current_aes_key_id, limit).await
    }

    async fn count_to_reseal(&self, current_aes_key_id: &str) -> Result<u64, StoreError> {
        self.signing.count_to_reseal(current_aes_key_id).await
    }

    async fn reseal(
        &self,
        kid: &str,
        expected: &d2_jwks::Sealed,
        replacement: &d2_jwks::Sealed,
    ) -> Result<bool, StoreError> {
        self.signing.reseal(kid, expected, replacement).await
    }

    async fn prune_retired(&self, retired_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.signing.prune_retired(retired_before).await
    }

    async fn accounts_with_keys(
        &self,
        algorithm: d2_jwks::KeyAlgorithm,
    ) -> Result<Vec<AccountId>, StoreError> {
        self.signing.accounts_with_keys(algorithm).await
    }
}

// People too, so the contract suites can name who registered a key.
d2_members::delegate_member_repo!(MemoryPolicies, members);
