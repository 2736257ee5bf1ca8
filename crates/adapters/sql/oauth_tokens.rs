//! Tokens the authorization server issued to agents (`d2_oauth::OAuthTokenRepo`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_audit::{AuditAction, AuditEntry};
use d2_kernel::{AccountId, Change, Page, PageRequest, SecretDigest, StoreError};
use d2_oauth::{
    AgentCounts, AgentId, AgentState, Issuance, OAuthTokenId, OAuthTokenRepo, PrincipalId,
    RefreshAuditOf, RefreshIssuance, RefreshOutcome, RefreshRefusal, RevokeAuditOf, RevokeScope,
    TokenCounts, TokenFilter, TokenKind, TokenRecord, revocation_reasons,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::write_audit;
use crate::changes::announce;
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::position::{Side, beyond};
use crate::schema::{agents, audit_logs, oauth_tokens};

fn id_of(id: OAuthTokenId) -> Id {
    Id(*id.as_uuid())
}

/// Levels of descendants a revocation follows; lineage is never this deep.
const MAX_DEPTH: usize = 64;

#[async_trait]
impl OAuthTokenRepo for crate::Store {
    async fn issue(&self, issuance: &Issuance, audit: &AuditEntry) -> Result<bool, StoreError> {
        let rows = issuance
            .records()
            .map(TokenRow::from_domain)
            .collect::<Result<Vec<_>, _>>()?;
        self.issue_in_group(rows, audit.clone()).await
    }

    async fn refresh(
        &self,
        presented: &SecretDigest,
        client: AgentId,
        now: DateTime<Utc>,
        replay_since: DateTime<Utc>,
        next: &RefreshIssuance,
        audit_of: RefreshAuditOf<'_>,
    ) -> Result<RefreshOutcome, StoreError> {
        let rows = next
            .issuance
            .records()
            .map(TokenRow::from_domain)
            .collect::<Result<Vec<_>, _>>()?;
        let mut conn = self.writer().await?;
        let outcome = write_transaction!(conn, async |conn| {
            // Locked: of concurrent refreshes with one token, the first spends it and the
            // others find it spent.
            let row: Option<TokenRow> = locked!(
                oauth_tokens::table
                    .filter(oauth_tokens::digest.eq(presented.as_bytes().as_slice()))
                    .filter(oauth_tokens::kind.eq(TokenKind::Refresh.as_str()))
            )
            .select(TokenRow::as_select())
            .first(conn)
            .await
            .optional()?;
            let Some(row) = row else {
                return Ok::<_, TxError>(RefreshOutcome::Refused(RefreshRefusal::Unknown));
            };
            let (spent_at, sealed) = (row.spent_at, row.sealed_answer.clone());
            let spent = row.into_domain()?;
            if spent.agent_id != client {
                return Ok(RefreshOutcome::Refused(RefreshRefusal::OtherClient));
            }
            if spent.revoked_at.is_some() {
                return Ok(RefreshOutcome::Refused(RefreshRefusal::Revoked));
            }
            if now >= spent.expires_at {
                return Ok(RefreshOutcome::Refused(RefreshRefusal::Expired));
            }
            match (spent_at, sealed) {
                (Some(at), Some(sealed)) if at >= replay_since => {
                    Ok(RefreshOutcome::Replayed(sealed))
                }
                (Some(_), _) => {
                    let revoked = revoke_reached(
                        conn,
                        spent.account_id,
                        RevokeScope::Family(spent.family_id),
                        revocation_reasons::REUSE,
                        now,
                    )
                    .await?;
                    let outcome = RefreshOutcome::Reused(revoked);
                    write_audit(conn, &audit_of(&outcome, &spent)).await?;
                    announce(conn, Change::OAuth(spent.account_id)).await?;
                    Ok(outcome)
                }
                (None, _) => {
                    diesel::update(oauth_tokens::table.find(id_of(spent.id)))
                        .set((
                            oauth_tokens::spent_at.eq(Some(now)),
                            oauth_tokens::sealed_answer.eq(Some(next.sealed_answer.clone())),
                        ))
                        .execute(conn)
                        .await?;
                    insert_rows!(conn, oauth_tokens::table, rows);
                    let outcome = RefreshOutcome::Rotated;
                    write_audit(conn, &audit_of(&outcome, &spent)).await?;
                    Ok(outcome)
                }
            }
        })
        .await?;
        Ok(outcome)
    }

    async fn token(
        &self,
        account: AccountId,
        id: OAuthTokenId,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<TokenRow> = oauth_tokens::table
            .filter(oauth_tokens::account_id.eq(Id::from(account)))
            .filter(oauth_tokens::id.eq(id_of(id)))
            .select(TokenRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(TokenRow::into_domain).transpose()
    }

    async fn refresh_token(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<TokenRow> = oauth_tokens::table
            .filter(oauth_tokens::digest.eq(digest.as_bytes().as_slice()))
            .filter(oauth_tokens::kind.eq(TokenKind::Refresh.as_str()))
            .select(TokenRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(TokenRow::into_domain).transpose()
    }

    async fn revoke(
        &self,
        account: AccountId,
        scope: RevokeScope,
        reason: &str,
        now: DateTime<Utc>,
        audit_of: RevokeAuditOf<'_>,
    ) -> Result<Vec<OAuthTokenId>, StoreError> {
        let mut conn = self.writer().await?;
        let revoked = write_transaction!(conn, async |conn| {
            let revoked = revoke_reached(conn, account, scope, reason, now).await?;
            if !revoked.is_empty() {
                write_audit(conn, &audit_of(&revoked)).await?;
                announce(conn, Change::OAuth(account)).await?;
            }
            Ok::<_, TxError>(revoked)
        })
        .await?;
        Ok(revoked)
    }

    async fn tokens(
        &self,
        account: AccountId,
        filter: &TokenFilter,
        page: &PageRequest,
    ) -> Result<Page<TokenRecord>, StoreError> {
        let mut query = oauth_tokens::table
            .filter(oauth_tokens::account_id.eq(Id::from(account)))
            .order((oauth_tokens::issued_at.desc(), oauth_tokens::id.desc()))
            .limit(i64::from(page.limit()) + 1)
            .select(TokenRow::as_select())
            .into_boxed();
        if let Some(agent) = filter.agent_id {
            query = query.filter(oauth_tokens::agent_id.eq(Id(*agent.as_uuid())));
        }
        if let Some(kind) = filter.kind {
            query = query.filter(oauth_tokens::kind.eq(kind.as_str()));
        }
        if let Some(task) = &filter.task_id {
            query = query.filter(oauth_tokens::task_id.eq(task.clone()));
        }
        if let Some(now) = filter.active_at {
            query = query
                .filter(oauth_tokens::revoked_at.is_null())
                .filter(oauth_tokens::expires_at.gt(now));
        }
        if let Some(cursor) = page.after() {
            let id: OAuthTokenId = cursor
                .id_as()
                .map_err(|_| StoreError::corrupt("token cursor"))?;
            query = query.filter(beyond::<_, crate::types::Uuid, _>(
                "oauth_tokens.issued_at, oauth_tokens.id",
                Side::Before,
                cursor.at,
                id_of(id),
            ));
        }
        let mut conn = self.conn().await?;
        let rows: Vec<TokenRow> = query.load(&mut conn).await.map_err(from_diesel)?;
        let tokens = rows
            .into_iter()
            .map(TokenRow::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.page_from(tokens, |t| {
            d2_kernel::Cursor::new(t.issued_at, t.id.to_string())
        }))
    }

    async fn revoked_access_tokens(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<(OAuthTokenId, DateTime<Utc>)>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(Id, DateTime<Utc>)> = oauth_tokens::table
            .filter(oauth_tokens::account_id.eq(Id::from(account)))
            .filter(oauth_tokens::revoked_at.is_not_null())
            .filter(oauth_tokens::expires_at.gt(now))
            .filter(oauth_tokens::kind.eq(TokenKind::Access.as_str()))
            .order((oauth_tokens::expires_at.asc(), oauth_tokens::id.asc()))
            .select((oauth_tokens::id, oauth_tokens::expires_at))
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(rows
            .into_iter()
            .map(|(id, at)| (OAuthTokenId::from_uuid(id.0), at))
            .collect())
    }

    async fn audit_refusal(&self, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut conn = self.writer().await?;
        write_transaction!(conn, async |conn| {
            write_audit(conn, audit).await?;
            Ok::<_, TxError>(())
        })
        .await?;
        Ok(())
    }

    async fn counts(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
        since: &[DateTime<Utc>],
    ) -> Result<TokenCounts, StoreError> {
        let mut conn = self.conn().await?;
        let mine = || oauth_tokens::table.filter(oauth_tokens::account_id.eq(Id::from(account)));
        let active = |kind: TokenKind| {
            mine()
                .filter(oauth_tokens::kind.eq(kind.as_str()))
                .filter(oauth_tokens::revoked_at.is_null())
                .filter(oauth_tokens::expires_at.gt(now))
                .count()
        };
        let count = |n: i64| u64::try_from(n).map_err(|_| corrupt("token count"));
        let active_access: i64 = active(TokenKind::Access)
            .get_result(&mut conn)
            .await
            .map_err(from_diesel)?;
        let active_refresh: i64 = active(TokenKind::Refresh)
            .get_result(&mut conn)
            .await
            .map_err(from_diesel)?;
        let mut issued_since = Vec::with_capacity(since.len());
        for start in since {
            let issued: i64 = mine()
                .filter(oauth_tokens::kind.eq(TokenKind::Access.as_str()))
                .filter(oauth_tokens::issued_at.ge(*start))
                .count()
                .get_result(&mut conn)
                .await
                .map_err(from_diesel)?;
            issued_since.push(count(issued)?);
        }
        let mut denied_since = Vec::with_capacity(since.len());
        for start in since {
            let denied: i64 = audit_logs::table
                .filter(audit_logs::account_id.eq(Id::from(account)))
                .filter(audit_logs::action.eq(AuditAction::OAuthTokenDeny.as_str()))
                .filter(audit_logs::created_at.ge(*start))
                .count()
                .get_result(&mut conn)
                .await
                .map_err(from_diesel)?;
            denied_since.push(count(denied)?);
        }
        let states: Vec<(String, i64)> = agents::table
            .filter(agents::account_id.eq(Id::from(account)))
            .group_by(agents::state)
            .select((agents::state, diesel::dsl::count_star()))
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        let mut agent_counts = AgentCounts::default();
        for (state, n) in states {
            let state = state
                .parse::<AgentState>()
                .map_err(|_| corrupt("agent state"))?;
            agent_counts.add(state, count(n)?);
        }
        Ok(TokenCounts {
            active_access: count(active_access)?,
            active_refresh: count(active_refresh)?,
            issued_since,
            denied_since,
            agents: agent_counts,
        })
    }

    async fn prune(&self, expired_before: DateTime<Utc>, families: u32) -> Result<u64, StoreError> {
        let mut conn = self.writer().await?;
        // The families with a token expired before the cut and none expiring after it.
        let later = diesel::alias!(oauth_tokens as later);
        let living = later
            .filter(later.field(oauth_tokens::expires_at).ge(expired_before))
            .select(later.field(oauth_tokens::family_id));
        let done: Vec<Id> = oauth_tokens::table
            .filter(oauth_tokens::expires_at.lt(expired_before))
            .filter(diesel::dsl::not(oauth_tokens::family_id.eq_any(living)))
            .select(oauth_tokens::family_id)
            .distinct()
            .limit(i64::from(families))
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        if done.is_empty() {
            return Ok(0);
        }
        let deleted =
            diesel::delete(oauth_tokens::table.filter(oauth_tokens::family_id.eq_any(&done)))
                .execute(&mut conn)
                .await
                .map_err(from_diesel)?;
        u64::try_from(deleted).map_err(|_| corrupt("deleted token count"))
    }
}

/// The token `root` of `account` and every token derived from it, to any depth.
/// Revokes, in the caller's transaction, the tokens of `account` that `scope` reaches and
/// still work at `now`, with every token derived from them to any depth; returns them,
/// sorted.
pub(crate) async fn revoke_reached(
    conn: &mut crate::Conn,
    account: AccountId,
    scope: RevokeScope,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<OAuthTokenId>, TxError> {
    let of_account = oauth_tokens::table
        .filter(oauth_tokens::account_id.eq(Id::from(account)))
        .select(oauth_tokens::id)
        .into_boxed();
    let reached_directly = match scope {
        RevokeScope::WithDescendants(root) => of_account.filter(oauth_tokens::id.eq(id_of(root))),
        RevokeScope::Family(family) => of_account.filter(oauth_tokens::family_id.eq(id_of(family))),
        RevokeScope::Delegation(grant) => {
            of_account.filter(oauth_tokens::delegation_id.eq(Id(*grant.as_uuid())))
        }
        RevokeScope::Principal(principal) => {
            of_account.filter(oauth_tokens::principal_id.eq(Id(*principal.as_uuid())))
        }
    };
    let roots: Vec<Id> = reached_directly.load(conn).await?;
    let reached = with_descendants(conn, account, roots).await?;
    revoke_ids(conn, account, &reached, reason, now).await
}

/// `roots` and every token derived from them (refreshed or exchanged), to any depth.
async fn with_descendants(
    conn: &mut crate::Conn,
    account: AccountId,
    roots: Vec<Id>,
) -> QueryResult<Vec<Id>> {
    let mut reached: std::collections::BTreeSet<Id> = roots.iter().copied().collect();
    let mut frontier = roots;
    for _ in 0..MAX_DEPTH {
        if frontier.is_empty() {
            break;
        }
        let children: Vec<Id> = oauth_tokens::table
            .filter(oauth_tokens::account_id.eq(Id::from(account)))
            .filter(oauth_tokens::parent_id.eq_any(frontier))
            .select(oauth_tokens::id)
            .load(conn)
            .await?;
        frontier = children
            .into_iter()
            .filter(|id| reached.insert(*id))
            .collect();
    }
    Ok(reached.into_iter().collect())
}

/// Revokes those of `ids` that still work at `now`; returns them, sorted.
async fn revoke_ids(
    conn: &mut crate::Conn,
    account: AccountId,
    ids: &[Id],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<OAuthTokenId>, TxError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let working = oauth_tokens::table
        .filter(oauth_tokens::account_id.eq(Id::from(account)))
        .filter(oauth_tokens::id.eq_any(ids.to_vec()))
        .filter(oauth_tokens::revoked_at.is_null())
        .filter(oauth_tokens::expires_at.gt(now));
    let mut revoked: Vec<Id> = working.select(oauth_tokens::id).load(conn).await?;
    diesel::update(
        oauth_tokens::table
            .filter(oauth_tokens::account_id.eq(Id::from(account)))
            .filter(oauth_tokens::id.eq_any(revoked.clone())),
    )
    .set((
        oauth_tokens::revoked_at.eq(Some(now)),
        oauth_tokens::revoked_reason.eq(Some(reason.to_owned())),
    ))
    .execute(conn)
    .await?;
    revoked.sort_by_key(|id| id.0);
    Ok(revoked
        .into_iter()
        .map(|id| OAuthTokenId::from_uuid(id.0))
        .collect())
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = oauth_tokens, check_for_backend(crate::Db))]
pub(crate) struct TokenRow {
    pub id: Id,
    pub account_id: Id,
    pub agent_id: Id,
    pub kind: String,
    pub family_id: Id,
    pub parent_id: Option<Id>,
    pub subject: String,
    pub scopes: Value,
    pub audience: Value,
    pub task_id: String,
    pub parent_task_id: Option<String>,
    pub grant_type: String,
    pub digest: Vec<u8>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
    pub spent_at: Option<DateTime<Utc>>,
    pub sealed_answer: Option<Vec<u8>>,
    pub principal_id: Option<Id>,
    pub delegation_id: Option<Id>,
    pub chain: Value,
    pub may_act: Option<Id>,
    pub dpop_jkt: Option<String>,
}

impl TokenRow {
    pub(crate) fn from_domain(record: &TokenRecord) -> Result<Self, StoreError> {
        Ok(Self {
            id: id_of(record.id),
            account_id: Id::from(record.account_id),
            agent_id: Id(*record.agent_id.as_uuid()),
            kind: record.kind.as_str().to_owned(),
            family_id: id_of(record.family_id),
            parent_id: record.parent_id.map(id_of),
            subject: record.subject.clone(),
            scopes: Value::from(record.scopes.clone()),
            audience: Value::from(record.audience.clone()),
            task_id: record.task_id.clone(),
            parent_task_id: record.parent_task_id.clone(),
            grant_type: record.grant_type.as_str().to_owned(),
            digest: record.digest.as_bytes().to_vec(),
            issued_at: record.issued_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            revoked_reason: record.revoked_reason.clone(),
            spent_at: None,
            sealed_answer: None,
            principal_id: record.principal_id.map(|id| Id(*id.as_uuid())),
            delegation_id: record.delegation_id().map(|id| Id(*id.as_uuid())),
            chain: serde_json::to_value(&record.chain).map_err(|_| corrupt("token chain"))?,
            may_act: record.may_act.map(|id| Id(*id.as_uuid())),
            dpop_jkt: record.dpop_jkt.clone(),
        })
    }

    fn into_domain(self) -> Result<TokenRecord, StoreError> {
        let list = |value: Value| {
            serde_json::from_value::<Vec<String>>(value).map_err(|_| corrupt("token list"))
        };
        Ok(TokenRecord {
            id: OAuthTokenId::from_uuid(self.id.0),
            account_id: AccountId::from_uuid(self.account_id.0),
            agent_id: AgentId::from_uuid(self.agent_id.0),
            kind: self.kind.parse().map_err(|_| corrupt("token kind"))?,
            family_id: OAuthTokenId::from_uuid(self.family_id.0),
            parent_id: self.parent_id.map(|id| OAuthTokenId::from_uuid(id.0)),
            subject: self.subject,
            scopes: list(self.scopes)?,
            audience: list(self.audience)?,
            task_id: self.task_id,
            parent_task_id: self.parent_task_id,
            grant_type: self.grant_type.parse().map_err(|_| corrupt("grant type"))?,
            digest: SecretDigest::from_bytes(&self.digest)
                .ok_or_else(|| corrupt("token digest"))?,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            revoked_reason: self.revoked_reason,
            principal_id: self.principal_id.map(|id| PrincipalId::from_uuid(id.0)),
            chain: serde_json::from_value(self.chain).map_err(|_| corrupt("token chain"))?,
            may_act: self.may_act.map(|id| AgentId::from_uuid(id.0)),
            dpop_jkt: self.dpop_jkt,
        })
    }
}
