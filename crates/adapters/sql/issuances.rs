//! Issuances committed in groups: the tokens of concurrent token requests written in one
//! transaction, so a busy token endpoint pays one commit (and one WAL sync) for many
//! tokens instead of one each. Every request is still answered only after the transaction
//! holding its rows has committed.
//!
//! No task runs while nothing is queued. A request that finds no writer running starts one
//! (a task of its own, so a caller that goes away cannot leave the queue half written); a
//! writer takes everything queued, up to `MAX_GROUP` issuances, writes it, answers each
//! request, and goes on until the queue is empty. More writers, up to `WRITERS`, start only
//! while more is waiting than the running ones take in a group each. Under light load every
//! request is written at once, alone; under heavy load the groups grow with the queue.

use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};

use d2_audit::AuditEntry;
use d2_kernel::{ErrorChain, StoreError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use tokio::sync::oneshot;

use crate::audit::NewAuditRow;
use crate::error::TxError;
use crate::issuance_writes;
use crate::oauth_tokens::TokenRow;

/// Groups written at the same time at most (each holds a connection while it writes).
const WRITERS: usize = crate::ISSUANCE_WRITERS;

/// Issuances in one transaction at most (each up to two token rows and an audit row).
const MAX_GROUP: usize = 128;

/// One token request's rows, waiting to be written.
struct Pending {
    rows: Vec<TokenRow>,
    audit: AuditEntry,
    answer: oneshot::Sender<Result<bool, StoreError>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    writers: usize,
}

/// Whether a request just queued should start a writer, with `writers` running and
/// `waiting` issuances queued: when none is running, or when more is waiting than the
/// running writers take in their next groups (and fewer than `WRITERS` run). One writer
/// whenever it can keep up: a group's statement and commit cost about the same for a few
/// tokens as for a hundred, so the fewer and larger the groups, the less each token costs
/// both D2 and the database.
fn needs_writer(writers: usize, waiting: usize) -> bool {
    writers == 0 || (writers < WRITERS && waiting > writers.saturating_mul(MAX_GROUP))
}

/// The issuances waiting to be written, shared by every clone of the store.
#[derive(Default)]
pub(crate) struct IssuanceQueue {
    queue: Mutex<Queue>,
}

impl IssuanceQueue {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue holds no invariant a panicking writer could break halfway.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl crate::Store {
    /// Writes `rows` and `audit` in the next group; `false`, with nothing written, when
    /// their agent is gone.
    pub(crate) async fn issue_in_group(
        &self,
        rows: Vec<TokenRow>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let (answer, answered) = oneshot::channel();
        let start_writer = {
            let mut queue = self.issuances.lock();
            queue.pending.push(Pending {
                rows,
                audit,
                answer,
            });
            let start = needs_writer(queue.writers, queue.pending.len());
            if start {
                queue.writers = queue.writers.saturating_add(1);
            }
            start
        };
        if start_writer {
            let store = self.clone();
            tokio::spawn(async move { store.write_groups().await });
        }
        answered
            .await
            .map_err(|_| StoreError::Unavailable("the issuance writer stopped".into()))?
    }

    /// Writes groups until the queue is empty.
    async fn write_groups(self) {
        // A writer stopped midway (the runtime shutting down, a panic) leaves the count
        // right and answers every queued request with an error rather than leave it
        // waiting for a writer no request may start.
        struct Writer<'a>(&'a IssuanceQueue, bool);
        impl Drop for Writer<'_> {
            fn drop(&mut self) {
                if self.1 {
                    let mut queue = self.0.lock();
                    queue.writers = queue.writers.saturating_sub(1);
                    if queue.writers == 0 {
                        queue.pending.clear();
                    }
                }
            }
        }
        let mut writer = Writer(&self.issuances, true);
        loop {
            let group: Vec<Pending> = {
                let mut queue = self.issuances.lock();
                if queue.pending.is_empty() {
                    // Under the lock that queued it: a request queued after this sees
                    // the writer gone and starts one.
                    queue.writers = queue.writers.saturating_sub(1);
                    writer.1 = false;
                    return;
                }
                let take = queue.pending.len().min(MAX_GROUP);
                queue.pending.drain(..take).collect()
            };
            let group = Group::of(group);
            let outcomes = self.write_group(&group).await;
            for (answer, outcome) in group.answers.into_iter().zip(outcomes) {
                // A caller that went away no longer waits for its answer.
                let _ = answer.send(outcome);
            }
        }
    }

    /// One transaction for the whole group. When an agent of the group was deleted
    /// meanwhile (a foreign key fails), each issuance is written alone, so only that
    /// agent's are refused.
    async fn write_group(&self, group: &Group) -> Vec<Result<bool, StoreError>> {
        match self.write_transaction(&group.rows, &group.audits).await {
            Ok(()) => group.answers.iter().map(|_| Ok(true)).collect(),
            Err(error) if is_agent_gone(&error) && group.audits.len() > 1 => {
                let mut outcomes = Vec::with_capacity(group.audits.len());
                for (span, audit) in group.spans.iter().zip(&group.audits) {
                    let rows = group.rows.get(span.clone()).unwrap_or_default();
                    outcomes.push(
                        self.write_transaction(rows, std::slice::from_ref(audit))
                            .await
                            .map(|()| true)
                            .or_else(one_outcome),
                    );
                }
                outcomes
            }
            Err(error) if is_agent_gone(&error) => vec![Ok(false)],
            Err(error) => {
                let error = StoreError::from(error);
                group
                    .answers
                    .iter()
                    .map(|_| Err(same_error(&error)))
                    .collect()
            }
        }
    }

    async fn write_transaction(
        &self,
        tokens: &[TokenRow],
        audits: &[AuditEntry],
    ) -> Result<(), TxError> {
        let audits: Vec<NewAuditRow<'_>> = audits.iter().map(NewAuditRow::from_domain).collect();
        let mut conn = self.writer().await?;
        issuance_writes::insert(&mut conn, tokens, &audits).await
    }
}

/// The issuances of one transaction: every token row in one list, each issuance's rows a
/// span of it (to write it alone if need be).
struct Group {
    rows: Vec<TokenRow>,
    spans: Vec<Range<usize>>,
    audits: Vec<AuditEntry>,
    answers: Vec<oneshot::Sender<Result<bool, StoreError>>>,
}

impl Group {
    fn of(pending: Vec<Pending>) -> Self {
        let mut group = Self {
            rows: Vec::new(),
            spans: Vec::with_capacity(pending.len()),
            audits: Vec::with_capacity(pending.len()),
            answers: Vec::with_capacity(pending.len()),
        };
        for issuance in pending {
            let start = group.rows.len();
            group.rows.extend(issuance.rows);
            group.spans.push(start..group.rows.len());
            group.audits.push(issuance.audit);
            group.answers.push(issuance.answer);
        }
        group
    }
}

fn is_agent_gone(error: &TxError) -> bool {
    matches!(
        error,
        TxError::Diesel(DieselError::DatabaseError(
            DatabaseErrorKind::ForeignKeyViolation,
            _
        ))
    )
}

fn one_outcome(error: TxError) -> Result<bool, StoreError> {
    if is_agent_gone(&error) {
        Ok(false)
    } else {
        Err(error.into())
    }
}

/// The failure of a group, for each of its requests: the same kind (so a lost connection
/// is still answered 503), the cause as text.
fn same_error(error: &StoreError) -> StoreError {
    let cause = ErrorChain(error).to_string().into();
    match error {
        StoreError::Unavailable(_) => StoreError::Unavailable(cause),
        StoreError::Conflict(_) => StoreError::Conflict(cause),
        StoreError::Internal(_) => StoreError::Internal(cause),
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_GROUP, WRITERS, needs_writer};

    #[test]
    fn another_writer_starts_only_when_more_waits_than_the_running_ones_take() {
        assert!(
            needs_writer(0, 1),
            "a request with no writer running starts one"
        );
        assert!(!needs_writer(1, 2), "one writer takes the next group");
        assert!(!needs_writer(1, MAX_GROUP));
        assert_eq!(needs_writer(1, MAX_GROUP + 1), WRITERS > 1);
        assert!(
            !needs_writer(WRITERS, WRITERS * MAX_GROUP + 1),
            "never more than WRITERS"
        );
    }
}
