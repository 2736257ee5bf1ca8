//! Writing a group of issued tokens and their audit records, the PostgreSQL way.

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, Bytea, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;

use crate::audit::NewAuditRow;
use crate::error::TxError;
use crate::id::Id;
use crate::oauth_tokens::TokenRow;

/// Writes `tokens` and `audits` together, atomically, in one statement of 34 array
/// parameters (two `INSERT ... SELECT FROM unnest(...)`, the first in a `WITH`). Its text
/// is the same whatever the group's size, so each connection prepares it once and
/// PostgreSQL plans it once, where multi-row `VALUES` lists would be a new statement to
/// prepare, parse and plan (34 parameters a row) on every run. One statement is its own
/// transaction: one round trip and one commit for the whole group.
pub(crate) async fn insert(
    conn: &mut AsyncPgConnection,
    tokens: &[TokenRow],
    audits: &[NewAuditRow<'_>],
) -> Result<(), TxError> {
    let statement = InsertIssued {
        tokens: TokenColumns::of(tokens),
        audits: AuditColumns::of(audits),
    };
    statement.execute(conn).await?;
    Ok(())
}

/// The statement, built by hand rather than with `sql_query`, which diesel never caches.
struct InsertIssued<'a> {
    tokens: TokenColumns<'a>,
    audits: AuditColumns<'a>,
}

impl QueryId for InsertIssued<'_> {
    type QueryId = InsertIssued<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

/// `unnest($n, $n+1, ...)` over the values given, each bound as its SQL type.
macro_rules! unnest {
    ($out:ident, $first_type:ty => $first:expr $(, $type:ty => $value:expr)* $(,)?) => {{
        $out.push_sql("unnest(");
        $out.push_bind_param::<$first_type, _>($first)?;
        $(
            $out.push_sql(", ");
            $out.push_bind_param::<$type, _>($value)?;
        )*
        $out.push_sql(")");
    }};
}

impl QueryFragment<Pg> for InsertIssued<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (t, a) = (&self.tokens, &self.audits);
        out.push_sql(
            "WITH tokens AS (INSERT INTO oauth_tokens (id, account_id, agent_id, kind, \
             family_id, parent_id, subject, scopes, audience, task_id, parent_task_id, \
             grant_type, digest, issued_at, expires_at, revoked_at, revoked_reason, spent_at, \
             sealed_answer, principal_id, delegation_id, chain, may_act, dpop_jkt) \
             SELECT * FROM ",
        );
        unnest!(out,
            Array<SqlUuid> => &t.id,
            Array<SqlUuid> => &t.account_id,
            Array<SqlUuid> => &t.agent_id,
            Array<Text> => &t.kind,
            Array<SqlUuid> => &t.family_id,
            Array<Nullable<SqlUuid>> => &t.parent_id,
            Array<Text> => &t.subject,
            Array<Jsonb> => &t.scopes,
            Array<Jsonb> => &t.audience,
            Array<Text> => &t.task_id,
            Array<Nullable<Text>> => &t.parent_task_id,
            Array<Text> => &t.grant_type,
            Array<Bytea> => &t.digest,
            Array<Timestamptz> => &t.issued_at,
            Array<Timestamptz> => &t.expires_at,
            Array<Nullable<Timestamptz>> => &t.revoked_at,
            Array<Nullable<Text>> => &t.revoked_reason,
            Array<Nullable<Timestamptz>> => &t.spent_at,
            Array<Nullable<Bytea>> => &t.sealed_answer,
            Array<Nullable<SqlUuid>> => &t.principal_id,
            Array<Nullable<SqlUuid>> => &t.delegation_id,
            Array<Jsonb> => &t.chain,
            Array<Nullable<SqlUuid>> => &t.may_act,
            Array<Nullable<Text>> => &t.dpop_jkt,
        );
        out.push_sql(
            ") INSERT INTO audit_logs (account_id, actor, token_id, user_id, action, status, \
             resource_type, resource_id, metadata, created_at) SELECT * FROM ",
        );
        unnest!(out,
            Array<SqlUuid> => &a.account_id,
            Array<Text> => &a.actor,
            Array<Nullable<SqlUuid>> => &a.token_id,
            Array<Nullable<SqlUuid>> => &a.user_id,
            Array<Text> => &a.action,
            Array<Text> => &a.status,
            Array<Nullable<Text>> => &a.resource_type,
            Array<Nullable<Text>> => &a.resource_id,
            Array<Jsonb> => &a.metadata,
            Array<Timestamptz> => &a.created_at,
        );
        Ok(())
    }
}

/// A group's token rows as one array per column.
struct TokenColumns<'a> {
    id: Vec<uuid::Uuid>,
    account_id: Vec<uuid::Uuid>,
    agent_id: Vec<uuid::Uuid>,
    kind: Vec<&'a str>,
    family_id: Vec<uuid::Uuid>,
    parent_id: Vec<Option<uuid::Uuid>>,
    subject: Vec<&'a str>,
    scopes: Vec<&'a Value>,
    audience: Vec<&'a Value>,
    task_id: Vec<&'a str>,
    parent_task_id: Vec<Option<&'a str>>,
    grant_type: Vec<&'a str>,
    digest: Vec<&'a [u8]>,
    issued_at: Vec<DateTime<Utc>>,
    expires_at: Vec<DateTime<Utc>>,
    revoked_at: Vec<Option<DateTime<Utc>>>,
    revoked_reason: Vec<Option<&'a str>>,
    spent_at: Vec<Option<DateTime<Utc>>>,
    sealed_answer: Vec<Option<&'a [u8]>>,
    principal_id: Vec<Option<uuid::Uuid>>,
    delegation_id: Vec<Option<uuid::Uuid>>,
    chain: Vec<&'a Value>,
    may_act: Vec<Option<uuid::Uuid>>,
    dpop_jkt: Vec<Option<&'a str>>,
}

impl<'a> TokenColumns<'a> {
    fn of(rows: &'a [TokenRow]) -> Self {
        let uuid = |id: &Option<Id>| id.map(|id| id.0);
        Self {
            id: rows.iter().map(|r| r.id.0).collect(),
            account_id: rows.iter().map(|r| r.account_id.0).collect(),
            agent_id: rows.iter().map(|r| r.agent_id.0).collect(),
            kind: rows.iter().map(|r| r.kind.as_str()).collect(),
            family_id: rows.iter().map(|r| r.family_id.0).collect(),
            parent_id: rows.iter().map(|r| uuid(&r.parent_id)).collect(),
            subject: rows.iter().map(|r| r.subject.as_str()).collect(),
            scopes: rows.iter().map(|r| &r.scopes).collect(),
            audience: rows.iter().map(|r| &r.audience).collect(),
            task_id: rows.iter().map(|r| r.task_id.as_str()).collect(),
            parent_task_id: rows.iter().map(|r| r.parent_task_id.as_deref()).collect(),
            grant_type: rows.iter().map(|r| r.grant_type.as_str()).collect(),
            digest: rows.iter().map(|r| r.digest.as_slice()).collect(),
            issued_at: rows.iter().map(|r| r.issued_at).collect(),
            expires_at: rows.iter().map(|r| r.expires_at).collect(),
            revoked_at: rows.iter().map(|r| r.revoked_at).collect(),
            revoked_reason: rows.iter().map(|r| r.revoked_reason.as_deref()).collect(),
            spent_at: rows.iter().map(|r| r.spent_at).collect(),
            sealed_answer: rows.iter().map(|r| r.sealed_answer.as_deref()).collect(),
            principal_id: rows.iter().map(|r| uuid(&r.principal_id)).collect(),
            delegation_id: rows.iter().map(|r| uuid(&r.delegation_id)).collect(),
            chain: rows.iter().map(|r| &r.chain).collect(),
            may_act: rows.iter().map(|r| uuid(&r.may_act)).collect(),
            dpop_jkt: rows.iter().map(|r| r.dpop_jkt.as_deref()).collect(),
        }
    }
}

/// A group's audit rows as one array per column.
struct AuditColumns<'a> {
    account_id: Vec<uuid::Uuid>,
    actor: Vec<&'a str>,
    token_id: Vec<Option<uuid::Uuid>>,
    user_id: Vec<Option<uuid::Uuid>>,
    action: Vec<&'a str>,
    status: Vec<&'a str>,
    resource_type: Vec<Option<&'a str>>,
    resource_id: Vec<Option<&'a str>>,
    metadata: Vec<&'a Value>,
    created_at: Vec<DateTime<Utc>>,
}

impl<'a> AuditColumns<'a> {
    fn of(rows: &'a [NewAuditRow<'a>]) -> Self {
        Self {
            account_id: rows.iter().map(|r| r.account_id.0).collect(),
            actor: rows.iter().map(|r| r.actor).collect(),
            token_id: rows.iter().map(|r| r.token_id.map(|id| id.0)).collect(),
            user_id: rows.iter().map(|r| r.user_id.map(|id| id.0)).collect(),
            action: rows.iter().map(|r| r.action).collect(),
            status: rows.iter().map(|r| r.status).collect(),
            resource_type: rows.iter().map(|r| r.resource_type).collect(),
            resource_id: rows.iter().map(|r| r.resource_id).collect(),
            metadata: rows.iter().map(|r| r.metadata).collect(),
            created_at: rows.iter().map(|r| r.created_at).collect(),
        }
    }
}
