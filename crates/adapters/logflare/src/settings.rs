use std::fmt;
use std::time::Duration;

/// Where and how to forward events to Logflare.
#[derive(Clone)]
pub struct LogflareSettings {
    /// Base URL of the Logflare API, e.g. `https://api.logflare.app` (a path prefix is
    /// kept: requests go to `{url}/api/logs`).
    pub url: String,
    /// An access token with the `ingest` scope. Sent as `X-API-KEY`; never printed.
    pub api_key: String,
    /// The source's UUID (`?source=`).
    pub source: String,
    /// Events waiting to be sent; beyond it `forward` drops (and counts) events.
    pub queue_capacity: usize,
    /// Events per request at most.
    pub batch_size: usize,
    /// How long a partial batch waits for more events before it is sent.
    pub flush_interval: Duration,
    /// Whole-request timeout of one attempt.
    pub timeout: Duration,
    /// Attempts per batch, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles with every retry.
    pub initial_backoff: Duration,
    /// Cap of the wait between attempts, `Retry-After` included.
    pub max_backoff: Duration,
}

impl LogflareSettings {
    pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
    pub const DEFAULT_BATCH_SIZE: usize = 500;
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

    /// Settings with the defaults: 10 000 queued events, batches of 500 or 1 s, 5 s per
    /// attempt, 5 attempts, backoff 200 ms doubling up to 10 s.
    pub fn new(
        url: impl Into<String>,
        api_key: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            api_key: api_key.into(),
            source: source.into(),
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            flush_interval: Self::DEFAULT_FLUSH_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
        }
    }
}

impl fmt::Debug for LogflareSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogflareSettings")
            .field("url", &self.url)
            .field("api_key", &"[redacted]")
            .field("source", &self.source)
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}
