//! An in-memory audit log, for tests.

use std::sync::Mutex;

use async_trait::async_trait;
use d2_kernel::{AccountId, Cursor, Page, PageRequest, StoreError};

use crate::entry::{AuditEntry, AuditFilter, AuditRecord};
use crate::service::AuditLog;

#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAuditLog {
    /// Writes a record; the in-memory stores of other crates call this inside their own
    /// critical section, which is their "transaction".
    pub fn append(&self, entry: AuditEntry) {
        let mut records = self.lock();
        let id = i64::try_from(records.len())
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        records.push(AuditRecord {
            id,
            entry,
            user_name: None,
        });
    }

    pub fn all(&self) -> Vec<AuditRecord> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AuditRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn cursor_of(record: &AuditRecord) -> Cursor {
    Cursor::new(record.entry.occurred_at, record.id.to_string())
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn search(
        &self,
        account_id: AccountId,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let after = match page.after() {
            Some(cursor) => Some((
                cursor.at,
                cursor
                    .id_as::<i64>()
                    .map_err(|_| StoreError::corrupt("cursor id"))?,
            )),
            None => None,
        };
        let mut matching: Vec<AuditRecord> = self
            .lock()
            .iter()
            .filter(|r| r.entry.account_id == account_id && filter.matches(&r.entry))
            .filter(|r| after.is_none_or(|position| (r.entry.occurred_at, r.id) < position))
            .cloned()
            .collect();
        matching.sort_by_key(|r| std::cmp::Reverse((r.entry.occurred_at, r.id)));
        matching.truncate(
            usize::try_from(page.limit())
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        Ok(page.page_from(matching, cursor_of))
    }
}
