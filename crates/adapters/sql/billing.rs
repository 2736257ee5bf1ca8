//! Subscriptions, the customers linked to accounts and the provider events received
//! (`d2_billing::BillingRepo`), and their rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use d2_billing::{
    BillingRepo, CreditGrant, DecideOf, EventOutcome, LedgerEntry, ProviderEvent, Subscription,
    balance,
};
use d2_kernel::{AccountId, Change, StoreError};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use crate::accounts::AccountRow;
use crate::audit::write_audit;
use crate::changes::announce;
use crate::credits::{has_origin, insert_grant};
use crate::error::{TxError, from_diesel};
use crate::errors::corrupt;
use crate::id::Id;
use crate::schema::{accounts, billing_customers, billing_events, billing_subscriptions};

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = billing_customers, check_for_backend(crate::Db))]
pub(crate) struct CustomerRow {
    pub customer_id: String,
    pub account_id: Id,
    pub created_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = billing_events, check_for_backend(crate::Db))]
pub(crate) struct ProviderEventRow {
    pub event_id: String,
    pub event_type: String,
    pub event_created_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub account_id: Option<Id>,
    pub outcome: String,
    pub reason: Option<String>,
}

#[derive(Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = billing_subscriptions, check_for_backend(crate::Db))]
pub(crate) struct SubscriptionRow {
    pub account_id: Id,
    pub subscription_id: String,
    pub customer_id: String,
    pub plan: String,
    pub status: String,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub event_id: String,
    pub event_created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SubscriptionRow {
    fn from_domain(subscription: &Subscription) -> Self {
        Self {
            account_id: Id::from(subscription.account_id),
            subscription_id: subscription.subscription_id.clone(),
            customer_id: subscription.customer_id.clone(),
            plan: subscription.plan.as_str().to_owned(),
            status: subscription.status.as_str().to_owned(),
            current_period_start: subscription.current_period_start,
            current_period_end: subscription.current_period_end,
            cancel_at_period_end: subscription.cancel_at_period_end,
            canceled_at: subscription.canceled_at,
            ended_at: subscription.ended_at,
            event_id: subscription.event_id.clone(),
            event_created_at: subscription.event_created_at,
            updated_at: subscription.updated_at,
        }
    }

    fn into_domain(self) -> Result<Subscription, StoreError> {
        Ok(Subscription {
            account_id: self.account_id.into(),
            subscription_id: self.subscription_id,
            customer_id: self.customer_id,
            plan: self
                .plan
                .parse()
                .map_err(|_| corrupt("subscription plan"))?,
            status: self
                .status
                .parse()
                .map_err(|_| corrupt("subscription status"))?,
            current_period_start: self.current_period_start,
            current_period_end: self.current_period_end,
            cancel_at_period_end: self.cancel_at_period_end,
            canceled_at: self.canceled_at,
            ended_at: self.ended_at,
            event_id: self.event_id,
            event_created_at: self.event_created_at,
            updated_at: self.updated_at,
        })
    }
}

#[async_trait]
impl BillingRepo for crate::Store {
    async fn receive_event(
        &self,
        event: &ProviderEvent,
        received_at: DateTime<Utc>,
        decide: DecideOf<'_>,
    ) -> Result<(EventOutcome, Option<AccountId>), StoreError> {
        let mut conn = self.writer().await?;
        let received = write_transaction!(conn, async |conn| {
            // The event's id first: a concurrent delivery of the same event waits here for
            // this transaction, then finds it.
            let recorded = diesel::insert_into(billing_events::table)
                .values(ProviderEventRow {
                    event_id: event.id.clone(),
                    event_type: event.kind.clone(),
                    event_created_at: event.created,
                    received_at,
                    account_id: None,
                    outcome: EventOutcome::Ignored(String::new()).as_str().to_owned(),
                    reason: None,
                })
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if recorded == 0 {
                return Ok::<_, TxError>((EventOutcome::Duplicate, None));
            }
            let linked: Option<Id> = match &event.customer {
                Some(customer) => billing_customers::table
                    .find(customer)
                    .select(billing_customers::account_id)
                    .first(conn)
                    .await
                    .optional()?,
                None => None,
            };
            let named = event.account.map(Id::from).or(linked);
            let row = match named {
                Some(id) => held!(accounts::table.find(id))
                    .select(AccountRow::as_select())
                    .first(conn)
                    .await
                    .optional()?,
                None => None,
            };
            let Some(row) = row else {
                let outcome = EventOutcome::Ignored("unknown_account".to_owned());
                record_outcome(conn, &event.id, None, &outcome).await?;
                return Ok((outcome, None));
            };
            let account = row.into_domain()?;
            let id = Id::from(account.id);
            if let (Some(customer), None) = (&event.customer, linked) {
                diesel::insert_into(billing_customers::table)
                    .values(CustomerRow {
                        customer_id: customer.clone(),
                        account_id: id,
                        created_at: received_at,
                    })
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
            }
            let current = billing_subscriptions::table
                .find(id)
                .select(SubscriptionRow::as_select())
                .first(conn)
                .await
                .optional()?
                .map(SubscriptionRow::into_domain)
                .transpose()?;
            let granted = match event.credits_origin() {
                Some(origin) => has_origin(conn, id, &origin).await?,
                None => false,
            };
            let decision = decide(&account, current.as_ref(), granted);
            if let Some(subscription) = &decision.subscription {
                upsert_subscription(conn, subscription).await?;
            }
            if let Some(after) = &decision.account {
                diesel::update(accounts::table.find(id))
                    .set(AccountRow::from_domain(after, received_at))
                    .execute(conn)
                    .await?;
                announce(conn, Change::Account(account.id)).await?;
            }
            if let Some(included) = &decision.grant {
                let entry_of = |grants: &[CreditGrant]| LedgerEntry {
                    balance_after: balance(grants, included.entry.created_at),
                    ..included.entry.clone()
                };
                insert_grant(
                    conn,
                    account.id,
                    &included.grant,
                    Some(included.origin.as_str()),
                    received_at,
                    &entry_of,
                )
                .await?;
                write_audit(conn, &included.audit).await?;
            }
            for entry in &decision.audit {
                write_audit(conn, entry).await?;
            }
            record_outcome(conn, &event.id, Some(id), &decision.outcome).await?;
            Ok((decision.outcome, Some(account.id)))
        })
        .await?;
        Ok(received)
    }

    async fn subscription(&self, account: AccountId) -> Result<Option<Subscription>, StoreError> {
        let mut conn = self.conn().await?;
        let row = billing_subscriptions::table
            .find(Id::from(account))
            .select(SubscriptionRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(from_diesel)?;
        row.map(SubscriptionRow::into_domain).transpose()
    }
}

async fn upsert_subscription(
    conn: &mut crate::Conn,
    subscription: &Subscription,
) -> Result<(), TxError> {
    use billing_subscriptions as s;
    diesel::insert_into(s::table)
        .values(SubscriptionRow::from_domain(subscription))
        .on_conflict(s::account_id)
        .do_update()
        .set((
            s::subscription_id.eq(excluded(s::subscription_id)),
            s::customer_id.eq(excluded(s::customer_id)),
            s::plan.eq(excluded(s::plan)),
            s::status.eq(excluded(s::status)),
            s::current_period_start.eq(excluded(s::current_period_start)),
            s::current_period_end.eq(excluded(s::current_period_end)),
            s::cancel_at_period_end.eq(excluded(s::cancel_at_period_end)),
            s::canceled_at.eq(excluded(s::canceled_at)),
            s::ended_at.eq(excluded(s::ended_at)),
            s::event_id.eq(excluded(s::event_id)),
            s::event_created_at.eq(excluded(s::event_created_at)),
            s::updated_at.eq(excluded(s::updated_at)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn record_outcome(
    conn: &mut crate::Conn,
    event_id: &str,
    account: Option<Id>,
    outcome: &EventOutcome,
) -> Result<(), TxError> {
    diesel::update(billing_events::table.find(event_id))
        .set((
            billing_events::account_id.eq(account),
            billing_events::outcome.eq(outcome.as_str()),
            billing_events::reason.eq(outcome.reason()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
