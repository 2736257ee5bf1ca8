//! The Logflare ingest body of a batch of events.

use chrono::{DateTime, SecondsFormat, Utc};
use d2_events::{Decision, NewEvent};
use d2_kernel::{AccountId, TokenId};
use serde::Serialize;
use serde_json::Value;

/// `{"batch": [...]}`.
#[derive(Serialize)]
struct Body<'a> {
    batch: Vec<Entry<'a>>,
}

/// One log event: `message`, `timestamp` (when it happened, so Logflare orders by the
/// event's time rather than by arrival) and `metadata`.
#[derive(Serialize)]
struct Entry<'a> {
    message: &'a str,
    timestamp: String,
    metadata: Metadata<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    account_id: AccountId,
    event_type: &'a str,
    occurred_at: String,
    ingested_at: String,
    app_name: Option<&'a str>,
    service: Option<&'a str>,
    host: Option<&'a str>,
    source_ip: Option<&'a str>,
    request_id: Option<&'a str>,
    token_id: Option<TokenId>,
    decision: Option<&'static str>,
    tool: Option<&'a str>,
    latency_ms: Option<f64>,
    payload: &'a Value,
}

/// RFC 3339, UTC `Z`, microseconds.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn entry(event: &NewEvent) -> Entry<'_> {
    Entry {
        message: &event.event_type,
        timestamp: timestamp(event.occurred_at),
        metadata: Metadata {
            account_id: event.account_id,
            event_type: &event.event_type,
            occurred_at: timestamp(event.occurred_at),
            ingested_at: timestamp(event.ingested_at),
            app_name: event.app_name.as_ref().map(|name| name.as_str()),
            service: event.service.as_deref(),
            host: event.host.as_deref(),
            source_ip: event.source_ip.as_deref(),
            request_id: event.request_id.as_deref(),
            token_id: event.token_id,
            decision: event.facts.decision.map(|decision| match decision {
                Decision::Allowed => "allowed",
                Decision::Denied => "denied",
            }),
            tool: event.facts.tool.as_deref(),
            latency_ms: event.facts.latency_ms,
            payload: &event.payload,
        },
    }
}

/// The request body of one batch.
pub(crate) fn body(events: &[NewEvent]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Body {
        batch: events.iter().map(entry).collect(),
    })
}
