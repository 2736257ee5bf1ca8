use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use d2_kernel::{AccountId, AppName, TokenId};
use ring::digest::{Context, SHA256};
use serde_json::{Map, Value};

/// Whether an authorization was allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
}

impl Decision {
    /// Stored as 1 (allowed) or 0 (denied).
    pub const fn as_i16(self) -> i16 {
        match self {
            Decision::Allowed => 1,
            Decision::Denied => 0,
        }
    }

    pub fn from_i16(value: i16) -> Option<Self> {
        match value {
            1 => Some(Decision::Allowed),
            0 => Some(Decision::Denied),
            _ => None,
        }
    }
}

/// What analytics read from an event, derived once at ingest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFacts {
    /// For authorization events (`authz_decision`, `tool_invoked`) with a decision.
    pub decision: Option<Decision>,
    pub tool: Option<String>,
    pub latency_ms: Option<f64>,
}

/// Event types that are authorizations.
pub const AUTHORIZATION_TYPES: [&str; 2] = ["authz_decision", "tool_invoked"];

impl EventFacts {
    pub fn of(event_type: &str, payload: &Map<String, Value>) -> Self {
        let is_authorization = AUTHORIZATION_TYPES.contains(&event_type);
        // The first of these members that is present decides; a boolean `false` is a denial.
        let decision = ["decision", "allowed", "result"]
            .iter()
            .find_map(|name| payload.get(*name).filter(|v| !v.is_null()))
            .and_then(|value| match value {
                Value::Bool(true) => Some(Decision::Allowed),
                Value::Bool(false) => Some(Decision::Denied),
                Value::String(text) => match text.to_ascii_lowercase().as_str() {
                    "allowed" | "allow" | "permit" | "granted" | "true" => Some(Decision::Allowed),
                    "denied" | "deny" | "blocked" | "false" => Some(Decision::Denied),
                    _ => None,
                },
                _ => None,
            });
        let tool = ["tool_id", "resource"]
            .iter()
            .find_map(|name| payload.get(*name).and_then(Value::as_str))
            .map(|tool| tool.chars().take(200).collect());
        let latency_ms = [
            "decision_ms",
            "decision_time_ms",
            "latency_ms",
            "duration_ms",
        ]
        .iter()
        .find_map(|name| payload.get(*name).and_then(Value::as_f64))
        .filter(|ms| ms.is_finite());
        Self {
            decision: decision.filter(|_| is_authorization),
            tool,
            latency_ms,
        }
    }
}

/// One event as the SDK sent it, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct IncomingEvent {
    pub event_type: String,
    pub payload: Map<String, Value>,
    pub occurred_at: DateTime<Utc>,
    /// The client's own id, when it gives one (makes retries idempotent by id).
    pub client_id: Option<String>,
}

const MAX_TYPE_CHARS: usize = 64;
const MAX_ID_CHARS: usize = 128;

fn field_error(index: usize, message: impl std::fmt::Display) -> String {
    format!("events[{index}]: {message}")
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// Checks a batch body: `{"events": [...]}`. The error names the first bad event. Takes
/// the body by value: the payloads move into the events, never copied.
pub fn parse_batch(
    body: Value,
    now: DateTime<Utc>,
    max_age: Duration,
    max_future: Duration,
) -> Result<Vec<IncomingEvent>, String> {
    let Value::Object(mut root) = body else {
        return Err("the body must be an object: {\"events\": [...]}".into());
    };
    if let Some(unknown) = root.keys().find(|k| k.as_str() != "events") {
        return Err(format!(
            "unknown member `{unknown}`: the body is {{\"events\": [...]}}"
        ));
    }
    let Some(Value::Array(events)) = root.remove("events") else {
        return Err("`events` must be a list".into());
    };
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| parse_event(index, event, now, max_age, max_future))
        .collect()
}

fn parse_event(
    index: usize,
    event: Value,
    now: DateTime<Utc>,
    max_age: Duration,
    max_future: Duration,
) -> Result<IncomingEvent, String> {
    let Value::Object(mut event) = event else {
        return Err(field_error(index, "must be an object"));
    };
    let event_type = match event.remove("event_type") {
        Some(Value::String(t))
            if (1..=MAX_TYPE_CHARS).contains(&t.len())
                && t.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                }) =>
        {
            t
        }
        Some(_) => {
            return Err(field_error(
                index,
                "`event_type` must be 1-64 characters of a-z, 0-9, `_`, `.`",
            ));
        }
        None => return Err(field_error(index, "`event_type` is required")),
    };
    let payload = match event.remove("payload") {
        Some(Value::Object(payload)) => payload,
        Some(_) => return Err(field_error(index, "`payload` must be an object")),
        None => return Err(field_error(index, "`payload` is required")),
    };
    let occurred_at = match event.get("occurred_at") {
        Some(Value::String(text)) => parse_time(text)
            .ok_or_else(|| field_error(index, "`occurred_at` must be an ISO-8601 date-time"))?,
        Some(_) => {
            return Err(field_error(
                index,
                "`occurred_at` must be an ISO-8601 date-time",
            ));
        }
        None => return Err(field_error(index, "`occurred_at` is required")),
    };
    if occurred_at < d2_kernel::earlier(now, max_age)
        || occurred_at > d2_kernel::later(now, max_future)
    {
        return Err(field_error(
            index,
            format!(
                "`occurred_at` must be within the last {} days and at most {} s ahead",
                max_age.num_days(),
                max_future.num_seconds()
            ),
        ));
    }
    let client_id = match event.remove("id").or_else(|| event.remove("event_id")) {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if (1..=MAX_ID_CHARS).contains(&id.len()) => Some(id),
        Some(_) => {
            return Err(field_error(
                index,
                "`id` must be a string of 1-128 characters",
            ));
        }
    };
    Ok(IncomingEvent {
        event_type,
        payload,
        occurred_at,
        client_id,
    })
}

/// An event ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub account_id: AccountId,
    /// Digest of the event's id, or of its content: a retried event has the same key.
    pub key: [u8; 32],
    pub token_id: Option<TokenId>,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub ingested_at: DateTime<Utc>,
    pub app_name: Option<AppName>,
    pub service: Option<String>,
    pub host: Option<String>,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub facts: EventFacts,
    pub payload: Value,
}

impl NewEvent {
    pub fn key_of(account_id: AccountId, event: &IncomingEvent) -> [u8; 32] {
        let mut digest = Digest(Context::new(&SHA256));
        digest.0.update(account_id.as_uuid().as_bytes());
        match &event.client_id {
            Some(id) => {
                digest.0.update(b"id:");
                digest.0.update(id.as_bytes());
            }
            None => {
                digest.0.update(b"content:");
                digest.0.update(event.event_type.as_bytes());
                digest
                    .0
                    .update(&event.occurred_at.timestamp_micros().to_be_bytes());
                // Streamed into the digest: no copy of the payload's text is kept.
                let _ = serde_json::to_writer(&mut digest, &event.payload);
            }
        }
        digest
            .0
            .finish()
            .as_ref()
            .first_chunk::<32>()
            .copied()
            .unwrap_or_default()
    }
}

/// A digest that serde_json can write into.
struct Digest(Context);

impl std::io::Write for Digest {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A stored event.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Increases with every insert; the export cursor's tie-breaker.
    pub id: i64,
    pub event: NewEvent,
}

/// Which events to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub app_name: Option<AppName>,
    pub service: Option<String>,
    /// `occurred_at` at or after.
    pub since: Option<DateTime<Utc>>,
    /// `occurred_at` before.
    pub until: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn facts(event_type: &str, payload: Value) -> EventFacts {
        EventFacts::of(event_type, payload.as_object().unwrap())
    }

    #[test]
    fn the_first_present_decision_member_decides_and_false_is_a_denial() {
        assert_eq!(
            facts("authz_decision", json!({ "result": "allowed" })).decision,
            Some(Decision::Allowed)
        );
        assert_eq!(
            facts("authz_decision", json!({ "result": "denied" })).decision,
            Some(Decision::Denied)
        );
        assert_eq!(
            facts("tool_invoked", json!({ "allowed": false })).decision,
            Some(Decision::Denied)
        );
        assert_eq!(
            facts(
                "authz_decision",
                json!({ "decision": false, "result": "allowed" })
            )
            .decision,
            Some(Decision::Denied)
        );
        assert_eq!(
            facts(
                "authz_decision",
                json!({ "decision": null, "result": "allowed" })
            )
            .decision,
            Some(Decision::Allowed)
        );
        assert_eq!(
            facts("authz_decision", json!({ "result": "maybe" })).decision,
            None
        );
        assert_eq!(
            facts("policy_poll", json!({ "result": "allowed" })).decision,
            None,
            "not an authorization"
        );
    }

    #[test]
    fn tool_and_latency_come_from_the_first_member_present() {
        let f = facts(
            "authz_decision",
            json!({ "tool_id": "a", "resource": "b", "latency_ms": 3, "decision_ms": 1.5 }),
        );
        assert_eq!(f.tool.as_deref(), Some("a"));
        assert_eq!(f.latency_ms, Some(1.5));
        assert_eq!(
            facts("x", json!({ "resource": "b" })).tool.as_deref(),
            Some("b")
        );
    }

    #[test]
    fn batches_name_the_bad_event() {
        let now = Utc::now();
        let parse = |body: Value| parse_batch(body, now, Duration::days(30), Duration::minutes(10));
        let good = json!({ "event_type": "authz_decision", "payload": {}, "occurred_at": now.to_rfc3339() });
        assert_eq!(parse(json!({ "events": [good, good] })).unwrap().len(), 2);
        assert!(parse(json!({ "events": [] })).unwrap().is_empty());
        let cases = [
            (json!([]), "must be an object"),
            (json!({ "events": {} }), "must be a list"),
            (json!({ "events": [], "extra": 1 }), "unknown member"),
            (
                json!({ "events": [good, 42] }),
                "events[1]: must be an object",
            ),
            (
                json!({ "events": [{ "payload": {}, "occurred_at": now.to_rfc3339() }] }),
                "events[0]: `event_type` is required",
            ),
            (
                json!({ "events": [{ "event_type": "Bad Type", "payload": {}, "occurred_at": now.to_rfc3339() }] }),
                "`event_type` must be",
            ),
            (
                json!({ "events": [{ "event_type": "a", "payload": [], "occurred_at": now.to_rfc3339() }] }),
                "`payload` must be an object",
            ),
            (
                json!({ "events": [{ "event_type": "a", "payload": {}, "occurred_at": "yesterday" }] }),
                "ISO-8601",
            ),
            (
                json!({ "events": [{ "event_type": "a", "payload": {}, "occurred_at": "1999-01-01T00:00:00Z" }] }),
                "within the last",
            ),
            (
                json!({ "events": [{ "event_type": "a", "payload": {}, "occurred_at": (now + Duration::days(1)).to_rfc3339() }] }),
                "ahead",
            ),
            (
                json!({ "events": [{ "event_type": "a", "payload": {}, "occurred_at": now.to_rfc3339(), "id": 7 }] }),
                "`id` must be",
            ),
        ];
        for (body, expected) in cases {
            let error = parse(body.clone()).unwrap_err();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn keys_are_stable_for_retries_and_distinct_otherwise() {
        let now = Utc::now();
        let event = IncomingEvent {
            event_type: "authz_decision".into(),
            payload: json!({ "tool_id": "a" }).as_object().unwrap().clone(),
            occurred_at: now,
            client_id: None,
        };
        let account = AccountId::random();
        assert_eq!(
            NewEvent::key_of(account, &event),
            NewEvent::key_of(account, &event)
        );
        assert_ne!(
            NewEvent::key_of(account, &event),
            NewEvent::key_of(AccountId::random(), &event)
        );
        let later = IncomingEvent {
            occurred_at: now + Duration::microseconds(1),
            ..event.clone()
        };
        assert_ne!(
            NewEvent::key_of(account, &event),
            NewEvent::key_of(account, &later)
        );
        let with_id = IncomingEvent {
            client_id: Some("e-1".into()),
            ..event
        };
        let same_id_other_content = IncomingEvent {
            event_type: "other".into(),
            ..with_id.clone()
        };
        assert_eq!(
            NewEvent::key_of(account, &with_id),
            NewEvent::key_of(account, &same_id_other_content)
        );
    }
}
