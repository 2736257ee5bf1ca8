//! Test data: events as ingest would have stored them, for this crate's tests and, through
//! `d2_testkit::fixtures`, every other crate's.

use chrono::{DateTime, Duration, Utc};
use d2_kernel::{AccountId, AppName, TokenId, later};
use serde_json::Value;

use crate::event::{EventFacts, IncomingEvent, NewEvent};

/// The start of the window the contract suites ask about.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_571_200, 0).unwrap_or_default() // 2026-01-05T00:00:00Z
}

/// An event as ingest would have stored it, ingested `lag_ms` after it occurred.
pub fn event(
    account_id: AccountId,
    event_type: &str,
    payload: Value,
    occurred_at: DateTime<Utc>,
    lag_ms: i64,
) -> NewEvent {
    let payload = payload.as_object().cloned().unwrap_or_default();
    let incoming = IncomingEvent {
        event_type: event_type.to_owned(),
        payload: payload.clone(),
        occurred_at,
        client_id: None,
    };
    NewEvent {
        account_id,
        key: NewEvent::key_of(account_id, &incoming),
        token_id: Some(TokenId::random()),
        event_type: event_type.to_owned(),
        occurred_at,
        ingested_at: later(occurred_at, Duration::milliseconds(lag_ms)),
        app_name: Some(AppName::normalise("billing")),
        service: Some("billing".into()),
        host: Some("host-1".into()),
        source_ip: Some("127.0.0.1".into()),
        request_id: None,
        facts: EventFacts::of(event_type, &payload),
        payload: Value::Object(payload),
    }
}
