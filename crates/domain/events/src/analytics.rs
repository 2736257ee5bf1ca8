use chrono::{DateTime, Utc};

/// Authorization totals over a time range, as the store computes them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub allowed: u64,
    pub denied: u64,
    pub unique_tools: u64,
    pub avg_decision_ms: Option<f64>,
    pub avg_ingest_lag_ms: Option<f64>,
}

impl Summary {
    pub fn total(&self) -> u64 {
        self.allowed.saturating_add(self.denied)
    }

    /// Denied over total, to four decimal places; 0 without authorizations.
    pub fn deny_rate(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        #[expect(
            clippy::as_conversions,
            reason = "counts far below 2^52 are exact as f64"
        )]
        let rate = self.denied as f64 / total as f64;
        (rate * 10_000.0).round() / 10_000.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn parse(text: Option<&str>) -> Option<Self> {
        match text {
            None | Some("day") => Some(Bucket::Day),
            Some("hour") => Some(Bucket::Hour),
            Some(_) => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }

    /// The bucket's width: buckets start at multiples of it since the Unix epoch (UTC).
    pub const fn seconds(self) -> i64 {
        match self {
            Bucket::Hour => 3_600,
            Bucket::Day => 86_400,
        }
    }
}

/// Authorizations in one bucket (only buckets with authorizations are returned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimePoint {
    pub ts: DateTime<Utc>,
    pub allowed: u64,
    pub denied: u64,
}

impl TimePoint {
    pub fn total(&self) -> u64 {
        self.allowed.saturating_add(self.denied)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    /// Authorizations per tool.
    Tools,
    /// The same set as tools (a tool is the resource an agent acts on).
    Resources,
    /// Events per type.
    EventType,
}

impl Dimension {
    pub fn parse(text: Option<&str>) -> Option<Self> {
        match text {
            None | Some("tools") => Some(Dimension::Tools),
            Some("resources") => Some(Dimension::Resources),
            Some("event_type") => Some(Dimension::EventType),
            Some(_) => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Dimension::Tools => "tools",
            Dimension::Resources => "resources",
            Dimension::EventType => "event_type",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopItem {
    pub key: String,
    pub count: u64,
}

/// The `n` most frequent keys, and the total over every key (not only the top `n`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Top {
    pub total: u64,
    pub items: Vec<TopItem>,
}
