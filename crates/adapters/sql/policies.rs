use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::AuditEntry;
use d2_kernel::{AccountId, AppName, Cursor, Page, PageRequest, PolicyId, StoreError};
use d2_policy::{
    AppState, ApprovalOutcome, AuditOf, DraftOutcome, KeyApproval, KeyRegistration, KeyRotation,
    ListedKey, PolicyRecord, PolicyRepo, Publication, PublishOutcome, PublisherKey,
    PublisherKeyRepo, RotationOutcome, Stage, content_digest, next_version,
};
use diesel::dsl::max;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::audit::write_audit;
use crate::changes::{announce, lock};
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::jwks::{keys_lock, replace_active_key};
use crate::members::PersonNames;
use crate::position::{Side, beyond};
use crate::schema::{policies, publisher_keys, users};
use d2_kernel::Change;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn app_lock(account_id: AccountId, app: &AppName) -> String {
    format!("app:{account_id}:{app}")
}

/// Whether the app may take one of the account's `max_apps`: an app with a draft or an
/// active version holds one already; another needs a free one. Counted under the
/// account's apps lock, so two new apps racing cannot both take the last.
async fn may_take_an_app(
    conn: &mut crate::Conn,
    state: &AppState,
    account_id: AccountId,
    app: &AppName,
    max_apps: u32,
) -> Result<bool, TxError> {
    if state.active.is_some() || state.draft.is_some() {
        return Ok(true);
    }
    lock(conn, &format!("apps:{account_id}")).await?;
    let in_use: Vec<String> = policies::table
        .filter(policies::account_id.eq(Id::from(account_id)))
        .filter(policies::app_name.ne(app.as_str()))
        .filter(
            policies::active
                .eq(true)
                .or(policies::stage.eq(Stage::Draft.as_str())),
        )
        .select(policies::app_name)
        .distinct()
        .load(conn)
        .await?;
    Ok(in_use.len() < usize::try_from(max_apps).unwrap_or(usize::MAX))
}

fn of_app(account_id: AccountId, app: &AppName) -> policies::BoxedQuery<'static, crate::Db> {
    policies::table
        .filter(policies::account_id.eq(Id::from(account_id)))
        .filter(policies::app_name.eq(app.as_str().to_owned()))
        .into_boxed()
}

async fn delete_draft(
    conn: &mut crate::Conn,
    account_id: AccountId,
    app: &AppName,
) -> QueryResult<usize> {
    diesel::delete(
        policies::table
            .filter(policies::account_id.eq(Id::from(account_id)))
            .filter(policies::app_name.eq(app.as_str()))
            .filter(policies::stage.eq(Stage::Draft.as_str())),
    )
    .execute(conn)
    .await
}

async fn load_state(
    conn: &mut crate::Conn,
    account_id: AccountId,
    app: &AppName,
) -> Result<AppState, TxError> {
    let active = of_app(account_id, app)
        .filter(policies::active.eq(true))
        .select(PolicyRow::as_select())
        .first(conn)
        .await
        .optional()?;
    let draft = of_app(account_id, app)
        .filter(policies::stage.eq(Stage::Draft.as_str()))
        .select(PolicyRow::as_select())
        .first(conn)
        .await
        .optional()?;
    let max_version: Option<i64> = of_app(account_id, app)
        .select(max(policies::version))
        .first(conn)
        .await?;
    let newest_published_revoked: Option<bool> = of_app(account_id, app)
        .filter(policies::stage.eq(Stage::Published.as_str()))
        .order(policies::version.desc())
        .select(policies::revoked_at.is_not_null())
        .first(conn)
        .await
        .optional()?;
    Ok(AppState {
        revoked: active.is_none() && newest_published_revoked == Some(true),
        active: active.map(PolicyRow::into_domain).transpose()?,
        draft: draft.map(PolicyRow::into_domain).transpose()?,
        max_version: max_version.unwrap_or(0),
    })
}

/// Stores the content digest of the app's rows written without one (before the column
/// existed, or by an older release during a rolling upgrade), so that they can be found
/// by digest. Usually there are none; a row is filled in once.
async fn fill_content_digests(
    conn: &mut crate::Conn,
    account_id: AccountId,
    app: &AppName,
) -> Result<(), TxError> {
    let missing: Vec<(Id, serde_json::Value)> = of_app(account_id, app)
        .filter(policies::content_digest.is_null())
        .select((policies::id, policies::document))
        .load(conn)
        .await?;
    for (id, document) in missing {
        diesel::update(policies::table.find(id))
            .set(policies::content_digest.eq(content_digest(&document)))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The newest published version of the record's app with the record's content, unless the
/// active version has that content too (republishing the active content is allowed).
async fn earlier_with_content(
    conn: &mut crate::Conn,
    state: &AppState,
    record: &PolicyRecord,
) -> Result<Option<(PolicyId, i64)>, TxError> {
    if state
        .active
        .as_ref()
        .is_some_and(|active| active.content_digest == record.content_digest)
    {
        return Ok(None);
    }
    fill_content_digests(conn, record.account_id, &record.app_name).await?;
    let earlier: Option<(Id, i64)> = of_app(record.account_id, &record.app_name)
        .filter(policies::stage.eq(Stage::Published.as_str()))
        .filter(policies::content_digest.eq(record.content_digest.clone()))
        .order(policies::version.desc())
        .select((policies::id, policies::version))
        .first(conn)
        .await
        .optional()?;
    Ok(earlier.map(|(id, version)| (id.into(), version)))
}

/// Inserts `record` as the app's new active version, inside the caller's transaction
/// (which holds the app's lock).
async fn insert_active(
    conn: &mut crate::Conn,
    publication: &Publication,
) -> Result<PublishOutcome, TxError> {
    let record = &publication.record;
    let (account_id, app) = (record.account_id, &record.app_name);
    let state = load_state(conn, account_id, app).await?;
    if state.active.as_ref().map(|a| a.id) != publication.expected_active {
        return Ok(PublishOutcome::Conflict);
    }
    let version = match next_version(state.max_version, publication.requested_version) {
        Ok(version) => version,
        Err(outcome) => return Ok(outcome),
    };
    if publication.refuse_earlier_content
        && let Some((id, version)) = earlier_with_content(conn, &state, record).await?
    {
        return Ok(PublishOutcome::IdenticalTo { id, version });
    }
    if !may_take_an_app(conn, &state, account_id, app, publication.max_apps).await? {
        return Ok(PublishOutcome::AppLimit);
    }
    let mut stored = record.clone();
    stored.version = version;
    stored.active = true;
    delete_draft(conn, account_id, app).await?;
    diesel::update(
        policies::table
            .filter(policies::account_id.eq(Id::from(account_id)))
            .filter(policies::app_name.eq(app.as_str()))
            .filter(policies::active.eq(true)),
    )
    .set(policies::active.eq(false))
    .execute(conn)
    .await?;
    diesel::insert_into(policies::table)
        .values(PolicyRow::from_domain(&stored))
        .execute(conn)
        .await?;
    announce(conn, Change::App(account_id, app.clone())).await?;
    Ok(PublishOutcome::Published(Box::new(stored)))
}

#[async_trait]
impl PolicyRepo for crate::Store {
    async fn app_state(
        &self,
        account_id: AccountId,
        app: &AppName,
    ) -> Result<AppState, StoreError> {
        let mut conn = self.conn().await?;
        Ok(load_state(&mut conn, account_id, app).await?)
    }

    async fn find_policy(
        &self,
        account_id: AccountId,
        id: PolicyId,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let row = policies::table
            .filter(policies::account_id.eq(Id::from(account_id)))
            .filter(policies::id.eq(Id::from(id)))
            .select(PolicyRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(PolicyRow::into_domain).transpose()
    }

    async fn versions(
        &self,
        account_id: AccountId,
        app: &AppName,
        page: &PageRequest,
    ) -> Result<Page<PolicyRecord>, StoreError> {
        let mut query = of_app(account_id, app)
            .order(policies::version.desc())
            .limit(i64::from(page.limit()) + 1)
            .select(PolicyRow::as_select());
        if let Some(cursor) = page.after() {
            let below: i64 = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("version cursor"))?;
            query = query.filter(policies::version.lt(below));
        }
        let mut conn = self.conn().await?;
        let rows = query.load(&mut conn).await.map_err(from_diesel)?;
        let records = rows
            .into_iter()
            .map(PolicyRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(records, |r| {
            Cursor::new(r.created_at, r.version.to_string())
        }))
    }

    async fn list_policies(
        &self,
        account_id: AccountId,
        app: Option<&AppName>,
        page: &PageRequest,
    ) -> Result<Page<PolicyRecord>, StoreError> {
        let mut query = policies::table
            .filter(policies::account_id.eq(Id::from(account_id)))
            .order((policies::created_at.desc(), policies::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .select(PolicyRow::as_select())
            .into_boxed();
        if let Some(app) = app {
            query = query.filter(policies::app_name.eq(app.as_str().to_owned()));
        }
        if let Some(cursor) = page.after() {
            let id: PolicyId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("policy cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "created_at, id",
                Side::Before,
                cursor.at,
                Id::from(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows = query.load(&mut conn).await.map_err(from_diesel)?;
        let records = rows
            .into_iter()
            .map(PolicyRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(records, |r| Cursor::new(r.created_at, r.id.to_string())))
    }

    async fn apps(&self, account_id: AccountId) -> Result<Vec<AppName>, StoreError> {
        let mut conn = self.conn().await?;
        let names: Vec<String> = policies::table
            .filter(policies::account_id.eq(Id::from(account_id)))
            .select(policies::app_name)
            .distinct()
            .order(policies::app_name.asc())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(names.iter().map(|n| AppName::normalise(n)).collect())
    }

    async fn active_policies(
        &self,
        account_id: AccountId,
    ) -> Result<Vec<PolicyRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let rows = policies::table
            .filter(policies::account_id.eq(Id::from(account_id)))
            .filter(policies::active.eq(true))
            .order(policies::app_name.asc())
            .select(PolicyRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        rows.into_iter().map(PolicyRow::into_domain).collect()
    }

    async fn save_draft(
        &self,
        draft: &PolicyRecord,
        max_apps: u32,
        audit_of: AuditOf<'_>,
    ) -> Result<DraftOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let (account_id, app) = (draft.account_id, &draft.app_name);
            lock(conn, &app_lock(account_id, app)).await?;
            let state = load_state(conn, account_id, app).await?;
            if !may_take_an_app(conn, &state, account_id, app, max_apps).await? {
                return Ok(DraftOutcome::AppLimit);
            }
            delete_draft(conn, account_id, app).await?;
            let mut stored = draft.clone();
            stored.version = next_version(state.max_version, None)
                .map_err(|_| TxError::Store(StoreError::corrupt("no version left for the app")))?;
            stored.active = false;
            diesel::insert_into(policies::table)
                .values(PolicyRow::from_domain(&stored))
                .execute(conn)
                .await?;
            write_audit(conn, &audit_of(&stored)).await?;
            announce(conn, Change::App(account_id, app.clone())).await?;
            Ok::<_, TxError>(DraftOutcome::Saved(Box::new(stored)))
        })
        .await?;
        Ok(outcome)
    }

    async fn publish(
        &self,
        publication: &Publication,
        audit_of: AuditOf<'_>,
    ) -> Result<PublishOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let record = &publication.record;
            lock(conn, &app_lock(record.account_id, &record.app_name)).await?;
            let outcome = insert_active(conn, publication).await?;
            if let PublishOutcome::Published(stored) = &outcome {
                write_audit(conn, &audit_of(stored)).await?;
            }
            Ok::<_, TxError>(outcome)
        })
        .await?;
        Ok(outcome)
    }

    async fn revoke_app(
        &self,
        account_id: AccountId,
        app: &AppName,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let mut conn = self.writer().await?;
        let revoked = write_transaction!(conn, async |conn| {
            lock(conn, &app_lock(account_id, app)).await?;
            let active: i64 = of_app(account_id, app)
                .filter(policies::active.eq(true))
                .count()
                .get_result(conn)
                .await?;
            if active == 0 {
                return Ok::<_, TxError>(0);
            }
            diesel::update(
                policies::table
                    .filter(policies::account_id.eq(Id::from(account_id)))
                    .filter(policies::app_name.eq(app.as_str()))
                    .filter(policies::stage.eq(Stage::Published.as_str())),
            )
            .set((
                policies::active.eq(false),
                policies::revoked_at.eq(diesel::dsl::sql::<
                    diesel::sql_types::Nullable<crate::types::Timestamptz>,
                >("coalesce(revoked_at, ")
                .bind::<crate::types::Timestamptz, _>(at)
                .sql(")")),
            ))
            .execute(conn)
            .await?;
            write_audit(conn, audit).await?;
            announce(conn, Change::App(account_id, app.clone())).await?;
            Ok(u64::try_from(active).unwrap_or_default())
        })
        .await?;
        Ok(revoked)
    }

    async fn set_description(
        &self,
        account_id: AccountId,
        id: PolicyId,
        description: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let mut conn = self.writer().await?;
        let updated = write_transaction!(conn, async |conn| {
            let row = diesel::update(
                policies::table
                    .filter(policies::account_id.eq(Id::from(account_id)))
                    .filter(policies::id.eq(Id::from(id))),
            )
            .set(policies::description.eq(description))
            .returning(PolicyRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
            let Some(row) = row else {
                return Ok::<_, TxError>(None);
            };
            let record = row.into_domain()?;
            write_audit(conn, audit).await?;
            announce(conn, Change::App(account_id, record.app_name.clone())).await?;
            Ok(Some(record))
        })
        .await?;
        Ok(updated)
    }

    async fn rotate_signing_key(
        &self,
        rotation: &KeyRotation,
        audit: &AuditEntry,
    ) -> Result<RotationOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let account_id = rotation.account_id;
            lock(conn, &keys_lock(account_id)).await?;
            let mut apps: Vec<&AppName> =
                rotation.bundles.iter().map(|(r, _)| &r.app_name).collect();
            apps.sort();
            for app in &apps {
                lock(conn, &app_lock(account_id, app)).await?;
            }
            // Only the keys of the new key's algorithm: an account's keys of the other
            // (access tokens signed with ES256) are not the bundles' to retire.
            let expected = rotation.expected_active_kid.as_deref();
            if !replace_active_key(conn, &rotation.new_key, expected, rotation.at).await? {
                return Ok::<_, TxError>(RotationOutcome::Conflict);
            }
            let mut stored = Vec::new();
            for (record, replaces) in &rotation.bundles {
                let publication = Publication {
                    record: record.clone(),
                    expected_active: Some(*replaces),
                    requested_version: None,
                    max_apps: u32::MAX,
                    refuse_earlier_content: false,
                };
                match insert_active(conn, &publication).await? {
                    PublishOutcome::Published(record) => stored.push(*record),
                    // Roll everything back: the service retries from fresh state.
                    _ => return Err(TxError::Retry),
                }
            }
            write_audit(conn, audit).await?;
            announce(conn, Change::Keys(account_id)).await?;
            Ok(RotationOutcome::Rotated(stored))
        })
        .await;
        match outcome {
            Ok(outcome) => Ok(outcome),
            Err(TxError::Retry) => Ok(RotationOutcome::Conflict),
            Err(error) => Err(error.into()),
        }
    }
}

#[async_trait]
impl PublisherKeyRepo for crate::Store {
    async fn register(
        &self,
        key: &PublisherKey,
        audit: &AuditEntry,
    ) -> Result<KeyRegistration, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let inserted = diesel::insert_into(publisher_keys::table)
                .values(PublisherKeyRow::from_domain(key))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if inserted == 1 {
                write_audit(conn, audit).await?;
                return Ok::<_, TxError>(KeyRegistration::Created);
            }
            let existing = publisher_keys::table
                .filter(publisher_keys::account_id.eq(Id::from(key.account_id)))
                .filter(publisher_keys::key_id.eq(&key.key_id))
                .select(PublisherKeyRow::as_select())
                .first(conn)
                .await?;
            Ok(KeyRegistration::Exists(Box::new(existing.into_domain()?)))
        })
        .await?;
        Ok(outcome)
    }

    async fn find(
        &self,
        account_id: AccountId,
        key_id: &str,
    ) -> Result<Option<PublisherKey>, StoreError> {
        let mut conn = self.conn().await?;
        let row = publisher_keys::table
            .filter(publisher_keys::account_id.eq(Id::from(account_id)))
            .filter(publisher_keys::key_id.eq(key_id))
            .select(PublisherKeyRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(PublisherKeyRow::into_domain).transpose()
    }

    async fn list(
        &self,
        account_id: AccountId,
        include_revoked: bool,
    ) -> Result<Vec<ListedKey>, StoreError> {
        // The person of each key read with it (keys have no foreign key to people).
        let mut query = publisher_keys::table
            .left_join(users::table.on(publisher_keys::user_id.eq(users::id.nullable())))
            .filter(publisher_keys::account_id.eq(Id::from(account_id)))
            .order(publisher_keys::created_at.desc())
            .select((
                PublisherKeyRow::as_select(),
                PersonNames::COLUMNS.nullable(),
            ))
            .into_boxed();
        if !include_revoked {
            query = query.filter(publisher_keys::revoked_at.is_null());
        }
        let mut conn = self.conn().await?;
        let rows: Vec<(PublisherKeyRow, Option<PersonNames>)> =
            query.load(&mut conn).await.map_err(from_diesel)?;
        rows.into_iter()
            .map(|(row, person)| {
                Ok(ListedKey {
                    key: row.into_domain()?,
                    uploaded_by_name: person.and_then(PersonNames::label),
                })
            })
            .collect()
    }

    async fn approve(
        &self,
        account_id: AccountId,
        key_id: &str,
        approval: &KeyApproval,
        audit: &AuditEntry,
    ) -> Result<ApprovalOutcome, StoreError> {
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            let approved: Option<PublisherKeyRow> = diesel::update(
                publisher_keys::table
                    .filter(publisher_keys::account_id.eq(Id::from(account_id)))
                    .filter(publisher_keys::key_id.eq(key_id))
                    .filter(publisher_keys::pending.eq(true))
                    .filter(publisher_keys::revoked_at.is_null()),
            )
            .set((
                publisher_keys::pending.eq(false),
                publisher_keys::approved_at.eq(approval.at),
                publisher_keys::approved_by.eq(&approval.by),
            ))
            .returning(PublisherKeyRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
            if let Some(row) = approved {
                write_audit(conn, audit).await?;
                return Ok::<_, TxError>(ApprovalOutcome::Approved(Box::new(row.into_domain()?)));
            }
            let existing = publisher_keys::table
                .filter(publisher_keys::account_id.eq(Id::from(account_id)))
                .filter(publisher_keys::key_id.eq(key_id))
                .select(PublisherKeyRow::as_select())
                .first(conn)
                .await
                .optional()?;
            Ok(match existing {
                Some(row) => ApprovalOutcome::NotPending(Box::new(row.into_domain()?)),
                None => ApprovalOutcome::NotFound,
            })
        })
        .await?;
        Ok(outcome)
    }

    async fn revoke(
        &self,
        account_id: AccountId,
        key_id: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer().await?;
        let found = write_transaction!(conn, async |conn| {
            let revoked_at: Option<Option<DateTime<Utc>>> = locked!(
                publisher_keys::table
                    .filter(publisher_keys::account_id.eq(Id::from(account_id)))
                    .filter(publisher_keys::key_id.eq(key_id))
                    .select(publisher_keys::revoked_at)
            )
            .first(conn)
            .await
            .optional()?;
            match revoked_at {
                None => Ok::<_, TxError>(false),
                Some(Some(_)) => Ok(true),
                Some(None) => {
                    diesel::update(
                        publisher_keys::table
                            .filter(publisher_keys::account_id.eq(Id::from(account_id)))
                            .filter(publisher_keys::key_id.eq(key_id)),
                    )
                    .set(publisher_keys::revoked_at.eq(at))
                    .execute(conn)
                    .await?;
                    write_audit(conn, audit).await?;
                    Ok(true)
                }
            }
        })
        .await?;
        Ok(found)
    }
}

// The rows of this module's tables, and their conversion to and from domain values.

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
