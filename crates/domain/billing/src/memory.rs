//! In-memory subscriptions, customer links and received events, for tests. Accounts and
//! audit records are those of the accounts domain's fake, which this store also answers
//! for, so that a contract suite reads back what an event wrote.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_accounts::memory::MemoryAccountRepo;
use d2_accounts::{Account, AccountPatch, AccountRepo, AuditOf, JobAuditOf};
use d2_audit::{AuditFilter, AuditLog, AuditRecord};
use d2_kernel::{AccountId, NewTask, Page, PageRequest, StoreError, UserId};

use crate::budgets::Budget;
use crate::credits::{Burn, CreditGrant};
use crate::ledger::{
    CreditRepo, EntryId, EntryOf, LedgerEntry, LedgerFilter, SpendOf, SpendOutcome,
};
use crate::notices::{Notice, NoticeEndpoint, NoticeId, NoticeRepo, RaisedNotice};
use crate::ports::{BillingRepo, DecideOf, EventOutcome};
use crate::provider::ProviderEvent;
use crate::reservations::{CloseOf, CloseRefusal, Closing, Reservation, ReservationStatus};
use crate::subscription::Subscription;
use crate::usage::MeterKind;
use crate::usage::{
    Earlier, HourTotal, RecordFilter, RecordOf, Recording, Refusal, UsageRecord, UsageRepo,
};

#[derive(Debug, Default)]
struct State {
    grants: HashMap<AccountId, Vec<CreditGrant>>,
    entries: HashMap<AccountId, Vec<LedgerEntry>>,
    events: HashSet<String>,
    customers: HashMap<String, AccountId>,
    subscriptions: HashMap<AccountId, Subscription>,
    usage: HashMap<AccountId, Vec<UsageRecord>>,
    hours: HashMap<AccountId, Vec<HourTotal>>,
    reservations: HashMap<AccountId, Vec<Reservation>>,
    budgets: HashMap<AccountId, Vec<Budget>>,
    /// The origins of the included grants made, by account.
    origins: HashSet<(AccountId, String)>,
    endpoints: HashMap<AccountId, NoticeEndpoint>,
    notices: Vec<Notice>,
    /// The delivery tasks raised notices enqueued.
    notice_tasks: Vec<NewTask>,
}

/// The items `position_of` keeps (their time and id), newest first, after the page's
/// cursor: one more than the page holds, which only tells that another page follows.
fn newest_first<T: Clone, Id: Ord + Copy + std::str::FromStr>(
    items: &[T],
    page: &PageRequest,
    position_of: impl Fn(&T) -> Option<(DateTime<Utc>, Id)>,
) -> Result<Vec<T>, StoreError> {
    let after = match page.after() {
        Some(cursor) => Some((
            cursor.at,
            cursor
                .id_as::<Id>()
                .map_err(|_| StoreError::corrupt("history cursor"))?,
        )),
        None => None,
    };
    let mut kept: Vec<((DateTime<Utc>, Id), &T)> = items
        .iter()
        .filter_map(|item| position_of(item).map(|position| (position, item)))
        .filter(|(position, _)| after.is_none_or(|after| *position < after))
        .collect();
    kept.sort_by_key(|(position, _)| std::cmp::Reverse(*position));
    kept.truncate(
        usize::try_from(page.limit())
            .unwrap_or(usize::MAX)
            .saturating_add(1),
    );
    Ok(kept.into_iter().map(|(_, item)| item.clone()).collect())
}

#[derive(Debug)]
pub struct MemoryBillingRepo {
    accounts: Arc<MemoryAccountRepo>,
    state: Mutex<State>,
}

impl MemoryBillingRepo {
    pub fn new(accounts: Arc<MemoryAccountRepo>) -> Self {
        Self {
            accounts,
            state: Mutex::new(State::default()),
        }
    }

    /// The delivery tasks raised notices enqueued, oldest first.
    pub fn notice_tasks(&self) -> Vec<NewTask> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.notice_tasks.clone()
    }
}

#[async_trait]
impl NoticeRepo for MemoryBillingRepo {
    async fn notice_endpoint(
        &self,
        account: AccountId,
    ) -> Result<Option<NoticeEndpoint>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state.endpoints.get(&account).cloned())
    }

    async fn set_notice_endpoint(
        &self,
        account: AccountId,
        endpoint: &NoticeEndpoint,
        audit: &d2_audit::AuditEntry,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.endpoints.insert(account, endpoint.clone());
        self.accounts.audit().append(audit.clone());
        Ok(())
    }

    async fn delete_notice_endpoint(
        &self,
        account: AccountId,
        audit: &d2_audit::AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let deleted = state.endpoints.remove(&account).is_some();
        if deleted {
            self.accounts.audit().append(audit.clone());
        }
        Ok(deleted)
    }

    async fn notice_candidates(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AccountId>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut accounts: Vec<AccountId> = state
            .entries
            .iter()
            .filter(|(_, entries)| {
                entries
                    .iter()
                    .any(|e| e.kind.spends() && e.created_at >= since)
            })
            .map(|(account, _)| *account)
            .filter(|account| {
                let budgeted = state.budgets.get(account).is_some_and(|b| !b.is_empty());
                let included = state.grants.get(account).is_some_and(|grants| {
                    grants.iter().any(|g| {
                        g.source == crate::credits::GrantSource::Plan
                            && g.effective_at <= now
                            && g.expires_at.is_none_or(|end| now < end)
                    })
                });
                budgeted || included
            })
            .collect();
        accounts.sort();
        Ok(accounts)
    }

    async fn raise_notices(&self, notices: &[RaisedNotice]) -> Result<u64, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut raised = 0_u64;
        for RaisedNotice {
            notice,
            audit,
            task,
        } in notices
        {
            let known = state.notices.iter().any(|n| {
                n.account_id == notice.account_id
                    && n.subject == notice.subject
                    && n.period_start == notice.period_start
                    && n.threshold == notice.threshold
            });
            if known {
                continue;
            }
            state.notices.push(notice.clone());
            state.notice_tasks.push(task.clone());
            self.accounts.audit().append(audit.clone());
            raised = raised.saturating_add(1);
        }
        Ok(raised)
    }

    async fn notices(&self, account: AccountId, limit: u32) -> Result<Vec<Notice>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut notices: Vec<Notice> = state
            .notices
            .iter()
            .filter(|n| n.account_id == account)
            .cloned()
            .collect();
        notices.sort_by_key(|n| std::cmp::Reverse((n.created_at, n.threshold, n.id)));
        notices.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(notices)
    }

    async fn notice(&self, account: AccountId, id: NoticeId) -> Result<Option<Notice>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state
            .notices
            .iter()
            .find(|n| n.account_id == account && n.id == id)
            .cloned())
    }
}

#[async_trait]
impl BillingRepo for MemoryBillingRepo {
    async fn receive_event(
        &self,
        event: &ProviderEvent,
        _received_at: DateTime<Utc>,
        decide: DecideOf<'_>,
    ) -> Result<(EventOutcome, Option<AccountId>), StoreError> {
        // One lock for the whole event: the fake's transaction.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.events.insert(event.id.clone()) {
            return Ok((EventOutcome::Duplicate, None));
        }
        let linked = event
            .customer
            .as_ref()
            .and_then(|customer| state.customers.get(customer).copied());
        let Some(account) = event
            .account
            .or(linked)
            .and_then(|id| self.accounts.account(id))
        else {
            return Ok((EventOutcome::Ignored("unknown_account".to_owned()), None));
        };
        if let Some(customer) = &event.customer {
            state
                .customers
                .entry(customer.clone())
                .or_insert(account.id);
        }
        let granted = event
            .credits_origin()
            .is_some_and(|origin| state.origins.contains(&(account.id, origin)));
        let decision = decide(&account, state.subscriptions.get(&account.id), granted);
        if let Some(subscription) = decision.subscription {
            state.subscriptions.insert(account.id, subscription);
        }
        if let Some(after) = decision.account {
            self.accounts.insert_account(after);
        }
        if let Some(included) = decision.grant {
            state.origins.insert((account.id, included.origin));
            let grants = state.grants.entry(account.id).or_default();
            grants.push(included.grant);
            let entry = LedgerEntry {
                balance_after: crate::credits::balance(grants, included.entry.created_at),
                ..included.entry
            };
            state.entries.entry(account.id).or_default().push(entry);
            self.accounts.audit().append(included.audit);
        }
        for entry in decision.audit {
            self.accounts.audit().append(entry);
        }
        Ok((decision.outcome, Some(account.id)))
    }

    async fn subscription(&self, account: AccountId) -> Result<Option<Subscription>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state.subscriptions.get(&account).cloned())
    }
}

/// Takes `burns` from `grants`; a burn above what its grant has left is an error.
fn take_burns(grants: &mut [CreditGrant], burns: &[Burn]) -> Result<(), StoreError> {
    for grant in grants {
        for burn in burns.iter().filter(|burn| burn.grant == grant.id) {
            grant.remaining = grant
                .remaining
                .checked_sub(burn.amount)
                .ok_or_else(|| StoreError::corrupt("a burn above a grant's remaining"))?;
        }
    }
    Ok(())
}

#[async_trait]
impl CreditRepo for MemoryBillingRepo {
    async fn add_grant(
        &self,
        account: AccountId,
        grant: &CreditGrant,
        entry_of: EntryOf<'_>,
        audit: &d2_audit::AuditEntry,
    ) -> Result<LedgerEntry, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let grants = state.grants.entry(account).or_default();
        grants.push(grant.clone());
        let entry = entry_of(grants);
        state
            .entries
            .entry(account)
            .or_default()
            .push(entry.clone());
        self.accounts.audit().append(audit.clone());
        Ok(entry)
    }

    async fn credit_grants(&self, account: AccountId) -> Result<Vec<CreditGrant>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state.grants.get(&account).cloned().unwrap_or_default())
    }

    async fn spend(
        &self,
        account: AccountId,
        key: &str,
        decide: SpendOf<'_>,
    ) -> Result<SpendOutcome, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let earlier = state.entries.get(&account).and_then(|entries| {
            entries
                .iter()
                .find(|entry| entry.idempotency_key.as_deref() == Some(key))
        });
        if let Some(earlier) = earlier {
            return Ok(SpendOutcome::Replayed(earlier.clone()));
        }
        let reported = state
            .usage
            .get(&account)
            .is_some_and(|records| records.iter().any(|record| record.idempotency_key == key));
        if reported {
            return Ok(SpendOutcome::KeyOfUsage);
        }
        let grants = state.grants.get(&account).cloned().unwrap_or_default();
        let spending = match decide(&grants) {
            Ok(spending) => spending,
            Err(refusal) => return Ok(SpendOutcome::Refused(refusal)),
        };
        take_burns(
            state.grants.entry(account).or_default(),
            &spending.entry.burns,
        )?;
        state
            .entries
            .entry(account)
            .or_default()
            .push(spending.entry.clone());
        if let Some(reservation) = spending.reservation {
            state
                .reservations
                .entry(account)
                .or_default()
                .push(reservation);
        }
        self.accounts.audit().append(spending.audit);
        Ok(SpendOutcome::Spent(spending.entry))
    }

    async fn reservation(
        &self,
        account: AccountId,
        id: EntryId,
    ) -> Result<Option<Reservation>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state
            .reservations
            .get(&account)
            .and_then(|held| held.iter().find(|reservation| reservation.id == id))
            .cloned())
    }

    async fn close_reservation(
        &self,
        account: AccountId,
        id: EntryId,
        close: CloseOf<'_>,
    ) -> Result<Option<Result<Closing, CloseRefusal>>, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(held) = state
            .reservations
            .get(&account)
            .and_then(|held| held.iter().find(|reservation| reservation.id == id))
            .cloned()
        else {
            return Ok(None);
        };
        let grants = state.grants.get(&account).cloned().unwrap_or_default();
        let closing = match close(&grants, &held) {
            Ok(closing) => closing,
            Err(refusal) => return Ok(Some(Err(refusal))),
        };
        if let Some(release) = &closing.release {
            for grant in state.grants.entry(account).or_default() {
                for burn in release.burns.iter().filter(|burn| burn.grant == grant.id) {
                    grant.remaining = grant
                        .remaining
                        .checked_add(burn.amount)
                        .filter(|remaining| *remaining <= grant.amount)
                        .ok_or_else(|| StoreError::corrupt("a release above a grant's amount"))?;
                }
            }
            state
                .entries
                .entry(account)
                .or_default()
                .push(release.clone());
        }
        if let Some(reservation) = state
            .reservations
            .entry(account)
            .or_default()
            .iter_mut()
            .find(|reservation| reservation.id == id)
        {
            *reservation = closing.reservation.clone();
        }
        if let Some(audit) = &closing.audit {
            self.accounts.audit().append(audit.clone());
        }
        Ok(Some(Ok(closing)))
    }

    async fn due_reservations(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(AccountId, EntryId)>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due: Vec<(DateTime<Utc>, AccountId, EntryId)> = state
            .reservations
            .iter()
            .flat_map(|(account, held)| held.iter().map(move |reservation| (*account, reservation)))
            .filter(|(_, reservation)| {
                reservation.status == ReservationStatus::Held && reservation.expires_at <= now
            })
            .map(|(account, reservation)| (reservation.expires_at, account, reservation.id))
            .collect();
        due.sort();
        Ok(due
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(_, account, id)| (account, id))
            .collect())
    }

    async fn ledger(
        &self,
        account: AccountId,
        filter: &LedgerFilter,
        page: &PageRequest,
    ) -> Result<Page<LedgerEntry>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = state
            .entries
            .get(&account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let matching = newest_first(entries, page, |entry| {
            filter
                .matches(entry)
                .then_some((entry.created_at, entry.id))
        })?;
        Ok(page.page_from(matching, LedgerEntry::cursor))
    }
}

#[async_trait]
impl UsageRepo for MemoryBillingRepo {
    async fn record_usage(
        &self,
        account: AccountId,
        batch: &[UsageRecord],
        record: RecordOf<'_>,
    ) -> Result<Result<Recording, Refusal>, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = state.usage.get(&account).cloned().unwrap_or_default();
        let records = batch
            .iter()
            .filter_map(|new| {
                stored
                    .iter()
                    .find(|record| record.idempotency_key == new.idempotency_key)
                    .cloned()
            })
            .collect();
        let spent_keys = batch
            .iter()
            .filter(|new| {
                state.entries.get(&account).is_some_and(|entries| {
                    entries
                        .iter()
                        .any(|entry| entry.idempotency_key.as_ref() == Some(&new.idempotency_key))
                })
            })
            .map(|new| new.idempotency_key.clone())
            .collect();
        let earlier = Earlier {
            records,
            spent_keys,
        };
        let grants = state.grants.get(&account).cloned().unwrap_or_default();
        let recording = match record(&grants, &earlier) {
            Ok(recording) => recording,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if let Some(entry) = &recording.entry {
            take_burns(state.grants.entry(account).or_default(), &entry.burns)?;
            state
                .entries
                .entry(account)
                .or_default()
                .push(entry.clone());
        }
        let usage = state.usage.entry(account).or_default();
        usage.extend(
            recording
                .reports
                .iter()
                .filter(|recorded| !recorded.replayed)
                .map(|recorded| recorded.record.clone()),
        );
        let hours = state.hours.entry(account).or_default();
        for total in &recording.hours {
            match hours
                .iter_mut()
                .find(|hour| hour.hour == total.hour && hour.dimension == total.dimension)
            {
                Some(hour) => hour.totals.add(&total.totals),
                None => hours.push(total.clone()),
            }
        }
        if let Some(audit) = &recording.audit {
            self.accounts.audit().append(audit.clone());
        }
        Ok(Ok(recording))
    }

    async fn set_budget(
        &self,
        account: AccountId,
        budget: &Budget,
        audit: &d2_audit::AuditEntry,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let budgets = state.budgets.entry(account).or_default();
        budgets.retain(|b| !(b.kind == budget.kind && b.subject == budget.subject));
        budgets.push(budget.clone());
        budgets.sort_by(|a, b| (a.kind.as_str(), &a.subject).cmp(&(b.kind.as_str(), &b.subject)));
        self.accounts.audit().append(audit.clone());
        Ok(())
    }

    async fn delete_budget(
        &self,
        account: AccountId,
        kind: MeterKind,
        subject: &str,
        audit: &d2_audit::AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let budgets = state.budgets.entry(account).or_default();
        let before = budgets.len();
        budgets.retain(|b| !(b.kind == kind && b.subject == subject));
        let deleted = budgets.len() != before;
        if deleted {
            self.accounts.audit().append(audit.clone());
        }
        Ok(deleted)
    }

    async fn budgets(&self, account: AccountId) -> Result<Vec<Budget>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(state.budgets.get(&account).cloned().unwrap_or_default())
    }

    async fn usage_records(
        &self,
        account: AccountId,
        filter: &RecordFilter,
        page: &PageRequest,
    ) -> Result<Page<UsageRecord>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let records = state
            .usage
            .get(&account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let matching = newest_first(records, page, |record| {
            filter
                .matches(record)
                .then_some((record.recorded_at, record.id))
        })?;
        Ok(page.page_from(matching, UsageRecord::cursor))
    }

    async fn usage_hours(
        &self,
        account: AccountId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HourTotal>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut hours: Vec<HourTotal> = state
            .hours
            .get(&account)
            .into_iter()
            .flatten()
            .filter(|hour| from <= hour.hour && hour.hour < to)
            .cloned()
            .collect();
        hours.sort_by(|a, b| (a.hour, &a.dimension).cmp(&(b.hour, &b.dimension)));
        Ok(hours)
    }
}

#[async_trait]
impl AccountRepo for MemoryBillingRepo {
    async fn find_account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        self.accounts.find_account(id).await
    }

    async fn update(
        &self,
        id: AccountId,
        patch: &AccountPatch,
        audit_of: AuditOf<'_>,
    ) -> Result<Option<Account>, StoreError> {
        self.accounts.update(id, patch, audit_of).await
    }

    async fn count_members(&self, id: AccountId) -> Result<u64, StoreError> {
        self.accounts.count_members(id).await
    }

    async fn has_accounts(&self) -> Result<bool, StoreError> {
        self.accounts.has_accounts().await
    }

    async fn first_owner(&self, id: AccountId) -> Result<Option<UserId>, StoreError> {
        self.accounts.first_owner(id).await
    }

    async fn lock_expired_trials(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        audit_of: JobAuditOf<'_>,
    ) -> Result<Vec<AccountId>, StoreError> {
        self.accounts
            .lock_expired_trials(now, limit, audit_of)
            .await
    }
}

#[async_trait]
impl AuditLog for MemoryBillingRepo {
    async fn search(
        &self,
        account_id: AccountId,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditRecord>, StoreError> {
        self.accounts.audit().search(account_id, filter, page).await
    }
}
