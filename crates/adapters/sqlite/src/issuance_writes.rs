//! Writing a group of issued tokens and their audit records, the SQLite way.

use crate::Conn;
use crate::audit::NewAuditRow;
use crate::error::TxError;
use crate::oauth_tokens::TokenRow;
use crate::schema::{audit_logs, oauth_tokens};

/// Writes `tokens` and `audits` together, atomically: a row at a time in one transaction
/// (in-process, a prepared row costs no round trip).
pub(crate) async fn insert(
    conn: &mut Conn,
    tokens: &[TokenRow],
    audits: &[NewAuditRow<'_>],
) -> Result<(), TxError> {
    write_transaction!(conn, async |conn| {
        insert_rows!(conn, oauth_tokens::table, *tokens);
        insert_rows!(conn, audit_logs::table, *audits);
        Ok::<_, TxError>(())
    })
    .await
}
